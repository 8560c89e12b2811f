"""Evaluation speed of an imported LAVT checkpoint (the user's day-one check, timed).

Builds the paper's model with random weights (``lavt-swin-b-random``), writes it in LAVT's
checkpoint layout, converts it with ``semires model import-lavt`` (timed), loads it with
``semires.load`` (timed) and times evaluation forwards at 480x480 at the batch sizes given
(LAVT's ``test.py`` scores one image-sentence pair at a time: batch 1), fp32 and optionally
bf16: sentences/s and peak memory::

    python bench/bench_eval_imported.py --device cuda --batch 1 16 --amp none bf16
    .venv/bin/python bench/bench_eval_imported.py --model test-lavt --size 64 --repeats 3   # CPU smoke

The tokenizer is the model's own vocabulary written as a vocab.txt (no download).
"""

from __future__ import annotations

import argparse
import argparse as _argparse
import contextlib
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="lavt-swin-b-random")
    p.add_argument("--size", type=int, default=480)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--amp", nargs="+", default=["none"], choices=["none", "bf16"])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)

    import semires
    from semires.model import build_model
    from semires.runtime.lavt_import import export_lavt_state, import_lavt

    work = Path(tempfile.mkdtemp(prefix="bench_eval_imported_"))
    torch.manual_seed(0)
    model = build_model(args.model, img_size=args.size)
    vocab = work / "vocab"
    vocab.mkdir()
    tokens = sorted(model.text.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    (vocab / "vocab.txt").write_text("\n".join(t for t, _ in tokens) + "\n", encoding="utf-8")
    ck = export_lavt_state(model, "lavt")
    ck.update(
        epoch=0, args=_argparse.Namespace(model="lavt", mha="", fusion_drop=0.0, img_size=args.size)
    )
    torch.save(ck, work / "lavt.pth")
    del model, ck
    t0 = time.perf_counter()
    summary = import_lavt(work / "lavt.pth", work / "lavt.pt", tokenizer=str(vocab))
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    seg = semires.load(work / "lavt.pt", device=str(device))
    load_s = time.perf_counter() - t0
    print(
        f"import-lavt {import_s:.1f} s ({summary['tensors']} tensors), semires.load {load_s:.1f} s"
    )
    rows = []
    sentence = "the woman in the red shirt standing left of the table"
    reference: dict[int, torch.Tensor] = {}  # fp32 foreground probabilities per batch size
    for amp in args.amp:
        for batch in args.batch:
            torch.manual_seed(batch)
            images = torch.randn(batch, 3, args.size, args.size, device=device)
            text = seg.text([sentence] * batch)
            cast = (
                torch.autocast(device_type=device.type, dtype=torch.bfloat16)
                if amp == "bf16"
                else contextlib.nullcontext()
            )
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            with torch.no_grad(), cast:
                for i in range(args.repeats + 2):
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                    logits = seg.model(images, **text)
                    logits.argmax(1).cpu()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    if i >= 2:
                        times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            prob = logits.float().softmax(1)[:, 1].cpu()
            agreement = {}
            if amp == "none":
                reference[batch] = prob
            elif batch in reference:
                ref = reference[batch]
                agreement = {
                    "max_abs_prob_diff_vs_fp32": float((prob - ref).abs().max()),
                    "mask_pixels_differing_vs_fp32": float(
                        ((prob > 0.5) != (ref > 0.5)).float().mean()
                    ),
                }
            peak = (
                torch.cuda.max_memory_allocated(device) / 2**20
                if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            )
            row = {"model": args.model, "size": args.size, "device": str(device), "amp": amp,
                   "batch": batch, "median_s": med, "sentences_per_s": batch / med, "peak_mib": peak,
                   **agreement}  # fmt: skip
            rows.append(row)
            print(
                f"{args.model} {args.size}px {device} amp={amp} batch {batch}: "
                f"{batch / med:.1f} sentences/s (median {1000 * med:.1f} ms), peak {peak:.0f} MiB"
                + (
                    f"; vs fp32: max |dp| {agreement['max_abs_prob_diff_vs_fp32']:.2e}, "
                    f"{100 * agreement['mask_pixels_differing_vs_fp32']:.3f}% of mask pixels differ"
                    if agreement
                    else ""
                )
            )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"import_s": import_s, "load_s": load_s, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()

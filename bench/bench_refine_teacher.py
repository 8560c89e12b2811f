"""How well do IOM and CPI, at various constants, refine a real teacher's pseudo-labels?

``bench_refine_quality.py`` spoils ground-truth masks in controlled ways; this script takes the
pseudo-labels a trained teacher actually makes. It builds the teacher-student stage of a run
(the teacher = the burn-in checkpoint, the unlabeled images, their weak views and candidate
masks exactly as training gets them; nothing is trained), collects the teacher's pseudo-labels
``P = prob > 0.5`` for the first ``--batches`` unlabeled batches, and refines the same labels
with every rule asked for (:func:`semires.train.strategies.strategy_labels`, the training code's own). Against
the unlabeled images' ground truth (synthetic data always has it; training never reads it) it
prints, per rule: the share of samples a rule matched, the pseudo-labels' mean IoU and overall
IoU, the share with IoU > 0.5, and how many refinements raised / lowered a label's IoU.

Two ceilings follow: the share of samples whose raw pseudo-label overlaps the referred object at
all (IoU > 0.1: the teacher "found" it; refinement cannot move a label to another object) and the
mean IoU that picking the single best candidate of the found samples would reach (the others
counting 0). Usage::

    semires run --preset demo --out runs/demo
    python bench/bench_refine_teacher.py --run runs/demo
    python bench/bench_refine_teacher.py --config runs/demo/cpi/config.yaml --batches 80 \\
        --t1 0.5 0.7 --t2 0.7 --json sweep.json

``--run`` takes the run's ``cpi/config.yaml`` (else ``iom/``, ``teacher_student/``); ``--config``
takes any teacher-student training config (``semi.enabled``, ``semi.burn_in``,
``semi.proposals``); ``--set key=value`` overrides a key (``--set semi.burn_in=RUN/cpi/best.pt``:
the trained model as the teacher). The paper's constants are marked ``*``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from semires.evaluate.metrics import intersection_union, iou_from_counts
from semires.train.config import load_config
from semires.train.engine import Trainer
from semires.train.refine import candidate_overlaps, correction_stats
from semires.train.strategies import RefineConfig, strategy_labels
from semires.utils.io import atomic_write_json

PAPER = RefineConfig()  # tau 0.5, t1 0.7, t2 0.7, both CPI rules


def run_config(run: Path) -> Path:
    """The teacher-student config of a ``semires run`` folder (CPI's first)."""
    for method in ("cpi", "iom", "teacher_student"):
        path = run / method / "config.yaml"
        if path.is_file():
            return path
    sys.exit(
        f"{run}: no cpi/, iom/ or teacher_student/ config.yaml (is it a `semires run` folder?)"
    )


def rules(taus: list[float], t1s: list[float], t2s: list[float]) -> list[tuple[str, RefineConfig]]:
    """(name, config) of every rule to compare: the raw label, IOM per tau, CPI per (t1, t2),
    and CPI with one of its two rules at the paper's constants."""
    out = [("raw (plain teacher-student)", RefineConfig(strategy="none"))]
    for tau in taus:
        mark = "*" if tau == PAPER.tau else ""
        out.append((f"iom tau={tau}{mark}", RefineConfig(strategy="iom", tau=tau)))
    for t1, t2 in itertools.product(t1s, t2s):
        mark = "*" if (t1, t2) == (PAPER.t1, PAPER.t2) else ""
        out.append((f"cpi t1={t1} t2={t2}{mark}", RefineConfig(strategy="cpi", t1=t1, t2=t2)))
    out.append(("cpi-u only (t1=0.7)", RefineConfig(strategy="cpi", cpi_o=False)))
    out.append(("cpi-o only (t2=0.7)", RefineConfig(strategy="cpi", cpi_u=False)))
    return out


def collect(trainer: Trainer, batches: int) -> list[dict[str, Any]]:
    """The teacher's labels of the first unlabeled batches of the stage, made by the run's own
    pseudo-labeler (consensus, candidate limit, strategy as configured); exits if there is no
    ground truth. Nothing is trained."""
    from semires.train.refine import as_bool

    labeler = trainer.method.labeler
    out = []
    steps = trainer.batches(0, batches)
    for _, unl in tqdm(steps, total=batches, desc="teacher", unit="batch"):
        if "gt" not in unl:
            sys.exit("the unlabeled images have no ground-truth masks: nothing to score against")
        labels = labeler(unl)
        out.append(
            {
                "P": labels.pseudo,
                "prob": labels.prob,
                "candidates": as_bool(labels.candidates),
                "valid": labels.valid,
                "gt": unl["gt"].to(labels.prob.device).bool(),
            }
        )
    return out


def score(batches: list[dict[str, Any]], cfg: RefineConfig) -> dict[str, float]:
    """One rule over all collected batches."""
    ious, inter, union, matched, pos, neg = [], 0, 0, 0, 0, 0
    for b in batches:
        result = strategy_labels(b["P"], b["prob"], b["candidates"], b["valid"], cfg)
        stats = correction_stats(b["P"], result.labels, b["gt"])
        ious.append(stats["iou_after"])
        i, u = intersection_union(result.labels, b["gt"])
        inter, union = inter + int(i.sum()), union + int(u.sum())
        matched += int(result.matched.sum())
        pos, neg = pos + stats["positive"], neg + stats["negative"]
    iou = torch.cat(ious)
    n = len(iou)
    return {
        "matched": matched / n,
        "miou": 100 * float(iou.mean()),
        "oiou": 100 * inter / max(union, 1),
        "above_half": 100 * float((iou > 0.5).double().mean()),
        "raised": pos / n,
        "lowered": neg / n,
    }


def ceilings(batches: list[dict[str, Any]]) -> dict[str, float]:
    """Share of samples whose raw label overlaps the object (IoU > 0.1) and the mean IoU of the
    best single candidate over those samples (others 0)."""
    found, best = [], []
    for b in batches:
        raw = iou_from_counts(*intersection_union(b["P"], b["gt"]))
        # the refinement's own batched counts, with the ground truth in the pseudo-label's place
        ov = candidate_overlaps(b["gt"], b["candidates"], b["valid"])
        iou = iou_from_counts(ov.inter, ov.area_m + ov.area_p[:, None] - ov.inter)
        iou = torch.where(b["valid"], iou, torch.zeros_like(iou))
        found.append(raw > 0.1)
        best.append(iou.amax(1) if iou.shape[1] else torch.zeros_like(raw))
    f, bst = torch.cat(found), torch.cat(best)
    return {
        "found": 100 * float(f.double().mean()),
        "best_candidate_if_found": 100 * float(bst[f].mean()) if f.any() else 0.0,
        "ceiling_miou": 100 * float((bst * f).mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="a `semires run` folder")
    src.add_argument("--config", type=Path, help="a teacher-student training config")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set semi.burn_in=other.pt",
    )
    ap.add_argument("--batches", type=int, default=40, help="unlabeled batches to collect")
    ap.add_argument("--tau", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--t1", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    ap.add_argument("--t2", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the table here")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    config = args.config or run_config(args.run)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        extra = [f"output.dir={tmp}", "output.tensorboard=false", "output.resume=false"]
        cfg = load_config(config, [*args.overrides, *extra])
        if not cfg.semi.enabled:
            sys.exit(f"{config}: not a teacher-student config (semi.enabled is false)")
        trainer = Trainer.from_config(cfg, progress=False)
        batches = collect(trainer, args.batches)
    n = sum(len(b["P"]) for b in batches)
    print(
        f"{config}: {n} unlabeled samples, teacher = {cfg.semi.burn_in}, "
        f"{time.perf_counter() - t0:.0f} s to collect"
    )
    table = {name: score(batches, rc) for name, rc in rules(args.tau, args.t1, args.t2)}
    head = f"{'rule':<28} {'matched':>7} {'mIoU':>6} {'oIoU':>6} {'IoU>.5':>6} {'raised':>6} {'lowered':>7}"
    print(head)
    for name, r in table.items():
        print(
            f"{name:<28} {r['matched']:>7.2f} {r['miou']:>6.1f} {r['oiou']:>6.1f} "
            f"{r['above_half']:>6.1f} {r['raised']:>6.2f} {r['lowered']:>7.2f}"
        )
    ceil = ceilings(batches)
    print(
        f"teacher found the object (raw IoU > 0.1): {ceil['found']:.1f}% of samples; best "
        f"single candidate on those: mean IoU {ceil['best_candidate_if_found']:.1f}; ceiling "
        f"of any refinement that keeps to the found object: mIoU {ceil['ceiling_miou']:.1f}"
    )
    if args.json:
        atomic_write_json(
            args.json, {"config": str(config), "samples": n, "rules": table, "ceilings": ceil}
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

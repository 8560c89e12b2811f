"""The demo's targets, measured: `semires run` on several synthetic seeds and the hard preset.

For each case a fresh run folder gets the whole pipeline (synthesise -> split -> proposals ->
burn-in -> teacher-student / SemiRES-IOM / SemiRES-CPI -> evaluate -> report) from the README's
command with only the synthetic data changed, timed end to end. Printed per case: test oIoU of
every method, the SemiRES gains (best of IOM / CPI vs the burn-in and vs plain teacher-student),
the pseudo-label IoU before -> after refinement (last epoch, on the unlabeled images' ground
truth, which training never sees), and the wall time; then the targets of issue 5 as PASS/FAIL.

    python bench/bench_demo.py                       # seeds 0 1 2 of demo + hard seed 0
    python bench/bench_demo.py --cases demo:0 --keep runs/bench
    python bench/bench_demo.py --json docs/results/demo_bench.json

Each case takes about 10 minutes on 2 cores; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _runs import semires_run

REFINED = ("iom", "cpi")


def run_case(preset: str, seed: int, out: Path, extra: list[str]) -> dict:
    summary, wall = semires_run(preset, out, [f"synth.seed={seed}", *extra])
    split = summary["split"]
    oiou = {m: s[split]["oIoU"] for m, s in summary["methods"].items()}
    best = max((m for m in REFINED if m in oiou), key=lambda m: oiou[m])
    pl = {
        m: (100 * q["pl_iou_before"], 100 * q["pl_iou_after"])
        for m, q in summary["pseudo_labels"].items()
        if "pl_iou_before" in q
    }
    return {
        "preset": preset,
        "seed": seed,
        "split": split,
        "wall_s": round(wall, 1),
        "timings": summary.get("timings", {}),
        "oIoU": oiou,
        "mIoU": {m: s[split]["mIoU"] for m, s in summary["methods"].items()},
        "best_semires": best,
        "gain_vs_burn_in": oiou[best] - oiou["supervised"],
        "gain_vs_teacher_student": oiou[best] - oiou["teacher_student"],
        "pl_iou": pl,
        "pl_gain_best": max(after - before for before, after in pl.values()) if pl else None,
    }


def targets(cases: list[dict]) -> list[tuple[str, bool]]:
    demo_walls = [c["wall_s"] for c in cases if c["preset"] == "demo"]
    checks = []
    if demo_walls:
        med = statistics.median(demo_walls)
        checks.append((f"demo wall time median {med / 60:.1f} min <= 10", med <= 600))
    for c in cases:
        tag = f"{c['preset']} seed {c['seed']}"
        checks.append(
            (
                f"{tag}: SemiRES - burn-in = {c['gain_vs_burn_in']:+.1f} >= 10",
                c["gain_vs_burn_in"] >= 10,
            )
        )
        checks.append(
            (
                f"{tag}: SemiRES - teacher-student = {c['gain_vs_teacher_student']:+.1f} >= 3",
                c["gain_vs_teacher_student"] >= 3,
            )
        )
        if c["pl_gain_best"] is not None:
            checks.append(
                (
                    f"{tag}: pseudo-label IoU gain {c['pl_gain_best']:+.1f} >= 10",
                    c["pl_gain_best"] >= 10,
                )
            )
    return checks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["demo:0", "demo:1", "demo:2", "hard:0"])
    ap.add_argument("--keep", type=Path, help="Keep the run folders here (default: a temp dir).")
    ap.add_argument("--json", type=Path, help="Write the figures to this json.")
    ap.add_argument("overrides", nargs="*", help="Extra `semires run` overrides for every case.")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="semires-bench-demo-"))
    cases = []
    for case in args.cases:
        preset, seed = case.split(":")
        c = run_case(preset, int(seed), root / f"{preset}-{seed}", args.overrides)
        cases.append(c)
        methods = "  ".join(f"{m} {v:.1f}" for m, v in c["oIoU"].items())
        pls = "  ".join(f"{m} {b:.1f}->{a:.1f}" for m, (b, a) in c["pl_iou"].items())
        print(
            f"  test oIoU: {methods}\n  pseudo-label IoU: {pls}\n  wall {c['wall_s'] / 60:.1f} min"
        )
    print()
    checks = targets(cases)
    for text, ok in checks:
        print(("PASS " if ok else "FAIL ") + text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"cases": cases, "targets": dict(checks), "argv": sys.argv[1:]}, indent=2)
        )
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

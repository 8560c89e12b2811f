"""Supervised training of the CPU default (`tiny`) on the demo preset: 100% labels vs the demo's 10%.

Runs the pipeline's supervised stage only (`semires run --preset demo labeled=R methods=[]`) for
the same number of optimiser steps at every labeled ratio and prints the test oIoU / mIoU
(testA+testB, the LAVT protocol) and the wall time of each. The gap between 100% and 10% labels
is what the semi-supervised methods close.

    python bench/bench_supervised.py                          # 100% and 10%, 2000 steps each
    python bench/bench_supervised.py --ratios 100% --steps 3000 --json docs/results/supervised.json

About 12 minutes per 2000 steps on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from _runs import semires_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ratios", nargs="+", default=["100%", "10%"])
    ap.add_argument("--steps", type=int, default=2000, help="Optimiser steps (batch 16).")
    ap.add_argument("--epochs", type=int, default=10, help="Evaluations on val (best is kept).")
    ap.add_argument("--seed", type=int, default=0, help="Synthetic benchmark seed.")
    ap.add_argument("--keep", type=Path, help="Keep the run folders here.")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="semires-bench-sup-"))
    rows = []
    for ratio in args.ratios:
        overrides = [f"synth.seed={args.seed}", f"labeled={ratio}", "methods=[]"]
        overrides += [f"burn_in.epochs={args.epochs}", "burn_in.eval_every=1"]
        overrides += [f"burn_in.steps_per_epoch={args.steps // args.epochs}"]
        summary, wall = semires_run("demo", root / f"sup-{ratio.rstrip('%')}", overrides)
        m = summary["methods"]["supervised"][summary["split"]]
        row = {
            "labeled": ratio,
            "steps": args.steps,
            "split": summary["split"],
            "wall_s": round(wall, 1),
        }
        row.update({k: m[k] for k in ("oIoU", "mIoU")})
        row["best_epoch"] = summary["best_epochs"].get("supervised")
        rows.append(row)
        print(
            f"  labeled {ratio}: test oIoU {m['oIoU']:.1f}, mIoU {m['mIoU']:.1f} ({wall / 60:.1f} min)"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "argv": sys.argv[1:]}, indent=2))
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

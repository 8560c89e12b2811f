"""The demo's comparisons with their spread: data seeds x training seeds, and the hard preset.

For each (preset, data seed) one ``semires run --preset P --seeds T1,T2,... synth.seed=D`` in a
fresh folder: the training seeds share that data seed's data, split and proposals (the run's
own ``--seeds``). Per run (data seed, training seed) the bench records every method's test oIoU
(testA+testB, and each split), its val / loss curve, the last epoch's pseudo-label quality and
grounding rate, and the run's wall time; then, over all runs of a preset, every method's mean,
standard deviation and min..max, and every difference that matters (best SemiRES vs the burn-in
and vs plain teacher-student, each of our strategies vs SemiRES-CPI) with a 95% bootstrap
interval over test sentences (each data seed's sentences resampled, every training seed paired)
and whether it holds (interval excludes 0 and every run agrees on the sign); then the targets.

    python bench/bench_demo.py --json docs/results/demo_bench.json          # 3 x 3 demo + 3 hard
    python bench/bench_demo.py --cases demo:0 --train-seeds 0 --keep runs/b  # one run
    python bench/bench_demo.py --methods teacher_student iom cpi consensus soft
    python bench/bench_demo.py --methods teacher_student cpi consensus objects \
        --json docs/results/objects_bench.json --keep runs/bench   # issue 29's evidence

The **full-label ceiling** of each (preset, data seed): the same model trained supervised on
100% of the labels for as many optimizer steps as burn-in + teacher-student took in that case
(first training seed; ``--no-ceiling`` skips it). Each method's **share of the label gap
recovered** is ``(method - burn-in) / (ceiling - burn-in)`` per run. The json is rewritten after
every finished case and ceiling, so a long bench leaves its partial results behind.

Each run takes 7-11 minutes on 2 cores (more with more methods); run it on an otherwise idle
machine. The json is ``{"runs": [{"preset", "data_seed", "train_seed", "wall_s", "methods":
{name: {"oIoU", "testA", "testB", "headline", "small_objects", "grounding_before",
"grounding_after", "pl_iou_before", "pl_iou_after", "gap_share", "history": [{"step",
"val_oIoU", "loss"}]}}}], "ceilings": {"<preset>:<data seed>": {"oIoU", "steps", ...}},
"summary": ..., "targets": ...}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from semires.evaluate.compare import pooled_bootstrap, small_objects, spread, summarise
from semires.layout import SUPERVISED, RunLayout
from semires.methods import label, method
from semires.utils.io import atomic_write_json

DEFAULT_METHODS = ["teacher_student", "iom", "cpi", "consensus", "soft", "consensus_soft"]
SPLITS = ("testA", "testB")
HEAD = "testA+testB"


def run_preset(
    preset: str,
    data_seed: int,
    seeds: list[int],
    out: Path,
    extra: list[str],
    *,
    fresh: bool = True,
) -> float:
    """One ``semires run --seeds`` in a fresh folder (``fresh=False``: in ``out`` as it is, so
    the run's stage cache trains only what is missing); its wall time in seconds."""
    if fresh and out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "semires", "run", "--preset", preset, "--out", str(out), "-q"]
    cmd += ["--seeds", ",".join(map(str, seeds)), f"synth.seed={data_seed}", *extra]
    print(" ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def case_steps(layout: RunLayout, methods: list[str]) -> int:
    """Optimizer steps of burn-in + one teacher-student run in a finished case."""
    sup = json.loads(layout.stage(SUPERVISED).history.read_text())
    semi = json.loads(layout.stage(methods[0]).history.read_text())
    return int(sup[-1]["step"]) + int(semi[-1]["step"])


def run_ceiling(
    preset: str, data_seed: int, seed: int, steps: int, out: Path, extra: list[str]
) -> dict:
    """The full-label ceiling: supervised training on 100% of the labels for ``steps`` optimizer
    steps (as ``epochs x steps_per_epoch``, the most epochs <= 32 that divide ``steps``); its
    test oIoU (testA+testB and each split) and wall time."""
    epochs = max(e for e in range(1, 33) if steps % e == 0)
    overrides = [
        "labeled=100%",
        "methods=[]",
        f"burn_in.epochs={epochs}",
        f"burn_in.steps_per_epoch={steps // epochs}",
        f"burn_in.eval_every={max(1, epochs // 8)}",
    ]
    wall = run_preset(preset, data_seed, [seed], out, [*extra, *overrides])
    return {**ceiling_record(out, seed, steps), "wall_s": round(wall, 1)}


def add_gap_shares(runs: list[dict], ceilings: dict[str, dict]) -> None:
    """Each run's ``gap_share`` per method: (method - burn-in) / (ceiling - burn-in)."""
    for r in runs:
        ceil = ceilings.get(f"{r['preset']}:{r['data_seed']}")
        if ceil is None:
            continue
        base = r["methods"][SUPERVISED]["oIoU"]
        gap = ceil["oIoU"] - base
        for v in r["methods"].values():
            v["gap_share"] = (v["oIoU"] - base) / gap if gap > 0 else float("nan")


def _methods_done(layout: RunLayout) -> set[str]:
    """The methods a finished run folder has results for (empty when it has none)."""
    if not layout.results_json.exists():
        return set()
    return set(json.loads(layout.results_json.read_text()).get("methods", {}))


def case_plan(folder: Path, seeds: list[int], methods: list[str], reuse: bool) -> str:
    """What a case needs: ``collect`` (``reuse`` and every seed has every method), ``complete``
    (``reuse`` and every seed has results but some method is missing: run in place, the stage
    cache trains only the missing ones) or ``fresh`` (run from scratch)."""
    if not reuse:
        return "fresh"
    have = [_methods_done(RunLayout(folder / f"seed-{s}")) for s in seeds]
    if all(set(methods) <= h for h in have):
        return "collect"
    return "complete" if all(have) else "fresh"


def _samples(layout: RunLayout, stage: str) -> dict[str, Any]:
    data = json.loads(layout.stage(stage).samples.read_text())
    return {k: v for split in SPLITS for k, v in data.get(split, {}).items()}


def collect(
    preset: str, data_seed: int, train_seed: int, layout: RunLayout, methods: list[str]
) -> dict:
    """One run's record (the json schema of the module docstring) and its per-sentence counts."""
    results = json.loads(layout.results_json.read_text())
    record: dict[str, Any] = {
        "preset": preset,
        "data_seed": data_seed,
        "train_seed": train_seed,
        # the stages' own times added up: methods trained in parallel each count in full, so
        # this exceeds the wall clock; the case's wall clock is in ``case_wall_s``
        "stage_s": round(sum(results.get("timings", {}).values()), 1),
        "methods": {},
    }
    counts = {}
    for m in [SUPERVISED, *methods]:
        splits = results["methods"][m]
        hist = json.loads(layout.stage(m).history.read_text())
        last = hist[-1] if hist else {}
        counts[m] = _samples(layout, m)
        record["methods"][m] = {
            "oIoU": splits[HEAD]["oIoU"],
            **{s: splits[s]["oIoU"] for s in SPLITS},
            "headline": results.get("eval_model", {}).get(m, "student"),
            "small_objects": small_objects(counts[m])["oIoU"],
            **{
                k: 100 * last[k]
                for k in ("pl_iou_before", "pl_iou_after", "grounding_before", "grounding_after")
                if k in last
            },
            "history": [
                {"step": h["step"], "val_oIoU": h.get("val_oIoU"), "loss": h.get("loss")}
                for h in hist
            ],
        }
    return record, counts


def summarise_preset(
    runs: list[dict], counts: dict[tuple[int, int], dict], methods: list[str]
) -> dict:
    """Every method's spread over the preset's runs, and the differences with their intervals."""
    names = [SUPERVISED, *methods]
    out: dict[str, Any] = {"runs": len(runs), "methods": {}, "differences": {}}
    for m in names:
        out["methods"][m] = {
            key: spread([r["methods"][m][key] for r in runs])
            for key in (
                "oIoU",
                *SPLITS,
                "small_objects",
                "grounding_before",
                "grounding_after",
                "pl_iou_before",
                "pl_iou_after",
                "gap_share",
            )
            if all(key in r["methods"][m] for r in runs)
        }
    refined = [m for m in methods if method(m).needs_proposals and not method(m).ours]
    best = max(refined, key=lambda m: out["methods"][m]["oIoU"]["mean"]) if refined else None
    pairs = []
    if best:
        pairs += [(best, SUPERVISED), (best, "teacher_student")]
    pairs += [(m, "cpi") for m in methods if method(m).ours and "cpi" in methods]
    for a, b in pairs:
        if b not in names:
            continue
        per_run = [r["methods"][a]["oIoU"] - r["methods"][b]["oIoU"] for r in runs]
        data_seeds = sorted({r["data_seed"] for r in runs})
        groups = []
        for d in data_seeds:
            keys = sorted(k for k in counts if k[0] == d)
            groups.append(([counts[k][a] for k in keys], [counts[k][b] for k in keys]))
        boot = pooled_bootstrap(groups)
        holds = (boot["low"] > 0 or boot["high"] < 0) and (min(per_run) > 0 or max(per_run) < 0)
        by_seed = {}
        for d, g in zip(data_seeds, groups, strict=True):
            seed_boot = pooled_bootstrap([g])
            runs_d = [x for r, x in zip(runs, per_run, strict=True) if r["data_seed"] == d]
            by_seed[str(d)] = {
                **seed_boot,
                "holds": (seed_boot["low"] > 0 or seed_boot["high"] < 0)
                and (min(runs_d) > 0 or max(runs_d) < 0),
            }
        out["differences"][f"{a} - {b}"] = {
            **boot,
            "spread": spread(per_run),
            "holds": holds,
            "by_data_seed": by_seed,
        }
    out["best_semires"] = best
    return out


def targets(summary: dict[str, dict], walls: list[float]) -> list[tuple[str, bool]]:
    """The issue's targets, measured."""
    checks = []
    if walls:
        med = sorted(walls)[len(walls) // 2]
        checks.append((f"demo run wall time median {med / 60:.1f} min <= 10", med <= 600))
    for preset, s in summary.items():
        best = s.get("best_semires")
        for base, goal in ((SUPERVISED, 10.0), ("teacher_student", 3.0)):
            d = s["differences"].get(f"{best} - {base}")
            if d:
                ok = d["diff"] >= goal and d["low"] > 0
                checks.append(
                    (
                        f"{preset}: {label(best)} - {label(base)} = {d['diff']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] >= {goal:g}, interval > 0",
                        ok,
                    )
                )
        ours = [k for k in s["differences"] if k.endswith(" - cpi")]
        if ours:
            top = max(ours, key=lambda k: s["differences"][k]["diff"])
            d = s["differences"][top]
            every = all(v["holds"] and v["diff"] > 0 for v in d.get("by_data_seed", {}).values())
            checks.append(
                (
                    f"{preset}: best of ours ({top}) = {d['diff']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] >= 3, holding on every data seed",
                    d["diff"] >= 3 and d["low"] > 0 and every,
                )
            )
        shares = [
            (m, v["gap_share"]["mean"])
            for m, v in s["methods"].items()
            if m != SUPERVISED and "gap_share" in v
        ]
        if shares:
            m, g = max(shares, key=lambda mv: s["methods"][mv[0]]["oIoU"]["mean"])
            checks.append(
                (
                    f"{preset}: share of the label gap recovered by the best method ({label(m)}) {100 * g:.0f}% >= 50%",
                    g >= 0.5,
                )
            )
        grounded = [
            (m, v["grounding_after"]["mean"])
            for m, v in s["methods"].items()
            if "grounding_after" in v
        ]
        if grounded:
            m, g = max(grounded, key=lambda mv: mv[1])
            checks.append(
                (
                    f"{preset}: grounding rate of refined pseudo-labels, best {label(m)} {g:.1f}% >= 75%",
                    g >= 75,
                )
            )
    return checks


def print_summary(preset: str, s: dict) -> None:
    print(f"\n== {preset}: {s['runs']} runs (mean ± std (min..max) over runs)")
    for m, row in s["methods"].items():
        print(
            f"  {label(m):28s} oIoU {summarise(row['oIoU'])}"
            + (
                f"  grounded {summarise(row['grounding_after'])}%"
                if "grounding_after" in row
                else ""
            )
            + (
                f"  gap recovered {100 * row['gap_share']['mean']:.0f}%"
                if "gap_share" in row
                else ""
            )
        )
    for pair, d in s["differences"].items():
        a, b = pair.split(" - ")
        print(
            f"  {label(a)} - {label(b)}: {d['diff']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] holds={d['holds']}"
        )


def ceiling_record(out: Path, seed: int, steps: int) -> dict:
    """The record of a ceiling run already in ``out``."""
    results = json.loads(RunLayout(out / f"seed-{seed}").results_json.read_text())
    splits = results["methods"][SUPERVISED]
    return {
        "oIoU": splits[HEAD]["oIoU"],
        **{s: splits[s]["oIoU"] for s in SPLITS},
        "steps": steps,
        "train_seed": seed,
    }


def report(args: argparse.Namespace, runs: list[dict], counts: dict, ceilings: dict) -> None:
    """Summaries, targets and the json of everything finished so far."""
    add_gap_shares(runs, ceilings)
    summary = {}
    for preset in counts:
        mine = [r for r in runs if r["preset"] == preset]
        summary[preset] = summarise_preset(mine, counts[preset], args.methods)
        print_summary(preset, summary[preset])
    checks = targets(summary, [r["wall_s"] for r in runs if r["preset"] == "demo"])
    print()
    for text, ok in checks:
        print(("PASS " if ok else "FAIL ") + text)
    if args.json:
        payload = {
            "runs": runs,
            "ceilings": ceilings,
            "summary": summary,
            "targets": dict(checks),
            "argv": sys.argv[1:],
        }
        atomic_write_json(args.json, payload)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["demo:0", "demo:1", "demo:2", "hard:0"])
    ap.add_argument("--train-seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    ap.add_argument("--keep", type=Path, help="Keep the run folders here (default: a temp dir).")
    ap.add_argument("--json", type=Path, help="Write the figures to this json.")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="Collect a case whose folder under --keep already holds every seed's results\n"
        "instead of running it again (to gather cases run by separate invocations); a case\n"
        "that lacks some of --methods is completed in place: only those are trained.",
    )
    ap.add_argument(
        "--no-ceiling",
        dest="ceiling",
        action="store_false",
        help="Skip the full-label ceiling of each (preset, data seed).",
    )
    ap.add_argument("overrides", nargs="*", help="Extra `semires run` overrides for every case.")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="semires-bench-demo-"))
    extra = [f"methods=[{', '.join(args.methods)}]", *args.overrides]
    runs: list[dict] = []
    counts: dict[str, dict[tuple[int, int], dict]] = {}
    ceilings: dict[str, dict] = {}
    for case in args.cases:
        preset, data_seed = case.split(":")
        folder = root / f"{preset}-{data_seed}"
        plan = case_plan(folder, args.train_seeds, args.methods, args.reuse)
        if plan != "collect":
            wall = run_preset(
                preset, int(data_seed), args.train_seeds, folder, extra, fresh=plan == "fresh"
            )
            name = "bench_added_wall_s.txt" if plan == "complete" else "bench_wall_s.txt"
            (folder / name).write_text(f"{wall:.1f}\n")
        wall_file = folder / "bench_wall_s.txt"
        case_wall = float(wall_file.read_text()) if wall_file.exists() else float("nan")
        for s in args.train_seeds:
            record, c = collect(
                preset, int(data_seed), s, RunLayout(folder / f"seed-{s}"), args.methods
            )
            record["case_wall_s"] = round(case_wall, 1)
            record["wall_s"] = round(case_wall / len(args.train_seeds), 1)  # per training seed
            runs.append(record)
            counts.setdefault(preset, {})[(int(data_seed), s)] = c
            print(
                f"  {preset} data {data_seed} train {s}: "
                + "  ".join(f"{m} {v['oIoU']:.1f}" for m, v in record["methods"].items())
                + f"  ({record['wall_s'] / 60:.1f} min)",
                flush=True,
            )
        report(args, runs, counts, ceilings)  # the finished case, at once
        if args.ceiling:
            seed = args.train_seeds[0]
            steps = case_steps(RunLayout(folder / f"seed-{seed}"), args.methods)
            out = root / f"{preset}-{data_seed}-ceiling"
            done = RunLayout(out / f"seed-{seed}").results_json.exists()
            ceilings[case] = (
                ceiling_record(out, seed, steps)
                if args.reuse and done
                else run_ceiling(preset, int(data_seed), seed, steps, out, args.overrides)
            )
            print(f"  {case} ceiling (100% labels, {steps} steps): {ceilings[case]['oIoU']:.1f}")
            report(args, runs, counts, ceilings)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

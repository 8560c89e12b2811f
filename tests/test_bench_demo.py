"""bench/bench_demo.py's arithmetic: the share of the label gap, differences per data seed and
the targets, on made-up runs (the bench itself takes hours)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from semires.layout import SUPERVISED

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_demo.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_demo", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _counts(rng, iou: float, n: int = 60) -> dict[str, list[float]]:
    """Per-sentence (I, U, area) whose oIoU is about ``iou`` percent."""
    out = {}
    for k in range(n):
        union = float(rng.integers(50, 150))
        inter = union * np.clip(iou / 100 + rng.normal(0, 0.02), 0, 1)
        out[str(k)] = [inter, union, union]
    return out


def _runs(gains: dict[int, float]):
    """Two training seeds per data seed: burn-in 40, cpi 45, objects 45 + gains[data seed]."""
    rng = np.random.default_rng(0)
    runs, counts = [], {}
    for d, gain in gains.items():
        for s in (0, 1):
            levels = {SUPERVISED: 40.0, "cpi": 45.0, "objects": 45.0 + gain}
            c = {m: _counts(rng, v) for m, v in levels.items()}
            oiou = {m: 100 * sum(x[0] for x in v.values()) / sum(x[1] for x in v.values())
                    for m, v in c.items()}  # fmt: skip
            methods = {m: {"oIoU": oiou[m], "grounding_after": 50.0} for m in levels}
            methods[SUPERVISED].pop("grounding_after")
            runs.append({"preset": "demo", "data_seed": d, "train_seed": s, "methods": methods})
            counts[(d, s)] = c
    return runs, counts


def test_gap_share_is_the_recovered_part_of_burn_in_to_ceiling(bench):
    runs = [{"preset": "demo", "data_seed": 0, "methods": {SUPERVISED: {"oIoU": 40.0},
             "cpi": {"oIoU": 45.0}}}]  # fmt: skip
    bench.add_gap_shares(runs, {"demo:0": {"oIoU": 60.0}})
    assert runs[0]["methods"]["cpi"]["gap_share"] == pytest.approx(0.25)
    assert runs[0]["methods"][SUPERVISED]["gap_share"] == 0.0
    other = [{"preset": "demo", "data_seed": 1, "methods": {SUPERVISED: {"oIoU": 40.0}}}]
    bench.add_gap_shares(other, {"demo:0": {"oIoU": 60.0}})  # no ceiling for data seed 1
    assert "gap_share" not in other[0]["methods"][SUPERVISED]


@pytest.mark.parametrize(("gains", "every"), [({0: 6.0, 1: 5.0}, True), ({0: 9.0, 1: -1.0}, False)])
def test_ours_must_hold_on_every_data_seed(bench, gains, every):
    runs, counts = _runs(gains)
    bench.add_gap_shares(runs, {"demo:0": {"oIoU": 55.0}, "demo:1": {"oIoU": 55.0}})
    summary = bench.summarise_preset(runs, counts, ["cpi", "objects"])
    diff = summary["differences"]["objects - cpi"]
    assert diff["diff"] == pytest.approx(np.mean(list(gains.values())), abs=0.5)
    assert all(v["holds"] and v["diff"] > 0 for v in diff["by_data_seed"].values()) is every
    checks = dict(bench.targets({"demo": summary}, []))
    (ours,) = [ok for text, ok in checks.items() if "best of ours" in text]
    assert ours is every  # the mean gain is >= 3 in both cases
    (gap,) = [(text, ok) for text, ok in checks.items() if "label gap" in text]
    share = summary["methods"]["objects"]["gap_share"]["mean"]
    assert share == pytest.approx((5 + np.mean(list(gains.values()))) / 15, abs=0.05)
    assert gap[1] is (share >= 0.5)


def test_reuse_completes_a_case_missing_methods_in_place(bench, tmp_path):
    import json

    def finished(seed: int, methods: list[str]) -> None:
        folder = tmp_path / f"seed-{seed}"
        folder.mkdir(exist_ok=True)
        results = {"methods": {m: {} for m in [SUPERVISED, *methods]}}
        (folder / "results.json").write_text(json.dumps(results))

    assert bench.case_plan(tmp_path, [0, 1], ["cpi"], reuse=True) == "fresh"  # nothing there
    finished(0, ["cpi", "objects"])
    assert bench.case_plan(tmp_path, [0, 1], ["cpi"], reuse=True) == "fresh"  # seed 1 missing
    finished(1, ["cpi"])
    assert bench.case_plan(tmp_path, [0, 1], ["cpi"], reuse=True) == "collect"
    assert bench.case_plan(tmp_path, [0, 1], ["cpi", "objects"], reuse=True) == "complete"
    assert bench.case_plan(tmp_path, [0, 1], ["cpi"], reuse=False) == "fresh"

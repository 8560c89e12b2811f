"""Comparisons with their spread: seeds, paired bootstrap over sentences, small objects."""

from __future__ import annotations

import pytest

from semires.evaluate.compare import (
    oiou,
    paired_bootstrap,
    pooled_bootstrap,
    small_objects,
    spread,
    summarise,
)


def _counts(pairs: list[tuple[float, float]], areas: list[float] | None = None) -> dict:
    areas = areas or [10.0] * len(pairs)
    return {f"s{i}": (i_, u, a) for i, ((i_, u), a) in enumerate(zip(pairs, areas, strict=True))}


def test_spread_and_oiou():
    s = spread([1.0, 2.0, 4.0])
    assert s["mean"] == pytest.approx(7 / 3) and s["min"] == 1.0 and s["max"] == 4.0
    assert s["std"] == pytest.approx(1.5275252, rel=1e-6) and s["n"] == 3
    assert spread([5.0])["std"] == 0.0 and summarise([5.0]) == "5.00"
    assert summarise([1.0, 3.0]) == "2.00 ± 1.41 (1.00..3.00)"
    assert oiou(_counts([(1, 2), (3, 6)])) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        spread([])


def test_paired_bootstrap_sees_a_consistent_gain_and_no_gain():
    base = _counts([(k % 7 + 1, 10) for k in range(200)])
    same = paired_bootstrap(base, base)
    assert same["diff"] == 0.0 and same["low"] == 0.0 and same["high"] == 0.0
    better = {k: (i + 1, u) for k, (i, u, _) in base.items()}  # one more pixel on every sentence
    gain = paired_bootstrap(better, base)
    assert gain["diff"] == pytest.approx(10.0) and gain["low"] > 0 and gain["share_above_0"] == 1.0
    # a gain on half the sentences and an equal loss on the other half: an interval around 0
    mixed = {k: (i + (1 if n % 2 else -1), u) for n, (k, (i, u, _)) in enumerate(base.items())}
    noise = paired_bootstrap(mixed, base)
    assert noise["low"] < 0 < noise["high"]
    # several seeds: the mean of the per-seed differences
    two = paired_bootstrap([better, base], [base, base])
    assert two["diff"] == pytest.approx(5.0) and two["seeds"] == 2 and two["sentences"] == 200
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap([base], [base, base])


def test_small_objects_takes_the_smallest_share():
    counts = _counts([(1, 1)] * 5 + [(0, 1)] * 15, areas=[1.0] * 5 + [100.0] * 15)
    small = small_objects(counts, share=0.25)  # the 5 smallest: all perfect
    assert small == {"oIoU": 100.0, "sentences": 5, "max_area": 1.0}
    assert small_objects(counts, share=1.0)["oIoU"] == pytest.approx(25.0)
    with pytest.raises(ValueError):
        small_objects(counts, share=0.0)


def test_pooled_bootstrap_over_datasets_with_their_own_sentences():
    a1 = _counts([(5, 10)] * 50)
    b1 = _counts([(4, 10)] * 50)  # +10 points on dataset 1
    a2 = {f"x{k}": v for k, v in _counts([(3, 10)] * 80).items()}
    b2 = {f"x{k}": v for k, v in _counts([(3, 10)] * 80).items()}  # +0 on dataset 2
    pooled = pooled_bootstrap([([a1], [b1]), ([a2, a2], [b2, b2])])
    assert pooled["runs"] == 3 and pooled["diff"] == pytest.approx(10 / 3)
    assert pooled["low"] == pytest.approx(10 / 3) and pooled["high"] == pytest.approx(10 / 3)

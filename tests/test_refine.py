"""IOM / CPI / PWA refinement on hand-made masks, against the formulas of docs/method.md section 4."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from semires.errors import ConfigError
from semires.train import refine as refine_module
from semires.train.refine import (
    candidate_overlaps,
    confidence_filter,
    correction_stats,
    cpi,
    expression_consensus,
    iom,
    pwa_weights,
    soft_iom,
)
from semires.train.strategies import STRATEGIES, RefineConfig, make_strategy, strategy_labels
from semires.utils.typed_config import load_dataclass


def grid(*rows: str) -> torch.Tensor:
    """A bool mask from strings of '.' and '#'."""
    return torch.tensor([[c == "#" for c in row] for row in rows])


def batch(label: torch.Tensor, *candidates: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One sample: P [1, H, W], M [1, K, H, W], valid [1, K] (all valid)."""
    stack = torch.stack(candidates) if candidates else label.new_zeros(0, *label.shape)
    return label[None], stack[None], torch.ones(1, len(candidates), dtype=torch.bool)


# P covers 4 pixels; candidates: a 6-pixel box containing P (IoU 4/6, r1 = 1, r2 = 4/6), a
# 2-pixel part of P (IoU 2/4, r1 = 1/2, r2 = 1), a disjoint box (IoU 0).
P0 = grid("......", ".##...", ".##...", "......")
BIG = grid("......", "###...", "###...", "......")
PART = grid("......", ".##...", "......", "......")
AWAY = grid("......", "......", "......", "....##")


def test_iom_picks_the_best_candidate() -> None:
    P, M, valid = batch(P0, AWAY, PART, BIG)
    result = iom(P, M, valid)
    assert result.index.tolist() == [2]
    assert result.matched.tolist() == [True]  # IoU 4/6 > 0.5
    assert torch.equal(result.refined[0], BIG)


def test_iom_threshold_is_strict() -> None:
    P, M, valid = batch(P0, PART)  # IoU exactly 2/4 = 0.5
    assert iom(P, M, valid, tau=0.5).matched.tolist() == [False]
    assert torch.equal(iom(P, M, valid, tau=0.5).refined, P)
    assert iom(P, M, valid, tau=0.49).matched.tolist() == [True]
    assert torch.equal(iom(P, M, valid, tau=0.49).refined[0], PART)


def test_iom_candidate_equal_to_label_wins() -> None:
    P, M, valid = batch(P0, BIG, P0.clone(), PART, P0.clone())
    result = iom(P, M, valid, tau=0.99)
    assert result.index.tolist() == [1] and result.matched.tolist() == [True]  # first of a tie
    assert torch.equal(result.refined[0], P0)


def test_cpi_u_takes_a_larger_mask_containing_p() -> None:
    P, M, valid = batch(P0, BIG, AWAY)
    result = cpi(P, M, valid, use_o=False)  # r1(BIG) = 4/4 > 0.7
    assert result.selected.tolist() == [[True, False]]
    assert torch.equal(result.refined[0], BIG)


def test_cpi_o_unites_parts_inside_p() -> None:
    label = grid("####", "####", "....")
    left, right = grid("##..", "##..", "...."), grid("..##", "..##", "..#.")  # r2 = 4/5
    P, M, valid = batch(label, left, right, grid("....", "....", "####"))
    result = cpi(P, M, valid, use_u=False)
    assert result.selected.tolist() == [[True, True, False]]
    assert torch.equal(result.refined[0], left | right)
    # both rules: same set here (no candidate covers > 70% of P)
    assert torch.equal(cpi(P, M, valid).refined, result.refined)


def test_cpi_switches_and_thresholds() -> None:
    P, M, valid = batch(P0, BIG, PART)
    assert cpi(P, M, valid).selected.tolist() == [[True, True]]
    assert cpi(P, M, valid, use_o=False).selected.tolist() == [[True, False]]
    assert cpi(P, M, valid, use_u=False).selected.tolist() == [[False, True]]
    assert cpi(P, M, valid, t1=1.0, t2=1.0).matched.tolist() == [False]  # strict: 1 > 1 is false
    assert cpi(P, M, valid, t1=0.5, t2=1.0).selected.tolist() == [[True, False]]  # r1 = 1/2 fails
    assert cpi(P, M, valid, t1=1.0, t2=4 / 6).selected.tolist() == [[False, True]]  # r2 = 4/6 fails
    with pytest.raises(ValueError, match="at least one"):
        cpi(P, M, valid, use_u=False, use_o=False)


def test_no_candidates_and_all_padding_keep_p() -> None:
    P, M, valid = batch(P0)  # K = 0
    assert iom(P, M, valid).matched.tolist() == [False]
    assert iom(P, M, valid).index.tolist() == [-1]
    assert torch.equal(cpi(P, M, valid).refined, P)
    P, M, valid = batch(P0, P0.clone(), BIG)
    padding = torch.zeros_like(valid)
    for result in (iom(P, M, padding), cpi(P, M, padding)):
        assert result.matched.tolist() == [False]
        assert torch.equal(result.refined, P)
    assert iom(P, M, padding).index.tolist() == [-1]
    assert candidate_overlaps(P, M, padding).inter.tolist() == [[0, 0]]


def test_empty_pseudo_label_and_empty_candidate() -> None:
    empty = torch.zeros_like(P0)
    P, M, valid = batch(empty, BIG, empty.clone())
    overlaps = candidate_overlaps(P, M, valid)
    assert overlaps.area_p.tolist() == [0] and overlaps.area_m.tolist() == [[6, 0]]
    # |P| = 0 -> r1 = 0; |M| = 0 -> r2 = 0; empty candidate on empty P -> IoU 0
    assert cpi(P, M, valid, t1=0.0, t2=0.0).matched.tolist() == [False]
    assert iom(P, M, valid, tau=0.0).matched.tolist() == [False]
    P, M, valid = batch(P0, empty.clone())
    assert cpi(P, M, valid, t1=0.0, t2=0.0).matched.tolist() == [False]


def slow_reference(P, M, valid, tau, t1, t2, use_u, use_o):
    """Per-sample, per-candidate loops with exact fractions: (iom refined, iom matched, index,
    cpi refined, cpi matched, cpi selected)."""
    out = {"iom": [], "iom_matched": [], "index": [], "cpi": [], "cpi_matched": [], "sel": []}
    for b in range(P.shape[0]):
        best, best_k, union_mask, sel_row = Fraction(-1), -1, torch.zeros_like(P[b]), []
        area_p = int(P[b].sum())
        for k in range(M.shape[1]):
            inter = int((M[b, k] & P[b]).sum())
            area_m = int(M[b, k].sum())
            union = area_m + area_p - inter
            iou = Fraction(inter, union) if union else Fraction(0)
            r1 = Fraction(inter, area_p) if area_p else Fraction(0)
            r2 = Fraction(inter, area_m) if area_m else Fraction(0)
            chosen = bool(valid[b, k]) and ((use_u and r1 > t1) or (use_o and r2 > t2))
            sel_row.append(chosen)
            if chosen:
                union_mask |= M[b, k]
            if valid[b, k] and iou > best:
                best, best_k = iou, k
        matched = best_k >= 0 and best > tau
        out["iom"].append(M[b, best_k] if matched else P[b])
        out["iom_matched"].append(matched)
        out["index"].append(best_k)
        out["cpi"].append(union_mask if any(sel_row) else P[b])
        out["cpi_matched"].append(any(sel_row))
        out["sel"].append(sel_row)
    return out


def random_case(seed: int, b: int, k: int, h: int, w: int):
    gen = torch.Generator().manual_seed(seed)
    P = torch.rand(b, h, w, generator=gen) > 0.6
    # candidates: noisy copies of P, random blobs, parts of P, full and empty masks
    noise = torch.rand(b, k, h, w, generator=gen)
    kind = torch.randint(0, 4, (b, k, 1, 1), generator=gen)
    M = torch.where(kind == 0, P[:, None] ^ (noise < 0.1), noise < 0.3)
    M = torch.where(kind == 2, P[:, None] & (noise < 0.8), M)
    M[:, 0] = True
    M[:, 1] = P & (noise[:, 1] < 0.8)  # a part of P: r2 = 1
    M[:, -1] = False
    valid = torch.rand(b, k, generator=gen) < 0.8
    valid[1:, :2] = True
    valid[0] = False  # a sample with no valid candidate
    return P, M, valid


@pytest.mark.parametrize(
    ("seed", "shape", "params"),
    [
        (0, (4, 6, 9, 13), (0.5, 0.7, 0.7, True, True)),  # H*W not a multiple of 8
        (1, (3, 5, 48, 50), (0.3, 0.6, 0.5, True, False)),  # > 255 words per mask
        (2, (3, 7, 16, 24), (0.1, 0.2, 0.9, False, True)),
    ],
)
def test_batched_equals_slow_reference(seed: int, shape: tuple, params: tuple) -> None:
    P, M, valid = random_case(seed, *shape)
    tau, t1, t2, use_u, use_o = params
    ref = slow_reference(
        P, M, valid, Fraction(str(tau)), Fraction(str(t1)), Fraction(str(t2)), use_u, use_o
    )
    got_iom = iom(P, M, valid, tau)
    got_cpi = cpi(P, M, valid, t1, t2, use_u, use_o)
    assert torch.equal(got_iom.refined, torch.stack(ref["iom"]))
    assert got_iom.matched.tolist() == ref["iom_matched"]
    assert got_iom.index.tolist() == ref["index"]
    assert torch.equal(got_cpi.refined, torch.stack(ref["cpi"]))
    assert got_cpi.matched.tolist() == ref["cpi_matched"]
    assert got_cpi.selected.tolist() == ref["sel"]
    assert any(ref["iom_matched"]) and any(ref["cpi_matched"])  # the case exercises both paths


def test_counts_exact_in_blocks_and_with_full_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    P, M, valid = random_case(3, 2, 9, 64, 64)
    expected = candidate_overlaps(P, M, valid)
    assert expected.area_m[1, 0].item() == 64 * 64  # all-true mask: byte lanes reach 255
    monkeypatch.setitem(refine_module._BLOCK_BYTES, "cpu", 1)  # one candidate per block
    blocked = candidate_overlaps(P, M, valid)
    for got, want in zip(blocked, expected, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(expected.inter, (M & P[:, None]).flatten(2).sum(-1) * valid)
    assert torch.equal(expected.area_p, P.flatten(1).sum(-1))


def test_union_of_more_than_255_masks_on_one_pixel() -> None:
    """256 selected masks covering the same pixels: a byte count would wrap to 0 without groups."""
    label = grid("####", "##..")
    M = label.expand(1, 256, 2, 4).clone()
    valid = torch.ones(1, 256, dtype=torch.bool)
    result = cpi(label[None], M, valid)
    assert int(result.selected.sum()) == 256
    assert torch.equal(result.refined[0], label)


def test_small_count_groups_give_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting and unions in groups of 2 words / 2 masks (instead of 255) change nothing."""
    P, M, valid = random_case(5, 3, 12, 16, 20)
    M[:, 2:8] = M[:, 1:2]  # several selected masks covering the same pixels
    overlaps, union = candidate_overlaps(P, M, valid), cpi(P, M, valid)
    monkeypatch.setattr(refine_module, "_LANE_WORDS", 2)
    for got, want in zip(candidate_overlaps(P, M, valid), overlaps, strict=True):
        assert torch.equal(got, want)
    small = cpi(P, M, valid)
    assert torch.equal(small.refined, union.refined)
    assert small.selected.sum(1).max() > 2  # more than one group in a sample
    expected = (M & small.selected[:, :, None, None]).any(1)
    assert torch.equal(small.refined[small.matched], expected[small.matched])


def test_non_contiguous_inputs_and_dtypes_are_handled() -> None:
    P, M, valid = random_case(4, 2, 5, 12, 10)
    flipped = iom(P.transpose(1, 2), M.transpose(2, 3), valid)
    assert torch.equal(flipped.refined, iom(P, M, valid).refined.transpose(1, 2))
    p = torch.rand(2, 12, 10, dtype=torch.float64)
    result = strategy_labels(P, p, M, valid, RefineConfig(strategy="iom"))
    assert result.labels.dtype == torch.bool and result.labels.device == P.device
    assert result.weights.dtype == torch.float64
    assert result.matched.dtype == torch.bool
    assert strategy_labels(P, p.half(), M, valid, RefineConfig()).weights.dtype == torch.float16


def test_pwa_weights_match_method_values() -> None:
    p = torch.tensor([0.0, 1.0, 0.2, 0.8, 0.4, 0.6, 0.5])
    expected = [0.94, 0.94, 0.50, 0.50, 0.10, 0.10, 0.04]
    assert pwa_weights(p).tolist() == pytest.approx(expected, abs=0.005)
    assert pwa_weights(torch.tensor([0.5]), sigma2=0.2, offset=1.0).item() == pytest.approx(
        1.0 - 1.0 / (2 * torch.pi * 0.2) ** 0.5
    )


def test_confidence_filter() -> None:
    p = torch.tensor([[0.05, 0.3, 0.5, 0.92, 0.9]])
    label, ignore = confidence_filter(p, 0.9)
    assert label.tolist() == [[False, False, False, True, True]]
    assert ignore.tolist() == [[False, True, True, False, False]]


def test_refine_weights_and_counts_per_strategy() -> None:
    label = torch.stack([P0, P0, torch.zeros_like(P0)])
    M = torch.stack([torch.stack([BIG, AWAY]), torch.stack([AWAY, AWAY]), torch.stack([BIG, PART])])
    valid = torch.tensor([[True, True], [True, False], [True, True]])
    p = torch.where(label, 0.8, 0.1)
    pwa = pwa_weights(p)

    result = strategy_labels(label, p, M, valid, RefineConfig(strategy="iom"))
    assert result.matched.tolist() == [True, False, False]
    assert torch.equal(result.labels, torch.stack([BIG, P0, torch.zeros_like(P0)]))
    assert torch.equal(result.weights[0], torch.ones_like(p[0]))
    assert torch.equal(result.weights[1:], pwa[1:])
    assert result.counts == {"matched_iom": 1}  # IOM's own counter: one sample matched

    result = strategy_labels(label, p, M, valid, RefineConfig(strategy="cpi", pwa=False))
    assert result.matched.tolist() == [True, False, False]
    assert torch.equal(result.weights, torch.ones_like(p))
    assert (result.counts["matched_cpi_u"], result.counts["matched_cpi_o"]) == (1, 0)

    result = strategy_labels(label, p, M, valid, RefineConfig(strategy="none"))
    assert torch.equal(result.labels, label) and torch.equal(result.weights, torch.ones_like(p))
    assert not result.matched.any()

    result = strategy_labels(
        label, p, M, valid, RefineConfig(strategy="confidence", confidence=0.85)
    )
    assert torch.equal(result.labels, label)
    assert torch.equal(result.weights, torch.where(label, 0.0, 1.0))  # 0.8 < 0.85: ignored
    assert int((result.weights == 0).sum()) == 8  # the 8 uncertain pixels are ignored


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tau": 1.5}, r"refine\.tau = 1\.5: expected a number in \[0, 1\]"),
        ({"t1": -0.1}, r"refine\.t1 = -0\.1"),
        ({"t2": True}, r"'refine\.t2': expected a number, got True"),
        ({"confidence": "high"}, r"'refine\.confidence': expected a number, got 'high'"),
        (
            {"strategy": "sam"},
            r"'refine\.strategy': expected one of 'none' \| 'iom' \| 'cpi' .*, got 'sam'",
        ),
        ({"cpi_u": False, "cpi_o": False}, "CPI needs one rule"),
        ({"pwa": "yes"}, r"'refine\.pwa': expected true or false, got 'yes'"),
        ({"pwa_sigma2": 0.0}, r"refine\.pwa_sigma2 = 0\.0: expected a positive number"),
        ({"pwa_offset": 1.0}, r"refine\.pwa_offset = 1\.0: PWA weights would be negative"),
        ({"taus": 0.5}, r"unknown config key 'refine\.taus'"),
        ({"soft_tau": 1.5}, r"refine\.soft_tau = 1\.5"),
    ],
)
def test_config_validation(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_dataclass(RefineConfig, values, prefix="refine")


def test_config_defaults_and_round_trip() -> None:
    cfg = RefineConfig()
    assert (cfg.tau, cfg.t1, cfg.t2, cfg.pwa_sigma2, cfg.pwa_offset) == (0.5, 0.7, 0.7, 0.1, 1.3)
    assert load_dataclass(RefineConfig, cfg.to_dict(), prefix="refine") == cfg
    # every strategy name a config accepts has its labels and loss in semires.train.strategies
    for name in STRATEGIES:
        strategy = make_strategy(RefineConfig(strategy=name))
        assert type(strategy).labels is not type(strategy).__mro__[-2].labels
        assert type(strategy).loss is not type(strategy).__mro__[-2].loss
    assert RefineConfig(strategy="iom", cpi_u=False, cpi_o=False).strategy == "iom"


def test_correction_stats() -> None:
    gt = torch.stack([BIG, P0, P0, torch.zeros_like(P0)])
    before = torch.stack([P0, P0, P0, torch.zeros_like(P0)])
    after = torch.stack([BIG, PART, P0, torch.zeros_like(P0)])
    stats = correction_stats(before, after, gt)
    assert stats["iou_before"].tolist() == pytest.approx([2 / 3, 1.0, 1.0, 0.0])
    assert stats["iou_after"].tolist() == pytest.approx([1.0, 0.5, 1.0, 0.0])
    assert (stats["positive"], stats["negative"], stats["no_change"]) == (1, 1, 2)


# --- beyond the paper: soft-IoU selection and consensus over expressions ------------------------


def test_soft_iom_uses_the_probability_not_the_label() -> None:
    # two look-alike objects; the teacher is torn: 0.55 on the wrong one (its label P), 0.45 on
    # the right one, and P covers only part of the wrong object
    left = grid("##....", "##....", "......", "......")
    right = grid("......", "......", "....##", "....##")
    p = torch.zeros(4, 6, dtype=torch.float64)
    p[left] = 0.55
    p[right] = 0.45
    label = grid("#.....", "##....", "......", "......")
    P, M, valid = batch(label, right, left)
    result = soft_iom(P, p[None], M, valid, tau=0.3)
    # softIoU(left) = 2.2 / (4 + 4 - 2.2) = 0.379; softIoU(right) = 1.8 / (4 + 4 - 1.8) = 0.290
    assert result.index.tolist() == [1] and result.matched.tolist() == [True]
    assert result.score.tolist() == pytest.approx([2.2 / 5.8])
    assert torch.equal(result.refined[0], left)
    # sure of the right object: the right candidate wins even though P overlaps the left one
    p2 = torch.zeros(4, 6, dtype=torch.float64)
    p2[right] = 0.95
    p2[label] = 0.51
    result = soft_iom(P, p2[None], M, valid, tau=0.3)
    assert result.index.tolist() == [0] and torch.equal(result.refined[0], right)
    # below tau: no match, P kept; no candidates: no match, index -1
    assert soft_iom(P, p[None], M, valid, tau=0.5).matched.tolist() == [False]
    P0_, M0, v0 = batch(label)
    empty = soft_iom(P0_, p[None], M0, v0)
    assert empty.index.tolist() == [-1] and torch.equal(empty.refined, P0_)


def test_soft_iom_ignores_padding_slots() -> None:
    left = grid("##....", "##....", "......", "......")
    p = left.double() * 0.9
    P, M, _ = batch(left, left, left)
    valid = torch.tensor([[False, True]])
    result = soft_iom(P, p[None], M, valid)
    assert result.index.tolist() == [1]


def test_expression_consensus_is_the_mean_per_object() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    c = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    probs = torch.stack([a, b, a, c])
    owner = torch.tensor([0, 0, 0, 1])  # object 0 has three expressions, object 1 one
    out = expression_consensus(probs, owner, 3)
    assert torch.allclose(out[0], (2 * a + b) / 3)
    assert torch.equal(out[1], c) and torch.equal(out[2], torch.zeros(2, 2))
    # the outvoted expression's object falls below 0.5: the consensus label is the majority's
    assert ((out[0] > 0.5) == (a > 0.5)).all()
    with pytest.raises(ValueError, match="expected probs"):
        expression_consensus(probs, owner[:2], 3)

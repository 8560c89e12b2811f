"""RES metrics (oIoU, mIoU, Prec@X) and the two protocols, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from semires.errors import ConfigError, DataError
from semires.evaluate.metrics import (
    RESMetrics,
    apply_protocol,
    check_protocol,
    intersection_union,
    iou_from_counts,
    lavt_resize_mask,
    logits_to_masks,
    protocol_size,
)


def masks(*rows: str) -> torch.Tensor:
    """One mask from strings of '.' and '#' (one string per row)."""
    return torch.tensor([[c == "#" for c in row] for row in rows])


def test_intersection_union_hand_computed() -> None:
    pred = torch.stack([masks("##..", "##.."), masks("....", "...."), masks("#...", "....")])
    gt = torch.stack([masks(".##.", ".##."), masks("....", "...."), masks("....", "....")])
    inter, union = intersection_union(pred, gt)
    assert inter.tolist() == [2, 0, 0]
    assert union.tolist() == [6, 0, 1]
    # 2/6; both empty -> U = 0 -> IoU 0 (LAVT convention); prediction on an empty GT -> 0.
    assert iou_from_counts(inter, union).tolist() == pytest.approx([1 / 3, 0.0, 0.0])


def test_empty_prediction_on_non_empty_gt_is_zero() -> None:
    inter, union = intersection_union(masks("..", "..")[None], masks("#.", "..")[None])
    assert (inter.item(), union.item()) == (0, 1)
    assert iou_from_counts(inter, union).item() == 0.0


def test_non_bool_inputs_read_as_nonzero_and_shape_errors() -> None:
    inter, union = intersection_union(torch.tensor([[[0, 255]]]), torch.tensor([[[1.0, 1.0]]]))
    assert (inter.item(), union.item()) == (1, 2)
    with pytest.raises(ValueError, match="one shape"):
        intersection_union(torch.zeros(1, 2, 2, dtype=torch.bool), torch.zeros(1, 2, 3))


def test_oiou_and_miou_differ_as_expected() -> None:
    metrics = RESMetrics()
    # small object scored badly, large object scored well: oIoU is dominated by the large one
    metrics.update_counts(torch.tensor([1, 90]), torch.tensor([2, 100]))
    result = metrics.compute()
    assert result["oIoU"] == pytest.approx(91 / 102)
    assert result["mIoU"] == pytest.approx((0.5 + 0.9) / 2)
    assert result["n"] == 2
    assert result["precision"] == {0.5: 1.0, 0.6: 0.5, 0.7: 0.5, 0.8: 0.5, 0.9: 0.5}


def test_precision_counts_iou_equal_to_threshold() -> None:
    metrics = RESMetrics()
    # IoU exactly 0.5, 0.6, 0.7, 0.8, 0.9 (from integer counts) and just below 0.7
    metrics.update_counts(torch.tensor([1, 3, 7, 4, 9, 699]), torch.tensor([2, 5, 10, 5, 10, 1000]))
    precision = metrics.compute()["precision"]
    assert precision[0.5] == pytest.approx(6 / 6)
    assert precision[0.6] == pytest.approx(5 / 6)
    assert precision[0.7] == pytest.approx(3 / 6)  # 0.7, 0.8, 0.9; not 0.699
    assert precision[0.8] == pytest.approx(2 / 6)
    assert precision[0.9] == pytest.approx(1 / 6)


def test_update_with_masks_equals_update_with_counts() -> None:
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(6, 9, 11, generator=gen) > 0.5
    gt = torch.rand(6, 9, 11, generator=gen) > 0.6
    a, b = RESMetrics(), RESMetrics()
    iou = a.update(pred, gt)
    b.update_counts(*intersection_union(pred, gt))
    assert torch.equal(a.sums(), b.sums())
    expected = [((p & g).sum() / (p | g).sum()).item() for p, g in zip(pred, gt, strict=True)]
    assert iou.tolist() == pytest.approx(expected)


def test_merge_and_all_reduce_style_sums() -> None:
    whole, first, second = (RESMetrics(keep_per_sample=True) for _ in range(3))
    inter, union = torch.tensor([3, 0, 5, 8]), torch.tensor([4, 0, 9, 8])
    whole.update_counts(inter, union, keys=["a", "b", "c", "d"])
    first.update_counts(inter[:2], union[:2], keys=["a", "b"])
    second.update_counts(inter[2:], union[2:], keys=["c", "d"])
    # what torch.distributed.all_reduce does to the state vectors of two processes
    reduced = RESMetrics()
    reduced.load_sums(first.sums() + second.sums())
    assert reduced.compute() == whole.compute()
    first.merge(second)
    assert first.compute() == whole.compute()
    assert first.per_sample == whole.per_sample == {"a": 0.75, "b": 0.0, "c": 5 / 9, "d": 1.0}
    with pytest.raises(ValueError, match="'a' was scored twice"):
        first.merge(whole)


def test_per_sample_keys_are_required_and_unique() -> None:
    metrics = RESMetrics(keep_per_sample=True)
    with pytest.raises(ValueError, match="one key per sample"):
        metrics.update_counts(torch.tensor([1]), torch.tensor([2]))
    metrics.update_counts(torch.tensor([1]), torch.tensor([2]), keys=[7])
    with pytest.raises(ValueError, match="'7' was scored twice"):
        metrics.update_counts(torch.tensor([1]), torch.tensor([2]), keys=["7"])


def test_empty_accumulator_reports_zeros() -> None:
    result = RESMetrics().compute()
    assert result == {
        "oIoU": 0.0,
        "mIoU": 0.0,
        "precision": dict.fromkeys(result["precision"], 0.0),
        "n": 0,
    }


def test_report_is_in_percent_with_string_thresholds() -> None:
    metrics = RESMetrics(keep_per_sample=True)
    metrics.update_counts(torch.tensor([1, 9]), torch.tensor([2, 10]), keys=["x", "y"])
    report = metrics.report("original")
    assert report["oIoU"] == pytest.approx(100 * 10 / 12)
    assert report["mIoU"] == pytest.approx(70.0)
    assert report["precision"] == {"0.5": 100.0, "0.6": 50.0, "0.7": 50.0, "0.8": 50.0, "0.9": 50.0}
    assert report["per_sample"] == {"x": 0.5, "y": 0.9}
    assert (report["protocol"], report["n"]) == ("original", 2)


def test_lavt_resize_is_pil_nearest() -> None:
    mask = np.zeros((640, 427), dtype=np.uint8)
    mask[100:300, 50:200] = 1
    resized = lavt_resize_mask(mask)
    pil = np.asarray(Image.fromarray(mask).resize((480, 480), Image.NEAREST))
    assert resized.shape == (480, 480) and resized.dtype == np.uint8
    assert np.array_equal(resized, pil)
    # a 2x2 checkerboard upsampled to 4x4 becomes 2x2 blocks
    small = lavt_resize_mask(torch.tensor([[1, 0], [0, 1]]), size=4)
    assert small.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]


def test_apply_protocol_lavt_resizes_original_checks_sizes() -> None:
    pred, gt = np.ones((20, 30), np.uint8), np.ones((40, 60), np.uint8)
    p, g = apply_protocol(pred, gt, "lavt")
    assert p.shape == g.shape == (480, 480)
    with pytest.raises(
        DataError, match=r"img7: prediction size 20x30 differs from ground truth 40x60"
    ):
        apply_protocol(pred, gt, "original", sample="img7")
    same, _ = apply_protocol(gt, gt, "original")
    assert same is gt
    assert protocol_size("lavt", (40, 60)) == (480, 480)
    assert protocol_size("original", (40, 60)) == (40, 60)


def test_unknown_protocol_is_a_config_error() -> None:
    assert check_protocol("lavt") == "lavt"
    with pytest.raises(ConfigError, match="unknown protocol 'cris'"):
        check_protocol("cris")


def test_logits_to_masks_argmax_and_bilinear_resize() -> None:
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1] = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # ties (0 vs 0) go to background
    assert logits_to_masks(logits).tolist() == [[[True, False], [False, False]]]
    # foreground on the left column; bilinear (align_corners) upsampling keeps the left half
    wide = torch.zeros(1, 2, 4, 2)
    wide[0, 1, :, 0], wide[0, 1, :, 1] = 1.0, -1.0
    up = logits_to_masks(wide, size=(4, 6))
    assert up[0, 0].tolist() == [True, True, True, False, False, False]  # src x = j / 5
    with pytest.raises(ValueError, match="2-class logits"):
        logits_to_masks(torch.zeros(1, 3, 2, 2))

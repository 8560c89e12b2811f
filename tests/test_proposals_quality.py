"""Quality numbers (best IoU, CPI union, candidates per image) on a hand-made case."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semires.data import masks as mask_ops
from semires.data.index import Image, Object, Ref, RESIndex, Sentence
from semires.errors import ProposalError
from semires.proposals.base import Proposals
from semires.proposals.store import ProposalStore
from semires.train.proposal_quality import (
    evaluate_quality,
    format_summary,
    object_quality,
    plot_quality,
    summarise,
)

SIZE = (20, 20)


def box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """A mask with rows r0..r1 and columns c0..c1 (inclusive) set."""
    mask = np.zeros(SIZE, np.uint8)
    mask[r0 : r1 + 1, c0 : c1 + 1] = 1
    return mask


# object A (10 x 10 = 100 px) and object B (6 x 5 = 30 px)
OBJECT_A = box(2, 11, 2, 11)
OBJECT_B = box(14, 19, 0, 4)
CANDIDATES = np.stack(
    [
        box(2, 11, 2, 6),  # left half of A: IoU 0.5, inside A (r2 = 1)
        box(2, 11, 7, 11),  # right half of A: IoU 0.5, inside A
        box(14, 17, 14, 17),  # elsewhere
        box(13, 19, 0, 4),  # B plus one row: IoU 30 / 35, covers B (r1 = 1)
        box(14, 19, 0, 1),  # a strip of B: inside B
    ]
)


def test_object_quality_by_hand() -> None:
    best, k, cpi, n = object_quality(CANDIDATES.astype(bool), OBJECT_A)
    assert (best, cpi, n) == (0.5, 1.0, 2) and k in (0, 1)  # the two halves make A
    best, k, cpi, n = object_quality(CANDIDATES.astype(bool), OBJECT_B)
    assert best == pytest.approx(30 / 35) and k == 3
    assert cpi == pytest.approx(30 / 35) and n == 2  # union of candidates 3 and 4 = candidate 3
    assert object_quality(CANDIDATES[:0].astype(bool), OBJECT_A) == (0.0, -1, 0.0, 0)
    # stricter CPI thresholds keep only candidates fully inside / covering
    assert object_quality(CANDIDATES.astype(bool), OBJECT_A, t1=1.0, t2=1.0)[2] == 0.0


def hand_index() -> RESIndex:
    images = [Image(1, "1.png", *SIZE), Image(2, "2.png", *SIZE)]
    objects = [
        Object(10, 1, 1, (2, 2, 10, 10), segmentation=mask_ops.encode(OBJECT_A)),
        Object(11, 1, 1, (0, 14, 5, 6), segmentation=mask_ops.encode(OBJECT_B)),
        Object(12, 2, 1, (0, 0, 5, 5), segmentation=mask_ops.encode(box(0, 4, 0, 4))),
    ]
    refs = [
        Ref(100 + i, ob.id, ob.image_id, 1, "train", [Sentence.from_text(i, "thing")])
        for i, ob in enumerate(objects)
    ]
    return RESIndex(images, objects, refs, {1: "thing"}, name="hand")


def test_report_on_a_store_by_hand(tmp_path) -> None:
    store = ProposalStore.create(tmp_path / "s", "test", {})
    store.write_shard([(1, Proposals.from_masks(CANDIDATES, np.linspace(1, 0.5, 5)))])
    report = evaluate_quality(
        ProposalStore.open(tmp_path / "s"), hand_index(), "train", progress=False
    )
    # image 2 is not in the store and the store was not made for it (e.g. a labeled image)
    assert report.missing_images == [] and report.not_proposed == [2]
    assert report.candidates_per_image == {1: 5}
    summary = summarise(report)
    assert summary["objects"] == 2 and summary["images"] == 1
    best, cpi = summary["best_iou"], summary["cpi_iou"]
    assert best["mean"] == pytest.approx((0.5 + 30 / 35) / 2)
    assert (best["share_gt_0.5"], best["share_gt_0.75"], best["share_gt_0.9"]) == (0.5, 0.5, 0.0)
    assert cpi["mean"] == pytest.approx((1 + 30 / 35) / 2) and cpi["share_gt_0.9"] == 0.5
    assert summary["candidates_per_image"] == {"mean": 5.0, "median": 5.0, "min": 5, "max": 5}
    assert [o["object_id"] for o in summary["per_object"]] == [10, 11]
    json.dumps(summary)  # JSON-ready
    text = format_summary(summary)
    assert "best IoU (IOM ceiling): mean 0.679" in text and "(0 images without" in text
    assert "left out: 1 images of the split the store was not made for" in text
    plot_quality(summary, str(tmp_path / "q.png"))
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_counts_the_images_the_store_was_made_for(tmp_path) -> None:
    """Images the store was made for but holds no candidates of (given, or unreadable ones in
    failed.json) are "without candidates"; the others of the split are left out apart."""
    store = ProposalStore.create(tmp_path / "s", "test", {})
    store.write_shard([(1, Proposals.from_masks(CANDIDATES, np.linspace(1, 0.5, 5)))])
    opened = ProposalStore.open(tmp_path / "s")
    given = evaluate_quality(
        opened, hand_index(), "train", progress=False, image_ids=[1, 2], counted="both"
    )
    assert given.missing_images == [2] and given.not_proposed == [] and given.counted == "both"
    only = evaluate_quality(opened, hand_index(), "train", progress=False, image_ids=[1])
    assert only.missing_images == [] and only.not_proposed == [2]
    (tmp_path / "s" / "failed.json").write_text(json.dumps({"2": "cannot read 2.png"}))
    failed = evaluate_quality(ProposalStore.open(tmp_path / "s"), hand_index(), "train", progress=False)  # fmt: skip
    assert failed.missing_images == [2] and failed.not_proposed == []
    assert summarise(failed)["images_without_candidates"] == 1
    assert "(1 images without candidates)" in format_summary(summarise(failed))


def test_report_refuses_candidates_of_another_image_size(tmp_path) -> None:
    store = ProposalStore.create(tmp_path / "s", "test", {})
    other = np.zeros((1, 20, 21), np.uint8)
    other[0, :5, :5] = 1
    store.write_shard([(1, Proposals.from_masks(other, np.ones(1)))])
    with pytest.raises(ProposalError, match=r"image 1: .*size 20x21 but the image is 20x20"):
        evaluate_quality(store, hand_index(), "train", progress=False)

"""The readers against real RefCOCO-family files (../shared/realdata; skipped when absent)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from semires.cli import main
from semires.data import coco
from semires.data import masks as mask_ops
from semires.data.refer import read_refer, write_refer
from semires.data.semires_json import read_semires_json, write_semires_json
from semires.data.stats import compute_stats

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def gref_root(realdata: Path) -> Path:
    return realdata / "emma_refcocog_umd_fixture"


@pytest.fixture(scope="module")
def semires_1pct(realdata: Path) -> Path:
    return realdata / "semires_refcoco" / "refcoco_1%_image.json"


def test_refcocog_umd_counts(gref_root: Path) -> None:
    index = read_refer(gref_root, "refcocog", "umd")
    assert (len(index.refs), len(index.images), len(index.objects)) == (15, 15, 108)
    assert sum(1 for _ in index.sentences()) == 28
    assert {s: len(index.refs_in(s)) for s in index.splits()} == {"train": 5, "val": 5, "test": 5}
    assert index.categories == coco.COCO_NAMES  # the real category table matches coco.py
    assert read_refer(gref_root, "refcocog").split_by == "umd"  # the only refs file


def test_refcocog_all_masks_agree_with_annotations(gref_root: Path) -> None:
    index = read_refer(gref_root, "refcocog", "umd")
    edge_errors = []
    for ob in index.objects.values():
        mask = index.mask(ob.id)
        image = index.images[ob.image_id]
        assert mask.shape == (image.height, image.width) and set(np.unique(mask)) <= {0, 1}
        rle = mask_ops.encode(mask)
        x, y, w, h = mask_ops.bbox(rle)
        bx, by, bw, bh = ob.bbox
        edge_errors.append(
            max(abs(x - bx), abs(y - by), abs(x + w - bx - bw), abs(y + h - by - bh))
        )
        assert abs(mask_ops.area(rle) - ob.area) <= 0.02 * ob.area + 5, ob.id
    assert max(edge_errors) <= 3  # polygon rasterisation; one object is off by 2.6 px
    assert float(np.median(edge_errors)) <= 1


def test_refcocog_round_trips(gref_root: Path, tmp_path: Path) -> None:
    index = read_refer(gref_root, "refcocog", "umd")
    write_refer(index, tmp_path, "refcocog", "umd")
    again = read_refer(tmp_path, "refcocog", "umd")
    assert again.images == index.images and again.objects == index.objects
    assert again.refs == index.refs
    ann = write_semires_json(index, tmp_path / "lavt" / "refcocog.json")
    lavt = read_semires_json(ann)
    data = json.loads(ann.read_text())
    assert set(data) == {"train", "val", "test"}  # COCO: the plain LAVT layout
    assert len(data["train"]) == 5 and len(data["val"]) == 10 and len(data["test"]) == 9
    for ref in index.refs.values():
        got = lavt.refs[ref.id]
        assert [s.sent for s in got.sentences] == [s.sent for s in ref.sentences]
        assert got.category_id == ref.category_id
        np.testing.assert_array_equal(lavt.mask(ref.id), index.mask(ref.object_id))


def test_refcoco_refs_on_fixture_images(realdata: Path, gref_root: Path) -> None:
    index = read_refer(gref_root, "refcocog", "umd")
    refs = json.loads((realdata / "refcoco_unc_refs_on_emma_images.json").read_text())
    assert len(refs) == 14
    for ref in refs:
        ob = index.objects[ref["ann_id"]]
        assert (ob.image_id, ob.category_id, list(ob.bbox)) == (
            ref["image_id"],
            ref["category_id"],
            ref["bbox"],
        )


def test_semires_1pct_json(semires_1pct: Path) -> None:
    index = read_semires_json(semires_1pct)  # no masks on disk: not needed to read
    expected = {
        "train": (169, 432, 1222),
        "val": (1500, 3811, 10834),
        "testA": (750, 1975, 5657),
        "testB": (750, 1810, 5095),
    }
    for split, (images, refs, sentences) in expected.items():
        assert len(index.image_ids(split)) == images
        assert len(index.refs_in(split)) == refs
        assert sum(1 for _ in index.sentences(split)) == sentences
    raw = json.loads(semires_1pct.read_text())
    assert {k: len(v) for k, v in raw.items()} == {
        "train": 432, "val": 10834, "testA": 5657, "testB": 5095,
    }  # fmt: skip
    first = raw["train"][0]
    ref = index.refs[first["mask_id"]]
    assert [s.raw for s in ref.sentences] == first["refs"]
    assert ref.category_id == coco.coco_id(first["cat_id"])
    stats = compute_stats(index)
    assert all(s["mask_area_quantiles"] is None for s in stats["splits"].values())


def test_semires_1pct_stats_cli(
    semires_1pct: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "stats.json"
    assert main(["data", "stats", "--format", "semires", "--ann", str(semires_1pct), "--json", str(out)]) == 0  # fmt: skip
    splits = json.loads(out.read_text())["splits"]
    assert {k: (v["images"], v["refs"], v["sentences"]) for k, v in splits.items()} == {
        "train": (169, 432, 1222),
        "val": (1500, 3811, 10834),
        "testA": (750, 1975, 5657),
        "testB": (750, 1810, 5095),
    }
    assert "masks absent; area quantiles skipped" in capsys.readouterr().out


def test_exact_triples(realdata: Path) -> None:
    folder = realdata / "triples_exact"
    index = read_semires_json(
        folder / "refcoco_triples_lavt.json",
        mask_root=folder / "masks",
        image_root=realdata / "coco_train2014",
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(index.refs) == sorted(t["refcoco_unc_ref_id"] for t in manifest)
    assert index.refs[36437].category_id == 88 and index.categories[88] == "teddy bear"
    assert [s.raw for s in index.refs[18836].sentences] == [
        "thumps up at the stop sign", "guy on right", "cool guy with sunglasses",
    ]  # fmt: skip
    for t in manifest:
        ref = index.refs[t["refcoco_unc_ref_id"]]
        mask = index.mask(ref.object_id)
        assert mask.shape == (t["height"], t["width"]) == index.load_image(ref.image_id).shape[:2]
        assert int(mask.sum()) == t["mask_area"]
        ys, xs = np.nonzero(mask)
        bx, by, bw, bh = index.objects[ref.object_id].bbox
        # pixel extents of the mask vs the pixels the json box touches: within 1 px
        assert abs(xs.min() - math.floor(bx)) <= 1 and abs(xs.max() - (math.ceil(bx + bw) - 1)) <= 1
        assert abs(ys.min() - math.floor(by)) <= 1 and abs(ys.max() - (math.ceil(by + bh) - 1)) <= 1

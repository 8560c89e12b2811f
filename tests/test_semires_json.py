"""The LAVT/SemiRES json: read, write, conversions to and from the refer layout, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from semires.data import coco
from semires.data.index import Image, RESIndex
from semires.data.refer import read_refer, write_refer
from semires.data.semires_json import mask_available, read_semires_json, write_semires_json
from semires.errors import DataError
from test_refer import make_index

BOX = [1.0, 2.0, 3.0, 4.0]


def entry(mask_id: int, iid: int, *sentences: str, cat_id: int = 0) -> dict:
    return {"iid": iid, "bbox": BOX, "cat_id": cat_id, "refs": list(sentences), "mask_id": mask_id}


def hand_json(tmp_path: Path) -> Path:
    """Two train objects (grouped) and one val object over two one-sentence entries."""
    data = {
        "train": [entry(7, 100, "man left", "guy", cat_id=0), entry(8, 101, "bear", cat_id=77)],
        "val": [entry(9, 100, "white cup", cat_id=41), entry(9, 100, "cup", cat_id=41)],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    masks = tmp_path / "masks"
    masks.mkdir()
    for mask_id, (h, w) in {7: (6, 8), 8: (5, 5), 9: (6, 8)}.items():
        m = np.zeros((h, w), np.uint8)
        m[1:3, 2 : 2 + mask_id % 4 + 1] = 1
        np.save(masks / f"{mask_id}.npy", m)
    return path


def test_read_groups_entries_by_mask_id(tmp_path: Path) -> None:
    index = read_semires_json(hand_json(tmp_path))
    assert sorted(index.refs) == [7, 8, 9] and sorted(index.objects) == [7, 8, 9]
    assert [r.split for r in index.refs.values()] == ["train", "train", "val"]
    val = index.refs[9]
    assert [(s.id, s.raw, s.tokens) for s in val.sentences] == [
        (3, "white cup", ("white", "cup")),
        (4, "cup", ("cup",)),
    ]  # sentence ids number the file's sentences in order
    assert [s.id for s in index.refs[7].sentences] == [0, 1]
    assert index.refs[8].category_id == 88 and index.refs[9].category_id == 47  # COCO ids
    assert index.categories == coco.COCO_NAMES
    assert index.images[100].file_name == "COCO_train2014_000000000100.jpg"
    assert index.objects[9].bbox == tuple(BOX)
    assert index.mask(9).sum() == 4 and index.mask(9).shape == (6, 8)
    assert index.image_size(101) == (5, 5)  # from the mask when the json has no sizes
    assert len(list(index.sentences("val"))) == 2


def test_masks_are_read_lazily(tmp_path: Path) -> None:
    path = hand_json(tmp_path)
    for f in (tmp_path / "masks").iterdir():
        f.unlink()
    index = read_semires_json(path)  # no mask is needed to read the json
    assert not mask_available(index, 7)
    with pytest.raises(DataError, match=r"mask file not found: .*masks/7.npy"):
        index.mask(7)
    other = read_semires_json(path, mask_root=tmp_path / "elsewhere", image_root="/imgs")
    assert other.objects[7].mask_file == tmp_path / "elsewhere" / "7.npy"
    assert other.image_path(100) == Path("/imgs/COCO_train2014_000000000100.jpg")


def test_write_layout_coco_categories(tmp_path: Path) -> None:
    index = make_index()  # COCO categories: person (1) and teddy bear (88)
    out = write_semires_json(index, tmp_path / "out" / "refs.json")
    data = json.loads(out.read_text())
    assert set(data) == {"train", "val", "testA", "images"}  # non-COCO file names: "images" kept
    assert "categories" not in data
    train = {e["mask_id"]: e for e in data["train"]}
    assert train[103] == {
        "iid": 3,
        "bbox": [4.0, 4.0, 8.0, 8.0],
        "cat_id": 77,
        "refs": ["red star", "the star"],
        "mask_id": 103,
        "sent_ids": [1003, 1004],
    }
    assert train[100]["cat_id"] == 0 and train[100]["refs"] == ["the man on the left"]
    assert data["val"] == [
        {
            "iid": 1,
            "bbox": [20.0, 5.0, 5.0, 10.0],
            "cat_id": 77,
            "refs": ["bear , right"],
            "mask_id": 101,
            "sent_ids": [1001],
        }
    ]
    assert data["images"][0] == {"id": 1, "file_name": "img_1.jpg", "height": 20, "width": 30}
    masks = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    assert masks == ["100.npy", "101.npy", "102.npy", "103.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "masks" / "102.npy"), index.mask(12))


def test_val_entries_one_per_sentence(tmp_path: Path) -> None:
    index = make_index()
    out = write_semires_json(index, tmp_path / "a.json", splits=["train"], masks=False)
    assert set(json.loads(out.read_text())) == {"train", "images"}
    index.refs[103].split = "val"
    out = write_semires_json(index, tmp_path / "b.json", splits=["val"], masks=False)
    val = json.loads(out.read_text())["val"]
    assert [(e["mask_id"], e["refs"], e["sent_ids"]) for e in val] == [
        (101, ["bear , right"], [1001]),
        (103, ["red star"], [1003]),
        (103, ["the star"], [1004]),
    ]
    assert not (tmp_path / "masks").exists()


def test_refer_to_semires_to_refer_keeps_refs_sentences_masks(tmp_path: Path) -> None:
    index = make_index()
    back = read_semires_json(write_semires_json(index, tmp_path / "s" / "refs.json"))
    write_refer(back, tmp_path / "r", "toy", "unc")
    again = read_refer(tmp_path / "r", "toy", "unc")
    for result in (back, again):
        assert sorted(result.refs) == sorted(index.refs)
        for ref in index.refs.values():
            got = result.refs[ref.id]
            assert (got.split, got.image_id, got.category_id) == (
                ref.split,
                ref.image_id,
                ref.category_id,
            )
            assert [(s.id, s.tokens, s.sent) for s in got.sentences] == [
                (s.id, s.tokens, s.sent) for s in ref.sentences
            ]
            assert result.objects[got.object_id].bbox == index.objects[ref.object_id].bbox
            np.testing.assert_array_equal(result.mask(got.object_id), index.mask(ref.object_id))
        assert result.images[1].file_name == "img_1.jpg" and result.image_size(1) == (20, 30)
    assert index.categories.items() <= again.categories.items()  # the COCO table: all 80


def test_masks_are_synced_once_before_the_json(tmp_path: Path, monkeypatch) -> None:
    """One fsync per mask file made conversion at RefCOCO's size superlinear (docs/scale.md):
    the masks are written without one, then synced once, before the json that names them."""
    import os

    events: list[str] = []
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync"))
    monkeypatch.setattr(os, "sync", lambda: events.append("sync"))
    index = make_index()
    out = write_semires_json(index, tmp_path / "s" / "refs.json")
    n_masks = len(list((tmp_path / "s" / "masks").glob("*.npy")))
    assert n_masks == len(index.refs) > 1
    assert events == ["sync", "fsync"]  # all masks, then the json (fsynced, renamed last)
    back = read_semires_json(out)
    for ref in index.refs.values():
        np.testing.assert_array_equal(back.mask(ref.id), index.mask(ref.object_id))


def test_semires_to_refer_to_semires_keeps_the_json(tmp_path: Path) -> None:
    first = read_semires_json(hand_json(tmp_path))
    write_refer(first, tmp_path / "r", "refcoco", "unc")
    via = read_refer(tmp_path / "r", "refcoco")
    assert via.images[100].height == 6 and via.images[100].width == 8  # sizes from the masks
    out = write_semires_json(via, tmp_path / "again" / "ann.json")
    data = json.loads(out.read_text())
    assert set(data) == {"train", "val"}  # COCO names and categories: the plain LAVT layout
    for e in data["train"] + data["val"]:
        del e["sent_ids"]
    assert data == json.loads((tmp_path / "ann.json").read_text())
    for mask_id in (7, 8, 9):
        np.testing.assert_array_equal(
            np.load(tmp_path / "again" / "masks" / f"{mask_id}.npy"),
            np.load(tmp_path / "masks" / f"{mask_id}.npy"),
        )


def test_non_coco_categories_round_trip(tmp_path: Path) -> None:
    index = make_index({5: "star", 9: "ring"})
    out = write_semires_json(index, tmp_path / "synth.json")
    data = json.loads(out.read_text())
    assert data["categories"] == [{"id": 5, "name": "star"}, {"id": 9, "name": "ring"}]
    assert {e["mask_id"]: e["cat_id"] for e in data["train"]} == {100: 0, 103: 1}
    back = read_semires_json(out)
    assert back.categories == {5: "star", 9: "ring"}
    assert back.refs[103].category_id == 9 and back.images[3].file_name == "img_3.png"


def test_coco_file_names_write_no_images_key(tmp_path: Path) -> None:
    index = make_index()
    index.images = {i: Image(i, f"COCO_train2014_{i:012d}.jpg", im.height, im.width) for i, im in index.images.items()}  # fmt: skip
    data = json.loads(write_semires_json(index, tmp_path / "a.json", masks=False).read_text())
    assert "images" not in data


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([entry(1, 1, "a")], "expected a dict of split name -> list of entries, got list"),
        ({"val": {"mask_id": 1}}, r"split 'val': expected a list, got dict"),
        ({"val": [{"iid": 1, "bbox": BOX, "cat_id": 0, "refs": ["a"]}]}, r"val\[0\]: missing key 'mask_id'"),
        ({"val": [{**entry(1, 1, "a"), "bbox": [1, 2]}]}, r"val\[0\] \(mask_id 1\): 'bbox' should be"),
        ({"val": [{**entry(1, 1, "a"), "iid": "1"}]}, "'iid' should be int, got str"),
        ({"val": [entry(1, 1)]}, "'refs' should be a non-empty list"),
        ({"val": [entry(1, 1, "a", cat_id=80)]}, "cat_id 80 out of range; expected 0..79"),
        ({"train": [entry(1, 1, "a")], "val": [entry(1, 1, "b")]}, "mask_id 1 is in both 'train' and 'val'"),
        ({"val": [entry(1, 1, "a"), entry(1, 2, "b")]}, "entries of mask_id 1 disagree"),
        ({"val": [{**entry(1, 1, "a"), "sent_ids": [1, 2]}]}, "'sent_ids' should be a list of ints"),
        ({"categories": {"a": 1}, "val": []}, "'categories' should be list"),
    ],
    ids=["list", "split-dict", "no-mask-id", "bbox", "iid-type", "no-refs", "cat", "two-splits", "disagree", "sent-ids", "cats"],
)  # fmt: skip
def test_bad_json(tmp_path: Path, data, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=expected) as err:
        read_semires_json(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_or_not_json(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="semires json not found"):
        read_semires_json(tmp_path / "nope.json")
    (tmp_path / "t.json").write_text("{'train': }")
    with pytest.raises(DataError, match="is not valid json"):
        read_semires_json(tmp_path / "t.json")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "cannot read mask file"),
        (np.zeros((0, 4), np.uint8), "expected a non-empty 2-D mask"),
        (np.array([[0, 2], [1, 0]], np.uint8), r"expected binary values \(0/1 or 0/255\), found \[0, 1, 2\]"),
    ],
    ids=["empty-file", "empty-array", "non-binary"],
)  # fmt: skip
def test_bad_mask_files(tmp_path: Path, content, expected: str) -> None:
    path = hand_json(tmp_path)
    mask = tmp_path / "masks" / "8.npy"
    if isinstance(content, bytes):
        mask.write_bytes(content)
    else:
        np.save(mask, content)
    index = read_semires_json(path)
    with pytest.raises(DataError, match=expected) as err:
        index.mask(8)
    assert str(mask) in str(err.value)


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    index = read_semires_json(hand_json(tmp_path))
    (tmp_path / "masks" / "9.npy").unlink()
    with pytest.raises(DataError, match=r"mask file not found: .*9.npy"):
        write_semires_json(index, tmp_path / "out" / "ann.json")
    assert not (tmp_path / "out").exists()


def test_unnamed_non_coco_category_is_refused(tmp_path: Path) -> None:
    index: RESIndex = make_index({5: "star", 9: "ring"})
    index.objects[10].category_id = 6
    with pytest.raises(DataError, match=r"category ids \[6\] have no name"):
        write_semires_json(index, tmp_path / "a.json", masks=False)

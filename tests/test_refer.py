"""The refer API layout: read, write, round trips and bad input."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from semires.data import masks as mask_ops
from semires.data.index import Image, Object, Ref, RESIndex, Sentence
from semires.data.refer import load_refs_pickle, read_refer, refs_file, write_refer
from semires.errors import DataError

CROWD_COUNTS = [20, 30, 50]  # 10x10, column-major: columns 2..4 are set


def small_mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def make_index(categories: dict[int, str] | None = None) -> RESIndex:
    """Four objects on three images: a polygon, a compressed RLE, a crowd RLE, attributes."""
    cats = categories or {1: "person", 88: "teddy bear"}
    c1, c2 = sorted(cats)[:2]
    images = [
        Image(1, "img_1.jpg", 20, 30),
        Image(2, "img_2.jpg", 10, 10),
        Image(3, "img_3.png", 16, 16),
    ]
    objects = [
        Object(10, 1, c1, (2.0, 3.0, 10.0, 6.0), [[2, 3, 12, 3, 12, 9, 2, 9]], area=60.0),
        Object(11, 1, c2, (20.0, 5.0, 5.0, 10.0), mask_ops.encode(small_mask(20, 30, 5, 15, 20, 25))),
        Object(12, 2, c1, (2.0, 0.0, 3.0, 10.0), {"size": [10, 10], "counts": CROWD_COUNTS}, iscrowd=1),
        Object(
            13, 3, c2, (4.0, 4.0, 8.0, 8.0),
            mask_ops.encode(small_mask(16, 16, 4, 12, 4, 12)),
            area=64.0, attributes={"shape": "star", "colour": "red", "parts": ["body", "handle"]},
        ),
    ]  # fmt: skip
    refs = [
        Ref(100, 10, 1, c1, "train", [Sentence.from_text(1000, "The man on the left.")]),
        Ref(101, 11, 1, c2, "val", [Sentence(1001, "Bear, right", ("bear", ",", "right"))]),
        Ref(102, 12, 2, c1, "testA", [Sentence.from_text(1002, "crowd")]),
        Ref(
            103, 13, 3, c2, "train",
            [Sentence.from_text(1003, "red star"), Sentence.from_text(1004, "the star")],
        ),
    ]  # fmt: skip
    return RESIndex(images, objects, refs, cats, name="toy", split_by="mine")


def assert_same_index(a: RESIndex, b: RESIndex) -> None:
    assert a.images == b.images
    assert a.objects == b.objects
    assert a.refs == b.refs
    assert a.categories == b.categories


@pytest.fixture()
def toy(tmp_path: Path) -> Path:
    write_refer(make_index(), tmp_path, "toy", "mine")
    return tmp_path


def test_round_trip_is_identical(tmp_path: Path) -> None:
    index = make_index()
    index.objects[11].area, index.objects[12].area = 50.0, 30.0  # else filled in from the mask
    folder = write_refer(index, tmp_path, "toy", "mine")
    assert folder == tmp_path / "toy"
    assert sorted(p.name for p in folder.iterdir()) == ["instances.json", "refs(mine).p"]
    back = read_refer(tmp_path, "toy", "mine")
    assert_same_index(index, back)
    assert back.name == "toy" and back.split_by == "mine"
    again = tmp_path / "again"
    write_refer(back, again, "toy", "mine")
    assert_same_index(index, read_refer(again, "toy", "mine"))
    for ob in index.objects:
        np.testing.assert_array_equal(back.mask(ob), index.mask(ob))


def test_written_files_use_the_refer_api_keys(toy: Path) -> None:
    refs = load_refs_pickle(toy / "toy" / "refs(mine).p")
    assert [r["ref_id"] for r in refs] == [100, 101, 102, 103]
    r = refs[1]
    assert set(r) == {
        "ref_id", "ann_id", "image_id", "split", "category_id", "sent_ids", "sentences", "file_name",
    }  # fmt: skip
    assert r["file_name"] == "img_1_11.jpg" and r["sent_ids"] == [1001]
    assert r["sentences"] == [
        {
            "raw": "Bear, right",
            "sent": "bear , right",
            "tokens": ["bear", ",", "right"],
            "sent_id": 1001,
        }
    ]
    inst = json.loads((toy / "toy" / "instances.json").read_text())
    anns = {a["id"]: a for a in inst["annotations"]}
    assert anns[10]["segmentation"] == [[2, 3, 12, 3, 12, 9, 2, 9]]
    assert isinstance(anns[11]["segmentation"]["counts"], str)
    assert anns[12]["segmentation"]["counts"] == CROWD_COUNTS and anns[12]["iscrowd"] == 1
    assert anns[13]["attributes"]["shape"] == "star" and "attributes" not in anns[10]
    # the index had no area for 11 and 12: it is computed from the mask
    assert anns[11]["area"] == 50.0 and anns[12]["area"] == 30.0
    assert inst["images"][0] == {"id": 1, "file_name": "img_1.jpg", "height": 20, "width": 30}
    assert inst["categories"] == [{"id": 1, "name": "person"}, {"id": 88, "name": "teddy bear"}]


def test_masks_of_every_segmentation_kind(toy: Path) -> None:
    index = read_refer(toy, "toy")
    crowd = index.mask(12)
    assert crowd.shape == (10, 10) and crowd.sum() == 30
    assert crowd[:, 2:5].all() and crowd[:, :2].sum() == 0 and crowd[:, 5:].sum() == 0
    x, y, w, h = mask_ops.bbox(index.rle(10))  # polygon: extent within a pixel of the polygon
    assert abs(x - 2) <= 1 and abs(y - 3) <= 1 and abs(w - 10) <= 1 and abs(h - 6) <= 1
    np.testing.assert_array_equal(index.mask(11), small_mask(20, 30, 5, 15, 20, 25))
    assert index.mask(10).shape == (20, 30)  # the image size comes from instances.json


def test_sentences_tokens_attributes_and_image_root(toy: Path) -> None:
    index = read_refer(toy, "toy")  # the only refs file is picked
    assert index.split_by == "mine"
    assert index.refs[100].sentences[0].tokens == ("the", "man", "on", "the", "left")
    assert index.refs[101].sentences[0].tokens == ("bear", ",", "right")  # the file's tokens
    assert index.objects[13].attributes["parts"] == ["body", "handle"]
    assert index.image_root == toy / "images" / "mscoco" / "images" / "train2014"
    (toy / "images" / "toy").mkdir(parents=True)
    assert read_refer(toy, "toy").image_root == toy / "images" / "toy"
    assert read_refer(toy, "toy", image_root="/x").image_path(1) == Path("/x/img_1.jpg")


def test_tokens_default_to_tokenized_raw(tmp_path: Path) -> None:
    write_refer(make_index(), tmp_path, "toy", "mine")
    path = tmp_path / "toy" / "refs(mine).p"
    refs = load_refs_pickle(path)
    del refs[0]["sentences"][0]["tokens"]
    path.write_bytes(pickle.dumps(refs, protocol=2))
    assert read_refer(tmp_path, "toy").refs[100].sentences[0].tokens == (
        "the", "man", "on", "the", "left",
    )  # fmt: skip


# ---------------------------------------------------------------------- bad input
class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (lambda good: pickle.dumps([_Evil()]), "refused to load"),
        (lambda good: good[: len(good) // 2], "not a readable pickle"),
        (lambda good: b"ref_id,ann_id\n1,2\n", "not a readable pickle"),
        (lambda good: b"", "not a readable pickle"),
        (lambda good: pickle.dumps({"refs": []}), "expected a list of ref dicts"),
        (lambda good: pickle.dumps([{"ref_id": 1}]), "missing key"),
        (lambda good: pickle.dumps([{"ref_id": "a"}]), "'ref_id' should be int"),
    ],
    ids=["malicious", "truncated", "csv", "empty", "dict", "missing-key", "wrong-type"],
)
def test_bad_refs_pickle(
    toy: Path, monkeypatch: pytest.MonkeyPatch, content, expected: str
) -> None:
    monkeypatch.chdir(toy)
    path = toy / "toy" / "refs(mine).p"
    path.write_bytes(content(path.read_bytes()))
    with pytest.raises(DataError, match=expected) as err:
        read_refer(toy, "toy", "mine")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not (toy / "pwned").exists()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["images"], "expected a COCO json object"),
        (lambda d: {k: v for k, v in d.items() if k != "annotations"}, "missing key 'annotations'"),
        (lambda d: {**d, "images": {"1": 2}}, "'images' should be list"),
        (lambda d: {**d, "annotations": [{**d["annotations"][0], "bbox": [1, 2]}]}, r"annotations\[0\] \(id 10\): 'bbox'"),
        (lambda d: {**d, "annotations": [{**d["annotations"][1], "segmentation": {"size": [2, 2]}}]}, "needs 'counts' and 'size'"),
        (lambda d: {**d, "images": d["images"][1:]}, "points to missing image 1"),
        (lambda d: {**d, "annotations": d["annotations"][1:]}, r"ref 100 points to missing object \(ann_id\) 10"),
        (lambda d: {**d, "images": d["images"] + d["images"][:1]}, "duplicate image id 1"),
    ],
    ids=["list", "no-annotations", "images-dict", "bad-bbox", "bad-rle", "no-image", "no-object", "dup"],
)  # fmt: skip
def test_bad_instances(toy: Path, edit, expected: str) -> None:
    path = toy / "toy" / "instances.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(DataError, match=expected) as err:
        read_refer(toy, "toy", "mine")
    assert str(toy / "toy") in str(err.value)


def test_instances_not_json(toy: Path) -> None:
    (toy / "toy" / "instances.json").write_text('{"images": [')
    with pytest.raises(DataError, match=r"instances file .*instances.json is not valid json"):
        read_refer(toy, "toy", "mine")


def test_ref_on_another_image_than_its_object(toy: Path) -> None:
    path = toy / "toy" / "refs(mine).p"
    refs = load_refs_pickle(path)
    refs[0]["image_id"] = 2
    path.write_bytes(pickle.dumps(refs))
    with pytest.raises(DataError, match="ref 100 says image 2 but its object 10 is on image 1"):
        read_refer(toy, "toy")


def test_missing_paths(toy: Path) -> None:
    with pytest.raises(DataError, match="refer data root not found"):
        read_refer(toy / "nope", "toy")
    with pytest.raises(DataError, match="dataset folder 'refcoco' not found"):
        read_refer(toy, "refcoco")
    with pytest.raises(
        DataError, match=r"refs file not found: .*refs\(unc\).p \(found: refs\(mine\).p\)"
    ):
        read_refer(toy, "toy", "unc")
    (toy / "toy" / "instances.json").unlink()
    with pytest.raises(DataError, match="instances file not found"):
        read_refer(toy, "toy", "mine")


def test_split_by_must_be_given_when_ambiguous(toy: Path) -> None:
    (toy / "toy" / "refs(other).p").write_bytes(b"")
    with pytest.raises(DataError, match=r"pass --split-by .*refs\(mine\).p, refs\(other\).p"):
        refs_file(toy, "toy", None)
    (toy / "empty").mkdir()
    with pytest.raises(DataError, match="found: none"):
        refs_file(toy, "empty", None)


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    index = make_index()
    index.refs[100].object_id = 999  # inconsistent: validate() refuses before writing
    with pytest.raises(DataError, match="missing object"):
        write_refer(index, tmp_path, "toy", "mine")
    assert not (tmp_path / "toy").exists() or not any((tmp_path / "toy").iterdir())

"""Labeled / unlabeled splits by image: ratios, determinism, supersets, files, validation."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from semires.data.index import Image, Object, Ref, RESIndex, Sentence
from semires.data.splits import (
    labeled_index,
    make_split,
    parse_ratio,
    read_split,
    write_split,
)
from semires.errors import DataError

N_TRAIN = 200


def grid_index() -> RESIndex:
    """200 train images with 1-3 refs each (ref k has k % 3 + 1 sentences), 10 val images."""
    images, objects, refs = [], [], []
    for i in range(1, N_TRAIN + 11):
        images.append(Image(i, f"{i}.jpg", 8, 8))
        for j in range(i % 3 + 1):
            oid = i * 10 + j
            objects.append(Object(oid, i, 1, (0.0, 0.0, 1.0, 1.0)))
            sents = [Sentence.from_text(oid * 10 + s, f"thing {s}") for s in range(oid % 3 + 1)]
            refs.append(Ref(oid, oid, i, 1, "train" if i <= N_TRAIN else "val", sents))
    return RESIndex(images, objects, refs, {1: "thing"}, name="grid", source="grid")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1%", Fraction(1, 100)),
        ("0.5%", Fraction(1, 200)),
        (" 10 % ", Fraction(1, 10)),
        ("0.01", Fraction(1, 100)),
        ("1", Fraction(1)),
        ("100%", Fraction(1)),
        (0.25, Fraction(1, 4)),
        ("29%", Fraction(29, 100)),
    ],
)
def test_parse_ratio(value, expected: Fraction) -> None:
    assert parse_ratio(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, r"labeled ratio 0 is outside \(0, 100%\]"),
        ("0%", "is outside"),
        ("150%", r"labeled ratio '150%' is outside \(0, 100%\]"),
        (-1, "labeled ratio -1 is outside"),
        ("2", "a bare number is a fraction and must be <= 1; write '2%'"),
        ("abc", "labeled ratio 'abc' is not a number"),
        ("nan", "is not a number"),
        ("", "is not a number"),
    ],
)
def test_bad_ratio(value, expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        parse_ratio(value)


def test_draw_by_image_counts_and_no_overlap() -> None:
    index = grid_index()
    split = make_split(index, "10%", seed=0)
    assert len(split.labeled_images) == 20 and len(split.unlabeled_images) == 180
    assert set(split.labeled_images).isdisjoint(split.unlabeled_images)
    assert set(split.labeled_images) | set(split.unlabeled_images) == set(range(1, N_TRAIN + 1))
    assert list(split.labeled_images) == sorted(split.labeled_images)
    labeled = split.labeled_refs(index)
    assert {r.image_id for r in labeled} == set(split.labeled_images)  # every ref of a drawn image
    assert len(labeled) + len(split.unlabeled_refs(index)) == len(index.refs_in("train"))
    assert split.counts["labeled"] == {
        "images": 20,
        "refs": len(labeled),
        "sentences": sum(len(r.sentences) for r in labeled),
    }
    assert split.counts["unlabeled"]["images"] == 180


def test_size_rule() -> None:
    index = grid_index()
    assert len(make_split(index, "0.1%").labeled_images) == 1  # max(1, floor(0.2))
    assert len(make_split(index, "29%").labeled_images) == 58  # exact: not floor(57.99...)
    assert len(make_split(index, "1").labeled_images) == N_TRAIN
    assert make_split(index, "1").unlabeled_images == ()


def test_deterministic_and_superset() -> None:
    index = grid_index()
    assert make_split(index, "5%", seed=3) == make_split(index, "5%", seed=3)
    assert make_split(index, "5%", seed=3) != make_split(index, "5%", seed=4)
    previous: set[int] = set()
    for ratio in ("0.5%", "1%", "5%", "10%", "50%", "100%"):
        current = set(make_split(index, ratio, seed=7).labeled_images)
        assert previous <= current
        previous = current


def test_bad_seed_and_split() -> None:
    with pytest.raises(DataError, match="seed -1 is negative"):
        make_split(grid_index(), "1%", seed=-1)
    with pytest.raises(DataError, match="split 'testA' not found in grid"):
        make_split(grid_index(), "1%", split="testA")


def test_write_and_read(tmp_path: Path) -> None:
    index = grid_index()
    split = make_split(index, "1%", seed=0)
    write_split(split, tmp_path / "s")
    lines = (tmp_path / "s" / "labeled.txt").read_text().splitlines()
    assert lines[0].startswith("# labeled image ids of grid (train): labeled ratio 1%, seed 0")
    assert [int(x) for x in lines[1:]] == list(split.labeled_images)
    meta = json.loads((tmp_path / "s" / "split.json").read_text())
    assert meta == {
        "dataset": "grid",
        "split": "train",
        "ratio": 0.01,
        "seed": 0,
        "labeled": split.counts["labeled"],
        "unlabeled": split.counts["unlabeled"],
    }
    assert read_split(tmp_path / "s") == split
    assert read_split(tmp_path / "s", index) == split


def test_read_hand_written_lists(tmp_path: Path) -> None:
    (tmp_path / "labeled.txt").write_text("# mine\n3\n\n1\n")
    (tmp_path / "unlabeled.txt").write_text("2\n4\n")
    split = read_split(tmp_path, grid_index())
    assert split.labeled_images == (1, 3) and split.unlabeled_images == (2, 4)
    assert split.ratio == 0.5 and split.seed is None
    assert split.counts["labeled"]["images"] == 2


@pytest.mark.parametrize(
    ("labeled", "unlabeled", "expected"),
    [
        ("1\n2\n5\n", "5\n6\n2\n", r"image ids both labeled and unlabeled: \[2, 5\]"),
        ("1\n999\n", "2\n", r"image ids not in split 'train' of grid: \[999\]"),
        ("1\n201\n", "2\n", r"not in split 'train' .*\[201\]"),  # a val image
        ("1\nx\n", "2\n", r"labeled.txt:2: expected an image id, got 'x'"),
        ("1\n1\n", "2\n", "labeled.txt:2: image id 1 listed twice"),
        ("# none\n", "2\n", "labeled.txt: lists no image ids"),
    ],
)
def test_bad_split_folder(tmp_path: Path, labeled: str, unlabeled: str, expected: str) -> None:
    (tmp_path / "labeled.txt").write_text(labeled)
    (tmp_path / "unlabeled.txt").write_text(unlabeled)
    with pytest.raises(DataError, match=expected) as err:
        read_split(tmp_path, grid_index())
    assert str(tmp_path) in str(err.value)


def test_missing_split_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split folder not found"):
        read_split(tmp_path / "nope")
    (tmp_path / "labeled.txt").write_text("1\n")
    with pytest.raises(DataError, match=r"split id list not found: .*unlabeled.txt"):
        read_split(tmp_path)


def test_labeled_index_keeps_eval_splits() -> None:
    index = grid_index()
    split = make_split(index, "5%", seed=1)
    sub = labeled_index(split, index)
    assert sub.image_ids("train") == list(split.labeled_images)
    assert [r.id for r in sub.refs_in("val")] == [r.id for r in index.refs_in("val")]

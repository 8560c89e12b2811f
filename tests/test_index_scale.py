"""Reading and querying a dataset at RefCOCO's scale without superlinear costs.

- ``load_index`` pauses the cyclic garbage collector while a reader builds the index (with it
  on, reading the refer layout took 8.8x the time for 4x the images; bench/bench_scale.py);
- ``RESIndex.image_size`` on an index without image sizes (the SemiRES json has none) takes the
  size from a mask of the image, found without scanning every object of the dataset per image
  (that scan made the sizes of all images quadratic: 6 s at 16,000 images).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from semires.data import DataSpec, load_index
from semires.data import masks as mask_ops
from semires.data.index import Image, Object, Ref, RESIndex, Sentence


class CountingDict(dict):
    """A dict that counts how often its values are iterated."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.scans = 0

    def values(self):  # type: ignore[override]
        self.scans += 1
        return super().values()


def rle(h: int, w: int) -> dict:
    return mask_ops.encode(np.ones((h, w), np.uint8))


def sizeless_index(n: int) -> RESIndex:
    """``n`` images without sizes; image i has a maskless object, then two masks of (i+1)x3."""
    images = [Image(i, f"{i}.jpg") for i in range(n)]
    objects = []
    for i in range(n):
        objects.append(Object(3 * i, i, 1, None))  # no mask (unlabeled)
        objects += [Object(3 * i + k, i, 1, None, segmentation=rle(i + 1, 3)) for k in (1, 2)]
    refs = [Ref(i, 3 * i + 1, i, 1, "train", [Sentence.from_text(i, "a thing")]) for i in range(n)]
    return RESIndex(images, objects, refs)


def test_image_sizes_come_from_the_first_mask_of_each_image() -> None:
    index = sizeless_index(5)
    assert [index.image_size(i) for i in range(5)] == [(i + 1, 3) for i in range(5)]


def test_the_objects_are_scanned_once_for_all_images() -> None:
    index = sizeless_index(50)
    index.objects = CountingDict(index.objects)
    sizes = [index.image_size(i) for i in range(50)]
    assert sizes == [(i + 1, 3) for i in range(50)]
    assert index.objects.scans <= 1  # the old code scanned all objects once per image (50)


def test_replaced_objects_give_their_own_sizes() -> None:
    images = [Image(0, "0.jpg"), Image(1, "1.jpg")]
    objects = [Object(0, 0, 1, None, segmentation=rle(2, 3)), Object(1, 1, 1, None)]
    refs = [Ref(0, 0, 0, 1, "train", [Sentence.from_text(0, "a thing")])]
    index = RESIndex(images, objects, refs)
    assert index.image_size(0) == (2, 3)
    other = index.replace_objects([Object(1, 1, 1, None, segmentation=rle(5, 3))])
    assert other.image_size(1) == (5, 3)
    assert other.with_image_root("/x").image_size(1) == (5, 3)


# ---------------------------------------------------------------------- the garbage collector
@pytest.fixture
def reader_sees(monkeypatch):
    """Replace the refer reader by one that records whether the collector is on (or raises)."""
    import semires.data.refer as refer
    from semires.errors import DataError

    seen: list[bool] = []

    def fake_read_refer(root, dataset, split_by, image_root=None):
        seen.append(gc.isenabled())
        if root == "bad":
            raise DataError("bad data")
        return sizeless_index(1)

    monkeypatch.setattr(refer, "read_refer", fake_read_refer)
    return seen


def test_load_index_reads_with_the_collector_paused(reader_sees) -> None:
    assert gc.isenabled()
    index = load_index(DataSpec(format="refer", root="r", dataset="d"))
    assert len(index.images) == 1
    assert reader_sees == [False]  # the old code read with the collector on
    assert gc.isenabled()


def test_the_collector_is_restored_after_an_error_and_left_off_if_it_was(reader_sees) -> None:
    from semires.errors import DataError

    with pytest.raises(DataError, match="bad data"):
        load_index(DataSpec(format="refer", root="bad", dataset="d"))
    assert gc.isenabled()
    gc.disable()
    try:
        load_index(DataSpec(format="refer", root="r", dataset="d"))
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert reader_sees == [False, False]

"""Data: dataset formats, the synthetic benchmark, labeled/unlabeled splits, statistics.

``load_index(spec)`` is the one entry point that turns a :class:`DataSpec` (what a config file's
``data:`` section or the CLI's data options describe) into a :class:`~semires.data.index.RESIndex`.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from semires.data.index import Image, Object, Ref, RESIndex, Sentence, tokenize

Format = Literal["refer", "semires", "jsonl"]


@dataclass
class DataSpec:
    """Where a dataset lives on disk.

    - ``format="refer"``: ``root/dataset/refs(split_by).p`` + ``root/dataset/instances.json``;
      images under ``image_root`` (default: ``root/images/<dataset>`` if it exists, else
      ``root/images/mscoco/images/train2014``).
    - ``format="semires"``: the LAVT/SemiRES json ``ann`` with masks in ``mask_root``
      (default: ``<folder of ann>/masks``) and images under ``image_root``.
    - ``format="jsonl"``: the JSON Lines file ``ann`` (one referred object per line); image and
      mask paths relative to its folder, or to ``image_root`` / ``mask_root``.
    """

    format: Format = "refer"
    root: str | None = None
    dataset: str | None = None
    split_by: str | None = None
    ann: str | None = None
    image_root: str | None = None
    mask_root: str | None = None

    def describe(self) -> str:
        if self.format in ("semires", "jsonl"):
            return f"{self.format} {self.ann}"
        return f"refer {self.root}/{self.dataset} ({self.split_by})"


def load_index(spec: DataSpec) -> RESIndex:
    """Read the dataset described by ``spec`` (refer layout, LAVT/SemiRES json or JSON Lines).

    The cyclic garbage collector is paused meanwhile: a reader builds hundreds of thousands of
    acyclic objects (json dicts, annotations, sentences), and the collector's repeated full
    passes over them made reading superlinear in the dataset's size (the refer layout of the
    synthetic refcoco preset at 1/16 and 1/4 of RefCOCO: 4x the images took 8.8x the time with
    the collector on, 4.7x with it paused; bench/bench_scale.py).
    """
    with _gc_paused():
        return _read_index(spec)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off inside, as it was before afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read_index(spec: DataSpec) -> RESIndex:
    from semires.errors import DataError

    if spec.format == "refer":
        from semires.data.refer import read_refer

        if not spec.root or not spec.dataset:
            raise DataError("the refer format needs --root and --dataset")
        return read_refer(spec.root, spec.dataset, spec.split_by, image_root=spec.image_root)
    if spec.format == "semires":
        from semires.data.semires_json import read_semires_json

        if not spec.ann:
            raise DataError("the semires format needs --ann FILE.json")
        if spec.ann.endswith(".jsonl"):
            raise DataError(f"{spec.ann} is JSON Lines: read it with --format jsonl")
        return read_semires_json(spec.ann, mask_root=spec.mask_root, image_root=spec.image_root)
    if spec.format == "jsonl":
        from semires.data.jsonl import read_jsonl

        if not spec.ann:
            raise DataError("the jsonl format needs --ann FILE.jsonl")
        return read_jsonl(spec.ann, image_root=spec.image_root, mask_root=spec.mask_root)
    raise DataError(f"unknown data format {spec.format!r}; expected 'refer', 'semires' or 'jsonl'")


__all__ = ["DataSpec", "Image", "Object", "RESIndex", "Ref", "Sentence", "load_index", "tokenize"]

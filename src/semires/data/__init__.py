"""Data: dataset formats, the synthetic benchmark, labeled/unlabeled splits, statistics.

``load_index(spec)`` is the one entry point that turns a :class:`DataSpec` (what a config file's
``data:`` section or the CLI's data options describe) into a :class:`~semires.data.index.RESIndex`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from semires.data.index import Image, Object, Ref, RESIndex, Sentence, tokenize

Format = Literal["refer", "semires"]


@dataclass
class DataSpec:
    """Where a dataset lives on disk.

    - ``format="refer"``: ``root/dataset/refs(split_by).p`` + ``root/dataset/instances.json``;
      images under ``image_root`` (default: ``root/images/<dataset>`` if it exists, else
      ``root/images/mscoco/images/train2014``).
    - ``format="semires"``: the LAVT/SemiRES json ``ann`` with masks in ``mask_root``
      (default: ``<folder of ann>/masks``) and images under ``image_root``.
    """

    format: Format = "refer"
    root: str | None = None
    dataset: str | None = None
    split_by: str | None = None
    ann: str | None = None
    image_root: str | None = None
    mask_root: str | None = None

    def describe(self) -> str:
        if self.format == "semires":
            return f"semires json {self.ann}"
        return f"refer {self.root}/{self.dataset} ({self.split_by})"


def load_index(spec: DataSpec) -> RESIndex:
    """Read the dataset described by ``spec`` (refer layout or LAVT/SemiRES json)."""
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
        return read_semires_json(spec.ann, mask_root=spec.mask_root, image_root=spec.image_root)
    raise DataError(f"unknown data format {spec.format!r}; expected 'refer' or 'semires'")


__all__ = ["DataSpec", "Image", "Object", "RESIndex", "Ref", "Sentence", "load_index", "tokenize"]

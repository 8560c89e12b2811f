"""Data: dataset formats, the synthetic benchmark, labeled/unlabeled splits, statistics.

``load_index(spec)`` is the one entry point that turns a :class:`DataSpec` (what a config file's
``data:`` section or the CLI's data options describe) into a :class:`~semires.data.index.RESIndex`;
the format named in ``spec.format`` is looked up in :data:`semires.data.formats.FORMATS`, where
your own formats can be registered too (docs/data.md, "Your own data format").
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass

from semires.data.index import Image, Object, Ref, RESIndex, Sentence, tokenize


@dataclass
class DataSpec:
    """Where a dataset lives on disk; ``format`` names a registered
    :class:`~semires.data.formats.DataFormat`, which says which other fields it reads.

    - ``format="refer"``: ``root/dataset/refs(split_by).p`` + ``root/dataset/instances.json``;
      images under ``image_root`` (default: ``root/images/<dataset>`` if it exists, else
      ``root/images/mscoco/images/train2014``).
    - ``format="semires"``: the LAVT/SemiRES json ``ann`` with masks in ``mask_root``
      (default: ``<folder of ann>/masks``) and images under ``image_root``.
    - ``format="jsonl"``: the JSON Lines file ``ann`` (one referred object per line); image and
      mask paths relative to its folder, or to ``image_root`` / ``mask_root``.
    """

    format: str = "refer"
    root: str | None = None
    dataset: str | None = None
    split_by: str | None = None
    ann: str | None = None
    image_root: str | None = None
    mask_root: str | None = None

    def __post_init__(self) -> None:
        """An unregistered ``format`` fails here, so that every path that builds a spec (a
        config's ``data`` section, a subclass with its own ``validate``) names the key."""
        from semires.data.formats import FORMATS
        from semires.errors import ConfigError
        from semires.utils.typed_config import invalid

        try:
            FORMATS.get(self.format)
        except ConfigError as err:
            raise invalid("format", str(err)) from None

    def describe(self) -> str:
        """The dataset in one line, as its format describes it."""
        from semires.data.formats import FORMATS

        return FORMATS.get(self.format).describe(self)


def load_index(spec: DataSpec) -> RESIndex:
    """Read the dataset described by ``spec`` with the reader of its format.

    The cyclic garbage collector is paused meanwhile: a reader builds hundreds of thousands of
    acyclic objects (json dicts, annotations, sentences), and the collector's repeated full
    passes over them made reading superlinear in the dataset's size (the refer layout of the
    synthetic refcoco preset at 1/16 and 1/4 of RefCOCO: 4x the images took 8.8x the time with
    the collector on, 4.7x with it paused; bench/bench_scale.py).
    """
    from semires.data.formats import FORMATS

    reader = FORMATS.get(spec.format).read
    with _gc_paused():
        return reader(spec)


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


__all__ = ["DataSpec", "Image", "Object", "RESIndex", "Ref", "Sentence", "load_index", "tokenize"]

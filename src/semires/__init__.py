"""SemiRES: semi-supervised referring expression segmentation with SAM-guided pseudo-labels.

>>> import semires
>>> seg = semires.load("runs/demo/cpi/best.pt")                     # doctest: +SKIP
>>> mask = seg.predict("photo.png", "the red star left of the ring")  # doctest: +SKIP

The public names (docs/api.md) are importable from here; each is loaded on first use, so
``import semires`` stays light:

- prediction: :func:`load`, :class:`Segmenter`;
- datasets: :class:`DataSpec`, :func:`load_index`, :class:`RESIndex` and its records
  (:class:`Image`, :class:`Object`, :class:`Ref`, :class:`Sentence`), the readers and writers
  (:func:`read_refer` / :func:`write_refer`, :func:`read_semires_json` /
  :func:`write_semires_json`, :func:`read_jsonl` / :func:`write_jsonl`), the labeled split
  (:func:`make_split`, :func:`read_split`, :class:`Split`);
- proposals: :class:`ProposalStore`, :class:`Proposals`;
- errors: :class:`SemiresError` and its kinds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from semires.version import __version__

if TYPE_CHECKING:
    from pathlib import Path

    from semires.data import DataSpec, load_index
    from semires.data.index import Image, Object, Ref, RESIndex, Sentence
    from semires.data.jsonl import read_jsonl, write_jsonl
    from semires.data.refer import read_refer, write_refer
    from semires.data.semires_json import read_semires_json, write_semires_json
    from semires.data.splits import Split, make_split, read_split
    from semires.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        ProposalError,
        SemiresError,
    )
    from semires.evaluate.predict import Segmenter
    from semires.proposals.base import Proposals
    from semires.proposals.store import ProposalStore

#: public name -> the module that defines it
_LAZY = {
    "Segmenter": "semires.evaluate.predict",
    **dict.fromkeys(("DataSpec", "load_index"), "semires.data"),
    **dict.fromkeys(("Image", "Object", "Ref", "RESIndex", "Sentence"), "semires.data.index"),
    **dict.fromkeys(("read_jsonl", "write_jsonl"), "semires.data.jsonl"),
    **dict.fromkeys(("read_refer", "write_refer"), "semires.data.refer"),
    **dict.fromkeys(("read_semires_json", "write_semires_json"), "semires.data.semires_json"),
    **dict.fromkeys(("Split", "make_split", "read_split"), "semires.data.splits"),
    **dict.fromkeys(
        ("SemiresError", "DataError", "ConfigError", "CheckpointError", "ProposalError"),
        "semires.errors",
    ),
    "Proposals": "semires.proposals.base",
    "ProposalStore": "semires.proposals.store",
}


def load(checkpoint: str | Path, device: str = "auto", *, weights: str = "model") -> Segmenter:
    """Load a trained checkpoint for prediction (see :class:`semires.evaluate.predict.Segmenter`).

    ``device``: ``auto`` (CUDA when usable, else CPU), ``cpu``, ``cuda`` or ``cuda:N``;
    ``weights="companion"``: the other network of a teacher-student ``best.pt``.
    """
    from semires.evaluate.predict import load as _load

    return _load(checkpoint, device=device, weights=weights)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'semires' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DataSpec",
    "Image",
    "Object",
    "ProposalError",
    "ProposalStore",
    "Proposals",
    "RESIndex",
    "Ref",
    "Segmenter",
    "SemiresError",
    "Sentence",
    "Split",
    "__version__",
    "load",
    "load_index",
    "make_split",
    "read_jsonl",
    "read_refer",
    "read_semires_json",
    "read_split",
    "write_jsonl",
    "write_refer",
    "write_semires_json",
]

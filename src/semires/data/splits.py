"""Labeled / unlabeled splits of a train split, drawn by image (docs/method.md section 2).

``make_split`` takes the sorted unique image ids of the train split, permutes them with
``numpy.random.default_rng(seed)`` and labels the first ``max(1, floor(ratio * N))``: every ref
of a drawn image is labeled, every other train image is unlabeled. The permutation depends only
on the seed and N, so a larger ratio with the same seed gives a superset.

A split folder holds ``labeled.txt`` and ``unlabeled.txt`` (image ids, one per line, sorted,
``#`` header lines) and ``split.json`` (dataset, split, ratio, seed, counts per side).

Ratios: a value ending in ``%`` is a percentage (``"1%"``, ``"0.5%"``); a bare value is a
fraction and must be at most 1 (``"0.01"`` is 1%, ``"1"`` is every image); a bare value above 1
is refused with a hint to add ``%``. Allowed range: (0, 100%]. ``"masks"`` is ``100%``: every
image that can be labeled.

Only an image every ref of which (in the split) has a mask can be labeled: the draw is among
those images, and every other image of the split is unlabeled. In the refer layout and the
SemiRES json every object has a mask, so every image is drawn from; in JSON Lines a line without
``mask`` makes its image unlabeled (``labeled: masks`` = the images whose lines all have masks).
An index in which no object has a mask (ids only) draws from every image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from semires.data.index import Ref, RESIndex
from semires.data.refer import load_json
from semires.errors import DataError, missing
from semires.utils.io import atomic_write_json, atomic_write_text

LABELED = "labeled.txt"
UNLABELED = "unlabeled.txt"
SPLIT_JSON = "split.json"
#: the labeled share "every image that can be labeled" (every ref of it has a mask)
MASKS = "masks"


def parse_ratio(value: float | str) -> Fraction:
    """The labeled ratio as an exact fraction in (0, 1] (see the module doc for the rule)."""
    text = str(value).strip()
    if text == MASKS:
        return Fraction(1)
    percent = text.endswith("%")
    try:
        ratio = Fraction(text[:-1].strip() if percent else text)
    except (ValueError, ZeroDivisionError):
        raise DataError(
            f"labeled ratio {value!r} is not a number; expected e.g. '1%', '0.01' or 'masks'"
        ) from None
    if percent:
        ratio /= 100
    elif ratio > 1:
        raise DataError(
            f"labeled ratio {value!r}: a bare number is a fraction and must be <= 1; "
            f"write '{text}%' for a percentage"
        )
    if not 0 < ratio <= 1:
        raise DataError(f"labeled ratio {value!r} is outside (0, 100%]")
    return ratio


def format_ratio(ratio: float) -> str:
    """A ratio as a percentage string: 0.01 -> ``1%``."""
    return f"{ratio * 100:.6g}%"


@dataclass(frozen=True)
class Split:
    """Labeled and unlabeled image ids of one split (``train``) of a dataset."""

    dataset: str
    ratio: float
    seed: int | None
    labeled_images: tuple[int, ...]
    unlabeled_images: tuple[int, ...]
    split: str = "train"
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def labeled_refs(self, index: RESIndex) -> list[Ref]:
        """The refs of the split whose image is labeled."""
        wanted = set(self.labeled_images)
        return [r for r in index.refs_in(self.split) if r.image_id in wanted]

    def unlabeled_refs(self, index: RESIndex) -> list[Ref]:
        """The refs of the split whose image is unlabeled."""
        wanted = set(self.unlabeled_images)
        return [r for r in index.refs_in(self.split) if r.image_id in wanted]


def _side_counts(images: tuple[int, ...], refs: list[Ref]) -> dict[str, int]:
    return {
        "images": len(images),
        "refs": len(refs),
        "sentences": sum(len(r.sentences) for r in refs),
    }


def _with_counts(split: Split, index: RESIndex) -> Split:
    counts = {
        "labeled": _side_counts(split.labeled_images, split.labeled_refs(index)),
        "unlabeled": _side_counts(split.unlabeled_images, split.unlabeled_refs(index)),
    }
    return replace(split, counts=counts)


def labelable_images(index: RESIndex, split: str = "train") -> list[int]:
    """The sorted image ids of ``split`` every ref of which has a mask (those can be labeled);
    every image of the split when no object of the index has a mask (an index of ids only)."""
    if not index.has_masks():
        return index.image_ids(split)
    without = {r.image_id for r in index.refs_in(split) if not index.has_mask(r.object_id)}
    return [i for i in index.image_ids(split) if i not in without]


def make_split(index: RESIndex, ratio: float | str, seed: int = 0, split: str = "train") -> Split:
    """Draw labeled images from ``split`` of ``index`` (deterministic for a seed) among the
    images that can be labeled (:func:`labelable_images`); the others are unlabeled."""
    fraction = parse_ratio(ratio)
    if seed < 0:
        raise DataError(f"seed {seed} is negative; expected an integer >= 0")
    ids = index.image_ids(split)
    if not ids:
        raise DataError(f"{index.source or index.name}: split {split!r} has no images")
    pool = labelable_images(index, split)
    if not pool:
        index.require_masks(split, "labeled images need masks: give some lines a mask")
    k = max(1, math.floor(fraction * len(pool)))
    order = np.random.default_rng(seed).permutation(len(pool))
    labeled = tuple(sorted(pool[i] for i in order[:k]))
    unlabeled = tuple(sorted(set(ids) - set(labeled)))
    drawn = Split(index.name, float(fraction), seed, labeled, unlabeled, split)
    return _with_counts(drawn, index)


def _id_file_text(split: Split, which: str, ids: tuple[int, ...]) -> str:
    header = (
        f"# {which} image ids of {split.dataset or 'the dataset'} ({split.split}): "
        f"labeled ratio {format_ratio(split.ratio)}, seed {split.seed}, "
        f"{len(split.labeled_images)} labeled / {len(split.unlabeled_images)} unlabeled images\n"
    )
    return header + "".join(f"{i}\n" for i in ids)


def split_record(split: Split) -> dict[str, Any]:
    """The ``split.json`` content."""
    return {
        "dataset": split.dataset,
        "split": split.split,
        "ratio": split.ratio,
        "seed": split.seed,
        **split.counts,
    }


def write_split(split: Split, out_dir: str | Path) -> Path:
    """Write ``labeled.txt``, ``unlabeled.txt`` and ``split.json`` (each atomically)."""
    out = Path(out_dir)
    atomic_write_text(out / LABELED, _id_file_text(split, "labeled", split.labeled_images))
    atomic_write_text(out / UNLABELED, _id_file_text(split, "unlabeled", split.unlabeled_images))
    atomic_write_json(out / SPLIT_JSON, split_record(split))
    return out


def _read_ids(path: Path) -> tuple[int, ...]:
    if not path.is_file():
        raise missing(path, "split id list")
    ids: list[int] = []
    seen: set[int] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            image_id = int(text)
        except ValueError:
            raise DataError(f"{path}:{lineno}: expected an image id, got {text!r}") from None
        if image_id in seen:
            raise DataError(f"{path}:{lineno}: image id {image_id} listed twice")
        seen.add(image_id)
        ids.append(image_id)
    return tuple(sorted(ids))


def read_split(split_dir: str | Path, index: RESIndex | None = None) -> Split:
    """Read a split folder, checking that labeled and unlabeled ids never overlap.

    With ``index``, every id must be an image of the index's split, and the counts are
    recomputed from it. Without ``split.json`` the ratio is labeled / all and the seed None.
    """
    folder = Path(split_dir)
    if not folder.is_dir():
        raise missing(folder, "split folder")
    labeled, unlabeled = _read_ids(folder / LABELED), _read_ids(folder / UNLABELED)
    if not labeled:
        raise DataError(f"{folder / LABELED}: lists no image ids")
    both = sorted(set(labeled) & set(unlabeled))
    if both:
        raise DataError(f"{folder}: image ids both labeled and unlabeled: {both[:10]}")
    meta = load_json(folder / SPLIT_JSON, "split file") if (folder / SPLIT_JSON).is_file() else {}
    if not isinstance(meta, dict):
        raise DataError(f"{folder / SPLIT_JSON}: expected a json object")
    split = Split(
        str(meta.get("dataset", "")),
        float(meta.get("ratio", len(labeled) / (len(labeled) + len(unlabeled)))),
        meta.get("seed"),
        labeled,
        unlabeled,
        str(meta.get("split", "train")),
        {k: meta[k] for k in ("labeled", "unlabeled") if isinstance(meta.get(k), dict)},
    )
    if index is None:
        return split
    unknown = sorted(set(labeled + unlabeled) - set(index.image_ids(split.split)))
    if unknown:
        raise DataError(
            f"{folder}: image ids not in split {split.split!r} of "
            f"{index.source or index.name}: {unknown[:10]}"
        )
    maskless = sorted(set(labeled) - set(labelable_images(index, split.split)))
    if maskless:
        raise DataError(
            f"{folder / LABELED}: labeled images {maskless[:10]} have refs without masks in "
            f"{index.source or index.name}; a labeled image needs the mask of every ref"
        )
    return _with_counts(split, index)


def labeled_index(split: Split, index: RESIndex) -> RESIndex:
    """The index restricted to the labeled refs of the split plus every other split's refs.

    This is what SemiRES's ``refcoco_1%_image.json`` holds: train = labeled refs, and the full
    val / test lists.
    """
    keep = [r.id for r in split.labeled_refs(index)]
    keep += [r.id for r in index.refs.values() if r.split != split.split]
    return index.subset(keep)


def split_refs(
    index: RESIndex, train_split: str, split_dir: str | Path | None
) -> tuple[list[Ref], list[Ref]]:
    """The refs of ``train_split`` on the labeled and on the unlabeled images of the split in
    ``split_dir`` (None: every ref labeled, none unlabeled)."""
    train = index.refs_in(train_split)
    if not split_dir:
        return train, []
    split = read_split(split_dir, index)
    lab, unl = set(split.labeled_images), set(split.unlabeled_images)
    return [r for r in train if r.image_id in lab], [r for r in train if r.image_id in unl]

"""Per-split dataset statistics (``semires data stats``).

For each split: the number of images, refs (referred objects; for the LAVT/SemiRES json, distinct
``mask_id``), sentences, the mean sentence length in words (:func:`~semires.data.index.tokenize`
tokens of the sentence text) and, where masks are available, quantiles of the referred objects'
mask areas as a fraction of their image's area.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from semires.data import masks as mask_ops
from semires.data.index import RESIndex, tokenize
from semires.data.semires_json import mask_available

QUANTILES: dict[str, float] = {
    "min": 0.0,
    "p10": 0.1,
    "p25": 0.25,
    "p50": 0.5,
    "p75": 0.75,
    "p90": 0.9,
    "max": 1.0,
}


def mask_area_fraction(index: RESIndex, object_id: int) -> float:
    """The object's mask area divided by its image's area (from the RLE, no decoding)."""
    rle = index.rle(object_id)
    height, width = rle["size"]
    return mask_ops.area(rle) / float(height * width)


def area_quantiles(fractions: list[float]) -> dict[str, float] | None:
    """:data:`QUANTILES` of the area fractions, or None when there are none."""
    if not fractions:
        return None
    values = np.quantile(np.asarray(fractions, dtype=np.float64), list(QUANTILES.values()))
    return {key: float(v) for key, v in zip(QUANTILES, values, strict=True)}


def _split_counts(index: RESIndex, split: str) -> dict[str, Any]:
    refs = index.refs_in(split)
    lengths = [len(tokenize(s.raw)) for r in refs for s in r.sentences]
    return {
        "images": len({r.image_id for r in refs}),
        "refs": len(refs),
        "sentences": len(lengths),
        "mean_sentence_length": float(np.mean(lengths)) if lengths else 0.0,
    }


def _split_areas(
    index: RESIndex, split: str, notes: list[str], progress: bool = True
) -> dict[str, Any]:
    from semires.utils.progress import progress_bar

    refs = index.refs_in(split)
    given = [r for r in refs if index.has_mask(r.object_id)]  # the others: unlabeled data
    have = [r for r in given if mask_available(index, r.object_id)]
    with progress_bar(
        have, enabled=progress, desc=f"{split}: mask areas", unit="mask", leave=False
    ) as bar:
        fractions = [mask_area_fraction(index, r.object_id) for r in bar]
    action = "area quantiles skipped" if not have else "area quantiles over the rest"
    if len(given) < len(refs):
        notes.append(
            f"{split}: {len(refs) - len(given)} of {len(refs)} refs have no mask; {action}"
        )
    if len(have) < len(given):
        notes.append(f"{split}: {len(given) - len(have)} of {len(refs)} masks absent; {action}")
    return {"masks": len(have), "mask_area_quantiles": area_quantiles(fractions)}


def compute_stats(index: RESIndex, *, masks: bool = True, progress: bool = True) -> dict[str, Any]:
    """Statistics of every split of ``index`` as a json-ready dict.

    ``{"dataset", "source", "splits": {split: {"images", "refs", "sentences",
    "mean_sentence_length", "masks", "mask_area_quantiles"}}, "notes": [...]}``. With
    ``masks=False``, or for refs whose mask file is absent, no mask is read; ``notes`` says so and
    ``mask_area_quantiles`` is None where no mask was measured. ``progress``: a bar while the
    masks are read (:func:`semires.utils.progress.show_progress`).
    """
    notes: list[str] = []
    splits: dict[str, dict[str, Any]] = {}
    for split in index.splits():
        splits[split] = _split_counts(index, split)
        if masks:
            splits[split].update(_split_areas(index, split, notes, progress))
        else:
            splits[split].update({"masks": 0, "mask_area_quantiles": None})
    if not masks:
        notes.append("masks not read (--no-masks): area quantiles skipped")
    return {"dataset": index.name, "source": index.source, "splits": splits, "notes": notes}


def format_stats(stats: dict[str, Any]) -> str:
    """A plain-text table of :func:`compute_stats`' output, followed by its notes."""
    header = ["split", "images", "refs", "sentences", "words/sent", "area p10", "p50", "p90"]
    rows = [header]
    for split, s in stats["splits"].items():
        q = s.get("mask_area_quantiles")
        areas = [f"{q[k]:.4f}" for k in ("p10", "p50", "p90")] if q else ["-"] * 3
        rows.append(
            [
                split,
                f"{s['images']:,}",
                f"{s['refs']:,}",
                f"{s['sentences']:,}",
                f"{s['mean_sentence_length']:.2f}",
                *areas,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = f"{stats['dataset']} ({stats['source']})" if stats.get("source") else stats["dataset"]
    notes = [f"note: {n}" for n in stats.get("notes", [])]
    return "\n".join([title, *lines, *notes])

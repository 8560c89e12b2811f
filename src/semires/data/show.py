"""Sample grids: images with the referred object outlined and its expressions as the caption.

Works on any :class:`~semires.data.index.RESIndex` (refer layout, LAVT/SemiRES json, the
synthetic benchmark): ``semires data show``.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semires.data.index import Ref, RESIndex
from semires.errors import DataError
from semires.utils.io import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PANEL_INCHES = 2.6
"""Width of a grid cell and height of its square image panel."""

CAPTION_INCHES = 0.36
"""Height of the caption band per expression shown (room for two wrapped lines)."""

OUTLINE = "#39ff14"
DIM = 0.6  # brightness kept outside the referred object


def pick_refs(index: RESIndex, split: str | None, n: int, seed: int) -> list[Ref]:
    """``n`` refs of ``split`` drawn with ``seed``, from distinct images where possible."""
    refs = index.refs_in(split)
    if not refs:
        raise DataError(f"no refs in split {split!r} of {index.source or index.name}")
    order = np.random.default_rng(seed).permutation(len(refs))
    first, rest, seen = [], [], set()
    for i in order:
        ref = refs[int(i)]
        (rest if ref.image_id in seen else first).append(ref)
        seen.add(ref.image_id)
    return (first + rest)[:n]


def highlight(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with everything outside ``mask`` dimmed (float RGB in [0, 1])."""
    out = image.astype(np.float32) / 255.0
    out[mask == 0] *= DIM
    return out


def caption(ref: Ref, sentences: int, width: int = 40) -> str:
    """Up to ``sentences`` quoted expressions of ``ref``, wrapped to ``width`` characters."""
    lines = []
    for sent in ref.sentences[:sentences]:
        lines += textwrap.wrap(f"\u201c{sent.raw}\u201d", width=width) or [""]
    return "\n".join(lines)


def cell_inches(sentences: int) -> tuple[float, float]:
    """(width, height) of one grid cell showing ``sentences`` expressions."""
    return PANEL_INCHES, PANEL_INCHES + 0.1 + CAPTION_INCHES * sentences


def grid_size(n: int, cols: int, sentences: int, dpi: int) -> tuple[int, int]:
    """(width, height) in pixels of the grid of ``n`` cells in ``cols`` columns."""
    cols = min(cols, n)
    rows = -(-n // cols)
    width, height = cell_inches(sentences)
    return round(cols * width * dpi), round(rows * height * dpi)


def render_grid(
    index: RESIndex,
    out: str | Path,
    *,
    split: str | None = None,
    n: int = 12,
    seed: int = 0,
    cols: int = 4,
    sentences: int = 2,
    dpi: int = 100,
) -> Path:
    """Write a PNG grid of ``n`` refs of ``split`` to ``out``; its size is :func:`grid_size`.

    Each cell shows the image with the referred object outlined (the rest dimmed) and, below
    it, the ref's first ``sentences`` expressions.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if min(n, cols, sentences) < 1:
        raise DataError(f"--n, --cols and --sentences must be >= 1, got {n}, {cols}, {sentences}")
    chosen = pick_refs(index, split, n, seed)
    width, height = grid_size(len(chosen), cols, sentences, dpi)
    cols = min(cols, len(chosen))
    rows = -(-len(chosen) // cols)
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    try:
        for k, ref in enumerate(chosen):
            row, col = divmod(k, cols)
            _cell(
                fig, index, ref, (col / cols, 1 - (row + 1) / rows, 1 / cols, 1 / rows), sentences
            )
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)


def _draw_mask(ax: Any, ref: Ref, image: np.ndarray, mask: np.ndarray) -> None:
    """The image with everything outside the ref's mask dimmed and the mask outlined."""
    if mask.shape != image.shape[:2]:
        raise DataError(
            f"ref {ref.id}: mask of object {ref.object_id} is {mask.shape[1]}x{mask.shape[0]}, "
            f"image {ref.image_id} is {image.shape[1]}x{image.shape[0]}"
        )
    ax.imshow(highlight(image, mask), interpolation="nearest")
    if mask.any():
        ax.contour(mask, levels=[0.5], colors=OUTLINE, linewidths=1.4)


def _cell(
    fig: Figure, index: RESIndex, ref: Ref, box: tuple[float, float, float, float], sentences: int
) -> None:
    """Draw one ref into the figure-fraction rectangle ``box`` = (x, y, w, h)."""
    x, y, w, h = box
    pad = 0.04 * w
    panel = h * PANEL_INCHES / cell_inches(sentences)[1]
    ax = fig.add_axes((x + pad, y + h - panel + pad * 0.5, w - 2 * pad, panel - 1.5 * pad))
    image = index.load_image(ref.image_id)
    if index.has_mask(ref.object_id):
        _draw_mask(ax, ref, image, index.mask(ref.object_id))
    else:  # unlabeled data: the image and its expressions only
        ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{ref.split} \u00b7 ref {ref.id}", fontsize=7, color="0.35", pad=2)
    fig.text(
        x + w / 2,
        y + h - panel,
        caption(ref, sentences),
        ha="center",
        va="top",
        fontsize=8.5,
        linespacing=1.25,
    )

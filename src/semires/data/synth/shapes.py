"""Shape and part geometry: exact (aliasing-free) boolean masks on the image grid.

A shape is drawn at a centre ``(cx, cy)`` with a radius ``r`` in pixels; every mask is a
``(H, W)`` bool array of the whole image. A pattern splits the object into a ``body`` part and
one second part (a half, stripes, an outline, a handle or a dot) of another colour. Masks are
filled without anti-aliasing (Pillow polygons, exact disks), so the painted image and
the masks agree pixel for pixel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw
from scipy.ndimage import binary_erosion
from skimage.morphology import disk

_T = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
_HEART = np.stack(
    [
        16 * np.sin(_T) ** 3,
        -(13 * np.cos(_T) - 5 * np.cos(2 * _T) - 2 * np.cos(3 * _T) - np.cos(4 * _T)),
    ],
    axis=1,
)
_HEART = (_HEART - [0.0, 1.5]) / 15.0
_STAR_ANGLES = -np.pi / 2 + np.arange(10) * np.pi / 5
_STAR = (
    np.stack([np.cos(_STAR_ANGLES), np.sin(_STAR_ANGLES)], axis=1)
    * np.where(np.arange(10) % 2 == 0, 1.2, 0.5)[:, None]
)
_TRIANGLE_ANGLES = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
_TRIANGLE = np.stack([np.cos(_TRIANGLE_ANGLES), np.sin(_TRIANGLE_ANGLES)], axis=1) * 1.2
_TRIANGLE[:, 1] += 0.3  # centre the bounding box
_A = 0.33  # half width of a cross's arms
_POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]]),
    "diamond": np.array([[0.0, -1.1], [1.1, 0.0], [0.0, 1.1], [-1.1, 0.0]]),
    "triangle": _TRIANGLE,
    "star": _STAR,
    "heart": _HEART,
    "cross": np.array(
        [
            [-_A, -1],
            [_A, -1],
            [_A, -_A],
            [1, -_A],
            [1, _A],
            [_A, _A],
            [_A, 1],
            [-_A, 1],
            [-_A, _A],
            [-1, _A],
            [-1, -_A],
            [-_A, -_A],
        ]
    ),
}
RING_HOLE = 0.5
"""Inner radius of a ring, as a fraction of its outer radius."""

STRIPE_DUTY = 0.35
"""Share of a stripe period in the stripe colour (the body colour stays dominant)."""

HANDLE_REACH = 1.9
"""How far a handle reaches from the centre, in radii."""

EXTENT: dict[str, float] = {
    "circle": 1.0,
    "ring": 1.0,
    **{name: float(np.linalg.norm(pts, axis=1).max()) for name, pts in _POLYGONS.items()},
}
"""Max distance of a shape's pixels from its centre, in radii."""

LAYOUT_DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}


@dataclass(frozen=True)
class PartLayout:
    """How a pattern is laid out on its object: a direction and a stripe phase."""

    direction: str = "right"  # two-tone split side, stripe axis, handle direction
    phase: float = 0.0  # stripe phase in [0, 1)


def shape_mask(shape: str, cx: float, cy: float, r: float, size: tuple[int, int]) -> np.ndarray:
    """The filled ``shape`` of radius ``r`` centred at ``(cx, cy)`` on an image of ``size`` (H, W).

    Pixel (x, y) has its centre at integer coordinates (x, y).
    """
    if shape == "circle":
        return _disk(cx, cy, r, size)
    if shape == "ring":
        return _disk(cx, cy, r, size) & ~_disk(cx, cy, RING_HOLE * r, size)
    canvas = PILImage.new("1", (size[1], size[0]), 0)
    points = [(cx + r * x, cy + r * y) for x, y in _POLYGONS[shape]]
    ImageDraw.Draw(canvas).polygon(points, fill=1)
    return np.asarray(canvas, dtype=bool)


def _disk(cx: float, cy: float, r: float, size: tuple[int, int]) -> np.ndarray:
    xx, yy = grid(size)
    return (xx - cx) ** 2 + (yy - cy) ** 2 < r * r


@functools.cache
def grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel x and y coordinates (float32, read-only) of an image of ``size`` (H, W)."""
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)
    xx.flags.writeable = False
    yy.flags.writeable = False
    return xx, yy


def part_masks(
    shape: str,
    pattern: str,
    cx: float,
    cy: float,
    r: float,
    layout: PartLayout,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """``(body, part)`` masks of an object with ``pattern`` (``part`` is empty for ``plain``).

    The two are disjoint and their union is the whole object (a handle adds to the shape).
    """
    whole = shape_mask(shape, cx, cy, r, size)
    if pattern == "plain":
        return whole, np.zeros(size, dtype=bool)
    xx, yy = grid(size)
    dx, dy = LAYOUT_DIRECTIONS[layout.direction]
    along = (xx - cx) * dx + (yy - cy) * dy  # signed distance along the layout direction
    if pattern == "two-tone":
        part = whole & (along >= 0)
    elif pattern == "striped":
        across = (yy - cy) if dx else (xx - cx)
        period = max(4.0, 2.0 * r / 2.6)
        part = whole & (np.mod(across / period + layout.phase, 1.0) < STRIPE_DUTY)
    elif pattern == "outlined":
        width = max(2, round(0.16 * r))
        part = whole & ~_eroded(whole, disk(width))
    elif pattern == "dotted":
        part = whole & _disk(cx, cy, 0.4 * r, size)
    elif pattern == "handle":
        start = 0.75 * r if shape == "ring" else 0.0
        side = (yy - cy) * dx - (xx - cx) * dy  # signed distance across the direction
        bar = (along >= start) & (along <= HANDLE_REACH * r) & (np.abs(side) <= 0.24 * r)
        part = bar & ~whole
        whole = whole | bar
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    return whole & ~part, part


def _eroded(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """``binary_erosion(mask, structure)``, computed on ``mask``'s bounding box grown by the
    structure's reach (the same result: the erosion is False wherever ``mask`` is)."""
    out = np.zeros_like(mask)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return out
    pad = max(structure.shape) // 2 + 1
    y0, x0 = max(0, rows[0] - pad), max(0, cols[0] - pad)
    y1, x1 = rows[-1] + pad + 1, cols[-1] + pad + 1
    out[y0:y1, x0:x1] = binary_erosion(mask[y0:y1, x0:x1], structure=structure)
    return out


def extent(shape: str, pattern: str, r: float) -> float:
    """Max distance of the object's pixels from its centre, in pixels."""
    reach = max(HANDLE_REACH, EXTENT[shape]) if pattern == "handle" else EXTENT[shape]
    return reach * r

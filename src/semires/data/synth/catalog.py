"""What the synthetic world is made of: named colours, shape kinds, part patterns, sizes.

Everything here is fixed vocabulary; the knobs in :mod:`.config` choose subsets of it. The
palette is built so that object pixels and background pixels can never be confused:

- every object colour is either strongly saturated (max - min channel >= 140) or near white /
  near black, while the background is desaturated (channel spread <= 36) and confined to the
  grey range ``BACKGROUND_RANGE``;
- any two object colours differ by more than ``2 * OBJECT_TOLERANCE`` in at least one channel,
  and the shading + grain put on an object pixel stay within ``OBJECT_TOLERANCE`` of its colour,
  so the colour of every pixel of a rendered object identifies the part it belongs to.
"""

from __future__ import annotations

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 15),
    "yellow": (240, 210, 25),
    "green": (25, 170, 50),
    "cyan": (25, 200, 215),
    "blue": (35, 75, 220),
    "purple": (145, 40, 200),
    "pink": (245, 110, 195),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
"""Object colours by name (RGB)."""

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "heart",
    "diamond",
)
"""Shape kinds; an object's COCO ``category_id`` is its 1-based position here."""

PATTERNS: tuple[str, ...] = ("two-tone", "striped", "outlined", "handle", "dotted")
"""Part patterns: how an object is split into visibly different parts (``plain`` = one part)."""

PLAIN = "plain"

INCOMPATIBLE: dict[str, frozenset[str]] = {"ring": frozenset({"outlined", "dotted"})}
"""Patterns a shape cannot carry (a ring's band is too thin to outline, its centre is a hole)."""

PART_ROLE: dict[str, str] = {
    "two-tone": "half",
    "striped": "stripes",
    "outlined": "outline",
    "handle": "handle",
    "dotted": "dot",
}
"""The name of the second part of each pattern (the first part is always ``body``)."""

SIZES: tuple[str, ...] = ("small", "large")

OBJECT_TOLERANCE = 28
"""Max per-channel deviation of a rendered object pixel from its part's colour."""

BACKGROUND_RANGE = (66, 197)
"""Per-channel range of every background pixel (grain included)."""


def category_id(shape: str) -> int:
    """The COCO-style category id of a shape kind (1-based, stable across configs)."""
    return SHAPES.index(shape) + 1


def categories() -> dict[int, str]:
    """All categories, id -> shape name."""
    return {category_id(s): s for s in SHAPES}

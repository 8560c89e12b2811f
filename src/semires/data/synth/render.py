"""Painting a scene: a textured, cluttered background, then the objects in drawing order.

The background is a gradient between two muted colours, a smooth luminance texture, random
low-contrast strokes and blobs, and a fine grain; ``clutter`` (0..1) scales all of them. Object
pixels are their part's colour plus a soft shading ramp, a small per-object tint and the same
grain, which together stay within :data:`~.catalog.OBJECT_TOLERANCE` of the colour, and the
background stays desaturated inside :data:`~.catalog.BACKGROUND_RANGE`: a rendered object's
pixels always identify its parts (the tests check this).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from semires.data.synth.catalog import BACKGROUND_RANGE, COLOURS
from semires.data.synth.scene import SceneObject
from semires.data.synth.shapes import grid

TINT = 16.0  # max per-channel offset of a background colour from its grey level


def _muted(rng: np.random.Generator, lum: float) -> np.ndarray:
    """A desaturated colour: grey level ``lum`` plus a small tint."""
    return lum + rng.uniform(-TINT, TINT, size=3)


def _ramp(size: tuple[int, int], angle: float, cx: float, cy: float, scale: float) -> np.ndarray:
    """A linear ramp across an image of ``size`` (H, W) in direction ``angle``: 0 at (cx, cy),
    +-1 at ``scale``."""
    xx, yy = grid(size)
    ramp = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / scale
    return np.clip(ramp, -1.0, 1.0)


def _texture(rng: np.random.Generator, size: tuple[int, int], clutter: float) -> np.ndarray:
    """A smooth luminance texture (coarse noise, bicubically upsampled)."""
    cells = 3 + round(6 * clutter)
    coarse = rng.normal(0.0, 1.0, size=(cells, cells)).astype(np.float32)
    smooth = Image.fromarray(coarse).resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return np.asarray(smooth) * (4.0 + 14.0 * clutter)


def _scribble(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    size: tuple[int, int],
    lum: float,
    contrast: float,
) -> None:
    """One low-contrast stroke or blob."""
    colour = tuple(
        int(v) for v in np.clip(_muted(rng, lum + rng.uniform(-contrast, contrast)), 0, 255)
    )
    wh = np.array([size[1], size[0]], dtype=float)
    if rng.random() < 0.6:
        points = [
            tuple(float(v) for v in rng.uniform(-0.1, 1.1, size=2) * wh)
            for _ in range(int(rng.integers(2, 5)))
        ]
        draw.line(points, fill=colour, width=int(rng.integers(1, 4)))
    else:
        w, h = rng.uniform(0.04, 0.22, size=2) * wh
        x, y = rng.uniform(0, wh)
        draw.ellipse([x - w, y - h, x + w, y + h], fill=colour)


def background(rng: np.random.Generator, size: tuple[int, int], clutter: float) -> np.ndarray:
    """An (H, W, 3) float32 background of ``size`` (H, W), before grain."""
    lum = rng.uniform(96.0, 166.0)
    start, end = _muted(rng, lum), _muted(rng, lum + rng.uniform(-35.0, 35.0))
    height, width = size
    angle = rng.uniform(0, 2 * np.pi)
    t = (_ramp(size, angle, width / 2, height / 2, max(size) / 1.4) + 1) / 2
    base = np.multiply.outer(t, (end - start).astype(np.float32))
    base += start.astype(np.float32) + _texture(rng, size, clutter)[..., None]
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(round(16 * clutter) + int(rng.integers(0, 3))):
        _scribble(draw, rng, size, lum, 12.0 + 30.0 * clutter)
    return np.asarray(im).astype(np.float32)


def render(
    objects: list[SceneObject], size: tuple[int, int], clutter: float, rng: np.random.Generator
) -> np.ndarray:
    """The (H, W, 3) uint8 RGB image of a scene, of ``size`` (H, W)."""
    grain = rng.uniform(-1.0, 1.0, size=size).astype(np.float32) * (3.0 + 7.0 * clutter)
    image = np.clip(background(rng, size, clutter) + grain[..., None], *BACKGROUND_RANGE)
    for ob in objects:
        reach = 1.6 * ob.r
        shade = _ramp(size, rng.uniform(0, 2 * np.pi), ob.cx, ob.cy, reach) * (3.0 + 9.0 * clutter)
        light = shade + grain + rng.uniform(-4.0, 4.0)
        colours = (ob.look.colour, ob.look.pattern_colour)
        for mask, name in zip((ob.body, ob.part), colours, strict=True):
            if name is not None:
                image[mask] = np.asarray(COLOURS[name], dtype=np.float32) + light[mask][:, None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)

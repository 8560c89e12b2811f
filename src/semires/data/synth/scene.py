"""Scenes: which objects an image holds, where, and which of their pixels stay visible.

Objects are placed one after the other and painted in that order, so a later object occludes
the earlier ones it overlaps. A placement is accepted only if every earlier object keeps at least
``min_visible`` of its body and of its second part visible (so every object, and its pattern,
stays identifiable). With probability ``occlusion`` an object is tried over an earlier one of
other colours; otherwise (or when that fails) it is placed on free ground, where it may touch
objects of other colours.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import binary_dilation

from semires.data.synth.catalog import INCOMPATIBLE, PLAIN, SIZES
from semires.data.synth.config import SynthConfig
from semires.data.synth.semantics import Facts
from semires.data.synth.shapes import LAYOUT_DIRECTIONS, PartLayout, extent, part_masks
from semires.errors import ConfigError

PLACEMENT_TRIES = 30
GAP = 2  # pixels between objects that share a colour
SCENE_TRIES = 50


@dataclass(frozen=True)
class Look:
    """An object's attributes (everything but its place)."""

    shape: str
    colour: str
    size: str
    pattern: str = PLAIN
    pattern_colour: str | None = None


@dataclass
class SceneObject:
    """One placed object: its look, geometry and (full, then visible) part masks."""

    look: Look
    cx: float
    cy: float
    r: float
    layout: PartLayout
    body: np.ndarray  # (H, W) bool, before occlusion
    part: np.ndarray  # (H, W) bool, before occlusion; empty for plain objects
    covered: np.ndarray = field(init=False)  # pixels hidden by later objects

    def __post_init__(self) -> None:
        self.covered = np.zeros_like(self.body)

    @property
    def full(self) -> np.ndarray:
        return self.body | self.part

    @property
    def visible(self) -> np.ndarray:
        return self.full & ~self.covered

    @property
    def visible_body(self) -> np.ndarray:
        return self.body & ~self.covered

    @property
    def visible_part(self) -> np.ndarray:
        return self.part & ~self.covered

    def facts(self) -> Facts:
        lk = self.look
        return Facts(lk.shape, lk.colour, lk.size, lk.pattern, lk.pattern_colour, self.cx, self.cy)

    def keeps_visible(self, extra: np.ndarray, min_visible: float) -> bool:
        """Whether body and part stay ``min_visible`` visible once ``extra`` covers them too."""
        covered = self.covered | extra
        for mask in (self.body, self.part):
            total = int(mask.sum())
            if total and int((mask & ~covered).sum()) < min_visible * total:
                return False
        return True


def sample_look(cfg: SynthConfig, rng: np.random.Generator) -> Look:
    """A random look drawn from the configured shapes, colours, sizes and patterns."""
    shape = str(rng.choice(cfg.shapes))
    colour = str(rng.choice(cfg.colours))
    size = str(rng.choice(SIZES))
    allowed = [p for p in cfg.patterns if p not in INCOMPATIBLE.get(shape, ())]
    if not allowed or rng.random() >= cfg.parts:
        return Look(shape, colour, size)
    pattern = str(rng.choice(allowed))
    others = [c for c in cfg.colours if c != colour]
    return Look(shape, colour, size, pattern, str(rng.choice(others)))


def _colours(look: Look) -> set[str]:
    return {look.colour} | ({look.pattern_colour} if look.pattern_colour else set())


def _signature(look: Look) -> tuple[str, ...]:
    return (look.shape, look.colour, look.size, look.pattern, str(look.pattern_colour))


def choose_look(
    cfg: SynthConfig, rng: np.random.Generator, placed: list[SceneObject], mode: str
) -> Look:
    """The look of the next object.

    ``mode``: ``mixed`` copies an earlier object's look with probability ``cfg.lookalike``
    (keeping or flipping its size); ``distinct`` never repeats a look; ``lookalike`` makes the
    second object an exact copy of the first (so relations are needed to tell them apart).
    """
    if mode == "lookalike" and len(placed) == 1:
        return placed[0].look
    if mode == "mixed" and placed and rng.random() < cfg.lookalike:
        model = placed[int(rng.integers(len(placed)))].look
        if rng.random() < 0.5:
            return model
        flipped = SIZES[1 - SIZES.index(model.size)]
        return Look(model.shape, model.colour, flipped, model.pattern, model.pattern_colour)
    taken = {_signature(ob.look) for ob in placed} if mode == "distinct" else set()
    for _ in range(100):
        look = sample_look(cfg, rng)
        if _signature(look) not in taken:
            return look
    raise ConfigError("cannot draw distinct objects for testA; add colours or shapes")


def _radius(cfg: SynthConfig, size: str, rng: np.random.Generator) -> float:
    diameter = cfg.size_small if size == "small" else cfg.size_large
    return float(diameter * cfg.short_side / 2 * rng.uniform(0.9, 1.1))


def _layout(rng: np.random.Generator) -> PartLayout:
    return PartLayout(direction=str(rng.choice(list(LAYOUT_DIRECTIONS))), phase=float(rng.random()))


def place(
    cfg: SynthConfig, rng: np.random.Generator, placed: list[SceneObject], look: Look
) -> SceneObject | None:
    """Place an object of ``look``; None when no acceptable place was found.

    With probability ``cfg.occlusion`` the object is first tried over an earlier object of
    other colours (it may then overlap further objects of other colours), otherwise, or if that
    fails, on free ground. Objects that share a colour never overlap nor touch (a gap of
    ``GAP`` pixels), so that their boundary stays visible, and every earlier object keeps
    ``cfg.min_visible`` of its body and of its second part.
    """
    height, width = cfg.shape
    r = _radius(cfg, look.size, rng)
    reach = extent(look.shape, look.pattern, r)
    if reach + 1 >= min(height, width) / 2:
        return None
    bounds = ((reach + 1, reach + 1), (width - reach - 1, height - reach - 1))
    layout = _layout(rng)
    alike = [ob for ob in placed if _colours(ob.look) & _colours(look)]
    others = [ob for ob in placed if ob not in alike]
    occlude = bool(others) and rng.random() < cfg.occlusion
    for under in ([others[int(rng.integers(len(others)))]] if occlude else []) + [None]:
        for cx, cy in _centres(under, r, bounds, rng):
            body, part = part_masks(look.shape, look.pattern, cx, cy, r, layout, cfg.shape)
            full = body | part
            if under is not None and not (under.full & full).any():
                continue
            if any((ob.full & full).any() for ob in (others if under is None else alike)):
                continue
            if alike and _near_any(full, [ob.full for ob in alike]):
                continue
            if all(ob.keeps_visible(full, cfg.min_visible) for ob in placed):
                return SceneObject(look, cx, cy, r, layout, body, part)
    return None


def _near_any(full: np.ndarray, others: list[np.ndarray]) -> bool:
    """Whether any of ``others`` comes within ``GAP`` pixels of ``full``.

    The dilation runs on ``full``'s bounding box grown by ``GAP`` (the same result as on the
    whole image, which is all False further away, at a fraction of the cost on large images).
    """
    rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
    if rows.size == 0:
        return False
    y0, x0 = max(0, rows[0] - GAP), max(0, cols[0] - GAP)
    y1, x1 = rows[-1] + GAP + 1, cols[-1] + GAP + 1
    grown = binary_dilation(full[y0:y1, x0:x1], iterations=GAP)
    return any((other[y0:y1, x0:x1] & grown).any() for other in others)


def _centres(
    under: SceneObject | None,
    r: float,
    bounds: tuple[tuple[float, float], tuple[float, float]],
    rng: np.random.Generator,
) -> Iterator[tuple[float, float]]:
    """Candidate centres inside ``bounds`` ((x0, y0), (x1, y1)): overlapping ``under``, or
    anywhere when None."""
    (x0, y0), (x1, y1) = bounds
    for _ in range(PLACEMENT_TRIES):
        if under is None:
            cx, cy = rng.uniform((x0, y0), (x1, y1))
        else:
            angle = rng.uniform(0, 2 * np.pi)
            dist = (under.r + r) * rng.uniform(0.5, 1.0)
            cx, cy = under.cx + dist * np.cos(angle), under.cy + dist * np.sin(angle)
        if x0 <= cx <= x1 and y0 <= cy <= y1:
            yield float(cx), float(cy)


def sample_scene(
    cfg: SynthConfig, rng: np.random.Generator, mode: str = "mixed"
) -> list[SceneObject]:
    """The objects of one image, in drawing order, with their occlusion applied.

    ``mode`` is passed to :func:`choose_look`; at least ``objects_min`` objects (and, in
    ``lookalike`` mode, the look-alike pair) are guaranteed.
    """
    for _ in range(SCENE_TRIES):
        wanted = int(rng.integers(cfg.objects_min, cfg.objects_max + 1))
        placed: list[SceneObject] = []
        for _ in range(wanted):
            look = choose_look(cfg, rng, placed, mode)
            ob = place(cfg, rng, placed, look)
            if ob is None:
                if mode == "lookalike" and len(placed) == 1:
                    break
                continue
            for earlier in placed:
                earlier.covered |= ob.full
            placed.append(ob)
        if len(placed) >= max(cfg.objects_min, 2 if mode == "lookalike" else 1):
            return placed
    raise ConfigError(
        f"cannot place {cfg.objects_min} objects on a {cfg.shape[1]}x{cfg.shape[0]} image; "
        "lower objects_min, size_small / size_large or min_visible"
    )

"""The knobs of the synthetic benchmark (:class:`SynthConfig`) and its presets.

Every knob lives in :class:`SynthConfig`; a preset is a named :class:`SynthConfig`. The sizes of
the presets are documented in ``docs/synthetic.md`` (keep the two in step).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from semires.data.synth.catalog import COLOURS, PATTERNS, SHAPES
from semires.errors import ConfigError
from semires.utils.typed_config import load_dataclass

SPLITS: tuple[str, ...] = ("train", "val", "testA", "testB")
"""The splits, in image-id order. testA: attributes suffice; testB: relations are needed."""


@dataclass(frozen=True)
class SynthConfig:
    """All knobs of the generator. Sizes are fractions of the image's shorter side."""

    image_size: int = 128  # the image's width (and its height unless ``image_height`` is set)
    image_height: int = 0  # 0: square images; otherwise their height (e.g. 640 x 480 as COCO)
    images_train: int = 800
    images_val: int = 100
    images_testA: int = 100
    images_testB: int = 100
    objects_min: int = 2
    objects_max: int = 5
    size_small: float = 0.2  # object diameter / image side (small objects)
    size_large: float = 0.34  # object diameter / image side (large objects)
    clutter: float = 0.5  # 0..1: background texture, strokes, blobs, grain, shading
    occlusion: float = 0.45  # probability that an object is tried over an earlier one
    min_visible: float = 0.6  # every object (and each of its parts) keeps this share visible
    parts: float = 0.5  # probability that an object has two visibly different parts
    lookalike: float = 0.35  # probability that an object copies an earlier one's attributes
    relation_depth: int = 2  # 0: attributes only, 1: + one relation / extremes, 2: + ordinals
    ref_share: float = 1.0  # share of the resolvable objects that get a ref
    sentences_min: int = 2
    sentences_max: int = 4
    polygons: float = 0.0  # share of the objects whose mask is written as COCO polygons
    image_format: str = "png"  # png (pixels and masks agree exactly) or jpg (as COCO)
    colours: tuple[str, ...] = field(
        default=("red", "orange", "yellow", "green", "blue", "purple", "white", "black")
    )
    shapes: tuple[str, ...] = SHAPES
    patterns: tuple[str, ...] = PATTERNS

    @property
    def shape(self) -> tuple[int, int]:
        """The image size as (height, width)."""
        return (self.image_height or self.image_size, self.image_size)

    @property
    def short_side(self) -> int:
        """The shorter image side: object sizes and the relations' margin scale with it."""
        return min(self.shape)

    def images(self, split: str) -> int:
        """Number of images of ``split``."""
        return int(getattr(self, f"images_{split}"))

    def to_dict(self) -> dict[str, Any]:
        """The knobs as plain json-friendly values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.asdict().items()}

    def asdict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line naming the knob) for an out-of-range value."""
        _in_range("image_size", self.image_size, 48, 1024)
        if self.image_height:
            _in_range("image_height", self.image_height, 48, 1024)
        for split in SPLITS:
            _in_range(f"images_{split}", self.images(split), 1 if split == "train" else 0, 10**6)
        _in_range("objects_min", self.objects_min, 1, 10)
        _in_range("objects_max", self.objects_max, self.objects_min, 10)
        _in_range("size_small", self.size_small, 0.1, 0.4)
        _in_range("size_large", self.size_large, 1.3 * self.size_small, 0.5)
        for name in ("clutter", "occlusion", "parts", "lookalike"):
            _in_range(name, getattr(self, name), 0.0, 1.0)
        _in_range("min_visible", self.min_visible, 0.3, 1.0)
        _in_range("relation_depth", self.relation_depth, 0, 2)
        _in_range("ref_share", self.ref_share, 0.01, 1.0)
        _in_range("sentences_min", self.sentences_min, 1, 8)
        _in_range("sentences_max", self.sentences_max, self.sentences_min, 8)
        _in_range("polygons", self.polygons, 0.0, 1.0)
        if self.image_format not in ("png", "jpg"):
            raise ConfigError(
                f"knob 'image_format' = {self.image_format!r}; expected one of: png, jpg"
            )
        _names("colours", self.colours, tuple(COLOURS), minimum=2)
        _names("shapes", self.shapes, SHAPES, minimum=2)
        _names("patterns", self.patterns, PATTERNS, minimum=0)
        if self.parts > 0 and not self.patterns:
            raise ConfigError("knob 'parts' > 0 needs at least one pattern in 'patterns'")
        if self.images_testB > 0 and self.relation_depth == 0:
            raise ConfigError(
                "knob 'images_testB' > 0 needs relation_depth >= 1 (testB holds relational refs)"
            )


def _in_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"knob {name!r} = {value!r} is out of range; expected {lo:g}..{hi:g}")


def _names(name: str, values: tuple[str, ...], valid: tuple[str, ...], minimum: int) -> None:
    unknown = [v for v in values if v not in valid]
    if unknown:
        raise ConfigError(f"knob {name!r}: unknown value {unknown[0]!r}; valid: {', '.join(valid)}")
    if len(set(values)) != len(values) or len(values) < minimum:
        raise ConfigError(
            f"knob {name!r} = {list(values)}: expected at least {minimum} distinct names"
        )


PRESETS: dict[str, SynthConfig] = {
    "demo": SynthConfig(),
    "hard": SynthConfig(
        objects_min=3,
        objects_max=6,
        clutter=1.0,
        occlusion=0.8,
        min_visible=0.5,
        parts=0.85,
        lookalike=0.5,
    ),
    "tiny": SynthConfig(
        image_size=96,
        images_train=12,
        images_val=4,
        images_testA=4,
        images_testB=4,
        objects_max=4,
    ),
    "large": SynthConfig(
        image_size=256,
        images_train=8000,
        images_val=500,
        images_testA=500,
        images_testB=500,
        objects_min=3,
        objects_max=7,
        size_small=0.16,
        size_large=0.28,
        clutter=0.7,
        occlusion=0.6,
        parts=0.6,
        colours=tuple(COLOURS),
    ),
    # RefCOCO's shape (unc splits): 16,994 / 1,500 / 750 / 750 images of 640 x 480, about 2.5
    # referred objects per image and 3 expressions per object, some masks as polygons (as in
    # COCO's instances.json). For the scale rehearsal (docs/scale.md); ``images_*`` overrides
    # give its fractions.
    "refcoco": SynthConfig(
        image_size=640,
        image_height=480,
        images_train=16994,
        images_val=1500,
        images_testA=750,
        images_testB=750,
        objects_min=2,
        objects_max=5,
        size_small=0.16,
        size_large=0.28,
        ref_share=0.8,
        sentences_min=2,
        sentences_max=4,
        polygons=0.5,
        image_format="jpg",
        colours=tuple(COLOURS),
    ),
}
"""The named presets. ``demo`` is the embedded default of ``semires run``."""


def make_config(preset: str = "demo", **overrides: Any) -> SynthConfig:
    """The preset ``preset`` with knob ``overrides`` applied, validated.

    An unknown preset or knob, a value of the wrong type or out of range raises
    :class:`ConfigError` naming it (and listing the valid ones).
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown synthetic preset {preset!r}; valid: {', '.join(PRESETS)}")
    data = PRESETS[preset].asdict()
    unknown = sorted(set(overrides) - set(data))
    if unknown:
        raise ConfigError(f"unknown synthetic knob {unknown[0]!r}; valid: {', '.join(data)}")
    for name, value in overrides.items():
        data[name] = list(value) if isinstance(value, tuple | list) else value
    return load_dataclass(SynthConfig, data)


def knob_names() -> list[str]:
    """All knob names, in declaration order."""
    return [f.name for f in dataclasses.fields(SynthConfig)]


def parse_knob_args(args: list[str]) -> dict[str, Any]:
    """``["--images-train", "50", "--colours", "red,blue"]`` -> ``{"images_train": 50, ...}``.

    Option names are the knob names with ``-`` for ``_`` (case-insensitive); values are parsed
    as YAML scalars, list knobs as comma-separated names. An unknown option is a ConfigError.
    """
    import yaml

    by_option = {name.lower().replace("_", "-"): name for name in knob_names()}
    list_knobs = {"colours", "shapes", "patterns"}
    out: dict[str, Any] = {}
    rest = list(args)
    while rest:
        option = rest.pop(0)
        key, _, inline = option.partition("=")
        name = by_option.get(key.lower().removeprefix("--")) if key.startswith("--") else None
        if name is None:
            valid = ", ".join(f"--{o}" for o in by_option)
            raise ConfigError(f"unknown synth option {option!r}; knobs: {valid}")
        if not inline and not rest:
            raise ConfigError(f"synth option {key!r} needs a value")
        raw = inline or rest.pop(0)
        if name in list_knobs:
            out[name] = [v.strip() for v in raw.split(",") if v.strip()]
        else:
            try:
                out[name] = yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                raise ConfigError(f"synth option {key!r}: cannot parse {raw!r}") from exc
    return out

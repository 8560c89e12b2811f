"""The mask-generator interface, the candidate container and the generator registry.

A generator turns one RGB image into class-agnostic candidate masks ("segment everything",
docs/method.md section 4). Every generator has a ``name``, a ``params()`` dict holding everything
that determines its output (recorded in a store's manifest) and ``generate(image)``.

Generators are registered by name in :data:`GENERATORS` (a
:class:`~semires.utils.registry.Registry`). The package's own are lazy entries whose modules
are imported only when built, so that the optional dependencies (segment-anything, sam2,
scikit-image) are needed only by the generator that uses them. A generator of one's own
registers with one decorator (:func:`register_generator`) and is found by
``semires propose --generator`` once its module is a plugin (``semires --plugin MODULE`` or
``SEMIRES_PLUGINS``)::

    gen = build_generator("classical", scales=(60, 180))
    props = gen.generate(image)           # Proposals
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import numpy as np

from semires.data import masks as mask_ops
from semires.errors import ConfigError
from semires.utils.registry import Registry

RLE = mask_ops.RLE


@dataclass
class Proposals:
    """The candidate masks of one image.

    ``rles`` are COCO compressed RLEs (``{"size": [H, W], "counts": str}``); ``areas`` (int64),
    ``bboxes`` ([K, 4] float32, x y w h), ``scores`` (float32, higher is better) run parallel to
    them, as do the generator's own ``predicted_iou`` / ``stability_score`` where it has them.
    """

    size: tuple[int, int]
    rles: list[RLE] = field(default_factory=list)
    areas: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bboxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    predicted_iou: np.ndarray | None = None
    stability_score: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.size = (int(self.size[0]), int(self.size[1]))
        self.areas = np.asarray(self.areas, np.int64).reshape(-1)
        self.bboxes = np.asarray(self.bboxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        for name in ("predicted_iou", "stability_score"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.asarray(value, np.float32).reshape(-1))
        k = len(self.rles)
        for name in ("areas", "bboxes", "scores", "predicted_iou", "stability_score"):
            value = getattr(self, name)
            if value is not None and len(value) != k:
                raise ValueError(f"Proposals.{name} has {len(value)} rows for {k} masks")
        for rle in self.rles:
            if tuple(rle["size"]) != self.size:
                raise ValueError(f"an RLE of size {rle['size']} in proposals of size {self.size}")

    def __len__(self) -> int:
        return len(self.rles)

    @classmethod
    def from_masks(
        cls,
        masks: np.ndarray,
        scores: np.ndarray,
        predicted_iou: np.ndarray | None = None,
        stability_score: np.ndarray | None = None,
    ) -> Proposals:
        """Build from a [K, H, W] binary stack (areas and boxes computed by pycocotools)."""
        size = (int(masks.shape[1]), int(masks.shape[2]))
        rles = mask_ops.encode_many(masks)
        return cls.from_rles(size, rles, scores, predicted_iou, stability_score)

    @classmethod
    def from_rles(
        cls,
        size: tuple[int, int],
        rles: list[RLE],
        scores: np.ndarray,
        predicted_iou: np.ndarray | None = None,
        stability_score: np.ndarray | None = None,
    ) -> Proposals:
        """Build from RLEs; areas and boxes are computed from them."""
        from pycocotools import mask as mask_utils

        if rles:
            coco = [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in rles]
            # pycocotools 2.0.11 overflows in area() for more than 255 RLEs at once
            areas = np.concatenate(
                [mask_utils.area(coco[i : i + 255]) for i in range(0, len(coco), 255)]
            ).astype(np.int64)
            boxes = mask_utils.toBbox(coco).astype(np.float32)
        else:
            areas, boxes = np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
        return cls(size, list(rles), areas, boxes, scores, predicted_iou, stability_score)

    def masks(self) -> np.ndarray:
        """The candidates decoded at full resolution: [K, H, W] uint8 in {0, 1}."""
        if not self.rles:
            return np.zeros((0, *self.size), np.uint8)
        return mask_ops.decode_many(self.rles)

    def select(self, index: np.ndarray | list[int]) -> Proposals:
        """A new :class:`Proposals` holding the candidates at ``index`` (in that order)."""
        idx = np.asarray(index, np.int64).reshape(-1)

        def pick(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else arr[idx]

        return Proposals(
            self.size,
            [self.rles[i] for i in idx],
            self.areas[idx],
            self.bboxes[idx],
            self.scores[idx],
            pick(self.predicted_iou),
            pick(self.stability_score),
        )

    def sorted_by_score(self) -> Proposals:
        """Candidates in order of decreasing score (ties: larger area first, then original order)."""
        order = np.lexsort((np.arange(len(self)), -self.areas, -self.scores))
        return self.select(order)


class MaskGenerator(ABC):
    """A class-agnostic candidate-mask generator.

    Subclasses set ``name`` and ``config_class`` (a dataclass of every knob with its default),
    take the knobs as keyword arguments and implement :meth:`generate`. Knobs listed in
    ``runtime_knobs`` (device, batch size, file paths) do not change the masks and are left out
    of :meth:`params`, so that a store can be resumed on another device or with a moved file.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    runtime_knobs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **knobs: Any) -> None:
        self.config = make_config(
            self.config_class, knobs, getattr(self, "name", type(self).__name__)
        )

    def params(self) -> dict[str, Any]:
        """Everything that determines the output (the knobs), JSON-serialisable."""
        knobs = dataclasses.asdict(self.config)
        return _jsonable({k: v for k, v in knobs.items() if k not in self.runtime_knobs})

    @abstractmethod
    def generate(self, image: np.ndarray) -> Proposals:
        """Candidates for one (H, W, 3) uint8 RGB image."""


# ---------------------------------------------------------------------------- knobs
def make_config(config_class: type, knobs: dict[str, Any], owner: str) -> Any:
    """Instantiate ``config_class`` from ``knobs``; unknown knobs raise a :class:`ConfigError`."""
    names = [f.name for f in dataclasses.fields(config_class)]
    unknown = sorted(set(knobs) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for generator {owner!r}; "
            f"valid: {', '.join(names)}"
        )
    return config_class(**knobs)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _coerce(text: str, annotation: Any, key: str) -> Any:
    """Convert a ``--set key=value`` string to the type of the knob's annotation."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = typing.get_args(annotation)
        if type(None) in args and text.lower() in ("none", "null", ""):
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(text, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"option {key}: cannot parse {text!r}")
    if origin is tuple:
        (item, *_rest) = typing.get_args(annotation)
        return tuple(_coerce(part.strip(), item, key) for part in text.split(",") if part.strip())
    try:
        if annotation is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return lowered in ("true", "1", "yes")
        if annotation in (int, float, str):
            return annotation(text)
    except ValueError:
        raise ConfigError(f"option {key}: expected {annotation.__name__}, got {text!r}") from None
    raise ConfigError(f"option {key}: cannot be set from the command line")


def parse_knobs(name: str, assignments: list[str]) -> dict[str, Any]:
    """``["points_per_side=16", "bf16=true"]`` -> typed knobs of generator ``name``."""
    cls = generator_class(name)
    hints = typing.get_type_hints(cls.config_class)
    knobs: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        if key not in hints:
            raise ConfigError(
                f"unknown option {key!r} for generator {name!r}; valid: {', '.join(hints)}"
            )
        knobs[key] = _coerce(value.strip(), hints[key], key)
    return knobs


# ---------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class LazyEntry:
    """A registry entry that names its class as ``"module:Class"``: the module is imported when
    the entry is first asked for (the heavy, optional dependencies of ``sam`` / ``sam2`` are
    needed only by the generator that uses them)."""

    target: str

    def load(self) -> Any:
        module_name, _, class_name = self.target.partition(":")
        return getattr(importlib.import_module(module_name), class_name)


class GeneratorRegistry(Registry[Any]):
    """The registered :class:`MaskGenerator` classes by name: classes, or :class:`LazyEntry`
    names of classes imported on first :meth:`get`.

    A generator registers with one decorator (:func:`register_generator`, the same as
    ``GENERATORS.register``), in the package or in the user's own module (loaded with
    ``semires --plugin MODULE`` or ``SEMIRES_PLUGINS``)::

        @register_generator("mine")
        class Mine(MaskGenerator): ...

    The registered name becomes the class's ``name`` (what a store's manifest records) unless
    the class sets its own, which must then be the same.
    """

    def add(self, name: str, obj: Any, *, replace: bool = False) -> None:
        if isinstance(obj, LazyEntry):
            super().add(name, obj, replace=replace)
            return
        _check_generator_class(name, obj)
        super().add(name, obj, replace=replace)
        if "name" not in obj.__dict__:
            obj.name = name

    def add_lazy(self, name: str, target: str) -> None:
        """Register the class ``target`` (``"module:Class"``) under ``name``, unimported."""
        self.add(name, LazyEntry(target))

    def get(self, name: str) -> type[MaskGenerator]:
        """The class registered as ``name`` (imported now if it was a lazy entry); an unknown
        name lists the registered ones."""
        obj = super().get(name)
        if isinstance(obj, LazyEntry):
            obj = obj.load()
            self.add(name, obj, replace=True)
        return obj


def _check_generator_class(name: str, cls: Any) -> None:
    """``cls`` must be a :class:`MaskGenerator` subclass whose own ``name``, if it sets one,
    is ``name``: a :class:`ConfigError` otherwise."""
    if not (isinstance(cls, type) and issubclass(cls, MaskGenerator)):
        raise ConfigError(f"generator {name!r}: {cls!r} is not a MaskGenerator subclass")
    own = cls.__dict__.get("name")
    if own is not None and own != name:
        raise ConfigError(
            f"generator {name!r}: the class {cls.__qualname__} names itself {own!r}; register it "
            f"under that name or drop its name attribute"
        )


#: every generator by name; the package's own are imported on first use
GENERATORS = GeneratorRegistry("generator")
GENERATORS.add_lazy("classical", "semires.proposals.classical:ClassicalGenerator")
GENERATORS.add_lazy("sam", "semires.proposals.sam:SamGenerator")
GENERATORS.add_lazy("sam2", "semires.proposals.sam2:Sam2Generator")


def register_generator(name: str, *, replace: bool = False) -> Any:
    """Class decorator: register a :class:`MaskGenerator` subclass as ``name`` (which becomes
    its ``name``), as :func:`~semires.train.strategies.register_strategy` does for strategies::

        @register_generator("mine")
        class Mine(MaskGenerator): ...
    """
    return GENERATORS.register(name, replace=replace)


def generator_class(name: str) -> type[MaskGenerator]:
    """The class registered under ``name``; an unknown name lists the registered ones."""
    return GENERATORS.get(name)


def build_generator(name: str, **knobs: Any) -> MaskGenerator:
    """Build the generator registered under ``name`` with the given knobs."""
    return generator_class(name)(**knobs)

"""The meaning of a referring expression, and the check that it picks exactly one object.

An expression is generated from a small logical :class:`Form` and only kept when the form,
evaluated on the objects of its image, is *clearly true* of its target and *clearly false* of
every other object. Truth is three-valued (:data:`FALSE`, :data:`MAYBE`, :data:`TRUE`) so that
borderline cases count as ambiguous rather than as a pass:

- a colour word that names an object's second colour (its stripes, outline, handle, dot, or one
  half of a two-tone object) is MAYBE true of it, and so is "with blue stripes" of a blue
  object with stripes of another colour;
- "left of" is TRUE when the object's centre is at least ``margin`` pixels further left than the
  anchor's and the horizontal offset is at least the vertical one, FALSE when it is
  hardly left at all (less than ``margin / 3``, or less than 0.3 times the vertical offset),
  MAYBE in between;
- "leftmost" / "second from the left" need a gap of ``margin`` pixels to the neighbours in
  that order, and no object for which the noun phrase is MAYBE true.

Forms (``depth`` = how many relational steps they take):

- ``attr``     "the small red star"                 (depth 0)
- ``extreme``  "the leftmost star"                  (depth 1)
- ``relation`` "the star left of the blue ring"     (depth 1 + the anchor's depth)
- ``ordinal``  "the second circle from the top"     (depth 2)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FALSE, MAYBE, TRUE = 0, 1, 2

DIRECTIONS: tuple[str, ...] = ("left", "right", "top", "bottom")
"""Directions of extremes and ordinals."""

RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
"""Binary spatial relations: "X left of Y", "X right of Y", "X above Y", "X below Y"."""

MARGIN = 0.08
"""The spatial margin, as a fraction of the image side."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What an expression may talk about: an object's attributes and (amodal) centre in pixels."""

    shape: str
    colour: str
    size: str
    pattern: str
    pattern_colour: str | None
    cx: float
    cy: float

    @classmethod
    def from_attributes(cls, attrs: Mapping[str, Any]) -> Facts:
        """From an annotation's ``attributes`` dict as the generator writes it."""
        cx, cy = attrs["center"]
        return cls(
            shape=attrs["shape"],
            colour=attrs["colour"],
            size=attrs["size"],
            pattern=attrs["pattern"],
            pattern_colour=attrs.get("pattern_colour"),
            cx=float(cx),
            cy=float(cy),
        )


@dataclass(frozen=True, slots=True)
class NounPhrase:
    """A shape with optional size, colour and pattern (with the pattern's colour)."""

    shape: str
    size: str | None = None
    colour: str | None = None
    pattern: str | None = None
    pattern_colour: str | None = None

    cost: int = field(init=False, compare=False, repr=False)
    """Number of concepts mentioned (a proxy for length)."""

    def __post_init__(self) -> None:
        mentioned = (self.size, self.colour, self.pattern, self.pattern_colour)
        object.__setattr__(self, "cost", 1 + sum(v is not None for v in mentioned))

    def match(self, ob: Facts) -> int:
        """How true the phrase is of ``ob`` (FALSE / MAYBE / TRUE)."""
        if ob.shape != self.shape or (self.size is not None and ob.size != self.size):
            return FALSE
        if self.pattern is not None and ob.pattern != self.pattern:
            return FALSE
        if self.pattern == "two-tone" and self.colour is not None:
            both = {self.colour, self.pattern_colour}
            return TRUE if both == {ob.colour, ob.pattern_colour} else FALSE
        if self.pattern_colour is not None and ob.pattern_colour != self.pattern_colour:
            return MAYBE if ob.colour == self.pattern_colour else FALSE
        if self.colour is None:
            return TRUE
        if self.colour == ob.colour:
            return MAYBE if ob.pattern == "two-tone" else TRUE
        return MAYBE if self.colour == ob.pattern_colour else FALSE

    def to_dict(self) -> dict[str, str]:
        named = {"shape": self.shape, "size": self.size, "colour": self.colour}
        named |= {"pattern": self.pattern, "pattern_colour": self.pattern_colour}
        return {k: v for k, v in named.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Form:
    """A referring expression's meaning; see the module docstring for the kinds."""

    kind: str  # attr | extreme | relation | ordinal
    np: NounPhrase
    direction: str | None = None  # a DIRECTIONS entry (extreme, ordinal) or RELATIONS (relation)
    k: int | None = None  # ordinal position, 2 or 3
    anchor: Form | None = None  # the object a relation is relative to
    depth: int = field(init=False, compare=False, repr=False)
    """Relational steps: 0 attr, 1 extreme, 2 ordinal, 1 + the anchor's for a relation."""
    cost: int = field(init=False, compare=False, repr=False)
    """Concepts mentioned: the noun phrase's, +1 extreme, +2 ordinal, +1 + the anchor's."""

    def __post_init__(self) -> None:
        if self.kind == "relation":
            assert self.anchor is not None
            depth, extra = 1 + self.anchor.depth, 1 + self.anchor.cost
        else:
            depth, extra = {"attr": (0, 0), "extreme": (1, 1), "ordinal": (2, 2)}[self.kind]
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "cost", self.np.cost + extra)

    def to_dict(self) -> dict[str, Any]:
        """A json-friendly dict (the inverse of :meth:`from_dict`)."""
        out: dict[str, Any] = {"kind": self.kind, "np": self.np.to_dict()}
        if self.direction is not None:
            out["direction"] = self.direction
        if self.k is not None:
            out["k"] = self.k
        if self.anchor is not None:
            out["anchor"] = self.anchor.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Form:
        anchor = data.get("anchor")
        return cls(
            kind=data["kind"],
            np=NounPhrase(**data["np"]),
            direction=data.get("direction"),
            k=data.get("k"),
            anchor=cls.from_dict(anchor) if anchor is not None else None,
        )


# ---------------------------------------------------------------------- spatial truth
def relation_truth(rel: str, ob: Facts, anchor: Facts, margin: float) -> int:
    """How true "``ob`` is <rel> ``anchor``" is (``rel`` in :data:`RELATIONS`)."""
    dx, dy = anchor.cx - ob.cx, anchor.cy - ob.cy  # > 0: ob is left of / above the anchor
    primary, secondary = {"left": (dx, dy), "right": (-dx, dy), "above": (dy, dx)}.get(
        rel, (-dy, dx)
    )
    secondary = abs(secondary)
    if primary >= margin and primary >= secondary:
        return TRUE
    if primary <= margin / 3 or primary <= 0.3 * secondary:
        return FALSE
    return MAYBE


def _coordinate(direction: str, ob: Facts) -> float:
    """Sort key: smallest first in ``direction`` (leftmost, rightmost, topmost, bottommost)."""
    return {"left": ob.cx, "right": -ob.cx, "top": ob.cy}.get(direction, -ob.cy)


def _ordered(
    direction: str, k: int, truth: list[int], objects: Sequence[Facts], margin: float
) -> list[int]:
    """TRUE for the k-th object (1-based) of the TRUE ones in ``direction``, if clearly so."""
    if MAYBE in truth:
        return [min(t, MAYBE) for t in truth]
    members = sorted(
        (_coordinate(direction, objects[i]), i) for i, t in enumerate(truth) if t == TRUE
    )
    need = 2 if k == 1 else k + 1  # an ordinal must not just be the other extreme
    if len(members) < need:
        return [min(t, MAYBE) for t in truth]
    key, chosen = members[k - 1]
    before = members[k - 2][0] if k > 1 else None
    after = members[k][0]
    if after - key < margin or (before is not None and key - before < margin):
        return [min(t, MAYBE) for t in truth]
    return [TRUE if i == chosen else FALSE for i in range(len(objects))]


# ---------------------------------------------------------------------- evaluation
class World:
    """The objects of one image, with the truth of noun phrases and relations cached."""

    def __init__(self, objects: Sequence[Facts], margin: float) -> None:
        self.objects = list(objects)
        self.margin = margin
        self._phrases: dict[NounPhrase, list[int]] = {}
        self._resolved: dict[Form, int | None] = {}
        self._anchors: dict[tuple[int, int], tuple[int, Form] | None] = {}
        self._relations = {
            rel: [[relation_truth(rel, ob, anchor, margin) for anchor in objects] for ob in objects]
            for rel in RELATIONS
        }

    def phrase(self, np_: NounPhrase) -> list[int]:
        """The truth of a noun phrase for every object."""
        truth = self._phrases.get(np_)
        if truth is None:
            truth = self._phrases[np_] = [np_.match(ob) for ob in self.objects]
        return truth

    def evaluate(self, form: Form) -> list[int]:
        """The truth of ``form`` for every object."""
        truth = self.phrase(form.np)
        if form.kind == "attr":
            return truth
        if form.kind in ("extreme", "ordinal"):
            assert form.direction is not None
            k = 1 if form.kind == "extreme" else form.k
            assert k is not None
            return _ordered(form.direction, k, truth, self.objects, self.margin)
        assert form.anchor is not None and form.direction is not None
        anchor = self.resolve(form.anchor)
        if anchor is None:
            return [min(t, MAYBE) for t in truth]
        rel = form.direction
        return [
            FALSE if i == anchor else min(t, self.relation(rel, i, anchor))
            for i, t in enumerate(truth)
        ]

    def relation(self, rel: str, index: int, anchor: int) -> int:
        """How true "object ``index`` is <rel> object ``anchor``" is."""
        return self._relations[rel][index][anchor]

    def anchor(self, index: int, max_depth: int) -> tuple[int, Form] | None:
        """(index, the cheapest form that describes object ``index``) for use as an anchor.

        The form is an attribute form, or at depth 2 an extreme form; None if neither exists.
        """
        key = (index, max_depth)
        if key not in self._anchors:
            self._anchors[key] = self._find_anchor(index, max_depth)
        return self._anchors[key]

    def _find_anchor(self, index: int, max_depth: int) -> tuple[int, Form] | None:
        phrases = noun_phrases(self.objects[index])
        kinds = [[Form("attr", p) for p in phrases]]
        if max_depth >= 2:
            kinds.append(
                [Form("extreme", p, d) for p in phrases if p.cost <= 2 for d in DIRECTIONS]
            )
        for forms in kinds:
            best = next((f for f in forms if self.resolve(f) == index), None)
            if best is not None:
                return index, best
        return None

    def resolve(self, form: Form) -> int | None:
        """The index of the one object ``form`` clearly refers to, or None."""
        if form in self._resolved:
            return self._resolved[form]
        found = self._resolved[form] = unique(self.evaluate(form))
        return found


def unique(truth: Sequence[int]) -> int | None:
    """The index of the one TRUE entry when every other entry is FALSE, else None."""
    chosen = [i for i, t in enumerate(truth) if t == TRUE]
    if len(chosen) != 1 or any(t == MAYBE for t in truth):
        return None
    return chosen[0]


def resolve(form: Form, objects: Sequence[Facts], margin: float) -> int | None:
    """The index of the one object ``form`` clearly refers to in ``objects``, or None."""
    return World(objects, margin).resolve(form)


# ---------------------------------------------------------------------- enumeration
def noun_phrases(ob: Facts) -> list[NounPhrase]:
    """Every noun phrase that is TRUE of ``ob``, cheapest first.

    A two-tone object's colour is only ever named together with its second colour
    ("red and blue"), since "the red circle" would be MAYBE true of it.
    """
    patterns: list[tuple[str | None, str | None]] = [(None, None), (ob.pattern, None)]
    if ob.pattern_colour is not None:
        patterns.append((ob.pattern, ob.pattern_colour))
    out = []
    for size in (None, ob.size):
        for colour in (None, ob.colour):
            for pattern, pattern_colour in patterns:
                two_tone = ob.pattern == "two-tone"
                if two_tone and (colour is not None) != (pattern_colour is not None):
                    continue
                out.append(NounPhrase(ob.shape, size, colour, pattern, pattern_colour))
    return sorted(out, key=lambda np_: np_.cost)


def valid_forms(
    world: World, target: int, max_depth: int, slack: int = 2, max_np_cost: int = 3
) -> list[Form]:
    """The forms of depth <= ``max_depth`` that clearly refer to object ``target``.

    Only forms at most ``slack`` concepts longer than the shortest valid one are returned (the
    generator uses no others), cheapest first. Relational forms (extremes, relations,
    ordinals) use noun phrases of at most ``max_np_cost`` concepts; a relation's anchor is
    described by its cheapest attribute form or, at depth 2, its cheapest extreme form.
    """
    found: list[Form] = []
    for cost, _, _, make in sorted(_candidates(world, target, max_depth, max_np_cost)):
        if found and cost > found[0].cost + slack:
            break
        form = make()
        if world.resolve(form) == target:
            found.append(form)
    return found


_Candidate = tuple[int, int, int, Callable[[], Form]]  # cost, depth, sequence number, maker


def _candidates(world: World, target: int, max_depth: int, max_np_cost: int) -> list[_Candidate]:
    """Every candidate form for ``target`` as (cost, depth, n, maker), built lazily."""
    out: list[_Candidate] = []

    def add(cost: int, depth: int, *args: Any, **kwargs: Any) -> None:
        out.append((cost, depth, len(out), functools.partial(Form, *args, **kwargs)))

    phrases = noun_phrases(world.objects[target])
    for p in phrases:
        add(p.cost, 0, "attr", p)
    if max_depth == 0:
        return out
    anchors = [world.anchor(i, max_depth) for i in range(len(world.objects)) if i != target]
    for p in (p for p in phrases if p.cost <= max_np_cost):
        for d in DIRECTIONS:
            add(p.cost + 1, 1, "extreme", p, d)
            for k in (2, 3) if max_depth >= 2 else ():
                add(p.cost + 2, 2, "ordinal", p, d, k)
        for found in anchors:
            if found is None:
                continue
            index, anchor = found
            for rel in RELATIONS:
                if world.relation(rel, target, index) == TRUE:
                    add(
                        p.cost + 1 + anchor.cost,
                        1 + anchor.depth,
                        "relation",
                        p,
                        rel,
                        anchor=anchor,
                    )
    return out

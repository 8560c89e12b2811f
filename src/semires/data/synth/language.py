"""Surface language: turning a :class:`~.semantics.Form` into varied English sentences.

The vocabulary is small on purpose (shape, colour, size, pattern and spatial words, with a few
synonyms each) so that a small model can learn it from a few hundred labelled expressions, while
word order and phrasing vary ("the small red star left of the blue ring", "left of the blue
ring, the little red star", "the star that is red, on the far left").

:func:`concepts` reads the concepts back from a sentence; the generator checks that every
sentence mentions exactly the concepts of its form.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from semires.data.index import tokenize
from semires.data.synth.catalog import COLOURS
from semires.data.synth.semantics import Form, NounPhrase

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "star": ("star",),
    "ring": ("ring", "donut"),
    "cross": ("cross", "plus sign"),
    "heart": ("heart",),
    "diamond": ("diamond", "rhombus"),
}
COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {"purple": ("purple", "violet")}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big"),
}

# pattern -> (adjectives, phrases after the noun); "{c}" is the pattern's colour.
PATTERN_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "plain": (("plain", "solid"), ("with no pattern",)),
    "striped": (("striped",), ("with stripes",)),
    "two-tone": (("two-tone", "two-coloured"), ("in two colours",)),
    "outlined": (("outlined",), ("with an outline", "with a border")),
    "handle": ((), ("with a handle",)),
    "dotted": (("dotted",), ("with a dot", "with a dot in the middle")),
}
PATTERN_COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "striped": ("with {c} stripes",),
    "outlined": ("with a {c} outline", "with a {c} border", "with a {c} rim"),
    "handle": ("with a {c} handle",),
    "dotted": ("with a {c} dot", "with a {c} centre", "with a {c} dot in the middle"),
}
TWO_TONE_WORDS: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("{a} and {b}",),
    ("that is half {a} and half {b}", "in {a} and {b}"),
)

RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("left of", "to the left of", "on the left of"),
    "right": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over", "higher than"),
    "below": ("below", "under", "beneath", "lower than"),
}
# direction -> (adjectives after the article, phrases after the noun)
EXTREME_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "left": (("leftmost",), ("on the far left", "furthest to the left")),
    "right": (("rightmost",), ("on the far right", "furthest to the right")),
    "top": (("topmost", "highest", "uppermost"), ("at the top", "nearest the top")),
    "bottom": (("bottommost", "lowest"), ("at the bottom", "nearest the bottom")),
}
ORDINAL_WORDS: dict[int, str] = {2: "second", 3: "third"}

_COLOUR_WORDS: dict[str, str] = {w: c for c in COLOURS for w in COLOUR_SYNONYMS.get(c, (c,))}

# token -> concept, for reading concepts back (see :func:`concepts`)
_CONCEPT: dict[str, str] = {
    **{w: shape for shape, words in SHAPE_WORDS.items() for w in words if " " not in w},
    "plus": "cross",
    "violet": "purple",
    **{w: size for size, words in SIZE_WORDS.items() for w in words},
    "plain": "plain",
    "solid": "plain",
    "pattern": "plain",
    "striped": "striped",
    "stripes": "striped",
    "tone": "two-tone",
    "coloured": "two-tone",
    "colours": "two-tone",
    "half": "two-tone",
    "outlined": "outlined",
    "outline": "outlined",
    "border": "outlined",
    "rim": "outlined",
    "handle": "handle",
    "dotted": "dotted",
    "dot": "dotted",
    "centre": "dotted",
    "leftmost": "left",
    "left": "left",
    "rightmost": "right",
    "right": "right",
    "topmost": "top",
    "highest": "top",
    "uppermost": "top",
    "top": "top",
    "bottommost": "bottom",
    "lowest": "bottom",
    "bottom": "bottom",
    "above": "above",
    "over": "above",
    "higher": "above",
    "below": "below",
    "under": "below",
    "beneath": "below",
    "lower": "below",
    "second": "2",
    "third": "3",
}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _colour(rng: np.random.Generator, colour: str) -> str:
    return _pick(rng, COLOUR_SYNONYMS.get(colour, (colour,)))


def noun_phrase(np_: NounPhrase, rng: np.random.Generator, *, concise: bool, clauses: bool) -> str:
    """The phrase without article: adjectives, the shape word, phrases after it.

    ``concise`` puts every attribute before the noun in the usual order; ``clauses`` allows
    "that is red" style relative clauses, used only when no "with ..." phrase follows the noun
    (so that "the heart with a handle that is small" cannot be read as a small handle).
    """
    pattern_pre: list[str] = []
    post: list[str] = []
    colour = np_.colour
    if np_.pattern == "two-tone" and colour is not None:
        assert np_.pattern_colour is not None
        a, b = _colour(rng, colour), _colour(rng, np_.pattern_colour)
        if not concise and rng.random() < 0.5:
            a, b = b, a
        adjectives, phrases = TWO_TONE_WORDS
        use_adjective = concise or rng.random() < 0.6
        (pattern_pre if use_adjective else post).append(
            _pick(rng, adjectives if use_adjective else phrases).format(a=a, b=b)
        )
        colour = None
    elif np_.pattern is not None:
        _place_pattern(np_, rng, concise, pattern_pre, post)
    words = []
    if np_.size is not None:
        words.append(_pick(rng, SIZE_WORDS[np_.size]))
    if colour is not None:
        words.append(_colour(rng, colour))
    allow_clause = clauses and not concise and not post
    clause = [w for w in words if allow_clause and rng.random() < 0.3]
    pre = [w for w in words if w not in clause] + pattern_pre
    if not concise and len(pre) > 1 and rng.random() < 0.2:
        pre[-1], pre[-2] = pre[-2], pre[-1]
    noun = np_.shape if concise else _pick(rng, SHAPE_WORDS[np_.shape])
    out = [*pre, noun, *post]
    if clause:
        out.append("that is " + " and ".join(clause))
    return " ".join(out)


def _place_pattern(
    np_: NounPhrase, rng: np.random.Generator, concise: bool, pre: list[str], post: list[str]
) -> None:
    assert np_.pattern is not None
    if np_.pattern_colour is not None:
        colour = _colour(rng, np_.pattern_colour)
        post.append(_pick(rng, PATTERN_COLOUR_WORDS[np_.pattern]).format(c=colour))
        return
    adjectives, phrases = PATTERN_WORDS[np_.pattern]
    if adjectives and (concise or rng.random() < 0.5):
        pre.append(adjectives[0] if concise else _pick(rng, adjectives))
    else:
        post.append(phrases[0] if concise else _pick(rng, phrases))


def realise(form: Form, rng: np.random.Generator, *, concise: bool = False) -> str:
    """One English sentence for ``form``; ``concise`` gives the plainest wording."""
    return _AN.sub("an ", _realise(form, rng, concise, clauses=True))


_AN = re.compile(r"\ba (?=[aeiou])")


def _realise(form: Form, rng: np.random.Generator, concise: bool, clauses: bool) -> str:
    """``clauses`` allows relative clauses in an attribute form (not in a relation's anchor)."""
    article = "the " if concise or rng.random() < 0.8 else ""
    if form.kind == "attr":
        return article + noun_phrase(form.np, rng, concise=concise, clauses=clauses)
    body = noun_phrase(form.np, rng, concise=concise, clauses=False)
    if form.kind == "extreme":
        assert form.direction is not None
        adjectives, phrases = EXTREME_WORDS[form.direction]
        if concise or rng.random() < 0.5:
            return f"the {adjectives[0] if concise else _pick(rng, adjectives)} {body}"
        return f"{article}{body} {_pick(rng, phrases)}"
    if form.kind == "ordinal":
        assert form.direction is not None and form.k is not None
        nth, side = ORDINAL_WORDS[form.k], f"from the {form.direction}"
        if concise or rng.random() < 0.6:
            return f"{article}{nth} {body} {side}"
        return f"{article}{body} {nth} {side}"
    assert form.anchor is not None and form.direction is not None
    words = RELATION_WORDS[form.direction]
    relation = words[0] if concise else _pick(rng, words)
    anchor = _realise(form.anchor, rng, concise, clauses=False)
    if not anchor.startswith("the "):
        anchor = "the " + anchor
    style = 0 if concise else int(rng.integers(4))
    if style == 0:
        return f"{article}{body} {relation} {anchor}"
    if style == 1:
        return f"{article}{body} that is {relation} {anchor}"
    if style == 2:
        return f"{article}{body}, {relation} {anchor}"
    return f"{relation} {anchor}, {article}{body}"


# ---------------------------------------------------------------------- reading back
def form_concepts(form: Form) -> set[str]:
    """The concepts a sentence of ``form`` must mention (see :func:`concepts`)."""
    np_ = form.np
    out = {np_.shape}
    out |= {v for v in (np_.size, np_.colour, np_.pattern, np_.pattern_colour) if v is not None}
    if form.direction is not None:
        out.add(form.direction)
    if form.k is not None:
        out.add(str(form.k))
    if form.anchor is not None:
        out |= form_concepts(form.anchor)
    return out


def concepts(sentence: str) -> set[str]:
    """The concepts a sentence mentions: shapes, colours, sizes, patterns, directions, ordinals.

    Two colours joined by "and" ("red and blue") name a two-tone object.
    """
    tokens = tokenize(sentence)
    colours = _COLOUR_WORDS
    out = set()
    for i, token in enumerate(tokens):
        if token in colours:
            out.add(colours[token])
            if i + 2 < len(tokens) and tokens[i + 1] == "and" and tokens[i + 2] in colours:
                out.add("two-tone")
        elif token in _CONCEPT:
            out.add(_CONCEPT[token])
    return out


# ---------------------------------------------------------------------- choosing sentences
def describe(forms: Sequence[Form], n: int, rng: np.random.Generator) -> list[tuple[Form, str]]:
    """Up to ``n`` distinct (form, sentence) pairs for one object from its valid ``forms``.

    The first is a shortest form (fewest concepts, then fewest relational steps) in its plainest
    wording. The others are paraphrases: other forms at most two concepts longer, taken in turn
    from each kind (attributes, extremes, relations, ordinals) so that every kind gets used,
    then other wordings of the forms already used.
    """
    if not forms:
        return []
    cheapest = min((f.cost, f.depth) for f in forms)
    shortest = [f for f in forms if (f.cost, f.depth) == cheapest]
    first = shortest[int(rng.integers(len(shortest)))]
    out = [(first, _checked(first, realise(first, rng, concise=True)))]
    queue = _round_robin([f for f in forms if f is not first and f.cost <= cheapest[0] + 2], rng)
    used = [first]
    seen = {out[0][1]}
    for _ in range(8 * n):
        if len(out) >= n:
            break
        form = queue.pop(0) if queue else used[int(rng.integers(len(used)))]
        text = _checked(form, realise(form, rng))
        if text not in seen:
            seen.add(text)
            used.append(form)
            out.append((form, text))
    return out


def _checked(form: Form, text: str) -> str:
    """``text``, after making sure it mentions exactly the concepts of ``form``."""
    if concepts(text) != form_concepts(form):
        raise RuntimeError(f"sentence {text!r} does not express {form}")
    return text


def _round_robin(forms: list[Form], rng: np.random.Generator) -> list[Form]:
    """``forms`` shuffled, then interleaved by kind (kinds in random order)."""
    by_kind: dict[str, list[Form]] = {}
    for i in rng.permutation(len(forms)):
        by_kind.setdefault(forms[int(i)].kind, []).append(forms[int(i)])
    groups = [by_kind[k] for k in sorted(by_kind)]
    groups = [groups[int(i)] for i in rng.permutation(len(groups))]
    out = []
    while any(groups):
        for group in groups:
            if group:
                out.append(group.pop(0))
    return out

"""Text-aligned horizontal flips: the image mirrored, the expression's left and right swapped.

LAVT and SemiRES never flip, because a mirrored image makes "the man on the left" wrong. A flip
is right again when the expression's horizontal words are swapped with it: "the leftmost star"
becomes "the rightmost star", "second from the left" "second from the right", "left of the ring"
"right of the ring". Vertical words ("top", "above", "upright") and everything else stay.

:func:`flip_sentence` swaps whole words only, by a table (:data:`SWAPS`), keeping each word's
capitalisation and the text between words as it was:

- ``left`` <-> ``right`` and their forms with a suffix (``leftmost``, ``leftest``, ``leftside``,
  ``leftish``, ``lefthand``), written as one word or with a hyphen (``left-most``);
- the compounds RefCOCO's annotators type without a space (``topleft``, ``bottomright``,
  ``upperleft``, ``lowerright``, ``farleft``, ``onright``);
- ``lft`` / ``rt`` are not swapped (ambiguous abbreviations), nor ``bright``, ``upright``,
  ``alright``, ``copyright`` (whole words only).

What this cannot know: "right" as an adverb ("right next to the cup") or "left" as a verb ("the
cup left on the table") is swapped too. On the SemiRES RefCOCO json (80,765 words of train / val
/ test expressions) ``left`` / ``right`` are 13.3% of all words and the swapped forms above
another 0.2%; docs/results.md ("Text-aligned flips") counts them. The synthetic grammar's
horizontal words are all in the table (``left of``, ``leftmost``, ``on the far left``,
``furthest to the left``, ``second from the left`` and the ``right`` forms).
"""

from __future__ import annotations

import re

import torch

_SUFFIXES = ("", "most", "est", "side", "ish", "hand", "-most", "-hand", "-side")
_PREFIXES = ("", "top", "bottom", "upper", "lower", "far", "on", "top-", "bottom-", "far-")

#: lower-case word -> its mirror image (symmetric: ``SWAPS[SWAPS[w]] == w``)
SWAPS: dict[str, str] = {}
for _pre in _PREFIXES:
    for _suf in _SUFFIXES:
        SWAPS[f"{_pre}left{_suf}"] = f"{_pre}right{_suf}"
        SWAPS[f"{_pre}right{_suf}"] = f"{_pre}left{_suf}"

# a word: letters and inner hyphens ("left-most"); everything else is kept as it is
_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")


def _swap(match: re.Match[str]) -> str:
    word = match.group(0)
    mirror = SWAPS.get(word.lower())
    if mirror is None:
        return word
    if word.isupper() and len(word) > 1:
        return mirror.upper()
    if word[0].isupper():
        return mirror[0].upper() + mirror[1:]
    return mirror


def flip_sentence(sentence: str) -> str:
    """The expression of the mirrored image: horizontal words swapped (see the module)."""
    return _WORD.sub(_swap, sentence)


def spatial_words(sentence: str) -> int:
    """How many words of ``sentence`` a flip swaps."""
    return sum(1 for m in _WORD.finditer(sentence) if m.group(0).lower() in SWAPS)


def flip_image(x: torch.Tensor) -> torch.Tensor:
    """An image [..., H, W] (or a mask, or a probability map) mirrored left to right."""
    return torch.flip(x, dims=(-1,))

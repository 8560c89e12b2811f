"""The synthetic referring-expression benchmark (the embedded default's data).

Images of several coloured shapes, some made of two visibly different parts (two-tone, striped,
outlined, with a handle or a dot), some touching or occluding each other, on textured, cluttered
backgrounds; each referred object has 1-4 unambiguous expressions that use attributes and
spatial relations. Written in the refer layout (see :mod:`.generate`); ``docs/synthetic.md``
describes the knobs, presets and splits.

    >>> from semires.data.synth import synthesize, load
    >>> root = synthesize("data/synth", preset="tiny", seed=0)   # doctest: +SKIP
    >>> index = load(root)                                        # doctest: +SKIP
"""

from semires.data.synth.config import PRESETS, SPLITS, SynthConfig, make_config
from semires.data.synth.generate import (
    DATASET,
    SPLIT_BY,
    VERSION,
    build,
    generate_sample,
    is_complete,
    load,
    read_meta,
    synthesize,
)
from semires.data.synth.semantics import Facts, Form, resolve

__all__ = [
    "DATASET",
    "PRESETS",
    "SPLITS",
    "SPLIT_BY",
    "VERSION",
    "Facts",
    "Form",
    "SynthConfig",
    "build",
    "generate_sample",
    "is_complete",
    "load",
    "make_config",
    "read_meta",
    "resolve",
    "synthesize",
]

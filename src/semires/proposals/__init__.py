"""Class-agnostic candidate masks, computed once per training image (docs/method.md section 4).

- :mod:`.base`      the :class:`MaskGenerator` interface, :class:`Proposals`, the registry
  (``classical``, ``sam``, ``sam2``; each generator's module is imported when it is built);
- :mod:`.classical` a weight-free generator (scikit-image hierarchical grouping; CPU);
- :mod:`.sam`, :mod:`.sam2` Segment Anything (1 and 2) automatic mask generators;
- :mod:`.store`     the sharded COCO-RLE store with an index and a manifest;
- :mod:`.decode`    fast decoding of a whole image's RLEs straight to the training size;
- :mod:`.generate`  resumable, parallel and distributed generation of a store;
- :mod:`.quality`   the best-IoU / CPI-union report; :mod:`.show` figures.
"""

from __future__ import annotations

from semires.proposals.base import (
    GENERATORS,
    MaskGenerator,
    Proposals,
    build_generator,
    parse_knobs,
)
from semires.proposals.generate import generate_store, select_images
from semires.proposals.store import ProposalStore, verify_store

__all__ = [
    "GENERATORS",
    "MaskGenerator",
    "ProposalStore",
    "Proposals",
    "build_generator",
    "generate_store",
    "parse_knobs",
    "select_images",
    "verify_store",
]

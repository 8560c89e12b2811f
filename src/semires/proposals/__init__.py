"""Class-agnostic candidate masks, computed once per training image (docs/method.md section 4).

- :mod:`.base`         the :class:`MaskGenerator` interface, :class:`Proposals`, the registry
  :data:`GENERATORS` (``classical``, ``sam``, ``sam2`` imported when built; one's own with
  ``@register_generator(name)`` in a plugin module);
- :mod:`.classical`    a weight-free generator (scikit-image hierarchical grouping; CPU);
- :mod:`.sam`, :mod:`.sam2` Segment Anything (1 and 2) automatic mask generators;
- :mod:`.store`        :class:`ProposalStore`, random access to a store by image id;
- :mod:`.store_format` the on-disk format: sharded COCO-RLE records, index, manifest;
- :mod:`.checks`       is a store for these images (ids, sizes, file fingerprints)?
- :mod:`.verify`       :func:`verify_store`, every byte of a store;
- :mod:`.decode`       fast decoding of a whole image's RLEs straight to the training size;
- :mod:`.generate`     resumable, parallel and distributed generation of a store;
- :mod:`.importer`     :func:`import_store`, masks made elsewhere with SAM / SAM 2 (amg.py's
  PNG folders or RLE json, COCO-style json) into a store, resumable;
- :mod:`.show`         figures.

The best-IoU / CPI-union report applies the training's rule, so it lives above this package:
:mod:`semires.train.proposal_quality`.
"""

from __future__ import annotations

from semires.proposals.base import (
    GENERATORS,
    MaskGenerator,
    Proposals,
    build_generator,
    parse_knobs,
    register_generator,
)
from semires.proposals.generate import generate_store, select_images
from semires.proposals.importer import import_store
from semires.proposals.store import ProposalStore, verify_store

__all__ = [
    "GENERATORS",
    "MaskGenerator",
    "ProposalStore",
    "Proposals",
    "build_generator",
    "generate_store",
    "import_store",
    "parse_knobs",
    "register_generator",
    "select_images",
    "verify_store",
]

"""SemiRES: semi-supervised referring expression segmentation with SAM-guided pseudo-labels.

>>> import semires
>>> seg = semires.load("runs/demo/cpi/best.pt")                     # doctest: +SKIP
>>> mask = seg.predict("photo.png", "the red star left of the ring")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from semires.version import __version__

if TYPE_CHECKING:
    from pathlib import Path

    from semires.evaluate.predict import Segmenter


def load(checkpoint: str | Path, device: str = "auto") -> Segmenter:
    """Load a trained checkpoint for prediction (see :class:`semires.evaluate.predict.Segmenter`)."""
    from semires.evaluate.predict import load as _load

    return _load(checkpoint, device=device)


__all__ = ["__version__", "load"]

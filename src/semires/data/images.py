"""Reading images of any common mode as RGB uint8 arrays."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from semires.errors import DataError, missing


def to_rgb_array(im: Image.Image, source: str | Path = "<image>") -> np.ndarray:
    """Convert a PIL image of any mode to an (H, W, 3) uint8 RGB array.

    Grayscale (L), palette (P), RGBA / LA (alpha dropped, composited on black), CMYK and 16-bit
    or 32-bit integer / float grayscale (I;16, I, F: rescaled by the type's range) are accepted.
    """
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        if mode.startswith("I;16"):
            arr = arr / 65535.0
        else:
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        gray = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB; a clear :class:`DataError` if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise missing(path, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return to_rgb_array(im, path)
    except _UNREADABLE as exc:
        raise DataError(f"cannot decode image {path}: {_one_line(exc)}") from exc


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    path = Path(path)
    if not path.is_file():
        raise missing(path, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # pixels not read
            with Image.open(path) as im:
                w, h = im.size
    except _UNREADABLE as exc:
        raise DataError(f"cannot decode image {path}: {_one_line(exc)}") from exc
    return h, w


#: what PIL raises on a truncated, corrupt, unknown or absurdly large image file
_UNREADABLE = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombWarning,
    Image.DecompressionBombError,
)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

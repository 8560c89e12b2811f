"""Binary masks as COCO run-length encodings (pycocotools), plus mask file I/O.

Conventions: a decoded mask is a ``numpy.ndarray`` of shape (H, W) and dtype ``uint8`` with
values in {0, 1}. An RLE is the compressed COCO dict ``{"size": [H, W], "counts": str}``
(``counts`` stored as ``str`` so that it is JSON-serialisable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from semires.errors import DataError, missing

RLE = dict[str, Any]


def encode(mask: np.ndarray) -> RLE:
    """Encode one (H, W) binary mask as a compressed RLE with ``str`` counts."""
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": rle["counts"].decode("ascii"),
    }


def encode_many(masks: np.ndarray) -> list[RLE]:
    """Encode an (N, H, W) stack of binary masks in one pycocotools call."""
    if masks.ndim != 3:
        raise ValueError(f"expected an (N, H, W) stack, got shape {masks.shape}")
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(
        np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8, copy=False))
    )
    return [
        {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}
        for r in rles
    ]


def _to_coco(rle: RLE) -> dict[str, Any]:
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE (e.g. COCO crowd annotations)
        h, w = rle["size"]
        return mask_utils.frPyObjects(rle, h, w)
    return {
        "size": list(rle["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }


def decode(rle: RLE) -> np.ndarray:
    """Decode one RLE (compressed or uncompressed counts) to an (H, W) uint8 mask."""
    return np.ascontiguousarray(mask_utils.decode(_to_coco(rle)))


def decode_many(rles: list[RLE]) -> np.ndarray:
    """Decode RLEs of one common size to an (N, H, W) uint8 stack."""
    if not rles:
        raise ValueError("decode_many needs at least one RLE (the size is unknown otherwise)")
    stacked = mask_utils.decode([_to_coco(r) for r in rles])
    return np.ascontiguousarray(stacked.transpose(2, 0, 1))


def area(rle: RLE) -> int:
    return int(mask_utils.area(_to_coco(rle)))


def bbox(rle: RLE) -> list[float]:
    """[x, y, w, h] of the mask's extent."""
    return [float(v) for v in mask_utils.toBbox(_to_coco(rle))]


def from_segmentation(segmentation: Any, height: int, width: int) -> RLE:
    """A COCO ``segmentation`` field (polygon list, uncompressed or compressed RLE) as an RLE.

    A malformed one (an RLE whose counts do not cover its size, a polygon with a non-finite
    coordinate) is a ValueError saying what is wrong (see :func:`segmentation_problem`)."""
    problem = segmentation_problem(segmentation, None)
    if problem is not None:
        raise ValueError(problem)
    if isinstance(segmentation, list):
        if not segmentation:
            raise ValueError("empty polygon list")
        rles = mask_utils.frPyObjects([list(map(float, p)) for p in segmentation], height, width)
        merged = mask_utils.merge(rles)
        return {
            "size": [int(merged["size"][0]), int(merged["size"][1])],
            "counts": merged["counts"].decode("ascii"),
        }
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        coco = _to_coco(segmentation)
        counts = coco["counts"]
        return {
            "size": [int(coco["size"][0]), int(coco["size"][1])],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
        }
    raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")


def read_mask_file(path: str | Path) -> np.ndarray:
    """Read a binary mask from ``.npy`` or an image file (PNG ...) as (H, W) uint8 in {0, 1}.

    A ``.npy`` mask is a 2-D array; PNG masks may be stored as 0/1 or 0/255, grey or as a colour
    image whose channels agree. Anything else (not an array, a pickle, empty, several values, the
    wrong number of dimensions) is rejected with a one-line :class:`DataError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise missing(path, "mask file")
    npy = path.suffix.lower() == ".npy"
    try:
        if npy:
            arr = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im)
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # an object array: numpy's advice would be unsafe
            raise DataError(
                f"cannot read mask file {path}: it holds Python objects (a pickle), not a "
                "numeric array; masks are read without unpickling"
            ) from exc
        raise DataError(f"cannot read mask file {path}: {_one_line(exc)}") from exc
    except Exception as exc:
        raise DataError(f"cannot read mask file {path}: {_one_line(exc)}") from exc
    if not npy and arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        # A colour PNG of a binary mask: every channel identical (alpha ignored).
        rgb = arr[..., : min(3, arr.shape[2])]
        if not (rgb == rgb[..., :1]).all():
            raise DataError(
                f"mask file {path}: expected a single-channel binary mask, got a colour image"
            )
        arr = rgb[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(
            f"mask file {path}: expected a non-empty 2-D mask, got shape {tuple(arr.shape)}"
        )
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"mask file {path}: expected a numeric 0/1 mask, got dtype {arr.dtype}")
    values = np.unique(arr)
    if not set(values.tolist()) <= {0, 1} and not set(values.tolist()) <= {0, 255}:
        shown = values[:6].tolist()
        raise DataError(f"mask file {path}: expected binary values (0/1 or 0/255), found {shown}")
    return (arr > 0).astype(np.uint8)


def mask_file_size(path: str | Path) -> tuple[int, int] | None:
    """(height, width) of a mask file from its header (``.npy`` or an image file), without
    reading the pixels; None when the header gives no 2-D size (:func:`read_mask_file` then
    says what is wrong with the file)."""
    path = Path(path)
    if not path.is_file():
        raise missing(path, "mask file")
    if path.suffix.lower() != ".npy":
        from semires.data.images import image_size

        return image_size(path)
    from numpy.lib import format as npy

    try:
        with open(path, "rb") as fh:
            version = npy.read_magic(fh)
            read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, _ = read(fh)
    except Exception:  # a version-3 or broken header: read_mask_file reports on the file
        return None
    return (int(shape[0]), int(shape[1])) if len(shape) == 2 else None


def validate_mask(rle: Any, image_size: tuple[int, int] | None, where: str) -> Any:
    """Check an object's mask against its image; returns ``rle``: the one place where masks
    are checked.

    Every reader calls it on each mask as it reads the file (polygons and RLEs, without
    decoding a pixel: an RLE's counts must cover exactly its height x width, a polygon's
    points must be finite and inside the image, give or take :data:`POLYGON_MARGIN`), and
    every decoded mask passes here again (:meth:`RESIndex.rle`), whatever its source
    (polygons, RLE, mask files): it must have the image's (height, width) when that is known,
    and at least one foreground pixel. So no command sees a mask of the wrong size, a corrupt
    or an empty one; the :class:`DataError` names ``where`` (the object and its file / line).
    """
    if isinstance(rle, dict):  # the runs are decoded once, for both checks
        problem, runs = rle_problem(rle)
    else:
        problem, runs = segmentation_problem(rle, image_size), None
    if problem is not None:
        raise DataError(f"{where}: {problem}")
    if isinstance(rle, dict):
        check_mask_size((int(rle["size"][0]), int(rle["size"][1])), image_size, where)
        if runs is not None and int(runs[1::2].sum()) == 0:
            raise DataError(f"{where}: the mask is empty (no foreground pixel)")
    return rle


#: how far outside its image a polygon point may lie: this share of the image's side, and at
#: least 2 pixels (annotation tools round points on the border outwards)
POLYGON_MARGIN = 0.02


def segmentation_problem(segmentation: Any, image_size: tuple[int, int] | None) -> str | None:
    """What is wrong with a COCO ``segmentation`` (an RLE dict or polygons) for an image of
    ``image_size`` (height, width; None: not known), in a few words; None when nothing is.
    Checked without decoding pixels: RLE counts are summed, polygon points compared."""
    if isinstance(segmentation, dict):
        return rle_problem(segmentation)[0]
    if isinstance(segmentation, list):
        return _polygon_problem(segmentation, image_size)
    return f"expected an RLE dict or polygons, got {type(segmentation).__name__}"


def rle_problem(rle: dict[str, Any]) -> tuple[str | None, np.ndarray | None]:
    """What is wrong with an RLE dict (None: nothing) and its run lengths (None where they
    cannot be read)."""
    size = rle.get("size")
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in size
        )
    ):
        got = repr(size)[:40]
        return f"the RLE's size should be [height, width] (2 positive integers), got {got}", None
    counts = rle.get("counts")
    if not isinstance(counts, str | bytes | list):
        kind = type(counts).__name__
        return f"the RLE's counts should be a string or a list of integers, got {kind}", None
    runs = rle_runs(rle)
    if runs is None:
        kind = "list" if isinstance(counts, list) else "string"
        return f"the RLE's counts are not a valid COCO RLE {kind}", None
    if len(runs) and int(runs.min()) < 0:
        return f"the RLE's counts hold a negative run length ({int(runs.min())})", runs
    total, pixels = int(runs.sum()), int(size[0]) * int(size[1])
    if total != pixels:
        return (
            f"the RLE's counts add up to {total} pixels, but its size {size[0]}x{size[1]} "
            f"has {pixels} (a corrupt or truncated RLE)"
        ), runs
    return None, runs


def rle_runs(rle: dict[str, Any]) -> np.ndarray | None:
    """The run lengths (int64, background first) an RLE's ``counts`` encode, decoded without
    pycocotools (compressed: COCO's 6-bit LEB128 variant, as ``rleFrString`` reads it); None
    when they cannot be read at all (characters outside the code, a cut-off number,
    non-integers)."""
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()
            for v in counts
        ):
            return None
        try:
            return np.array([int(v) for v in counts], dtype=np.int64)
        except OverflowError:
            return None
    raw = counts.encode("latin-1", "replace") if isinstance(counts, str) else bytes(counts)
    if len(raw) <= _SHORT_RLE:
        runs = _runs_of_short(raw)
        return None if runs is None else np.array(runs, dtype=np.int64)
    code = np.frombuffer(raw, np.uint8).astype(np.int64) - 48
    if code.size == 0:
        return np.zeros(0, np.int64)
    more = (code & 0x20) != 0
    if code.min() < 0 or code.max() > 63 or more[-1]:
        return None
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 7:  # more than 35 bits: no image has that many pixels
        return None
    shift = 5 * (np.arange(code.size) - np.repeat(starts, lengths))
    values = np.add.reduceat((code & 0x1F) << shift, starts)
    values -= np.where((code[ends] & 0x10) != 0, 1 << (5 * lengths), 0)  # the sign bit
    runs = values.copy()  # from the fourth on, a run is stored as the difference to the one
    runs[1::2] = np.cumsum(values[1::2])  # two places before it
    runs[2::2] = np.cumsum(values[2::2])
    return runs


#: compressed counts up to this many characters are decoded in plain Python (half the time of
#: numpy's per-call overhead for a typical object's ~100 characters; reading RefCOCO-sized
#: datasets checks every mask)
_SHORT_RLE = 512


def _runs_of_short(raw: bytes) -> list[int] | None:
    """:func:`rle_runs` of a short compressed string, character by character as COCO's
    ``rleFrString`` reads it."""
    out: list[int] = []
    x = k = 0
    for ch in raw:
        c = ch - 48
        if c < 0 or c > 63:
            return None
        x |= (c & 0x1F) << (5 * k)
        k += 1
        if c & 0x20:  # more characters of this number follow
            if k > 7:  # more than 35 bits: no image has that many pixels
                return None
            continue
        if c & 0x10:  # the sign bit
            x |= -1 << (5 * k)
        if len(out) > 2:  # from the fourth on, stored as the difference to two places before
            x += out[-2]
        out.append(x)
        x = k = 0
    return None if k else out


def _polygon_problem(polygons: list[Any], image_size: tuple[int, int] | None) -> str | None:
    if not polygons:
        return "the polygon list is empty"
    flat = [polygons] if not isinstance(polygons[0], list) else polygons
    for i, poly in enumerate(flat):
        if not isinstance(poly, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in poly
        ):
            return f"polygon {i} should be a list of x, y numbers"
        try:
            xy = np.asarray(poly, dtype=np.float64)
        except OverflowError:
            return f"polygon {i} has a coordinate beyond any image"
        if not np.isfinite(xy).all():
            bad = next(v for v in poly if not np.isfinite(float(v)))
            return f"polygon {i} has the coordinate {bad}; expected finite numbers"
        if image_size is None or len(xy) < 2:
            continue
        height, width = int(image_size[0]), int(image_size[1])
        x, y = xy[0 : len(xy) // 2 * 2 : 2], xy[1 : len(xy) // 2 * 2 : 2]
        mx, my = max(2.0, POLYGON_MARGIN * width), max(2.0, POLYGON_MARGIN * height)
        outside = (x < -mx) | (x > width + mx) | (y < -my) | (y > height + my)
        if outside.any():
            k = int(np.flatnonzero(outside)[0])
            return (
                f"polygon {i} has the point ({x[k]:g}, {y[k]:g}) outside its {height}x{width} "
                "image (height x width; points are x, y pixels)"
            )
    return None


def check_mask_size(
    size: tuple[int, int], image_size: tuple[int, int] | None, where: str, what: str = "the mask"
) -> None:
    """A mask of ``size`` (height, width) must have its image's size (when that is known)."""
    height, width = size
    if image_size is not None and (height, width) != (int(image_size[0]), int(image_size[1])):
        raise DataError(
            f"{where}: {what} is {height}x{width} but its image is "
            f"{int(image_size[0])}x{int(image_size[1])} (height x width); a mask must have its "
            "image's size"
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def write_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """Write a binary mask as an 8-bit PNG with values 0/255 (atomically)."""
    import io

    from PIL import Image

    from semires.utils.io import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray((mask > 0).astype(np.uint8) * 255).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def write_mask_npy(path: str | Path, mask: np.ndarray, *, fsync: bool = True) -> None:
    """Write a binary mask as uint8 ``.npy`` (atomically; ``fsync=False``: see
    :func:`semires.utils.io.atomic_open`)."""
    import io

    from semires.utils.io import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, (mask > 0).astype(np.uint8), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue(), fsync=fsync)

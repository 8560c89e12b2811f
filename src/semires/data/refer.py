"""The refer API layout: ``<root>/<dataset>/refs(<splitBy>).p`` + ``<root>/<dataset>/instances.json``.

This is the layout of RefCOCO, RefCOCO+ and RefCOCOg (unc, umd, google) as the refer toolkit
ships them, and the layout the synthetic benchmark is written in.

- ``refs(<splitBy>).p``: a pickled list of dicts, one per ref, with the keys ``ref_id``,
  ``ann_id``, ``image_id``, ``split``, ``category_id``, ``sent_ids``, ``file_name`` and
  ``sentences`` (a list of ``{"raw", "sent", "tokens", "sent_id"}``).
- ``instances.json``: COCO ``images`` (``id``, ``file_name``, ``height``, ``width``),
  ``annotations`` (``id``, ``image_id``, ``category_id``, ``bbox``, ``area``, ``iscrowd``,
  ``segmentation`` as polygons, compressed RLE or uncompressed (crowd) RLE, and an optional
  ``attributes`` dict) and ``categories`` (``id``, ``name``).

The refs pickle is read with a restricted unpickler that only rebuilds plain containers, strings
and numbers, so a crafted refs file cannot run code.
"""

from __future__ import annotations

import builtins
import io
import json
import math
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from semires.data.index import Image, Object, Ref, RESIndex, Sentence, tokenize
from semires.errors import DataError, missing
from semires.utils.io import atomic_write_json, atomic_write_pickle, remove_temp_files

INSTANCES = "instances.json"

# The only globals a refs pickle may name: harmless builtin containers and scalar types.
_SAFE_BUILTINS = frozenset(
    {"list", "dict", "tuple", "set", "frozenset", "str", "int", "float", "bool"}
)


# ---------------------------------------------------------------------- field checks (shared)
def one_line(text: object) -> str:
    """``str(text)`` with line breaks folded, for one-line error messages."""
    return " ".join(str(text).split())


def require(entry: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``entry[key]``, checked to be an instance of ``kind``; a :class:`DataError` otherwise.

    ``bool`` is not accepted where ``int`` or ``float`` is asked for.
    """
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object (dict), got {type(entry).__name__}")
    if key not in entry:
        raise DataError(f"{where}: missing key {key!r}")
    value = entry[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        names = " or ".join(k.__name__ for k in _kinds(kind))
        raise DataError(f"{where}: {key!r} should be {names}, got {type(value).__name__}")
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def require_bbox(entry: Any, key: str, where: str) -> tuple[float, float, float, float]:
    """A ``[x, y, w, h]`` box of four finite numbers, ``w`` and ``h`` not negative (json
    readers accept ``NaN`` and ``Infinity``: refused here)."""
    box = require(entry, key, list, where)
    if len(box) != 4 or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in box
    ):
        raise DataError(
            f"{where}: {key!r} should be [x, y, w, h] (4 numbers), got {one_line(box)[:80]}"
        )
    try:
        x, y, w, h = (float(v) for v in box)
    except OverflowError:
        x = y = w = h = math.inf
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise DataError(
            f"{where}: {key!r} should be [x, y, w, h] with finite numbers and w, h >= 0, "
            f"got {one_line(box)[:80]}"
        )
    return (x, y, w, h)


def require_size(entry: Any, where: str) -> tuple[int, int]:
    """An image's ``height`` and ``width``: positive integers."""
    height, width = require(entry, "height", int, where), require(entry, "width", int, where)
    if height < 1 or width < 1:
        raise DataError(f"{where}: height x width is {height}x{width}; expected positive sizes")
    return height, width


def require_list(container: Any, key: str, where: str) -> list[Any]:
    """``container[key]`` as a list (``container`` itself when ``key`` is empty)."""
    if key:
        return require(container, key, list, where)
    if not isinstance(container, list):
        raise DataError(f"{where}: expected a list, got {type(container).__name__}")
    return container


def unique_by_id(items: Iterable[Any], what: str, where: str) -> None:
    """Raise if two items share an ``id``."""
    seen: set[int] = set()
    for item in items:
        if item.id in seen:
            raise DataError(f"{where}: duplicate {what} id {item.id}")
        seen.add(item.id)


# ---------------------------------------------------------------------- paths
def refs_file(root: str | Path, dataset: str, split_by: str | None) -> Path:
    """The refs pickle of ``dataset`` under ``root``; ``split_by=None`` picks the only one."""
    folder = Path(root) / dataset
    if not Path(root).is_dir():
        raise missing(root, "refer data root")
    if not folder.is_dir():
        raise missing(folder, f"dataset folder {dataset!r}")
    candidates = sorted(p.name for p in folder.glob("refs(*).p"))
    listed = ", ".join(candidates) if candidates else "none"
    if split_by is not None:
        path = folder / f"refs({split_by}).p"
        if not path.is_file():
            raise DataError(f"refs file not found: {path} (found: {listed})")
        return path
    if len(candidates) != 1:
        raise DataError(
            f"{folder}: pass --split-by to pick one refs(<splitBy>).p file (found: {listed})"
        )
    return folder / candidates[0]


def default_image_root(root: str | Path, dataset: str) -> Path:
    """``root/images/<dataset>`` when it exists, else the COCO train2014 folder of the refer API."""
    own = Path(root) / "images" / dataset
    return own if own.is_dir() else Path(root) / "images" / "mscoco" / "images" / "train2014"


# ---------------------------------------------------------------------- the refs pickle
class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds only builtin containers and scalars; refuses every other global."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="utf-8", errors="replace")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return getattr(builtins, name)
        raise DataError(
            f"refs file {self.path}: refused to load {module}.{name} "
            "(a refs pickle may only hold lists, dicts, strings and numbers)"
        )


def load_refs_pickle(path: str | Path) -> list[dict[str, Any]]:
    """Load a refs pickle safely; a :class:`DataError` naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise missing(path, "refs file")
    try:
        with open(path, "rb") as fh:
            data = _RestrictedUnpickler(fh, path).load()  # type: ignore[arg-type]
    except DataError:
        raise
    except Exception as exc:  # truncated / not a pickle: anything the unpickler raises
        raise DataError(
            f"refs file {path} is not a readable pickle ({type(exc).__name__}: {one_line(exc)})"
        ) from exc
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(
            f"refs file {path}: expected a list of ref dicts, got {type(data).__name__}"
        )
    return data


def _parse_sentence(raw: Any, where: str) -> Sentence:
    text = require(raw, "raw", str, where)
    sent_id = require(raw, "sent_id", int, where)
    tokens = raw.get("tokens")
    if tokens is None:
        return Sentence(id=sent_id, raw=text, tokens=tuple(tokenize(text)))
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise DataError(f"{where}: 'tokens' should be a list of strings")
    return Sentence(id=sent_id, raw=text, tokens=tuple(tokens))


def _parse_ref(raw: dict[str, Any], where: str) -> Ref:
    ref_id = require(raw, "ref_id", int, where)
    where = f"{where} (ref_id {ref_id})"
    sentences = require(raw, "sentences", list, where)
    if not sentences:
        raise DataError(f"{where}: a ref needs at least one sentence")
    return Ref(
        id=ref_id,
        object_id=require(raw, "ann_id", int, where),
        image_id=require(raw, "image_id", int, where),
        category_id=require(raw, "category_id", int, where),
        split=require(raw, "split", str, where),
        sentences=[_parse_sentence(s, f"{where} sentences[{j}]") for j, s in enumerate(sentences)],
    )


# ---------------------------------------------------------------------- instances.json
def load_json(path: str | Path, what: str) -> Any:
    """Parse a json file; a :class:`DataError` naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise missing(path, what)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {path} is not valid json ({one_line(exc)})") from exc


def _parse_image(raw: Any, where: str) -> Image:
    image_id = require(raw, "id", int, where)
    file_name = require(raw, "file_name", str, where)
    height, width = require_size(raw, where)
    return Image(id=image_id, file_name=file_name, height=height, width=width)


def _parse_annotation(raw: Any, where: str) -> Object:
    ann_id = require(raw, "id", int, where)
    where = f"{where} (id {ann_id})"
    segmentation = require(raw, "segmentation", (list, dict), where)
    if isinstance(segmentation, dict) and not {"counts", "size"} <= segmentation.keys():
        raise DataError(f"{where}: an RLE segmentation needs 'counts' and 'size'")
    area = raw.get("area")
    if isinstance(area, float) and not math.isfinite(area):
        raise DataError(f"{where}: 'area' is {area}; expected a finite number")
    attributes = raw.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise DataError(f"{where}: 'attributes' should be a dict")
    return Object(
        id=ann_id,
        image_id=require(raw, "image_id", int, where),
        category_id=require(raw, "category_id", int, where),
        bbox=require_bbox(raw, "bbox", where),
        segmentation=segmentation,
        iscrowd=require(raw, "iscrowd", int, where) if "iscrowd" in raw else 0,
        area=float(area) if isinstance(area, int | float) else None,
        attributes=dict(attributes),
    )


def _parse_instances(path: Path) -> tuple[list[Image], list[Object], dict[int, str]]:
    data = load_json(path, "instances file")
    if not isinstance(data, dict):
        raise DataError(f"instances file {path}: expected a COCO json object, got a list")
    w = str(path)
    images = [
        _parse_image(im, f"{w}: images[{i}]")
        for i, im in enumerate(require_list(data, "images", w))
    ]
    objects = [
        _parse_annotation(a, f"{w}: annotations[{i}]")
        for i, a in enumerate(require_list(data, "annotations", w))
    ]
    categories = {}
    for i, cat in enumerate(require_list(data, "categories", w)):
        where = f"{w}: categories[{i}]"
        categories[require(cat, "id", int, where)] = require(cat, "name", str, where)
    unique_by_id(images, "image", w)
    unique_by_id(objects, "annotation", w)
    _check_segmentations(images, objects, w)
    return images, objects, categories


def _check_segmentations(images: list[Image], objects: list[Object], where: str) -> None:
    """Every annotation's polygons / RLE against its image's size, as the file is read
    (:func:`semires.data.masks.validate_mask`; pixels are decoded only when a mask is used)."""
    from semires.data.masks import validate_mask

    sizes = {im.id: (im.height, im.width) for im in images}
    for i, ob in enumerate(objects):
        size = sizes.get(ob.image_id)
        if size is not None:  # an unknown image is refused by RESIndex.validate
            validate_mask(ob.segmentation, size, f"{where}: annotations[{i}] (id {ob.id})")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- read / write
def read_refer(
    root: str | Path,
    dataset: str,
    split_by: str | None = None,
    *,
    image_root: str | Path | None = None,
) -> RESIndex:
    """Read ``root/dataset/refs(split_by).p`` + ``root/dataset/instances.json`` into an index.

    ``split_by=None`` uses the dataset's only refs file. Images are looked up under
    ``image_root`` (default: :func:`default_image_root`). Masks stay as polygons / RLE until asked
    for. Every malformed or inconsistent input raises a one-line :class:`DataError`.
    """
    path = refs_file(root, dataset, split_by)
    chosen = path.name[len("refs(") : -len(").p")]
    raw_refs = load_refs_pickle(path)
    if not raw_refs:
        raise DataError(f"refs file {path} holds no refs (an empty list)")
    refs = [_parse_ref(r, f"{path}: refs[{i}]") for i, r in enumerate(raw_refs)]
    unique_by_id(refs, "ref", str(path))
    images, objects, categories = _parse_instances(path.parent / INSTANCES)
    index = RESIndex(
        images,
        objects,
        refs,
        categories,
        name=dataset,
        split_by=chosen,
        image_root=image_root if image_root is not None else default_image_root(root, dataset),
        source=str(path),
    )
    index.validate()
    return index


def _ref_file_name(image_file: str, ann_id: int) -> str:
    """The refer API's per-ref ``file_name``: the image file name with ``_<ann_id>`` appended."""
    stem, dot, ext = image_file.rpartition(".")
    return f"{stem}_{ann_id}.{ext}" if dot else f"{image_file}_{ann_id}"


def _ref_record(index: RESIndex, ref: Ref) -> dict[str, Any]:
    return {
        "ref_id": ref.id,
        "ann_id": ref.object_id,
        "image_id": ref.image_id,
        "split": ref.split,
        "category_id": ref.category_id,
        "sent_ids": [s.id for s in ref.sentences],
        "sentences": [
            {"raw": s.raw, "sent": s.sent, "tokens": list(s.tokens), "sent_id": s.id}
            for s in ref.sentences
        ],
        "file_name": _ref_file_name(index.images[ref.image_id].file_name, ref.object_id),
    }


def _segmentation(index: RESIndex, ob: Object) -> Any:
    """The annotation's segmentation: as held (polygons / RLE), else the mask as compressed RLE."""
    seg = ob.segmentation
    if isinstance(seg, list):
        return seg
    if isinstance(seg, dict) and isinstance(seg.get("counts"), bytes):
        return {"size": list(seg["size"]), "counts": seg["counts"].decode("ascii")}
    if isinstance(seg, dict):
        return seg
    return index.rle(ob.id)


def _annotation_record(index: RESIndex, ob: Object) -> dict[str, Any]:
    from semires.data import masks as mask_ops

    segmentation = _segmentation(index, ob)
    area = ob.area if ob.area is not None else float(mask_ops.area(index.rle(ob.id)))
    record: dict[str, Any] = {
        "id": ob.id,
        "image_id": ob.image_id,
        "category_id": ob.category_id,
        "bbox": list(index.bbox(ob.id) or ()),
        "area": area,
        "iscrowd": ob.iscrowd,
        "segmentation": segmentation,
    }
    if ob.attributes:
        record["attributes"] = ob.attributes
    return record


def _image_record(index: RESIndex, im: Image) -> dict[str, Any]:
    height, width = index.image_size(im.id)
    return {"id": im.id, "file_name": im.file_name, "height": height, "width": width}


def write_refer(index: RESIndex, root: str | Path, dataset: str, split_by: str) -> Path:
    """Write ``index`` as ``root/dataset/refs(split_by).p`` + ``instances.json``; returns the folder.

    Polygons and RLEs are written as the index holds them; objects whose mask comes from a mask
    file are written as compressed RLE. Both files are built in memory first and written
    atomically, so a failure leaves no half-written dataset.
    """
    folder = Path(root) / dataset
    index.validate()
    for split in index.splits():
        index.require_masks(
            split,
            "the refer layout needs a segmentation for every annotation (write JSON Lines "
            "or the semires json instead, which keep lines without masks)",
        )
    refs = [_ref_record(index, ref) for ref in index.refs.values()]
    instances = {
        "images": [_image_record(index, im) for im in index.images.values()],
        "annotations": [_annotation_record(index, ob) for ob in index.objects.values()],
        "categories": [{"id": cid, "name": name} for cid, name in index.categories.items()],
    }
    remove_temp_files(folder)  # what an interrupted conversion left
    atomic_write_json(folder / INSTANCES, instances, indent=None)
    atomic_write_pickle(folder / f"refs({split_by}).p", refs)
    return folder

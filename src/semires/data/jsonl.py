"""JSON Lines: a folder of images plus one ``.jsonl`` file, one referred object per line.

    {"image": "photos/0001.jpg", "expressions": ["man on the left", "guy in red"],
     "mask": "masks/0001_a.png", "split": "train", "object": "0001_a"}

Keys: ``image`` (a path relative to the file's folder, or to ``image_root``), ``expressions``
(a non-empty list of non-empty strings), ``split`` (any name) and, optional, ``mask`` (a PNG /
NPY path relative to the file's folder, or to ``mask_root``; a COCO RLE dict ``{"size": [h, w],
"counts": ...}``; or COCO polygons), ``bbox`` ([x, y, w, h]), ``category`` (a name) and
``object`` (an id unique in the file). A line without ``mask`` is unlabeled data. Blank lines
are skipped.

Ids: a line's ref id and object id are its line number (1-based, blank lines counted), so an
error about ref 17 is about line 17; image ids number the distinct image paths in order of first
appearance; sentence ids number the expressions in file order from 0; category ids number the
distinct category names in order of first appearance from 1 (0 = no category, name "").

Reading checks every line at once, each error naming ``file:line``: JSON, keys and types, the
image exists and is readable (its size comes from the file header), the mask file exists and has
its image's size (from its header too), ``object`` ids are unique. Mask pixels are decoded
lazily with every reader's checks (:func:`semires.data.masks.validate_mask`: binary, not empty),
and those errors name the line as well (:attr:`RESIndex.origins`); an RLE's counts (they must
add up to its height x width) and polygon points (finite, inside the image) are checked as the
line is read, and a ``bbox`` must hold four finite numbers.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from semires.data import masks as mask_ops
from semires.data.images import image_size
from semires.data.index import Image, Object, Ref, RESIndex, Sentence
from semires.data.refer import one_line, require, require_bbox
from semires.data.semires_json import mask_available
from semires.errors import DataError, missing
from semires.utils.io import atomic_write_bytes, atomic_write_text, json_text, remove_temp_files

KEYS = ("image", "expressions", "split", "mask", "bbox", "category", "object")
MaskFormat = Literal["png", "npy", "rle"]
MASK_FORMATS: tuple[str, ...] = ("png", "npy", "rle")


def mask_format(value: str, option: str = "mask format") -> MaskFormat:
    """``value`` checked to be one of :data:`MASK_FORMATS` (how :func:`write_jsonl` writes masks)."""
    if value not in MASK_FORMATS:
        raise DataError(f"{option} {value!r}: expected one of {', '.join(MASK_FORMATS)}")
    return value  # type: ignore[return-value]


# ---------------------------------------------------------------------- reading one line
def _parse(raw: bytes, where: str) -> dict[str, Any]:
    try:
        entry = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({one_line(exc)})") from None
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise DataError(f"{where}: unknown key {unknown[0]!r}; expected {', '.join(KEYS)}")
    return entry


def _expressions(entry: dict[str, Any], where: str) -> list[str]:
    texts = require(entry, "expressions", list, where)
    if not texts:
        raise DataError(f"{where}: 'expressions' is empty; expected at least one expression")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise DataError(
                f"{where}: expressions[{i}] is {text!r}; expected a non-empty string (the words "
                "that pick out the object)"
            )
    return texts


def _text(entry: dict[str, Any], key: str, where: str) -> str:
    value = require(entry, key, str, where)
    if not value.strip():
        raise DataError(f"{where}: {key!r} is empty")
    return value


def _object_key(entry: dict[str, Any], where: str) -> str | None:
    if "object" not in entry:
        return None
    value = require(entry, "object", (str, int), where)
    return str(value)


def _polygons(value: list[Any], image: Image, where: str) -> list[list[float]]:
    """COCO polygons: a list of [x1, y1, x2, y2, ...] lists (one flat list is one polygon),
    their points finite and inside the image (:func:`semires.data.masks.validate_mask`)."""
    polygons = [value] if value and not isinstance(value[0], list) else value
    for poly in polygons:
        if (
            not isinstance(poly, list)
            or len(poly) < 6
            or len(poly) % 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in poly)
        ):
            raise DataError(
                f"{where}: 'mask' as polygons should be lists of x, y numbers (at least 3 "
                f"points), got {one_line(poly)[:60]}"
            )
    mask_ops.validate_mask(polygons, (image.height, image.width), where)  # type: ignore[arg-type]
    return [[float(v) for v in poly] for poly in polygons]


def _rle(value: dict[str, Any], image: Image, where: str) -> dict[str, Any]:
    size = value.get("size")
    if (
        set(value) != {"size", "counts"}
        or not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        or not isinstance(value["counts"], str | list)
    ):
        raise DataError(
            f'{where}: \'mask\' as COCO RLE should be {{"size": [height, width], "counts": '
            "string or list of ints}"
        )
    mask_ops.check_mask_size((size[0], size[1]), (image.height, image.width), where, "the RLE mask")  # type: ignore[arg-type]
    rle = {"size": list(size), "counts": value["counts"]}
    return mask_ops.validate_mask(rle, (image.height, image.width), where)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- reading the file
@dataclass
class _Reader:
    """The state of one read: what the lines so far have defined."""

    path: Path
    image_root: Path
    mask_root: Path
    images: dict[str, Image] = field(default_factory=dict)  # normalised path -> image
    categories: dict[str, int] = field(default_factory=lambda: {"": 0})
    keys: dict[str, int] = field(default_factory=dict)  # ``object`` id -> line
    objects: list[Object] = field(default_factory=list)
    refs: list[Ref] = field(default_factory=list)
    origins: dict[int, str] = field(default_factory=dict)
    sentences: int = 0

    def image(self, entry: dict[str, Any], where: str) -> Image:
        name = posixpath.normpath(_text(entry, "image", where).replace(os.sep, "/"))
        known = self.images.get(name)
        if known is not None:
            return known
        file = self.image_root / name
        if not file.is_file():
            raise DataError(f"{where}: image not found: {file}")
        try:
            height, width = image_size(file)
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
        self.images[name] = Image(len(self.images) + 1, name, height, width)
        return self.images[name]

    def mask(self, entry: dict[str, Any], image: Image, where: str) -> dict[str, Any]:
        """The Object fields of the line's mask: ``segmentation`` or ``mask_file`` (or none)."""
        value = entry.get("mask")
        if value is None:
            return {}
        if isinstance(value, dict):
            return {"segmentation": _rle(value, image, where)}
        if isinstance(value, list):
            return {"segmentation": _polygons(value, image, where)}
        if not isinstance(value, str) or not value.strip():
            raise DataError(
                f"{where}: 'mask' should be a file name, a COCO RLE dict or polygons, got "
                f"{type(value).__name__ if not isinstance(value, str) else repr(value)}"
            )
        file = self.mask_root / value
        if not file.is_file():
            raise DataError(f"{where}: mask file not found: {file}")
        try:
            size = mask_ops.mask_file_size(file)
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
        if size is not None:
            mask_ops.check_mask_size(size, (image.height, image.width), where, f"the mask {file}")  # type: ignore[arg-type]
        return {"mask_file": file}

    def category(self, entry: dict[str, Any], where: str) -> int:
        name = _text(entry, "category", where) if "category" in entry else ""
        return self.categories.setdefault(name, len(self.categories))

    def add(self, lineno: int, raw: bytes) -> None:
        where = f"{self.path}:{lineno}"
        entry = _parse(raw, where)
        split = _text(entry, "split", where)
        texts = _expressions(entry, where)
        image = self.image(entry, where)
        key = _object_key(entry, where)
        if key is not None and key in self.keys:
            raise DataError(f"{where}: object id {key!r} is also on line {self.keys[key]}")
        bbox = require_bbox(entry, "bbox", where) if "bbox" in entry else None
        category = self.category(entry, where)
        masks = self.mask(entry, image, where)
        if key is not None:
            self.keys[key] = lineno
        first = self.sentences
        self.sentences += len(texts)
        sentences = [Sentence.from_text(first + i, t) for i, t in enumerate(texts)]
        self.objects.append(Object(lineno, image.id, category, bbox, key=key, **masks))
        self.refs.append(Ref(lineno, lineno, image.id, category, split, sentences))
        self.origins[lineno] = where

    def index(self) -> RESIndex:
        used = {ob.category_id for ob in self.objects}
        return RESIndex(
            self.images.values(),
            self.objects,
            self.refs,
            {cid: name for name, cid in self.categories.items() if cid in used},
            name=self.path.stem,
            image_root=self.image_root,
            source=str(self.path),
            origins=self.origins,
        )


def read_jsonl(
    ann: str | Path,
    *,
    image_root: str | Path | None = None,
    mask_root: str | Path | None = None,
) -> RESIndex:
    """Read a JSON Lines dataset into an index (one ref per line; see the module doc).

    Image paths are taken relative to ``image_root`` and mask paths relative to ``mask_root``,
    both by default the folder of ``ann``. Malformed input raises a one-line
    :class:`DataError` naming ``file:line``.
    """
    path = Path(ann)
    if not path.is_file():
        raise missing(path, "jsonl file")
    reader = _Reader(
        path,
        Path(image_root) if image_root is not None else path.parent,
        Path(mask_root) if mask_root is not None else path.parent,
    )
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
            if raw.strip():
                reader.add(lineno, raw)
    if not reader.refs:
        raise DataError(
            f"jsonl file {path} holds no lines; expected one JSON object per line with "
            f"{', '.join(KEYS[:3])} (and optionally {', '.join(KEYS[3:])})"
        )
    return reader.index()


# ---------------------------------------------------------------------- writing
def _image_names(index: RESIndex, image_ids: set[int], folder: Path, copy: bool) -> dict[int, str]:
    """Image id -> the ``image`` value to write; every image file must exist."""
    names = {}
    for image_id in sorted(image_ids):
        source = index.image_path(image_id)
        if not source.is_file():
            raise missing(source, f"image {image_id}")
        if copy:
            names[image_id] = _copied_name(index.images[image_id])
        else:
            names[image_id] = Path(os.path.relpath(source, folder)).as_posix()
    return names


def _copied_name(image: Image) -> str:
    """Where a copied image goes: ``images/<its file name>``, kept inside ``images/``."""
    name = posixpath.normpath(posixpath.join("images", image.file_name.lstrip("/")))
    if not name.startswith("images/"):
        name = f"images/{image.id}-{posixpath.basename(image.file_name)}"
    return name


def _line(index: RESIndex, ref: Ref, image: str, mask: Any, keyed: bool) -> dict[str, Any]:
    ob = index.objects[ref.object_id]
    line: dict[str, Any] = {"image": image, "expressions": [s.raw for s in ref.sentences]}
    if mask is not None:
        line["mask"] = mask
    line["split"] = ref.split
    key = ob.key if keyed else str(ref.id)
    if key is not None:
        line["object"] = key
    if ob.bbox is not None:
        line["bbox"] = list(ob.bbox)
    if index.categories.get(ob.category_id):
        line["category"] = index.categories[ob.category_id]
    return line


def _write_mask(path: Path, rle: dict[str, Any], fmt: str) -> None:
    write = mask_ops.write_mask_png if fmt == "png" else mask_ops.write_mask_npy
    write(path, mask_ops.decode(rle))


def write_jsonl(
    index: RESIndex,
    out: str | Path,
    *,
    masks: MaskFormat = "png",
    copy_images: bool = False,
    splits: list[str] | None = None,
    progress: bool = True,
) -> Path:
    """Write ``index`` (all splits, or ``splits``) as JSON Lines, one line per ref in id order;
    returns the file's path.

    ``masks``: ``png`` / ``npy`` files ``masks/<ref id>.<ext>`` beside the file, or ``rle``
    (COCO RLE in the line). Objects without a mask, or whose mask file is absent (a semires json
    shipped without masks), get no ``mask`` key: unlabeled lines. Images stay where they
    are (paths relative to the file) unless ``copy_images``, which copies them to ``images/``
    beside it. Every image and mask is checked before anything is written; every file is
    written atomically, the ``.jsonl`` last.
    """
    from semires.utils.progress import progress_bar

    mask_format(masks)
    out = Path(out)
    chosen = {r.id for split in (splits or index.splits()) for r in index.refs_in(split)}
    refs = [ref for ref in index.refs.values() if ref.id in chosen]  # in id order
    names = _image_names(index, {r.image_id for r in refs}, out.parent, copy_images)
    labeled = [r for r in refs if mask_available(index, r.object_id)]
    with progress_bar(labeled, enabled=progress, desc="checking masks", leave=False) as bar:
        rles = {r.id: index.rle(r.object_id) for r in bar}
    files = {i: f"masks/{i}.{masks}" for i in rles} if masks != "rle" else {}
    keyed = any(index.objects[r.object_id].key is not None for r in refs)
    lines = [
        _line(index, r, names[r.image_id], files.get(r.id, rles.get(r.id)), keyed) for r in refs
    ]  # the text first: a value JSON cannot hold (NaN) is refused before any file is written
    text = "".join(json_text(line, f"{out}:{i}") + "\n" for i, line in enumerate(lines, 1))
    for folder in (out.parent, out.parent / "masks", out.parent / "images"):
        remove_temp_files(folder)  # what an interrupted conversion left
    with progress_bar(files.items(), enabled=progress, desc="writing masks", leave=False) as bar:
        for ref_id, name in bar:
            _write_mask(out.parent / name, rles[ref_id], masks)
    if copy_images:
        for image_id, name in names.items():
            atomic_write_bytes(out.parent / name, index.image_path(image_id).read_bytes())
    atomic_write_text(out, text)
    return out


# ---------------------------------------------------------------------- the example dataset
def without_masks(index: RESIndex, object_ids: set[int]) -> RESIndex:
    """A copy of ``index`` in which the given objects have no mask (unlabeled data)."""
    return index.replace_objects(
        [
            replace(index.objects[i], segmentation=None, mask_file=None, area=None)
            for i in object_ids
        ]
    )


def write_example(
    out_dir: str | Path,
    *,
    preset: str = "tiny",
    seed: int = 0,
    labeled: str = "34%",
    masks: MaskFormat = "png",
    progress: bool = True,
) -> Path:
    """A small JSON Lines dataset from the synthetic benchmark: ``out_dir/data.jsonl``,
    ``images/`` and ``masks/``. The train lines of a ``labeled`` share of the train images
    (drawn as :func:`semires.data.splits.make_split` draws) have masks; the other train lines
    have none (unlabeled data); every val / test line has its mask. Returns the file's path."""
    import tempfile

    from semires.data.splits import make_split, parse_ratio
    from semires.data.synth import load, make_config, synthesize

    parse_ratio(labeled)
    make_config(preset)  # an unknown preset fails before anything is made
    with tempfile.TemporaryDirectory(prefix="semires-example-") as tmp:
        root = synthesize(Path(tmp) / "synth", preset, seed, progress=progress)
        index = load(root)
        drawn = make_split(index, labeled, seed)
        index = without_masks(index, {r.object_id for r in drawn.unlabeled_refs(index)})
        path = Path(out_dir) / "data.jsonl"
        return write_jsonl(index, path, masks=masks, copy_images=True, progress=progress)

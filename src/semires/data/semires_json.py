"""The LAVT/SemiRES json: ``{"train": [...], "val": [...], ...}`` + ``masks/<mask_id>.npy``.

Each split is a list of entries ``{"iid", "bbox": [x, y, w, h], "cat_id", "refs": [sentences],
"mask_id"}``. In ``train`` an entry is one object with all its sentences; in every other split an
entry is one sentence, so one object spans several entries. Reading groups the entries of a split
back into one ref per ``mask_id``; ``mask_id`` becomes both the ref id and the object id.

Conventions of this module (see docs/data.md):

- ``cat_id`` is the contiguous COCO index 0..79 (:mod:`semires.data.coco`). For other category
  sets the writer adds a top-level ``"categories": [{"id", "name"}, ...]`` list and ``cat_id`` is
  the position in it; the reader accepts that key.
- Images are ``COCO_train2014_%012d.jpg`` unless a top-level ``"images": [{"id", "file_name",
  "height", "width"}, ...]`` list says otherwise (written only when a file name differs).
- Sentences are the refer ``sent`` form (lower-case tokens joined by spaces, as the released
  files hold them); an optional ``"sent_ids"`` list beside ``"refs"`` keeps sentence ids, else
  they are numbered in file order.
- Masks are read lazily from ``<mask_root>/<mask_id>.npy``; a json without masks (the SemiRES 1%
  split file) is readable, and only asking for a mask needs its file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semires.data import coco
from semires.data.index import Image, Object, Ref, RESIndex, Sentence
from semires.data.refer import load_json, require, require_bbox, require_list, require_size
from semires.errors import DataError
from semires.utils.io import atomic_write_text, json_text, remove_temp_files, sync_files

META_KEYS = ("categories", "images")
COCO_FILE_NAME = "COCO_train2014_{:012d}.jpg"
GROUPED_SPLIT = "train"  # the one split whose entries hold all sentences of an object
UNKNOWN_BBOX = (0.0, 0.0, 0.0, 0.0)  # written for an object with neither a box nor a mask


@dataclass
class _Group:
    """The entries of one ``mask_id`` in one split: one ref."""

    split: str
    iid: int
    bbox: tuple[float, float, float, float]
    cat_id: int
    sentences: list[Sentence] = field(default_factory=list)


# ---------------------------------------------------------------------- reading
def _categories(data: dict[str, Any], path: Path) -> list[tuple[int, str]]:
    """``cat_id`` -> (category id, name): the file's own list, else the COCO table."""
    if "categories" not in data:
        return list(coco.COCO_CATEGORIES)
    table = []
    for i, cat in enumerate(require_list(data, "categories", str(path))):
        where = f"{path}: categories[{i}]"
        table.append((require(cat, "id", int, where), require(cat, "name", str, where)))
    return table


def _images(data: dict[str, Any], path: Path) -> dict[int, Image]:
    images = {}
    listed = require_list(data, "images", str(path)) if "images" in data else []
    for i, im in enumerate(listed):
        where = f"{path}: images[{i}]"
        image_id = require(im, "id", int, where)
        file_name = require(im, "file_name", str, where)
        size: tuple[int | None, int | None] = (None, None)
        if im.get("height") is not None or im.get("width") is not None:
            size = require_size(im, where)  # optional, but when given, positive integers
        images[image_id] = Image(image_id, file_name, *size)
    return images


def _entry_sentences(entry: dict[str, Any], where: str, next_id: int) -> list[Sentence]:
    texts = require(entry, "refs", list, where)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise DataError(f"{where}: 'refs' should be a non-empty list of sentences (strings)")
    ids = entry.get("sent_ids", list(range(next_id, next_id + len(texts))))
    if (
        not isinstance(ids, list)
        or len(ids) != len(texts)
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    ):
        raise DataError(f"{where}: 'sent_ids' should be a list of ints as long as 'refs'")
    return [Sentence(i, t, tuple(t.split())) for i, t in zip(ids, texts, strict=True)]


def _add_entry(groups: dict[int, _Group], split: str, entry: Any, where: str, n: int) -> int:
    """Parse one entry into its group; returns the number of sentences it holds."""
    mask_id = require(entry, "mask_id", int, where)
    where = f"{where} (mask_id {mask_id})"
    iid = require(entry, "iid", int, where)
    bbox = require_bbox(entry, "bbox", where)
    cat_id = require(entry, "cat_id", int, where)
    sentences = _entry_sentences(entry, where, n)
    group = groups.setdefault(mask_id, _Group(split, iid, bbox, cat_id))
    if group.split != split:
        raise DataError(f"{where}: mask_id {mask_id} is in both {group.split!r} and {split!r}")
    if (group.iid, group.bbox, group.cat_id) != (iid, bbox, cat_id):
        raise DataError(f"{where}: entries of mask_id {mask_id} disagree on iid / bbox / cat_id")
    group.sentences.extend(sentences)
    return len(sentences)


def _category_of(cat_id: int, table: list[tuple[int, str]], where: str) -> int:
    if not 0 <= cat_id < len(table):
        raise DataError(f"{where}: cat_id {cat_id} out of range; expected 0..{len(table) - 1}")
    return table[cat_id][0]


def read_semires_json(
    ann: str | Path,
    *,
    mask_root: str | Path | None = None,
    image_root: str | Path | None = None,
) -> RESIndex:
    """Read a LAVT/SemiRES json into an index (one ref per ``mask_id`` and split).

    Masks are looked up lazily in ``mask_root`` (default: ``<folder of ann>/masks``); images
    under ``image_root``. Malformed input raises a one-line :class:`DataError`.
    """
    path = Path(ann)
    data = load_json(path, "semires json")
    if not isinstance(data, dict):
        raise DataError(
            f"semires json {path}: expected a dict of split name -> list of entries, "
            f"got {type(data).__name__}"
        )
    table = _categories(data, path)
    images = _images(data, path)
    groups: dict[int, _Group] = {}
    n_sentences = 0
    for split, entries in data.items():
        if split in META_KEYS:
            continue
        for i, entry in enumerate(require_list(entries, "", f"{path}: split {split!r}")):
            n_sentences += _add_entry(groups, split, entry, f"{path}: {split}[{i}]", n_sentences)
    if not groups:
        found = ", ".join(repr(k) for k in data) or "nothing"
        raise DataError(
            f"semires json {path}: no entries (found {found}); expected split name -> list of "
            "entries with iid, bbox, cat_id, refs, mask_id"
        )
    masks = Path(mask_root) if mask_root is not None else path.parent / "masks"
    objects, refs = [], []
    for mask_id, g in groups.items():
        category = _category_of(g.cat_id, table, f"{path}: mask_id {mask_id}")
        images.setdefault(g.iid, Image(g.iid, COCO_FILE_NAME.format(g.iid)))
        objects.append(Object(mask_id, g.iid, category, g.bbox, mask_file=masks / f"{mask_id}.npy"))
        refs.append(Ref(mask_id, mask_id, g.iid, category, g.split, g.sentences))
    index = RESIndex(
        images.values(),
        objects,
        refs,
        dict(table),
        name=path.stem,
        image_root=image_root,
        source=str(path),
    )
    index.validate()
    return index


# ---------------------------------------------------------------------- writing
def mask_available(index: RESIndex, object_id: int) -> bool:
    """Whether the object's mask can be had: a segmentation, or a mask file that exists."""
    ob = index.objects[object_id]
    if ob.segmentation is not None:
        return True
    return ob.mask_file is not None and ob.mask_file.is_file()


def masks_available(index: RESIndex) -> bool:
    """Whether the mask of every ref's object can be had (see :func:`mask_available`)."""
    return all(mask_available(index, r.object_id) for r in index.refs.values())


def _cat_ids(index: RESIndex) -> tuple[dict[int, int], list[dict[str, Any]] | None]:
    """Category id -> ``cat_id``, and the ``categories`` list to write (None for COCO)."""
    used = {ob.category_id for ob in index.objects.values()}
    if coco.is_coco(index.categories) and used <= coco.COCO_NAMES.keys():
        return {cid: coco.coco_index(cid) for cid in used}, None
    unknown = used - index.categories.keys()
    if unknown:
        raise DataError(
            f"{index.source or index.name}: category ids {sorted(unknown)} have no name; "
            "a non-COCO category set must be listed in the index's categories"
        )
    ordered = sorted(index.categories)
    listed = [{"id": cid, "name": index.categories[cid]} for cid in ordered]
    return {cid: i for i, cid in enumerate(ordered)}, listed


def _entries(index: RESIndex, split: str, cat_ids: dict[int, int]) -> list[dict[str, Any]]:
    entries = []
    for ref in index.refs_in(split):
        ob = index.objects[ref.object_id]
        bbox = index.bbox(ob.id) or UNKNOWN_BBOX
        base = {"iid": ref.image_id, "bbox": list(bbox), "cat_id": cat_ids[ob.category_id]}
        groups = [ref.sentences] if split == GROUPED_SPLIT else [[s] for s in ref.sentences]
        for sents in groups:
            entries.append(
                {
                    **base,
                    "refs": [s.sent for s in sents],
                    "mask_id": ref.id,
                    "sent_ids": [s.id for s in sents],
                }
            )
    return entries


def _images_list(index: RESIndex, image_ids: set[int]) -> list[dict[str, Any]] | None:
    """The ``images`` list to write, or None when every file name follows the COCO pattern."""
    ims = [index.images[i] for i in sorted(image_ids)]
    if all(im.file_name == COCO_FILE_NAME.format(im.id) for im in ims):
        return None
    sizes = {im.id: index.image_size(im.id) for im in ims}
    return [
        {
            "id": im.id,
            "file_name": im.file_name,
            "height": sizes[im.id][0],
            "width": sizes[im.id][1],
        }
        for im in ims
    ]


def write_semires_json(
    index: RESIndex,
    out_json: str | Path,
    *,
    mask_root: str | Path | None = None,
    splits: list[str] | None = None,
    masks: bool = True,
    progress: bool = True,
) -> Path:
    """Write ``index`` (all splits, or ``splits``) as a LAVT/SemiRES json; returns its path.

    With ``masks=True`` every written ref's mask goes to ``<mask_root>/<ref id>.npy`` (default
    ``mask_root``: ``<folder of out_json>/masks``; an object without a mask, unlabeled data,
    gets no file, as in a json shipped without masks); all masks are checked to be readable before
    anything is written, and every file is written atomically (the json last; an interrupted
    conversion's temporary files are removed by the next one). ``progress``:
    bars while the masks are checked and written (only on a terminal).
    """
    from semires.data import masks as mask_ops
    from semires.utils.progress import progress_bar

    out = Path(out_json)
    chosen = splits if splits is not None else index.splits()
    refs = [ref for split in chosen for ref in index.refs_in(split)]
    cat_ids, categories = _cat_ids(index)
    data: dict[str, Any] = {split: _entries(index, split, cat_ids) for split in chosen}
    images = _images_list(index, {r.image_id for r in refs})
    for key, value in (("categories", categories), ("images", images)):
        if value is not None:
            data[key] = value
    text = json_text(data, out) + "\n"  # a NaN is refused before any file is written
    if masks:
        refs = [ref for ref in refs if index.has_mask(ref.object_id)]
        root = Path(mask_root) if mask_root is not None else out.parent / "masks"
        remove_temp_files(root)  # what an interrupted conversion left
        with progress_bar(
            refs, enabled=progress, desc="checking masks", unit="mask", leave=False
        ) as bar:
            for ref in bar:
                index.rle(ref.object_id)
        with progress_bar(
            refs, enabled=progress, desc=f"writing masks to {root}", unit="mask", leave=False
        ) as bar:
            for ref in bar:  # one sync for all masks (a sync per file grew superlinearly)
                path = root / f"{ref.id}.npy"
                mask_ops.write_mask_npy(path, index.mask(ref.object_id), fsync=False)
        sync_files()
    atomic_write_text(out, text)
    return out

"""Importing the candidate masks people already made with SAM / SAM 2 into a proposal store.

``SRC`` is a folder holding one output per image, named by the image file's stem (its name
without folder and extension, as segment-anything's ``scripts/amg.py`` names them). Formats
(:data:`SOURCE_FORMATS`; ``auto`` detects them):

- ``amg-png``: ``amg.py``'s default output, a folder per image: ``SRC/<stem>/<i>.png`` (one
  single-channel 0/255 or 0/1 mask each) and ``SRC/<stem>/metadata.csv`` with amg.py's header
  ``id,area,bbox_x0,...,predicted_iou,stability_score,...``. Required columns: ``id``,
  ``predicted_iou``, ``stability_score``; ``area`` is checked against the PNG when present. Every
  row's ``<id>.png`` must exist and every PNG must have a row.
- ``sam-json``: ``amg.py --convert-to-rle``: ``SRC/<stem>.json``, the generator's list of
  records (``segmentation`` as COCO RLE, ``area``, ``bbox``, ``predicted_iou``,
  ``stability_score``, ``point_coords``, ``crop_box``). SAM 2's ``SAM2AutomaticMaskGenerator``
  records saved with ``json.dump`` have the same keys and are read the same way. Required:
  ``segmentation``, ``predicted_iou``, ``stability_score``; ``area`` is checked when present.
- ``coco-json``: ``SRC/<stem>.json``, a list of records (or ``{"annotations": [...]}``) of
  which only ``segmentation`` (COCO RLE: ``{"size": [H, W], "counts": str | list}``) is
  required; the score is ``score``, else ``predicted_iou``, else none (every score 0, so the
  larger masks come first); ``predicted_iou`` / ``stability_score`` are kept when every record
  has them (a key some records have and others lack is an error); ``area`` is not checked (a
  COCO file's may be a polygon's).

RLE ``counts`` may be compressed (a string) or uncompressed (a list, ``output_mode=
"uncompressed_rle"``); they are checked (COCO's alphabet, run lengths adding up to H x W)
before pycocotools sees them. Every mask must have its image's size (the dataset's size of the
image, the one training checks). Empty masks are dropped, as the ``sam`` generator drops them.
Candidates are stored best first, as a generated store's: by score (``predicted_iou``, the
``sam`` generator's score), ties by larger area, then by the order in the source.

Images are matched by file stem. Two images of the selection with the same stem (``a/x.jpg``
and ``b/x.jpg``, or ``x.jpg`` and ``x.png``) cannot be told apart in ``SRC``: an error naming
both. Outputs in ``SRC`` for images outside the selection are ignored.

The store is written like a generated one (:func:`semires.proposals.generate.plan_chunks`
shards, each written atomically with the fingerprints of the image files), so training
accepts it and a changed image file is caught by :mod:`semires.proposals.checks`. Its manifest
names the generator ``import`` with the source folder and format as params. An import is
resumable: a rerun skips the images already in the store. Bad input (no output for an image,
a mask of the wrong size, a malformed record, CSV row or PNG) is one :class:`ProposalError` /
:class:`DataError` line naming the file (and record or line); the shards written before it are
complete, and a store this call created is removed again when nothing was imported.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semires.data import masks as mask_ops
from semires.errors import ConfigError, DataError, ProposalError
from semires.proposals.base import Proposals
from semires.proposals.checks import image_fingerprint, require_same_files
from semires.proposals.decode import parse_counts
from semires.proposals.generate import delete_store, plan_chunks
from semires.proposals.store import ProposalStore
from semires.proposals.store_format import MANIFEST_FILE

#: the formats :func:`import_store` reads (see the module docstring)
SOURCE_FORMATS = ("amg-png", "sam-json", "coco-json")
#: the generator name an imported store's manifest records
GENERATOR = "import"
#: the columns of amg.py's metadata.csv that are required
REQUIRED_COLUMNS = ("id", "predicted_iou", "stability_score")
METADATA_FILE = "metadata.csv"
#: a run length of a compressed COCO RLE has at most 7 characters (35 bits)
_MAX_CHUNKS = 7

SizeOf = Callable[[int], tuple[int, int]]


@dataclass(frozen=True)
class Source:
    """Where each image's output is in ``root`` and in which format."""

    root: Path
    format: str
    #: image id -> its output (amg.py's folder for amg-png, a json file otherwise)
    outputs: dict[int, Path]

    def params(self) -> dict[str, Any]:
        """What the store's manifest records as the import's parameters."""
        return {"source": str(self.root.resolve()), "source_format": self.format}


@dataclass
class ImportReport:
    """What an :func:`import_store` call did."""

    store: Path
    source_format: str
    wanted: int
    already_done: int = 0
    imported: int = 0
    candidates: int = 0
    dropped_empty: int = 0
    seconds: float = 0.0


# ---------------------------------------------------------------------------- finding outputs
def image_stems(images: Mapping[int, str | Path]) -> dict[int, str]:
    """Image id -> the stem of its file; two images with one stem are a :class:`ProposalError`
    naming both (their outputs could not be told apart)."""
    stems: dict[int, str] = {}
    seen: dict[str, int] = {}
    for image_id in sorted(images):
        stem = Path(images[image_id]).stem
        if stem in seen:
            other = seen[stem]
            raise ProposalError(
                f"images {other} ({images[other]}) and {image_id} ({images[image_id]}) have the "
                f"same file stem {stem!r}: outputs are matched to images by stem, so theirs "
                "cannot be told apart; rename one of the files or import them separately"
            )
        seen[stem] = image_id
        stems[image_id] = stem
    return stems


def expected_output(root: Path, stem: str, source_format: str) -> Path:
    """The file that must exist for the image ``stem``: its json, or its amg.py folder's
    metadata.csv."""
    return root / stem / METADATA_FILE if source_format == "amg-png" else root / f"{stem}.json"


def find_source(
    src: str | Path, images: Mapping[int, str | Path], source_format: str = "auto"
) -> Source:
    """Locate every image's output in ``src`` and settle the format (``auto``: detected).

    Everything is checked before a store is touched: ``src`` exists, stems are unambiguous,
    every image has an output and an image file."""
    root = Path(src)
    if source_format not in ("auto", *SOURCE_FORMATS):
        raise ConfigError(
            f"--source-format: expected auto, {', '.join(SOURCE_FORMATS)}; got {source_format!r}"
        )
    if not root.is_dir():
        raise ProposalError(f"mask source folder not found: {root}")
    if not images:
        raise ProposalError(f"no images selected to import masks from {root} for")
    stems = image_stems(images)
    if source_format == "auto":
        source_format = detect_format(root, stems)
    expected = {i: expected_output(root, s, source_format) for i, s in stems.items()}
    absent = [i for i, path in expected.items() if not path.is_file()]
    if absent:
        first = absent[0]
        raise ProposalError(
            f"{root}: no {source_format} output for {len(absent)} of the {len(expected)} images "
            f"(e.g. image {first}, {images[first]}: expected {expected[first]})"
        )
    outputs = {i: p.parent if source_format == "amg-png" else p for i, p in expected.items()}
    gone = [i for i in sorted(images) if not Path(images[i]).is_file()]
    if gone:
        raise DataError(
            f"image {gone[0]} not found: {images[gone[0]]} ({len(gone)} image file(s) missing; "
            "imported candidates are fingerprinted with their image file: check --image-root)"
        )
    return Source(root, source_format, outputs)


def detect_format(root: Path, stems: Mapping[int, str]) -> str:
    """``amg-png`` when ``root`` holds per-image folders for these stems, ``sam-json`` /
    ``coco-json`` when it holds ``<stem>.json`` files (by the keys of the first record)."""
    folders = [s for s in stems.values() if (root / s).is_dir()]
    files = [root / f"{s}.json" for s in stems.values() if (root / f"{s}.json").is_file()]
    if folders and files:
        raise ProposalError(
            f"{root} holds both amg.py PNG folders (e.g. {root / folders[0]}) and json files "
            f"(e.g. {files[0]}) for these images; choose one with --source-format"
        )
    if folders:
        return "amg-png"
    if not files:
        first = min(stems)
        raise ProposalError(
            f"{root} holds no output for any of the {len(stems)} images (e.g. image {first}: "
            f"neither {root / stems[first]}/ nor {root / stems[first]}.json); is it the folder "
            "amg.py wrote (its --output)?"
        )
    for path in files:
        records = read_json_records(path, "coco-json")
        if records:
            first_record = records[0] if isinstance(records[0], dict) else {}
            sam_keys = {"predicted_iou", "stability_score"} <= set(first_record)
            return "sam-json" if sam_keys else "coco-json"
    return "sam-json"  # every file is empty: nothing depends on which


# ---------------------------------------------------------------------------- json records
def read_json_records(path: Path, source_format: str) -> list[Any]:
    """The list of mask records in a json file (coco-json: also ``{"annotations": [...]}``)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ProposalError(f"{path}: not a readable JSON file ({exc})") from exc
    if source_format == "coco-json" and isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    if not isinstance(data, list):
        raise ProposalError(
            f"{path}: expected a list of mask records, got a JSON {type(data).__name__}"
        )
    return data


def number(record: Mapping[str, Any], key: str, where: str) -> float:
    """``record[key]`` as a finite float, or a :class:`ProposalError` naming ``where``."""
    if key not in record:
        raise ProposalError(f"{where}: no {key!r}")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProposalError(f"{where}: {key} must be a finite number, got {value!r}")
    return float(value)


def counts_problem(counts: bytes, total: int) -> str | None:
    """What is wrong with compressed COCO RLE ``counts`` for a mask of ``total`` pixels
    (None: nothing). Checked here because pycocotools decodes without bounds checks."""
    if not counts:
        return "are empty"
    chars = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if chars.min() < 0 or chars.max() > 63:
        return "hold a character outside COCO's RLE alphabet ('0' to 'o')"
    if chars[-1] & 0x20:
        return "end in the middle of a run length (truncated?)"
    ends = np.flatnonzero((chars & 0x20) == 0)
    if int(np.diff(ends, prepend=-1).max()) > _MAX_CHUNKS:
        return "hold a run length too long for any mask"
    runs, _ = parse_counts([counts])
    if runs.min() < 0:
        return "hold a negative run length"
    if int(runs.sum()) != total:
        return f"cover {int(runs.sum())} pixels, not the {total} of the mask's size"
    return None


def record_rle(record: Any, where: str) -> mask_ops.RLE:
    """The record's ``segmentation`` as a checked compressed RLE (``counts`` a str)."""
    seg = record.get("segmentation") if isinstance(record, dict) else None
    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise ProposalError(f"{where}: no COCO RLE segmentation ({{'size', 'counts'}})")
    size = seg["size"]
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise ProposalError(f"{where}: segmentation size must be [height, width], got {size!r}")
    h, w = size
    counts = seg["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise ProposalError(f"{where}: uncompressed counts must be integers >= 0")
        if sum(counts) != h * w:
            raise ProposalError(
                f"{where}: segmentation counts cover {sum(counts)} pixels, not the {h * w} of "
                f"a {h}x{w} mask"
            )
        from pycocotools import mask as mask_utils

        coco = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        return {"size": [h, w], "counts": coco["counts"].decode("ascii")}
    if not isinstance(counts, str) or not counts.isascii():
        raise ProposalError(f"{where}: segmentation counts must be an RLE string or a list")
    problem = counts_problem(counts.encode("ascii"), h * w)
    if problem:
        raise ProposalError(f"{where}: segmentation counts {problem} ({h}x{w})")
    return {"size": [h, w], "counts": counts}


def optional_scores(records: list[Any], key: str, where: Callable[[int], str]) -> list | None:
    """``record[key]`` of every record, or None when no record has it (some but not all: an
    error naming the first record without it)."""
    have = [isinstance(r, dict) and key in r for r in records]
    if not any(have):
        return None
    if not all(have):
        raise ProposalError(
            f"{where(have.index(False))}: no {key!r}, while record {have.index(True)} has one; "
            "give every record one or none"
        )
    return [number(r, key, where(k)) for k, r in enumerate(records)]


def json_scores(records: list[Any], source_format: str, where: Callable[[int], str]) -> tuple:
    """(score, predicted_iou, stability_score) columns of the records (None: absent)."""
    for k, record in enumerate(records):
        if not isinstance(record, dict):
            raise ProposalError(f"{where(k)}: expected an object, got {type(record).__name__}")
    if source_format == "sam-json":
        pred = [number(r, "predicted_iou", where(k)) for k, r in enumerate(records)]
        stab = [number(r, "stability_score", where(k)) for k, r in enumerate(records)]
        return pred, pred, stab
    pred = optional_scores(records, "predicted_iou", where)
    stab = optional_scores(records, "stability_score", where)
    score = optional_scores(records, "score", where) if records else None
    if score is None:
        score = pred if pred is not None else [0.0] * len(records)
    return score, pred, stab


def read_json_output(
    path: Path, source_format: str, image_id: int, size: tuple[int, int]
) -> tuple[Proposals, int]:
    """One image's candidates from its json file (and the number of empty masks dropped)."""
    records = read_json_records(path, source_format)

    def where(k: int) -> str:
        return f"{path} record {k}"

    score, pred, stab = json_scores(records, source_format, where)
    rles = []
    for k, record in enumerate(records):
        rle = record_rle(record, where(k))
        mask_ops.check_mask_size(
            (rle["size"][0], rle["size"][1]), size, where(k), f"image {image_id}'s mask"
        )
        rles.append(rle)
    # amg.py's area is the mask's; a COCO file's may be a polygon's: not checked
    claimed = [(k, r["area"]) for k, r in enumerate(records) if "area" in r]
    if source_format != "sam-json":
        claimed = []
    return assemble(size, rles, (score, pred, stab), claimed, where)


# ---------------------------------------------------------------------------- amg.py PNG folders
@dataclass(frozen=True)
class MaskRow:
    """One row of amg.py's metadata.csv."""

    line: int
    id: int
    predicted_iou: float
    stability_score: float
    area: int | None


def read_metadata(path: Path) -> list[MaskRow]:
    """The rows of an amg.py ``metadata.csv`` (see :data:`REQUIRED_COLUMNS`)."""
    if not path.is_file():
        raise ProposalError(f"{path}: missing (amg.py writes {METADATA_FILE} beside the PNGs)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProposalError(f"{path}: cannot read it ({exc})") from exc
    rows = list(csv.reader(lines))
    header = [c.strip() for c in rows[0]] if rows else []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ProposalError(
            f"{path} line 1: no column {missing[0]!r} in the header (amg.py's has "
            f"{', '.join(REQUIRED_COLUMNS)} among others)"
        )
    col = {name: header.index(name) for name in (*REQUIRED_COLUMNS, "area") if name in header}
    parsed: list[MaskRow] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ProposalError(
                f"{path} line {line}: {len(row)} fields, the header has {len(header)}"
            )
        parsed.append(_metadata_row(row, col, f"{path} line {line}", line))
    first: dict[int, int] = {}
    for row in parsed:
        if row.id in first:
            raise ProposalError(
                f"{path} line {row.line}: id {row.id} appears again (first on line {first[row.id]})"
            )
        first[row.id] = row.line
    return parsed


def _metadata_row(row: list[str], col: Mapping[str, int], where: str, line: int) -> MaskRow:
    values: dict[str, float] = {}
    for name, index in col.items():
        text = row[index].strip()
        try:
            values[name] = float(text)
        except ValueError:
            raise ProposalError(f"{where}: {name} {text!r} is not a number") from None
        if not math.isfinite(values[name]):
            raise ProposalError(f"{where}: {name} {text!r} is not a finite number")
    for name in ("id", "area"):
        if name in values and (values[name] < 0 or values[name] != int(values[name])):
            raise ProposalError(f"{where}: {name} {row[col[name]]!r} is not an integer >= 0")
    area = int(values["area"]) if "area" in values else None
    return MaskRow(
        line, int(values["id"]), values["predicted_iou"], values["stability_score"], area
    )


def read_png_output(folder: Path, image_id: int, size: tuple[int, int]) -> tuple[Proposals, int]:
    """One image's candidates from its amg.py folder (and the number of empty masks dropped)."""
    csv_path = folder / METADATA_FILE
    rows = read_metadata(csv_path)
    listed = {f"{r.id}.png" for r in rows}
    extra = sorted(p.name for p in folder.glob("*.png") if p.name not in listed)
    if extra:
        raise ProposalError(f"{folder / extra[0]}: a mask without a row in {csv_path}")
    rles = []
    for row in rows:
        path = folder / f"{row.id}.png"
        mask = mask_ops.read_mask_file(path)
        mask_ops.check_mask_size(mask.shape, size, str(path), f"image {image_id}'s mask")
        rles.append(mask_ops.encode(mask))
    pred = [r.predicted_iou for r in rows]
    stab = [r.stability_score for r in rows]
    claimed = [(k, r.area) for k, r in enumerate(rows) if r.area is not None]

    def where(k: int) -> str:
        return f"{csv_path} line {rows[k].line} ({rows[k].id}.png)"

    return assemble(size, rles, (pred, pred, stab), claimed, where)


# ---------------------------------------------------------------------------- both
def assemble(
    size: tuple[int, int],
    rles: list[mask_ops.RLE],
    columns: tuple[list | None, list | None, list | None],
    claimed_areas: list[tuple[int, Any]],
    where: Callable[[int], str],
) -> tuple[Proposals, int]:
    """Candidates best first, empty ones dropped; each claimed area must be the mask's."""
    score, pred, stab = (None if c is None else np.asarray(c, np.float32) for c in columns)
    props = Proposals.from_rles(size, rles, score, pred, stab)
    for k, claimed in claimed_areas:
        if claimed != int(props.areas[k]):
            raise ProposalError(
                f"{where(k)}: area {claimed!r} but the mask has {int(props.areas[k])} pixels"
            )
    keep = np.flatnonzero(props.areas > 0)
    return props.select(keep).sorted_by_score(), len(props) - len(keep)


def read_output(source: Source, image_id: int, size: tuple[int, int]) -> tuple[Proposals, int]:
    """One image's candidates from ``source`` (and the number of empty masks dropped)."""
    path = source.outputs[image_id]
    if source.format == "amg-png":
        return read_png_output(path, image_id, size)
    return read_json_output(path, source.format, image_id, size)


# ---------------------------------------------------------------------------- the store
def import_store(
    src: str | Path,
    images: Mapping[int, str | Path],
    image_size: SizeOf,
    out_dir: str | Path,
    *,
    source_format: str = "auto",
    shard_size: int = 64,
    progress: bool = True,
    overwrite: bool = False,
) -> ImportReport:
    """Import the outputs in ``src`` for ``images`` (image id -> its file) into the proposal
    store ``out_dir`` (created, or completed: images already in it are skipped).

    ``image_size`` gives an image's (height, width) as the dataset has it (what training checks
    the store against). Everything about ``src`` that can be checked without reading the masks
    is checked before the store is touched; see the module docstring for the rest.
    """
    source = find_source(src, images, source_format)
    plan = plan_chunks(list(images), shard_size)
    out = Path(out_dir)
    if overwrite:
        delete_store(out)
    existed = out.exists()
    fresh = not (out / MANIFEST_FILE).is_file()
    store = ProposalStore.create(out, GENERATOR, source.params())
    report = ImportReport(store.root, source.format, sum(map(len, plan)))
    start = time.perf_counter()
    try:
        require_same_files(
            store,
            {i: images[i] for i in images if store.has(i)},
            "use another --out, or --overwrite to import again",
            progress=progress,
        )
        todo = [[i for i in chunk if not store.has(i)] for chunk in plan]
        report.already_done = report.wanted - sum(map(len, todo))
        _import_chunks(store, source, todo, images, image_size, report, progress)
    except BaseException:
        if fresh and len(store) == 0:
            delete_store(out)
            if not existed:
                _remove_empty_dirs(out)
        raise
    store.write_index()
    store.remove_temp_files()
    report.seconds = time.perf_counter() - start
    return report


def _import_chunks(
    store: ProposalStore,
    source: Source,
    todo: list[list[int]],
    images: Mapping[int, str | Path],
    image_size: SizeOf,
    report: ImportReport,
    progress: bool,
) -> None:
    """Read each chunk's outputs and write them as one shard (atomically)."""
    from semires.utils.progress import progress_bar

    total = sum(map(len, todo))
    with progress_bar(
        total=total, enabled=progress, unit="img", desc=f"import {source.format}"
    ) as bar:
        for chunk in todo:
            if not chunk:
                continue
            items = []
            for image_id in chunk:
                props, dropped = read_output(source, image_id, tuple(image_size(image_id)))
                items.append((image_id, props))
                report.candidates += len(props)
                report.dropped_empty += dropped
                bar.update(1)
            store.write_shard(items, fingerprints={i: _fingerprint(i, images) for i in chunk})
            report.imported += len(items)


def _fingerprint(image_id: int, images: Mapping[int, str | Path]) -> str:
    try:
        return image_fingerprint(images[image_id])
    except OSError as exc:
        raise DataError(f"cannot read image {image_id} ({images[image_id]}): {exc}") from exc


def _remove_empty_dirs(root: Path) -> None:
    """Remove ``root`` (and its ``shards`` folder) when they are empty: a store this call
    created and left without any image."""
    for folder in (root / "shards", root):
        if folder.is_dir():
            try:
                folder.rmdir()
            except OSError:  # not empty: not ours to remove
                return

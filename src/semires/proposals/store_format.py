"""The on-disk format of a proposal store: records, shards, the index and the manifest.

Layout of a store folder::

    manifest.json         generator name + params (+ checkpoint hash), semires version, counts
    index.json            image id -> (shard, offset, length, crc32, height, width, #candidates,
                          image fingerprint); a cache: rebuilt from the shard footers whenever it
                          is missing or stale
    shards/<first image id>-<crc of its image ids>.srp

A shard holds the records of up to a few hundred images and ends with its own footer (the index
of its records) and a trailer, so every shard describes itself. Shards and the index are written
to a temporary file and renamed (``semires.utils.io``): a reader or a resumed run never sees a
half-written file, and a run killed at any moment leaves only complete shards.

Shard file: ``MAGIC`` | records | footer (JSON) | trailer (``<Q`` footer length, ``TRAILER``).
The footer lists the records and, per image, a fingerprint of the image file the candidates were
made from (:func:`semires.proposals.checks.image_fingerprint`), so a store is never used with
other images that happen to have the same ids and sizes (another synthetic seed, another
dataset); stores written before the fingerprints existed have none and are not checked.
Record (little-endian): header ``<4sqIIII`` (``RECORD``, image id, height, width, K, flags), then
float32 scores [K], uint32 areas [K], float32 boxes [K, 4] (x y w h), float32 predicted IoU [K]
(flag 1), float32 stability score [K] (flag 2), uint32 lengths of the RLE strings [K] and the
compressed COCO RLE strings themselves, concatenated. Each record's crc32 is in the footer and is
checked on every read.

Pure functions of bytes and files; :class:`semires.proposals.store.ProposalStore` puts them
together into random access by image id, :mod:`semires.proposals.checks` compares a store with
the images of a dataset and :mod:`semires.proposals.verify` checks every byte of one.
"""

from __future__ import annotations

import json
import mmap
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semires.errors import ProposalError
from semires.proposals.base import Proposals
from semires.utils.io import atomic_write_json

FORMAT = "semires-proposals"
FORMAT_VERSION = 1
MAGIC = b"SEMIRES-PROPOSALS-SHARD v1\n"
TRAILER = b"SRPSEND1"
RECORD = b"SRPR"
_RECORD_HEADER = struct.Struct("<4sqIIII")
_TRAILER = struct.Struct("<Q8s")
_HAS_PRED_IOU = 1
_HAS_STABILITY = 2
SHARD_SUFFIX = ".srp"
SHARD_DIR = "shards"
INDEX_FILE = "index.json"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True, slots=True)
class Entry:
    """Where one image's record lives and what it holds."""

    shard: str
    offset: int
    length: int
    crc: int
    height: int
    width: int
    count: int
    #: :func:`~semires.proposals.checks.image_fingerprint` of the image file the candidates were
    #: made from (None: unknown)
    fingerprint: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)


# ---------------------------------------------------------------------------- records
def encode_record(image_id: int, props: Proposals) -> bytes:
    """One image's candidates as a binary record."""
    k = len(props)
    flags = (_HAS_PRED_IOU if props.predicted_iou is not None else 0) | (
        _HAS_STABILITY if props.stability_score is not None else 0
    )
    counts = [r["counts"].encode("ascii") for r in props.rles]
    parts = [
        _RECORD_HEADER.pack(RECORD, int(image_id), props.size[0], props.size[1], k, flags),
        props.scores.astype("<f4").tobytes(),
        props.areas.astype("<u4").tobytes(),
        props.bboxes.astype("<f4").tobytes(),
    ]
    if props.predicted_iou is not None:
        parts.append(props.predicted_iou.astype("<f4").tobytes())
    if props.stability_score is not None:
        parts.append(props.stability_score.astype("<f4").tobytes())
    parts.append(np.fromiter(map(len, counts), "<u4", k).tobytes())
    parts.extend(counts)
    return b"".join(parts)


@dataclass
class _Record:
    image_id: int
    size: tuple[int, int]
    scores: np.ndarray
    areas: np.ndarray
    bboxes: np.ndarray
    predicted_iou: np.ndarray | None
    stability_score: np.ndarray | None
    counts: list[bytes]

    def proposals(self) -> Proposals:
        size = [self.size[0], self.size[1]]
        rles = [{"size": list(size), "counts": c.decode("ascii")} for c in self.counts]
        return Proposals(
            self.size,
            rles,
            self.areas.astype(np.int64),
            self.bboxes,
            self.scores,
            self.predicted_iou,
            self.stability_score,
        )


def decode_record(buf: bytes | memoryview) -> _Record:
    """Parse a binary record; ``ValueError`` when it is malformed."""
    magic, image_id, h, w, k, flags = _RECORD_HEADER.unpack_from(buf, 0)
    if magic != RECORD:
        raise ValueError("bad record magic")
    pos = _RECORD_HEADER.size

    def take(dtype: str, n: int) -> np.ndarray:  # a copy: nothing may keep the shard mapped
        nonlocal pos
        arr = np.frombuffer(buf, dtype, n, pos).copy()
        pos += arr.nbytes
        return arr

    scores = take("<f4", k)
    areas = take("<u4", k)
    bboxes = take("<f4", 4 * k).reshape(k, 4)
    pred = take("<f4", k) if flags & _HAS_PRED_IOU else None
    stab = take("<f4", k) if flags & _HAS_STABILITY else None
    lengths = take("<u4", k).astype(np.int64)
    ends = pos + np.cumsum(lengths)
    if k and int(ends[-1]) != len(buf):
        raise ValueError("record length does not match its RLE strings")
    raw = bytes(buf[pos:])
    starts = ends - lengths - pos
    counts = [raw[s : s + n] for s, n in zip(starts.tolist(), lengths.tolist(), strict=True)]
    return _Record(int(image_id), (h, w), scores, areas, bboxes, pred, stab, counts)


# ---------------------------------------------------------------------------- shards
def shard_name(image_ids: list[int]) -> str:
    """A shard's file name from the image ids it holds (unique per content)."""
    key = zlib.crc32(",".join(map(str, image_ids)).encode("ascii"))
    return f"{image_ids[0]:012d}-{key:08x}{SHARD_SUFFIX}"


def shard_files(shard_dir: Path) -> list[str]:
    """The sorted names of the shard files in ``shard_dir`` (temporary files left out)."""
    if not shard_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in shard_dir.iterdir()
        if p.name.endswith(SHARD_SUFFIX) and not p.name.startswith(".")
    )


def encode_shard(
    items: list[tuple[int, Proposals]], fingerprints: Mapping[int, str] | None = None
) -> bytes:
    """The bytes of a shard holding ``items`` (image id, candidates) in that order, with the
    ``fingerprints`` (image id -> image fingerprint) of their image files if given."""
    body = [MAGIC]
    entries = []
    offset = len(MAGIC)
    for image_id, props in items:
        record = encode_record(image_id, props)
        entries.append(
            [int(image_id), offset, len(record), zlib.crc32(record), *props.size, len(props)]
        )
        body.append(record)
        offset += len(record)
    content: dict[str, Any] = {"entries": entries}
    if fingerprints:
        content["fingerprints"] = {
            str(image_id): fingerprints[image_id]
            for image_id, _ in items
            if image_id in fingerprints
        }
    footer = json.dumps(content, separators=(",", ":")).encode("utf-8")
    body.append(footer)
    body.append(_TRAILER.pack(len(footer), TRAILER))
    return b"".join(body)


def read_footer(path: Path) -> dict[int, Entry]:
    """The entries of a shard file, from its footer; :class:`ProposalError` if it is damaged."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(len(MAGIC))
            if head != MAGIC or size < len(MAGIC) + _TRAILER.size:
                raise ValueError("not a proposal shard (bad header)")
            fh.seek(size - _TRAILER.size)
            footer_len, magic = _TRAILER.unpack(fh.read(_TRAILER.size))
            if magic != TRAILER or footer_len > size - len(MAGIC) - _TRAILER.size:
                raise ValueError("truncated (no trailer)")
            fh.seek(size - _TRAILER.size - footer_len)
            footer = json.loads(fh.read(footer_len).decode("utf-8"))
        records_end = size - _TRAILER.size - footer_len
        fingerprints = footer.get("fingerprints", {})
        out = {}
        for image_id, offset, length, crc, h, w, k in footer["entries"]:
            if offset < len(MAGIC) or offset + length > records_end:
                raise ValueError(f"entry of image {image_id} points outside the shard")
            fp = fingerprints.get(str(image_id))
            out[int(image_id)] = Entry(path.name, offset, length, crc, h, w, k, fp)
        return out
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ProposalError(f"corrupt proposal shard {path}: {exc}") from exc


def entries_from_shards(shard_dir: Path, shards: list[str]) -> dict[int, Entry]:
    """Image id -> entry from the footers of ``shards`` (sorted: an image in two shards keeps
    the first one); :class:`ProposalError` for a damaged shard."""
    entries: dict[int, Entry] = {}
    for name in shards:
        for image_id, entry in read_footer(shard_dir / name).items():
            entries.setdefault(image_id, entry)
    return entries


def load_record(path: Path, data: bytes | mmap.mmap, image_id: int, entry: Entry) -> _Record:
    """The record of ``image_id`` in the shard ``data`` (read from ``path``), fully checked."""
    if data[-len(TRAILER) :] != TRAILER:
        raise ProposalError(f"corrupt proposal shard {path}: truncated (no trailer)")
    end = entry.offset + entry.length
    if end > len(data) - _TRAILER.size:
        raise ProposalError(f"corrupt proposal shard {path}: image {image_id} is cut off")
    with memoryview(data)[entry.offset : end] as buf:
        if zlib.crc32(buf) != entry.crc:
            raise ProposalError(
                f"corrupt proposal shard {path}: the record of image {image_id} fails its checksum"
            )
        try:
            record = decode_record(buf)
        except (ValueError, struct.error) as exc:
            raise ProposalError(f"corrupt proposal shard {path}: image {image_id}: {exc}") from exc
    if record.image_id != int(image_id) or record.size != entry.size:
        raise ProposalError(
            f"corrupt proposal shard {path}: the record at image {image_id}'s offset "
            f"belongs to image {record.image_id}"
        )
    return record


# ---------------------------------------------------------------------------- index
def read_index(root: Path, shards: list[str]) -> dict[int, Entry] | None:
    """The entries of ``root/index.json`` when it lists exactly ``shards``; None when it is
    missing, unreadable, malformed or stale (the index is a cache of the shard footers).
    An index written before fingerprints existed has 7 fields per entry (no fingerprint)."""
    path = root / INDEX_FILE
    try:
        index = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("shards") != shards:
        return None
    names = index["shards"]
    try:
        return {
            int(image_id): Entry(names[row[0]], *row[1:8])
            for image_id, row in index["entries"].items()
        }
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None


def write_index(root: Path, shards: list[str], entries: Mapping[int, Entry]) -> None:
    """Write ``root/index.json`` (atomically) for ``entries`` held in ``shards``."""
    position = {name: i for i, name in enumerate(shards)}
    rows = {
        str(image_id): [
            position[e.shard],
            e.offset,
            e.length,
            e.crc,
            e.height,
            e.width,
            e.count,
            e.fingerprint,
        ]
        for image_id, e in sorted(entries.items())
    }
    atomic_write_json(root / INDEX_FILE, {"shards": shards, "entries": rows}, indent=None)


# ---------------------------------------------------------------------------- manifest
def _normalise(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, sort_keys=True))


def params_differences(stored: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """``key: stored -> expected`` for every knob that differs (missing keys included)."""
    a, b = _normalise(stored), _normalise(expected)
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def make_manifest(generator: str, params: dict[str, Any]) -> dict[str, Any]:
    """A new store's manifest (counts are filled in when the index is written)."""
    from semires.version import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generator": generator,
        "params": _normalise(params),
        "checkpoint_sha256": params.get("checkpoint_sha256"),
        "semires_version": __version__,
        "images": 0,
        "candidates": 0,
    }


def with_counts(manifest: dict[str, Any], entries: Mapping[int, Entry]) -> dict[str, Any]:
    """``manifest`` with the number of images and candidates of ``entries``."""
    counts = [e.count for e in entries.values()]
    return {**manifest, "images": len(counts), "candidates": int(sum(counts))}


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of the store at ``root``; :class:`ProposalError` if absent or invalid."""
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        raise ProposalError(f"no proposal store at {root} (missing {path})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProposalError(f"unreadable proposal manifest {path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ProposalError(f"{path} is not a semires proposal manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ProposalError(
            f"{path}: store format version {manifest.get('format_version')}, "
            f"this semires reads version {FORMAT_VERSION}"
        )
    return manifest


def check_config(
    root: str | Path,
    manifest: dict[str, Any],
    generator: str | None,
    params: dict[str, Any] | None,
) -> None:
    """A :class:`ProposalError` when the store at ``root`` (its ``manifest``) was made with
    another generator than ``generator`` or other ``params`` than these (None: not checked)."""
    if generator is not None and manifest["generator"] != generator:
        raise ProposalError(
            f"proposal store {root} holds candidates of generator {manifest['generator']!r}, "
            f"not {generator!r} (pass allow_mismatch / --allow-mismatch to use it anyway)"
        )
    if params is not None:
        diff = params_differences(manifest["params"], params)
        if diff:
            raise ProposalError(
                f"proposal store {root} was made with other {manifest['generator']} settings "
                f"({'; '.join(diff)}); use another folder or allow the mismatch"
            )

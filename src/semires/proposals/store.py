"""The proposal store: per-image candidate masks as COCO RLE in sharded files with an index.

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
made from (:func:`image_fingerprint`), so a store is never used with other images that happen to
have the same ids and sizes (another synthetic seed, another dataset); stores written before the
fingerprints existed have none and are not checked.
Record (little-endian): header ``<4sqIIII`` (``RECORD``, image id, height, width, K, flags), then
float32 scores [K], uint32 areas [K], float32 boxes [K, 4] (x y w h), float32 predicted IoU [K]
(flag 1), float32 stability score [K] (flag 2), uint32 lengths of the RLE strings [K] and the
compressed COCO RLE strings themselves, concatenated. Each record's crc32 is in the footer and is
checked on every read.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semires.errors import ProposalError
from semires.proposals.base import Proposals
from semires.proposals.decode import decode_packed, decode_resized
from semires.utils.io import atomic_open, atomic_write_json, remove_temp_files

if TYPE_CHECKING:
    import torch

    from semires.utils.bits import PackedMasks

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
    #: :func:`image_fingerprint` of the image file the candidates were made from (None: unknown)
    fingerprint: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)


FINGERPRINT_BYTES = 8192


def image_fingerprint(path: str | Path) -> str:
    """A cheap content key of an image file: BLAKE2b (8 bytes, hex) of its size and of its first
    and last ``FINGERPRINT_BYTES`` bytes.

    Two different image files under the same name (a synthetic benchmark drawn with another seed,
    another dataset numbered the same way) differ there; reading 16 KiB instead of the whole
    file keeps the check fast on a dataset of 100k images. An unreadable file is an ``OSError``.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(FINGERPRINT_BYTES)
        if size > 2 * FINGERPRINT_BYTES:
            fh.seek(size - FINGERPRINT_BYTES)
        tail = fh.read(FINGERPRINT_BYTES)
    digest = hashlib.blake2b(digest_size=8)
    digest.update(size.to_bytes(8, "little"))
    digest.update(head)
    digest.update(tail)
    return digest.hexdigest()


def made_from_other_file(entry: Entry, path: str | Path) -> bool:
    """Whether ``entry``'s candidates were made from a file other than ``path`` (False when the
    entry has no fingerprint: a store written before they existed). ``OSError`` if unreadable."""
    return entry.fingerprint is not None and image_fingerprint(path) != entry.fingerprint


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


def encode_shard(
    items: list[tuple[int, Proposals]], fingerprints: Mapping[int, str] | None = None
) -> bytes:
    """The bytes of a shard holding ``items`` (image id, candidates) in that order, with the
    ``fingerprints`` (image id -> :func:`image_fingerprint`) of their image files if given."""
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
    """A new store's manifest (counts are filled in by :meth:`ProposalStore.write_index`)."""
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


# ---------------------------------------------------------------------------- store
class ProposalStore:
    """Random access to the candidates of a store folder by image id.

    Open with :meth:`open` (reading) or :meth:`create` (writing; makes the manifest). The index
    is loaded once; shards are memory-mapped on first use (safe to share with forked workers).
    """

    def __init__(self, root: str | Path, manifest: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self._entries: dict[int, Entry] = {}
        self._maps: dict[str, mmap.mmap] = {}
        self._shards_seen: set[str] = set()
        self.index_was_stale = False
        self._load_index()

    # ------------------------------------------------------------------ opening
    @property
    def shard_dir(self) -> Path:
        return self.root / "shards"

    @property
    def generator(self) -> str:
        return str(self.manifest["generator"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.manifest["params"])

    @staticmethod
    def read_manifest(root: str | Path) -> dict[str, Any]:
        """The manifest of the store at ``root``; :class:`ProposalError` if absent or invalid."""
        path = Path(root) / "manifest.json"
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

    @classmethod
    def open(
        cls,
        root: str | Path,
        expect_generator: str | None = None,
        expect_params: dict[str, Any] | None = None,
        allow_mismatch: bool = False,
    ) -> ProposalStore:
        """Open a store for reading.

        When ``expect_generator`` / ``expect_params`` are given, a store made with another
        generator or other parameters raises a :class:`ProposalError` listing the differences,
        unless ``allow_mismatch``.
        """
        manifest = cls.read_manifest(root)
        if not allow_mismatch:
            _check_config(root, manifest, expect_generator, expect_params)
        return cls(root, manifest)

    @classmethod
    def create(cls, root: str | Path, generator: str, params: dict[str, Any]) -> ProposalStore:
        """Open a store for writing candidates of ``generator`` with ``params``.

        A new folder gets a manifest; an existing store must have been made with the same
        generator and parameters (a :class:`ProposalError` otherwise: use another folder).
        """
        root = Path(root)
        has_manifest = (root / "manifest.json").is_file
        if (
            not has_manifest()
            and root.exists()
            and (not root.is_dir() or not _blank(root))
            and not has_manifest()  # another rank may have just written it
        ):
            raise ProposalError(
                f"{root} exists and is not a proposal store (no manifest.json); "
                "choose a new or empty folder"
            )
        if has_manifest():
            manifest = cls.read_manifest(root)
            _check_config(root, manifest, generator, params)
        else:
            manifest = make_manifest(generator, params)
            atomic_write_json(root / "manifest.json", manifest)
        (root / "shards").mkdir(parents=True, exist_ok=True)
        return cls(root, manifest)

    def _shard_files(self) -> list[str]:
        if not self.shard_dir.is_dir():
            return []
        return sorted(
            p.name
            for p in self.shard_dir.iterdir()
            if p.name.endswith(SHARD_SUFFIX) and not p.name.startswith(".")
        )

    def _load_index(self) -> None:
        shards = self._shard_files()
        path = self.root / "index.json"
        try:
            index = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, ValueError):
            index = None
        if index is not None and index.get("shards") == shards:
            names = index["shards"]
            self._shards_seen = set(names)
            # an index written before fingerprints existed has 7 fields per entry
            self._entries = {
                int(image_id): Entry(names[row[0]], *row[1:8])
                for image_id, row in index["entries"].items()
            }
        else:
            self.index_was_stale = True
            self._entries = self._entries_from_shards(shards)

    def _entries_from_shards(self, shards: list[str]) -> dict[int, Entry]:
        self._shards_seen = set(shards)
        entries: dict[int, Entry] = {}
        for name in shards:  # sorted: an image in two shards keeps the first one
            for image_id, entry in read_footer(self.shard_dir / name).items():
                entries.setdefault(image_id, entry)
        return entries

    def refresh(self) -> None:
        """Re-read the index (e.g. after other processes added shards)."""
        self.close()
        self._load_index()

    # ------------------------------------------------------------------ queries
    def image_ids(self) -> list[int]:
        """Sorted ids of the images that have candidates."""
        return sorted(self._entries)

    def has(self, image_id: int) -> bool:
        return int(image_id) in self._entries

    __contains__ = has

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, image_id: int) -> Entry:
        entry = self._entries.get(int(image_id))
        if entry is None:
            raise ProposalError(
                f"image {image_id} has no candidates in the proposal store {self.root}"
            )
        return entry

    def image_size(self, image_id: int) -> tuple[int, int]:
        """(height, width) of the image the candidates were made for."""
        return self.entry(image_id).size

    def count(self, image_id: int) -> int:
        """Number of candidates of an image."""
        return self.entry(image_id).count

    def fingerprint(self, image_id: int) -> str | None:
        """:func:`image_fingerprint` of the file the candidates were made from (None: unknown)."""
        return self.entry(image_id).fingerprint

    def stale_images(
        self,
        image_paths: Mapping[int, str | Path],
        *,
        threads: int = 8,
        progress: bool = False,
    ) -> list[int]:
        """The ids among ``image_paths`` (id -> image file now) whose candidates were made from
        another file: stored fingerprint != the file's. Images without a stored fingerprint (old
        stores) or not in the store are not reported. An unreadable file is a ``DataError``.

        Each check reads 16 KiB of one file; ``threads`` files are read at once (the reads wait
        on the disk, not on Python), which matters on network file systems and for the ~17k
        training images of RefCOCO. ``progress`` shows a bar (``fingerprints``)."""
        from concurrent.futures import ThreadPoolExecutor

        from semires.errors import DataError
        from semires.utils.progress import progress_bar

        entries = ((int(i), p, self._entries.get(int(i))) for i, p in sorted(image_paths.items()))
        checked = [(i, p, e) for i, p, e in entries if e is not None and e.fingerprint is not None]

        def other_file(item: tuple[int, str | Path, Entry]) -> bool:
            image_id, path, entry = item
            try:
                return made_from_other_file(entry, path)
            except OSError as exc:
                raise DataError(f"cannot read image {image_id} ({path}): {exc}") from exc

        with ThreadPoolExecutor(max(1, min(threads, len(checked)))) as pool:
            flags = list(
                progress_bar(
                    pool.map(other_file, checked),
                    enabled=progress,
                    total=len(checked),
                    desc="fingerprints",
                    unit="img",
                    leave=False,
                )
            )
        return [image_id for (image_id, _, _), flag in zip(checked, flags, strict=True) if flag]

    def check_same_images(
        self, image_paths: Mapping[int, str | Path], hint: str, *, progress: bool = False
    ) -> None:
        """Refuse a store whose candidates of some of ``image_paths`` (image id -> its file now)
        were made from other files (:meth:`stale_images`): a :class:`ProposalError` naming how
        many and one of them, ending with ``hint`` (what to do). The one check of every command
        that reads or completes a store for a dataset (propose, show, quality)."""
        done = {int(i): p for i, p in image_paths.items() if self.has(i)}
        stale = self.stale_images(done, progress=progress)
        if stale:
            raise ProposalError(
                f"proposal store {self.root}: {len(stale)} of the {len(done)} images already in "
                f"it were made from other image files (e.g. image {stale[0]}, now "
                f"{done[stale[0]]}): it belongs to other images with the same ids; {hint}"
            )

    def check_for_images(
        self,
        image_ids: list[int],
        image_size: Any,
        image_path: Any,
        *,
        sizes_and_files: bool = True,
        progress: bool = False,
    ) -> None:
        """Refuse a store that does not cover ``image_ids`` as they are now: an image without
        an entry, one whose candidates were made for another size (``image_size``: id ->
        (height, width)) or from another file (``image_path``: id -> its file); one-line
        :class:`ProposalError`s saying what to do. ``sizes_and_files=False`` checks coverage only
        (``semi.allow_proposal_mismatch``). What training checks before it starts."""
        wanted = sorted(set(image_ids))
        missing = [i for i in wanted if not self.has(i)]
        if missing:
            raise ProposalError(
                f"proposal store {self.root} has no entry for {len(missing)} of the "
                f"{len(wanted)} unlabeled images (e.g. {missing[:5]}): it was made for other "
                f"images; regenerate it with `semires propose ... --out {self.root}`"
            )
        if not sizes_and_files:
            return
        for image_id in wanted:
            stored, actual = self.image_size(image_id), image_size(image_id)
            if tuple(stored) != tuple(actual):
                raise ProposalError(
                    f"proposal store {self.root}: image {image_id} is {actual[0]}x{actual[1]} but "
                    f"its candidates were made for {stored[0]}x{stored[1]}; regenerate the store "
                    "(or set semi.allow_proposal_mismatch=true to resize them)"
                )
        self.check_same_images(
            {i: image_path(i) for i in wanted},
            f"regenerate it with `semires propose ... --overwrite --out {self.root}` (or set "
            "semi.allow_proposal_mismatch=true to use it anyway)",
            progress=progress,
        )

    # ------------------------------------------------------------------ reading
    def _shard_map(self, shard: str) -> mmap.mmap:
        mapped = self._maps.get(shard)
        if mapped is None:
            path = self.shard_dir / shard
            try:
                with open(path, "rb") as fh:
                    mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as exc:
                raise ProposalError(f"cannot read proposal shard {path}: {exc}") from exc
            self._maps[shard] = mapped
        return mapped

    def _record(self, image_id: int, expect_size: tuple[int, int] | None) -> _Record:
        entry = self.entry(image_id)
        if expect_size is not None and tuple(expect_size) != entry.size:
            raise ProposalError(
                f"image {image_id}: candidates in {self.root} were made for size "
                f"{entry.height}x{entry.width} but the image is "
                f"{int(expect_size[0])}x{int(expect_size[1])} (regenerate the store)"
            )
        return load_record(
            self.shard_dir / entry.shard, self._shard_map(entry.shard), image_id, entry
        )

    def read(self, image_id: int, expect_size: tuple[int, int] | None = None) -> Proposals:
        """The candidates of one image.

        ``expect_size`` (height, width) is the size of the image as it is on disk now; a store
        made for an image of another size raises a :class:`ProposalError` naming both sizes.
        """
        return self._record(image_id, expect_size).proposals()

    def masks(
        self,
        image_id: int,
        size: tuple[int, int] | None = None,
        expect_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """One image's candidates as a [K, h, w] bool tensor, nearest-resized to ``size``.

        The fast path for training (no per-pixel decode at full resolution, see
        :mod:`semires.proposals.decode`); ``size`` defaults to the image size. The tensor is a
        transposed view of a column-major buffer; ``.contiguous()`` makes a C-ordered copy.
        """
        import torch

        record = self._record(image_id, expect_size)
        return torch.from_numpy(decode_resized(record.counts, record.size, size))

    def packed_masks(
        self,
        image_id: int,
        size: tuple[int, int] | None = None,
        expect_size: tuple[int, int] | None = None,
    ) -> PackedMasks:
        """:meth:`masks`, bit-packed (64 pixels to a word, :mod:`semires.utils.bits`), with
        their areas at ``size``: what the training loader carries (7.5x fewer bytes at 480)."""
        from semires.utils.bits import PackedMasks

        record = self._record(image_id, expect_size)
        out = record.size if size is None else size
        return PackedMasks.from_numpy(decode_packed(record.counts, record.size, out), out[0])

    def close(self) -> None:
        """Unmap the shards (they are mapped again on the next read)."""
        for mapped in self._maps.values():
            mapped.close()
        self._maps.clear()

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    # ------------------------------------------------------------------ writing
    def write_shard(
        self,
        items: list[tuple[int, Proposals]],
        update_index: bool = True,
        fingerprints: Mapping[int, str] | None = None,
    ) -> str:
        """Write ``items`` (image id, candidates) as one new shard, atomically; returns its name.

        ``fingerprints``: image id -> :func:`image_fingerprint` of the file each image's
        candidates were made from (recorded in the shard; ids left out get none). With
        ``update_index`` the index and the manifest's counts are rewritten too (one writer only;
        the ranks of a distributed run leave that to :meth:`write_index` at the end).
        """
        if not items:
            raise ValueError("write_shard needs at least one image")
        name = shard_name([image_id for image_id, _ in items])
        with atomic_open(self.shard_dir / name, "wb") as fh:
            fh.write(encode_shard(items, fingerprints))
        for image_id, entry in read_footer(self.shard_dir / name).items():
            self._entries.setdefault(image_id, entry)
        self._shards_seen.add(name)
        if update_index:
            self._save_index()
        return name

    def write_index(self) -> None:
        """Rebuild the index from every shard's footer and write it (and the counts) atomically."""
        self._entries = self._entries_from_shards(self._shard_files())
        self._save_index()

    def _save_index(self) -> None:
        # only shards whose footers are known: any other shard on disk makes the index stale
        shards = sorted(self._shards_seen)
        position = {name: i for i, name in enumerate(shards)}
        entries = {
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
            for image_id, e in sorted(self._entries.items())
        }
        index = {"shards": shards, "entries": entries}
        atomic_write_json(self.root / "index.json", index, indent=None)
        counts = [e.count for e in self._entries.values()]
        self.manifest = {**self.manifest, "images": len(counts), "candidates": int(sum(counts))}
        atomic_write_json(self.root / "manifest.json", self.manifest)
        self.index_was_stale = False

    def remove_temp_files(self) -> list[Path]:
        """Delete temporary files left by killed writers; returns what was removed."""
        return remove_temp_files(self.shard_dir) + remove_temp_files(self.root)


def _blank(root: Path) -> bool:
    """A folder another rank is just creating a store in counts as empty: hidden temporary
    files and an empty ``shards`` folder only (several ranks call ``create`` at once)."""
    for p in root.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            continue
        if p.name == "shards" and p.is_dir() and not any(p.iterdir()):
            continue
        return False
    return True


def _check_config(
    root: str | Path,
    manifest: dict[str, Any],
    generator: str | None,
    params: dict[str, Any] | None,
) -> None:
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


# ---------------------------------------------------------------------------- verify
@dataclass
class VerifyReport:
    """What :func:`verify_store` found."""

    images: int
    shards: int
    candidates: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


SizeLookup = Callable[[int], tuple[int, int] | None]
PathLookup = Callable[[int], str | Path | None]


def verify_store(
    root: str | Path,
    image_size: SizeLookup | None = None,
    progress: bool = False,
    image_path: PathLookup | None = None,
) -> VerifyReport:
    """Check every shard and every entry of a store.

    Each shard's header, footer and trailer; each record's checksum and contents; every RLE
    decodes to the stored image size with the stored areas; the index agrees with the shards;
    with ``image_size`` (image id -> real (height, width), None for an image the dataset does
    not have) the stored size matches the real one; with ``image_path`` (image id -> its file
    now) the file is the one the candidates were made from (stored fingerprint). Problems are
    collected (one line each), not raised.
    """
    from semires.utils.progress import progress_bar

    root = Path(root)
    manifest = ProposalStore.read_manifest(root)
    shard_dir = root / "shards"
    shards = sorted(p.name for p in shard_dir.glob(f"[!.]*{SHARD_SUFFIX}"))
    problems: list[str] = []
    footers: dict[int, Entry] = {}
    n_candidates = 0
    for name in progress_bar(shards, enabled=progress, desc="verify", unit="shard"):
        path = shard_dir / name
        try:
            entries = read_footer(path)
            data = path.read_bytes()
        except (ProposalError, OSError) as err:
            problems.append(str(err))
            continue
        for image_id, entry in entries.items():
            if image_id in footers:
                problems.append(
                    f"image {image_id} is in two shards: {footers[image_id].shard} and {name}"
                )
                continue
            footers[image_id] = entry
            problem = _verify_entry(path, data, image_id, entry, image_size, image_path)
            if problem:
                problems.append(problem)
            else:
                n_candidates += entry.count
    if not problems:
        store = ProposalStore(root, manifest)
        if store._entries != footers:
            problems.append(f"{root / 'index.json'} disagrees with the shards")
    return VerifyReport(len(footers), len(shards), n_candidates, problems)


def _verify_entry(
    path: Path,
    data: bytes,
    image_id: int,
    entry: Entry,
    image_size: SizeLookup | None,
    image_path: PathLookup | None = None,
) -> str | None:
    where = f"{path}: image {image_id}"
    try:
        record = load_record(path, data, image_id, entry)
        masks = decode_resized(record.counts, record.size)
    except ProposalError as err:
        return str(err)
    except ValueError as exc:
        return f"{where}: RLE does not decode ({exc})"
    if len(record.counts) != entry.count:
        return f"{where}: {len(record.counts)} candidates, the footer says {entry.count}"
    if not np.array_equal(masks.sum(axis=(1, 2)), record.areas):
        return f"{where}: stored areas do not match the decoded masks"
    if image_size is not None:
        actual = image_size(image_id)
        if actual is None:
            return f"{where}: image not in the dataset"
        if tuple(actual) != entry.size:
            return (
                f"{where}: stored size {entry.height}x{entry.width} but the image is "
                f"{actual[0]}x{actual[1]}"
            )
    file = image_path(image_id) if image_path is not None else None
    if file is not None:
        try:
            if made_from_other_file(entry, file):
                return f"{where}: the candidates were made from another file than {file}"
        except OSError as exc:
            return f"{where}: cannot read {file} ({exc})"
    return None

"""The proposal store: per-image candidate masks as COCO RLE in sharded files with an index.

:class:`ProposalStore` gives random access to a store folder by image id (reading and writing).
The pieces it is made of live in their own modules:

- :mod:`.store_format` the on-disk format: records, shards with their footers, the index (a
  cache of the footers) and the manifest (layout and byte format in its docstring);
- :mod:`.checks`       is this store for these images (ids, sizes, file fingerprints)? The one
  comparison behind training's, ``propose``'s, ``quality``'s and ``verify``'s checks;
- :mod:`.verify`       :func:`verify_store`, every byte of a store.

Their public names stay importable from here.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from semires.errors import ProposalError
from semires.proposals import checks
from semires.proposals.base import Proposals
from semires.proposals.checks import (
    FINGERPRINT_BYTES,
    PathLookup,
    SizeLookup,
    image_fingerprint,
    made_from_other_file,
)
from semires.proposals.decode import decode_packed, decode_resized
from semires.proposals.store_format import (
    FORMAT,
    FORMAT_VERSION,
    MAGIC,
    MANIFEST_FILE,
    RECORD,
    SHARD_DIR,
    SHARD_SUFFIX,
    TRAILER,
    Entry,
    _Record,
    check_config,
    decode_record,
    encode_record,
    encode_shard,
    entries_from_shards,
    load_record,
    make_manifest,
    params_differences,
    read_footer,
    read_index,
    read_manifest,
    shard_files,
    shard_name,
    with_counts,
    write_index,
)
from semires.proposals.verify import VerifyReport, verify_store
from semires.utils.io import atomic_open, atomic_write_json, remove_temp_files

if TYPE_CHECKING:
    import torch

    from semires.utils.bits import PackedMasks

__all__ = [
    "FINGERPRINT_BYTES",
    "FORMAT",
    "FORMAT_VERSION",
    "MAGIC",
    "RECORD",
    "SHARD_SUFFIX",
    "TRAILER",
    "Entry",
    "PathLookup",
    "ProposalStore",
    "SizeLookup",
    "VerifyReport",
    "decode_record",
    "encode_record",
    "encode_shard",
    "image_fingerprint",
    "load_record",
    "made_from_other_file",
    "make_manifest",
    "params_differences",
    "read_footer",
    "shard_name",
    "verify_store",
]


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
        return self.root / SHARD_DIR

    @property
    def generator(self) -> str:
        return str(self.manifest["generator"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.manifest["params"])

    read_manifest = staticmethod(read_manifest)

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
        manifest = read_manifest(root)
        if not allow_mismatch:
            check_config(root, manifest, expect_generator, expect_params)
        return cls(root, manifest)

    @classmethod
    def create(cls, root: str | Path, generator: str, params: dict[str, Any]) -> ProposalStore:
        """Open a store for writing candidates of ``generator`` with ``params``.

        A new folder gets a manifest; an existing store must have been made with the same
        generator and parameters (a :class:`ProposalError` otherwise: use another folder).
        """
        root = Path(root)
        has_manifest = (root / MANIFEST_FILE).is_file
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
            manifest = read_manifest(root)
            check_config(root, manifest, generator, params)
        else:
            manifest = make_manifest(generator, params)
            atomic_write_json(root / MANIFEST_FILE, manifest)
        (root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        return cls(root, manifest)

    def _load_index(self) -> None:
        shards = shard_files(self.shard_dir)
        entries = read_index(self.root, shards)
        if entries is None:
            self.index_was_stale = True
            entries = entries_from_shards(self.shard_dir, shards)
        self._shards_seen = set(shards)
        self._entries = entries

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

    @property
    def entries(self) -> Mapping[int, Entry]:
        """Image id -> its :class:`Entry` (read-only)."""
        return MappingProxyType(self._entries)

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

    # ------------------------------------------------------------------ is it for these images?
    def stale_images(
        self,
        image_paths: Mapping[int, str | Path],
        *,
        threads: int = 8,
        progress: bool = False,
    ) -> list[int]:
        """The ids among ``image_paths`` (id -> image file now) whose candidates were made from
        another file (:func:`semires.proposals.checks.stale_images`); a ``DataError`` for a
        file that cannot be read. ``threads`` files are read at once."""
        return checks.stale_images(self._entries, image_paths, threads=threads, progress=progress)

    def check_same_images(
        self, image_paths: Mapping[int, str | Path], hint: str, *, progress: bool = False
    ) -> None:
        """Refuse a store whose candidates of some of ``image_paths`` were made from other files
        (:func:`semires.proposals.checks.require_same_files`; the error ends with ``hint``)."""
        checks.require_same_files(self, image_paths, hint, progress=progress)

    def check_for_images(
        self, image_ids: Iterable[int], image_size: SizeLookup, image_path: PathLookup, **options
    ) -> None:
        """Refuse a store that does not cover ``image_ids`` as they are now: an image without an
        entry, of another size (``image_size``: id -> (height, width)) or from another file
        (``image_path``: id -> its file); ``sizes_and_files=False`` checks coverage only. What
        training checks before it starts (:func:`semires.proposals.checks.require_images`,
        whose keyword ``options`` it takes)."""
        checks.require_images(self, image_ids, image_size, image_path, **options)

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
        shards = shard_files(self.shard_dir)
        self._entries = entries_from_shards(self.shard_dir, shards)
        self._shards_seen = set(shards)
        self._save_index()

    def _save_index(self) -> None:
        # only shards whose footers are known: any other shard on disk makes the index stale
        write_index(self.root, sorted(self._shards_seen), self._entries)
        self.manifest = with_counts(self.manifest, self._entries)
        atomic_write_json(self.root / MANIFEST_FILE, self.manifest)
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
        if p.name == SHARD_DIR and p.is_dir() and not any(p.iterdir()):
            continue
        return False
    return True

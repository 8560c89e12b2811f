"""Is this proposal store for these images? One comparison for every reader of a store.

A store's entries record, per image, the size its candidates were made for and a fingerprint
of the image file they were made from. :func:`check_images` compares them with the images as
they are now (ids, sizes, files) and lists every image that does not fit, under its first
problem. Each reader then decides what it refuses:

- training (:func:`require_images`, ``ProposalStore.check_for_images``): every unlabeled image
  must have an entry of its size, made from its file;
- ``semires propose`` completing a store (:func:`require_same_files`): the images already in it
  must have been made from the same files;
- ``semires proposals quality|show`` (:func:`check_store_images`): the same, for the images of a
  dataset index that have a file on disk;
- ``semires proposals verify`` (:mod:`semires.proposals.verify`): one problem line per image.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semires.errors import DataError, ProposalError
from semires.proposals.store_format import Entry

if TYPE_CHECKING:
    from semires.data.index import RESIndex

#: image id -> its (height, width) now, None for an image the dataset does not have
SizeLookup = Callable[[int], tuple[int, int] | None]
#: image id -> its file now, None when unknown (not checked)
PathLookup = Callable[[int], str | Path | None]

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


def damaged_image(path: str | Path) -> str | None:
    """Why the image file ``path`` cannot be decoded (truncated or damaged), or None when it
    decodes. A file whose fingerprint changed is decoded before it is called "another file":
    a truncated image has another fingerprint too, and regenerating the store cannot help."""
    from semires.data.images import read_image

    try:
        read_image(path)
    except DataError as err:
        detail = str(err).removeprefix(f"cannot decode image {path}: ")
        return f"the file is truncated or damaged ({detail}); restore it from the dataset"
    return None


@dataclass
class ImageCheck:
    """What :func:`check_images` found. Every image compared that does not fit is listed once,
    under its first problem, in this order; each list and dict is in image id order."""

    #: the images compared
    images: int = 0
    #: no entry in the store
    missing: list[int] = field(default_factory=list)
    #: not in the dataset (the size lookup gave None)
    unknown: list[int] = field(default_factory=list)
    #: id -> (size the candidates were made for, size of the image now)
    other_size: dict[int, tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=dict)
    #: id -> (its file, why it cannot be read)
    unreadable: dict[int, tuple[Path, str]] = field(default_factory=dict)
    #: id -> its file, which is not the file the candidates were made from
    other_file: dict[int, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.missing or self.unknown or self.other_size or self.unreadable or self.other_file
        )

    def raise_unreadable(self) -> None:
        """A :class:`DataError` naming the first image whose file cannot be read, if any."""
        if self.unreadable:
            image_id, (path, reason) = next(iter(self.unreadable.items()))
            raise DataError(f"cannot read image {image_id} ({path}): {reason}")


def check_images(
    entries: Mapping[int, Entry],
    image_ids: Iterable[int],
    *,
    image_size: SizeLookup | None = None,
    image_path: PathLookup | None = None,
    threads: int = 8,
    progress: bool = False,
) -> ImageCheck:
    """Compare the store's ``entries`` (image id -> entry) with the images ``image_ids`` now.

    Each image must have an entry; with ``image_size`` it must be an image of the dataset, of
    the size its candidates were made for; with ``image_path`` (None for an image: not checked)
    its file must be the one the candidates were made from (stored fingerprint; entries without
    one, from stores written before fingerprints existed, are not checked). Nothing is raised:
    the result lists what does not fit.

    Each file check reads 16 KiB of one file; ``threads`` files are read at once (the reads wait
    on the disk, not on Python), which matters on network file systems and for the ~17k
    training images of RefCOCO. ``progress`` shows a bar (``fingerprints``).
    """
    found = ImageCheck()
    to_read: list[tuple[int, Path, Entry]] = []
    for image_id in sorted({int(i) for i in image_ids}):
        found.images += 1
        entry = entries.get(image_id)
        if entry is None:
            found.missing.append(image_id)
            continue
        if image_size is not None:
            actual = image_size(image_id)
            if actual is None:
                found.unknown.append(image_id)
                continue
            if tuple(actual) != entry.size:
                found.other_size[image_id] = (entry.size, (int(actual[0]), int(actual[1])))
                continue
        path = image_path(image_id) if image_path is not None else None
        if path is not None and entry.fingerprint is not None:
            to_read.append((image_id, Path(path), entry))
    _compare_files(found, to_read, threads, progress)
    return found


def _compare_files(
    found: ImageCheck, items: list[tuple[int, Path, Entry]], threads: int, progress: bool
) -> None:
    """Fingerprint the files of ``items`` (``threads`` at a time) into ``found``."""
    from concurrent.futures import ThreadPoolExecutor

    from semires.utils.progress import progress_bar

    def compare(item: tuple[int, Path, Entry]) -> bool | str:
        try:
            other = made_from_other_file(item[2], item[1])
        except OSError as exc:
            return str(exc)
        return (damaged_image(item[1]) or True) if other else False

    with ThreadPoolExecutor(max(1, min(threads, len(items)))) as pool:
        results = list(
            progress_bar(
                pool.map(compare, items),
                enabled=progress,
                total=len(items),
                desc="fingerprints",
                unit="img",
                leave=False,
            )
        )
    for (image_id, path, _), result in zip(items, results, strict=True):
        if isinstance(result, str):
            found.unreadable[image_id] = (path, result)
        elif result:
            found.other_file[image_id] = path


# ---------------------------------------------------------------------------- what readers refuse
def stale_images(
    entries: Mapping[int, Entry],
    image_paths: Mapping[int, str | Path],
    *,
    threads: int = 8,
    progress: bool = False,
) -> list[int]:
    """The ids among ``image_paths`` (id -> image file now) whose candidates were made from
    another file: stored fingerprint != the file's. Images without a stored fingerprint (old
    stores) or not in the store are not reported. An unreadable file is a ``DataError``."""
    have = [int(i) for i in image_paths if int(i) in entries]
    found = check_images(
        entries,
        have,
        image_path=lambda i: image_paths.get(i),
        threads=threads,
        progress=progress,
    )
    found.raise_unreadable()
    return list(found.other_file)


def _refuse_other_files(
    store: Any, checked: int, other_file: Mapping[int, str | Path], hint: str
) -> None:
    """The one error for candidates made from other image files (``other_file``: id -> file
    now, in id order) among ``checked`` images of the store, ending with ``hint``."""
    if other_file:
        first, path = next(iter(other_file.items()))
        raise ProposalError(
            f"proposal store {store.root}: {len(other_file)} of the {checked} images already in "
            f"it were made from other image files (e.g. image {first}, now {path}): it belongs "
            f"to other images with the same ids; {hint}"
        )


def require_same_files(
    store: Any,  # a ProposalStore (its root, has(), entries)
    image_paths: Mapping[int, str | Path],
    hint: str,
    *,
    progress: bool = False,
) -> None:
    """Refuse a store whose candidates of some of ``image_paths`` (image id -> its file now)
    were made from other files: a :class:`ProposalError` naming how many and one of them,
    ending with ``hint`` (what to do); a ``DataError`` for a file that cannot be read. Images
    not in the store are not checked."""
    done = {int(i): p for i, p in image_paths.items() if store.has(i)}
    stale = stale_images(store.entries, done, progress=progress)
    _refuse_other_files(store, len(done), {i: done[i] for i in stale}, hint)


def require_images(
    store: Any,  # a ProposalStore (its root, has(), entries)
    image_ids: Iterable[int],
    image_size: SizeLookup,
    image_path: PathLookup,
    *,
    sizes_and_files: bool = True,
    progress: bool = False,
) -> None:
    """Refuse a store that does not cover ``image_ids`` as they are now: an image without an
    entry, one whose candidates were made for another size or from another file; one-line
    :class:`ProposalError`s saying what to do (a ``DataError`` for a file that cannot be read).
    ``sizes_and_files=False`` checks coverage only (``semi.allow_proposal_mismatch``). What
    training checks before it starts."""
    wanted = sorted({int(i) for i in image_ids})
    found = check_images(
        store.entries,
        wanted,
        image_size=image_size if sizes_and_files else None,
        image_path=image_path if sizes_and_files else None,
        progress=progress,
    )
    if found.missing:
        raise ProposalError(
            f"proposal store {store.root} has no entry for {len(found.missing)} of the "
            f"{len(wanted)} unlabeled images (e.g. {found.missing[:5]}): it was made for other "
            f"images; regenerate it with `semires propose ... --out {store.root}`"
        )
    if found.unknown:
        raise ProposalError(
            f"image {found.unknown[0]} is not in the dataset (its size is unknown): cannot "
            f"check its candidates in proposal store {store.root}"
        )
    if found.other_size:
        image_id, (stored, actual) = next(iter(found.other_size.items()))
        raise ProposalError(
            f"proposal store {store.root}: image {image_id} is {actual[0]}x{actual[1]} but "
            f"its candidates were made for {stored[0]}x{stored[1]}; regenerate the store "
            "(or set semi.allow_proposal_mismatch=true to resize them)"
        )
    found.raise_unreadable()
    _refuse_other_files(
        store,
        len(wanted),
        found.other_file,
        f"regenerate it with `semires propose ... --overwrite --out {store.root}` (or set "
        "semi.allow_proposal_mismatch=true to use it anyway)",
    )


def check_store_images(
    store: Any, index: RESIndex, image_ids: list[int], *, progress: bool = False
) -> None:
    """The candidates of these images must have been made from the index's image files (as
    ``verify``, ``propose`` and training check): a :class:`ProposalError` otherwise. Images
    without candidates or without a file on disk are not checked."""
    paths = {}
    if index.image_root is not None:
        for image_id in image_ids:
            if store.has(image_id) and image_id in index.images:
                path = index.image_path(image_id)
                if path.is_file():
                    paths[image_id] = path
    require_same_files(
        store,
        paths,
        f"make it again with `semires propose ... --overwrite --out {store.root}`",
        progress=progress,
    )

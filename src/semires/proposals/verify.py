"""``semires proposals verify``: check every byte of a proposal store (and, given a dataset,
that it is a store for the dataset's images: :func:`semires.proposals.checks.check_images`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semires.errors import ProposalError
from semires.proposals.checks import ImageCheck, PathLookup, SizeLookup, check_images
from semires.proposals.decode import decode_resized
from semires.proposals.store_format import (
    INDEX_FILE,
    SHARD_DIR,
    Entry,
    load_record,
    read_footer,
    read_index,
    read_manifest,
    shard_files,
)


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
    collected (one line each, in shard order), not raised.
    """
    from semires.utils.progress import progress_bar

    root = Path(root)
    read_manifest(root)
    shard_dir = root / SHARD_DIR
    shards = shard_files(shard_dir)
    footers = _read_footers(shard_dir, shards)
    first = _first_entries(footers)
    found = check_images(
        first, list(first), image_size=image_size, image_path=image_path, progress=progress
    )
    about_images = _image_problems(found)
    problems: list[str] = []
    n_candidates = 0
    seen: dict[int, Entry] = {}
    for name in progress_bar(shards, enabled=progress, desc="verify", unit="shard"):
        path, entries = shard_dir / name, footers[name]
        try:
            if isinstance(entries, ProposalError):
                raise entries
            data = path.read_bytes()
        except (ProposalError, OSError) as err:
            problems.append(str(err))
            continue
        for entry, problem in _shard_problems(path, data, entries, seen, about_images):
            if problem:
                problems.append(problem)
            else:
                n_candidates += entry.count
    if not problems:
        index = read_index(root, shards)  # None: stale, rebuilt from these footers on open
        if index is not None and index != first:
            problems.append(f"{root / INDEX_FILE} disagrees with the shards")
    return VerifyReport(len(first), len(shards), n_candidates, problems)


def _read_footers(
    shard_dir: Path, shards: list[str]
) -> dict[str, dict[int, Entry] | ProposalError]:
    """Each shard's entries, or the error that its footer cannot be read."""
    footers: dict[str, dict[int, Entry] | ProposalError] = {}
    for name in shards:
        try:
            footers[name] = read_footer(shard_dir / name)
        except ProposalError as err:
            footers[name] = err
    return footers


def _first_entries(footers: dict[str, dict[int, Entry] | ProposalError]) -> dict[int, Entry]:
    """Image id -> its entry in the first shard (by name) that holds it."""
    first: dict[int, Entry] = {}
    for entries in footers.values():
        if not isinstance(entries, ProposalError):
            for image_id, entry in entries.items():
                first.setdefault(image_id, entry)
    return first


def _image_problems(found: ImageCheck) -> dict[int, str]:
    """Image id -> what :func:`check_images` found about it (the end of a problem line)."""
    problems = dict.fromkeys(found.unknown, "image not in the dataset")
    for image_id, ((h, w), (ah, aw)) in found.other_size.items():
        problems[image_id] = f"stored size {h}x{w} but the image is {ah}x{aw}"
    for image_id, (file, reason) in found.unreadable.items():
        problems[image_id] = f"cannot read {file} ({reason})"
    for image_id, file in found.other_file.items():
        problems[image_id] = f"the candidates were made from another file than {file}"
    return problems


def _shard_problems(
    path: Path,
    data: bytes,
    entries: dict[int, Entry],
    seen: dict[int, Entry],
    about_images: dict[int, str],
) -> Iterator[tuple[Entry, str | None]]:
    """``(entry, its problem or None)`` for every entry of the shard ``data`` read from
    ``path``; ``seen`` (image id -> entry of an earlier shard) finds images in two shards."""
    for image_id, entry in entries.items():
        if image_id in seen:
            yield (
                entry,
                f"image {image_id} is in two shards: {seen[image_id].shard} and {path.name}",
            )
            continue
        seen[image_id] = entry
        where = f"{path}: image {image_id}"
        problem = _record_problem(where, path, data, image_id, entry)
        if problem is None and image_id in about_images:
            problem = f"{where}: {about_images[image_id]}"
        yield entry, problem


def _record_problem(where: str, path: Path, data: bytes, image_id: int, entry: Entry) -> str | None:
    """What is wrong with the record of one entry, or None."""
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
    return None

"""Atomic file writes: write to a temporary file next to the target, then rename.

A reader never sees a half-written file, and a crash leaves the previous version intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", *, fsync: bool = True, **kwargs: Any
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync and rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched. ``fsync=False``
    skips the flush to disk (the rename is still atomic): for writers of many small files that
    sync once at the end (:func:`sync_files`) before writing the file that points to them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; follow the umask like open() does
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.<name>.*.tmp``) that writers killed mid-write left in
    ``folder`` (a crash, SIGKILL); returns what was removed. Writers call it before writing
    into a folder again, so an interrupted run leaves nothing behind once rerun."""
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    with atomic_open(path, "wb", fsync=fsync) as fh:
        fh.write(data)


def sync_files() -> None:
    """Flush every file written so far to disk (one ``os.sync``): what a writer of many files
    with ``fsync=False`` calls before it writes the file that refers to them, so that a crash
    never leaves that file pointing at files still in memory."""
    os.sync()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent)
        fh.write("\n")


def atomic_write_pickle(path: str | Path, obj: Any) -> None:
    with atomic_open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)


def atomic_write_torch(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically (checkpoints, weights, feature caches)."""
    import torch

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it onto ``path`` on success.

    An existing ``path`` is replaced only once the new directory is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new: str | Path, path: str | Path) -> None:
    """Rename the complete directory ``new`` onto ``path``, replacing what ``path`` held.

    The previous ``path`` is moved aside first and removed only after the rename, so at any
    moment either the old or the new directory is in place.
    """
    new, path = Path(new), Path(path)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, path)

"""Atomic file writes: write to a temporary file next to the target, then rename.

A reader never sees a half-written file, and a crash leaves the previous version intact. A full
disk (ENOSPC) or quota (EDQUOT) met by any of these writers is one line, a
:class:`DiskFullError` naming the file, the free space and the space the write needed, and
leaves no temporary file behind; :func:`atomic_write_files` writes several files all or none.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from semires.errors import SemiresError

#: the errors of a full disk (ENOSPC) or of a full disk quota (EDQUOT)
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(SemiresError):
    """A write failed because the disk or the disk quota is full (one line: the file, the free
    space, the space needed)."""


def disk_full_cause(exc: BaseException | None) -> OSError | None:
    """The ENOSPC / EDQUOT :class:`OSError` behind ``exc``: ``exc`` itself, or one in its chain
    (``torch.save`` to a file object, for one, raises a RuntimeError from it); else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def free_space(path: str | Path) -> int | None:
    """Free bytes on the filesystem of ``path`` (of its nearest existing folder); None if unknown."""
    target = Path(path).absolute()
    for folder in (target, *target.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def format_size(n: int) -> str:
    """Bytes for people: ``1536`` -> ``1.5 KiB``."""
    size, unit = float(n), "bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"


def disk_full_error(
    path: str | Path, cause: OSError, *, needed: int | None = None, written: int = 0
) -> DiskFullError:
    """The one-line error of a write of ``path`` (a file, or the files of one output joined
    by " and ") that ``cause`` (ENOSPC / EDQUOT) stopped; ``needed``: the size of the whole
    write when known, ``written``: what got written."""
    why = "the disk quota is full" if cause.errno == errno.EDQUOT else "no space left on device"
    free = free_space(str(path).split(" and ")[0])
    there = "unknown space free" if free is None else f"{format_size(free)} free"
    if needed:
        need = f"{format_size(needed)} needed"
    else:
        need = f"more than {format_size(written)} needed" if written else "more needed"
    return DiskFullError(
        f"disk full: cannot write {path} ({why}: {there} there, {need}); free some space or "
        "choose another folder, then rerun the same command"
    )


def check_folder_target(path: str | Path, what: str) -> Path:
    """A folder to write into (made when missing), checked before any work: neither it nor a
    folder on the way to it may be a file. ``what`` names it in the one-line error (an option
    such as ``--out``, or a config key)."""
    from semires.errors import DataError

    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "is a file" if folder == path else f"{folder} is a file"
                raise DataError(f"{what} {path}: {where}; expected a folder")
            break
    return path


@contextlib.contextmanager
def disk_full_in(folder: str | Path) -> Iterator[None]:
    """Meanwhile, a full disk met by a writer outside this module (TensorBoard, a log file, an
    image library) is a :class:`DiskFullError` naming its file, else ``folder``."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        cause = disk_full_cause(exc)
        if cause is None:
            raise
        raise disk_full_error(cause.filename or folder, cause) from exc


def _file_size(path: str | None) -> int:
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(
    path: str | Path,
    mode: str = "w",
    *,
    fsync: bool = True,
    size: int | None = None,
    **kwargs: Any,
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync and rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched; a full disk
    is a :class:`DiskFullError` (``size``: the bytes the write needs, when known, for its
    message). ``fsync=False`` skips the flush to disk (the rename is still atomic): for
    writers of many small files that sync once at the end (:func:`sync_files`) before writing
    the file that points to them.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; follow the umask like open()
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        written = _file_size(tmp)
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        cause = None if isinstance(exc, DiskFullError) else disk_full_cause(exc)
        if cause is not None:
            raise disk_full_error(path, cause, needed=size, written=written) from exc
        raise


def atomic_write_files(files: dict[Path, bytes]) -> None:
    """Write several files as one output: each to a temporary file beside it first, and all
    renamed into place only when every one is written, so a failure (a full disk) leaves none
    of them (and the earlier versions as they were)."""
    done: list[tuple[str, Path]] = []
    try:
        for current, data in files.items():
            current.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{current.name}.", suffix=".tmp", dir=current.parent
            )
            done.append((tmp, current))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
        for tmp, target in done:
            os.replace(tmp, target)
    except BaseException as exc:
        for tmp, _ in done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        cause = disk_full_cause(exc)
        if cause is not None:
            names = " and ".join(map(str, files))
            raise disk_full_error(names, cause, needed=sum(map(len, files.values()))) from exc
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
    with atomic_open(path, "wb", fsync=fsync, size=len(data)) as fh:
        fh.write(data)


def sync_files() -> None:
    """Flush every file written so far to disk (one ``os.sync``): what a writer of many files
    with ``fsync=False`` calls before it writes the file that refers to them, so that a crash
    never leaves that file pointing at files still in memory."""
    os.sync()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def json_text(obj: Any, path: str | Path, indent: int | None = None) -> str:
    """``obj`` as JSON text for the file ``path``. JSON has no NaN or infinity (Python would
    write ``NaN``, which no other reader accepts): such a value is a one-line
    :class:`~semires.errors.DataError` naming the file and where the value is."""
    try:
        return json.dumps(obj, indent=indent, allow_nan=False)
    except ValueError:
        found = _first_non_finite(obj, "")
        if found is None:
            raise
        where, value = found
        from semires.errors import DataError

        raise DataError(
            f"cannot write {path}: {where or 'the value'} is {value}, and JSON holds only finite "
            "numbers (nothing was written)"
        ) from None


def _first_non_finite(obj: Any, where: str) -> tuple[str, float] | None:
    """(where, value) of the first NaN / infinity in ``obj`` (``annotations[3].bbox[0]``)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where, obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else ()  # fmt: skip
    for key, value in items:
        name = (
            f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)
        )
        found = _first_non_finite(value, name)
        if found is not None:
            return found
    return None


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically; a NaN or infinity in it is refused before anything is
    written (:func:`json_text`)."""
    text = json_text(obj, path, indent)
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.write("\n")


def atomic_write_pickle(path: str | Path, obj: Any) -> None:
    with atomic_open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)


def atomic_write_torch(path: str | Path, obj: Any, *, size: int | None = None) -> None:
    """``torch.save(obj)`` to ``path`` atomically (checkpoints, weights, feature caches);
    ``size``: about the bytes it takes, when known (said when the disk is full)."""
    import torch

    with atomic_open(path, "wb", size=size) as fh:
        torch.save(obj, fh)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it onto ``path`` on success.

    An existing ``path`` is replaced only once the new directory is complete.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        yield tmp
        replace_dir(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        cause = None if isinstance(exc, DiskFullError) else disk_full_cause(exc)
        if cause is not None:
            raise disk_full_error(cause.filename or path, cause) from exc
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

"""One process per run folder: an advisory lock file that holds its owner's PID.

``with folder_lock(path, "semires run"):`` takes ``<path>/.semires.lock`` with ``fcntl.flock``.
A second process asking for the same folder fails at once with a one-line
:class:`FolderLockedError` naming the holder's PID and command. The kernel drops the lock when
its holder dies, however it dies (SIGKILL included), so the lock file a crash leaves behind is
stale and simply taken over by the next run. A clean release deletes the file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from semires.errors import SemiresError

LOCK_NAME = ".semires.lock"


class FolderLockedError(SemiresError):
    """Another live process is using the folder."""


class FolderLock:
    """The lock of one folder (see the module docstring); :meth:`acquire` / :meth:`release`."""

    def __init__(self, folder: str | Path, command: str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock (creating the folder if needed); :class:`FolderLockedError` if a live
        process holds it."""
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise FolderLockedError(self._held_by_message()) from None
            except BaseException:
                os.close(fd)
                raise
            # the holder we waited for may have deleted the file on release: lock the file that
            # is at the path now, or two processes could each hold a different file
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()} {self.command}\n".encode())
                except OSError:  # e.g. a full disk: no fd and no empty lock file left behind
                    with contextlib.suppress(OSError):
                        self.path.unlink()
                    os.close(fd)
                    raise
                self._fd = fd
                return self
            os.close(fd)
        raise FolderLockedError(f"cannot lock {self.folder}: its lock file keeps changing")

    def release(self) -> None:
        """Delete the lock file and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(fd)  # closing the last descriptor drops the flock

    def _held_by_message(self) -> str:
        holder = ""
        for _ in range(20):  # the holder writes its PID right after taking the lock
            with contextlib.suppress(OSError):
                holder = self.path.read_text(encoding="utf-8", errors="replace").strip()
            if holder:
                break
            time.sleep(0.05)
        pid, _, command = holder.partition(" ")
        who = f"PID {pid}" + (f", {command}" if command else "") if pid else "another process"
        return (
            f"{self.folder} is in use by another semires process ({who}): one run per folder; "
            "wait for it to finish, stop it, or use another output folder"
        )

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a lock object dropped without release (e.g. a failed start)
        if self._fd is not None:
            with contextlib.suppress(Exception):
                os.close(self._fd)


def command_line() -> str:
    """This process's command, for the lock file (``semires run --out x``)."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return " ".join([name, *sys.argv[1:]]).replace("\n", " ")[:200]


def folder_lock(folder: str | Path, command: str | None = None) -> FolderLock:
    """An unacquired :class:`FolderLock` of ``folder`` (use it in a ``with`` block)."""
    return FolderLock(folder, command or command_line())

"""A training run's folder at the start: what a start writes, and how a failed start takes it
back (a bad setting found late, a full disk), so that a refused start leaves the folder as it
was and the corrected command just works."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from semires.layout import StageLayout
from semires.runtime.distributed import DistInfo, barrier
from semires.runtime.logs import log_to_file, replay
from semires.utils.io import atomic_write_text
from semires.utils.lock import LOCK_NAME


def write_run_folder(
    cfg: Any, layout: StageLayout, info: DistInfo, held: list[logging.LogRecord]
) -> None:
    """``config.yaml`` (the resolved config) and ``train.log`` (with the start's held log
    records), written by the main process."""
    if info.is_main:
        import yaml

        atomic_write_text(layout.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    barrier(info)
    if info.is_main:
        log_to_file(layout.log)
    replay(held)


def undo_start(
    layout: StageLayout, created: list[Path], wrote: bool, release: Callable[[], None]
) -> None:
    """Take back a failed start: the ``config.yaml`` and log it wrote (``wrote``: only a fresh
    folder's, under its own lock), the lock (``release``), and the folders it made (empty ones,
    with a lock file a full disk may have left)."""
    from semires.runtime.logs import stop_logging_to

    if wrote:
        stop_logging_to(layout.log)
        for path in (layout.config, layout.log):
            with contextlib.suppress(OSError):
                path.unlink()
    release()
    for folder in created:
        with contextlib.suppress(OSError):
            (folder / LOCK_NAME).unlink(missing_ok=True)
            folder.rmdir()

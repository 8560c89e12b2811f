"""The ``semires`` log of a run: ``train.log`` in its folder, and records held back while a
run starts (its folder gets a log only once the start succeeded)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

ROOT = "semires"


def log_to_file(path: Path) -> None:
    """Send the ``semires`` loggers to ``path`` (replacing an earlier run's file handler)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger(ROOT)
    root.handlers = [h for h in root.handlers if not isinstance(h, logging.FileHandler)]
    root.addHandler(handler)
    root.setLevel(logging.INFO)


class _Hold(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def held_records() -> Iterator[list[logging.LogRecord]]:
    """The records of the ``semires`` loggers, kept in a list instead of being written;
    :func:`replay` them once there is somewhere to write them."""
    logger = logging.getLogger(ROOT)
    hold = _Hold()
    saved = (logger.handlers, logger.level, logger.propagate)
    logger.handlers, logger.propagate = [hold], False
    logger.setLevel(logging.INFO)
    try:
        yield hold.records
    finally:
        logger.handlers, level, logger.propagate = saved
        logger.setLevel(level)


def replay(records: list[logging.LogRecord]) -> None:
    """Write held records to the ``semires`` loggers' current handlers."""
    for record in records:
        logging.getLogger(ROOT).handle(record)

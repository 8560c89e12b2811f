"""The ``semires`` log of a run: ``train.log`` in its folder, and records held back while a
run starts (its folder gets a log only once the start succeeded)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

ROOT = "semires"


class RunLogHandler(logging.FileHandler):
    """A run's ``train.log``. A full disk stops the file quietly (no "--- Logging error ---"
    traceback on the console): the run's next checkpoint or record, written by
    :mod:`semires.utils.io`, then says in one line that the disk is full."""

    def handleError(self, record: logging.LogRecord) -> None:
        import sys

        from semires.utils.io import disk_full_cause

        if disk_full_cause(sys.exc_info()[1]) is None:
            super().handleError(record)
            return
        logging.getLogger(ROOT).removeHandler(self)
        with contextlib.suppress(OSError):
            self.close()


def log_to_file(path: Path) -> None:
    """Send the ``semires`` loggers to ``path`` (replacing an earlier run's file handler)."""
    handler = RunLogHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger(ROOT)
    root.handlers = [h for h in root.handlers if not isinstance(h, logging.FileHandler)]
    root.addHandler(handler)
    root.setLevel(logging.INFO)


class _DropLongSequenceNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Token indices sequence length is longer than")


def quiet_tokenizer_length_note() -> None:
    """Drop transformers' "Token indices sequence length is longer than the specified maximum
    sequence length" note: semires measures a sentence's tokens before it cuts them to the
    model's ``max_tokens`` (and says once when it cut some), so the model never sees the long
    sequence the note warns about."""
    logger = logging.getLogger("transformers.tokenization_utils_base")
    if not any(isinstance(f, _DropLongSequenceNote) for f in logger.filters):
        logger.addFilter(_DropLongSequenceNote())


def stop_logging_to(path: Path) -> None:
    """Close and drop the ``semires`` loggers' handler of the file ``path`` (if any)."""
    root = logging.getLogger(ROOT)
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        if Path(handler.baseFilename) == Path(path).absolute():
            root.removeHandler(handler)
            with contextlib.suppress(OSError):
                handler.close()


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

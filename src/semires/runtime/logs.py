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


#: epoch-record keys that hold a share in [0, 1] (the refinement statistics: pseudo-label IoU,
#: grounding, miss and correction rates, each counter's share): shown in percent, as the report
#: shows them; ``history.json`` keeps the fractions
_PERCENT_PREFIXES = ("pl_iou_", "grounding_", "corrections_", "share_")


def is_share(key: str) -> bool:
    """Whether the epoch-record value ``key`` is a share in [0, 1] (shown in percent)."""
    return key.startswith(_PERCENT_PREFIXES) or key.endswith(("_rate", "_share"))


def format_record(record: dict[str, object]) -> str:
    """An epoch record as one ``key=value`` line for the console and ``train.log``: shares
    (:func:`is_share`) in percent with a ``%`` sign and the report's digits
    (``pl_iou_before=41.32%``, ``miss_rate=12.5%``: its pseudo-label table), the evaluation metrics (``val_oIoU``) in percent as computed, other
    floats to four significant digits."""
    parts = []
    for key, value in record.items():
        if isinstance(value, float) and is_share(key):
            digits = 2 if key.startswith("pl_iou_") else 1  # the report's digits
            parts.append(f"{key}={100 * value:.{digits}f}%")
        elif isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


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


#: the start of torch's DataLoader warning about more workers than CPUs (said once per loader
#: and stage; :func:`worker_count_note` says it once per command instead)
_WORKER_WARNING = "This DataLoader will create"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, as torch's DataLoader counts them)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_count_note(num_workers: int, key: str = "data.num_workers") -> str | None:
    """One line when ``num_workers`` loader processes exceed the usable CPUs (None otherwise),
    and torch's own warning about it, repeated for every loader of every stage, silenced in
    this process. The setting is kept (the run's config is what it records); the line says
    what to set."""
    import warnings

    cpus = usable_cpus()
    if num_workers <= cpus:
        return None
    warnings.filterwarnings("ignore", message=_WORKER_WARNING, category=UserWarning)
    return (
        f"note: {key} is {num_workers} but this machine gives the process {cpus} CPUs: the data "
        f"loaders may run slowly or stall (set {key}={cpus} or less)"
    )


def quiet_worker_count_warning() -> None:
    """Silence torch's DataLoader warning about more workers than CPUs in this process (a
    worker process of a run whose main process said :func:`worker_count_note`)."""
    import warnings

    warnings.filterwarnings("ignore", message=_WORKER_WARNING, category=UserWarning)


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

"""Progress bars only where a person watches: one decision for every bar semires draws.

A bar redraws itself many times a second; on a terminal that is one changing line, but in a
redirected log (``make demo > log``, a batch job, a CI run) every redraw becomes text. So bars
are shown only when stderr (where tqdm draws) is a terminal. ``SEMIRES_PROGRESS=1`` forces them
on, ``SEMIRES_PROGRESS=0`` off. Plain progress lines (stage headers, one line per epoch) are not
bars and stay in the log; in a log a bar becomes such a line every minute
(``SEMIRES_PROGRESS_EVERY`` seconds: :class:`LogLines`), so a long stage (an epoch, SAM over
thousands of images, an evaluation) is never silent for minutes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

ENV = "SEMIRES_PROGRESS"
#: seconds between two progress lines in a log (instead of a bar)
EVERY_ENV = "SEMIRES_PROGRESS_EVERY"


def show_progress(requested: bool = True) -> bool:
    """Whether to draw progress bars: ``requested`` (e.g. not ``--quiet``) and stderr is a
    terminal, unless ``SEMIRES_PROGRESS`` says otherwise."""
    if not requested:
        return False
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any):
    """A ``tqdm`` bar that is drawn only when :func:`show_progress` says so (``enabled``: the
    caller's own wish, e.g. its ``progress`` argument); where the caller wants progress but
    stderr is a log, :class:`LogLines` (a line every minute) instead."""
    from tqdm import tqdm

    shown = show_progress(enabled)
    if not shown and enabled and _log_lines_wanted():
        return LogLines(iterable, **kwargs)
    return tqdm(iterable, disable=not shown, **kwargs)


def _log_lines_wanted() -> bool:
    """Not when ``SEMIRES_PROGRESS`` turns progress off, nor ``SEMIRES_PROGRESS_EVERY=0``."""
    forced = os.environ.get(ENV, "").strip().lower()
    return forced not in ("0", "false", "no", "off") and log_every() > 0


def log_every() -> float:
    """Seconds between two progress lines in a log (``SEMIRES_PROGRESS_EVERY``, default 60)."""
    try:
        return float(os.environ.get(EVERY_ENV, "60"))
    except ValueError:
        return 60.0


def clock(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LogLines:
    """A progress bar for a log: the bar's ``desc``, count, rate, postfix and time left as one
    plain line on stderr every :func:`log_every` seconds (the part of tqdm's interface semires
    uses: iteration, ``update``, ``set_postfix``, ``set_description``, ``close``, ``with``)."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str | None = None,
        unit: str = "it",
        **_: Any,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc or "", unit
        self.n, self.postfix, self.every = 0, "", log_every()
        self.start = self.last = time.monotonic()

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            print(self.line(now - self.start), file=sys.stderr, flush=True)

    def line(self, elapsed: float) -> str:
        """``epoch 2/10: 120/400 step (2m00s, 1.00 step/s, 4m40s left, loss=0.31)``."""
        rate = self.n / max(elapsed, 1e-9)
        parts = [clock(elapsed), f"{rate:.2f} {self.unit}/s"]
        if self.total and rate > 0:
            parts.append(f"{clock((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        return f"{self.desc or 'progress'}: {count} {self.unit} ({', '.join(parts)})"

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, **kwargs: Any) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        values.pop("refresh", None)
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def quiet_third_party_bars() -> None:
    """Turn off, through tqdm's ``TQDM_DISABLE`` default, the bars of code that creates tqdm
    without a ``disable`` argument, when :func:`show_progress` says no bars. Must run before
    tqdm is first imported (the CLI calls it at start-up); spawned workers inherit it."""
    if not show_progress():
        os.environ.setdefault("TQDM_DISABLE", "1")

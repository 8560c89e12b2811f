"""Progress bars only where a person watches: one decision for every bar semires draws.

A bar redraws itself many times a second; on a terminal that is one changing line, but in a
redirected log (``make demo > log``, a batch job, a CI run) every redraw becomes text. So bars
are shown only when stderr (where tqdm draws) is a terminal. ``SEMIRES_PROGRESS=1`` forces them
on, ``SEMIRES_PROGRESS=0`` off. Plain progress lines (stage headers, one line per epoch) are not
bars and stay in the log.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

ENV = "SEMIRES_PROGRESS"


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
    caller's own wish, e.g. its ``progress`` argument)."""
    from tqdm import tqdm

    return tqdm(iterable, disable=not show_progress(enabled), **kwargs)


def quiet_third_party_bars() -> None:
    """Turn off, through tqdm's ``TQDM_DISABLE`` default, the bars of code that creates tqdm
    without a ``disable`` argument, when :func:`show_progress` says no bars. Must run before
    tqdm is first imported (the CLI calls it at start-up); spawned workers inherit it."""
    if not show_progress():
        os.environ.setdefault("TQDM_DISABLE", "1")

"""Worker processes that die with their parent.

A pool worker (``multiprocessing``'s spawn or fork) outlives a parent killed with SIGKILL: it is
re-parented to init and goes on working (and writing) in a folder that a rerun then uses too.
:func:`die_with_parent`, run first thing in each worker (a pool's ``initializer``), prevents it
twice over: on Linux the kernel sends the worker SIGKILL the moment its parent dies
(``prctl(PR_SET_PDEATHSIG)``), and everywhere a daemon thread checks every half second that the
parent is still the same process and ends the worker otherwise.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
CHECK_SECONDS = 0.5


def die_with_parent(parent_pid: int) -> None:
    """End this process as soon as ``parent_pid`` (the process that started it) is gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watchdog below still works
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="die-with-parent", daemon=True).start()


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(CHECK_SECONDS)
    os._exit(1)

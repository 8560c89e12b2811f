"""User-facing errors.

Every error a user can cause with bad input (a missing file, a malformed json, an unknown id or a
value out of range) is raised as a :class:`SemiresError` subclass whose message is one line that
names the offending file / id / value and says what was expected. The CLI prints the message (no
traceback) and exits with a non-zero code.
"""

from __future__ import annotations

from pathlib import Path


class SemiresError(Exception):
    """Base class of errors caused by user input; ``str(err)`` is a one-line message."""

    exit_code = 2


class DataError(SemiresError):
    """A dataset file or folder is missing, malformed or inconsistent."""


class ConfigError(SemiresError):
    """A config file or value is invalid."""


class CheckpointError(SemiresError):
    """A checkpoint or weights file is missing, unreadable or does not match the model."""


class ProposalError(SemiresError):
    """A proposal store is missing, corrupt or was made for other images / settings."""


def missing(path: str | Path, what: str) -> DataError:
    """A :class:`DataError` for a file or folder that does not exist."""
    return DataError(f"{what} not found: {path}")

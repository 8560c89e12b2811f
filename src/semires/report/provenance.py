"""What produced a report: the command, the versions, the git commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def provenance() -> dict[str, Any]:
    """What produced a report: the command, the package version, the git commit of the code
    (when it runs from a checkout), the Python and torch versions."""
    import platform
    import subprocess
    import sys

    import torch

    from semires.version import __version__

    commit = None
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        commit = done.stdout.strip() or None if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "command": " ".join(["semires", *sys.argv[1:]]) if sys.argv else None,
        "version": __version__,
        "commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }

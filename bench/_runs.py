"""Shared by the bench scripts: one timed ``semires run`` in a fresh folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def semires_run(preset: str, out: Path, overrides: list[str]) -> tuple[dict[str, Any], float]:
    """Run ``semires run --preset PRESET --out OUT -q OVERRIDES`` with this interpreter (the
    folder is emptied first); return its ``results.json`` and the wall time in seconds. Exits
    with the command's stderr tail when it fails."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "semires", "run", "--preset", preset, "--out", str(out), "-q"]
    cmd += overrides
    print(" ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads((out / "results.json").read_text()), wall

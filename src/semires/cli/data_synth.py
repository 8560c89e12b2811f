"""``semires data synth`` and ``semires data show`` (the synthetic benchmark, sample grids)."""

from __future__ import annotations

import typer


def register(data_app: typer.Typer) -> None:
    """Add the synth/show commands to the ``data`` sub-app."""

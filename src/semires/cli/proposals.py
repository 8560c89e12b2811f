"""CLI commands of this group (see :mod:`semires.cli`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""

"""``semires data ...``: dataset statistics, labeled/unlabeled splits, the synthetic benchmark."""

from __future__ import annotations

import typer

data_app = typer.Typer(
    help="Datasets: statistics, splits, the synthetic benchmark.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add ``semires data`` and its sub-commands to the main app."""
    from semires.cli import data_synth

    data_synth.register(data_app)
    app.add_typer(data_app, name="data")

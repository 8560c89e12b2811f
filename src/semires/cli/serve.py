"""``semires serve``: the local web app (docs/serve.md)."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="A semires checkpoint to segment with."
    ),
    run: Path | None = typer.Option(
        None,
        "--run",
        help="A `semires run` folder: adds the pseudo-label tab and its test images.",
    ),
    port: int = typer.Option(7860, "--port", help="The port to serve on."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="The address to serve on (0.0.0.0: every interface)."
    ),
    device: str = typer.Option("auto", "--device"),
    limit: int = typer.Option(
        300, "--limit", min=1, help="At most this many test and unlabeled samples are listed."
    ),
) -> None:
    """Serve a web page to segment images with a checkpoint and browse a run's pseudo-labels."""
    from semires.serve import serve as serve_app

    serve_app(checkpoint, run, host=host, port=port, device=device, limit=limit)


def register(app: typer.Typer) -> None:
    """Add ``semires serve``."""
    app.command("serve")(serve)

"""``semires score``: oIoU / mIoU / Prec@X of a folder of predicted masks against ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def score(
    pred: Path = typer.Argument(..., help="Folder of predicted masks (.png 0/1 or 0/255, .npy)."),
    gt: Path = typer.Argument(..., help="Folder of ground-truth masks, matched by file stem."),
    protocol: str = typer.Option(
        "lavt", "--protocol", help="lavt (resize to 480x480, nearest) or original (own size)."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the scores (percent) and per-sample IoU to this json."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score predicted masks against ground-truth masks (RES metrics, docs/method.md section 1)."""
    from semires.cli.options import output_file, progress
    from semires.evaluate.score import score_folders
    from semires.utils.io import atomic_write_json

    output_file(json_out, "--json", report=True)
    report = score_folders(pred, gt, protocol=protocol, progress=progress(quiet))
    _print_table(report)
    if json_out is not None:
        atomic_write_json(json_out, report)
        typer.echo(f"wrote {json_out}")


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['n']} samples, protocol {report['protocol']}")
    table.add_column("oIoU", justify="right")
    table.add_column("mIoU", justify="right")
    for t in report["precision"]:
        table.add_column(f"Prec@{t}", justify="right")
    values = [report["oIoU"], report["mIoU"], *report["precision"].values()]
    table.add_row(*(f"{v:.2f}" for v in values))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``semires score`` to the main app."""
    app.command("score")(score)

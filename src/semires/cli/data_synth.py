"""``semires data synth`` and ``semires data show`` (the synthetic benchmark, sample grids)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from semires.cli.options import (
    QuietOpt,
    at_least,
    output_file,
    progress,
    with_data_options,
)
from semires.data import DataSpec


def _knob_help() -> str:
    from semires.data.synth.config import knob_names

    return "Knob overrides: " + ", ".join(f"--{k.replace('_', '-')} V" for k in knob_names())


def synth(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Dataset folder to write.")],
    preset: Annotated[
        str, typer.Option("--preset", help="demo, hard, tiny, large or refcoco.")
    ] = "demo",
    seed: Annotated[int, typer.Option("--seed", help="Generator seed.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Regenerate even if cached.")] = False,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Processes (default: one per CPU for >= 200 images)."),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Generate the synthetic benchmark (refer layout) and print its statistics per split.

    Override any knob of the preset, e.g. --images-train 400 --colours red,green,blue.
    """
    from semires.data.stats import compute_stats, format_stats
    from semires.data.synth import is_complete, load, make_config, synthesize
    from semires.data.synth.config import parse_knob_args

    at_least(workers, 1, "--workers")
    overrides = parse_knob_args(list(ctx.args))
    cfg = make_config(preset, **overrides)
    cached = not force and is_complete(out, cfg, seed)
    shown = progress(quiet)
    synthesize(out, preset, seed, force=force, progress=shown, workers=workers, **overrides)
    typer.echo(f"{'cached' if cached else 'wrote'} {out} (preset {preset}, seed {seed})")
    typer.echo(format_stats(compute_stats(load(out), progress=shown)))


@with_data_options
def show(
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="A folder written by `semires data synth` (shortcut)."),
    ] = None,
    split: Annotated[str | None, typer.Option("--split", help="Split to draw from.")] = "val",
    n: Annotated[int, typer.Option("--n", help="Number of refs.")] = 12,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the draw.")] = 0,
    cols: Annotated[int, typer.Option("--cols", help="Grid columns.")] = 4,
    sentences: Annotated[int, typer.Option("--sentences", help="Expressions per ref.")] = 2,
    location: DataSpec = DataSpec(),
) -> None:
    """Draw a grid of refs: image, referred object outlined, expressions below."""
    from semires.data import load_index
    from semires.data.show import render_grid
    from semires.data.synth import DATASET, SPLIT_BY

    output_file(out, "--out")
    for value, option in ((n, "--n"), (cols, "--cols"), (sentences, "--sentences")):
        at_least(value, 1, option)

    if data is not None:
        spec = DataSpec(
            root=str(data), dataset=DATASET, split_by=SPLIT_BY, image_root=location.image_root
        )
    else:
        spec = location
    index = load_index(spec)
    path = render_grid(index, out, split=split, n=n, seed=seed, cols=cols, sentences=sentences)
    typer.echo(f"wrote {path}")


def register(data_app: typer.Typer) -> None:
    """Add the synth/show commands to the ``data`` sub-app."""
    data_app.command(
        "synth",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        epilog=_knob_help(),
    )(synth)
    data_app.command("show")(show)

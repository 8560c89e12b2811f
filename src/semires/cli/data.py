"""``semires data ...``: dataset statistics, labeled/unlabeled splits, the synthetic benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from semires.cli.options import (
    QuietOpt,
    output_file,
    progress,
    with_data_options,
)
from semires.data import DataSpec

data_app = typer.Typer(
    help="Datasets: statistics, splits, the synthetic benchmark.", no_args_is_help=True
)


@data_app.command("stats")
@with_data_options
def stats(
    location: DataSpec = DataSpec(),
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the stats here.")
    ] = None,
    no_masks: Annotated[bool, typer.Option("--no-masks", help="Skip the mask areas.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Per split: images, refs, sentences, mean sentence length, mask area quantiles."""
    from semires.data import load_index
    from semires.data.stats import compute_stats, format_stats
    from semires.utils.io import atomic_write_json

    output_file(json_out, "--json", report=True)
    index = load_index(location)
    result = compute_stats(index, masks=not no_masks, progress=progress(quiet))
    typer.echo(format_stats(result))
    if json_out is not None:
        atomic_write_json(json_out, result)
        typer.echo(f"wrote {json_out}")


@data_app.command("split")
@with_data_options
def split(
    labeled: Annotated[str, typer.Option("--labeled", help="Labeled share: '1%' or '0.01'.")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for labeled.txt, unlabeled.txt, split.json.")
    ],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the image draw.")] = 0,
    location: DataSpec = DataSpec(),
    semires_json: Annotated[
        Path | None,
        typer.Option("--semires-json", help="Also write labeled train + val/test as SemiRES json."),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Draw labeled images from the train split and write the labeled / unlabeled id lists."""
    from semires.data import load_index
    from semires.data.semires_json import masks_available, write_semires_json
    from semires.data.splits import (
        format_ratio,
        labeled_index,
        make_split,
        parse_ratio,
        write_split,
    )

    parse_ratio(labeled)  # a bad ratio fails before the dataset is read
    index = load_index(location)
    drawn = make_split(index, labeled, seed)
    if semires_json is not None:
        subset = labeled_index(drawn, index)
        with_masks = masks_available(subset)
        write_semires_json(subset, semires_json, masks=with_masks, progress=progress(quiet))
        typer.echo(f"wrote {semires_json}" + ("" if with_masks else " (no masks: none available)"))
    write_split(drawn, out)
    typer.echo(
        f"{drawn.dataset} {drawn.split}: labeled {format_ratio(drawn.ratio)} (seed {seed}) -> {out}"
    )
    for side, c in drawn.counts.items():
        typer.echo(
            f"  {side:<9} {c['images']:>7,} images {c['refs']:>8,} refs {c['sentences']:>9,} sentences"
        )


def register(app: typer.Typer) -> None:
    """Add ``semires data`` and its sub-commands to the main app."""
    from semires.cli import data_synth

    data_synth.register(data_app)
    app.add_typer(data_app, name="data")

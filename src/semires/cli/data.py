"""``semires data ...``: dataset statistics, labeled/unlabeled splits, conversion between the
formats, the JSON Lines example and the synthetic benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from semires.cli.options import (
    DataFormat,
    QuietOpt,
    output_file,
    progress,
    with_data_options,
)
from semires.data import DataSpec

data_app = typer.Typer(
    help="Datasets: statistics, splits, conversion, examples, the synthetic benchmark.",
    no_args_is_help=True,
)

MasksOpt = Annotated[
    str, typer.Option("--masks", help="jsonl: masks as png or npy files, or rle in the lines.")
]


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


@data_app.command("convert")
@with_data_options
def convert(
    to: Annotated[DataFormat, typer.Option("--to", help="The format to write.")],
    out: Annotated[
        Path,
        typer.Option("--out", help="jsonl: FILE.jsonl; semires: FILE.json; refer: root folder."),
    ],
    out_dataset: Annotated[
        str | None, typer.Option("--out-dataset", help="refer: dataset name (default: source's).")
    ] = None,
    out_split_by: Annotated[
        str | None, typer.Option("--out-split-by", help="refer: refs(<BY>).p (default: source's).")
    ] = None,
    masks: MasksOpt = "png",
    copy_images: Annotated[
        bool, typer.Option("--copy-images", help="jsonl: copy the images to images/ beside it.")
    ] = False,
    location: DataSpec = DataSpec(),
    quiet: QuietOpt = False,
) -> None:
    """Write a dataset in another format (refer, semires json, JSON Lines); every image and mask
    is checked before anything is written."""
    from semires.data import load_index
    from semires.data.jsonl import mask_format

    fmt = mask_format(masks, "--masks")
    _check_out(out, to)
    index = load_index(location)
    shown = progress(quiet)
    if to == DataFormat.jsonl:
        from semires.data.jsonl import write_jsonl

        write_jsonl(index, out, masks=fmt, copy_images=copy_images, progress=shown)
    elif to == DataFormat.semires:
        from semires.data.semires_json import write_semires_json

        write_semires_json(index, out, progress=shown)
    else:
        from semires.data.refer import write_refer

        name, split_by = out_dataset or index.name, out_split_by or index.split_by or "semires"
        out = write_refer(index, out, name, split_by) / f"refs({split_by}).p"
    with_masks = sum(index.has_mask(r.object_id) for r in index.refs.values())
    typer.echo(f"wrote {out} ({len(index.refs):,} refs, {with_masks:,} with masks)")


def _check_out(out: Path, to: DataFormat) -> None:
    """The output of ``convert``, checked before the dataset is read."""
    from semires.errors import DataError

    if to != DataFormat.refer:
        output_file(out, "--out", report=True)
    elif out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: is a file; the refer layout is written into a folder")


@data_app.command("example")
def example(
    out: Annotated[Path, typer.Option("--out", help="Folder for data.jsonl, images/, masks/.")],
    preset: Annotated[str, typer.Option("--preset", help="Synthetic: tiny, demo, ...")] = "tiny",
    seed: Annotated[int, typer.Option("--seed", help="Generator and draw seed.")] = 0,
    labeled: Annotated[
        str, typer.Option("--labeled", help="Share of train images whose lines have masks.")
    ] = "34%",
    masks: MasksOpt = "png",
    quiet: QuietOpt = False,
) -> None:
    """Write a small JSON Lines dataset (from the synthetic benchmark): a labeled share of the
    train images has masks, the other train lines have none (unlabeled), val / test have all."""
    from semires.data.jsonl import mask_format, read_jsonl, write_example
    from semires.data.stats import compute_stats, format_stats
    from semires.errors import DataError

    fmt = mask_format(masks, "--masks")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: is a file; expected a folder")
    shown = progress(quiet)
    path = write_example(out, preset=preset, seed=seed, labeled=labeled, masks=fmt, progress=shown)
    typer.echo(f"wrote {path} (preset {preset}, seed {seed}, labeled {labeled})")
    typer.echo(format_stats(compute_stats(read_jsonl(path), progress=shown)))
    typer.echo(f"next: semires data stats --format jsonl --ann {path}")


def register(app: typer.Typer) -> None:
    """Add ``semires data`` and its sub-commands to the main app."""
    from semires.cli import data_synth

    data_synth.register(data_app)
    app.add_typer(data_app, name="data")

"""``semires data ...``: dataset statistics, labeled/unlabeled splits, conversion between the
formats, the JSON Lines example and the synthetic benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from semires.cli.options import (
    QuietOpt,
    output_file,
    output_folder,
    progress,
    with_data_options,
)
from semires.data import DataSpec

if TYPE_CHECKING:
    from semires.data.formats import DataFormat

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
    output_folder(out, "--out")
    output_file(semires_json, "--semires-json", report=True)
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


def _out_help() -> str:
    """``convert --out``'s help: what each writable format writes."""
    from semires.data.formats import FORMATS, writable

    def target(name: str) -> str:
        fmt = FORMATS.get(name)
        return "a folder" if fmt.writes_folder else f"FILE{(fmt.suffixes or ('',))[0]}"

    return "; ".join(f"{name}: {target(name)}" for name in writable()) + "."


def _to_help() -> str:
    from semires.data.formats import writable

    return f"The format to write: {', '.join(writable())} (the registered formats with a writer)."


@data_app.command("convert")
@with_data_options
def convert(
    to: Annotated[str, typer.Option("--to", help=_to_help())],
    out: Annotated[Path, typer.Option("--out", help=_out_help())],
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
    """Write a dataset in another format (any registered format with a writer: refer, semires
    json, JSON Lines, ...); every image and mask is checked before anything is written."""
    from semires.data import load_index
    from semires.data.formats import WriteOptions
    from semires.data.jsonl import mask_format

    mask_format(masks, "--masks")
    target = _writer_of(to)
    _check_out(out, target)
    index = load_index(location)
    assert target.write is not None
    options = WriteOptions(
        masks=masks,
        copy_images=copy_images,
        dataset=out_dataset,
        split_by=out_split_by,
        progress=progress(quiet),
    )
    written = target.write(index, out, options)
    with_masks = sum(index.has_mask(r.object_id) for r in index.refs.values())
    typer.echo(f"wrote {written} ({len(index.refs):,} refs, {with_masks:,} with masks)")


def _writer_of(to: str) -> DataFormat:
    """The registered format ``--to`` names, refused unless it has a writer."""
    from semires.data.formats import FORMATS, writable
    from semires.errors import ConfigError

    try:
        fmt = FORMATS.get(to)
    except ConfigError as err:
        raise ConfigError(f"--to: {err}") from None
    if fmt.write is None:
        raise ConfigError(
            f"--to {to}: the {to} format can be read but not written; "
            f"formats with a writer: {', '.join(writable())}"
        )
    return fmt


def _check_out(out: Path, target: DataFormat) -> None:
    """The output of ``convert``, checked before the dataset is read: a file name, or (a
    format written into a folder) not an existing file."""
    from semires.errors import DataError

    if not target.writes_folder:
        output_file(out, "--out", report=True)
    elif out.exists() and not out.is_dir():
        raise DataError(
            f"--out {out}: is a file; the {target.name} layout is written into a folder"
        )


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

"""``semires data ...``: dataset statistics, labeled/unlabeled splits, the synthetic benchmark."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

data_app = typer.Typer(
    help="Datasets: statistics, splits, the synthetic benchmark.", no_args_is_help=True
)


class DataFormat(StrEnum):
    """The on-disk dataset formats."""

    refer = "refer"
    semires = "semires"


FormatOpt = Annotated[
    DataFormat,
    typer.Option("--format", help="refer: refs(<splitBy>).p + instances.json; semires: LAVT json."),
]
RootOpt = Annotated[Path | None, typer.Option("--root", help="refer: folder holding <dataset>/.")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="refer: e.g. refcoco.")]
SplitByOpt = Annotated[
    str | None,
    typer.Option("--split-by", help="refer: unc, umd, google, ... (the only one if omitted)."),
]
ImageRootOpt = Annotated[Path | None, typer.Option("--image-root", help="Folder of the images.")]
AnnOpt = Annotated[Path | None, typer.Option("--ann", help="semires: the json file.")]
MaskRootOpt = Annotated[
    Path | None,
    typer.Option("--mask-root", help="semires: mask folder (default <json dir>/masks)."),
]


def _spec(
    fmt: DataFormat,
    root: Path | None,
    dataset: str | None,
    split_by: str | None,
    image_root: Path | None,
    ann: Path | None,
    mask_root: Path | None,
):
    """The :class:`~semires.data.DataSpec` the data options describe."""
    from semires.data import DataSpec

    def text(p: Path | None) -> str | None:
        return str(p) if p is not None else None

    return DataSpec(
        format=fmt.value,
        root=text(root),
        dataset=dataset,
        split_by=split_by,
        ann=text(ann),
        image_root=text(image_root),
        mask_root=text(mask_root),
    )


@data_app.command("stats")
def stats(
    fmt: FormatOpt = DataFormat.refer,
    root: RootOpt = None,
    dataset: DatasetOpt = None,
    split_by: SplitByOpt = None,
    image_root: ImageRootOpt = None,
    ann: AnnOpt = None,
    mask_root: MaskRootOpt = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the stats here.")
    ] = None,
    no_masks: Annotated[bool, typer.Option("--no-masks", help="Skip the mask areas.")] = False,
) -> None:
    """Per split: images, refs, sentences, mean sentence length, mask area quantiles."""
    from semires.data import load_index
    from semires.data.stats import compute_stats, format_stats
    from semires.utils.io import atomic_write_json

    index = load_index(_spec(fmt, root, dataset, split_by, image_root, ann, mask_root))
    result = compute_stats(index, masks=not no_masks)
    typer.echo(format_stats(result))
    if json_out is not None:
        atomic_write_json(json_out, result)
        typer.echo(f"wrote {json_out}")


@data_app.command("split")
def split(
    labeled: Annotated[str, typer.Option("--labeled", help="Labeled share: '1%' or '0.01'.")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for labeled.txt, unlabeled.txt, split.json.")
    ],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the image draw.")] = 0,
    fmt: FormatOpt = DataFormat.refer,
    root: RootOpt = None,
    dataset: DatasetOpt = None,
    split_by: SplitByOpt = None,
    image_root: ImageRootOpt = None,
    ann: AnnOpt = None,
    mask_root: MaskRootOpt = None,
    semires_json: Annotated[
        Path | None,
        typer.Option("--semires-json", help="Also write labeled train + val/test as SemiRES json."),
    ] = None,
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
    index = load_index(_spec(fmt, root, dataset, split_by, image_root, ann, mask_root))
    drawn = make_split(index, labeled, seed)
    if semires_json is not None:
        subset = labeled_index(drawn, index)
        with_masks = masks_available(subset)
        write_semires_json(subset, semires_json, masks=with_masks)
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

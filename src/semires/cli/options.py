"""Options shared by the commands that read a dataset (``--format``, ``--root``, ...)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


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


def data_spec(
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

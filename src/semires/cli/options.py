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


QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No progress bars (they are off anyway when not a terminal)."
    ),
]


def progress(quiet: bool) -> bool:
    """Whether a command draws progress bars (:func:`semires.utils.progress.show_progress`)."""
    from semires.utils.progress import show_progress

    return show_progress(not quiet)


def output_file(path: Path | None, option: str, *, report: bool = False) -> Path | None:
    """A file a command will write, checked before any work: not a folder, and (a mask, an
    image, weights) in a folder that exists, so a mistyped path fails at once instead of
    making folders silently. A ``report`` (``--json``, ``--plot``) may go into a new folder,
    as result folders do. The file itself is replaced atomically."""
    from semires.errors import DataError

    if path is None:
        return None
    if path.is_dir():
        raise DataError(f"{option} {path}: is a folder; expected a file name")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{option} {path}: {folder} is not a folder")
    if not report and not folder.is_dir():
        raise DataError(f"{option} {path}: the folder {folder} does not exist; create it first")
    return path


def at_least(value: float | None, minimum: float, option: str, *, strict: bool = False) -> None:
    """A numeric option below ``minimum`` (or equal to it, when ``strict``) is a one-line error;
    None (an option not given) passes."""
    from semires.errors import ConfigError

    if value is not None and not (value > minimum if strict else value >= minimum):
        relation = ">" if strict else ">="
        raise ConfigError(f"{option}: expected a value {relation} {minimum}, got {value}")

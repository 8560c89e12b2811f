"""Options shared by the commands that read a dataset (``--format``, ``--root``, ...)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer


class DataFormat(StrEnum):
    """The on-disk dataset formats."""

    refer = "refer"
    semires = "semires"
    jsonl = "jsonl"


FormatOpt = Annotated[
    DataFormat,
    typer.Option(
        "--format",
        help="refer: refs(<splitBy>).p + instances.json; semires: LAVT json; jsonl: JSON Lines.",
    ),
]
RootOpt = Annotated[Path | None, typer.Option("--root", help="refer: folder holding <dataset>/.")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="refer: e.g. refcoco.")]
SplitByOpt = Annotated[
    str | None,
    typer.Option("--split-by", help="refer: unc, umd, google, ... (the only one if omitted)."),
]
ImageRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--image-root", help="Folder of the images (jsonl: base of the paths; default its folder)."
    ),
]
AnnOpt = Annotated[
    Path | None, typer.Option("--ann", help="semires: the json file; jsonl: the .jsonl file.")
]
MaskRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--mask-root",
        help="semires: mask folder (default <json dir>/masks); jsonl: base of the mask paths.",
    ),
]


#: the dataset options, one per :class:`~semires.data.DataSpec` field: (field, parameter,
#: annotation, default)
DATA_OPTIONS = (
    ("format", "fmt", FormatOpt, DataFormat.refer),
    ("root", "root", RootOpt, None),
    ("dataset", "dataset", DatasetOpt, None),
    ("split_by", "split_by", SplitByOpt, None),
    ("image_root", "image_root", ImageRootOpt, None),
    ("ann", "ann", AnnOpt, None),
    ("mask_root", "mask_root", MaskRootOpt, None),
)


def data_spec(**options: Any):
    """The :class:`~semires.data.DataSpec` the data options describe (by parameter name)."""
    from semires.data import DataSpec

    values = {}
    for field, param, _, default in DATA_OPTIONS:
        value = options.get(param, default)
        if isinstance(value, DataFormat):
            value = value.value
        values[field] = str(value) if isinstance(value, Path) else value
    return DataSpec(**values)


def with_data_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the dataset options (``--format``, ``--root``, ``--dataset``,
    ``--split-by``, ``--image-root``, ``--ann``, ``--mask-root``), defined here once; the
    command receives them as one ``location`` keyword argument, a
    :class:`~semires.data.DataSpec`."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "location"]
    keyword = inspect.Parameter.KEYWORD_ONLY
    extra = [inspect.Parameter(p, keyword, default=d, annotation=a) for _, p, a, d in DATA_OPTIONS]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        options = {p: kwargs.pop(p) for _, p, _, _ in DATA_OPTIONS}
        return command(location=data_spec(**options), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {k: v for k, v in command.__annotations__.items() if k != "location"}
    return wrapper


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

"""Options shared by the commands that read a dataset (``--format``, ``--root``, ...)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from semires.data.formats import FORMATS, format_for, suffix_rule


def _format_help() -> str:
    """``--format``'s help: the registered formats and how the default is chosen."""
    listed = "; ".join(f"{name}: {fmt.help}" for name, fmt in FORMATS.items())
    return (
        f"{listed}; or a plugin's (--plugin). Default: the one the --ann file's ending names "
        f"({suffix_rule()}), else refer (evaluate: else the checkpoint's)."
    )


def _ann_help() -> str:
    """``--ann``'s help: the file each format that reads one expects."""
    files = [f"{n}: FILE{f.suffixes[0] if f.suffixes else ''}" for n, f in FORMATS.items() if "ann" in f.fields]  # fmt: skip
    return f"The annotation file ({'; '.join(files)})."


FormatOpt = Annotated[str | None, typer.Option("--format", help=_format_help())]
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
AnnOpt = Annotated[Path | None, typer.Option("--ann", help=_ann_help())]
MaskRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--mask-root",
        help="semires: mask folder (default <json dir>/masks); jsonl: base of the mask paths.",
    ),
]


#: the dataset options, one per :class:`~semires.data.DataSpec` field: (field, parameter,
#: annotation); every option defaults to None (not given)
DATA_OPTIONS = (
    ("format", "fmt", FormatOpt),
    ("root", "root", RootOpt),
    ("dataset", "dataset", DatasetOpt),
    ("split_by", "split_by", SplitByOpt),
    ("image_root", "image_root", ImageRootOpt),
    ("ann", "ann", AnnOpt),
    ("mask_root", "mask_root", MaskRootOpt),
)


def given_data_options(**options: Any) -> dict[str, str]:
    """The data options given on the command line (by parameter name), as DataSpec fields with
    string values; ``--format`` is checked against the registry."""
    from semires.errors import ConfigError

    given = {f: str(options[p]) for f, p, _ in DATA_OPTIONS if options.get(p) is not None}
    if "format" in given:
        try:
            FORMATS.get(given["format"])
        except ConfigError as err:
            raise ConfigError(f"--format: {err}") from None
    return given


def data_spec(**options: Any):
    """The :class:`~semires.data.DataSpec` the data options describe (by parameter name): the
    format is ``--format``, else the one ``--ann``'s file ending names, else refer."""
    from semires.data import DataSpec

    given = given_data_options(**options)
    given.setdefault("format", format_for(given.get("ann")) or "refer")
    return DataSpec(**given)


def _with_options(
    command: Callable[..., Any], keyword: str, build: Callable[..., Any]
) -> Callable[..., Any]:
    """``command`` with the dataset options added to its signature; the wrapper passes
    ``build(**options)`` as the ``keyword`` argument."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != keyword]
    kind = inspect.Parameter.KEYWORD_ONLY
    extra = [inspect.Parameter(p, kind, default=None, annotation=a) for _, p, a in DATA_OPTIONS]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        options = {p: kwargs.pop(p) for _, p, _ in DATA_OPTIONS}
        return command(**{keyword: build(**options)}, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {k: v for k, v in command.__annotations__.items() if k != keyword}
    return wrapper


def with_data_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the dataset options (``--format``, ``--root``, ``--dataset``,
    ``--split-by``, ``--image-root``, ``--ann``, ``--mask-root``), defined here once; the
    command receives them as one ``location`` keyword argument, a
    :class:`~semires.data.DataSpec` (see :func:`data_spec`)."""
    return _with_options(command, "location", data_spec)


def with_data_overrides(command: Callable[..., Any]) -> Callable[..., Any]:
    """The same dataset options for a command that completes a stored location (``evaluate``:
    the checkpoint's dataset); it receives the options given as one ``data`` keyword argument,
    a dict of DataSpec fields (see :func:`given_data_options`)."""
    return _with_options(command, "data", given_data_options)


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


def main_process() -> bool:
    """Whether this is the process that prints a command's result: the only one, or rank 0
    under torchrun (the others print nothing, so a table or a report line is said once)."""
    import os

    return os.environ.get("RANK", "0") == "0"


def output_folder(path: Path | None, option: str) -> Path | None:
    """A folder a command will write into (made when missing), checked before any work: not
    an existing file, and no file on the way to it."""
    from semires.utils.io import check_folder_target

    return None if path is None else check_folder_target(path, option)


def at_least(value: float | None, minimum: float, option: str, *, strict: bool = False) -> None:
    """A numeric option below ``minimum`` (or equal to it, when ``strict``) is a one-line error;
    None (an option not given) passes."""
    from semires.errors import ConfigError

    if value is not None and not (value > minimum if strict else value >= minimum):
        relation = ">" if strict else ">="
        raise ConfigError(f"{option}: expected a value {relation} {minimum}, got {value}")

"""The registry of dataset formats: how a :class:`~semires.data.DataSpec` is read (and written).

A format is one :class:`DataFormat` record registered in :data:`FORMATS`; ``load_index``,
``DataSpec.describe``, the CLI's ``--format`` / ``--ann`` options and ``semires data convert``
all look formats up here. A new format is one reader plus one registration, in the package or in
your own module (imported with ``semires --plugin MODULE`` or ``SEMIRES_PLUGINS``)::

    from semires.data.formats import DataFormat, register_format, require_fields

    def read_csv(spec):
        require_fields(spec, "csv", "ann", metavar="FILE.csv")
        ...  # build and return a RESIndex

    register_format(DataFormat("csv", read_csv, help="a CSV file", suffixes=(".csv",)))

The built-in readers and writers (refer, semires, jsonl) are imported only when used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from semires.errors import ConfigError, DataError
from semires.utils.registry import Registry

if TYPE_CHECKING:
    from semires.data import DataSpec
    from semires.data.index import RESIndex

#: the DataSpec fields a format may use, and the CLI option of each
OPTIONS = {
    "root": "--root",
    "dataset": "--dataset",
    "split_by": "--split-by",
    "ann": "--ann",
    "image_root": "--image-root",
    "mask_root": "--mask-root",
}


@dataclass(frozen=True)
class WriteOptions:
    """What ``semires data convert`` hands a writer besides the index and ``--out``."""

    #: jsonl: masks as ``png`` or ``npy`` files, or ``rle`` in the lines
    masks: str = "png"
    #: jsonl: copy the images to ``images/`` beside the file
    copy_images: bool = False
    #: refer: the dataset name (None: the source's)
    dataset: str | None = None
    #: refer: the ``refs(<split_by>).p`` name (None: the source's)
    split_by: str | None = None
    progress: bool = True


Reader = Callable[["DataSpec"], "RESIndex"]
#: ``write(index, out, options) -> the main file written`` (shown as "wrote <path>")
Writer = Callable[["RESIndex", Path, WriteOptions], Path]


def describe_location(spec: DataSpec) -> str:
    """``"<format> <ann or root>"``: the default one-line description of a dataset."""
    return f"{spec.format} {spec.ann or spec.root or spec.image_root}"


@dataclass(frozen=True)
class DataFormat:
    """One on-disk dataset format: its name, reader, optional writer and help."""

    name: str
    #: ``read(spec) -> RESIndex``; checks the fields it needs (:func:`require_fields`) and raises
    #: a one-line :class:`~semires.errors.DataError` for bad data
    read: Reader
    #: one short line for ``--format``'s help
    help: str = ""
    #: the DataSpec fields it reads (documentation and the CLI's help)
    fields: tuple[str, ...] = ("ann", "image_root", "mask_root")
    #: endings of its ``ann`` file (``".jsonl"``): ``--ann FILE`` without ``--format`` picks it
    suffixes: tuple[str, ...] = ()
    #: ``write(index, out, options) -> path`` for ``semires data convert --to <name>``, or None
    write: Writer | None = None
    #: whether ``write`` fills a folder (``--out DIR``) rather than writing one file
    writes_folder: bool = False
    #: ``describe(spec) -> str``: the dataset in one line (logs, reports)
    describe: Callable[[DataSpec], str] = describe_location

    def __post_init__(self) -> None:
        unknown = [f for f in self.fields if f not in OPTIONS]
        if unknown:
            raise ConfigError(
                f"data format {self.name!r}: unknown DataSpec field {unknown[0]!r}; "
                f"expected some of {', '.join(OPTIONS)}"
            )
        bad = [s for s in self.suffixes if not (s.startswith(".") and len(s) > 1)]
        if bad:
            raise ConfigError(f"data format {self.name!r}: suffix {bad[0]!r} must start with '.'")


#: every registered dataset format, by name
FORMATS: Registry[DataFormat] = Registry("data format")


def register_format(fmt: DataFormat, *, replace: bool = False) -> DataFormat:
    """Register ``fmt`` under its name; a second format claiming one of its suffixes is an
    error (``--ann`` alone must pick one format)."""
    for name, other in FORMATS.items():
        taken = set(fmt.suffixes) & set(other.suffixes)
        if taken and name != fmt.name:
            raise ConfigError(
                f"data format {fmt.name!r}: suffix {sorted(taken)[0]!r} is read by {name!r} already"
            )
    FORMATS.add(fmt.name, fmt, replace=replace)
    return fmt


def get_format(name: str) -> DataFormat:
    """The format registered as ``name`` (plugins loaded first); an unknown name is a
    :class:`~semires.errors.ConfigError` listing the registered ones."""
    return FORMATS.get(name)


def writable() -> tuple[str, ...]:
    """The names of the formats that have a writer (``semires data convert --to``)."""
    return tuple(name for name, fmt in FORMATS.items() if fmt.write is not None)


def detect_format(ann: str | Path) -> str | None:
    """The format whose suffix ``ann`` ends with (the longest match), or None."""
    text = str(ann).lower()
    matches = [(len(s), n) for n, f in FORMATS.items() for s in f.suffixes if text.endswith(s)]
    return max(matches)[1] if matches else None


def suffix_rule() -> str:
    """The rule of :func:`detect_format` in words: ``".json: semires, .jsonl: jsonl"``."""
    return ", ".join(f"{s}: {n}" for n, f in FORMATS.items() for s in f.suffixes)


def format_for(ann: str | Path | None, option: str = "--ann") -> str | None:
    """The format ``ann`` implies by its suffix, None without ``ann``; an ``ann`` no format
    claims is a :class:`~semires.errors.ConfigError` saying to give ``--format``."""
    if ann is None:
        return None
    name = detect_format(ann)
    if name is None:
        raise ConfigError(
            f"{option} {ann}: its format is not known from the file ending ({suffix_rule()}); "
            f"give --format (registered: {', '.join(FORMATS)})"
        )
    return name


def require_fields(spec: DataSpec, fmt: str, *names: str, metavar: str | None = None) -> None:
    """A :class:`DataError` "the <fmt> format needs --a and --b" when one of the DataSpec
    fields ``names`` is unset (``metavar`` follows a single option: ``--ann FILE.jsonl``)."""
    if all(getattr(spec, n) for n in names):
        return
    options = [OPTIONS[n] for n in names]
    wanted = " and ".join(options) + (f" {metavar}" if metavar and len(options) == 1 else "")
    raise DataError(f"the {fmt} format needs {wanted}")


# ---------------------------------------------------------------------- refer
def _read_refer(spec: DataSpec) -> RESIndex:
    from semires.data.refer import read_refer

    require_fields(spec, "refer", "root", "dataset")
    assert spec.root and spec.dataset
    return read_refer(spec.root, spec.dataset, spec.split_by, image_root=spec.image_root)


def _write_refer(index: RESIndex, out: Path, options: WriteOptions) -> Path:
    from semires.data.refer import write_refer

    name = options.dataset or index.name
    split_by = options.split_by or index.split_by or "semires"
    return write_refer(index, out, name, split_by) / f"refs({split_by}).p"


def _describe_refer(spec: DataSpec) -> str:
    return f"refer {spec.root}/{spec.dataset} ({spec.split_by})"


# ---------------------------------------------------------------------- LAVT / SemiRES json
def _read_semires(spec: DataSpec) -> RESIndex:
    from semires.data.semires_json import read_semires_json

    require_fields(spec, "semires", "ann", metavar="FILE.json")
    assert spec.ann
    if spec.ann.endswith(".jsonl"):
        raise DataError(f"{spec.ann} is JSON Lines: read it with --format jsonl")
    return read_semires_json(spec.ann, mask_root=spec.mask_root, image_root=spec.image_root)


def _write_semires(index: RESIndex, out: Path, options: WriteOptions) -> Path:
    from semires.data.semires_json import write_semires_json

    return write_semires_json(index, out, progress=options.progress)


# ---------------------------------------------------------------------- JSON Lines
def _read_jsonl(spec: DataSpec) -> RESIndex:
    from semires.data.jsonl import read_jsonl

    require_fields(spec, "jsonl", "ann", metavar="FILE.jsonl")
    assert spec.ann
    return read_jsonl(spec.ann, image_root=spec.image_root, mask_root=spec.mask_root)


def _write_jsonl(index: RESIndex, out: Path, options: WriteOptions) -> Path:
    from semires.data.jsonl import mask_format, write_jsonl

    masks = mask_format(options.masks, "--masks")
    return write_jsonl(
        index, out, masks=masks, copy_images=options.copy_images, progress=options.progress
    )


register_format(
    DataFormat(
        "refer",
        _read_refer,
        help="refs(<split-by>).p + instances.json in <root>/<dataset>/",
        fields=("root", "dataset", "split_by", "image_root"),
        write=_write_refer,
        writes_folder=True,
        describe=_describe_refer,
    )
)
register_format(
    DataFormat(
        "semires",
        _read_semires,
        help="the LAVT/SemiRES json",
        suffixes=(".json",),
        write=_write_semires,
    )
)
register_format(
    DataFormat(
        "jsonl",
        _read_jsonl,
        help="JSON Lines, one referred object per line",
        suffixes=(".jsonl",),
        write=_write_jsonl,
    )
)

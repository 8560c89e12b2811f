"""The registry of dataset formats: a new format defined and registered here, in a test module,
is read by ``load_index`` and by the CLI (as a plugin); unknown formats and formats without a
writer are refused in one line.

This module is also the plugin: ``SEMIRES_PLUGINS=test_data_formats`` (with ``tests/`` on the
path) registers the ``csvrefs`` format below in a fresh process.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from semires.cli import main
from semires.data import DataSpec, load_index
from semires.data.formats import (
    FORMATS,
    DataFormat,
    detect_format,
    register_format,
    require_fields,
)
from semires.data.index import Image, Object, Ref, RESIndex, Sentence
from semires.errors import ConfigError, DataError, missing

TESTS = Path(__file__).resolve().parent
COLUMNS = ("ref", "image", "mask", "split", "expression")


# ---------------------------------------------------------------------- the new format
def read_csv_refs(spec: DataSpec) -> RESIndex:
    """``csvrefs``: one CSV row per expression (``ref,image,mask,split,expression``); the rows of
    one ``ref`` are one referred object; image and mask paths relative to the file's folder (or
    ``--image-root`` / ``--mask-root``); an empty ``mask`` is an unlabeled object."""
    require_fields(spec, "csvrefs", "ann", metavar="FILE.csv")
    path = Path(str(spec.ann))
    if not path.is_file():
        raise missing(path, "csv file")
    images: dict[str, int] = {}
    refs: dict[str, Ref] = {}
    masks: dict[int, Path | None] = {}
    mask_root = Path(spec.mask_root) if spec.mask_root else path.parent
    with open(path, newline="", encoding="utf-8") as fh:
        for n, row in enumerate(csv.DictReader(fh)):
            image_id = images.setdefault(row["image"], len(images) + 1)
            ref = refs.get(row["ref"])
            if ref is None:
                ref = refs[row["ref"]] = Ref(len(refs) + 1, len(refs) + 1, image_id, 0, row["split"], [])  # fmt: skip
                masks[ref.id] = mask_root / row["mask"] if row["mask"] else None
            ref.sentences.append(Sentence.from_text(n, row["expression"]))
    objects = [Object(r.id, r.image_id, 0, None, mask_file=masks[r.id]) for r in refs.values()]
    return RESIndex(
        [Image(i, name) for name, i in images.items()],
        objects,
        refs.values(),
        {0: ""},
        name=path.stem,
        image_root=spec.image_root or path.parent,
        source=str(path),
    )


CSV_REFS = register_format(
    DataFormat(
        "csvrefs",
        read_csv_refs,
        help="one CSV row per expression",
        fields=("ann", "image_root", "mask_root"),
        suffixes=(".csv",),
    ),
    replace=True,  # this module may be imported under two names (pytest, the plugin loader)
)


# ---------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def example(tmp_path_factory) -> tuple[Path, Path]:
    """The package's JSON Lines example and the same dataset as ``csvrefs``: (jsonl, csv)."""
    from semires.data.jsonl import write_example

    folder = tmp_path_factory.mktemp("formats")
    jsonl = write_example(folder / "ex", progress=False)
    path = folder / "ex" / "refs.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for n, line in enumerate(jsonl.read_text().splitlines()):
            entry = json.loads(line)
            for text in entry["expressions"]:
                writer.writerow([n, entry["image"], entry.get("mask", ""), entry["split"], text])
    return jsonl, path


# ---------------------------------------------------------------------- reading
def test_load_index_reads_a_registered_format(example) -> None:
    jsonl, path = example
    index = load_index(DataSpec(format="csvrefs", ann=str(path)))
    same = load_index(DataSpec(format="jsonl", ann=str(jsonl)))
    assert index.splits() == same.splits() == ["train", "val", "testA", "testB"]
    for split in index.splits():
        ours, theirs = index.refs_in(split), same.refs_in(split)
        assert [[s.raw for s in r.sentences] for r in ours] == [
            [s.raw for s in r.sentences] for r in theirs
        ]
        assert [index.has_mask(r.object_id) for r in ours] == [
            same.has_mask(r.object_id) for r in theirs
        ]
        for a, b in zip(ours, theirs, strict=True):
            assert index.images[a.image_id].file_name == same.images[b.image_id].file_name
            if same.has_mask(b.object_id):
                np.testing.assert_array_equal(index.mask(a.object_id), same.mask(b.object_id))
    assert sum(1 for _ in index.sentences("val")) == sum(1 for _ in same.sentences("val")) > 0
    assert index.load_image(1).shape[2] == 3
    assert DataSpec(format="csvrefs", ann=str(path)).describe() == f"csvrefs {path}"


def test_the_reader_names_the_missing_option() -> None:
    with pytest.raises(DataError, match=r"^the csvrefs format needs --ann FILE\.csv$"):
        load_index(DataSpec(format="csvrefs"))


def test_the_registry_lists_and_detects_it() -> None:
    assert FORMATS.names()[:3] == ("refer", "semires", "jsonl")
    assert FORMATS.get("csvrefs") is CSV_REFS
    assert detect_format("a/b.CSV") == "csvrefs"
    assert detect_format("a/b.jsonl") == "jsonl" and detect_format("a/b.json") == "semires"
    assert detect_format("a/b.txt") is None


def test_bad_registrations_are_refused() -> None:
    def read(spec: DataSpec) -> RESIndex:
        raise AssertionError("never read")

    with pytest.raises(ConfigError, match="data format 'csvrefs' is registered already"):
        register_format(DataFormat("csvrefs", read))
    with pytest.raises(ConfigError, match=r"suffix '\.json' is read by 'semires' already"):
        register_format(DataFormat("myjson", read, suffixes=(".json",)))
    with pytest.raises(ConfigError, match="unknown DataSpec field 'path'"):
        DataFormat("mine", read, fields=("path",))
    with pytest.raises(ConfigError, match="expected letters, digits and _"):
        register_format(DataFormat("my-format", read))
    assert "myjson" not in FORMATS and "my-format" not in FORMATS


# ---------------------------------------------------------------------- the command line
def counts(path: Path) -> dict:
    """A ``data stats --json`` file without the fields that name the source."""
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("source", "dataset")}


def semires(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m semires ARGS`` in a fresh process, with ``tests/`` importable."""
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    full = {**os.environ, "PYTHONPATH": path, "SEMIRES_PLUGINS": "", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "semires", *args], capture_output=True, text=True, env=full
    )


def test_stats_of_a_plugin_format_from_the_command_line(example, tmp_path: Path) -> None:
    jsonl, path = example
    out, expected = tmp_path / "csv.json", tmp_path / "jsonl.json"
    env = {"SEMIRES_PLUGINS": "test_data_formats"}
    run = semires("data", "stats", "--format", "csvrefs", "--ann", str(path), "--json", str(out), env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "val" in run.stdout
    assert main(["data", "stats", "--ann", str(jsonl), "--json", str(expected), "-q"]) == 0
    assert counts(out) == counts(expected) and counts(out)["splits"]
    # --plugin instead of the variable, and the format from the file's ending (.csv)
    again = tmp_path / "again.json"
    run = semires("--plugin", "test_data_formats", "data", "stats", "--ann", str(path), "--json", str(again), "-q")  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert counts(again) == counts(expected)


def test_without_the_plugin_the_format_is_unknown(example) -> None:
    _, path = example
    run = semires("data", "stats", "--format", "csvrefs", "--ann", str(path))
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: --format: unknown data format 'csvrefs'; registered: refer, semires, jsonl"
    ]


def test_an_unknown_format_is_one_line_listing_the_registered_ones(capsys) -> None:
    assert main(["data", "stats", "--format", "nope", "--ann", "x.csv"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("error: --format: unknown data format 'nope'; registered: refer, ")
    assert "csvrefs" in err
    assert main(["data", "stats", "--ann", "x.unknown"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--ann x.unknown: its format is not known from the file ending" in err
    assert ".csv: csvrefs" in err and err.count("\n") == 0


def test_an_unknown_format_in_a_config_names_the_key() -> None:
    from semires.train.config import DataConfig
    from semires.utils.typed_config import load_dataclass

    for cls in (DataSpec, DataConfig):  # DataConfig has its own validate()
        with pytest.raises(ConfigError, match=r"^config key 'data\.format': unknown data format 'nope'; registered: refer, semires, jsonl"):  # fmt: skip
            load_dataclass(cls, {"format": "nope"}, prefix="data")


def test_train_with_an_unknown_format_exits_2(capsys) -> None:
    assert main(["train", "-c", "synth_tiny", "-q", "data.format=nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config key 'data.format': unknown data format 'nope'" in err


def test_convert_to_a_format_without_a_writer_is_refused(example, tmp_path: Path, capsys) -> None:
    jsonl, _ = example
    out = tmp_path / "out.csv"
    code = main(["data", "convert", "--ann", str(jsonl), "--to", "csvrefs", "--out", str(out)])
    assert code == 2 and not out.exists()
    assert capsys.readouterr().err.strip() == (
        "error: --to csvrefs: the csvrefs format can be read but not written; "
        "formats with a writer: refer, semires, jsonl"
    )
    assert main(["data", "convert", "--ann", str(jsonl), "--to", "nope", "--out", str(out)]) == 2
    assert "--to: unknown data format 'nope'; registered: " in capsys.readouterr().err


def test_convert_reads_the_new_format_and_writes_a_builtin_one(example, tmp_path: Path) -> None:
    from semires.data.jsonl import read_jsonl

    _, path = example
    out = tmp_path / "back.jsonl"
    args = ["data", "convert", "--ann", str(path), "--to", "jsonl", "--out", str(out), "-q"]
    assert main(args) == 0
    back, source = read_jsonl(out), load_index(DataSpec(format="csvrefs", ann=str(path)))
    assert len(back.refs) == len(source.refs)
    labeled = [r for r in source.refs.values() if source.has_mask(r.object_id)]
    assert labeled and all(back.has_mask(r.object_id) for r in labeled)
    ref = labeled[0]
    np.testing.assert_array_equal(back.mask(ref.id), source.mask(ref.object_id))

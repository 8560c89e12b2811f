"""``semires data stats`` and ``semires data split`` through the CLI entry point."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from semires.cli import main
from semires.data.refer import write_refer
from semires.data.semires_json import write_semires_json
from test_refer import make_index


@pytest.fixture()
def toy(tmp_path: Path) -> Path:
    write_refer(make_index(), tmp_path / "data", "toy", "mine")
    return tmp_path / "data"


def refer_args(root: Path) -> list[str]:
    return ["--format", "refer", "--root", str(root), "--dataset", "toy", "--split-by", "mine"]


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    stderr = capsys.readouterr().err.replace("\r", "\n")  # progress bars redraw with \r
    err = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    return err[0]


def test_stats_refer_json(toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "stats.json"
    assert main(["data", "stats", *refer_args(toy), "--json", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[3].split()[:5] == ["train", "2", "2", "3", "3.00"]
    stats = json.loads(out.read_text())
    assert stats["dataset"] == "toy"
    assert stats["splits"]["val"] == {
        "images": 1,
        "refs": 1,
        "sentences": 1,
        "mean_sentence_length": 2.0,
        "masks": 1,
        "mask_area_quantiles": {k: pytest.approx(50 / 600) for k in stats["splits"]["val"]["mask_area_quantiles"]},
    }  # fmt: skip


def test_stats_semires_and_no_masks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ann = write_semires_json(make_index(), tmp_path / "s" / "refs.json")
    out = tmp_path / "stats.json"
    assert (
        main(["data", "stats", "--format", "semires", "--ann", str(ann), "--json", str(out)]) == 0
    )
    assert json.loads(out.read_text())["splits"]["train"]["refs"] == 2
    assert main(["data", "stats", "--format", "semires", "--ann", str(ann), "--no-masks"]) == 0
    assert "note: masks not read (--no-masks)" in capsys.readouterr().out
    moved = tmp_path / "moved"
    (tmp_path / "s" / "masks").rename(moved)
    args = ["data", "stats", "--format", "semires", "--ann", str(ann), "--mask-root", str(moved)]
    assert main([*args, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["splits"]["testA"]["mask_area_quantiles"]["max"] == 0.3


def test_split_command(toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, ann = tmp_path / "split", tmp_path / "labeled" / "refs.json"
    args = ["data", "split", "--labeled", "50%", "--seed", "0", "--out", str(out)]
    assert main([*args, *refer_args(toy), "--semires-json", str(ann)]) == 0
    printed = capsys.readouterr().out
    assert "toy train: labeled 50% (seed 0)" in printed
    assert "labeled         1 images" in printed and "unlabeled       1 images" in printed
    assert sorted(p.name for p in out.iterdir()) == ["labeled.txt", "split.json", "unlabeled.txt"]
    meta = json.loads((out / "split.json").read_text())
    data = json.loads(ann.read_text())
    assert len(data["train"]) == meta["labeled"]["refs"] == 1
    assert [e["mask_id"] for e in data["val"] + data["testA"]] == [101, 102]
    assert sorted(p.name for p in (ann.parent / "masks").iterdir()) == [
        f"{m['mask_id']}.npy" for m in data["train"] + data["val"] + data["testA"]
    ]


def test_split_json_without_masks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ann = write_semires_json(make_index(), tmp_path / "refs.json", masks=False)
    args = ["data", "split", "--labeled", "1", "--out", str(tmp_path / "s")]
    extra = ["--format", "semires", "--ann", str(ann), "--semires-json", str(tmp_path / "o.json")]
    assert main([*args, *extra]) == 0
    assert "(no masks: none available)" in capsys.readouterr().out
    assert not (tmp_path / "masks").exists()


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("ratio", "expected"),
    [("0", "is outside"), ("150%", "is outside"), ("-1", "is outside"), ("abc", "not a number")],
)
def test_split_bad_ratio_writes_nothing(
    toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], ratio: str, expected: str
) -> None:
    out = tmp_path / "split"
    code = main(["data", "split", "--labeled", ratio, "--out", str(out), *refer_args(toy)])
    assert code == 2
    line = error_line(capsys)
    assert expected in line and repr(ratio) in line
    assert not out.exists()


def test_missing_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", *refer_args(tmp_path / "nope")]) == 2
    assert f"refer data root not found: {tmp_path / 'nope'}" in error_line(capsys)
    assert main(["data", "stats", "--format", "semires"]) == 2
    assert "needs --ann" in error_line(capsys)
    assert main(["data", "stats", "--format", "semires", "--ann", str(tmp_path / "x.json")]) == 2
    assert "semires json not found" in error_line(capsys)


def test_malicious_pickle_refused(
    toy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    monkeypatch.chdir(toy)
    path = toy / "toy" / "refs(mine).p"
    path.write_bytes(pickle.dumps([Evil()]))
    assert main(["data", "stats", *refer_args(toy)]) == 2
    assert f"refs file {path}: refused to load posix.system" in error_line(capsys)
    assert not (toy / "pwned").exists()


def test_truncated_pickle(toy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = toy / "toy" / "refs(mine).p"
    path.write_bytes(path.read_bytes()[:100])
    assert main(["data", "stats", *refer_args(toy)]) == 2
    assert f"refs file {path} is not a readable pickle" in error_line(capsys)


def test_bad_mask_file_in_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ann = write_semires_json(make_index(), tmp_path / "refs.json")
    np.save(tmp_path / "masks" / "101.npy", np.full((3, 3), 7, np.uint8))
    out = tmp_path / "stats.json"
    assert (
        main(["data", "stats", "--format", "semires", "--ann", str(ann), "--json", str(out)]) == 2
    )
    assert "masks/101.npy: expected binary values" in error_line(capsys)
    assert not out.exists()
    (tmp_path / "masks" / "101.npy").write_bytes(b"")
    assert main(["data", "stats", "--format", "semires", "--ann", str(ann)]) == 2
    assert "cannot read mask file" in error_line(capsys)

"""`semires score` and score_folders: folders of mask files, json content, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from semires.cli import main
from semires.data.masks import write_mask_npy, write_mask_png
from semires.errors import DataError
from semires.evaluate.score import score_folders


def box(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[rows, cols] = 1
    return mask


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Three samples: IoU 0.6 (PNG 0/255 vs .npy), 1.0, and an empty prediction (IoU 0)."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    shape = (10, 12)
    write_mask_png(pred / "a.png", box(shape, slice(2, 6), slice(3, 8)))  # 20 px
    write_mask_npy(gt / "a.npy", box(shape, slice(3, 7), slice(3, 8)))  # 20 px, I = 15, U = 25
    write_mask_npy(pred / "b.npy", box(shape, slice(0, 5), slice(0, 6)))  # 30 px
    write_mask_png(gt / "b.png", box(shape, slice(0, 5), slice(0, 6)))  # I = U = 30
    write_mask_png(pred / "c.png", np.zeros(shape, np.uint8))
    write_mask_png(gt / "c.png", box(shape, slice(0, 1), slice(0, 5)))  # I = 0, U = 5
    (pred / "notes.txt").write_text("not a mask")  # ignored
    (gt / ".hidden.png").write_bytes(b"")  # ignored
    return pred, gt


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `semires score ARGS`: (exit code, stdout, the one "error: ..." line or "")."""
    code = main(["score", *[str(a) for a in args]])
    out = capsys.readouterr()
    errors = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1
    return code, out.out, errors[0] if errors else ""


def test_cli_json_content_original(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "scores.json"
    code, stdout, _ = run([*folders, "--protocol", "original", "--json", out], capsys)
    assert code == 0
    report = json.loads(out.read_text())
    assert report["oIoU"] == pytest.approx(100 * 45 / 60)
    assert report["mIoU"] == pytest.approx(100 * 1.6 / 3)
    assert report["precision"] == pytest.approx(
        {"0.5": 200 / 3, "0.6": 200 / 3, "0.7": 100 / 3, "0.8": 100 / 3, "0.9": 100 / 3}
    )
    assert report["per_sample"] == pytest.approx({"a": 0.6, "b": 1.0, "c": 0.0})
    assert (report["protocol"], report["n"]) == ("original", 3)
    assert "75.00" in stdout and "53.33" in stdout  # the printed table


def test_lavt_protocol_resizes_and_accepts_other_sizes(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pred, gt = folders
    write_mask_npy(pred / "d.npy", np.ones((24, 24), np.uint8))
    write_mask_npy(gt / "d.npy", np.ones((48, 48), np.uint8))
    report = score_folders(pred, gt, protocol="lavt")
    assert report["per_sample"]["d"] == 1.0
    assert report["per_sample"]["b"] == 1.0
    assert report["n"] == 4 and report["protocol"] == "lavt"
    code, _, err = run([pred, gt, "--protocol", "original"], capsys)
    assert code == 2
    assert "d.npy: prediction size 24x24 differs from ground truth 48x48" in err


def test_missing_and_extra_files_are_listed(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, gt = folders
    for i in range(7):
        write_mask_npy(gt / f"only_gt_{i}.npy", np.ones((10, 12), np.uint8))
    write_mask_npy(pred / "only_pred.npy", np.ones((10, 12), np.uint8))
    out = tmp_path / "never.json"
    code, _, err = run([pred, gt, "--json", out], capsys)
    assert code == 2
    assert "7 ground-truth masks without a prediction" in err
    assert "only_gt_0, only_gt_1, only_gt_2, only_gt_3, only_gt_4, ... (7 in all)" in err
    assert "1 predictions without a ground truth (only_pred)" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (np.array([[0, 1], [2, 1]], np.uint8), "expected binary values"),
        (np.zeros((0, 4), np.uint8), "expected a non-empty 2-D mask"),
    ],
)
def test_bad_mask_file_names_the_file(
    folders: tuple[Path, Path],
    content: np.ndarray,
    expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pred, gt = folders
    np.save(pred / "a.npy", content)
    (pred / "a.png").unlink()
    code, _, err = run([pred, gt], capsys)
    assert code == 2
    assert f"{pred / 'a.npy'}" in err and expected in err


def test_empty_file_and_duplicate_stems_and_missing_folder(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    pred, gt = folders
    (pred / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read mask file .*a\.png"):
        score_folders(pred, gt)
    write_mask_npy(pred / "a.npy", np.ones((10, 12), np.uint8))
    with pytest.raises(DataError, match=r"two mask files for 'a' \(a\.npy, a\.png\)"):
        score_folders(pred, gt)
    with pytest.raises(DataError, match="prediction folder not found"):
        score_folders(tmp_path / "absent", gt)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no mask files"):
        score_folders(tmp_path / "empty", gt)


def test_unknown_protocol_exit_code(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run([*folders, "--protocol", "cris"], capsys)
    assert code == 2 and "unknown protocol 'cris'" in err


def test_evaluate_api_completes_the_data_options_as_the_cli(synth_tiny: Path, tmp_path: Path, monkeypatch) -> None:  # fmt: skip
    """`semires.evaluate` for Python callers: an ``ann`` whose ending names no format takes the
    checkpoint's format, and a relative dataset path the checkpoint keeps that is not found
    from the current folder is one line saying what to give (as `semires evaluate`)."""
    import shutil

    import torch

    from semires.data import DataSpec, load_index
    from semires.data.jsonl import write_jsonl
    from semires.evaluate.evaluate import evaluate_checkpoint
    from semires.train.config import load_config
    from semires.train.engine import train

    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    trained_in = tmp_path / "trained_in"
    (trained_in / "data").mkdir(parents=True)
    write_jsonl(index, trained_in / "data" / "set.jsonl", masks="rle", copy_images=True, progress=False)  # fmt: skip
    monkeypatch.chdir(trained_in)  # trained with paths relative to this folder
    overrides = ["data.format=jsonl", "data.ann=data/set.jsonl"]
    overrides += ["data.img_size=64", "data.test_splits=[]", "model.name=test-tiny"]
    overrides += ["train.epochs=1", "train.steps_per_epoch=1", "train.batch_size=2"]
    train(load_config(None, [*overrides, "output.dir=run", "output.tensorboard=false"]), progress=False)  # fmt: skip
    ckpt = trained_in / "run" / "best.pt"
    here = evaluate_checkpoint(ckpt, "val", device="cpu", progress=False)["metrics"]
    monkeypatch.chdir(tmp_path)  # elsewhere: the relative data.ann is not found from here
    with pytest.raises(DataError, match=r"keeps data.ann 'data/set.jsonl', relative to the folder it was trained in.*give --ann \(data_overrides 'ann'\)"):  # fmt: skip
        evaluate_checkpoint(ckpt, "val", device="cpu", progress=False)
    # the same file under a name whose ending names no format: the checkpoint's (jsonl)
    shutil.copy(trained_in / "data" / "set.jsonl", tmp_path / "set.lines")
    given = {"ann": str(tmp_path / "set.lines"), "image_root": str(trained_in / "data")}
    there = evaluate_checkpoint(ckpt, "val", device="cpu", progress=False, data_overrides=given)
    assert there["metrics"] == here
    assert torch.load(ckpt, weights_only=True)["config"]["data"]["format"] == "jsonl"

"""The shared checks behind every command: folder locks, mask validation, device names, and
output fit for people and for logs (no bars in a redirected log, flags without a type, -q)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from semires.cli import main
from semires.data import DataSpec, load_index
from semires.data.masks import encode, validate_mask
from semires.errors import ConfigError, DataError
from semires.runtime.distributed import resolve_device
from semires.utils.lock import LOCK_NAME, FolderLock, FolderLockedError

REFER = ["--root", "{root}", "--dataset", "synthref", "--split-by", "synth"]


def refer(root: Path) -> list[str]:
    return [a.format(root=root) for a in REFER]


# ----------------------------------------------------------------------------- locks
def test_a_held_folder_is_refused_naming_the_holder(tmp_path: Path) -> None:
    with FolderLock(tmp_path / "run", "semires run --out run") as lock:
        assert lock.held
        assert (
            tmp_path / "run" / LOCK_NAME
        ).read_text() == f"{os.getpid()} semires run --out run\n"
        with pytest.raises(FolderLockedError) as err:  # a second lock, even in this process
            FolderLock(tmp_path / "run", "other").acquire()
        assert f"(PID {os.getpid()}, semires run --out run)" in str(err.value)
        code = "from semires.utils.lock import FolderLock; FolderLock(%r, 'x').acquire()"
        other = subprocess.run(
            [sys.executable, "-c", code % str(tmp_path / "run")], capture_output=True, text=True
        )
        assert other.returncode != 0 and f"PID {os.getpid()}" in other.stderr
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # a clean release deletes the file


def test_a_stale_lock_is_taken_over(tmp_path: Path) -> None:
    """A holder killed by SIGKILL leaves its file, but the kernel dropped its lock."""
    code = (
        "import os, signal; from semires.utils.lock import FolderLock; "
        "FolderLock(%r, 'doomed').acquire(); os.kill(os.getpid(), signal.SIGKILL)"
    )
    dead = subprocess.run([sys.executable, "-c", code % str(tmp_path)], capture_output=True)
    assert dead.returncode == -9
    assert (tmp_path / LOCK_NAME).read_text().endswith(" doomed\n")
    with FolderLock(tmp_path, "next"):
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()} next\n"


# ----------------------------------------------------------------------------- masks
def test_validate_mask_checks_size_and_content() -> None:
    mask = np.zeros((4, 6), np.uint8)
    with pytest.raises(DataError, match="object 3: the mask is empty"):
        validate_mask(encode(mask), (4, 6), "object 3")
    mask[1, 2] = 1
    rle = encode(mask)
    assert validate_mask(rle, (4, 6), "x") is rle and validate_mask(rle, None, "x") is rle
    with pytest.raises(DataError, match=r"x: the mask is 4x6 but its image is 6x4 \(height x"):
        validate_mask(rle, (6, 4), "x")


def test_masks_of_one_image_must_agree_without_any_size(synth_tiny: Path, tmp_path: Path) -> None:
    """A LAVT json without sizes and without images: the masks of an image are compared."""
    from semires.data.semires_json import read_semires_json, write_semires_json

    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    ann = write_semires_json(index, tmp_path / "a.json", progress=False)
    data = json.loads(ann.read_text())
    data.pop("images")
    ann.write_text(json.dumps(data))
    image = next(i for i in index.images if len([o for o in index.objects.values() if o.image_id == i]) > 1)  # fmt: skip
    refs = [r for r in index.refs.values() if r.image_id == image]
    np.save(tmp_path / "masks" / f"{refs[1].id}.npy", np.ones((50, 60), np.uint8))
    read = read_semires_json(ann)
    assert read.mask(refs[0].id).shape == (96, 96)
    with pytest.raises(DataError, match="the mask is 50x60 but its image is 96x96"):
        read.mask(refs[1].id)


def test_evaluate_uses_ann_for_a_refer_checkpoint(synth_tiny: Path, tmp_path: Path) -> None:
    """--ann replaces the checkpoint's refer data (the same set as a json: the same scores)."""
    from semires.data.semires_json import write_semires_json
    from semires.evaluate.evaluate import evaluate_checkpoint
    from semires.train.config import load_config
    from semires.train.engine import train

    overrides = [f"data.root={synth_tiny}", "data.dataset=synthref", "data.split_by=synth"]
    overrides += ["data.img_size=64", "data.test_splits=[]", "model.name=test-tiny"]
    overrides += ["train.epochs=1", "train.steps_per_epoch=1", "train.batch_size=2"]
    train(load_config(None, [*overrides, f"output.dir={tmp_path / 'run'}"]), progress=False)
    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    ann = write_semires_json(index.subset([r.id for r in index.refs_in("val")][:5]), tmp_path / "v.json", progress=False)  # fmt: skip
    ckpt = tmp_path / "run" / "best.pt"
    full = evaluate_checkpoint(ckpt, "val", device="cpu", progress=False)["metrics"]
    images = str(synth_tiny / "images" / "synthref")
    part = evaluate_checkpoint(ckpt, "val", device="cpu", progress=False, data_overrides={"ann": str(ann), "image_root": images})  # fmt: skip
    sentences = sum(len(r.sentences) for r in index.refs_in("val")[:5])
    assert part["metrics"]["n"] == sentences < full["n"]  # the json's refs, not the checkpoint's


# ----------------------------------------------------------------------------- devices
@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cpu:0", "", "tpu"])
def test_unknown_device_names(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"--device: unknown device {name!r}; expected auto"):
        resolve_device(name)


def test_device_names() -> None:
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cuda:3", available=False) is None  # the spelling only
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"config key 'train\.device': 'cuda' asks for a GPU"):
            resolve_device("cuda", "config key 'train.device'")


# ----------------------------------------------------------------------------- output
def semires(*args: str, progress: str | None = None) -> subprocess.CompletedProcess:
    """``python -m semires ARGS`` with stdout and stderr redirected (as in ``make demo > log``);
    ``progress``: a ``SEMIRES_PROGRESS`` value."""
    env = {k: v for k, v in os.environ.items() if k not in ("SEMIRES_PROGRESS", "TQDM_DISABLE")}
    env["OMP_NUM_THREADS"] = "1"
    if progress is not None:
        env["SEMIRES_PROGRESS"] = progress
    return subprocess.run(
        [sys.executable, "-m", "semires", *args], capture_output=True, text=True, env=env
    )


def test_no_progress_bars_in_a_redirected_log(synth_tiny: Path, tmp_path: Path) -> None:
    stats = semires("data", "stats", *refer(synth_tiny))
    assert stats.returncode == 0 and "train" in stats.stdout
    assert stats.stderr == ""  # no "mask areas: 40%|####" redraws
    forced = semires("data", "stats", *refer(synth_tiny), progress="1")
    assert "mask areas" in forced.stderr
    args = ["train", "-c", "synth_tiny", f"data.root={synth_tiny}", "data.img_size=64"]
    args += ["data.test_splits=[]", "model.name=test-tiny", "train.epochs=1", "train.batch_size=4"]
    args += ["train.steps_per_epoch=2", "train.text_cache=null", f"output.dir={tmp_path / 'r'}"]
    run = semires(*args)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "[synth_tiny] epoch=1" in run.stdout  # the epoch line stays in the log
    assert "%|" not in run.stderr and "\r" not in run.stderr  # no epoch / evaluation bars


COMMANDS_WITH_BARS = [
    ["data", "stats"],
    ["data", "split"],
    ["data", "synth"],
    ["propose"],
    ["proposals", "verify"],
    ["proposals", "quality"],
    ["train"],
    ["evaluate"],
    ["score"],
    ["model", "pretrain"],
    ["run"],
]


@pytest.mark.parametrize("command", COMMANDS_WITH_BARS, ids=" ".join)
def test_help_shows_quiet_and_flags_without_a_type(command: list[str], capsys) -> None:
    assert main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "--quiet" in text and "-q" in text
    for line in text.splitlines():
        if "--quiet" in line or "--help" in line:
            assert "<bool>" not in line, line


def test_pretrain_help_names_the_real_config_key(capsys) -> None:
    assert main(["model", "pretrain", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "``" not in text
    assert "model.overrides.backbone_weights=PATH" in text
    assert " model.backbone_weights" not in text

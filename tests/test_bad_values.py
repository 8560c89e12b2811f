"""Bad values a row of the bad-input table cannot express (issue 30, classes 1, 2 and 4).

A model whose weights hold NaN never becomes ``best.pt``; ``semires.load`` refuses such a
checkpoint; a resume over an optimizer state that does not fit says so in one line; JSON writers
refuse NaN before writing anything; the mask checks (RLE counts, polygons) and the numeric
domains of config fields, unit by unit.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from semires.data import masks as mask_ops
from semires.errors import CheckpointError, ConfigError, DataError
from semires.runtime.checkpoint import load_checkpoint, save_checkpoint
from semires.train.config import load_config
from semires.train.engine import Trainer, train
from semires.utils.typed_config import Domain, check_numbers
from test_engine import make_cfg as engine_cfg

#: one step of the test model, no test split, no TensorBoard (on top of test_engine's settings)
SMALL = [
    "data.test_splits=[]",
    "train.epochs=1",
    "train.steps_per_epoch=1",
    "train.batch_size=2",
    "output.tensorboard=false",
]


def make_cfg(root: Path, out: Path, *extra: str):
    return engine_cfg(root, out, *SMALL, *extra)


@pytest.fixture(scope="module")
def finished(synth_tiny, tmp_path_factory) -> Path:
    """A finished tiny run (its latest.pt and best.pt)."""
    out = tmp_path_factory.mktemp("runs") / "ok"
    train(make_cfg(synth_tiny, out), progress=False)
    return out


def poisoned(source: Path, target: Path, value: float = float("nan")) -> Path:
    """A copy of the checkpoint ``source`` whose floating-point weights all hold ``value``."""
    ck = load_checkpoint(source)
    ck["model"] = {
        k: v.fill_(value) if v.is_floating_point() else v for k, v in ck["model"].items()
    }
    save_checkpoint(target, {k: v for k, v in ck.items() if k not in ("format", "version")})
    return target


# ----------------------------------------------------------------------------- best.pt
@pytest.mark.parametrize("skip_eval", [False, True], ids=["validated", "no-evaluation"])
def test_non_finite_weights_never_become_best(synth_tiny, tmp_path, monkeypatch, skip_eval):
    """The optimizer's step leaves NaN weights after a finite loss: the run stops in one line
    before the evaluation and before best.pt, whether best.pt comes from the evaluation of
    the val split or (``skip_eval``) from the last weights."""
    real = Trainer.train_step

    def diverging_step(self, batches):
        logs = real(self, batches)
        with torch.no_grad():
            next(self.model.parameters()).fill_(float("nan"))
        return logs

    monkeypatch.setattr(Trainer, "train_step", diverging_step)
    out = tmp_path / "out"
    cfg = make_cfg(synth_tiny, out, f"train.skip_eval={str(skip_eval).lower()}")
    with pytest.raises(CheckpointError) as err:
        train(cfg, progress=False)
    message = str(err.value)
    assert "\n" not in message and "are not finite (NaN or infinity) at step 1" in message
    assert "best.pt is not written (none exists)" in message
    assert not (out / "best.pt").exists()


def test_predict_refuses_non_finite_weights(finished, tmp_path):
    import semires

    first = next(k for k, v in load_checkpoint(finished / "best.pt")["model"].items() if v.is_floating_point())  # fmt: skip
    for value in (float("nan"), float("inf")):
        path = poisoned(finished / "best.pt", tmp_path / f"{value}.pt", value)
        with pytest.raises(CheckpointError) as err:
            semires.load(path, device="cpu")
        assert str(err.value) == (
            f"checkpoint {path}: the weights {first!r} hold NaN or infinite values (the training "
            "that wrote it diverged); use an earlier checkpoint or train again"
        )


def test_predict_cli_writes_no_mask_for_non_finite_weights(finished, synth_tiny, tmp_path, capsys):
    from semires.cli import main

    path = poisoned(finished / "best.pt", tmp_path / "nan.pt")
    image = synth_tiny / "images" / "synthref" / "000001.png"
    code = main(["predict", "--checkpoint", str(path), "--image", str(image), "--text", "the ring", "--out", str(tmp_path / "m.png")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nan.pt: the weights" in err[0]
    assert not (tmp_path / "m.png").exists()


# ----------------------------------------------------------------------------- resume
def test_resume_over_an_optimizer_state_that_does_not_fit(finished, synth_tiny, tmp_path):
    """Same settings, but the optimizer state has another number of parameter groups (written
    by another version or a patched optimizer): one line, nothing changed."""
    out = tmp_path / "out"
    out.mkdir()
    ck = load_checkpoint(finished / "latest.pt")
    ck["optimizer"]["param_groups"] = ck["optimizer"]["param_groups"][:1]
    save_checkpoint(out / "latest.pt", {k: v for k, v in ck.items() if k not in ("format", "version")})  # fmt: skip
    before = (out / "latest.pt").read_bytes()
    with pytest.raises(CheckpointError) as err:
        Trainer(make_cfg(synth_tiny, out), progress=False)
    message = str(err.value)
    assert "\n" not in message and "its optimizer state does not fit" in message
    assert "output.resume=false" in message
    assert sorted(p.name for p in out.iterdir()) == ["latest.pt"]
    assert (out / "latest.pt").read_bytes() == before


def test_resume_of_the_same_run_still_works(finished, synth_tiny, tmp_path):
    """The run's own latest.pt, with settings that change no tensor (more epochs, another
    learning rate), resumes."""
    import shutil

    out = tmp_path / "again"
    shutil.copytree(finished, out)
    train(make_cfg(synth_tiny, out, "train.epochs=2", "train.lr=1e-4"), progress=False)
    assert load_checkpoint(out / "latest.pt")["step"] == 2


# ----------------------------------------------------------------------------- json writers
def test_json_writer_refuses_nan_before_writing(tmp_path):
    from semires.utils.io import atomic_write_json

    with pytest.raises(DataError) as err:
        atomic_write_json(tmp_path / "a.json", {"splits": {"val": [1.0, float("nan")]}})
    assert str(err.value) == (
        f"cannot write {tmp_path / 'a.json'}: splits.val[1] is nan, and JSON holds only finite "
        "numbers (nothing was written)"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("to", ["jsonl", "semires"])
def test_converting_a_nan_box_writes_nothing(synth_tiny, tmp_path, to):
    """An index built in code (no reader refused it) with a NaN box: the writers refuse it
    before the first mask file."""
    from dataclasses import replace

    from semires.data import DataSpec, load_index
    from semires.data.jsonl import write_jsonl
    from semires.data.semires_json import write_semires_json

    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    first = next(iter(index.objects.values()))
    index = index.replace_objects([replace(first, bbox=(math.nan, 0.0, 1.0, 1.0))])
    out = tmp_path / "c" / ("data.jsonl" if to == "jsonl" else "a.json")
    with pytest.raises(
        DataError, match=r"cannot write .*: (bbox\[0\]|\w+\[\d+\]\.bbox\[0\]) is nan"
    ):
        if to == "jsonl":
            write_jsonl(index, out, progress=False)
        else:
            write_semires_json(index, out, progress=False)
    assert not out.parent.exists() or not any(out.parent.rglob("*"))


# ----------------------------------------------------------------------------- masks
@pytest.mark.parametrize(
    ("rle", "problem"),
    [
        ({"size": [4, 4], "counts": "garbage!!"}, "not a valid COCO RLE string"),
        (
            {"size": [4, 4], "counts": [0, 1e8]},
            "add up to 100000000 pixels, but its size 4x4 has 16",
        ),
        ({"size": [4, 4], "counts": [3, 4]}, "add up to 7 pixels"),
        ({"size": [4, 4], "counts": [-1, 17]}, "a negative run length (-1)"),
        ({"size": [4, 4], "counts": [1.5, 14.5]}, "not a valid COCO RLE list"),
        ({"size": [4, 4], "counts": [True, 15]}, "not a valid COCO RLE list"),
        ({"size": [4, 0], "counts": []}, "2 positive integers"),
        ({"size": [4, 4], "counts": 5}, "a string or a list of integers, got int"),
        ({"size": [4, 4], "counts": [16]}, "the mask is empty"),
    ],
)
def test_validate_mask_refuses_bad_rles(rle, problem):
    with pytest.raises(DataError) as err:
        mask_ops.validate_mask(rle, (4, 4), "f.jsonl:3")
    assert str(err.value).startswith("f.jsonl:3: ") and problem in str(err.value)


def test_rle_runs_agree_with_pycocotools():
    from pycocotools import mask as coco

    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 80, 2))
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        rle = mask_ops.encode(mask)
        runs = mask_ops.rle_runs(rle)
        assert runs is not None and int(runs.sum()) == h * w
        assert int(runs[1::2].sum()) == int(coco.area({**rle, "counts": rle["counts"].encode()}))
        if mask.any():
            assert mask_ops.validate_mask(rle, (h, w), "x") is rle


@pytest.mark.parametrize(
    ("polygons", "problem"),
    [
        ([[0, 0, 120, 0, 50, 50]], "the point (120, 0) outside its 100x100 image"),
        ([0, 0, 50, -5, 50, 50], "the point (50, -5) outside"),
        ([[0, 0, float("inf"), 0, 50, 50]], "has the coordinate inf; expected finite numbers"),
        ([[0, 0, "x", 0, 50, 50]], "should be a list of x, y numbers"),
    ],
)
def test_validate_mask_refuses_bad_polygons(polygons, problem):
    with pytest.raises(DataError, match=r"^a\.json: annotations") as err:
        mask_ops.validate_mask(polygons, (100, 100), "a.json: annotations[0] (id 7)")
    assert problem in str(err.value)
    mask_ops.validate_mask([[0, 0, 101.5, 0, 50, 100]], (100, 100), "x")  # on the border: fine


# ----------------------------------------------------------------------------- config numbers
@pytest.mark.parametrize(
    ("domain", "value", "expected"),
    [
        (Domain(ge=0), float("nan"), "a finite number >= 0"),
        (Domain(gt=0), 0.0, "> 0"),
        (Domain(ge=0, le=1), 2.0, "a value in [0, 1]"),
        (Domain(ge=0, lt=1), float("inf"), "a finite number in [0, 1)"),
        (Domain(ge=1), 10**400, "an integer >= 1 (and below 2**63)"),
        (Domain(ge=1), 2**62, None),
        (Domain(finite=False), float("inf"), None),
        (Domain(), -(10**400), "an integer (and below 2**63)"),
    ],
    ids=["nan", "zero", "above", "inf-in-range", "huge-int", "big-int", "allowed-inf", "-huge"],
)
def test_domains(domain, value, expected):
    assert domain.problem(value) == expected


def test_check_numbers_names_nested_keys():
    with pytest.raises(ConfigError, match=r"^config key 'p\.a\.b\[1\]': expected a finite number, got inf$"):  # fmt: skip
        check_numbers({"a": {"b": [1.0, float("inf")]}}, "p")
    check_numbers({"a": ["nan", None, True, 3]}, "p")  # strings, None and booleans are not numbers


def test_class_weights_nan_refused_at_load_not_at_step_0(synth_tiny, tmp_path):
    with pytest.raises(ConfigError, match=r"'train\.class_weights\[0\]': expected a finite number > 0"):  # fmt: skip
        make_cfg(synth_tiny, tmp_path / "out", "train.class_weights=[nan,1]")
    assert not (tmp_path / "out").exists()


def test_nan_spellings_in_a_config_file(tmp_path):
    """YAML's own spellings of NaN and infinity (.nan, .inf) and other ones (NaN) alike."""
    for text in ("train:\n  weight_decay: .nan\n", "train:\n  weight_decay: NaN\n", "train:\n  lr: -.inf\n"):  # fmt: skip
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=r"config key 'train\.(weight_decay|lr)': expected a finite number"):  # fmt: skip
            load_config(path)

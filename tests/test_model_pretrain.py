"""Backbone pretraining on dense synthetic labels, and the packaged weights of ``tiny``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from semires.data.synth import load
from semires.data.synth.catalog import COLOURS
from semires.errors import CheckpointError, ConfigError, DataError
from semires.model import build_model
from semires.model.backbone import build_backbone, packaged_weights, resolve_weights
from semires.model.pretrain import (
    TASKS,
    DenseHeads,
    PretrainConfig,
    dense_targets,
    pretrain_backbone,
    pretrain_on_synth,
    stage_features,
)
from semires.model.registry import get_model_config


@pytest.fixture(scope="module")
def index(synth_tiny):
    return load(synth_tiny)


def test_dense_targets_label_every_object_pixel_with_its_shape_colour_and_pattern(index) -> None:
    image_id = next(iter(index.images))
    targets = dense_targets(index, image_id)
    objects = sorted(
        (o for o in index.objects.values() if o.image_id == image_id),
        key=lambda o: o.attributes["z"],
    )
    assert targets.shape == (3, *index.image_size(image_id))
    union = np.zeros(targets.shape[1:], bool)
    for ob in objects:
        union |= index.mask(ob.id).astype(bool)
    assert np.array_equal(targets[0] > 0, union)  # shape label exactly on object pixels
    assert np.array_equal(targets[1] > 0, union)
    top = objects[-1]  # nothing covers the top object
    body = top.attributes["parts"][0]
    from semires.data import masks as mask_ops

    body_px = mask_ops.decode(body["rle"]).astype(bool)
    assert body_px.any()
    assert set(np.unique(targets[0][index.mask(top.id).astype(bool)])) == {
        TASKS["shape"].index(top.attributes["shape"])
    }
    assert set(np.unique(targets[1][body_px])) == {TASKS["colour"].index(body["colour"])}
    pattern = top.attributes.get("pattern") or "plain"
    assert set(np.unique(targets[2][index.mask(top.id).astype(bool)])) == {
        TASKS["pattern"].index(pattern)
    }
    assert len(TASKS["colour"]) == len(COLOURS) + 1


def test_dense_targets_refuse_a_non_synthetic_object(index) -> None:
    image_id = next(iter(index.images))
    ob = next(o for o in index.objects.values() if o.image_id == image_id)
    saved = ob.attributes
    ob.attributes = {}
    try:
        with pytest.raises(DataError, match=f"object {ob.id}"):
            dense_targets(index, image_id)
    finally:
        ob.attributes = saved


def test_pretraining_lowers_the_loss_and_writes_loadable_weights(index, tmp_path) -> None:
    cfg = get_model_config("test-tiny")
    out = tmp_path / "bb.pth"
    summary = pretrain_backbone(
        cfg, index, out, PretrainConfig(steps=80, batch_size=8, lr=3e-3, warmup_steps=5),
        val_index=index, progress=False,
    )  # fmt: skip
    assert summary["final_loss"] < 0.85 * summary["first_loss"]
    assert set(summary["val_accuracy"]) == set(TASKS)
    # the file is a timm-layout backbone state that the model's loader takes strictly
    model = build_model(cfg, backbone_weights=str(out))
    saved = torch.load(out, map_location="cpu")
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_pretrain_on_synth_writes_weights_and_a_summary(tmp_path) -> None:
    cfg = get_model_config("test-tiny")
    out = tmp_path / "w" / "bb.pth"
    (tmp_path / "w").mkdir()
    data = {"preset": "tiny", "seed": 5, "images_train": 6, "images_val": 2}
    summary = pretrain_on_synth(
        cfg, out, tmp_path / "data", PretrainConfig(steps=2, batch_size=2), data=data,
        progress=False,
    )  # fmt: skip
    assert out.is_file()
    written = json.loads((tmp_path / "w" / "bb.pth.json").read_text())
    assert written["data"]["seed"] == 5 and written["steps"] == 2
    assert written == json.loads(json.dumps(summary))


def test_dense_heads_predict_every_task_at_stride_4() -> None:
    cfg = get_model_config("test-tiny")
    backbone = build_backbone(cfg.backbone, 64, cfg.backbone_kwargs)
    heads = DenseHeads(backbone.channels, 8)
    out = heads(stage_features(backbone, torch.zeros(2, 3, 64, 64)))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        t: (2, len(n), 16, 16) for t, n in TASKS.items()
    }


def test_packaged_weights_are_resolved_by_name_and_unknown_names_fail() -> None:
    shipped = packaged_weights()
    assert "convnext-atto-synth" in shipped
    assert resolve_weights("semires:convnext-atto-synth") == shipped["convnext-atto-synth"]
    with pytest.raises(ConfigError, match="no packaged weights 'nope'"):
        resolve_weights("semires:nope")
    with pytest.raises(CheckpointError, match="not found"):
        build_model("test-tiny", backbone_weights="/nonexistent/w.pth")


def test_the_tiny_model_starts_from_the_packaged_pretrained_backbone() -> None:
    cfg = get_model_config("tiny")
    assert cfg.backbone_weights == "semires:convnext-atto-synth"
    saved = torch.load(packaged_weights()["convnext-atto-synth"], map_location="cpu")
    backbone = build_backbone(cfg.backbone, cfg.img_size, cfg.backbone_kwargs)
    assert set(saved) == set(backbone.state_dict())
    from semires.model.backbone import load_backbone_weights

    load_backbone_weights(backbone, cfg.backbone_weights)
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, saved[k]), k
    sidecar = packaged_weights()["convnext-atto-synth"].with_suffix(".pth.json")
    meta = json.loads(sidecar.read_text())
    assert meta["data"]["seed"] >= 1000  # never the seeds of runs and benchmarks
    assert meta["val_accuracy"]["colour"] > 0.8  # far above chance (1/8 shapes, 1/8 colours)
    assert meta["val_accuracy"]["shape"] > 0.3


def test_cli_pretrain_and_list(tmp_path, capsys) -> None:
    from semires.cli import main

    out = tmp_path / "bb.pth"
    argv = ["model", "pretrain", "--model", "test-tiny", "--data", str(tmp_path / "d")]
    argv += ["--out", str(out), "--images", "4", "--steps", "2", "--batch-size", "2"]
    assert main(argv) == 0
    assert "val pixel accuracy" in capsys.readouterr().out
    build_model("test-tiny", backbone_weights=str(out))  # loads strictly
    assert main(["model", "list"]) == 0
    listing = capsys.readouterr().out
    assert "semires:convnext-atto-synth" in listing and "test-tiny" in listing

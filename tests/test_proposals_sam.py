"""The ``sam`` generator with a tiny random SAM, checkpoint errors, and the missing ``sam2`` extra.

How the tests inject a small model: ``SamGenerator(model=tiny_sam())`` for the library path, and
for the command line ``MODEL_BUILDERS["tiny"] = tiny_sam`` (``register_sam_model``) plus a
checkpoint saved from ``tiny_sam()``, so that ``semires propose --generator sam --model-type tiny
--checkpoint FILE`` runs the real build / load / hash / generate code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import pytest
import torch

from semires.cli import main
from semires.errors import CheckpointError, ConfigError
from semires.proposals.base import build_generator
from semires.proposals.sam import MODEL_BUILDERS, SamGenerator, file_sha256, tiny_sam
from semires.proposals.store import ProposalStore, verify_store

LOOSE = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "points_per_side": 4}


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    pixels = np.full((64, 80, 3), 120, np.uint8)
    pixels[10:40, 10:30] = (200, 30, 30)
    pixels[30:60, 40:75] = (30, 60, 210)
    return np.clip(pixels + rng.integers(0, 10, pixels.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def tiny_checkpoint(tmp_path, monkeypatch):
    """A checkpoint of :func:`tiny_sam`, with ``tiny`` registered as a model type."""
    monkeypatch.setitem(MODEL_BUILDERS, "tiny", tiny_sam)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "tiny.pth"
    torch.save(tiny_sam(seed=1).state_dict(), path)
    return path


def test_tiny_random_sam_gives_masks(image) -> None:
    gen = SamGenerator(model=tiny_sam(), **LOOSE)
    props = gen.generate(image)
    assert len(props) >= 2 and props.size == (64, 80)
    assert props.predicted_iou is not None and props.stability_score is not None
    assert np.array_equal(props.scores, props.predicted_iou) and np.all(np.diff(props.scores) <= 0)
    masks = props.masks()
    assert np.array_equal(props.areas, masks.sum(axis=(1, 2))) and props.areas.min() > 0
    assert gen.generate(image).rles == props.rles  # deterministic on a CPU
    params = gen.params()
    assert params["model_type"] == "custom" and len(params["weights_sha256"]) == 64
    assert params["points_per_side"] == 4 and "device" not in params and "checkpoint" not in params


def test_bf16_image_encoder_runs_and_keeps_the_interface(image) -> None:
    model = tiny_sam()
    props = SamGenerator(model=model, bf16=True, **LOOSE).generate(image)
    assert len(props) >= 1 and props.size == (64, 80)
    assert "forward" not in vars(model.image_encoder)  # the autocast wrapper is removed again


def test_checkpoint_loads_and_is_hashed(tiny_checkpoint, image, tmp_path) -> None:
    gen = build_generator("sam", model_type="tiny", checkpoint=str(tiny_checkpoint), **LOOSE)
    digest = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert gen.params()["checkpoint_sha256"] == digest and gen.params()["model_type"] == "tiny"
    expected = SamGenerator(model=tiny_sam(seed=1), **LOOSE).generate(image)
    assert gen.generate(image).rles == expected.rles  # the weights came from the file
    cache = json.loads((tmp_path / "cache" / "semires" / "sha256.json").read_text())
    assert list(cache.values()) == [digest] and file_sha256(tiny_checkpoint) == digest


def test_missing_checkpoint_names_the_path(tiny_checkpoint, tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"sam checkpoint not found: .*nowhere\.pth"):
        SamGenerator(model_type="tiny", checkpoint=str(tmp_path / "nowhere.pth"))
    with pytest.raises(CheckpointError, match="needs --checkpoint PATH"):
        SamGenerator(model_type="tiny")


def test_wrong_checkpoint_file_names_the_path(tiny_checkpoint, tmp_path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(CheckpointError, match=r"cannot read SAM checkpoint .*garbage\.pth"):
        SamGenerator(model_type="tiny", checkpoint=str(garbage))
    other = tmp_path / "other.pth"
    torch.save(tiny_sam(embed_dim=32).state_dict(), other)  # another architecture
    with pytest.raises(CheckpointError, match=r"other\.pth is not a SAM tiny checkpoint"):
        SamGenerator(model_type="tiny", checkpoint=str(other))
    with pytest.raises(ConfigError, match=r"unknown SAM model type 'vit_x'; known: .*vit_b"):
        SamGenerator(model_type="vit_x", checkpoint=str(tiny_checkpoint))


@pytest.mark.skipif(importlib.util.find_spec("sam2") is not None, reason="sam2 is installed")
def test_missing_sam2_names_the_extra(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"pip install semires\[sam2\]"):
        build_generator("sam2", checkpoint=str(tmp_path / "x.pt"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from semires.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth"), preset="tiny", seed=0)


def test_propose_with_sam_end_to_end(synth, tiny_checkpoint, tmp_path) -> None:
    out = tmp_path / "store"
    data = ["--root", str(synth), "--dataset", "synthref"]
    knobs = [f"--set={k}={v}" for k, v in LOOSE.items()]
    args = ["propose", *data, "--split", "val", "--all-images", "--generator", "sam"]
    args += [
        "--model-type",
        "tiny",
        "--checkpoint",
        str(tiny_checkpoint),
        *knobs,
        "--out",
        str(out),
    ]
    assert main(args) == 0
    store = ProposalStore.open(out, expect_generator="sam")
    assert len(store) == 4 and all(store.count(i) >= 1 for i in store.image_ids())
    assert store.params["checkpoint_sha256"] == file_sha256(tiny_checkpoint)
    assert store.params["pred_iou_thresh"] == 0.0 and verify_store(out).ok
    assert main([*args, "--set", "points_per_batch=8"]) == 0  # a runtime knob: resumes
    assert main([*args, "--set", "points_per_side=8"]) == 2  # another setting: refused


@pytest.mark.parametrize(
    ("knobs", "some_dropped"),
    [
        ({"pred_iou_thresh": 0.0}, False),  # every mask passes: nothing to skip
        ({"pred_iou_thresh": 0.34}, True),  # about half of the masks pass
        ({"pred_iou_thresh": 0.5, "box_nms_thresh": 1.0}, True),
        ({"pred_iou_thresh": 0.34, "crop_n_layers": 1}, True),  # crops: their own batches
        ({"pred_iou_thresh": 0.9}, True),  # none passes: no upscaling at all
        ({"pred_iou_thresh": 0.0, "stability_score_thresh": 0.95}, False),
    ],
)
def test_prefiltered_decoding_gives_the_library_records(image, knobs, some_dropped) -> None:
    """``prefilter`` (the default) upscales only the masks that pass the predicted-IoU filter:
    every record (mask, scores, point, box, crop) is the library's, to the bit."""
    from segment_anything import SamAutomaticMaskGenerator

    model = tiny_sam()
    knobs = {"points_per_side": 8, "stability_score_thresh": 0.0, **knobs}
    library = SamAutomaticMaskGenerator(model, output_mode="coco_rle", **knobs)
    ours = SamGenerator(model=model, **knobs)
    assert type(ours.amg).__name__ == "PrefilteringMaskGenerator"
    with torch.inference_mode():
        expected, got = library.generate(image), ours.amg.generate(image)
    assert got == expected
    counts = ours.amg.counts
    assert counts["decoded"] == 192 * (1 + 4 * knobs.get("crop_n_layers", 0))
    assert (counts["iou_pass"] < counts["decoded"]) == some_dropped
    assert len(expected) <= counts["stable"] <= counts["iou_pass"]
    if knobs["pred_iou_thresh"] == 0.34:
        assert counts["iou_pass"] > 0 and len(expected) >= 2
    plain = SamGenerator(model=model, prefilter=False, **knobs)
    assert plain.generate(image).rles == ours.generate(image).rles
    assert "prefilter" not in ours.params()  # a runtime knob: stores resume either way


def test_a_single_passing_point_is_upscaled_as_in_its_batch(image) -> None:
    """A batch of one takes another convolution kernel on this CPU (other rounding): a single
    passing point is padded to two, so its masks are still the library's."""
    from segment_anything import SamAutomaticMaskGenerator

    from semires.proposals.sam import decode_prefiltered

    model = tiny_sam()
    knobs = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    library = SamAutomaticMaskGenerator(model, **knobs)
    with torch.inference_mode():
        library.predictor.set_image(image)
        points = library.point_grids[0] * np.array(image.shape[:2])[None, ::-1]
        coords = torch.as_tensor(library.predictor.transform.apply_coords(points, image.shape[:2]))
        masks, iou, _ = library.predictor.predict_torch(
            coords[:, None, :], torch.ones(len(coords), 1, dtype=torch.int), return_logits=True
        )
        best = float(iou.max())
        got, got_iou, index = decode_prefiltered(library.predictor, coords, best - 1e-6)
    assert len(index) == 1 and float(got_iou[0]) == best
    assert torch.equal(got[0], masks.flatten(0, 1)[int(index[0])])


def test_batched_rle_is_the_library_rle() -> None:
    """``masks_to_rle`` gives ``mask_to_rle_pytorch``'s dicts (the same Python ints)."""
    from segment_anything.utils.amg import mask_to_rle_pytorch

    from semires.proposals.sam import masks_to_rle

    g = torch.Generator().manual_seed(0)
    edge = torch.zeros(4, 6, 5, dtype=torch.bool)
    edge[1], edge[2, 0, 0], edge[3, -1, -1] = True, True, True  # full, first, last pixel
    stacks = [torch.rand(shape, generator=g) > 0.5 for shape in [(0, 5, 7), (1, 1, 1), (9, 48, 64)]]
    for masks in [*stacks, edge]:
        assert masks_to_rle(masks) == mask_to_rle_pytorch(masks)

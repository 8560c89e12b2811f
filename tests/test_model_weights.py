"""Weight loading: timm and original-Swin backbone files, BERT from a local folder, errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch

from semires.errors import CheckpointError
from semires.model import build_model, get_model_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _timm_reference(name: str, **extra) -> torch.nn.Module:
    """A randomly initialised full timm model (head included) with the config's backbone."""
    cfg = get_model_config(name)
    kwargs = dict(cfg.backbone_kwargs, **extra)
    if "swin" in cfg.backbone:
        kwargs.update(img_size=cfg.img_size, strict_img_size=False, always_partition=True)
    torch.manual_seed(7)
    return timm.create_model(cfg.backbone, pretrained=False, num_classes=10, **kwargs)


def _assert_backbone_equals(model, reference: torch.nn.Module) -> None:
    ours = model.backbone.state_dict()
    theirs = reference.state_dict()
    assert ours.keys() <= theirs.keys()
    assert {k.split(".")[0] for k in theirs.keys() - ours.keys()} <= {"head", "norm"}
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key


def _to_original_swin(reference: torch.nn.Module, head_classes: int = 37) -> dict:
    """Invert timm's conversion: the Microsoft Swin checkpoint layout, {"model": state_dict}.

    The original merges patches at the END of stage i (``layers.i.downsample``; timm: at the
    start of stage i+1), stores ``relative_position_index`` and ``attn_mask`` buffers, and names
    the classifier ``head`` (an ImageNet-22k head in the paper's file).
    """
    out = {}
    for key, value in reference.state_dict().items():
        match = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
        if match:
            key = f"layers.{int(match.group(1)) - 1}.downsample.{match.group(2)}"
        if key.startswith("head."):
            continue
        out[key] = value.clone()
    for name, module in reference.named_modules():
        if hasattr(module, "relative_position_index"):
            out[f"{name}.relative_position_index"] = module.relative_position_index.clone()
        if any(getattr(module, "shift_size", ())):  # the original stores shifted blocks' masks
            out[f"{name}.attn_mask"] = torch.randn(4, 16, 16)
    width = reference.num_features
    out["head.weight"] = torch.randn(head_classes, width)
    out["head.bias"] = torch.randn(head_classes)
    return {"model": out}


def test_convnext_timm_layout(tmp_path: Path) -> None:
    reference = _timm_reference("test-tiny")
    path = tmp_path / "convnext.pth"
    torch.save(reference.state_dict(), path)
    torch.manual_seed(0)
    model = build_model("test-tiny", backbone_weights=str(path))
    _assert_backbone_equals(model, reference)


def test_swin_timm_layout_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    reference = _timm_reference("test-tiny-swin")
    path = tmp_path / "swin.safetensors"
    save_file(reference.state_dict(), str(path))
    model = build_model("test-tiny-swin", backbone_weights=path)
    _assert_backbone_equals(model, reference)


def test_swin_original_microsoft_layout(tmp_path: Path) -> None:
    reference = _timm_reference("test-tiny-swin")
    original = _to_original_swin(reference)
    assert "layers.0.downsample.reduction.weight" in original["model"]  # the original layout
    path = tmp_path / "swin_22k.pth"
    torch.save(original, path)
    model = build_model("test-tiny-swin", backbone_weights=str(path))
    _assert_backbone_equals(model, reference)


@pytest.mark.filterwarnings("ignore::UserWarning")  # timm's table resampling warns about torch
def test_swin_original_layout_other_window_is_resized(tmp_path: Path) -> None:
    """A file made for window 7 loads into a window-4 model (timm resizes the bias tables)."""
    reference = _timm_reference("test-tiny-swin", window_size=7)
    path = tmp_path / "swin_w7.pth"
    torch.save(_to_original_swin(reference), path)
    model = build_model("test-tiny-swin", backbone_weights=str(path))
    table = model.backbone.layers[0].blocks[0].attn.relative_position_bias_table
    assert table.shape == (7 * 7, 1)  # (2 * 4 - 1) ** 2 entries, 1 head
    qkv = model.backbone.layers[0].blocks[0].attn.qkv.weight
    assert torch.equal(qkv, reference.layers[0].blocks[0].attn.qkv.weight)


def test_missing_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(
        CheckpointError, match=f"backbone weights file not found: {re.escape(str(path))}"
    ):
        build_model("test-tiny", backbone_weights=str(path))


def test_unreadable_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(
        CheckpointError, match=f"cannot read backbone weights {re.escape(str(path))}"
    ):
        build_model("test-tiny", backbone_weights=str(path))


def test_weights_of_another_architecture(tmp_path: Path) -> None:
    path = tmp_path / "convnext.pth"
    torch.save(_timm_reference("test-tiny").state_dict(), path)
    with pytest.raises(
        CheckpointError,
        match=r"do not fit .*missing keys \d+ \(layers\.0\.blocks.*unexpected keys \d+ \(stages\.",
    ):
        build_model("test-tiny-swin", backbone_weights=str(path))


def test_weights_with_other_widths(tmp_path: Path) -> None:
    path = tmp_path / "convnext.pth"
    torch.save(_timm_reference("test-tiny").state_dict(), path)
    kwargs = {**get_model_config("test-tiny").backbone_kwargs, "dims": [16, 32, 48, 64]}
    with pytest.raises(CheckpointError, match=r"mis-shaped keys, e\.g\. stages\.2\."):
        build_model("test-tiny", backbone_weights=str(path), backbone_kwargs=kwargs)


def test_text_encoder_from_local_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model("test-tiny")
    folder = tmp_path / "my-bert"
    source.text.model.save_pretrained(folder)
    source.text.tokenizer.save_pretrained(folder)
    torch.manual_seed(1)
    loaded = build_model("test-tiny", text_encoder=str(folder))
    theirs = source.text.state_dict()
    ours = loaded.text.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    sentences = ["the big red star", ""]
    assert torch.equal(
        loaded.tokenize(sentences)["input_ids"], source.tokenize(sentences)["input_ids"]
    )
    tokens = loaded.tokenize(sentences)
    loaded.eval()
    source.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.encode_text(**tokens), source.encode_text(**tokens), rtol=0, atol=0
        )


def test_text_encoder_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "bert"
    with pytest.raises(
        CheckpointError, match=f"text encoder folder not found: {re.escape(str(path))}"
    ):
        build_model("test-tiny", text_encoder=str(path))


def test_text_encoder_hub_name_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        CheckpointError,
        match=r"text encoder 'semires-test/no-such-bert' was not found locally .*"
        r"HF_HUB_OFFLINE is set.*model\.overrides\.text_encoder=\./no-such-bert",
    ):
        build_model("test-tiny", text_encoder="semires-test/no-such-bert")


def test_full_model_state_round_trip_and_mismatch() -> None:
    torch.manual_seed(0)
    source = build_model("test-tiny")
    torch.manual_seed(1)
    target = build_model("test-tiny")
    target.load_weights(source.state_dict(), source="ckpt/latest.pt")
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())
    with pytest.raises(
        CheckpointError,
        match=r"ckpt/latest\.pt does not fit this model: missing keys \d+ \(backbone\.layers",
    ):
        build_model("test-tiny-swin").load_weights(source.state_dict(), source="ckpt/latest.pt")
    wider = build_model("test-tiny", decoder_dim=8)
    with pytest.raises(CheckpointError, match=r"mis-shaped keys, e\.g\. decoder\.blocks\.0"):
        wider.load_weights(source.state_dict(), source="ckpt/latest.pt")

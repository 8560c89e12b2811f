"""The LAVT-style RES model: registry, shapes, gradients, text path, tokenizer, param groups."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch

from semires.errors import ConfigError
from semires.model import (
    MODEL_CONFIGS,
    ModelConfig,
    RESModel,
    build_model,
    get_model_config,
    list_models,
    register_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")


SENTENCES = ["the red circle on the left", "big blue square", "star"]


@pytest.fixture(scope="module")
def convnext() -> RESModel:
    torch.manual_seed(0)
    return build_model("test-tiny")


@pytest.fixture(scope="module")
def swin() -> RESModel:
    torch.manual_seed(0)
    return build_model("test-tiny-swin")


def _inputs(model: RESModel, h: int, w: int, sentences: list[str] = SENTENCES):
    torch.manual_seed(1)
    tokens = model.tokenize(sentences)
    return torch.randn(len(sentences), 3, h, w), tokens["input_ids"], tokens["attention_mask"]


# --- registry -------------------------------------------------------------------------------


def test_registry_names_and_unknown_name() -> None:
    assert {"lavt-swin-b", "lavt-swin-t", "tiny", "test-tiny", "test-tiny-swin"} <= set(
        list_models()
    )
    paper = get_model_config("lavt-swin-b")
    assert (paper.backbone, paper.img_size, paper.text_encoder, paper.max_tokens) == (
        "swin_base_patch4_window12_384",
        480,
        "bert-base-uncased",
        20,
    )
    with pytest.raises(ConfigError, match=r"unknown model 'nope'.*lavt-swin-b.*tiny"):
        get_model_config("nope")
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("nope")


def test_get_model_config_returns_a_copy() -> None:
    cfg = get_model_config("tiny")
    cfg.backbone_kwargs["dims"] = [1, 2, 3, 4]
    assert MODEL_CONFIGS["tiny"].backbone_kwargs["dims"] == [32, 64, 128, 256]


def test_register_model_and_duplicates() -> None:
    cfg = get_model_config("test-tiny").replace(decoder_dim=8)
    register_model("test-registered", cfg)
    try:
        assert get_model_config("test-registered").decoder_dim == 8
        with pytest.raises(ConfigError, match="already registered"):
            register_model("test-registered", cfg)
        register_model("test-registered", cfg.replace(decoder_dim=4), overwrite=True)
        assert get_model_config("test-registered").decoder_dim == 4
    finally:
        MODEL_CONFIGS.pop("test-registered")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"decoder_channels": 8}, r"decoder_channels.*valid keys.*decoder_dim"),
        ({"img_size": "big"}, r"img_size.*expected an integer"),
        ({"img_size": 100}, r"'img_size': expected a multiple of 32"),
        ({"freeze_text": 1}, r"freeze_text.*expected true or false"),
        ({"max_tokens": 1}, r"'max_tokens': expected an integer >= 2"),
        ({"backbone": "resnet18"}, r"family 'resnet'.*not supported.*convnext, swin"),
        ({"backbone": "no_such_net"}, r"'no_such_net' is not a timm model name"),
        ({"backbone_kwargs": {"no_such_arg": 1}}, r"'backbone_kwargs': timm cannot build"),
        ({"text_kwargs": {"vocab_size": 10}}, r"vocab_size 10 <"),
        ({"max_tokens": 100, "text_kwargs": {"max_position_embeddings": 64}}, r"exceeds .* 64"),
        ({"fusion_heads": 3}, r"'fusion_heads': 3 heads do not divide the fusion widths 16"),
    ],
)
def test_bad_configs_raise_config_error(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model("test-tiny", **overrides)


def test_config_round_trip(convnext: RESModel) -> None:
    data = convnext.config_dict()
    text = json.dumps(data)
    assert ModelConfig.from_dict(json.loads(text)) == convnext.config
    assert data["backbone_kwargs"]["dims"] == [16, 32, 32, 64]


# --- forward ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
@pytest.mark.parametrize("name", ["convnext", "swin"])
def test_output_shape(name: str, size: tuple[int, int], request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(name)
    images, ids, mask = _inputs(model, *size)
    with torch.no_grad():
        out = model(images, ids, mask)
    assert out.shape == (3, 2, *size)
    assert torch.isfinite(out).all()


def test_decoder_runs_at_quarter_resolution(convnext: RESModel) -> None:
    """The logits are a bilinear upsampling of a 1/4-resolution map."""
    images, ids, mask = _inputs(convnext, 64, 96)
    captured = {}
    handle = convnext.decoder.register_forward_hook(lambda m, i, o: captured.setdefault("o", o))
    try:
        with torch.no_grad():
            out = convnext.eval()(images, ids, mask)
    finally:
        handle.remove()
    low = captured["o"]
    assert low.shape == (3, 2, 16, 24)
    up = torch.nn.functional.interpolate(low, size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, up)


def test_text_feats_path_equals_token_path(convnext: RESModel) -> None:
    images, ids, mask = _inputs(convnext, 64, 64)
    convnext.eval()
    with torch.no_grad():
        direct = convnext(images, ids, mask)
        feats = convnext.encode_text(ids, mask)
        cached = convnext(images, attention_mask=mask, text_feats=feats)
    assert feats.shape == (3, 20, convnext.text.hidden_size)
    torch.testing.assert_close(direct, cached, rtol=0, atol=0)


def test_padding_positions_are_ignored(swin: RESModel) -> None:
    """Word features at padded positions do not change the output (masked attention)."""
    images, ids, mask = _inputs(swin, 64, 64)
    swin.eval()
    with torch.no_grad():
        feats = swin.encode_text(ids, mask)
        noisy = feats + 100.0 * torch.randn_like(feats) * (1 - mask[..., None])
        out = swin(images, attention_mask=mask, text_feats=feats)
        out_noisy = swin(images, attention_mask=mask, text_feats=noisy)
        other = swin(images, attention_mask=mask, text_feats=feats.flip(0))
    torch.testing.assert_close(out, out_noisy)
    assert not torch.allclose(out, other)  # the output does depend on the words


def test_forward_needs_text(convnext: RESModel) -> None:
    images, ids, mask = _inputs(convnext, 64, 64)
    with pytest.raises(ValueError, match="attention_mask"):
        convnext(images, ids)
    with pytest.raises(ValueError, match="input_ids or text_feats"):
        convnext(images, attention_mask=mask)


def test_same_seed_same_model_and_output() -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model("test-tiny-swin").eval()
        images, ids, mask = _inputs(model, 64, 64)
        with torch.no_grad():
            outs.append((model.state_dict(), model(images, ids, mask)))
    (sd_a, out_a), (sd_b, out_b) = outs
    assert sd_a.keys() == sd_b.keys()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)


def test_deepcopy_gives_identical_model(convnext: RESModel) -> None:
    """The teacher of the teacher-student stage is a deep copy."""
    teacher = copy.deepcopy(convnext).eval()
    images, ids, mask = _inputs(convnext, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(teacher(images, ids, mask), convnext.eval()(images, ids, mask))
    assert (
        teacher.tokenize(["a"])["input_ids"].tolist()
        == convnext.tokenize(["a"])["input_ids"].tolist()
    )


# --- gradients ----------------------------------------------------------------------------


def _backward(model: RESModel) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    images, ids, mask = _inputs(model, 64, 64)
    model(images, ids, mask).logsumexp(1).mean().backward()


@pytest.mark.parametrize("name", ["test-tiny", "test-tiny-swin"])
def test_every_trainable_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name)
    _backward(model)
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []  # no unused parameters (DDP without find_unused_parameters)
    for part in ("backbone", "text", "fusion", "decoder"):
        norm = sum(p.grad.abs().sum() for p in getattr(model, part).parameters())
        assert norm > 0, part


def test_frozen_text_gets_no_gradient_and_stays_in_eval() -> None:
    torch.manual_seed(0)
    model = build_model("test-tiny", freeze_text=True)
    _backward(model)
    assert model.training and not model.text.training
    assert all(not p.requires_grad and p.grad is None for p in model.text.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    counts = model.parameter_counts()
    assert counts["trainable"] == counts["total"] - counts["text"]
    ids = model.tokenize(["a"])
    assert not model.encode_text(ids["input_ids"], ids["attention_mask"]).requires_grad


@pytest.mark.parametrize("name", ["test-tiny", "test-tiny-swin"])
@pytest.mark.parametrize("stages", [2, 4])
def test_frozen_stages_get_no_gradient(name: str, stages: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, frozen_stages=stages)
    _backward(model)
    embed, staged = model.backbone.part_names
    blocks = list(getattr(model.backbone, staged))
    frozen = [getattr(model.backbone, embed), *blocks[:stages]]
    for part in frozen:
        assert all(not p.requires_grad and p.grad is None for p in part.parameters())
    for part in [*blocks[stages:], model.fusion, model.decoder]:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    trainable = {id(p) for g in model.param_groups(0.01) for p in g["params"]}
    assert not any(id(p) in trainable for part in frozen for p in part.parameters())


def test_frozen_stages_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'frozen_stages': expected an integer in 0\.\.4, got 5"):
        build_model("test-tiny", frozen_stages=5)


def test_describe_counts(convnext: RESModel) -> None:
    counts = convnext.parameter_counts()
    assert counts["total"] == sum(counts[k] for k in ("backbone", "text", "fusion", "decoder"))
    text = convnext.describe()
    assert [line.split()[0] for line in text.splitlines()] == [
        "backbone",
        "text",
        "fusion",
        "decoder",
        "total",
        "trainable",
    ]
    assert f"{counts['total'] / 1e6:.2f}M" in text


# --- tokenizer ----------------------------------------------------------------------------


def test_tokenize_pads_and_masks(convnext: RESModel) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokens = convnext.tokenize(["red circle", ""])
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    assert ids.shape == mask.shape == (2, 20)
    tok = convnext.text.tokenizer
    # "red circle" -> [CLS] red circle [SEP]; "" -> [CLS] [SEP]; the rest is padding
    assert mask.sum(1).tolist() == [4, 2]
    assert ids[0, :4].tolist() == [
        tok.cls_token_id,
        tok.convert_tokens_to_ids("red"),
        tok.convert_tokens_to_ids("circle"),
        tok.sep_token_id,
    ]
    assert ids[1, :2].tolist() == [tok.cls_token_id, tok.sep_token_id]
    assert (ids[mask == 0] == tok.pad_token_id).all()
    assert convnext.tokenize([])["input_ids"].shape == (0, 20)


def test_tokenize_truncates_with_one_warning(convnext: RESModel) -> None:
    long = "the " + "very " * 30 + "long sentence"
    with pytest.warns(
        UserWarning, match=r"2 sentence\(s\) longer than 20 tokens.*'the very very"
    ) as rec:
        tokens = convnext.tokenize([long, "ok", long.upper()])
    assert len(rec) == 1
    assert tokens["input_ids"].shape == (3, 20)
    assert tokens["attention_mask"][0].sum() == 20
    assert tokens["input_ids"][0, -1] == convnext.text.tokenizer.sep_token_id


def test_tokenize_rejects_a_bare_string(convnext: RESModel) -> None:
    with pytest.raises(TypeError, match="list of strings"):
        convnext.tokenize("red circle")


def test_minilm_tokenizer_is_packaged_and_offline() -> None:
    model = build_model("tiny")
    assert model.config.freeze_text and model.text.hidden_size == 384
    tokens = model.tokenize(["the red circle"])
    assert tokens["input_ids"][0, :5].tolist() == [101, 1996, 2417, 4418, 102]  # BERT uncased ids
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert model.eval()(images, **tokens).shape == (1, 2, 128, 128)


# --- parameter groups ---------------------------------------------------------------------


def _groups_by_name(model: RESModel, weight_decay: float) -> tuple[set[str], set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    groups = model.param_groups(weight_decay)
    decay = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(ids) == sorted(trainable)  # every trainable parameter exactly once
    return decay, no_decay


def test_param_groups_swin(swin: RESModel) -> None:
    decay, no_decay = _groups_by_name(swin, 0.01)
    assert "backbone.layers.0.blocks.0.attn.relative_position_bias_table" in no_decay
    assert "text.model.embeddings.position_embeddings.weight" in no_decay
    assert "backbone.layers.0.blocks.0.norm1.weight" in no_decay
    assert "backbone.layers.1.downsample.norm.weight" in no_decay
    assert "text.model.embeddings.LayerNorm.weight" in no_decay
    assert "decoder.blocks.0.0.1.weight" in no_decay  # BatchNorm
    assert "fusion.0.norm.weight" in no_decay
    assert "backbone.layers.0.blocks.0.attn.qkv.bias" in no_decay
    assert "backbone.layers.0.blocks.0.attn.qkv.weight" in decay
    assert "text.model.embeddings.word_embeddings.weight" in decay
    assert "fusion.0.pwam.attention.query.weight" in decay
    assert "fusion.0.gate.mlp.0.weight" in decay
    assert "decoder.blocks.0.0.0.weight" in decay
    assert all(n.endswith("weight") for n in decay)
    assert not any(n.endswith("bias") for n in decay)


def test_param_groups_frozen_text_excluded() -> None:
    torch.manual_seed(0)
    model = build_model("test-tiny", freeze_text=True)
    decay, no_decay = _groups_by_name(model, 0.05)
    assert not any(n.startswith("text.") for n in decay | no_decay)
    assert "backbone.stages.0.blocks.0.gamma" in no_decay  # ConvNeXt layer scale (1-d)
    assert "backbone.stem.0.weight" in decay

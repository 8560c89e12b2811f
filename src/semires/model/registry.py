"""Named model configs and the builder.

``build_model("tiny")`` or ``build_model(cfg, backbone_weights="swin.pth")``; overrides are
:class:`ModelConfig` fields and are validated like a config file.
"""

from __future__ import annotations

from typing import Any

from semires.errors import ConfigError
from semires.model.config import ModelConfig
from semires.model.lavt import RESModel

#: BERT-base sizes for ``text_encoder="random-bert"`` (a random stand-in of the paper's encoder)
BERT_BASE_SIZES: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "vocab_size": 30522,
    "max_position_embeddings": 512,
}

#: LAVT as its code computes it (yz93/LAVT-RIS; docs/model.md lists each fact with its line):
#: Swin-B window 12 (drop path 0.3) at 480 + BERT-base (20 tokens cut as LAVT cuts them, only
#: encoder layers 0-9 trained), PWAM with one head and key-width scaling, the decoder at half
#: the last stage's width (512), bilinear upsampling with align_corners=True
_LAVT_SWIN_B = ModelConfig(
    backbone="swin_base_patch4_window12_384",
    backbone_kwargs={"drop_path_rate": 0.3},
    img_size=480,
    text_encoder="bert-base-uncased",
    max_tokens=20,
    truncation="cut",
    freeze_text=False,
    text_train_layers=10,
    fusion_heads=1,
    fusion_scale="key",
    decoder_dim=512,
    align_corners=True,
)

#: name -> config; extend with :func:`register_model`
MODEL_CONFIGS: dict[str, ModelConfig] = {
    # the paper: Swin-B window 12 (ImageNet-22k 384 init from backbone_weights) at 480 + BERT-base
    "lavt-swin-b": _LAVT_SWIN_B,
    # the paper's architecture with random weights everywhere (benchmarks; no files needed)
    "lavt-swin-b-random": _LAVT_SWIN_B.replace(
        text_encoder="random-bert", text_kwargs=BERT_BASE_SIZES
    ),
    # LAVT's smaller variant: Swin-T window 7 at 480 + BERT-base (decoder 8 * 96 / 2 = 384)
    "lavt-swin-t": _LAVT_SWIN_B.replace(
        backbone="swin_tiny_patch4_window7_224",
        backbone_kwargs={"drop_path_rate": 0.3},
        decoder_dim=384,
    ),
    # the CPU default: a small ConvNeXt at 128 px, pretrained on synthetic scenes (packaged, see
    # semires.model.pretrain), + the packaged MiniLM, frozen; multi-head fusion with coordinates
    "tiny": ModelConfig(
        backbone="convnext_atto",
        backbone_kwargs={"dims": [32, 64, 128, 256], "depths": [1, 1, 2, 1], "conv_mlp": False},
        backbone_weights="semires:convnext-atto-synth",
        img_size=128,
        text_encoder="minilm",
        freeze_text=True,
        fusion_heads=4,
        fusion_coords=True,
        decoder_dim=32,
    ),
    # the same budget with a small random-init Swin
    "tiny-swin": ModelConfig(
        backbone="swin_tiny_patch4_window7_224",
        backbone_kwargs={
            "embed_dim": 32,
            "depths": [1, 1, 2, 1],
            "num_heads": [1, 2, 4, 8],
            "window_size": 4,
        },
        img_size=128,
        text_encoder="minilm",
        freeze_text=True,
        decoder_dim=32,
    ),
    # unit tests: everything tiny and random, no file I/O
    "test-tiny": ModelConfig(
        backbone="convnext_atto",
        backbone_kwargs={"dims": [16, 32, 32, 64], "depths": [1, 1, 1, 1], "conv_mlp": False},
        img_size=64,
        text_encoder="random-bert",
        decoder_dim=16,
    ),
    # unit tests: LAVT's architecture in miniature (Swin embed 16, a 2-layer 64-wide BERT built
    # from its config with the bert-base-uncased vocabulary of the packaged MiniLM; no files)
    "test-lavt": _LAVT_SWIN_B.replace(
        backbone_kwargs={
            "embed_dim": 16,
            "depths": [1, 1, 2, 1],
            "num_heads": [1, 1, 2, 2],
            "window_size": 4,
            "drop_path_rate": 0.0,
        },
        img_size=64,
        text_encoder="bert-config",
        text_kwargs={
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 1,
            "intermediate_size": 128,
        },
        tokenizer="minilm",
        text_train_layers=1,
        decoder_dim=64,
    ),
    "test-tiny-swin": ModelConfig(
        backbone="swin_tiny_patch4_window7_224",
        backbone_kwargs={
            "embed_dim": 16,
            "depths": [1, 2, 1, 1],
            "num_heads": [1, 2, 2, 4],
            "window_size": 4,
        },
        img_size=64,
        text_encoder="random-bert",
        decoder_dim=16,
    ),
}


def list_models() -> list[str]:
    """The registered config names, sorted."""
    return sorted(MODEL_CONFIGS)


def register_model(name: str, cfg: ModelConfig, *, overwrite: bool = False) -> None:
    """Add a named config; re-registering a name needs ``overwrite=True``."""
    if not isinstance(cfg, ModelConfig):
        raise ConfigError(f"model {name!r}: expected a ModelConfig, got {type(cfg).__name__}")
    if name in MODEL_CONFIGS and not overwrite:
        raise ConfigError(f"model {name!r} is already registered (pass overwrite=True)")
    MODEL_CONFIGS[name] = cfg


def get_model_config(name: str) -> ModelConfig:
    """A copy of the named config; an unknown name -> ConfigError listing the valid ones."""
    if name not in MODEL_CONFIGS:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    return MODEL_CONFIGS[name].replace()


def build_model(
    cfg: ModelConfig | str,
    *,
    embedded_tokenizer: dict[str, Any] | None = None,
    **overrides: Any,
) -> RESModel:
    """Build a :class:`RESModel` from a config or a registered name, with field overrides.

    Backbone weights (``backbone_weights``) and the text encoder's weights are loaded here;
    everything else is initialised from the current torch RNG state (seed before building for
    reproducible weights). ``embedded_tokenizer`` is a checkpoint's stored vocabulary, for a
    config whose ``tokenizer`` is ``"embedded"``.
    """
    base = get_model_config(cfg) if isinstance(cfg, str) else cfg
    return RESModel(base.replace(**overrides), embedded_tokenizer=embedded_tokenizer)

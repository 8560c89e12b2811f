"""The model configuration: every knob of the LAVT-style RES model, typed and validated."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from semires.errors import ConfigError
from semires.utils.typed_config import Domain, check_numbers, load_dataclass, to_dict


@dataclass
class ModelConfig:
    """What :func:`semires.model.build_model` builds.

    Image side:
      - ``backbone``: a timm model name of a supported family (Swin: ``swin_*``; ConvNeXt:
        ``convnext_*``), always built without timm's pretrained download;
      - ``backbone_kwargs``: extra ``timm.create_model`` arguments, e.g. ``dims`` / ``depths`` for
        a small ConvNeXt, ``embed_dim`` / ``depths`` / ``num_heads`` / ``window_size`` for a small
        Swin, ``drop_path_rate``. Swin is built for ``img_size`` with ``strict_img_size=False``
        (any input size works: windows are padded, shift masks built per forward); pass
        ``strict_img_size: true`` to pin the input size;
      - ``backbone_weights``: a local weights file (timm layout, or the original Microsoft Swin
        layout ``{"model": state_dict}`` such as ``swin_base_patch4_window12_384_22k.pth``);
        None = random initialisation;
      - ``img_size``: the training / evaluation input side in pixels (a multiple of 32);
      - ``frozen_stages``: the patch embedding and the first N of the four stages get no
        gradients (0: all trained, as LAVT; 4: the whole backbone frozen).

    Text side:
      - ``text_encoder``: ``"minilm"`` (the packaged all-MiniLM-L6-v2, offline), a Hugging Face
        hub name (``"bert-base-uncased"``), a local folder written by ``save_pretrained``, or
        ``"random-bert"`` (a tiny randomly initialised BERT with an in-memory vocabulary, for tests);
      - ``text_kwargs``: for ``"random-bert"`` BertConfig fields (``hidden_size``,
        ``num_hidden_layers``, ``num_attention_heads``, ``intermediate_size``, ``vocab_size``);
        otherwise extra ``AutoModel.from_pretrained`` arguments;
      - ``max_tokens``: sentences are padded / truncated to this many tokens, specials included
        (20 in LAVT);
      - ``truncation``: how a sentence longer than ``max_tokens`` is cut: ``"keep_sep"`` (the
        tokenizer's own truncation: the last token is still [SEP]) or ``"cut"`` (LAVT: encode
        with the special tokens, keep the first ``max_tokens`` ids, so a long sentence loses its
        [SEP]; zero padding);
      - ``tokenizer``: where the tokenizer comes from when it is not the text encoder's own: a
        folder holding a WordPiece ``vocab.txt`` (e.g. a ``bert-base-uncased`` download), a hub
        name, ``"minilm"`` (the packaged MiniLM's tokenizer: the bert-base-uncased vocabulary,
        offline), or ``"embedded"`` (the vocabulary stored in the checkpoint, as
        ``semires model import-lavt`` writes it; such a config is built by
        :func:`semires.model.load_model_checkpoint`). Needed by ``text_encoder: "bert-config"``;
      - ``freeze_text``: no gradients into the text encoder, kept in eval mode (its features can
        then be cached by the engine);
      - ``text_train_layers``: train only the first N transformer layers of the text encoder; its
        embeddings and later layers keep the values they were loaded with (None = all trained;
        LAVT's optimiser holds BERT's ``encoder.layer[0..9]`` only, i.e. 10).

    Fusion and decoder:
      - ``fusion_dim``: query / key width of the pixel-word attention; None = the stage width (LAVT);
      - ``fusion_heads``: attention heads of the pixel-word attention, one number or one per stage
        (1 in LAVT; LAVT's ``--mha a-b-c-d`` gives one per stage);
      - ``fusion_scale``: the attention logits' scale: ``"head"`` = head width ** -0.5 (standard
        multi-head attention) or ``"key"`` = the whole key width ** -0.5 (LAVT, whatever the
        number of heads; the same with one head);
      - ``fusion_dropout``: dropout after the visual and multimodal projections (0 in LAVT);
      - ``fusion_sentence``: also condition every pixel on the mean word feature in the fusion
        (not in LAVT, off for the paper's configs; lets a randomly initialised model learn to
        ground words quickly, see :class:`semires.model.fusion.PWAM`);
      - ``fusion_coords``: add a learned embedding of each pixel's normalised (x, y) position to
        the fusion's input (not in LAVT; helps "left", "top", "second from the right");
      - ``decoder_dim``: channels of the top-down decoder (LAVT: half the last stage's width,
        512 for Swin-B);
      - ``align_corners``: bilinear upsampling in the decoder and of the final logits with
        ``align_corners=True`` (LAVT) instead of False;
      - ``num_classes``: output channels (2: background / referred object).

    Memory:
      - ``checkpoint_activations``: activation checkpointing in training (``"none"``: off;
        ``"backbone"``: each backbone block, the patch merging with the first block of its stage,
        is recomputed in the backward pass instead of keeping its activations; ``"backbone+text"``:
        also each text-encoder layer, with transformers' gradient checkpointing). Non-reentrant
        ``torch.utils.checkpoint`` with the RNG state preserved, so dropout and stochastic depth
        draw the same masks in the recomputation: the outputs and gradients are those without it
        (to float rounding); no effect in eval mode or without gradients. Costs about one more
        forward pass of the checkpointed parts per step.

    Text encoders: ``"bert-config"`` is a BERT built from BertConfig fields in ``text_kwargs``
    with random weights (they come from a checkpoint) and the tokenizer named by ``tokenizer``:
    what an imported LAVT checkpoint needs, without any download.
    """

    backbone: str = "convnext_atto"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    backbone_weights: str | None = None
    img_size: int = 128
    frozen_stages: int = 0
    text_encoder: str = "minilm"
    text_kwargs: dict[str, Any] = field(default_factory=dict)
    max_tokens: int = 20
    truncation: Literal["keep_sep", "cut"] = "keep_sep"
    tokenizer: str | None = None
    freeze_text: bool = False
    text_train_layers: int | None = None
    fusion_dim: int | None = None
    fusion_heads: int | list[int] = 1
    fusion_scale: Literal["head", "key"] = "head"
    fusion_dropout: float = 0.0
    fusion_sentence: bool = False
    fusion_coords: bool = False
    decoder_dim: int = 256
    align_corners: bool = False
    num_classes: int = 2
    checkpoint_activations: Literal["none", "backbone", "backbone+text"] = "none"

    def __post_init__(self) -> None:
        if isinstance(self.backbone_weights, os.PathLike):
            self.backbone_weights = os.fspath(self.backbone_weights)
        for key in ("text_encoder", "tokenizer"):
            if isinstance(getattr(self, key), os.PathLike):
                setattr(self, key, os.fspath(getattr(self, key)))
        if isinstance(self.fusion_heads, tuple):
            self.fusion_heads = list(self.fusion_heads)
        self.validate()

    def stage_heads(self, stages: int = 4) -> list[int]:
        """The fusion heads of each of the ``stages`` stages."""
        heads = self.fusion_heads
        return list(heads) if isinstance(heads, list) else [heads] * stages

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line, naming the key) for an out-of-range value."""
        checks = [
            ("img_size", self.img_size >= 64 and self.img_size % 32 == 0, "a multiple of 32 >= 64"),
            ("frozen_stages", 0 <= self.frozen_stages <= 4, "an integer in 0..4"),
            ("max_tokens", self.max_tokens >= 2, "an integer >= 2"),
            ("fusion_dim", self.fusion_dim is None or self.fusion_dim >= 1, "None or >= 1"),
            (
                "fusion_heads",
                (isinstance(self.fusion_heads, int) and self.fusion_heads >= 1)
                or (
                    isinstance(self.fusion_heads, list)
                    and len(self.fusion_heads) == 4
                    and all(isinstance(h, int) and h >= 1 for h in self.fusion_heads)
                ),
                "an integer >= 1 or a list of 4 (one per stage)",
            ),
            (
                "text_train_layers",
                self.text_train_layers is None or self.text_train_layers >= 0,
                "None or an integer >= 0",
            ),
            ("fusion_dropout", 0.0 <= self.fusion_dropout < 1.0, "a number in [0, 1)"),
            ("decoder_dim", self.decoder_dim >= 1, "an integer >= 1"),
            ("num_classes", self.num_classes >= 2, "an integer >= 2"),
            ("backbone", bool(self.backbone), "a timm model name"),
            ("text_encoder", bool(self.text_encoder), "a text encoder name or folder"),
        ]
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"model config key {key!r}: expected {expected}, got {getattr(self, key)!r}"
                )
        self._check_kwargs()

    def _check_kwargs(self) -> None:
        """No NaN / infinity in the extra arguments, and timm's dropout rates in [0, 1)."""
        for key in ("backbone_kwargs", "text_kwargs"):
            check_numbers(getattr(self, key), key)
        rate = Domain(ge=0, lt=1)
        for name in _TRAINING_ONLY_KWARGS:
            value = self.backbone_kwargs.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(
                    f"model config key 'backbone_kwargs.{name}': expected a number, got {value!r}"
                )
            check_numbers(value, f"backbone_kwargs.{name}", rate)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build and validate from a plain mapping; unknown keys / wrong types -> ConfigError."""
        return load_dataclass(cls, dict(data), prefix="model")

    def to_dict(self) -> dict[str, Any]:
        """A JSON / YAML-serialisable copy (tuples become lists); ``from_dict`` inverts it."""
        return to_dict(self)

    def replace(self, **overrides: Any) -> ModelConfig:
        """A validated copy with some fields changed (paths may be Path objects); unknown fields
        or wrong types -> ConfigError."""
        paths_as_str = {
            k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in overrides.items()
        }
        return ModelConfig.from_dict({**self.to_dict(), **paths_as_str})


#: ModelConfig fields that decide what a set of weights computes (not where weights come from)
ARCHITECTURE_FIELDS = (
    "backbone",
    "backbone_kwargs",
    "img_size",
    "max_tokens",
    "truncation",
    "fusion_dim",
    "fusion_heads",
    "fusion_scale",
    "fusion_sentence",
    "fusion_coords",
    "decoder_dim",
    "align_corners",
    "num_classes",
)


#: backbone_kwargs that only regularise training (not what the weights compute)
_TRAINING_ONLY_KWARGS = ("drop_path_rate", "drop_rate", "attn_drop_rate", "proj_drop_rate")


def architecture_differences(a: ModelConfig, b: ModelConfig) -> list[tuple[str, Any, Any]]:
    """(field, a's value, b's value) for each architecture field two ModelConfigs disagree on
    (a single fusion head count equals the same count given per stage; dropout rates are not
    architecture)."""
    out = []
    for key in ARCHITECTURE_FIELDS:
        va, vb = getattr(a, key), getattr(b, key)
        if key == "fusion_heads":
            va, vb = a.stage_heads(), b.stage_heads()
        if key == "backbone_kwargs":
            va, vb = (
                {k: v for k, v in d.items() if k not in _TRAINING_ONLY_KWARGS} for d in (va, vb)
            )
        if va != vb:
            out.append((key, getattr(a, key), getattr(b, key)))
    return out

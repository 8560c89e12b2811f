"""The LAVT-style referring segmentation model: backbone + text encoder + fusion + decoder.

Forward pass (Yang et al., LAVT, CVPR 2022; the RES model of SemiRES, docs/method.md section 3):
words -> text encoder -> L [B, T, D]; image -> stage 1 -> fusion 1 -> stage 2 -> ... -> stage 4
-> fusion 4, where fusion i gives the decoder feature F_i and (stages 1-3) feeds
``X_i + gate(F_i) * F_i`` to the next stage; the top-down decoder turns F_1..F_4 into 2-class
logits at 1/4 resolution, upsampled bilinearly to the input size.

With the ``lavt-*`` registry configs this computes what LAVT's code computes (yz93/LAVT-RIS,
``lib/_utils.py``, ``lib/backbone.py``, ``lib/mask_predictor.py``; the fact-by-fact list is in
docs/model.md), and LAVT / SemiRES checkpoints load with :mod:`semires.runtime.lavt_import`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from semires.model.backbone import backbone_family, build_backbone, load_backbone_weights
from semires.model.config import ModelConfig
from semires.model.decoder import TopDownDecoder
from semires.model.fusion import StageFusion
from semires.model.text import build_text_encoder
from semires.model.weights import load_state_strict

#: parameter-name patterns (fnmatch) of position tables, which get no weight decay
NO_DECAY_PATTERNS = (
    "*relative_position_bias_table",
    "*absolute_pos_embed*",
    "*pos_embed*",
    "*position_embeddings*",
)

#: LAVT's rule (``train.py:226-233``): no decay only for parameters of its backbone (which holds
#: the fusion modules, gates and output norms: here ``backbone.*`` and ``fusion.*``) whose name
#: contains one of these; everything else, BERT and the decoder included, decays
LAVT_NO_DECAY_WORDS = ("norm", "absolute_pos_embed", "relative_position_bias_table")


class RESModel(nn.Module):
    """Referring expression segmentation: (images, sentences) -> 2-class logits per pixel.

    Parts: ``backbone`` (:class:`StagedBackbone`), ``text`` (:class:`TextEncoder`), ``fusion``
    (one :class:`StageFusion` per stage) and ``decoder`` (:class:`TopDownDecoder`).
    """

    def __init__(
        self, config: ModelConfig, *, embedded_tokenizer: dict[str, Any] | None = None
    ) -> None:
        """``embedded_tokenizer``: the stored vocabulary of an ``"embedded"`` tokenizer (a
        checkpoint's ``tokenizer`` entry, see :func:`semires.model.text.tokenizer_data`)."""
        super().__init__()
        self.config = config
        #: carried into checkpoints when the config's tokenizer is "embedded"
        self.embedded_tokenizer = embedded_tokenizer if config.tokenizer == "embedded" else None
        #: keep the text encoder in eval mode (no dropout) in training too (LAVT's burn-in)
        self.text_eval = False
        backbone_family(config.backbone)  # fail on an unsupported backbone before loading text
        self.text = build_text_encoder(
            config.text_encoder,
            config.text_kwargs,
            config.max_tokens,
            tokenizer=config.tokenizer,
            truncation=config.truncation,
            embedded=embedded_tokenizer,
        )
        if config.text_train_layers is not None and not config.freeze_text:
            self.text.train_only_layers(config.text_train_layers)
        self.backbone = build_backbone(config.backbone, config.img_size, config.backbone_kwargs)
        if config.backbone_weights:
            load_backbone_weights(self.backbone, config.backbone_weights)
        self.backbone.freeze(config.frozen_stages)
        self.backbone.checkpoint = config.checkpoint_activations != "none"
        if config.checkpoint_activations == "backbone+text" and not config.freeze_text:
            self.text.checkpoint_layers()  # a frozen text encoder keeps no activations anyway
        channels = self.backbone.channels
        heads = config.stage_heads(len(channels))
        self.fusion = nn.ModuleList(
            StageFusion(
                vis_dim=c,
                text_dim=self.text.hidden_size,
                key_dim=config.fusion_dim or c,
                heads=heads[i],
                dropout=config.fusion_dropout,
                sentence=config.fusion_sentence,
                coords=config.fusion_coords,
                gated=i < len(channels) - 1,
                scale=config.fusion_scale,
            )
            for i, c in enumerate(channels)
        )
        self.decoder = TopDownDecoder(
            channels, config.decoder_dim, config.num_classes, config.align_corners
        )
        if config.freeze_text:
            self.text.requires_grad_(False)
            self.text.eval()

    @property
    def image_mean(self) -> tuple[float, float, float]:
        """Per-channel mean of images scaled to [0, 1] (the backbone's; ImageNet by default)."""
        return self.backbone.mean

    @property
    def image_std(self) -> tuple[float, float, float]:
        """Per-channel std of images scaled to [0, 1] (the backbone's; ImageNet by default)."""
        return self.backbone.std

    def config_dict(self) -> dict[str, Any]:
        """The model config as plain data, for checkpoints (``ModelConfig.from_dict`` inverts)."""
        return self.config.to_dict()

    def load_weights(self, state_dict: dict[str, torch.Tensor], source: str) -> None:
        """Load a full model state dict (e.g. from a checkpoint named ``source``) strictly.

        A state dict of another model config raises CheckpointError naming a few missing /
        unexpected / mis-shaped parameters.
        """
        load_state_strict(self, state_dict, f"{source} does not fit this model")

    def train(self, mode: bool = True) -> RESModel:
        """Set the training mode; a frozen text encoder (or one with ``text_eval`` set) always
        stays in eval mode."""
        super().train(mode)
        if self.config.freeze_text or self.text_eval:
            self.text.eval()
        return self

    def tokenize(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` [B, max_tokens] (CPU tensors).

        Sentences are padded / truncated to ``max_tokens``; a single warning per call names
        the first truncated sentence; an empty sentence gives only the special tokens.
        """
        return self.text.tokenize(sentences)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Word features [B, T, D]; computed without gradients when the text is frozen."""
        guard = torch.no_grad() if self.config.freeze_text else contextlib.nullcontext()
        with guard:
            return self.text(input_ids, attention_mask)

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        text_feats: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, num_classes, H, W] at the input resolution.

        ``images`` are normalised [B, 3, H, W]. Give ``input_ids`` + ``attention_mask``, or
        precomputed ``text_feats`` (from :meth:`encode_text`) + ``attention_mask``.
        """
        if attention_mask is None:
            raise ValueError("forward needs attention_mask")
        if text_feats is None:
            if input_ids is None:
                raise ValueError("forward needs input_ids or text_feats")
            text_feats = self.encode_text(input_ids, attention_mask)
        feats = []
        x = self.backbone.embed(images)
        for index, fusion in enumerate(self.fusion):
            x = self.backbone.run_stage(index, x)
            x, feat = fusion(self.backbone.to_nhwc(x), text_feats, attention_mask)
            x = self.backbone.from_nhwc(x)
            feats.append(feat.permute(0, 3, 1, 2))
        logits = self.decoder(feats)
        return F.interpolate(
            logits,
            size=images.shape[-2:],
            mode="bilinear",
            align_corners=self.config.align_corners,
        )

    def param_groups(self, weight_decay: float, rule: str = "default") -> list[dict[str, Any]]:
        """AdamW parameter groups over the trainable parameters, each exactly once.

        ``rule="default"``: no decay on norm weights and all other 1-d parameters, biases, and
        position tables (relative-position bias tables, absolute / BERT position embeddings);
        ``weight_decay`` on the rest (timm's ``param_groups_weight_decay``).
        ``rule="lavt"``: LAVT's groups - no decay only on backbone / fusion parameters whose
        name contains ``norm``, ``absolute_pos_embed`` or ``relative_position_bias_table``;
        everything else (biases, BERT, the decoder) decays.
        """
        if rule == "lavt":
            no_decay, decay = [], []
            for name, p in self.named_parameters():
                if not p.requires_grad:
                    continue
                in_backbone = name.startswith(("backbone.", "fusion."))
                if in_backbone and any(w in name for w in LAVT_NO_DECAY_WORDS):
                    no_decay.append(p)
                else:
                    decay.append(p)
            return [
                {"params": no_decay, "weight_decay": 0.0},
                {"params": decay, "weight_decay": weight_decay},
            ]
        from timm.optim import param_groups_weight_decay

        return param_groups_weight_decay(
            self, weight_decay=weight_decay, no_weight_decay_list=NO_DECAY_PATTERNS
        )

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part: backbone, text, fusion, decoder, total, trainable."""
        parts = {
            name: sum(p.numel() for p in getattr(self, name).parameters())
            for name in ("backbone", "text", "fusion", "decoder")
        }
        parts["total"] = sum(p.numel() for p in self.parameters())
        parts["trainable"] = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return parts

    def describe(self) -> str:
        """A few lines of parameter counts per part, for printing at start."""
        counts = self.parameter_counts()
        cfg = self.config
        text_state = "frozen" if cfg.freeze_text else "trained"
        rows = [
            ("backbone", counts["backbone"], f"{cfg.backbone} @ {cfg.img_size}px"),
            ("text", counts["text"], f"{cfg.text_encoder}, {cfg.max_tokens} tokens, {text_state}"),
            ("fusion", counts["fusion"], "PWAM + language gates, 4 stages"),
            ("decoder", counts["decoder"], f"top-down, {cfg.decoder_dim} channels"),
            ("total", counts["total"], ""),
            ("trainable", counts["trainable"], ""),
        ]
        return "\n".join(f"{name:<10}{n / 1e6:>9.2f}M  {note}".rstrip() for name, n, note in rows)

"""LAVT's language-aware visual encoding: pixel-word attention (PWAM) and the language gate.

After backbone stage i with output X_i (pixels as tokens [B, N, C]) and word features
L [B, T, D] with a padding mask:

- pixel-word attention: every pixel attends over the (non-padding) words; the query is a
  projection of X_i instance-normalised over the pixels, keys and values are projections of L,
  and the result is projected and instance-normalised -> G_i [B, N, C];
- PWAM: F_i = proj_mm(proj_vis(X_i) * G_i) - the attended language feature multiplies a projection
  of the visual feature element-wise (projections are linear + GELU);
- language gate: S_i = tanh(MLP(F_i)); the next stage receives X_i + S_i * F_i;
- the decoder receives LayerNorm(F_i).

Reference: Yang et al., "LAVT: Language-Aware Vision Transformer for Referring Image
Segmentation", CVPR 2022, section 3 (PWAM, LG).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from semires.errors import ConfigError


def _instance_norm_tokens(x: torch.Tensor) -> torch.Tensor:
    """Normalise each channel of [B, N, C] over the N tokens (InstanceNorm1d, no affine)."""
    return F.instance_norm(x.transpose(1, 2)).transpose(1, 2)


class PixelWordAttention(nn.Module):
    """Pixels [B, N, C] attend to words [B, T, D] (padding masked) -> [B, N, C].

    LAVT's ``SpatialImageLanguageAttention`` (``lib/backbone.py:643-715`` of yz93/LAVT-RIS):
    1x1 convolutions (here ``nn.Linear``) for query / key / value / output, instance norm without
    affine on the query and output projections, keys and values of padding words zeroed and
    their logits pushed to -1e4 (here: a boolean mask, the same softmax), logits scaled by
    ``key_dim ** -0.5`` (``scale="key"``, LAVT) or by the head width ** -0.5 (``"head"``).
    """

    def __init__(
        self, vis_dim: int, text_dim: int, key_dim: int, heads: int, scale: str = "head"
    ) -> None:
        super().__init__()
        if key_dim % heads or vis_dim % heads:
            raise ConfigError(
                f"model config key 'fusion_heads': {heads} heads do not divide the fusion widths "
                f"{key_dim} (query / key) and {vis_dim} (value)"
            )
        self.heads = heads
        self.scale = key_dim**-0.5 if scale == "key" else None  # None: SDPA's head_dim ** -0.5
        self.query = nn.Linear(vis_dim, key_dim)
        self.key = nn.Linear(text_dim, key_dim)
        self.value = nn.Linear(text_dim, vis_dim)
        self.out = nn.Linear(vis_dim, vis_dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(
        self, pixels: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor
    ) -> torch.Tensor:
        """``word_mask`` [B, T] is true (or 1) for real tokens, false (0) for padding."""
        q = self._split(_instance_norm_tokens(self.query(pixels)))
        k, v = self._split(self.key(words)), self._split(self.value(words))
        mask = word_mask.bool()[:, None, None, :]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        attended = attended.transpose(1, 2).flatten(2)
        return _instance_norm_tokens(self.out(attended))


def masked_mean(words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the non-padding word features: [B, T, D] -> [B, 1, D]."""
    m = word_mask.to(words.dtype)[:, :, None]
    return (words * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)


class PWAM(nn.Module):
    """Pixel-word attention module: multimodal feature F [B, N, C] of a stage output.

    With ``sentence=True`` (not in LAVT) a projection of the mean word feature is added to the
    attended language feature before it multiplies the visual projection. The instance norm in
    the attention removes anything constant over the pixels, so at random initialisation (uniform
    attention) LAVT's fusion passes no sentence information; the sentence term does, which lets a
    model trained from scratch (the CPU default) learn to ground words in a few hundred steps.
    """

    def __init__(
        self,
        vis_dim: int,
        text_dim: int,
        key_dim: int,
        heads: int,
        dropout: float,
        sentence: bool = False,
        scale: str = "head",
    ) -> None:
        super().__init__()
        self.vis_project = nn.Sequential(
            nn.Linear(vis_dim, vis_dim), nn.GELU(), nn.Dropout(dropout)
        )
        self.attention = PixelWordAttention(vis_dim, text_dim, key_dim, heads, scale)
        self.sentence = nn.Linear(text_dim, vis_dim) if sentence else None
        self.mm_project = nn.Sequential(nn.Linear(vis_dim, vis_dim), nn.GELU(), nn.Dropout(dropout))

    def forward(
        self, pixels: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor
    ) -> torch.Tensor:
        lang = self.attention(pixels, words, word_mask)
        if self.sentence is not None:
            lang = lang + self.sentence(masked_mean(words, word_mask))
        return self.mm_project(self.vis_project(pixels) * lang)


class LanguageGate(nn.Module):
    """Per-element gate in (-1, 1): Linear-ReLU-Linear-tanh, no biases (LAVT's LG,
    ``res_gate`` in ``lib/backbone.py:545-550``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False),
            nn.Tanh(),
        )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.mlp(feature)


class StageFusion(nn.Module):
    """PWAM + language gate + output norm of one backbone stage.

    ``forward(x, words, mask)`` takes the stage output [B, H, W, C] and returns the input of the
    next stage (``x + gate(F) * F``; ``x`` unchanged for the last stage, which has no gate) and
    the decoder feature LayerNorm(F) [B, H, W, C].
    """

    def __init__(
        self,
        vis_dim: int,
        text_dim: int,
        key_dim: int,
        heads: int,
        dropout: float,
        gated: bool,
        sentence: bool = False,
        coords: bool = False,
        scale: str = "head",
    ) -> None:
        super().__init__()
        self.pwam = PWAM(vis_dim, text_dim, key_dim, heads, dropout, sentence, scale)
        # a learned embedding of the normalised (x, y) position, added to the PWAM's input
        self.coords = nn.Linear(2, vis_dim) if coords else None
        self.gate = LanguageGate(vis_dim) if gated else None
        self.norm = nn.LayerNorm(vis_dim)

    def forward(
        self, x: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, h, w, c = x.shape
        pixels = x.reshape(b, h * w, c)
        if self.coords is not None:
            ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
            xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
            grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(1, h * w, 2)
            pixels = pixels + self.coords(grid)
        fused = self.pwam(pixels, words, word_mask).view(b, h, w, c)
        if self.gate is not None:
            x = x + self.gate(fused) * fused
        return x, self.norm(fused)

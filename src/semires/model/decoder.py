"""LAVT's light top-down mask decoder: strides 32 -> 16 -> 8 -> 4, then 2-class logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import Conv2dNormActivation


def _conv_block(in_dim: int, out_dim: int) -> nn.Sequential:
    """(3x3 conv - BatchNorm - ReLU) x 2."""
    return nn.Sequential(
        Conv2dNormActivation(in_dim, out_dim, kernel_size=3),
        Conv2dNormActivation(out_dim, out_dim, kernel_size=3),
    )


class TopDownDecoder(nn.Module):
    """Features F_1..F_4 (NCHW, strides 4..32) -> logits [B, num_classes, H/4, W/4].

    Starting from F_4: upsample bilinearly to the next finer feature, concatenate it, apply two
    conv-BN-ReLU layers; repeat down to stride 4; a 1x1 conv gives the class logits.
    LAVT's ``SimpleDecoding`` (``lib/mask_predictor.py:6-72`` of yz93/LAVT-RIS) is this with
    ``dim`` = half the last stage's width, 3x3 convolutions without bias, and
    ``align_corners=True``; its modules map one to one (``semires.runtime.lavt_import``).
    """

    def __init__(
        self, in_dims: Sequence[int], dim: int, num_classes: int, align_corners: bool = False
    ) -> None:
        super().__init__()
        self.align_corners = align_corners
        in_dims = list(in_dims)
        widths = [in_dims[-1], *[dim] * (len(in_dims) - 2)]
        self.blocks = nn.ModuleList(
            _conv_block(width + skip, dim)
            for width, skip in zip(widths, reversed(in_dims[:-1]), strict=True)
        )
        self.classifier = nn.Conv2d(dim, num_classes, kernel_size=1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for block, skip in zip(self.blocks, reversed(feats[:-1]), strict=True):
            if tuple(x.shape[-2:]) != tuple(skip.shape[-2:]):
                x = F.interpolate(
                    x, size=skip.shape[-2:], mode="bilinear", align_corners=self.align_corners
                )
            x = block(torch.cat([x, skip], dim=1))
        return self.classifier(x)

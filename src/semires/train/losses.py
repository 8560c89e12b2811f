"""Losses (METHOD.md section 3): class-weighted pixel cross-entropy and its PWA-weighted form."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_ce(
    logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor
) -> torch.Tensor:
    """Pixel cross-entropy with class weights (background 0.9, foreground 1.1 in the paper).

    ``logits`` (B, 2, H, W), ``target`` (B, H, W) bool/long. The mean is the weighted mean
    (divided by the sum of the target pixels' class weights), as ``nn.CrossEntropyLoss(weight=...)``.
    """
    return F.cross_entropy(logits.float(), target.long(), weight=class_weights)


def pixel_weighted_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    pixel_weights: torch.Tensor,
    class_weights: torch.Tensor,
) -> torch.Tensor:
    """mean over pixels of w(x) * CE(x): the PWA loss (class weights applied per pixel too)."""
    ce = F.cross_entropy(logits.float(), target.long(), weight=class_weights, reduction="none")
    return (ce * pixel_weights).mean()


def masked_ce(
    logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor, class_weights: torch.Tensor
) -> torch.Tensor:
    """Class-weighted CE over the pixels where ``keep`` is true (the confidence-filtered baseline)."""
    ce = F.cross_entropy(logits.float(), target.long(), weight=class_weights, reduction="none")
    w = class_weights[target.long()] * keep
    return (ce * keep).sum() / w.sum().clamp_min(1e-6)

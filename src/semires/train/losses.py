"""Losses (docs/method.md section 3): class-weighted pixel cross-entropy and its PWA-weighted form.

:class:`PixelLosses` holds a run's settings of them (class weights, how the CE is averaged); the
supervised loss and every refinement strategy's unsupervised loss call it, never the raw
functions. A run may inject its own (``Trainer(losses=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def weighted_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weights: torch.Tensor,
    mean: str = "weighted",
) -> torch.Tensor:
    """Pixel cross-entropy with class weights (background 0.9, foreground 1.1 in the paper).

    ``logits`` (B, 2, H, W), ``target`` (B, H, W) bool/long. ``mean="weighted"``: divided by the
    sum of the target pixels' class weights, as ``F.cross_entropy(weight=...)`` (LAVT's
    ``train.py:62-64``); ``mean="plain"``: the plain mean over pixels of the class-weighted CE
    (the SemiRES scripts' criterion, ``CrossEntropyLoss(weight, reduction='none').mean()``,
    ``train_semi_CPI.py:246-249``).
    """
    if mean == "plain":
        ce = F.cross_entropy(logits.float(), target.long(), weight=class_weights, reduction="none")
        return ce.mean()
    return F.cross_entropy(logits.float(), target.long(), weight=class_weights)


def pixel_weighted_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    pixel_weights: torch.Tensor,
    class_weights: torch.Tensor | None,
) -> torch.Tensor:
    """mean over pixels of w(x) * CE(x): the PWA loss, with the class weights applied per pixel
    too, or without them (``class_weights=None``: the SemiRES scripts' ``weighted_ce_loss``,
    ``loss/bce_loss.py:9-14``)."""
    ce = F.cross_entropy(logits.float(), target.long(), weight=class_weights, reduction="none")
    return (ce * pixel_weights).mean()


def masked_ce(
    logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor, class_weights: torch.Tensor
) -> torch.Tensor:
    """Class-weighted CE over the pixels where ``keep`` is true (the confidence-filtered baseline)."""
    ce = F.cross_entropy(logits.float(), target.long(), weight=class_weights, reduction="none")
    w = class_weights[target.long()] * keep
    return (ce * keep).sum() / w.sum().clamp_min(1e-6)


@dataclass
class PixelLosses:
    """The pixel losses of a run: class weights and how they are averaged (``train.ce_mean``,
    ``semi.pwa_class_weights``)."""

    class_weights: torch.Tensor
    mean: str = "weighted"
    pwa_class_weights: bool = True

    def ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Class-weighted pixel cross-entropy (:func:`weighted_ce`)."""
        return weighted_ce(logits, target, self.class_weights, self.mean)

    def pwa(
        self, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """The PWA loss: mean of w(x) CE(x)."""
        cw = self.class_weights if self.pwa_class_weights else None
        return pixel_weighted_ce(logits, target, weights, cw)

    def masked(
        self, logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """Class-weighted CE over the kept pixels."""
        return masked_ce(logits, target, keep, self.class_weights)

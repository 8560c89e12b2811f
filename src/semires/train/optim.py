"""AdamW with the paper's parameter groups and a poly schedule that really reaches 0.

lr(t) = base * (1 - t / T) ** power for t = 0 .. T (T = total optimizer steps): the first step
uses the base rate and the rate after the last step is exactly 0. (The released SemiRES code
counted iterations twice and stopped at ~54% of the base rate.) An optional linear warm-up
multiplies the first ``warmup`` steps by (t + 1) / warmup.
"""

from __future__ import annotations

import torch
from torch import nn


def poly_factor(step: int, total: int, power: float = 0.9, warmup: int = 0) -> float:
    """The multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if total <= 0:
        raise ValueError("total steps must be positive")
    t = min(max(step, 0), total)
    factor = (1.0 - t / total) ** power
    if warmup > 0 and step < warmup:
        factor *= (step + 1) / warmup
    return factor


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, rule: str = "default"
) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters: no decay on norms, biases, position tables
    (``rule="default"``), or LAVT's groups (``rule="lavt"``, see ``RESModel.param_groups``)."""
    groups = (
        model.param_groups(weight_decay, rule)
        if hasattr(model, "param_groups")
        else [
            {
                "params": [p for p in model.parameters() if p.requires_grad],
                "weight_decay": weight_decay,
            }
        ]
    )
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    """Set every group's rate to base * factor (respecting a group's own ``lr_scale``)."""
    lr = base_lr * factor
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr

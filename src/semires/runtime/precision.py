"""Mixed precision: one autocast context for training and evaluation."""

from __future__ import annotations

import contextlib

import torch

#: ``train.amp`` values
AMP_CHOICES = ("none", "bf16", "fp16", "auto")


def resolve_amp(device: torch.device, amp: str) -> str:
    """``"auto"`` -> ``"bf16"`` on CUDA, ``"none"`` elsewhere; other values unchanged."""
    if amp == "auto":
        return "bf16" if device.type == "cuda" else "none"
    return amp


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` (``bf16`` / ``fp16``), a no-op for ``none`` (fp32)."""
    amp = resolve_amp(device, amp)
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)

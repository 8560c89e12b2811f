"""Exponential moving average of the student into the teacher (docs/method.md section 3).

theta_T <- a * theta_T + (1 - a) * theta_S after every optimizer step, for parameters AND
floating-point buffers (e.g. batch-norm running statistics); integer buffers (e.g.
``num_batches_tracked``) are copied, not averaged. The update works in place on fused lists of
tensors; no state dict is rebuilt per step (the released code did that).
"""

from __future__ import annotations

import torch
from torch import nn


class EMATeacher:
    """Holds the float / integer tensor pairs of teacher and student once, then updates in place."""

    def __init__(self, teacher: nn.Module, student: nn.Module, decay: float) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.teacher, self.decay = teacher, decay
        t_params = dict(teacher.named_parameters())
        s_params = dict(student.named_parameters())
        t_bufs = dict(teacher.named_buffers())
        s_bufs = dict(student.named_buffers())
        if t_params.keys() != s_params.keys() or t_bufs.keys() != s_bufs.keys():
            raise ValueError("teacher and student must have the same architecture")
        self.float_t: list[torch.Tensor] = []
        self.float_s: list[torch.Tensor] = []
        self.int_t: list[torch.Tensor] = []
        self.int_s: list[torch.Tensor] = []
        for name, tp in t_params.items():
            if s_params[
                name
            ].requires_grad:  # frozen parts (e.g. a frozen text encoder) never change
                self.float_t.append(tp.data)
                self.float_s.append(s_params[name].data)
        for name, tb in t_bufs.items():
            if tb.is_floating_point():
                self.float_t.append(tb)
                self.float_s.append(s_bufs[name])
            else:
                self.int_t.append(tb)
                self.int_s.append(s_bufs[name])
        teacher.requires_grad_(False)
        teacher.eval()

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step: teacher = decay * teacher + (1 - decay) * student."""
        if self.float_t:
            torch._foreach_lerp_(self.float_t, self.float_s, 1.0 - self.decay)
        for t, s in zip(self.int_t, self.int_s, strict=True):
            t.copy_(s)

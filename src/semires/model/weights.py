"""Strict state-dict matching with one-line errors naming the offending keys."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from semires.errors import CheckpointError


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _key_summary(keys: set[str], limit: int = 3) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module``; every key must match in name and shape.

    ``what`` names the source in the error ("backbone weights swin.pth does not fit ...").
    Raises CheckpointError naming a few missing / unexpected keys, or the first mis-shaped one.
    """
    expected = module.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        parts = [f"missing keys {_key_summary(missing)}"] if missing else []
        parts += [f"unexpected keys {_key_summary(unexpected)}"] if unexpected else []
        raise CheckpointError(f"{what}: {', '.join(parts)}")
    wrong = sorted(k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape))
    if wrong:
        key = wrong[0]
        raise CheckpointError(
            f"{what}: {len(wrong)} mis-shaped keys, e.g. {key} "
            f"{tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        )
    module.load_state_dict(state, strict=True)

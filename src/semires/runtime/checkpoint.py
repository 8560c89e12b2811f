"""Checkpoints: atomic writes, clear errors, model-config checks.

A checkpoint is a dict saved with ``torch.save``:

- ``format`` ("semires-checkpoint"), ``version``;
- ``model_config`` (the ModelConfig as a dict) and ``config`` (the whole training config);
- ``model``: the student's state dict. Weights of a FROZEN text encoder that the model config
  can rebuild from its source (e.g. the packaged MiniLM) are left out (``text_from_source``),
  which keeps checkpoints of the CPU default small;
- ``teacher`` (teacher-student stage), ``optimizer``, ``step``, ``epoch``, ``best``, ``history``,
  ``rng`` (torch CPU / CUDA generator states) in resumable ``latest`` checkpoints;
- ``finished`` (True) in the ``latest`` checkpoint of a stage ``semires run`` has finished:
  only the record (configs, step, best, history), no weights, optimizer or RNG state (the
  weights that matter are in ``best.pt``; :func:`semires.train.checkpoints.finish_latest`);
- ``companion`` in the ``best`` checkpoint of a teacher-student run: ``{"role": "student" |
  "teacher", "model": state}``, the other network at the selected step (both are reported);
- ``tokenizer`` (``{"vocab", "do_lower_case"}``) when the model config's tokenizer is
  ``"embedded"`` (imported LAVT checkpoints: the file needs nothing else to load);
- ``imported`` (where an imported checkpoint came from: file, variant, the original ``args``).

``latest.pt`` (everything needed to resume) and ``best.pt`` (weights for evaluation) live in the
run folder and are written to a temporary file and renamed, so a kill never corrupts them.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semires.errors import CheckpointError
from semires.utils.io import atomic_write_torch

FORMAT = "semires-checkpoint"
VERSION = 1


def frozen_text_prefixes(model: nn.Module) -> list[str]:
    """State-dict prefixes of a frozen text encoder that can be rebuilt from its source."""
    cfg = getattr(model, "config", None)
    if cfg is None or not getattr(cfg, "freeze_text", False):
        return []
    if str(getattr(cfg, "text_encoder", "")).startswith("random"):
        return []  # random weights cannot be rebuilt: keep them
    return [name + "." for name, _ in model.named_children() if name in ("text", "text_encoder")]


def model_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], bool]:
    """The model's state dict without rebuildable frozen text weights, and whether any were dropped."""
    state = model.state_dict()
    prefixes = frozen_text_prefixes(model)
    if not prefixes:
        return state, False
    return {k: v for k, v in state.items() if not k.startswith(tuple(prefixes))}, True


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` with the format tag atomically (temporary file + rename); a full disk
    is one line (:class:`~semires.utils.io.DiskFullError`) naming the file, the free space and
    about the size of the checkpoint, and leaves the previous file as it was."""
    atomic_write_torch(
        path, {"format": FORMAT, "version": VERSION, **payload}, size=tensor_bytes(payload)
    )


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in ``obj`` (nested dicts, lists and tuples): about the size of
    a checkpoint of it."""
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a semires checkpoint; a clear CheckpointError for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        # weights_only: tensors and plain containers only, so a crafted file cannot run code
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # anything torch / zipfile / pickle raise on a damaged file
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if isinstance(exc, pickle.UnpicklingError) and refused:
            raise CheckpointError(
                f"checkpoint {path}: refused to load {refused.group(1)} (a semires checkpoint "
                "holds only tensors, numbers, strings and plain containers)"
            ) from exc
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a complete torch checkpoint (truncated, "
            "damaged or another kind of file)"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a semires checkpoint (no 'format': '{FORMAT}')")
    return ckpt


def first_non_finite(state: dict[str, Any]) -> str | None:
    """The name of the first floating-point tensor of ``state`` holding a NaN or an infinity
    (None when every one is finite)."""
    for name, value in state.items():
        if (
            isinstance(value, torch.Tensor)
            and (value.is_floating_point() or value.is_complex())
            and not bool(torch.isfinite(value).all())
        ):
            return name
    return None


def check_finite_state(state: dict[str, Any], source: str | Path) -> None:
    """A :class:`CheckpointError` naming ``source`` and the first tensor of ``state`` that
    holds a NaN or an infinity: such weights predict nothing (an empty mask everywhere)."""
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {source}: the weights {bad!r} hold NaN or infinite values (the training "
            "that wrote it diverged); use an earlier checkpoint or train again"
        )


def load_model_state(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    source: str | Path,
    text_from_source: bool = False,
) -> None:
    """Load ``state`` into ``model`` strictly, naming mismatched parameters in the error;
    weights holding a NaN or an infinity are refused (:func:`check_finite_state`).

    When ``text_from_source`` the frozen text-encoder weights are absent from ``state`` and kept
    as the model built them (from the same source).
    """
    from semires.model.weights import load_state_strict

    if isinstance(state, dict):
        check_finite_state(state, source)

    if text_from_source:
        skip = tuple(frozen_text_prefixes(model))
        if skip:
            own = {k: v for k, v in model.state_dict().items() if k.startswith(skip)}
            state = {**own, **state}
    load_state_strict(model, state, f"checkpoint {source} does not match the model config")


def load_model_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, weights: str = "model"
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a semires checkpoint describes and load its weights: ``(model, ckpt)``.

    ``weights="companion"`` loads the other network stored in a teacher-student ``best``
    checkpoint instead (CheckpointError when there is none). No weights file named by the model
    config (backbone weights, a text encoder folder) is read when the checkpoint holds them.
    """
    from semires.model import build_model
    from semires.model.config import ModelConfig

    ck = load_checkpoint(path, map_location)
    if ck.get("finished") and "model" not in ck:
        raise CheckpointError(
            f"{path} is the record of a finished training stage and keeps no weights (dropped "
            f"to save disk): use {Path(path).with_name('best.pt')}"
        )
    if "model_config" not in ck or "model" not in ck:
        raise CheckpointError(f"{path} is not a model checkpoint (no 'model_config' / 'model')")
    # the backbone's weights are in the checkpoint: do not read (or need) the file it started from
    cfg = ModelConfig.from_dict(ck["model_config"]).replace(backbone_weights=None)
    model = build_model(cfg, embedded_tokenizer=ck.get("tokenizer"))
    state = ck["model"]
    if weights == "companion":
        companion = ck.get("companion")
        if not companion:
            raise CheckpointError(
                f"{path} holds no second network (only teacher-student best.pt does)"
            )
        state = companion["model"]
    load_model_state(model, state, path, ck.get("text_from_source", False))
    return model, ck


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

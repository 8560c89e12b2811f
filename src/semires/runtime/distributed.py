"""torch.distributed helpers: set-up from torchrun's environment, reductions, rank-0 guards.

``torchrun --nproc_per_node N -m semires.cli train ...`` (or ``semires train`` under torchrun)
sets RANK / WORLD_SIZE / LOCAL_RANK; NCCL is used on CUDA and gloo on CPU. Without those
variables everything runs as a single process and the helpers are no-ops.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def resolve_device(
    device: str, what: str = "--device", *, available: bool = True
) -> torch.device | None:
    """The torch device ``device`` names: ``auto`` (CUDA when available, else CPU), ``cpu``,
    ``cuda`` or ``cuda:N``. Anything else, or a CUDA device this machine does not have, is a
    one-line :class:`~semires.errors.ConfigError` naming ``what`` (the option or config key).
    ``available=False`` checks the spelling only (a config read on another machine) and
    returns None."""
    from semires.errors import ConfigError

    text = str(device).strip().lower()
    match = re.fullmatch(r"auto|cpu|cuda(?::(\d+))?", text)
    if match is None:
        raise ConfigError(f"{what}: unknown device {device!r}; expected auto, cpu, cuda or cuda:N")
    if not available:
        return None
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"{what}: {device!r} asks for a GPU but this machine has no usable CUDA device "
                "(torch.cuda.is_available() is False); use cpu or auto"
            )
        if match.group(1) is not None and int(match.group(1)) >= count:
            raise ConfigError(
                f"{what}: {device!r} but this machine has {count} CUDA device(s): "
                f"cuda:0..cuda:{count - 1}"
            )
    return torch.device(text)


def init_distributed(
    device: str = "auto", what: str = "config key 'train.device'"
) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when launched by torchrun; pick this process's device
    (:func:`resolve_device`; ``what`` names the setting in errors)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, what)
    if dev.type == "cuda":
        if dev.index is None:
            dev = resolve_device(f"cuda:{local_rank}", f"{what} (LOCAL_RANK {local_rank})")
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank=rank, world=world, local_rank=local_rank), dev


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (in place; returned for chaining)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def sync_batchnorm(model: Any, info: DistInfo, device: Any) -> tuple[Any, str | None]:
    """``model`` with SyncBatchNorm across processes where that works (DDP on CUDA); elsewhere
    the model as it is and a note saying why it is off."""
    from torch import nn

    if info.enabled and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model), None
    where = "a single process" if not info.enabled else f"{device.type} / gloo"
    return model, f"train.sync_bn is off in {where} (it needs DDP on CUDA); plain BatchNorm"

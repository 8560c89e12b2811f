"""The checkpoints of a training run: what ``latest.pt`` and ``best.pt`` hold, and the resume.

``latest.pt`` holds everything to resume exactly: the trained model, the optimizer, the scaler,
the history, the RNG state of every process and the method's own state (the teacher of a
teacher-student run). ``best.pt`` holds the evaluated network of the selected step, and where the
method has another network, that one as ``companion`` (``{"role", "model"}``). Both carry the
model's config and the run's config, so a checkpoint is loadable on its own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from semires.runtime import checkpoint as ckpt_io

log = logging.getLogger("semires.train")


def run_payload(trainer: Any, full: bool) -> dict[str, Any]:
    """A checkpoint: ``full`` (latest.pt: everything to resume) or best.pt (the evaluated
    network, and where the method has another one, that one as ``companion``)."""
    nets = trainer.method.networks()
    role = "student" if full else trainer.method.eval_role
    state, dropped = ckpt_io.model_state(nets[role])
    payload: dict[str, Any] = {
        "model": state,
        "text_from_source": dropped,
        "model_config": trainer.model.config_dict(),
        "config": trainer.cfg.to_dict(),
        "step": trainer.step,
        "epoch": trainer.step // trainer.steps_per_epoch,
        "best": trainer.best,
    }
    if getattr(trainer.model, "embedded_tokenizer", None) is not None:
        payload["tokenizer"] = trainer.model.embedded_tokenizer
    others = [(r, net) for r, net in nets.items() if r != role]
    if others and not full:
        other, net = others[0]
        payload["companion"] = {"role": other, "model": ckpt_io.model_state(net)[0]}
    if full:
        payload["optimizer"] = trainer.optimizer.state_dict()
        payload["scaler"] = trainer.scaler.state_dict()
        payload["history"] = trainer.history
        payload["world"] = trainer.info.world
        payload.update(trainer.method.state_dict())
    return payload


def restore_run(trainer: Any, path: Path) -> None:
    """Resume ``trainer`` from the ``latest.pt`` at ``path``: weights, the method's state, the
    optimizer, the step, the history and the RNG streams."""
    ck = ckpt_io.load_checkpoint(path, map_location=trainer.device)
    from_source = ck.get("text_from_source", False)
    ckpt_io.load_model_state(trainer.model, ck["model"], path, from_source)
    trainer.method.load_state_dict(ck, path, from_source)
    trainer.optimizer.load_state_dict(ck["optimizer"])
    trainer.scaler.load_state_dict(ck["scaler"])
    trainer.step = int(ck["step"])
    trainer.best = ck.get("best")
    trainer.history = list(ck.get("history", []))
    rngs = ck.get("rng") or []
    if len(rngs) == trainer.info.world:
        ckpt_io.set_rng_state(rngs[trainer.info.rank])
    elif trainer.info.is_main:
        log.warning(
            "resuming with %d processes instead of %d: RNG streams differ",
            trainer.info.world,
            len(rngs),
        )
    if trainer.info.is_main:
        epoch = trainer.step // trainer.steps_per_epoch
        log.info("resumed from %s at step %d (epoch %d)", path, trainer.step, epoch)

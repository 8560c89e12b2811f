"""The checkpoints of a training run: what ``latest.pt`` and ``best.pt`` hold, and the resume.

``latest.pt`` holds everything to resume exactly: the trained model, the optimizer, the scaler,
the history, the RNG state of every process and the method's own state (the teacher of a
teacher-student run). ``best.pt`` holds the evaluated network of the selected step, and where the
method has another network, that one as ``companion`` (``{"role", "model"}``). Both carry the
model's config and the run's config, so a checkpoint is loadable on its own.

Once a stage of ``semires run`` is finished (its ``metrics.json`` written), nothing reads the
weights, the optimizer or the RNG state of its ``latest.pt`` again (a rerun takes the cached
metrics; the next stages, the report and ``semires serve`` read ``best.pt``): the pipeline
replaces it with the run's record (:func:`finish_latest`), which for the paper's model is 1.8 to
3.4 GB less per stage (docs/scale.md). A run resumed from such a record has nothing left to
train and scores ``best.pt`` again; one asked to train further is refused in one line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from semires.errors import CheckpointError, ConfigError
from semires.runtime import checkpoint as ckpt_io

log = logging.getLogger("semires.train")

#: ModelConfig fields beyond the architecture that decide which weights exist or are trained
#: (so the optimizer's parameter groups): a resume must not change them
TRAINED_FIELDS = (
    "frozen_stages",
    "text_encoder",
    "text_kwargs",
    "freeze_text",
    "text_train_layers",
)
#: run config keys that decide the optimizer's groups or the method's state in ``latest.pt``
RESUME_KEYS = ("semi.enabled", "semi.refine.strategy", "train.decay_rule")


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


def check_best_weights(trainer: Any) -> None:
    """Refuse, in one line, to evaluate or save as ``best.pt`` networks whose weights hold a
    NaN or an infinity (a diverged training: they predict an empty mask everywhere, which must
    never become the selected model)."""
    for role, net in trainer.method.networks().items():
        bad = ckpt_io.first_non_finite(net.state_dict())
        if bad is not None:
            kept = "the earlier best.pt is kept" if trainer.layout.best.is_file() else "none exists"
            raise CheckpointError(
                f"the {role}'s weights {bad!r} are not finite (NaN or infinity) at step "
                f"{trainer.step}: the training diverged, so best.pt is not written ({kept}); "
                "try a lower train.lr, train.grad_clip or train.amp=none"
            )


def _same(key: str, a: Any, b: Any) -> bool:
    """Equal settings; a text encoder given as a folder may have moved (same folder name)."""
    if key == "text_encoder" and isinstance(a, str) and isinstance(b, str):
        return a == b or Path(a).name == Path(b).name
    return a == b


def _setting(config: dict[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def check_resumable(trainer: Any, ck: dict[str, Any], path: Path) -> None:
    """A ``latest.pt`` written by another run (other model settings or another method in the
    same ``output.dir``) is refused in one line naming the first setting that differs, before
    any of its state is loaded."""
    from semires.model.config import ModelConfig, architecture_differences

    hint = (
        "use another output.dir for this run, or output.resume=false to start it over here "
        "(replacing that run's checkpoints)"
    )
    ours = trainer.model.config
    try:
        theirs = ModelConfig.from_dict(ck.get("model_config") or {})
    except ConfigError as err:
        raise CheckpointError(f"{path}: its model config cannot be read ({err}); {hint}") from None
    diffs = [(f"model.{k}", a, b) for k, a, b in architecture_differences(theirs, ours)]
    diffs += [
        (f"model.{k}", getattr(theirs, k), getattr(ours, k))
        for k in TRAINED_FIELDS
        if not _same(k, getattr(theirs, k), getattr(ours, k))
    ]
    mine = trainer.cfg.to_dict()
    enabled = bool(_setting(mine, "semi.enabled"))
    for key in RESUME_KEYS:
        if key == "semi.refine.strategy" and not enabled:
            continue
        if _setting(ck.get("config") or {}, key) != _setting(mine, key):
            diffs.append((key, _setting(ck.get("config") or {}, key), _setting(mine, key)))
    if diffs:
        key, theirs_value, ours_value = diffs[0]
        raise CheckpointError(
            f"{path} belongs to another run: its {key} is {theirs_value!r}, this run's is "
            f"{ours_value!r}; {hint}"
        )


def _load_optimizer(trainer: Any, state: Any, path: Path) -> None:
    try:
        trainer.optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path}: its optimizer state does not fit this run's parameters ("
            f"{' '.join(str(exc).split())[:120]}); use another output.dir, or "
            "output.resume=false to start over here"
        ) from None


#: what the ``latest.pt`` of a finished stage keeps (:func:`finish_latest`): the record a
#: resume, :func:`check_resumable` and a reader of the run need, none of the tensors
FINISHED_KEYS = ("model_config", "config", "step", "epoch", "best", "history", "world")


def finish_latest(latest: Path, metrics: Path) -> int:
    """Replace the ``latest.pt`` of a finished stage (``metrics`` exists) by its record
    (:data:`FINISHED_KEYS`, ``finished: True``): the weights, the optimizer, the scaler, the
    RNG states and the teacher are dropped (``best.pt`` holds the selected networks). Returns
    the bytes freed (0 when there is nothing to do: no file, not finished, already done)."""
    import torch

    if not latest.is_file() or not metrics.is_file():
        return 0
    try:  # memory-mapped: a multi-GB checkpoint is not read to look at its keys
        ck = torch.load(latest, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a damaged file is left for the resume to name
        return 0
    if not isinstance(ck, dict) or ck.get("finished") or "step" not in ck:
        return 0
    record = {k: ck[k] for k in FINISHED_KEYS if k in ck}
    del ck
    before = latest.stat().st_size
    ckpt_io.save_checkpoint(latest, {**record, "finished": True})
    return max(0, before - latest.stat().st_size)


def _restore_finished(trainer: Any, ck: dict[str, Any], path: Path) -> None:
    """Resume from the record of a finished stage: nothing is left to train (its networks are
    in ``best.pt``); a run that would train further is refused (no weights to go on from)."""
    step = int(ck["step"])
    if step < trainer.total_steps:
        raise CheckpointError(
            f"{path} is the record of a finished run of {step} steps (its weights are in "
            f"best.pt; the rest was dropped to save disk), and this run has "
            f"{trainer.total_steps}: use another output.dir, or output.resume=false to train "
            "it again here"
        )
    trainer.step = step
    trainer.best = ck.get("best")
    trainer.history = list(ck.get("history", []))
    if trainer.info.is_main:
        log.info("%s: a finished run (step %d); nothing left to train", path, step)


def restore_run(trainer: Any, path: Path) -> None:
    """Resume ``trainer`` from the ``latest.pt`` at ``path``: weights, the method's state, the
    optimizer, the step, the history and the RNG streams (from a finished stage's record:
    only the step, the best and the history). A ``latest.pt`` of another run is refused first
    (:func:`check_resumable`)."""
    ck = ckpt_io.load_checkpoint(path, map_location=trainer.device)
    check_resumable(trainer, ck, path)
    if ck.get("finished"):
        _restore_finished(trainer, ck, path)
        return
    from_source = ck.get("text_from_source", False)
    ckpt_io.load_model_state(trainer.model, ck["model"], path, from_source)
    trainer.method.load_state_dict(ck, path, from_source)
    _load_optimizer(trainer, ck["optimizer"], path)
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

"""The training loop: one loop for every training method.

``Trainer(cfg).fit()`` trains a :class:`~semires.train.method.Method`: any registered one
(:data:`~semires.train.method.TRAINING_METHODS`; :func:`~semires.train.method.build_method` picks it
from the config). The loop runs data iteration over the method's streams, the optimizer step,
gradient accumulation, mixed precision, DDP, the schedule, evaluation and checkpoint selection,
best / latest checkpoints, exact resume and TensorBoard; the method owns its data, its networks,
its loss, what happens after a step and its part of a checkpoint.

Run folder (``output.dir``, :class:`~semires.layout.StageLayout`): ``config.yaml`` (resolved),
``latest.pt`` (resumable), ``best.pt`` (selected on ``data.val_split``, never a test split),
``metrics.json`` (final evaluation), ``samples.json`` (its per-sentence counts),
``history.json`` (per-epoch records), ``train.log``,
``tb/`` (TensorBoard). One process per folder (a lock); a failed start writes nothing there.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semires.data.dataset import split_batch, step_loader
from semires.data.index import RESIndex
from semires.data.transforms import normalize
from semires.errors import DataError, SemiresError
from semires.layout import StageLayout
from semires.runtime import checkpoint as ckpt_io
from semires.runtime.distributed import (
    barrier,
    cleanup,
    gather_objects,
    init_distributed,
    sync_batchnorm,
)
from semires.runtime.logs import format_record, held_records
from semires.runtime.precision import autocast, resolve_amp
from semires.runtime.textcache import TextInputs
from semires.train.board import Board
from semires.train.checkpoints import check_best_weights, restore_run, run_payload
from semires.train.config import Config
from semires.train.losses import PixelLosses
from semires.train.method import Method, build_method
from semires.train.optim import build_optimizer, poly_factor, set_lr
from semires.train.run_folder import undo_start, write_run_folder
from semires.train.scoring import Scorer, check_scored_splits, final_metrics
from semires.utils.io import atomic_write_json, check_folder_target
from semires.utils.lock import folder_lock

log = logging.getLogger("semires.train")


class TrainingError(SemiresError):
    """Training cannot go on (e.g. a non-finite loss)."""


class Trainer:
    """One training run of ``cfg`` (:class:`~semires.train.config.Config`); ``losses`` replaces
    the pixel losses, ``method`` the :class:`~semires.train.method.Method` the config names
    (:func:`~semires.train.method.build_method`), ``index`` the dataset when the caller has
    read it already.

    ``__init__`` is a sequence of named steps: the process (device, threads, the folder's lock),
    then - before anything is written into the run folder, so a failed start leaves it as it
    was - the data, the model, the losses and the method's networks, the optimizer, the text
    inputs, the schedule and the resume; then the run folder (``config.yaml``, ``train.log``).
    """

    def __init__(
        self,
        cfg: Config,
        *,
        losses: PixelLosses | None = None,
        method: Method | None = None,
        progress: bool = True,
        index: RESIndex | None = None,
    ) -> None:
        #: the dataset ``data`` describes, when the caller has read it already (the pipeline)
        self._given_index = index
        self.cfg = cfg
        self.progress = progress
        self.layout = StageLayout(check_folder_target(cfg.output.dir, "config key 'output.dir':"))
        self._setup_process()
        created = [p for p in (self.layout.root, *self.layout.root.parents) if not p.exists()]
        fresh = not self.layout.config.exists()
        self._lock, self._wrote_folder = None, False
        try:
            self._lock = folder_lock(self.layout.root).acquire() if self.info.is_main else None
            with held_records() as held:
                self.method = method or build_method(
                    self.cfg, device=self.device, progress=progress and self.info.is_main
                )
                self._setup_data()
                self._setup_model()
                self._setup_losses(losses)
                self._setup_optimizer()
                self._setup_text()
                self._setup_schedule()
                self._maybe_resume()
            self._setup_run_folder(held)
        except BaseException:
            self._undo_start(created if self.info.is_main else [], fresh)
            raise

    @classmethod
    def from_config(cls, cfg: Config, *, progress: bool = True, **kwargs: Any) -> Trainer:
        """A trainer for ``cfg`` (the same as ``Trainer(cfg, ...)``)."""
        return cls(cfg, progress=progress, **kwargs)

    # ------------------------------------------------------------------ set-up steps
    def _setup_process(self) -> None:
        import torch.distributed as dist

        # a process group made by a caller (e.g. the `semires run` pipeline) outlives this run
        self._owns_group = not (dist.is_available() and dist.is_initialized())
        self.info, self.device = init_distributed(self.cfg.train.device)
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)
        if self.cfg.train.threads:
            torch.set_num_threads(self.cfg.train.threads)

    def _setup_data(self) -> None:
        from semires.data import load_index
        from semires.data.splits import split_refs

        cfg = self.cfg
        given, self._given_index = self._given_index, None
        self.index = given if given is not None else load_index(cfg.data.spec())
        self.labeled_refs, self.unlabeled_refs = split_refs(
            self.index, cfg.data.train_split, cfg.data.split_dir
        )
        if not self.labeled_refs:
            raise DataError(
                f"no labeled refs in split {cfg.data.train_split!r} of {cfg.data.spec().describe()}"
            )
        check_scored_splits(self.index, self.cfg.data, self.cfg.train)
        self.method.build_data(self.index, self.labeled_refs, self.unlabeled_refs)

    def _setup_model(self) -> None:
        from semires.model import build_model

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        overrides = self.method.model_overrides(dict(cfg.model.overrides))
        self.model = build_model(cfg.model.name, **overrides).to(self.device)
        self.model.text_eval = not cfg.train.text_dropout
        if cfg.train.sync_bn:
            self._sync_batchnorm()
        self.method.init_model(self.model)

    def _setup_losses(self, losses: PixelLosses | None) -> None:
        self.losses = losses or self.method.make_losses()
        self.text = TextInputs(self.model, self.device)
        self.method.attach(self.model, self.text, self.losses)

    def _setup_optimizer(self) -> None:
        cfg = self.cfg.train
        self.ddp_model: nn.Module = self.model
        if self.info.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay, cfg.decay_rule)
        amp = resolve_amp(self.device, cfg.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")

    def _setup_text(self) -> None:
        """Encode every sentence of the run once when the text encoder is frozen."""
        cfg = self.cfg
        splits = {cfg.data.val_split, *cfg.data.test_splits} & set(self.index.splits())
        sentences = {s.raw for r in [*self.labeled_refs, *self.unlabeled_refs] for s in r.sentences}
        sentences |= {s.raw for split in splits for _, s in self.index.sentences(split)}
        sentences |= self.method.extra_sentences(sentences)
        self.text.prepare(sentences, cfg.train.text_cache, self.info, self.progress)

    def _setup_schedule(self) -> None:
        cfg = self.cfg
        self.streams = self.method.streams()
        (epoch,) = [s for s in self.streams if s.epoch]
        per_step = epoch.batch_size * cfg.train.grad_accum * self.info.world
        self.steps_per_epoch = cfg.train.steps_per_epoch or max(1, len(epoch.dataset) // per_step)
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.board = Board(self.layout.tensorboard, self.info.is_main and cfg.output.tensorboard)
        self.scorer = Scorer(
            index=self.index,
            data=cfg.data,
            train=cfg.train,
            device=self.device,
            info=self.info,
            progress=self.progress,
            on_result=self._log_eval,
        )
        if self.info.is_main:
            log.info("model %s\n%s", cfg.model.name, self.model.describe())
            log.info(
                "labeled refs %d, unlabeled refs %d, %d steps/epoch x %d epochs",
                len(self.labeled_refs),
                len(self.unlabeled_refs),
                self.steps_per_epoch,
                cfg.train.epochs,
            )

    def _maybe_resume(self) -> None:
        self.resumed = self.cfg.output.resume and self.layout.latest.is_file()
        if self.resumed:
            restore_run(self, self.layout.latest)

    def _setup_run_folder(self, held: list[logging.LogRecord]) -> None:
        """``config.yaml`` and ``train.log`` (with the start's held log records)."""
        self._wrote_folder = True
        write_run_folder(self.cfg, self.layout, self.info, held)
        if self.resumed and self.progress and self.info.is_main:  # said on the console too
            print(f"[{self.cfg.name}] {self._resumed_where()}", flush=True)

    def _resumed_where(self) -> str:
        """Where a resumed run goes on: after a whole epoch, or inside one (a mid-epoch
        ``train.checkpoint_every`` save); its earlier epochs' lines are not printed again."""
        done, per, epochs = self.step, self.steps_per_epoch, self.cfg.train.epochs
        epoch, into = divmod(done, per)
        if done >= self.total_steps:
            where = f"after its last epoch {epochs}/{epochs} (step {done}; nothing left to train)"
        elif into == 0:
            where = f"after epoch {epoch}/{epochs} (step {done})"
        else:
            where = f"in epoch {epoch + 1}/{epochs} at step {done} ({into} of its {per} steps done)"
        return f"resumed from {self.layout.latest} {where}"

    # ------------------------------------------------------------------ set-up helpers
    def _undo_start(self, created: list[Path], fresh: bool) -> None:
        """A failed start takes back what it wrote (:func:`~semires.train.run_folder.
        undo_start`) and releases the lock."""
        wrote = self.info.is_main and fresh and self._wrote_folder  # under this start's lock
        undo_start(self.layout, created, wrote, self._release_lock)

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def _sync_batchnorm(self) -> None:
        """SyncBatchNorm across processes (DDP on CUDA only; elsewhere a note says it is off)."""
        self.model, note = sync_batchnorm(self.model, self.info, self.device)
        if note and self.info.is_main:
            log.warning(note)
            if self.progress:
                print(f"[{self.cfg.name}] note: {note}", flush=True)

    def save_latest(self) -> None:
        rngs = gather_objects(ckpt_io.rng_state(), self.info)
        if self.info.is_main:
            payload = run_payload(self, full=True)
            payload["rng"] = rngs
            ckpt_io.save_checkpoint(self.layout.latest, payload)
        barrier(self.info)

    # ------------------------------------------------------------------ steps
    def _forward(self, images: torch.Tensor, sentences: list[str]) -> torch.Tensor:
        """The trained network's logits for raw images in [0, 1] (the methods' ``forward``)."""
        images = images.to(self.device, non_blocking=True)
        x = normalize(images, self.model.image_mean, self.model.image_std)
        return self.ddp_model(x, **self.text(sentences))

    def _micro_loss(self, batches: list[dict[str, Any]]) -> tuple[torch.Tensor, dict[str, float]]:
        """The method's loss of one micro-batch and its parts; a non-finite loss stops the run."""
        with autocast(self.device, self.cfg.train.amp):
            loss, parts = self.method.loss(batches, self._forward)
        parts["loss"] = float(loss.detach())
        if not math.isfinite(parts["loss"]):
            latest = self.layout.latest
            kept = (
                f"the last good checkpoint {latest} is intact"
                if latest.is_file()
                else f"no checkpoint was saved yet ({latest} does not exist)"
            )
            raise TrainingError(
                f"non-finite loss ({parts['loss']}) at step {self.step}; {kept} (try a lower "
                "train.lr or train.amp=none)"
            )
        return loss, parts

    def train_step(self, batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step over ``train.grad_accum`` micro-batches of each stream's batch;
        returns scalar logs."""
        cfg = self.cfg
        factor = poly_factor(
            self.step, self.total_steps, cfg.train.poly_power, cfg.train.warmup_steps
        )
        logs: dict[str, float] = {"lr": set_lr(self.optimizer, cfg.train.lr, factor)}
        self.ddp_model.train()
        self.method.begin_step(self.step, self.total_steps)
        n = cfg.train.grad_accum
        micro = list(zip(*(split_batch(b, n) for b in batches), strict=True))
        self.optimizer.zero_grad(set_to_none=True)
        for i, parts_in in enumerate(micro):
            # under DDP only the last micro-batch all-reduces the gradients
            no_sync = self.info.enabled and i < n - 1
            with self.ddp_model.no_sync() if no_sync else contextlib.nullcontext():
                loss, parts = self._micro_loss(list(parts_in))
                self.scaler.scale(loss / n if n > 1 else loss).backward()
            for k, v in parts.items():
                logs[k] = logs.get(k, 0.0) + v / n
        if cfg.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip))
            # an fp16 overflow: the scaler skips this step; count it instead of logging inf
            logs["grad_norm" if math.isfinite(norm) else "overflow_steps"] = (
                norm if math.isfinite(norm) else 1.0
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.after_step()
        self.step += 1
        return logs

    # ------------------------------------------------------------------ epochs
    def batches(self, start: int, stop: int) -> Iterator[tuple[dict, ...]]:
        """One batch of each of the method's streams for every step ``start .. stop - 1``, as
        training draws them (e.g. to study a method's labels offline; nothing is trained)."""
        accum = self.cfg.train.grad_accum
        info, data = self.info, self.cfg.data
        opts = dict(seed=self.cfg.seed, rank=info.rank, world=info.world, workers=data.num_workers)
        pin = self.device.type == "cuda"
        loaders = [
            step_loader(s.dataset, s.batch_size * accum, s.stream, start, stop, pin=pin, **opts)
            for s in self.streams
        ]
        return zip(*loaders, strict=True)

    def train_epoch(self) -> dict[str, Any]:
        """Train until the end of the current epoch; returns the epoch's training record."""
        from semires.utils.progress import progress_bar

        epoch = self.step // self.steps_per_epoch
        start, stop = self.step, (epoch + 1) * self.steps_per_epoch
        sums: dict[str, float] = {}
        n_steps = images = 0
        t0 = time.perf_counter()
        desc = f"epoch {epoch + 1}/{self.cfg.train.epochs}"
        enabled = self.progress and self.info.is_main
        bar = progress_bar(total=stop - start, desc=desc, unit="step", leave=False, enabled=enabled)
        for batches in self.batches(start, stop):
            logs = self.train_step(list(batches))
            n_steps += 1
            images += sum(len(b["sentence"]) for b in batches)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            speed = images * self.info.world / max(time.perf_counter() - t0, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", img_s=f"{speed:.1f}")
            self._after_step(logs, speed, stop)
        bar.close()
        elapsed = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": epoch + 1, "step": self.step, "seconds": elapsed}
        record.update({k: v / max(n_steps, 1) for k, v in sums.items()})
        record["images_per_s"] = images * self.info.world / max(elapsed, 1e-9)
        record.update(self.method.epoch_record(self.info))
        return record

    def _after_step(self, logs: dict[str, float], speed: float, stop: int) -> None:
        """TensorBoard scalars every ``train.log_every`` steps, a resumable checkpoint every
        ``train.checkpoint_every``."""
        cfg = self.cfg.train
        if self.step % cfg.log_every == 0:
            self.board.scalars("train", {**logs, "images_per_s": speed}, self.step)
        every = cfg.checkpoint_every
        if every and self.step % every == 0 and self.step < stop:
            self.save_latest()

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self,
        split: str,
        *,
        max_sentences: int | None = None,
        pred_dir: str | Path | None = None,
        role: str | None = None,
    ) -> dict[str, Any]:
        """Evaluate the method's evaluated network (or its network ``role``) on a split."""
        role = role or self.method.eval_role
        net = self.method.networks()[role]
        return self.scorer.evaluate(
            net, self.method.text_for(role), split, max_sentences=max_sentences, pred_dir=pred_dir
        )

    @property
    def eval_net(self) -> nn.Module:
        """The network evaluated and saved as ``best`` (the method's ``eval_role``)."""
        return self.method.networks()[self.method.eval_role]

    def _log_eval(self, split: str, result: dict[str, Any]) -> None:
        self.board.evaluation(split, result, self.step)

    def _validate(self, record: dict[str, Any]) -> None:
        """Score the val split into ``record``; a better score saves ``best.pt``. Weights that
        hold a NaN or an infinity stop the run first (on every rank), in one line: they would
        score an empty mask everywhere and must never become ``best.pt``."""
        cfg = self.cfg
        check_best_weights(self)
        val = cfg.data.val_split
        result = self.evaluate(val, max_sentences=cfg.data.max_val_sentences)
        m = result["metrics"]
        record[f"{val}_oIoU"], record[f"{val}_mIoU"] = m["oIoU"], m["mIoU"]
        self._log_eval(val, result)
        score = m[cfg.train.select_metric]
        if self.best is None or score > self.best["score"]:
            metric, epoch = cfg.train.select_metric, record["epoch"]
            self.best = {"score": score, "metric": metric, "epoch": epoch, "step": self.step}
            if self.info.is_main:
                ckpt_io.save_checkpoint(self.layout.best, run_payload(self, full=False))

    def fit(self) -> dict[str, Any]:
        """Train all epochs (resuming where ``latest.pt`` stopped), then evaluate ``best``."""
        cfg = self.cfg
        try:
            while self.step < self.total_steps:
                record = self.train_epoch()
                due = record["epoch"] % cfg.train.eval_every == 0 or self.step >= self.total_steps
                if not cfg.train.skip_eval and due:
                    self._validate(record)
                self.history.append(record)
                self._log_record(record)
                self.save_latest()
            if self.best is None and self.info.is_main:  # no evaluation: the last weights
                check_best_weights(self)  # as _validate does before an evaluated save
                self.best = dict.fromkeys(("score", "metric", "epoch", "step"))
                self.best.update(epoch=cfg.train.epochs, step=self.step)
                ckpt_io.save_checkpoint(self.layout.best, run_payload(self, full=False))
            barrier(self.info)
            return self.final_evaluation()
        finally:
            self.board.close()
            if self._owns_group:
                cleanup(self.info)
            self._release_lock()

    def _log_record(self, record: dict[str, Any]) -> None:
        if not self.info.is_main:
            return
        text = format_record(record)  # shares in percent, as the report shows them
        log.info("epoch %s", text)
        if self.progress:
            print(f"[{self.cfg.name}] {text}", flush=True)
        shown = {k: v for k, v in record.items() if k not in ("epoch", "step")}
        self.board.scalars("epoch", shown, self.step)
        atomic_write_json(self.layout.history, self.history)

    def final_evaluation(self) -> dict[str, Any]:
        """Load ``best.pt`` and score it on the final splits (:func:`~semires.train.scoring.
        final_metrics`): the evaluated network, and the method's other network of the selected
        step (``companion`` in ``best.pt``) beside it; writes metrics.json and samples.json."""
        source = self.layout.best
        best = ckpt_io.load_checkpoint(source, map_location=self.device)
        from_source = best.get("text_from_source", False)
        nets, role = self.method.networks(), self.method.eval_role
        ckpt_io.load_model_state(nets[role], best["model"], source, from_source)
        scored = [(role, nets[role], self.method.text_for(role))]
        companion = best.get("companion")
        if companion is not None and companion["role"] in nets:
            other = companion["role"]
            ckpt_io.load_model_state(nets[other], companion["model"], source, from_source)
            scored.append((other, nets[other], self.method.text_for(other)))
        return final_metrics(self.scorer, scored, self.layout, {"best": self.best})


def train(cfg: Config, *, progress: bool = True, index: RESIndex | None = None) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg``; returns the final metrics. ``index``: the
    dataset of ``cfg.data``, if the caller has read it already (read from disk otherwise)."""
    return Trainer.from_config(cfg, progress=progress, index=index).fit()

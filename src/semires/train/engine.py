"""The training engine: one loop for the supervised burn-in and the teacher-student stage.

``Trainer.from_config(cfg).fit()`` trains the RES model on the labeled refs. The loop knows
nothing of SemiRES: with ``semi.enabled`` a :class:`~semires.train.semi.SemiSupervised`
collaborator (teacher, EMA, refinement, unsupervised loss, statistics) is handed each unlabeled
batch - before the student's forward pass for the pseudo-labels, after it for the loss, after
the optimizer step for the teacher's update. Everything else - data order, schedule, gradient
accumulation, mixed precision, DDP, evaluation, best / latest checkpoints, exact resume,
TensorBoard - is the loop's.

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
from torch.utils.data import DataLoader

from semires.data.dataset import (
    LABELED,
    UNLABELED,
    LabeledDataset,
    StepBatchSampler,
    UnlabeledDataset,
    collate,
    split_batch,
)
from semires.data.index import RESIndex
from semires.data.transforms import normalize
from semires.errors import CheckpointError, DataError, SemiresError
from semires.layout import StageLayout
from semires.runtime import checkpoint as ckpt_io
from semires.runtime.distributed import barrier, cleanup, gather_objects, init_distributed
from semires.runtime.logs import held_records, log_to_file, replay
from semires.runtime.precision import autocast, resolve_amp
from semires.runtime.textcache import TextInputs
from semires.train.config import (
    Config,
    DataConfig,
    ModelSection,
    OutputConfig,
    SemiConfig,
    TrainConfig,
)
from semires.train.optim import build_optimizer, poly_factor, set_lr
from semires.train.refine import as_bool
from semires.train.semi import SemiSupervised
from semires.train.strategies import PixelLosses
from semires.utils.io import atomic_write_json, atomic_write_text
from semires.utils.lock import folder_lock

log = logging.getLogger("semires.train")


class TrainingError(SemiresError):
    """Training cannot go on (e.g. a non-finite loss)."""


class Trainer:
    """One training run; one keyword argument per config section (see
    :class:`~semires.train.config.Config`), ``losses`` to replace the pixel losses.

    ``__init__`` is a sequence of named steps: the process (device, threads, the folder's lock),
    then - before anything is written into the run folder, so a failed start leaves it as it
    was - the data, the model, the teacher-student collaborator, the optimizer, the text inputs,
    the schedule and the resume; then the run folder (``config.yaml``, ``train.log``).
    """

    def __init__(
        self,
        *,
        data: DataConfig,
        model: ModelSection,
        train: TrainConfig,
        semi: SemiConfig,
        output: OutputConfig,
        name: str = "run",
        seed: int = 0,
        losses: PixelLosses | None = None,
        progress: bool = True,
        index: RESIndex | None = None,
    ) -> None:
        #: the dataset ``data`` describes, when the caller has read it already (the pipeline)
        self._given_index = index
        self.cfg = Config(
            name=name, seed=seed, data=data, model=model, train=train, semi=semi, output=output
        )
        self.progress = progress
        self.layout = StageLayout(Path(output.dir))
        self._setup_process()
        created = [p for p in (self.layout.root, *self.layout.root.parents) if not p.exists()]
        self._lock = folder_lock(self.layout.root).acquire() if self.info.is_main else None
        try:
            with held_records() as held:
                self._setup_data()
                self._setup_model()
                self._setup_losses(losses)
                self._setup_semi()
                self._setup_optimizer()
                self._setup_text()
                self._setup_schedule()
                self._maybe_resume()
        except BaseException:
            self._release_lock()
            for folder in created if self.info.is_main else []:  # only what this start made
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        self._setup_run_folder(held)

    @classmethod
    def from_config(cls, cfg: Config, *, progress: bool = True, **kwargs: Any) -> Trainer:
        """A trainer for a whole :class:`~semires.train.config.Config`."""
        return cls(
            data=cfg.data,
            model=cfg.model,
            train=cfg.train,
            semi=cfg.semi,
            output=cfg.output,
            name=cfg.name,
            seed=cfg.seed,
            progress=progress,
            **kwargs,
        )

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

        cfg = self.cfg
        given, self._given_index = self._given_index, None
        self.index = given if given is not None else load_index(cfg.data.spec())
        self.labeled_refs, self.unlabeled_refs = self._split_refs()
        if not self.labeled_refs:
            raise DataError(
                f"no labeled refs in split {cfg.data.train_split!r} of {cfg.data.spec().describe()}"
            )
        views = cfg.semi.augment
        self.labeled_ds = LabeledDataset(
            self.index,
            self.labeled_refs,
            cfg.data.img_size,
            cfg.seed,
            cache_images=cfg.data.cache_images,
            augment=cfg.data.labeled_augment,
            jitter=views.jitter(),
        )
        self.unlabeled_ds: UnlabeledDataset | None = None
        self.proposals = None
        if not cfg.semi.enabled:
            return
        if not self.unlabeled_refs:
            raise DataError(
                "the teacher-student stage needs unlabeled refs; data.split_dir gives none"
            )
        if cfg.semi.proposals:
            self.proposals = self._open_proposals()
        self.unlabeled_ds = UnlabeledDataset(
            self.index,
            self.unlabeled_refs,
            cfg.data.img_size,
            cfg.seed,
            proposals=self.proposals,
            max_candidates=cfg.semi.max_candidates,
            blur=views.blur(),
            jitter=views.jitter(),
            cache_images=cfg.data.cache_images,
        )

    def _setup_model(self) -> None:
        from semires.model import build_model

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        overrides = dict(cfg.model.overrides)
        if cfg.semi.enabled:  # every weight comes from the burn-in: no backbone file needed
            overrides["backbone_weights"] = None
        self.model = build_model(cfg.model.name, **overrides).to(self.device)
        self.model.text_eval = not cfg.train.text_dropout
        if cfg.train.sync_bn:
            self._sync_batchnorm()
        if cfg.semi.enabled:
            if not cfg.semi.burn_in:
                raise SemiresError(
                    "config key 'semi.burn_in': the teacher-student stage needs a burn-in checkpoint"
                )
            self._load_burn_in(cfg.semi.burn_in)

    def _setup_losses(self, losses: PixelLosses | None) -> None:
        cfg = self.cfg
        weights = torch.tensor(cfg.train.class_weights, device=self.device, dtype=torch.float32)
        self.losses = losses or PixelLosses(weights, cfg.train.ce_mean, cfg.semi.pwa_class_weights)

    def _setup_semi(self) -> None:
        self.text = TextInputs(self.model, self.device)
        self.semi: SemiSupervised | None = None
        if self.cfg.semi.enabled:
            self.semi = SemiSupervised(
                cfg=self.cfg.semi,
                student=self.model,
                text=self.text,
                losses=self.losses,
                device=self.device,
                amp=self.cfg.train.amp,
            )

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
        if not self.text.cached:
            return
        cfg = self.cfg
        splits = {cfg.data.val_split, *cfg.data.test_splits}
        sentences = {s.raw for r in [*self.labeled_refs, *self.unlabeled_refs] for s in r.sentences}
        sentences |= {
            s.raw
            for split in splits
            if split in self.index.splits()
            for _, s in self.index.sentences(split)
        }
        path = cfg.train.text_cache
        if path and self.info.is_main:
            self.text.load(path)
            if self.text.precompute(sentences, progress=self.progress):
                self.text.save(path)
        barrier(self.info)
        if path and not self.info.is_main:
            self.text.load(path)
        self.text.precompute(sentences, progress=self.progress and self.info.is_main)

    def _setup_schedule(self) -> None:
        cfg = self.cfg
        n = len(self.unlabeled_refs) if cfg.semi.enabled else len(self.labeled_refs)
        batch = cfg.semi.unlabeled_batch_size if cfg.semi.enabled else cfg.train.batch_size
        per_step = batch * cfg.train.grad_accum * self.info.world
        self.steps_per_epoch = cfg.train.steps_per_epoch or max(1, n // per_step)
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self._tb = None
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
        if self.cfg.output.resume and self.layout.latest.is_file():
            self._resume(self.layout.latest)

    def _setup_run_folder(self, held: list[logging.LogRecord]) -> None:
        """``config.yaml`` and ``train.log`` (with the start's held log records)."""
        if self.info.is_main:
            import yaml

            text = yaml.safe_dump(self.cfg.to_dict(), sort_keys=False)
            atomic_write_text(self.layout.config, text)
        barrier(self.info)
        if self.info.is_main:
            log_to_file(self.layout.log)
        replay(held)

    # ------------------------------------------------------------------ set-up helpers
    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def _split_refs(self) -> tuple[list, list]:
        from semires.data.splits import read_split

        train = self.index.refs_in(self.cfg.data.train_split)
        if not self.cfg.data.split_dir:
            return train, []
        split = read_split(self.cfg.data.split_dir, self.index)
        lab, unl = set(split.labeled_images), set(split.unlabeled_images)
        return [r for r in train if r.image_id in lab], [r for r in train if r.image_id in unl]

    def _open_proposals(self) -> Any:
        """The proposal store, checked against the unlabeled images (ids, sizes, file content)."""
        from semires.proposals.store import ProposalStore

        store = ProposalStore.open(self.cfg.semi.proposals)
        store.check_for_images(
            [r.image_id for r in self.unlabeled_refs],
            self.index.image_size,
            self.index.image_path,
            sizes_and_files=not self.cfg.semi.allow_proposal_mismatch,
            progress=self.progress and self.info.is_main,
        )
        return store

    def _note(self, text: str) -> None:
        """A one-off remark: in train.log, and on the console when showing progress."""
        if self.info.is_main:
            log.warning(text)
            if self.progress:
                print(f"[{self.cfg.name}] note: {text}", flush=True)

    def _sync_batchnorm(self) -> None:
        """SyncBatchNorm across processes (DDP on CUDA only; elsewhere a note says it is off)."""
        if self.info.enabled and self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            return
        where = "a single process" if not self.info.enabled else f"{self.device.type} / gloo"
        self._note(f"train.sync_bn is off in {where} (it needs DDP on CUDA); plain BatchNorm")

    def _load_burn_in(self, path: str) -> None:
        """Start from the burn-in checkpoint; refuse one made for another architecture (knobs
        that do not change tensor shapes, e.g. fusion heads, would otherwise load silently)."""
        from semires.model.config import ModelConfig, architecture_differences

        ck = ckpt_io.load_checkpoint(path)
        if "model_config" in ck:
            theirs = ModelConfig.from_dict(ck["model_config"])
            diffs = architecture_differences(theirs, self.model.config)
            if diffs:
                shown = "; ".join(f"{k}: checkpoint {a!r}, run {b!r}" for k, a, b in diffs[:3])
                raise CheckpointError(
                    f"burn-in checkpoint {path} was made for another model ({shown}); set "
                    "model.overrides to match it"
                )
        ckpt_io.load_model_state(self.model, ck["model"], path, ck.get("text_from_source", False))

    @property
    def teacher(self) -> nn.Module | None:
        """The EMA teacher of a teacher-student run (None in a supervised one)."""
        return self.semi.teacher if self.semi is not None else None

    @property
    def tb(self) -> Any:
        if self._tb is None and self.info.is_main and self.cfg.output.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.layout.tensorboard), purge_step=self.step or None)
        return self._tb

    # ------------------------------------------------------------------ checkpoints
    def _payload(self, full: bool) -> dict[str, Any]:
        """A checkpoint: ``full`` (latest.pt: everything to resume) or best.pt (the evaluated
        network, and in a teacher-student run the other one as ``companion``)."""
        state, dropped = ckpt_io.model_state(self.model if full else self.eval_net)
        payload: dict[str, Any] = {
            "model": state,
            "text_from_source": dropped,
            "model_config": self.model.config_dict(),
            "config": self.cfg.to_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "best": self.best,
        }
        if getattr(self.model, "embedded_tokenizer", None) is not None:
            payload["tokenizer"] = self.model.embedded_tokenizer
        if self.teacher is not None and not full:
            other = self.model if self.eval_net is self.teacher else self.teacher
            payload["companion"] = {
                "role": self._role(other),
                "model": ckpt_io.model_state(other)[0],
            }
        if full:
            payload["optimizer"] = self.optimizer.state_dict()
            payload["scaler"] = self.scaler.state_dict()
            payload["history"] = self.history
            payload["world"] = self.info.world
            if self.teacher is not None:
                payload["teacher"] = ckpt_io.model_state(self.teacher)[0]
        return payload

    def save_latest(self) -> None:
        rngs = gather_objects(ckpt_io.rng_state(), self.info)
        if self.info.is_main:
            payload = self._payload(full=True)
            payload["rng"] = rngs
            ckpt_io.save_checkpoint(self.layout.latest, payload)
        barrier(self.info)

    def _resume(self, path: Path) -> None:
        ck = ckpt_io.load_checkpoint(path, map_location=self.device)
        from_source = ck.get("text_from_source", False)
        ckpt_io.load_model_state(self.model, ck["model"], path, from_source)
        if self.teacher is not None:
            if "teacher" not in ck:
                raise CheckpointError(
                    f"{path} has no teacher state but this run is a teacher-student run"
                )
            ckpt_io.load_model_state(self.teacher, ck["teacher"], path, from_source)
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        self.step = int(ck["step"])
        self.best = ck.get("best")
        self.history = list(ck.get("history", []))
        rngs = ck.get("rng") or []
        if len(rngs) == self.info.world:
            ckpt_io.set_rng_state(rngs[self.info.rank])
        elif self.info.is_main:
            log.warning(
                "resuming with %d processes instead of %d: RNG streams differ",
                self.info.world,
                len(rngs),
            )
        if self.info.is_main:
            epoch = self.step // self.steps_per_epoch
            log.info("resumed from %s at step %d (epoch %d)", path, self.step, epoch)

    # ------------------------------------------------------------------ steps
    def _loader(self, ds: Any, batch: int, stream: int, start: int, stop: int) -> DataLoader:
        sampler = StepBatchSampler(
            len(ds), batch, self.cfg.seed, stream, start, stop, self.info.rank, self.info.world
        )
        return DataLoader(
            ds,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # a private generator: creating an iterator must not draw from the global RNG
            # (dropout), or a resumed run would diverge from an uninterrupted one
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def _norm(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return normalize(images, self.model.image_mean, self.model.image_std)

    def _micro_loss(
        self, lab: dict[str, Any], unl: dict[str, Any] | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one (micro-)batch and its parts; with an unlabeled batch
        ``w_sup L_sup + lambda L_unsup`` (docs/method.md section 3)."""
        cfg = self.cfg
        parts: dict[str, float] = {}
        x_l, y_l = self._norm(lab["image"]), lab["mask"].to(self.device)
        with autocast(self.device, cfg.train.amp):
            if unl is None or self.semi is None:
                logits = self.ddp_model(x_l, **self.text(lab["sentence"]))
                loss = loss_sup = self.losses.ce(logits, y_l)
            else:
                result = self.semi.pseudo_labels(unl)
                images = torch.cat([x_l, self._norm(unl["strong"])])
                logits = self.ddp_model(images, **self.text([*lab["sentence"], *unl["sentence"]]))
                b = x_l.shape[0]
                loss_sup = self.losses.ce(logits[:b], y_l)
                loss_unsup = self.semi.loss(logits[b:], result)
                loss = cfg.semi.sup_weight * loss_sup + cfg.semi.unsup_weight * loss_unsup
                parts["loss_unsup"] = float(loss_unsup.detach())
        parts["loss_sup"] = float(loss_sup.detach())
        parts["loss"] = float(loss.detach())
        if not math.isfinite(parts["loss"]):
            raise TrainingError(
                f"non-finite loss ({parts['loss']}) at step {self.step}; the last good checkpoint "
                f"{self.layout.latest} is intact (try a lower train.lr or train.amp=none)"
            )
        return loss, parts

    def train_step(self, lab: dict[str, Any], unl: dict[str, Any] | None) -> dict[str, float]:
        """One optimizer step over ``train.grad_accum`` micro-batches; returns scalar logs."""
        cfg = self.cfg
        factor = poly_factor(
            self.step, self.total_steps, cfg.train.poly_power, cfg.train.warmup_steps
        )
        logs: dict[str, float] = {"lr": set_lr(self.optimizer, cfg.train.lr, factor)}
        self.ddp_model.train()
        n = cfg.train.grad_accum
        labs = split_batch(lab, n)
        unls = split_batch(unl, n) if unl is not None else [None] * n
        self.optimizer.zero_grad(set_to_none=True)
        for i, (part_l, part_u) in enumerate(zip(labs, unls, strict=True)):
            # under DDP only the last micro-batch all-reduces the gradients
            last = i == n - 1
            no_sync = self.info.enabled and not last
            with self.ddp_model.no_sync() if no_sync else contextlib.nullcontext():
                loss, parts = self._micro_loss(part_l, part_u)
                self.scaler.scale(loss / n if n > 1 else loss).backward()
            for k, v in parts.items():
                logs[k] = logs.get(k, 0.0) + v / n
        if cfg.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
            logs["grad_norm"] = float(norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.semi is not None:
            self.semi.update_teacher()
        self.step += 1
        return logs

    def teacher_batches(self, steps: int) -> Iterator[dict[str, Any]]:
        """What the teacher sees in the first ``steps`` unlabeled batches of the stage, for
        studying refinement offline (``bench/bench_refine_teacher.py``); nothing is trained.

        Per batch: ``prob`` (teacher foreground probability on the weak view, [B, H, W]; the
        pseudo-label is ``prob > 0.5``), ``candidates`` ([B, K, H, W] bool) and ``valid``
        ([B, K]) as refinement gets them, ``gt`` ([B, H, W] bool, or None where the unlabeled
        images have no masks) and ``sentence``. Needs ``semi.enabled``."""
        if self.unlabeled_ds is None or self.semi is None:
            raise SemiresError("teacher_batches needs a teacher-student config (semi.enabled)")
        batch = self.cfg.semi.unlabeled_batch_size
        for unl in self._loader(self.unlabeled_ds, batch, UNLABELED, 0, steps):
            view = self.semi.teacher_view(unl)
            gt = unl.get("gt_mask")
            yield {
                "prob": view.prob,
                "candidates": as_bool(view.candidates),
                "valid": view.valid,
                "gt": None if gt is None else gt.to(self.device).bool(),
                "sentence": list(unl["sentence"]),
            }

    # ------------------------------------------------------------------ epochs
    def _epoch_batches(self, start: int, stop: int) -> Iterator[tuple[dict, dict | None]]:
        """(labeled, unlabeled or None) batches of the steps ``start .. stop - 1``."""
        cfg = self.cfg
        accum = cfg.train.grad_accum
        labeled = self._loader(self.labeled_ds, cfg.train.batch_size * accum, LABELED, start, stop)
        if self.unlabeled_ds is None:
            return ((lab, None) for lab in labeled)
        batch = cfg.semi.unlabeled_batch_size * accum
        unlabeled = self._loader(self.unlabeled_ds, batch, UNLABELED, start, stop)
        return zip(labeled, unlabeled, strict=True)

    def train_epoch(self) -> dict[str, Any]:
        """Train until the end of the current epoch; returns the epoch's training record."""
        from semires.utils.progress import progress_bar

        cfg = self.cfg
        epoch = self.step // self.steps_per_epoch
        start, stop = self.step, (epoch + 1) * self.steps_per_epoch
        sums: dict[str, float] = {}
        n_steps = images = 0
        t0 = time.perf_counter()
        desc = f"epoch {epoch + 1}/{cfg.train.epochs}"
        enabled = self.progress and self.info.is_main
        bar = progress_bar(total=stop - start, desc=desc, unit="step", leave=False, enabled=enabled)
        for lab, unl in self._epoch_batches(start, stop):
            logs = self.train_step(lab, unl)
            n_steps += 1
            images += len(lab["sentence"]) + (len(unl["sentence"]) if unl is not None else 0)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            speed = images * self.info.world / max(time.perf_counter() - t0, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", img_s=f"{speed:.1f}")
            if self.tb is not None and self.step % cfg.train.log_every == 0:
                for k, v in logs.items():
                    self.tb.add_scalar(f"train/{k}", v, self.step)
                self.tb.add_scalar("train/images_per_s", speed, self.step)
            every = cfg.train.checkpoint_every
            if every and self.step % every == 0 and self.step < stop:
                self.save_latest()
        bar.close()
        elapsed = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": epoch + 1, "step": self.step, "seconds": elapsed}
        record.update({k: v / max(n_steps, 1) for k, v in sums.items()})
        record["images_per_s"] = images * self.info.world / max(elapsed, 1e-9)
        if self.semi is not None:
            record.update(self.semi.epoch_record(self.info))
        return record

    def evaluate(
        self,
        split: str,
        *,
        max_sentences: int | None = None,
        pred_dir: str | Path | None = None,
        net: nn.Module | None = None,
    ) -> dict[str, Any]:
        """Evaluate the current student (or teacher, see ``semi.eval_model``; or ``net``) on a
        split."""
        from semires.evaluate.evaluate import evaluate_model

        model = self.eval_net if net is None else net
        text = self.semi.text if self.semi is not None and model is self.teacher else self.text
        return evaluate_model(
            model,
            self.index,
            split,
            size=self.cfg.data.img_size,
            batch_size=self.cfg.train.eval_batch_size,
            device=self.device,
            info=self.info,
            text=text,
            amp=self.cfg.train.amp,
            max_sentences=max_sentences,
            pred_dir=pred_dir,
            cache_images=self.cfg.data.cache_images,
            progress=self.progress,
            num_panels=self.cfg.train.num_panels,
            protocol=self.cfg.train.protocol,
        )

    @property
    def eval_net(self) -> nn.Module:
        """The network evaluated and saved as ``best``: the student, or the EMA teacher."""
        if self.teacher is not None and self.cfg.semi.eval_model == "teacher":
            return self.teacher
        return self.model

    def _role(self, net: nn.Module) -> str:
        return "teacher" if net is self.teacher else "student"

    def _log_eval(self, split: str, result: dict[str, Any]) -> None:
        if self.tb is None:
            return
        m = result["metrics"]
        self.tb.add_scalar(f"{split}/oIoU", m["oIoU"], self.step)
        self.tb.add_scalar(f"{split}/mIoU", m["mIoU"], self.step)
        for t, v in m["precision"].items():
            self.tb.add_scalar(f"{split}/prec@{t}", v, self.step)
        if result.get("panels") is not None:
            self.tb.add_image(f"{split}/panels", result["panels"], self.step)

    def _validate(self, record: dict[str, Any]) -> None:
        """Score the val split into ``record``; a better score saves ``best.pt``."""
        cfg = self.cfg
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
                ckpt_io.save_checkpoint(self.layout.best, self._payload(full=False))

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
                self.best = {
                    "score": None,
                    "metric": None,
                    "epoch": cfg.train.epochs,
                    "step": self.step,
                }
                ckpt_io.save_checkpoint(self.layout.best, self._payload(full=False))
            barrier(self.info)
            return self.final_evaluation()
        finally:
            if self._tb is not None:
                self._tb.close()
            if self._owns_group:
                cleanup(self.info)
            self._release_lock()

    def _log_record(self, record: dict[str, Any]) -> None:
        if not self.info.is_main:
            return
        text = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
        )
        log.info("epoch %s", text)
        if self.progress:
            print(f"[{self.cfg.name}] {text}", flush=True)
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("epoch", "step") and isinstance(v, int | float):
                    self.tb.add_scalar(f"epoch/{k}", v, self.step)
        atomic_write_json(self.layout.history, self.history)

    def final_evaluation(self) -> dict[str, Any]:
        """Load ``best.pt`` and evaluate the val split (unless ``train.final_val`` is off) and
        every test split; write metrics.json.

        In a teacher-student run the other network of the selected step (``companion`` in
        ``best.pt``) is scored on the same splits: ``metrics.json`` holds ``eval_model`` (the
        network of ``splits``, the headline) and ``companion`` ``{"model", "splits"}``.
        """
        source = self.layout.best
        best = ckpt_io.load_checkpoint(source, map_location=self.device)
        from_source = best.get("text_from_source", False)
        ckpt_io.load_model_state(self.eval_net, best["model"], source, from_source)
        counts: dict[str, Any] = {}
        out: dict[str, Any] = {
            "best": self.best,
            "eval_model": self._role(self.eval_net),
            "splits": self._final_splits(self.eval_net, counts),
        }
        if self.info.is_main:
            atomic_write_json(self.layout.samples, counts, indent=None)
        companion = best.get("companion")
        if companion is not None and self.teacher is not None:
            other = self.model if self.eval_net is self.teacher else self.teacher
            ckpt_io.load_model_state(other, companion["model"], source, from_source)
            out["companion"] = {"model": self._role(other), "splits": self._final_splits(other)}
        if self.info.is_main:
            atomic_write_json(self.layout.metrics, out)
        return out

    def _final_splits(self, net: nn.Module, counts: dict | None = None) -> dict[str, Any]:
        """Metrics of ``net`` on the final splits (and all test splits together); ``counts``
        receives the per-sentence counts of each split."""
        from semires.evaluate.evaluate import score_splits

        cfg = self.cfg
        role = self._role(net)
        tag = "final" if net is self.eval_net else f"final_{role}"

        def run(split: str) -> dict[str, Any]:
            result = self.evaluate(split, net=net)
            self._log_eval(f"{tag}_{split}", result)
            if self.info.is_main:
                m = result["metrics"]
                log.info("final %s (%s): oIoU %.2f mIoU %.2f", split, role, m["oIoU"], m["mIoU"])
            return result

        splits = [cfg.data.val_split] if cfg.train.final_val or not cfg.data.test_splits else []
        return score_splits(run, splits, cfg.data.test_splits, cfg.train.protocol, counts)


def train(cfg: Config, *, progress: bool = True, index: RESIndex | None = None) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg``; returns the final metrics. ``index``: the
    dataset of ``cfg.data``, if the caller has read it already (read from disk otherwise)."""
    return Trainer.from_config(cfg, progress=progress, index=index).fit()

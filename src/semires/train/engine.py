"""The training engine: supervised burn-in and the teacher-student stage in ONE loop.

``Trainer(cfg).fit()`` trains the RES model on the labeled refs; with ``semi.enabled`` each step
also draws an unlabeled batch, the EMA teacher labels the weak view, the pseudo-label is refined
with the image's candidate masks (:mod:`semires.train.refine`) and the student learns from the
strong view. Everything else - data order, schedule, mixed precision, DDP, evaluation, best /
latest checkpoints, exact resume, TensorBoard - is shared.

Run folder (``output.dir``): ``config.yaml`` (resolved), ``latest.pt`` (resumable), ``best.pt``
(selected on ``data.val_split``, never a test split), ``metrics.json`` (final evaluation),
``history.json`` (per-epoch records), ``train.log``, ``tb/`` (TensorBoard).
"""

from __future__ import annotations

import contextlib
import copy
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
)
from semires.data.transforms import normalize
from semires.errors import CheckpointError, DataError, SemiresError
from semires.train import checkpoint as ckpt_io
from semires.train.config import Config
from semires.train.distributed import (
    all_reduce_sum,
    barrier,
    cleanup,
    gather_objects,
    init_distributed,
)
from semires.train.ema import EMATeacher
from semires.train.losses import masked_ce, pixel_weighted_ce, weighted_ce
from semires.train.optim import build_optimizer, poly_factor, set_lr
from semires.train.textcache import TextInputs
from semires.utils.io import atomic_write_json, atomic_write_text
from semires.utils.lock import folder_lock

log = logging.getLogger("semires.train")


class TrainingError(SemiresError):
    """Training cannot go on (e.g. a non-finite loss)."""


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _setup_logging(run_dir: Path, main: bool) -> None:
    if not main:
        return
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("semires")
    root.handlers = [h for h in root.handlers if not isinstance(h, logging.FileHandler)]
    root.addHandler(handler)
    root.setLevel(logging.INFO)


class _HoldRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _held_log_records() -> Iterator[list[logging.LogRecord]]:
    """The records of the ``semires`` loggers, kept in a list instead of being written (while a
    run starts: its train.log is made only once the start succeeded)."""
    logger = logging.getLogger("semires")
    hold = _HoldRecords()
    saved = (logger.handlers, logger.level, logger.propagate)
    logger.handlers, logger.propagate = [hold], False
    logger.setLevel(logging.INFO)
    try:
        yield hold.records
    finally:
        logger.handlers, level, logger.propagate = saved
        logger.setLevel(level)


def split_batch(batch: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    """A collated batch cut into ``parts`` micro-batches along the first dimension (tensors and
    lists alike); ``parts=1`` returns the batch itself."""
    if parts == 1:
        return [batch]
    size = len(batch["sentence"])
    if size % parts:
        raise ValueError(f"a batch of {size} does not split into {parts} micro-batches")
    step = size // parts
    return [{k: v[i * step : (i + 1) * step] for k, v in batch.items()} for i in range(parts)]


#: ModelConfig fields that decide what a set of weights computes (not where weights come from)
ARCHITECTURE_FIELDS = (
    "backbone",
    "backbone_kwargs",
    "img_size",
    "max_tokens",
    "truncation",
    "fusion_dim",
    "fusion_heads",
    "fusion_scale",
    "fusion_sentence",
    "fusion_coords",
    "decoder_dim",
    "align_corners",
    "num_classes",
)


#: backbone_kwargs that only regularise training (not what the weights compute)
_TRAINING_ONLY_KWARGS = ("drop_path_rate", "drop_rate", "attn_drop_rate", "proj_drop_rate")


def architecture_differences(a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """(field, a's value, b's value) for each architecture field two ModelConfigs disagree on
    (a single fusion head count equals the same count given per stage; dropout rates are not
    architecture)."""
    out = []
    for key in ARCHITECTURE_FIELDS:
        va, vb = getattr(a, key), getattr(b, key)
        if key == "fusion_heads":
            va, vb = a.stage_heads(), b.stage_heads()
        if key == "backbone_kwargs":
            va, vb = (
                {k: v for k, v in d.items() if k not in _TRAINING_ONLY_KWARGS} for d in (va, vb)
            )
        if va != vb:
            out.append((key, getattr(a, key), getattr(b, key)))
    return out


class Trainer:
    """One training run described by a :class:`~semires.train.config.Config`."""

    def __init__(self, cfg: Config, *, progress: bool = True) -> None:
        import torch.distributed as dist

        self.cfg = cfg
        self.progress = progress
        # a process group made by a caller (e.g. the `semires run` pipeline) outlives this run
        self._owns_group = not (dist.is_available() and dist.is_initialized())
        self.info, self.device = init_distributed(cfg.train.device)
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.run_dir = Path(cfg.output.dir)
        # One run per folder: rank 0 holds the folder's lock until fit() ends. Nothing is
        # written into the folder before every input has been read and checked (the log of the
        # start is held meanwhile), so a failed start leaves it as it was: no config.yaml, no
        # empty train.log, and no folder at all where there was none.
        created: list[Path] = []
        self._lock = None
        if self.info.is_main:
            created = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
            self._lock = folder_lock(self.run_dir).acquire()
        try:
            with _held_log_records() as held:
                self._start(cfg)
        except BaseException:
            self._release_lock()
            for folder in created:  # deepest first; only folders this start made, if empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        if self.info.is_main:
            import yaml

            atomic_write_text(
                self.run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False)
            )
        barrier(self.info)
        _setup_logging(self.run_dir, self.info.is_main)
        for record in held:
            logging.getLogger("semires").handle(record)

    def _release_lock(self) -> None:
        if getattr(self, "_lock", None) is not None:
            self._lock.release()

    def _start(self, cfg: Config) -> None:
        """Read the data, build the model(s), open the proposals, resume: every check of the
        inputs, before anything is written into the run folder."""
        from semires.data import load_index
        from semires.model import build_model

        # ---------------------------------------------------------------- data
        self.index = load_index(cfg.data.spec())
        self.labeled_refs, self.unlabeled_refs = self._split_refs()
        if not self.labeled_refs:
            raise DataError(
                f"no labeled refs in split {cfg.data.train_split!r} of {cfg.data.spec().describe()}"
            )
        size = cfg.data.img_size
        aug = cfg.semi.augment
        jitter = {
            "p": aug.jitter_p,
            "brightness": aug.brightness,
            "contrast": aug.contrast,
            "saturation": aug.saturation,
            "hue": aug.hue,
        }
        self.labeled_ds = LabeledDataset(
            self.index,
            self.labeled_refs,
            size,
            cfg.seed,
            cache_images=cfg.data.cache_images,
            augment=cfg.data.labeled_augment,
            jitter=jitter,
        )
        self.unlabeled_ds: UnlabeledDataset | None = None
        self.proposals = None
        if cfg.semi.enabled:
            if not self.unlabeled_refs:
                raise DataError(
                    "the teacher-student stage needs unlabeled refs; data.split_dir gives none"
                )
            if cfg.semi.proposals:
                self.proposals = self._open_proposals()
            self.unlabeled_ds = UnlabeledDataset(
                self.index,
                self.unlabeled_refs,
                size,
                cfg.seed,
                proposals=self.proposals,
                max_candidates=cfg.semi.max_candidates,
                blur={"p": aug.blur_p, "sigma": aug.blur_sigma},
                jitter=jitter,
                cache_images=cfg.data.cache_images,
            )

        # ---------------------------------------------------------------- model
        torch.manual_seed(cfg.seed)
        overrides = dict(cfg.model.overrides)
        if cfg.semi.enabled:  # every weight comes from the burn-in: no backbone file needed
            overrides["backbone_weights"] = None
        self.model = build_model(cfg.model.name, **overrides).to(self.device)
        self.model.text_eval = not cfg.train.text_dropout
        if cfg.train.sync_bn:
            self._sync_batchnorm()
        self.teacher: nn.Module | None = None
        self.ema: EMATeacher | None = None
        if cfg.semi.enabled:
            if not cfg.semi.burn_in:
                raise SemiresError(
                    "config key 'semi.burn_in': the teacher-student stage needs a burn-in checkpoint"
                )
            self._load_burn_in(cfg.semi.burn_in)
            self.teacher = copy.deepcopy(self.model)
            self.ema = EMATeacher(self.teacher, self.model, cfg.semi.ema)
        self.ddp_model: nn.Module = self.model
        if self.info.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = build_optimizer(
            self.model, cfg.train.lr, cfg.train.weight_decay, cfg.train.decay_rule
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self._amp() == "fp16")
        self.class_weights = torch.tensor(
            cfg.train.class_weights, device=self.device, dtype=torch.float32
        )
        self.text = TextInputs(self.model, self.device)
        self.teacher_text = (
            TextInputs(self.teacher, self.device) if self.teacher is not None else None
        )
        if self.teacher_text is not None and self.text.cached:
            self.teacher_text = (
                self.text
            )  # a frozen text encoder is the same in teacher and student

        self._prepare_text()

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
        if cfg.output.resume and (self.run_dir / "latest.pt").is_file():
            self._resume(self.run_dir / "latest.pt")

    # ------------------------------------------------------------------ set-up helpers
    def _amp(self) -> str:
        amp = self.cfg.train.amp
        if amp == "auto":
            return "bf16" if self.device.type == "cuda" else "none"
        return amp

    def _split_refs(self) -> tuple[list, list]:
        from semires.data.splits import read_split

        train = self.index.refs_in(self.cfg.data.train_split)
        if not self.cfg.data.split_dir:
            return train, []
        split = read_split(self.cfg.data.split_dir, self.index)
        lab = set(split.labeled_images)
        unl = set(split.unlabeled_images)
        return [r for r in train if r.image_id in lab], [r for r in train if r.image_id in unl]

    def _open_proposals(self) -> Any:
        """The proposal store, checked against the unlabeled images (ids, sizes, file content)."""
        from semires.errors import ProposalError
        from semires.proposals.store import ProposalStore

        path = self.cfg.semi.proposals
        store = ProposalStore.open(path)
        wanted = sorted({r.image_id for r in self.unlabeled_refs})
        missing = [i for i in wanted if not store.has(i)]
        if missing:
            raise ProposalError(
                f"proposal store {path} has no entry for {len(missing)} of the {len(wanted)} "
                f"unlabeled images (e.g. {missing[:5]}): it was made for other images; "
                f"regenerate it with `semires propose ... --out {path}`"
            )
        if self.cfg.semi.allow_proposal_mismatch:
            return store
        for image_id in wanted:
            stored, actual = store.image_size(image_id), self.index.image_size(image_id)
            if tuple(stored) != tuple(actual):
                raise ProposalError(
                    f"proposal store {path}: image {image_id} is {actual[0]}x{actual[1]} but its "
                    f"candidates were made for {stored[0]}x{stored[1]}; regenerate the store "
                    "(or set semi.allow_proposal_mismatch=true to resize them)"
                )
        paths = {i: self.index.image_path(i) for i in wanted}
        stale = store.stale_images(paths, progress=self.progress and self.info.is_main)
        if stale:
            raise ProposalError(
                f"proposal store {path}: the candidates of {len(stale)} of the {len(wanted)} "
                f"unlabeled images were made from other image files (e.g. image {stale[0]}, now "
                f"{paths[stale[0]]}): the store belongs to other images with the same ids; "
                f"regenerate it with `semires propose ... --overwrite --out {path}` (or set "
                "semi.allow_proposal_mismatch=true to use it anyway)"
            )
        return store

    def _prepare_text(self) -> None:
        """Encode every sentence of the run once when the text encoder is frozen."""
        if not self.text.cached:
            return
        splits = {self.cfg.data.val_split, *self.cfg.data.test_splits}
        sentences = {s.raw for r in [*self.labeled_refs, *self.unlabeled_refs] for s in r.sentences}
        sentences |= {
            s.raw
            for split in splits
            if split in self.index.splits()
            for _, s in self.index.sentences(split)
        }
        path = self.cfg.train.text_cache
        if path and self.info.is_main:
            self.text.load(path)
            if self.text.precompute(sentences, progress=self.progress):
                self.text.save(path)
        barrier(self.info)
        if path and not self.info.is_main:
            self.text.load(path)
        self.text.precompute(sentences, progress=self.progress and self.info.is_main)

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
        from semires.model.config import ModelConfig

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
    def tb(self) -> Any:
        if self._tb is None and self.info.is_main and self.cfg.output.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step or None)
        return self._tb

    # ------------------------------------------------------------------ checkpoints
    def _payload(self, full: bool) -> dict[str, Any]:
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
        embedded = getattr(self.model, "embedded_tokenizer", None)
        if embedded is not None:
            payload["tokenizer"] = embedded
        if not full and self.teacher is not None:
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
            ckpt_io.save_checkpoint(self.run_dir / "latest.pt", payload)
        barrier(self.info)

    def _resume(self, path: Path) -> None:
        ck = ckpt_io.load_checkpoint(path, map_location=self.device)
        ckpt_io.load_model_state(self.model, ck["model"], path, ck.get("text_from_source", False))
        if self.teacher is not None:
            if "teacher" not in ck:
                raise CheckpointError(
                    f"{path} has no teacher state but this run is a teacher-student run"
                )
            ckpt_io.load_model_state(
                self.teacher, ck["teacher"], path, ck.get("text_from_source", False)
            )
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
            log.info(
                "resumed from %s at step %d (epoch %d)",
                path,
                self.step,
                self.step // self.steps_per_epoch,
            )

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
        return normalize(
            images.to(self.device, non_blocking=True), self.model.image_mean, self.model.image_std
        )

    def _text_kwargs(self, text: TextInputs, sentences: list[str]) -> dict[str, Any]:
        return text(sentences)

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return weighted_ce(logits, target, self.class_weights, self.cfg.train.ce_mean)

    def _unsup_loss(self, logits: torch.Tensor, result: Any) -> torch.Tensor:
        """L_unsup (docs/method.md section 3): refined samples by CE, unmatched ones by PWA-weighted CE;
        the two parts are averaged when a batch has both."""
        strategy = self.cfg.semi.refine.strategy
        labels = result.labels
        if strategy == "none":
            return self._ce(logits, labels)
        if strategy == "confidence":
            return masked_ce(logits, labels, result.weights > 0, self.class_weights)
        parts = []
        matched = result.matched
        if matched.any():
            parts.append(self._ce(logits[matched], labels[matched]))
        if (~matched).any():
            rest = ~matched
            if self.cfg.semi.refine.pwa:
                weights = self.class_weights if self.cfg.semi.pwa_class_weights else None
                parts.append(
                    pixel_weighted_ce(logits[rest], labels[rest], result.weights[rest], weights)
                )
            else:
                parts.append(self._ce(logits[rest], labels[rest]))
        return torch.stack(parts).mean()

    def _micro_loss(
        self, lab: dict[str, Any], unl: dict[str, Any] | None, stats: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one (micro-)batch and its parts."""
        cfg = self.cfg
        parts: dict[str, float] = {}
        x_l = self._norm(lab["image"])
        y_l = lab["mask"].to(self.device)
        with _autocast(self.device, cfg.train.amp):
            if unl is None:
                logits = self.ddp_model(x_l, **self._text_kwargs(self.text, lab["sentence"]))
                loss_sup = self._ce(logits, y_l)
                loss = loss_sup
            else:
                result = self._pseudo_labels(unl, stats)
                x_s = self._norm(unl["strong"])
                sentences = list(lab["sentence"]) + list(unl["sentence"])
                logits = self.ddp_model(
                    torch.cat([x_l, x_s]), **self._text_kwargs(self.text, sentences)
                )
                b = x_l.shape[0]
                loss_sup = self._ce(logits[:b], y_l)
                loss_unsup = self._unsup_loss(logits[b:], result)
                loss = cfg.semi.sup_weight * loss_sup + cfg.semi.unsup_weight * loss_unsup
                parts["loss_unsup"] = float(loss_unsup.detach())
        parts["loss_sup"] = float(loss_sup.detach())
        parts["loss"] = float(loss.detach())
        if not math.isfinite(parts["loss"]):
            raise TrainingError(
                f"non-finite loss ({parts['loss']}) at step {self.step}; the last good checkpoint "
                f"{self.run_dir / 'latest.pt'} is intact (try a lower train.lr or train.amp=none)"
            )
        return loss, parts

    def train_step(
        self, lab: dict[str, Any], unl: dict[str, Any] | None, stats: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        """One optimizer step over ``train.grad_accum`` micro-batches; returns scalar logs."""
        cfg = self.cfg
        lr = set_lr(
            self.optimizer,
            cfg.train.lr,
            poly_factor(self.step, self.total_steps, cfg.train.poly_power, cfg.train.warmup_steps),
        )
        self.ddp_model.train()
        logs: dict[str, float] = {"lr": lr}
        n = cfg.train.grad_accum
        labs = split_batch(lab, n)
        unls = split_batch(unl, n) if unl is not None else [None] * n
        self.optimizer.zero_grad(set_to_none=True)
        for i, (part_l, part_u) in enumerate(zip(labs, unls, strict=True)):
            last = i == n - 1
            # under DDP only the last micro-batch all-reduces the gradients
            sync = (
                self.ddp_model.no_sync()
                if self.info.enabled and not last
                else contextlib.nullcontext()
            )
            with sync:
                loss, parts = self._micro_loss(part_l, part_u, stats)
                self.scaler.scale(loss / n if n > 1 else loss).backward()
            for k, v in parts.items():
                logs[k] = logs.get(k, 0.0) + v / n
        if cfg.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            logs["grad_norm"] = float(
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        return logs

    @torch.no_grad()
    def _teacher_view(self, unl: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The teacher's foreground probability on the weak view [B, H, W] and the batch's
        candidate masks [B, K, H, W] with their validity [B, K] (K = 0 without a store)."""
        assert self.teacher is not None and self.teacher_text is not None
        x_w = self._norm(unl["weak"])
        with _autocast(self.device, self.cfg.train.amp):
            t_logits = self.teacher(x_w, **self._text_kwargs(self.teacher_text, unl["sentence"]))
        prob = t_logits.float().softmax(dim=1)[:, 1]
        cands = unl.get("candidates")
        if cands is None:
            cands = torch.zeros((prob.shape[0], 0, *prob.shape[-2:]), dtype=torch.bool)
            valid = torch.zeros((prob.shape[0], 0), dtype=torch.bool)
        else:
            valid = unl["candidates_valid"]
        return prob, cands.to(self.device), valid.to(self.device)

    def teacher_batches(self, steps: int) -> Iterator[dict[str, Any]]:
        """What the teacher sees in the first ``steps`` unlabeled batches of the stage, for
        studying refinement offline (``bench/bench_refine_teacher.py``); nothing is trained.

        Per batch: ``prob`` (teacher foreground probability on the weak view, [B, H, W]; the
        pseudo-label is ``prob > 0.5``), ``candidates`` ([B, K, H, W] bool) and ``valid``
        ([B, K]) as refinement gets them, ``gt`` ([B, H, W] bool, or None where the unlabeled
        images have no masks) and ``sentence``. Needs ``semi.enabled``."""
        if self.unlabeled_ds is None or self.teacher is None:
            raise SemiresError("teacher_batches needs a teacher-student config (semi.enabled)")
        loader = self._loader(
            self.unlabeled_ds, self.cfg.semi.unlabeled_batch_size, UNLABELED, 0, steps
        )
        for unl in loader:
            prob, cands, valid = self._teacher_view(unl)
            gt = unl.get("gt_mask")
            yield {
                "prob": prob,
                "candidates": cands,
                "valid": valid,
                "gt": None if gt is None else gt.to(self.device).bool(),
                "sentence": list(unl["sentence"]),
            }

    @torch.no_grad()
    def _pseudo_labels(self, unl: dict[str, Any], stats: dict[str, torch.Tensor]) -> Any:
        from semires.train.refine import correction_stats, refine

        prob, cands, valid = self._teacher_view(unl)
        pseudo = prob > 0.5
        result = refine(pseudo, prob, cands, valid, self.cfg.semi.refine)
        b = float(pseudo.shape[0])
        stats["samples"] += b
        stats["matched"] += float(result.matched.sum())
        stats["no_candidates"] += float((~valid.any(dim=1)).sum())
        for key in ("matched_iom", "matched_cpi_u", "matched_cpi_o"):
            stats[key] += float(result.counts[key])
        if "gt_mask" in unl:
            cs = correction_stats(pseudo, result.labels, unl["gt_mask"].to(self.device))
            for key in ("iou_before", "iou_after"):
                stats[key] += float(cs[key].sum())
            for key in ("positive", "negative", "no_change"):
                stats[key] += float(cs[key])
            stats["with_gt"] += b
        return result

    # ------------------------------------------------------------------ epochs
    def _new_stats(self) -> dict[str, torch.Tensor]:
        keys = (
            "matched_iom",
            "matched_cpi_u",
            "matched_cpi_o",
            "samples",
            "matched",
            "no_candidates",
            "iou_before",
            "iou_after",
            "positive",
            "negative",
            "no_change",
            "with_gt",
        )
        return {k: torch.zeros((), dtype=torch.float64) for k in keys}

    def train_epoch(self) -> dict[str, Any]:
        """Train until the end of the current epoch; returns the epoch's training record."""
        cfg = self.cfg
        epoch = self.step // self.steps_per_epoch
        start, stop = self.step, (epoch + 1) * self.steps_per_epoch
        accum = cfg.train.grad_accum
        lab_loader = self._loader(
            self.labeled_ds, cfg.train.batch_size * accum, LABELED, start, stop
        )
        loaders: Any = lab_loader
        if self.unlabeled_ds is not None:
            unl_loader = self._loader(
                self.unlabeled_ds, cfg.semi.unlabeled_batch_size * accum, UNLABELED, start, stop
            )
            loaders = zip(lab_loader, unl_loader, strict=True)
        stats = self._new_stats()
        sums: dict[str, float] = {}
        n_steps = 0
        images = 0
        t0 = time.perf_counter()
        bar = None
        if self.progress and self.info.is_main:
            from tqdm import tqdm

            bar = tqdm(
                total=stop - start,
                desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                unit="step",
                leave=False,
            )
        for batch in loaders:
            lab, unl = batch if self.unlabeled_ds is not None else (batch, None)
            logs = self.train_step(lab, unl, stats)
            n_steps += 1
            images += len(lab["sentence"]) + (len(unl["sentence"]) if unl is not None else 0)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            speed = images * self.info.world / max(time.perf_counter() - t0, 1e-9)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", img_s=f"{speed:.1f}")
            if self.tb is not None and self.step % cfg.train.log_every == 0:
                for k, v in logs.items():
                    self.tb.add_scalar(f"train/{k}", v, self.step)
                self.tb.add_scalar("train/images_per_s", speed, self.step)
            if (
                cfg.train.checkpoint_every
                and self.step % cfg.train.checkpoint_every == 0
                and self.step < stop
            ):
                self.save_latest()
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": epoch + 1, "step": self.step, "seconds": elapsed}
        record.update({k: v / max(n_steps, 1) for k, v in sums.items()})
        record["images_per_s"] = images * self.info.world / max(elapsed, 1e-9)
        if self.unlabeled_ds is not None:
            record.update(self._semi_record(stats))
        return record

    def _semi_record(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        keys = sorted(stats)
        vec = torch.stack([stats[k] for k in keys]).to(self.device)
        vec = all_reduce_sum(vec, self.info).cpu()
        s = dict(zip(keys, vec.tolist(), strict=True))
        n = max(s["samples"], 1.0)
        out = {
            "miss_rate": 1.0 - s["matched"] / n,
            "no_candidates_rate": s["no_candidates"] / n,
        }
        for k in ("matched_iom", "matched_cpi_u", "matched_cpi_o"):
            out[f"share_{k}"] = s[k] / n
        if s["with_gt"] > 0:
            g = s["with_gt"]
            out["pl_iou_before"] = s["iou_before"] / g
            out["pl_iou_after"] = s["iou_after"] / g
            out["corrections_positive"] = s["positive"] / g
            out["corrections_negative"] = s["negative"] / g
            out["corrections_no_change"] = s["no_change"] / g
        return out

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
        text = self.teacher_text if model is self.teacher else self.text
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

    def fit(self) -> dict[str, Any]:
        """Train all epochs (resuming where ``latest.pt`` stopped), then evaluate ``best``."""
        cfg = self.cfg
        try:
            while self.step < self.total_steps:
                record = self.train_epoch()
                epoch = record["epoch"]
                if not cfg.train.skip_eval and (
                    epoch % cfg.train.eval_every == 0 or self.step >= self.total_steps
                ):
                    result = self.evaluate(
                        cfg.data.val_split, max_sentences=cfg.data.max_val_sentences
                    )
                    m = result["metrics"]
                    record[f"{cfg.data.val_split}_oIoU"] = m["oIoU"]
                    record[f"{cfg.data.val_split}_mIoU"] = m["mIoU"]
                    self._log_eval(cfg.data.val_split, result)
                    score = m[cfg.train.select_metric]
                    if self.best is None or score > self.best["score"]:
                        self.best = {
                            "score": score,
                            "metric": cfg.train.select_metric,
                            "epoch": epoch,
                            "step": self.step,
                        }
                        if self.info.is_main:
                            ckpt_io.save_checkpoint(
                                self.run_dir / "best.pt", self._payload(full=False)
                            )
                self.history.append(record)
                self._log_record(record)
                self.save_latest()
            if (
                self.best is None and self.info.is_main
            ):  # evaluation skipped: the last weights are best
                self.best = {
                    "score": None,
                    "metric": None,
                    "epoch": cfg.train.epochs,
                    "step": self.step,
                }
                ckpt_io.save_checkpoint(self.run_dir / "best.pt", self._payload(full=False))
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
        atomic_write_json(self.run_dir / "history.json", self.history)

    def final_evaluation(self) -> dict[str, Any]:
        """Load ``best.pt`` and evaluate the val split (unless ``train.final_val`` is off) and
        every test split; write metrics.json.

        In a teacher-student run the other network of the selected step (``companion`` in
        ``best.pt``) is scored on the same splits: ``metrics.json`` holds ``eval_model`` (the
        network of ``splits``, the headline) and ``companion`` ``{"model", "splits"}``.
        """
        best = ckpt_io.load_checkpoint(self.run_dir / "best.pt", map_location=self.device)
        source = self.run_dir / "best.pt"
        from_source = best.get("text_from_source", False)
        ckpt_io.load_model_state(self.eval_net, best["model"], source, from_source)
        out: dict[str, Any] = {
            "best": self.best,
            "eval_model": self._role(self.eval_net),
            "splits": self._final_splits(self.eval_net),
        }
        companion = best.get("companion")
        if companion is not None and self.teacher is not None:
            other = self.model if self.eval_net is self.teacher else self.teacher
            ckpt_io.load_model_state(other, companion["model"], source, from_source)
            out["companion"] = {"model": self._role(other), "splits": self._final_splits(other)}
        if self.info.is_main:
            atomic_write_json(self.run_dir / "metrics.json", out)
        return out

    def _final_splits(self, net: nn.Module) -> dict[str, Any]:
        """Metrics of ``net`` on the final splits (and all test splits together)."""
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
        return score_splits(run, splits, cfg.data.test_splits, cfg.train.protocol)


def train(cfg: Config, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg``; returns the final metrics."""
    return Trainer(cfg, progress=progress).fit()

"""The teacher-student method (the paper's mutual-learning training, docs/method.md section 3).

:class:`TeacherStudent` is supervised training plus an unlabeled stream: an EMA teacher labels
the weak view of each unlabeled sample (:class:`~semires.train.pseudo.PseudoLabeler`: teacher
probability -> pseudo-label -> the refinement strategy's labels), the student learns them on the
strong view with the strategy's loss, and the teacher follows the student after every optimizer
step. The whole loss of a step, readable in one sitting (:meth:`TeacherStudent.loss`)::

    labels = pseudo_labeler(unlabeled)                    # teacher, weak view, strategy labels
    keep = top share q(t) of labels.signals[signal]       # semi.select (default: every sample)
    logits = student([labeled images, strong views])      # one forward pass
                       # (semi.flip_student: some views mirrored with sentence and label)
    L = w_sup * CE(logits_labeled, gt)
        + lambda * strategy.loss(logits_unlabeled[keep], labels[keep])

:class:`RefineStats` counts, per epoch, how refinement went (miss rate, each strategy's
counters, the kept share, and against the unlabeled images' ground truth where it exists: IoU
before / after, corrections, grounding, each signal's precision), written to ``history.json``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from semires.data.dataset import UNLABELED, UnlabeledDataset
from semires.data.flip import flip_image, flip_sentence
from semires.data.index import Ref, RESIndex
from semires.errors import CheckpointError, DataError, SemiresError
from semires.runtime import checkpoint as ckpt_io
from semires.runtime.distributed import DistInfo, all_reduce_sum
from semires.runtime.textcache import TextInputs
from semires.train.ema import EMATeacher
from semires.train.losses import PixelLosses
from semires.train.method import TRAINING_METHODS, Forward, Method, Stream, flipped_sentences
from semires.train.objects import keep_top, kept_share
from semires.train.pseudo import SIGNALS, PseudoLabeler, PseudoLabels, needs_referents
from semires.train.refine import RefineResult, correction_stats
from semires.train.strategies import counter_names

#: the keys of :meth:`RefineStats.report` a report or a progress line shows, in that order
#: (then ``share_<counter>`` of every registered strategy's counters, :func:`reported_keys`)
QUALITY_KEYS = (
    "pl_iou_before",
    "pl_iou_after",
    "grounding_before",
    "grounding_after",
    "miss_rate",
    "corrections_positive",
    "corrections_negative",
    "corrections_no_change",
    "kept_share",
    "grounding_kept",
    *(f"precision_{signal}" for signal in SIGNALS),
)


def reported_keys() -> tuple[str, ...]:
    """The refinement statistics a report shows: :data:`QUALITY_KEYS` and each counter's
    share."""
    return (*QUALITY_KEYS, *(f"share_{c}" for c in counter_names()))


def _object_keys() -> tuple[str, ...]:
    keys = ["kept", "kept_grounded", "exclusive_removed"]
    for signal in SIGNALS:
        keys += [f"top_{signal}", f"top_{signal}_grounded"]
    return tuple(keys)


@dataclass
class RefineStats:
    """Sums over the unlabeled samples of an epoch; :meth:`add` a batch, :meth:`all_reduced`
    over processes, :meth:`report` the rates (the ``history.json`` record of the epoch).

    ``counters`` holds every registered strategy's counters (0 where the run's strategy keeps
    none), so every run's record has the same keys; ``objects`` the object-level sums (the
    samples the selection kept, how many of them are grounded, and for every signal how many
    of the top half of each batch by that signal are). The ground-truth part counts only where
    the unlabeled images have masks; it is never used for training.
    """

    samples: float = 0.0
    matched: float = 0.0
    no_candidates: float = 0.0
    with_gt: float = 0.0
    iou_before: float = 0.0
    iou_after: float = 0.0
    positive: float = 0.0
    negative: float = 0.0
    no_change: float = 0.0
    grounded_before: float = 0.0
    grounded_after: float = 0.0
    counters: dict[str, float] = field(default_factory=lambda: dict.fromkeys(counter_names(), 0.0))
    objects: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_object_keys(), 0.0))

    #: a pseudo-label "finds" its object when its IoU with the object's mask reaches this
    GROUNDED_IOU = 0.5

    def add(self, labels: PseudoLabels, gt: Tensor | None, keep: Tensor | None = None) -> None:
        """Count one batch's labels against the ground truth (or None); ``keep``: the samples
        the selection kept (None: all)."""
        result, pseudo = labels.result, labels.pseudo
        b = float(pseudo.shape[0])
        self.samples += b
        self.matched += float(result.matched.sum())
        self.no_candidates += float((~labels.valid.any(dim=1)).sum())
        for key, value in result.counts.items():
            self.counters[key] = self.counters.get(key, 0.0) + float(value)
        keep = torch.ones_like(result.matched) if keep is None else keep
        self.objects["kept"] += float(keep.sum())
        if labels.kept is not None:
            self.objects["exclusive_removed"] += float((labels.kept != labels.valid).any(1).sum())
        if gt is None:
            return
        cs = correction_stats(pseudo, result.labels, gt)
        grounded = cs["iou_after"] >= self.GROUNDED_IOU
        self.iou_before += float(cs["iou_before"].sum())
        self.iou_after += float(cs["iou_after"].sum())
        self.positive += float(cs["positive"])
        self.negative += float(cs["negative"])
        self.no_change += float(cs["no_change"])
        self.grounded_before += float((cs["iou_before"] >= self.GROUNDED_IOU).sum())
        self.grounded_after += float(grounded.sum())
        self.with_gt += b
        self.objects["kept_grounded"] += float((grounded & keep.to(grounded.device)).sum())
        for signal, values in labels.signals.items():
            top = keep_top(values, 0.5).to(grounded.device)
            self.objects[f"top_{signal}"] += float(top.sum())
            self.objects[f"top_{signal}_grounded"] += float((grounded & top).sum())

    def all_reduced(self, info: DistInfo, device: torch.device) -> RefineStats:
        """The sums over every process (one float64 all-reduce)."""
        names = [f.name for f in fields(self) if f.type == "float"]
        tables = {"counters": list(self.counters), "objects": list(self.objects)}
        values = [getattr(self, n) for n in names]
        for table, keys in tables.items():
            values += [getattr(self, table)[k] for k in keys]
        vec = all_reduce_sum(torch.tensor(values, dtype=torch.float64, device=device), info)
        vec = vec.cpu().tolist()
        out = RefineStats(**dict(zip(names, vec[: len(names)], strict=True)))
        at = len(names)
        for table, keys in tables.items():
            setattr(out, table, dict(zip(keys, vec[at : at + len(keys)], strict=True)))
            at += len(keys)
        return out

    def report(self) -> dict[str, float]:
        """The epoch's rates: miss rate, candidate-less samples, each counter's share, the kept
        share, and with ground truth the pseudo-label IoU before / after refinement, the
        correction shares, the grounding rates (IoU >= 0.5 with the referred object), the
        grounding of the kept samples and each signal's precision (the grounding of the top half
        of each batch by that signal)."""
        n = max(self.samples, 1.0)
        obj = self.objects
        out = {
            "miss_rate": 1.0 - self.matched / n,
            "no_candidates_rate": self.no_candidates / n,
            "kept_share": obj["kept"] / n,
            "share_exclusive_removed": obj["exclusive_removed"] / n,
        }
        for key, value in self.counters.items():
            out[f"share_{key}"] = value / n
        if self.with_gt > 0:
            g = self.with_gt
            out["pl_iou_before"] = self.iou_before / g
            out["pl_iou_after"] = self.iou_after / g
            out["corrections_positive"] = self.positive / g
            out["corrections_negative"] = self.negative / g
            out["corrections_no_change"] = self.no_change / g
            out["grounding_before"] = self.grounded_before / g
            out["grounding_after"] = self.grounded_after / g
            out["grounding_kept"] = obj["kept_grounded"] / max(obj["kept"], 1.0)
            for signal in SIGNALS:
                if obj[f"top_{signal}"] > 0:
                    top = obj[f"top_{signal}"]
                    out[f"precision_{signal}"] = obj[f"top_{signal}_grounded"] / top
        return out


class TeacherStudent(Method):
    """Teacher-student training from a burn-in checkpoint (see the module docstring); its
    settings are the config's ``semi`` section."""

    #: the share of unlabeled samples the selection keeps at the current step (begin_step)
    share: float = 1.0

    # ------------------------------------------------------------------ set-up
    def build_data(self, index: RESIndex, labeled: list[Ref], unlabeled: list[Ref]) -> None:
        super().build_data(index, labeled, unlabeled)
        cfg, semi = self.cfg, self.cfg.semi
        if not unlabeled:
            raise DataError(
                "the teacher-student stage needs unlabeled refs; data.split_dir gives none"
            )
        self.proposals = self._open_proposals(index, unlabeled) if semi.proposals else None
        self.unlabeled_ds = UnlabeledDataset(
            index,
            unlabeled,
            cfg.data.img_size,
            cfg.seed,
            proposals=self.proposals,
            max_candidates=semi.max_candidates,
            blur=semi.augment.blur(),
            jitter=semi.augment.jitter(),
            cache_images=cfg.data.cache_images,
            referents=needs_referents(semi),
            flip_student=semi.flip_student,
        )

    def _open_proposals(self, index: RESIndex, unlabeled: list[Ref]) -> Any:
        """The proposal store, checked against the unlabeled images (ids, sizes, file content)."""
        from semires.proposals.store import ProposalStore

        semi = self.cfg.semi
        store = ProposalStore.open(semi.proposals)
        store.check_for_images(
            [r.image_id for r in unlabeled],
            index.image_size,
            index.image_path,
            sizes_and_files=not semi.allow_proposal_mismatch,
            progress=self.progress,
        )
        return store

    def model_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        # every weight comes from the burn-in: no backbone file needed
        return {**overrides, "backbone_weights": None}

    def init_model(self, model: nn.Module) -> None:
        """Start from the burn-in checkpoint; refuse one made for another architecture (knobs
        that do not change tensor shapes, e.g. fusion heads, would otherwise load silently)."""
        from semires.model.config import ModelConfig, architecture_differences

        path = self.cfg.semi.burn_in
        if not path:
            raise SemiresError(
                "config key 'semi.burn_in': the teacher-student stage needs a burn-in checkpoint"
            )
        ck = ckpt_io.load_checkpoint(path)
        if "model_config" in ck:
            theirs = ModelConfig.from_dict(ck["model_config"])
            diffs = architecture_differences(theirs, model.config)
            if diffs:
                shown = "; ".join(f"{k}: checkpoint {a!r}, run {b!r}" for k, a, b in diffs[:3])
                raise CheckpointError(
                    f"burn-in checkpoint {path} was made for another model ({shown}); set "
                    "model.overrides to match it"
                )
        ckpt_io.load_model_state(model, ck["model"], path, ck.get("text_from_source", False))

    def make_losses(self) -> PixelLosses:
        """The supervised losses, and PWA's class weights as ``semi.pwa_class_weights`` says."""
        losses = super().make_losses()
        losses.pwa_class_weights = self.cfg.semi.pwa_class_weights
        return losses

    def attach(self, model: nn.Module, text: TextInputs, losses: PixelLosses) -> None:
        super().attach(model, text, losses)
        semi = self.cfg.semi
        self.teacher = copy.deepcopy(model)
        self.ema = EMATeacher(self.teacher, model, semi.ema)
        teacher_text = text if text.cached else TextInputs(self.teacher, self.device)
        self.labeler = PseudoLabeler(
            self.teacher, semi, device=self.device, amp=self.cfg.train.amp, text=teacher_text
        )
        self.stats = RefineStats()

    def extra_sentences(self, sentences: set[str]) -> set[str]:
        semi = self.cfg.semi
        flips = self.cfg.data.flip > 0 or semi.flip_view or semi.flip_student > 0
        return flipped_sentences(sentences) if flips else set()

    # ------------------------------------------------------------------ the loop
    def begin_step(self, step: int, total: int) -> None:
        """The share of unlabeled samples kept at this step (``semi.select``)."""
        sel = self.cfg.semi.select
        self.share = kept_share(step, total, sel.start, sel.end, sel.ramp)

    def streams(self) -> list[Stream]:
        batch = self.cfg.semi.unlabeled_batch_size
        (labeled,) = super().streams()
        labeled.epoch = False
        return [labeled, Stream(self.unlabeled_ds, batch, UNLABELED, epoch=True)]

    def loss(self, batches: list[dict[str, Any]], forward: Forward) -> tuple[Tensor, dict]:
        """``w_sup L_sup + lambda L_unsup`` (docs/method.md section 3)."""
        lab, unl = batches
        semi = self.cfg.semi
        labels = self.labeler(unl)
        keep = self._selected(labels)
        gt = unl.get("gt")
        self.stats.add(labels, None if gt is None else gt.to(self.device), keep)
        strong, sentences, result = unl["strong"], list(unl["sentence"]), labels.result
        if "student_flip" in unl:  # semi.flip_student: the student's side mirrored
            strong, sentences, result = _mirrored(strong, sentences, result, unl["student_flip"])
        logits = forward(torch.cat([lab["image"], strong]), [*lab["sentence"], *sentences])
        b = lab["image"].shape[0]
        loss_sup = self.losses.ce(logits[:b], lab["gt"].to(self.device))
        student = logits[b:]
        if keep is not None:  # object-level selection: the kept samples only
            student, result = student[keep], result.subset(keep)
        loss_unsup = self.labeler.strategy.loss(student, result, self.losses)
        loss = semi.sup_weight * loss_sup + semi.unsup_weight * loss_unsup
        return loss, {
            "loss_unsup": float(loss_unsup.detach()),
            "loss_sup": float(loss_sup.detach()),
        }

    def _selected(self, labels: PseudoLabels) -> Tensor | None:
        """bool [B]: the samples the unsupervised loss keeps (None: all, ``semi.select``)."""
        signal = self.cfg.semi.select.signal
        if signal == "none":
            return None
        return keep_top(labels.signals[signal], self.share)

    def after_step(self) -> None:
        """One EMA step of the teacher."""
        self.ema.update()

    def epoch_record(self, info: Any) -> dict[str, float]:
        """The epoch's refinement rates over every process; the sums start again at 0."""
        record = self.stats.all_reduced(info, self.device).report()
        self.stats = RefineStats()
        return record

    # ------------------------------------------------------------------ networks
    def networks(self) -> dict[str, nn.Module]:
        return {"student": self.model, "teacher": self.teacher}

    @property
    def eval_role(self) -> str:
        return self.cfg.semi.eval_model

    def text_for(self, role: str) -> TextInputs:
        return self.labeler.text if role == "teacher" else self.text

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": ckpt_io.model_state(self.teacher)[0]}

    def load_state_dict(self, ck: dict[str, Any], path: Any, from_source: bool) -> None:
        if "teacher" not in ck:
            raise CheckpointError(
                f"{path} has no teacher state but this run is a teacher-student run"
            )
        ckpt_io.load_model_state(self.teacher, ck["teacher"], path, from_source)


def _mirrored(
    strong: Tensor, sentences: list[str], result: RefineResult, where: Tensor
) -> tuple[Tensor, list[str], RefineResult]:
    """The student's side of the samples where ``where`` [B] is True mirrored: the strong view,
    the expression (left / right swapped) and the strategy's labels and weights."""
    w = where.to(strong.device)
    strong = torch.where(w[:, None, None, None], flip_image(strong), strong)
    sentences = [flip_sentence(s) if f else s for s, f in zip(sentences, w.tolist(), strict=True)]
    return strong, sentences, result.mirrored(w)


TRAINING_METHODS.add("teacher_student", TeacherStudent, replace=True)

"""The teacher-student part of a run, as one collaborator of the training loop.

:class:`SemiSupervised` owns everything the stage adds to supervised training (docs/method.md
section 3): the EMA teacher and its update, the teacher's view of an unlabeled batch, the
refinement strategy (:mod:`semires.train.strategies`), the unsupervised loss, and the typed
refinement statistics (:class:`RefineStats`). The loop in :mod:`semires.train.engine` only calls
:meth:`~SemiSupervised.pseudo_labels` before the student's forward pass,
:meth:`~SemiSupervised.loss` after it, and :meth:`~SemiSupervised.update_teacher` after the
optimizer step.

The path of one unlabeled sample: :class:`~semires.data.dataset.UnlabeledDataset` gives its weak
view (blur), strong view (colour jitter, pixel-aligned), sentence, all expressions of its object
and its candidate masks -> :meth:`SemiSupervised.teacher_view`: teacher probability p on the weak
view (with ``semi.consensus``: the mean over the object's expressions) -> pseudo-label
P = p > 0.5 -> the strategy's labels (refined label, per-pixel weights, matched or not) ->
the student's logits on the strong view -> the strategy's loss -> ``w_sup L_sup + lambda L_unsup``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from semires.data.transforms import normalize
from semires.runtime.distributed import DistInfo, all_reduce_sum
from semires.runtime.precision import autocast
from semires.runtime.textcache import TextInputs
from semires.train.ema import EMATeacher
from semires.train.refine import Masks, RefineResult, correction_stats, expression_consensus
from semires.train.strategies import PixelLosses, make_strategy


@dataclass
class RefineStats:
    """Sums over the unlabeled samples of an epoch; :meth:`add` a batch, :meth:`all_reduced`
    over processes, :meth:`report` the rates (the ``history.json`` record of the epoch).

    The ground-truth part counts only where the unlabeled images have masks (the synthetic
    benchmark, real data used as unlabeled); it is never used for training.
    """

    samples: float = 0.0
    matched: float = 0.0
    no_candidates: float = 0.0
    matched_iom: float = 0.0
    matched_cpi_u: float = 0.0
    matched_cpi_o: float = 0.0
    with_gt: float = 0.0
    iou_before: float = 0.0
    iou_after: float = 0.0
    positive: float = 0.0
    negative: float = 0.0
    no_change: float = 0.0
    grounded_before: float = 0.0
    grounded_after: float = 0.0

    #: a pseudo-label "finds" its object when its IoU with the object's mask reaches this
    GROUNDED_IOU = 0.5

    def add(self, result: RefineResult, valid: Tensor, pseudo: Tensor, gt: Tensor | None) -> None:
        """Count one batch: its refinement result, candidate validity, the pseudo-labels before
        refinement and the ground truth (or None)."""
        b = float(pseudo.shape[0])
        self.samples += b
        self.matched += float(result.matched.sum())
        self.no_candidates += float((~valid.any(dim=1)).sum())
        for key in ("matched_iom", "matched_cpi_u", "matched_cpi_o"):
            setattr(self, key, getattr(self, key) + float(result.counts[key]))
        if gt is None:
            return
        cs = correction_stats(pseudo, result.labels, gt)
        self.iou_before += float(cs["iou_before"].sum())
        self.iou_after += float(cs["iou_after"].sum())
        self.positive += float(cs["positive"])
        self.negative += float(cs["negative"])
        self.no_change += float(cs["no_change"])
        self.grounded_before += float((cs["iou_before"] >= self.GROUNDED_IOU).sum())
        self.grounded_after += float((cs["iou_after"] >= self.GROUNDED_IOU).sum())
        self.with_gt += b

    def all_reduced(self, info: DistInfo, device: torch.device) -> RefineStats:
        """The sums over every process (one float64 all-reduce)."""
        names = sorted(f.name for f in fields(self))
        vec = torch.tensor([getattr(self, n) for n in names], dtype=torch.float64, device=device)
        vec = all_reduce_sum(vec, info).cpu()
        return RefineStats(**dict(zip(names, vec.tolist(), strict=True)))

    def report(self) -> dict[str, float]:
        """The epoch's rates: miss rate, candidate-less samples, each rule's share, and with
        ground truth the pseudo-label IoU before / after refinement, the correction shares and
        the grounding rates (IoU >= 0.5 with the referred object)."""
        n = max(self.samples, 1.0)
        out = {
            "miss_rate": 1.0 - self.matched / n,
            "no_candidates_rate": self.no_candidates / n,
        }
        for key in ("matched_iom", "matched_cpi_u", "matched_cpi_o"):
            out[f"share_{key}"] = getattr(self, key) / n
        if self.with_gt > 0:
            g = self.with_gt
            out["pl_iou_before"] = self.iou_before / g
            out["pl_iou_after"] = self.iou_after / g
            out["corrections_positive"] = self.positive / g
            out["corrections_negative"] = self.negative / g
            out["corrections_no_change"] = self.no_change / g
            out["grounding_before"] = self.grounded_before / g
            out["grounding_after"] = self.grounded_after / g
        return out


#: the keys of :meth:`RefineStats.report` a report or a progress line shows, in that order
REPORTED = (
    "pl_iou_before",
    "pl_iou_after",
    "grounding_before",
    "grounding_after",
    "miss_rate",
    "corrections_positive",
    "corrections_negative",
    "corrections_no_change",
    "share_matched_iom",
    "share_matched_cpi_u",
    "share_matched_cpi_o",
)


class TeacherView(NamedTuple):
    """What refinement gets of an unlabeled batch."""

    prob: Tensor  # [B, H, W] teacher foreground probability on the weak view
    #: [B, K, H, W] candidates, bit-packed from the loader (K = 0 without a proposal store)
    candidates: Masks
    valid: Tensor  # [B, K] bool


class SemiSupervised:
    """The teacher-student stage: teacher + EMA, the teacher's view, refinement, the
    unsupervised loss and its statistics (see the module docstring).

    ``student`` is the trained model (already holding the burn-in weights); the teacher starts as
    its copy. ``text`` gives the student's text inputs; a frozen text encoder is shared.
    """

    def __init__(
        self,
        *,
        cfg: Any,
        student: nn.Module,
        text: TextInputs,
        losses: PixelLosses,
        device: torch.device,
        amp: str,
    ) -> None:
        self.cfg = cfg
        self.device, self.amp = device, amp
        self.losses = losses
        self.teacher = copy.deepcopy(student)
        self.ema = EMATeacher(self.teacher, student, cfg.ema)
        self.text = text if text.cached else TextInputs(self.teacher, device)
        self.strategy = make_strategy(cfg.refine)
        self.stats = RefineStats()

    @torch.no_grad()
    def teacher_view(self, unl: dict[str, Any]) -> TeacherView:
        """The teacher's probability on the weak views (with ``consensus``: averaged over each
        object's expressions) and the batch's candidates."""
        images = unl["weak"].to(self.device, non_blocking=True)
        if self.cfg.consensus:
            groups = unl["expressions"]
            owner = torch.tensor([b for b, g in enumerate(groups) for _ in g], device=self.device)
            sentences = [s for g in groups for s in g]
            images = images.index_select(0, owner)
        else:
            sentences = list(unl["sentence"])
        x = normalize(images, self.teacher.image_mean, self.teacher.image_std)
        with autocast(self.device, self.amp):
            logits = self.teacher(x, **self.text(sentences))
        prob = logits.float().softmax(dim=1)[:, 1]
        if self.cfg.consensus:
            prob = expression_consensus(prob, owner, len(unl["sentence"]))
        cands = unl.get("candidates")
        if cands is None:
            cands = torch.zeros((prob.shape[0], 0, *prob.shape[-2:]), dtype=torch.bool)
            valid = torch.zeros((prob.shape[0], 0), dtype=torch.bool)
        else:
            valid = unl["candidates_valid"]
        return TeacherView(prob, cands.to(self.device), valid.to(self.device))

    @torch.no_grad()
    def pseudo_labels(self, unl: dict[str, Any]) -> RefineResult:
        """The strategy's labels for an unlabeled batch (counted in :attr:`stats`)."""
        view = self.teacher_view(unl)
        pseudo = view.prob > 0.5
        result = self.strategy.labels(pseudo, view.prob, view.candidates, view.valid)
        gt = unl.get("gt_mask")
        self.stats.add(result, view.valid, pseudo, None if gt is None else gt.to(self.device))
        return result

    def loss(self, logits: Tensor, result: RefineResult) -> Tensor:
        """L_unsup of the student's logits on the strong views."""
        return self.strategy.loss(logits, result, self.losses)

    def update_teacher(self) -> None:
        """One EMA step (after every optimizer step)."""
        self.ema.update()

    def epoch_record(self, info: DistInfo) -> dict[str, float]:
        """The epoch's refinement rates over every process; the sums start again at 0."""
        record = self.stats.all_reduced(info, self.device).report()
        self.stats = RefineStats()
        return record

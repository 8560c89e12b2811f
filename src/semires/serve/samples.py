"""What the web app shows, without the UI: a run folder's unlabeled samples as each method saw
them (teacher pseudo-label, candidates, the ones refinement selected, refined label, ground
truth, IoUs), and the test samples to segment. Library calls only; no Gradio here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from semires.data import RESIndex, load_index
from semires.data.index import Ref
from semires.data.transforms import resize_mask, resize_to
from semires.errors import CheckpointError
from semires.evaluate.predict import Segmenter, load
from semires.plan import RunPlan, open_plan
from semires.train.pseudo import PseudoLabeler
from semires.train.refine import as_bool, correction_stats

#: model-config fields that are training choices, not the model: they may differ between the
#: networks of one run (an imported burn-in, a frozen backbone)
TRAINING_ONLY = (
    "backbone_weights",
    "frozen_stages",
    "freeze_text",
    "text_train_layers",
    "tokenizer",
)

#: the filters of the pseudo-label tab, in the order shown
VERDICTS = ("helped", "hurt", "unchanged", "no match")


def check_same_model(seg: Segmenter, teacher: Segmenter, checkpoint: Path, run: Path) -> None:
    """A :class:`CheckpointError` when ``checkpoint`` is another model than the run's teacher."""
    a, b = seg.model.config.to_dict(), teacher.model.config.to_dict()
    a["input size"], b["input size"] = seg.img_size, teacher.img_size
    diff = [k for k in a if k not in TRAINING_ONLY and a[k] != b.get(k)]
    if diff:
        k = diff[0]
        raise CheckpointError(
            f"{checkpoint} is another model than the run folder {run} was trained with "
            f"({k}: {a[k]!r} here, {b.get(k)!r} in the run); serve one of the run's checkpoints "
            f"(e.g. {run}/cpi/best.pt) or leave out --run"
        )


def test_refs(index: RESIndex, splits: list[str], limit: int) -> list[Ref]:
    """The first ``limit`` refs of the test splits that the index holds."""
    refs = [r for s in splits if s in index.splits() for r in index.refs_in(s)]
    return refs[:limit]


def ground_truth(index: RESIndex, ref: Ref) -> np.ndarray | None:
    """The referred object's mask (bool), or None when the dataset has none for it."""
    ob = index.objects[ref.object_id]
    if ob.segmentation is None and ob.mask_file is None:
        return None
    return index.mask(ref.object_id).astype(bool)


@dataclass
class PseudoLabel:
    """One unlabeled training sample as one method's refinement saw it."""

    ref: Ref
    sentence: str
    image: np.ndarray  # (H, W, 3) uint8
    prob: np.ndarray  # teacher foreground probability, float32 (H, W)
    pseudo: np.ndarray  # teacher pseudo-label, prob > 0.5
    candidates: np.ndarray  # (K, H, W) bool
    selected: np.ndarray  # (K,) bool
    refined: np.ndarray  # refined label, bool (H, W)
    matched: bool
    gt: np.ndarray | None
    iou_teacher: float | None  # IoU(pseudo, gt)
    iou_refined: float | None  # IoU(refined, gt)
    verdict: str  # one of VERDICTS, or "refined" (matched, no ground truth)


class RunView:
    """The unlabeled samples of a run folder, per teacher-student method.

    The teacher is the burn-in (the network that made the pseudo-labels); each sample is a ref of
    an unlabeled image with its first expression (as the run's report shows them). The run is
    read through its :class:`~semires.plan.RunPlan` (paths and per-method configs), never run.
    """

    def __init__(self, plan: RunPlan, teacher: Segmenter, limit: int = 300) -> None:
        from semires.data.splits import read_split

        self.plan = plan
        self.teacher = teacher
        self.methods = [m for m in plan.methods if plan.layout.stage(m).best.is_file()]
        self.semi = {m: plan.train_config(m).semi for m in self.methods}
        self.index = load_index(plan.data_config().spec())
        refs = read_split(plan.split_dir, self.index).unlabeled_refs(self.index)
        self.refs = {r.id: r for r in refs[:limit]}
        self._store = None
        self._verdicts: dict[str, dict[int, str]] = {}
        self.sample = lru_cache(maxsize=8)(self._sample)
        self._labelers: dict[str, PseudoLabeler] = {}

    @classmethod
    def open(cls, run: str | Path, device: str = "auto", limit: int = 300) -> RunView:
        plan = open_plan(run)
        if not plan.burn_in_path.is_file():
            raise CheckpointError(f"{run}: the burn-in {plan.burn_in_path} is not trained yet")
        if not any(plan.layout.stage(m).best.is_file() for m in plan.methods):
            raise CheckpointError(
                f"{run}: no teacher-student method is trained yet (no <method>/best.pt for "
                f"{', '.join(plan.methods)}); leave out --run to segment only"
            )
        return cls(plan, load(plan.burn_in_path, device=device), limit)

    def store(self):
        from semires.proposals.store import ProposalStore

        if self._store is None:
            self._store = ProposalStore.open(self.plan.proposals_dir)
        return self._store

    def labeler(self, method: str) -> PseudoLabeler:
        """The pseudo-labeler of ``method``: the burn-in teacher under the method's ``semi``
        settings (consensus, candidate limit, strategy), as in its training step."""
        if method not in self._labelers:
            semi, model = self.semi[method], self.teacher.model
            self._labelers[method] = PseudoLabeler(model, semi, device=self.teacher.device)
        return self._labelers[method]

    def _sample(self, method: str, ref_id: int) -> PseudoLabel:
        """The sample as the training step labels it (at the training size, its first
        expression, no augmentation); the masks shown at the image's size, the IoUs at the
        training size (as the run's statistics count them)."""
        ref = self.refs[ref_id]
        store = self.store() if self.semi[method].proposals else None
        size = self.plan.data_config().img_size
        batch, labels = self.labeler(method).for_ref(self.index, ref, size, store=store)
        res, valid = labels.result, labels.valid[0]
        cands = as_bool(labels.candidates)[0][valid]
        chosen = res.selected  # the candidates the rule chose (None: a rule without any)
        selected = chosen[0][valid] if chosen is not None else torch.zeros_like(valid[valid])
        matched = bool(res.matched[0])
        iou_t = iou_r = None
        verdict = "no match" if not matched else "refined"
        if "gt" in batch:
            stats = correction_stats(labels.pseudo, res.labels, batch["gt"].to(res.labels.device))
            iou_t, iou_r = float(stats["iou_before"][0]), float(stats["iou_after"][0])
            if matched:
                verdict = (
                    "helped" if stats["positive"] else "hurt" if stats["negative"] else "unchanged"
                )
        image = self.index.load_image(ref.image_id)
        hw = image.shape[:2]
        prob = F.interpolate(labels.prob[:1, None].float().cpu(), size=hw, mode="bilinear")
        return PseudoLabel(
            ref=ref,
            sentence=ref.sentences[0].raw,
            image=image,
            prob=prob[0, 0].numpy(),
            pseudo=resize_to(labels.pseudo[0], hw),
            candidates=resize_mask(cands.cpu(), hw).numpy()
            if len(cands)
            else np.zeros((0, *hw), bool),
            selected=selected.cpu().numpy(),
            refined=resize_to(res.labels[0], hw),
            matched=matched,
            gt=ground_truth(self.index, ref),
            iou_teacher=iou_t,
            iou_refined=iou_r,
            verdict=verdict,
        )

    def verdicts(self, method: str, progress=None) -> dict[int, str]:
        """Every sample's verdict for ``method`` (computed once; ``progress`` wraps the loop)."""
        if method not in self._verdicts:
            ids = list(self.refs)
            loop = progress(ids) if progress is not None else ids
            self._verdicts[method] = {i: self.sample(method, i).verdict for i in loop}
        return self._verdicts[method]

    def counts(self, method: str) -> dict[str, int]:
        """How many samples have each verdict, once :meth:`verdicts` ran for ``method``."""
        done = list(self._verdicts.get(method, {}).values())
        return {v: done.count(v) for v in (*VERDICTS, "refined") if v in done}

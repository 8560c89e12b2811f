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

from semires.data import RESIndex, load_index
from semires.data.index import Ref
from semires.errors import CheckpointError
from semires.evaluate.predict import Segmenter, load
from semires.pipeline import Pipeline, open_run
from semires.train.refine import correction_stats
from semires.train.strategies import refine

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
    an unlabeled image with its first expression (as the run's report shows them).
    """

    def __init__(self, pipe: Pipeline, teacher: Segmenter, limit: int = 300) -> None:
        from semires.data.splits import read_split

        self.pipe = pipe
        self.teacher = teacher
        self.methods = [m for m in pipe.cfg.methods if pipe.layout.stage(m).best.is_file()]
        self.semi = {m: pipe.train_config(m).semi for m in self.methods}
        self.index = load_index(pipe.data_config().spec())
        refs = read_split(pipe.split_dir, self.index).unlabeled_refs(self.index)
        self.refs = {r.id: r for r in refs[:limit]}
        self._store = None
        self._verdicts: dict[str, dict[int, str]] = {}
        self.sample = lru_cache(maxsize=8)(self._sample)
        self._teacher = lru_cache(maxsize=64)(self._teacher_prob)

    @classmethod
    def open(cls, run: str | Path, device: str = "auto", limit: int = 300) -> RunView:
        pipe = open_run(run)
        if not pipe.burn_in_path.is_file():
            raise CheckpointError(f"{run}: the burn-in {pipe.burn_in_path} is not trained yet")
        if not any(pipe.layout.stage(m).best.is_file() for m in pipe.cfg.methods):
            raise CheckpointError(
                f"{run}: no teacher-student method is trained yet (no <method>/best.pt for "
                f"{', '.join(pipe.cfg.methods)}); leave out --run to segment only"
            )
        return cls(pipe, load(pipe.burn_in_path, device=device), limit)

    def store(self):
        from semires.proposals.store import ProposalStore

        if self._store is None:
            self._store = ProposalStore.open(self.pipe.proposals_dir)
        return self._store

    def _teacher_prob(self, ref_id: int) -> tuple[np.ndarray, np.ndarray]:
        ref = self.refs[ref_id]
        image = self.index.load_image(ref.image_id)
        return image, self.teacher.predict_proba(image, ref.sentences[0].raw)

    def _sample(self, method: str, ref_id: int) -> PseudoLabel:
        semi = self.semi[method]
        ref = self.refs[ref_id]
        image, prob = self._teacher(ref_id)
        hw = prob.shape
        if semi.proposals:
            cands = self.store().masks(ref.image_id, size=hw).contiguous()
        else:
            cands = torch.zeros((0, *hw), dtype=torch.bool)
        P, p = torch.from_numpy(prob > 0.5)[None], torch.from_numpy(prob)[None]
        valid = torch.ones((1, cands.shape[0]), dtype=torch.bool)
        res = refine(P, p, cands[None], valid, semi.refine)
        chosen = res.selected  # the candidates the rule chose (None: a rule without any)
        selected = chosen[0] if chosen is not None else torch.zeros_like(valid[0])
        matched = bool(res.matched[0])
        gt = ground_truth(self.index, ref)
        iou_t = iou_r = None
        verdict = "no match" if not matched else "refined"
        if gt is not None:
            stats = correction_stats(P, res.labels, torch.from_numpy(gt)[None])
            iou_t, iou_r = float(stats["iou_before"][0]), float(stats["iou_after"][0])
            if matched:
                verdict = (
                    "helped" if stats["positive"] else "hurt" if stats["negative"] else "unchanged"
                )
        return PseudoLabel(
            ref=ref,
            sentence=ref.sentences[0].raw,
            image=image,
            prob=prob,
            pseudo=P[0].numpy(),
            candidates=cands.numpy(),
            selected=selected.numpy(),
            refined=res.labels[0].numpy(),
            matched=matched,
            gt=gt,
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

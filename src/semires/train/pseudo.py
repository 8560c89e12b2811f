"""Pseudo-labels: the teacher's view of unlabeled samples and the strategy's labels from it.

:class:`PseudoLabeler` is the one place that makes them: the teacher-student step calls it on
every unlabeled batch, and the report's examples, ``semires serve``'s pseudo-label tab and
``bench/bench_refine_teacher.py`` call it outside training (:meth:`PseudoLabeler.for_ref` builds
the one-sample batch the training loader would give, without augmentation), so what they show
is what training used: the same consensus over an object's expressions, the same candidate
limit, the same strategy.

The path of one unlabeled sample: :class:`~semires.data.dataset.UnlabeledDataset` gives its weak
view (blur), strong view (colour jitter, pixel-aligned), sentence, all expressions of its object
and its candidate masks -> :meth:`PseudoLabeler.view`: teacher probability p on the weak view
(with ``semi.consensus``: the mean over the object's expressions) -> pseudo-label P = p > 0.5 ->
the strategy's labels (refined label, per-pixel weights, matched or not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from semires.data.dataset import UnlabeledDataset, collate
from semires.data.index import Ref, RESIndex
from semires.data.transforms import normalize
from semires.runtime.precision import autocast
from semires.runtime.textcache import TextInputs
from semires.train.refine import Masks, RefineResult, expression_consensus
from semires.train.strategies import make_strategy


@dataclass
class PseudoLabels:
    """What refinement got and gave for an unlabeled batch."""

    prob: Tensor  # [B, H, W] teacher foreground probability on the weak view
    #: [B, K, H, W] candidates (bit-packed from the loader; K = 0 without a proposal store)
    candidates: Masks
    valid: Tensor  # [B, K] bool
    result: RefineResult  # the strategy's labels, weights, matched, selected, counters

    @property
    def pseudo(self) -> Tensor:
        """The teacher's pseudo-label P = p > 0.5, before refinement."""
        return self.prob > 0.5


class PseudoLabeler:
    """The teacher's labels of unlabeled samples under a ``semi`` config (its ``refine``,
    ``consensus`` and ``max_candidates``): exactly those of the teacher-student step.

    ``teacher``: the labelling network (in training the EMA teacher); ``text``: its text inputs
    (made for it when not given).
    """

    def __init__(
        self,
        teacher: nn.Module,
        semi: Any,
        *,
        device: torch.device,
        amp: str = "none",
        text: TextInputs | None = None,
    ) -> None:
        self.teacher, self.cfg, self.device, self.amp = teacher, semi, device, amp
        self.text = text if text is not None else TextInputs(teacher, device)
        self.strategy = make_strategy(semi.refine)

    @torch.no_grad()
    def __call__(self, unl: dict[str, Any]) -> PseudoLabels:
        """The labels of a collated unlabeled batch (as the training loader gives it)."""
        prob = self.probability(unl)
        # every unlabeled batch has candidates: [B, 0, ...] slots where there is no store
        cands = unl["candidates"].to(self.device)
        valid = unl["candidates_valid"].to(self.device)
        result = self.strategy.labels(prob > 0.5, prob, cands, valid)
        return PseudoLabels(prob, cands, valid, result)

    @torch.no_grad()
    def probability(self, unl: dict[str, Any]) -> Tensor:
        """The teacher's foreground probability on the weak views [B, H, W] (with
        ``consensus``: averaged over each object's expressions)."""
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
        return prob

    def for_refs(
        self,
        index: RESIndex,
        samples: list[tuple[Ref, str]],
        size: int,
        *,
        store: Any = None,
    ) -> tuple[dict[str, Any], PseudoLabels]:
        """The batch of ``samples`` ((ref, expression) pairs) as the training loader makes it at
        ``size``, without augmentation (both views are the image; candidates from ``store``, at
        most ``max_candidates``), and its labels."""
        refs = [ref for ref, _ in samples]
        ds = UnlabeledDataset(
            index, refs, size, 0, proposals=store, max_candidates=self.cfg.max_candidates
        )
        batch = collate([ds.item(ref, sentence) for ref, sentence in samples])
        return batch, self(batch)

    def for_ref(
        self, index: RESIndex, ref: Ref, size: int, *, store: Any = None, sentence: str = ""
    ) -> tuple[dict[str, Any], PseudoLabels]:
        """:meth:`for_refs` of one ref (``sentence``: its expression, default the first)."""
        return self.for_refs(index, [(ref, sentence or ref.sentences[0].raw)], size, store=store)

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

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from semires.data.dataset import UnlabeledDataset, collate
from semires.data.flip import flip_image, flip_sentence
from semires.data.index import Ref, RESIndex
from semires.data.transforms import normalize
from semires.runtime.precision import autocast
from semires.runtime.textcache import TextInputs
from semires.train.objects import (
    assignment_margin,
    exclusive_candidates,
    expression_agreement,
    label_confidence,
    mask_agreement,
)
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
    #: per-sample signals that the label is on the right object, each float64 [B] in [0, 1]
    #: (:data:`SIGNALS`; only those the run's settings make)
    signals: dict[str, Tensor] = field(default_factory=dict)
    #: [B, K] bool: the candidates the exclusive assignment left to each sample (None without)
    kept: Tensor | None = None

    @property
    def pseudo(self) -> Tensor:
        """The teacher's pseudo-label P = p > 0.5, before refinement."""
        return self.prob > 0.5


#: the object-level signals a labeler can make (:mod:`semires.train.objects`), and ``mean``
SIGNALS = ("confidence", "agreement", "flip", "margin", "mean")
#: at most this many (image, expression) pairs in one teacher forward pass
_PAIRS_PER_PASS = 64


@dataclass
class _Pairs:
    """The teacher's (image, expression) pairs of a batch: ``image`` [N] the sample whose weak
    view, ``group`` [N] the object (0..B-1 the samples' own, B.. the other referents'),
    ``flipped`` [N] whether the view is mirrored; ``others`` [J] the sample of each other
    referent, ``slot`` [J] its place among its sample's others."""

    image: list[int] = field(default_factory=list)
    sentence: list[str] = field(default_factory=list)
    group: list[int] = field(default_factory=list)
    flipped: list[bool] = field(default_factory=list)
    others: list[int] = field(default_factory=list)
    slot: list[int] = field(default_factory=list)

    def add(self, image: int, sentences: list[str], group: int, flip: bool) -> None:
        for s in sentences:
            self.image.append(image)
            self.sentence.append(s)
            self.group.append(group)
            self.flipped.append(False)
        if flip:
            for s in sentences:
                self.image.append(image)
                self.sentence.append(flip_sentence(s))
                self.group.append(group)
                self.flipped.append(True)


class PseudoLabeler:
    """The teacher's labels of unlabeled samples under a ``semi`` config (its ``refine``,
    ``consensus``, ``max_candidates``, ``assign``, ``flip_view``): exactly those of the
    teacher-student step.

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

    @property
    def exclusive(self) -> bool:
        return getattr(self.cfg, "assign", "independent") == "exclusive"

    @property
    def referents(self) -> bool:
        """Whether it labels the other referents of each image too."""
        return needs_referents(self.cfg)

    @property
    def flip_view(self) -> bool:
        return bool(getattr(self.cfg, "flip_view", False))

    @torch.no_grad()
    def __call__(self, unl: dict[str, Any]) -> PseudoLabels:
        """The labels of a collated unlabeled batch (as the training loader gives it)."""
        # every unlabeled batch has candidates: [B, 0, ...] slots where there is no store
        cands = unl["candidates"].to(self.device)
        valid = unl["candidates_valid"].to(self.device)
        prob, q, q_valid, signals = self._views(unl)
        kept = None
        if self.referents:
            kept, margin = exclusive_candidates(prob, q, q_valid, cands, valid)
        use = kept if self.exclusive else valid
        result = self.strategy.labels(prob > 0.5, prob, cands, use)
        signals["confidence"] = label_confidence(prob, result.labels)
        if kept is not None:
            signals["margin"] = assignment_margin(margin, result.selected)
            kept = use
        return PseudoLabels(prob, cands, valid, result, _with_mean(signals), kept)

    @torch.no_grad()
    def probability(self, unl: dict[str, Any]) -> Tensor:
        """The teacher's foreground probability on the weak views [B, H, W] (with
        ``consensus``: averaged over each object's expressions; with ``flip_view``: and over
        the mirrored view)."""
        return self._views(unl)[0]

    def _teacher(self, images: Tensor, sentences: list[str]) -> Tensor:
        x = normalize(images, self.teacher.image_mean, self.teacher.image_std)
        with autocast(self.device, self.amp):
            logits = self.teacher(x, **self.text(sentences))
        return logits.float().softmax(dim=1)[:, 1]

    def _pairs(self, unl: dict[str, Any]) -> _Pairs:
        batch = len(unl["sentence"])
        pairs = _Pairs()
        for b in range(batch):
            own = unl["expressions"][b] if self.cfg.consensus else [unl["sentence"][b]]
            pairs.add(b, list(own), b, self.flip_view)
        if self.referents:
            for b, others in enumerate(unl["others"]):
                for r, expressions in enumerate(others):
                    group = batch + len(pairs.others)
                    pairs.others.append(b)
                    pairs.slot.append(r)
                    chosen = expressions if self.cfg.consensus else expressions[:1]
                    pairs.add(b, list(chosen), group, self.flip_view)
        return pairs

    def _views(self, unl: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """``p`` [B, H, W], the other referents' ``q`` [B, R, H, W] with ``q_valid`` [B, R],
        and the signals the views give (expression and flip agreement)."""
        batch = len(unl["sentence"])
        pairs = self._pairs(unl)
        weak = unl["weak"].to(self.device, non_blocking=True)
        index = torch.tensor(pairs.image, device=self.device)
        flipped = torch.tensor(pairs.flipped, device=self.device)
        group = torch.tensor(pairs.group, device=self.device)
        probs = []
        for i in range(0, len(pairs.image), _PAIRS_PER_PASS):
            part = slice(i, i + _PAIRS_PER_PASS)
            images = weak.index_select(0, index[part])
            f = flipped[part]
            images = torch.where(f[:, None, None, None], flip_image(images), images)
            prob = self._teacher(images, pairs.sentence[part])
            probs.append(torch.where(f[:, None, None], flip_image(prob), prob))
        prob_all = torch.cat(probs)
        groups = expression_consensus(prob_all, group, batch + len(pairs.others))
        p = groups[:batch]
        r_max = max((len(o) for o in unl.get("others", [])), default=0)
        q = p.new_zeros(batch, r_max, *p.shape[1:])
        q_valid = torch.zeros(batch, r_max, dtype=torch.bool, device=self.device)
        for j, (b, r) in enumerate(zip(pairs.others, pairs.slot, strict=True)):
            q[b, r], q_valid[b, r] = groups[batch + j], True
        signals: dict[str, Tensor] = {}
        own = group < batch
        if self.cfg.consensus:
            rows = own & ~flipped
            signals["agreement"] = expression_agreement(prob_all[rows] > 0.5, group[rows], batch)
        if self.flip_view:
            straight = expression_consensus(prob_all[own & ~flipped], group[own & ~flipped], batch)
            mirror = expression_consensus(prob_all[own & flipped], group[own & flipped], batch)
            signals["flip"] = mask_agreement(straight > 0.5, mirror > 0.5)
        return p, q, q_valid, signals

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
            index,
            refs,
            size,
            0,
            proposals=store,
            max_candidates=self.cfg.max_candidates,
            referents=self.referents,
        )
        batch = collate([ds.item(ref, sentence) for ref, sentence in samples])
        return batch, self(batch)

    def for_ref(
        self, index: RESIndex, ref: Ref, size: int, *, store: Any = None, sentence: str = ""
    ) -> tuple[dict[str, Any], PseudoLabels]:
        """:meth:`for_refs` of one ref (``sentence``: its expression, default the first)."""
        return self.for_refs(index, [(ref, sentence or ref.sentences[0].raw)], size, store=store)


def needs_referents(semi: Any) -> bool:
    """Whether labelling under ``semi`` needs the other referents of each image: the
    exclusive assignment, or its margin as the selection signal."""
    select = getattr(semi, "select", None)
    margin = select is not None and select.signal == "margin"
    return getattr(semi, "assign", "independent") == "exclusive" or margin


def _with_mean(signals: dict[str, Tensor]) -> dict[str, Tensor]:
    """``signals`` and their mean (``mean``)."""
    signals["mean"] = torch.stack(list(signals.values())).mean(0)
    return signals

"""Refinement strategies: what a teacher-student method does with an unlabeled batch.

A strategy turns the teacher's pseudo-label into training labels (:meth:`Strategy.labels`) and
says how the student learns from them (:meth:`Strategy.loss`); both live in the strategy's own
class, next to each other. The tensor maths (IOM, CPI, PWA, ...) is in
:mod:`semires.train.refine`, the pixel losses in :mod:`semires.train.losses`.

=============  ==========================================================  ==================
strategy       labels                                                      loss
=============  ==========================================================  ==================
``none``       the teacher's pseudo-label P (plain teacher-student)        CE
``confidence``  P, pixels with max(p, 1 - p) < ``confidence`` ignored      CE on kept pixels
``iom``        IOM: the best-IoU candidate if IoU > tau, else P            matched: CE;
``cpi``        CPI: the union of candidates with r1 > t1 or r2 > t2        unmatched: PWA
``soft``       soft IoU against p: the best candidate if > ``soft_tau``    (or CE without
               (ours, :func:`~semires.train.refine.soft_iom`)              ``pwa``); the two
                                                                           parts averaged
=============  ==========================================================  ==================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from semires.train.losses import masked_ce, pixel_weighted_ce, weighted_ce
from semires.train.refine import (
    RefineConfig,
    RefineResult,
    candidate_overlaps,
    check_inputs,
    confidence_filter,
    cpi_rules,
    cpi_union,
    iom_from_overlaps,
    pwa_weights,
    soft_iom,
)


@dataclass
class PixelLosses:
    """The pixel losses of a run: class weights and how they are averaged (``train.ce_mean``,
    ``semi.pwa_class_weights``); strategies call these, never the raw functions."""

    class_weights: Tensor
    mean: str = "weighted"
    pwa_class_weights: bool = True

    def ce(self, logits: Tensor, target: Tensor) -> Tensor:
        """Class-weighted pixel cross-entropy (:func:`semires.train.losses.weighted_ce`)."""
        return weighted_ce(logits, target, self.class_weights, self.mean)

    def pwa(self, logits: Tensor, target: Tensor, weights: Tensor) -> Tensor:
        """The PWA loss: mean of w(x) CE(x)."""
        cw = self.class_weights if self.pwa_class_weights else None
        return pixel_weighted_ce(logits, target, weights, cw)

    def masked(self, logits: Tensor, target: Tensor, keep: Tensor) -> Tensor:
        """Class-weighted CE over the kept pixels."""
        return masked_ce(logits, target, keep, self.class_weights)


def _counts(batch: int, **given: int) -> dict[str, int]:
    keys = ("matched", "matched_iom", "matched_cpi_u", "matched_cpi_o", "ignored_pixels")
    return {"n": batch, **dict.fromkeys(keys, 0), **given}


class Strategy:
    """A refinement strategy (see the module docstring). Subclasses set ``name`` and
    ``needs_proposals`` and implement :meth:`labels` / :meth:`loss`."""

    name: ClassVar[str]
    #: whether the method needs candidate masks (a proposal store)
    needs_proposals: ClassVar[bool] = False

    def __init__(self, cfg: RefineConfig) -> None:
        self.cfg = cfg

    def labels(self, P: Tensor, p: Tensor, M: Tensor, valid: Tensor) -> RefineResult:
        """Training labels and per-pixel weights for the batch (P, p [B, H, W]; M [B, K, H, W]
        candidates with ``valid`` [B, K], see :mod:`semires.train.refine`)."""
        raise NotImplementedError

    def loss(self, logits: Tensor, result: RefineResult, losses: PixelLosses) -> Tensor:
        """The unsupervised loss of the student's logits [B, 2, H, W] on the strong view."""
        raise NotImplementedError


class Plain(Strategy):
    """Plain teacher-student: the pseudo-label as it is, every pixel weight 1."""

    name = "none"

    def labels(self, P: Tensor, p: Tensor, M: Tensor, valid: Tensor) -> RefineResult:
        none = torch.zeros(P.shape[0], dtype=torch.bool, device=P.device)
        return RefineResult(P.bool().clone(), torch.ones_like(p), none, _counts(P.shape[0]))

    def loss(self, logits: Tensor, result: RefineResult, losses: PixelLosses) -> Tensor:
        return losses.ce(logits, result.labels)


class Confidence(Strategy):
    """The confidence-filtered baseline: uncertain pixels are ignored."""

    name = "confidence"

    def labels(self, P: Tensor, p: Tensor, M: Tensor, valid: Tensor) -> RefineResult:
        _, ignore = confidence_filter(p, self.cfg.confidence)
        none = torch.zeros(P.shape[0], dtype=torch.bool, device=P.device)
        counts = _counts(P.shape[0], ignored_pixels=int(ignore.sum()))
        return RefineResult(P.bool().clone(), (~ignore).to(p.dtype), none, counts)

    def loss(self, logits: Tensor, result: RefineResult, losses: PixelLosses) -> Tensor:
        return losses.masked(logits, result.labels, result.weights > 0)


class Matching(Strategy):
    """The SAM-guided strategies: a sample whose pseudo-label matches candidates learns the
    refined label with CE; an unmatched one keeps P, weighted pixel by pixel by PWA (or plain
    CE without ``pwa``); the two parts are averaged when a batch has both."""

    needs_proposals = True

    def _result(
        self,
        P: Tensor,
        p: Tensor,
        refined: Tensor,
        matched: Tensor,
        selected: Tensor,
        **counts: int,
    ) -> RefineResult:
        cfg = self.cfg
        weights = pwa_weights(p, cfg.pwa_sigma2, cfg.pwa_offset) if cfg.pwa else torch.ones_like(p)
        weights[matched] = 1.0
        tally = _counts(P.shape[0], matched=int(matched.sum()), **counts)
        return RefineResult(refined, weights, matched, tally, selected)

    def loss(self, logits: Tensor, result: RefineResult, losses: PixelLosses) -> Tensor:
        parts = []
        matched, labels = result.matched, result.labels
        if matched.any():
            parts.append(losses.ce(logits[matched], labels[matched]))
        rest = ~matched
        if rest.any():
            if self.cfg.pwa:
                parts.append(losses.pwa(logits[rest], labels[rest], result.weights[rest]))
            else:
                parts.append(losses.ce(logits[rest], labels[rest]))
        return torch.stack(parts).mean()


def _one_hot(index: Tensor, matched: Tensor, k: int) -> Tensor:
    """bool [B, K]: True at ``index`` for the matched samples."""
    selected = torch.zeros(index.shape[0], k, dtype=torch.bool, device=index.device)
    rows = torch.arange(index.shape[0], device=index.device)[matched]
    selected[rows, index[matched]] = True
    return selected


class IOM(Matching):
    """IoU-based optimal matching (docs/method.md section 4)."""

    name = "iom"

    def labels(self, P: Tensor, p: Tensor, M: Tensor, valid: Tensor) -> RefineResult:
        labels, matched, index = iom_from_overlaps(
            P, M, valid, candidate_overlaps(P, M, valid), self.cfg.tau
        )
        selected = _one_hot(index, matched, valid.shape[1])
        return self._result(P, p, labels, matched, selected, matched_iom=int(matched.sum()))


class CPI(Matching):
    """Composite parts integration (docs/method.md section 4); CPI-U / CPI-O switchable."""

    name = "cpi"

    def labels(self, P: Tensor, p: Tensor, M: Tensor, valid: Tensor) -> RefineResult:
        cfg = self.cfg
        by_u, by_o = cpi_rules(candidate_overlaps(P, M, valid), valid, cfg.t1, cfg.t2)
        labels, matched, selected = cpi_union(P, M, by_u, by_o, cfg.cpi_u, cfg.cpi_o)
        return self._result(
            P,
            p,
            labels,
            matched,
            selected,
            matched_cpi_u=int(by_u.any(1).sum()) if cfg.cpi_u else 0,
            matched_cpi_o=int(by_o.any(1).sum()) if cfg.cpi_o else 0,
        )


class SoftIOM(Matching):
    """Soft IoU matching against the teacher's probability (ours, beyond the paper)."""

    name = "soft"

    def labels(self, P: Tensor, p: Tensor, M: Tensor, valid: Tensor) -> RefineResult:
        labels, matched, index, _ = soft_iom(P, p, M, valid, self.cfg.soft_tau)
        selected = _one_hot(index, matched, valid.shape[1])
        return self._result(P, p, labels, matched, selected)


#: strategy name -> class
STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Plain, Confidence, IOM, CPI, SoftIOM)
}


def make_strategy(cfg: RefineConfig) -> Strategy:
    """The strategy ``cfg.strategy`` names, configured by ``cfg``."""
    return STRATEGIES[cfg.strategy](cfg)


def needs_proposals(strategy: str) -> bool:
    """Whether the named strategy needs a proposal store."""
    return STRATEGIES[strategy].needs_proposals


def refine(P: Tensor, p: Tensor, M: Tensor, valid: Tensor, cfg: RefineConfig) -> RefineResult:
    """The labels of ``cfg.strategy`` for a batch (checks the shapes first)."""
    check_inputs(P, M, valid)
    if p.shape != P.shape:
        raise ValueError(f"p has shape {tuple(p.shape)}, P has {tuple(P.shape)}")
    return make_strategy(cfg).labels(P, p, M, valid)

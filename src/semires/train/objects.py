"""Which object a pseudo-label is on: joint assignment and object-level signals (ours, beyond
the paper; docs/refinement.md "Pseudo-labels on the right object").

IOM and CPI sharpen a pseudo-label on the object the teacher chose; they cannot move it to
another object. The functions here act one level up, on objects, and like
:mod:`semires.train.refine` they are small pure functions of batched tensors. Notation as there
(``p`` [B, H, W] the teacher's probability, ``M`` [B, K, H, W] candidates with ``valid`` [B, K]),
and ``q`` [B, R, H, W]: the teacher's probabilities for the R OTHER referred objects of each
sample's image (zero maps where an image has fewer; ``q_valid`` [B, R] says which are real).

- **Exclusive assignment** (:func:`exclusive_candidates`). Every candidate goes to the
  referent of its image whose probability covers it most,
  ``owner(k) = argmax_r cover_r(k)``, ``cover_r(k) = sum_x p_r(x) M_k(x) / |M_k|``
  (the sample's own referent wins ties); a sample keeps only the candidates it owns, so no
  candidate serves two objects, and the strategy (IOM, CPI, ...) then runs on what is left: a
  referent that lost its candidates falls back to PWA. An image with one referent (R = 0)
  keeps every candidate: the labels are exactly the strategy's own.
- **Signals** that a pseudo-label is on the right object, available without ground truth, each
  in [0, 1] per sample: :func:`mask_agreement` (IoU of two pseudo-labels: the object's
  expressions with each other, or the weak view with the flipped one), :func:`label_confidence`
  (the teacher's mean probability inside the label it trains on), the assignment's margin
  (:func:`assignment_margin`).
- **Selection** (:func:`keep_top`): the unsupervised loss of a batch keeps the share ``q(t)`` of
  its samples with the highest signal, ``q`` widening over training (:func:`kept_share`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from semires.evaluate.metrics import intersection_union, iou_from_counts
from semires.train.refine import Masks, as_bool


def candidate_cover(probs: Tensor, M: Masks) -> Tensor:
    """``cover[b, k, r] = sum_x probs[b, r](x) M[b, k](x) / |M[b, k]|``: the mean probability
    of map r inside candidate k (float64 [B, K, R]; 0 for an empty candidate). ``probs``
    [B, R, H, W]."""
    m = as_bool(M).flatten(2).double()  # [B, K, N]
    inside = torch.bmm(m, probs.flatten(2).double().transpose(1, 2))  # [B, K, R]
    area = m.sum(-1, keepdim=True)
    return torch.where(area > 0, inside / area.clamp(min=1), torch.zeros_like(inside))


def exclusive_candidates(
    p: Tensor, q: Tensor, q_valid: Tensor, M: Masks, valid: Tensor
) -> tuple[Tensor, Tensor]:
    """The candidates each sample keeps when every candidate goes to the referent of its image
    that covers it most (see the module docstring), and the margin of each candidate: ``own
    cover - best other cover`` (float64 [B, K]; the own cover where there is no other referent).

    Returns ``(kept [B, K] bool, margin [B, K])``; ``kept`` is ``valid`` where ``q_valid`` has
    no True in a row.
    """
    cover = candidate_cover(torch.cat([p[:, None], q], dim=1), M)  # [B, K, 1 + R]
    own = cover[..., 0]
    others = cover[..., 1:].masked_fill(~q_valid[:, None, :], -math.inf)
    best_other = others.amax(-1) if others.shape[-1] else torch.full_like(own, -math.inf)
    kept = valid & (own >= best_other)
    margin = own - best_other.clamp(min=0.0)
    return kept, margin


def assignment_margin(margin: Tensor, selected: Tensor | None) -> Tensor:
    """Per sample, the mean margin of the candidates its label is made of (float64 [B], in
    [0, 1]; 0 for a sample whose label uses no candidate)."""
    if selected is None or selected.shape[1] == 0:
        return torch.zeros(margin.shape[0], dtype=torch.float64, device=margin.device)
    sel = selected.double()
    total = (margin.clamp(min=0.0) * sel).sum(1)
    return total / sel.sum(1).clamp(min=1.0)


def mask_agreement(a: Tensor, b: Tensor) -> Tensor:
    """IoU of two label batches [B, H, W] (float64 [B]; 1 where both are empty: they agree)."""
    inter, union = intersection_union(a, b)
    return torch.where(union > 0, iou_from_counts(inter, union), torch.ones_like(inter.double()))


def expression_agreement(labels: Tensor, owner: Tensor, batch: int) -> Tensor:
    """Per object, the mean IoU of every pair of its expressions' pseudo-labels (float64
    [batch]); ``labels`` [N, H, W] bool, ``owner`` [N] the object of each. An object with one
    expression agrees with itself (1)."""
    out = torch.ones(batch, dtype=torch.float64, device=labels.device)
    for b in range(batch):
        rows = labels[owner == b]
        n = rows.shape[0]
        if n < 2:
            continue
        i, j = torch.triu_indices(n, n, 1, device=labels.device)
        out[b] = mask_agreement(rows[i], rows[j]).mean()
    return out


def label_confidence(p: Tensor, labels: Tensor) -> Tensor:
    """The teacher's mean probability inside each label (float64 [B]; 0 for an empty one)."""
    inside = (p.double() * labels).flatten(1).sum(1)
    area = labels.flatten(1).sum(1).double()
    return torch.where(area > 0, inside / area.clamp(min=1), torch.zeros_like(area))


def kept_share(step: int, total: int, start: float, end: float, ramp: float) -> float:
    """The share of samples kept at ``step`` of ``total``: ``start``, rising linearly to ``end``
    over the first ``ramp`` of training, then ``end``."""
    span = max(1.0, ramp * total)
    return start + (end - start) * min(1.0, step / span)


def keep_top(signal: Tensor, share: float) -> Tensor:
    """bool [B]: the ``ceil(share * B)`` samples with the highest signal (the earlier sample on
    ties; at least one)."""
    n = signal.shape[0]
    k = min(n, max(1, math.ceil(share * n - 1e-9)))
    order = torch.sort(signal.double(), descending=True, stable=True).indices
    keep = torch.zeros(n, dtype=torch.bool, device=signal.device)
    keep[order[:k]] = True
    return keep

"""SAM-guided pseudo-label refinement: IOM, CPI and PWA (docs/method.md section 4).

Small pure functions of batched tensors, each next to its equation; the strategies that use
them for training (labels and loss, with their configuration) are in
:mod:`semires.train.strategies`. Notation (per sample b):

- ``P``: the teacher's pseudo-label, bool [B, H, W] (teacher argmax on the weak view);
- ``p``: the teacher's foreground probability, float [B, H, W];
- ``M``: the candidate masks, a PADDED bool [B, K, H, W], and ``valid``: bool [B, K] saying which
  of the K slots hold a real candidate (samples have different numbers of candidates, maybe 0);
- ``|X|`` is a pixel count, ``AND`` / ``OR`` act pixel-wise.

All candidates of all samples are handled at once: the pixel counts ``|M_k AND P|``, ``|M_k|``
and ``|P|`` come from one batched bitwise reduction (:func:`candidate_overlaps`), and the rules
are then arithmetic on [B, K] tables. Ratios are computed in float64, so a threshold comparison
is exact for pixel counts (``7/10 > 0.7`` is false, as it should be).

Edge cases, the same in every function:

- a padding slot (``valid = False``) is never matched or selected;
- ``0 / 0`` ratios are 0: an empty pseudo-label has ``r1 = 0``, an empty candidate ``r2 = 0``, and
  an empty candidate on an empty pseudo-label has ``IoU = 0`` (so it never matches);
- a sample without valid candidates is never matched and keeps ``P``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from semires.evaluate.metrics import intersection_union, iou_from_counts
from semires.utils.bits import PackedMasks, and_counts, count, pack

#: candidate masks: bool [B, K, H, W], or the same bit-packed (what the training loader gives)
Masks = Tensor | PackedMasks

#: the paper's constants (docs/method.md section 4), the defaults of every rule and config
TAU = 0.5  # IOM: a candidate matches when its IoU with P exceeds tau
T1 = 0.7  # CPI-U: share of P a candidate covers
T2 = 0.7  # CPI-O: share of a candidate inside P
PWA_SIGMA2 = 0.1  # PWA: the Gaussian's variance s
PWA_OFFSET = 1.3  # PWA: w(x) = offset - N(p(x); 0.5, s)

# Pixels are counted 8 at a time: a bool tensor is viewed as int64 words of 8 bytes (each 0 or 1)
# and words are added; every byte lane then holds a partial count. At most 255 words are added
# per lane, so no lane overflows into its neighbour; the lanes are then summed as bytes.
_LANE_WORDS = 255
# The AND of the pseudo-labels with the candidates is formed for a block of candidates at a time,
# sized so that the temporary stays in cache on CPU (8 MiB measured fastest on the 2-core
# development VM: 4 MiB blocks cost more in per-op overhead, 32 MiB ones in cache misses);
# on an accelerator fewer, larger blocks are faster.
_BLOCK_BYTES = {"cpu": 8 << 20}
_DEFAULT_BLOCK_BYTES = 256 << 20


class Overlaps(NamedTuple):
    """Pixel counts of every (pseudo-label, candidate) pair; 0 for padding slots."""

    inter: Tensor  # [B, K] int64, |M_k AND P|
    area_m: Tensor  # [B, K] int64, |M_k|
    area_p: Tensor  # [B] int64, |P|


class IOMResult(NamedTuple):
    """Output of :func:`iom`."""

    refined: Tensor  # [B, H, W] bool: M_k* where matched, else P
    matched: Tensor  # [B] bool: IoU_k* > tau
    index: Tensor  # [B] int64: k* (best valid candidate), -1 when a sample has none


class CPIResult(NamedTuple):
    """Output of :func:`cpi`."""

    refined: Tensor  # [B, H, W] bool: union of the selected M_k where matched, else P
    matched: Tensor  # [B] bool: at least one candidate selected
    selected: Tensor  # [B, K] bool: the set S


def check_inputs(P: Tensor, M: Masks, valid: Tensor) -> None:
    if P.dim() != 3 or len(M.shape) != 4 or valid.dim() != 2:
        raise ValueError(
            f"expected P [B, H, W], M [B, K, H, W], valid [B, K]; got {tuple(P.shape)}, "
            f"{tuple(M.shape)}, {tuple(valid.shape)}"
        )
    if M.shape[0] != P.shape[0] or M.shape[2:] != P.shape[1:] or valid.shape != M.shape[:2]:
        raise ValueError(
            f"shapes do not agree: P {tuple(P.shape)}, M {tuple(M.shape)}, "
            f"valid {tuple(valid.shape)}"
        )
    if not (P.device == M.device == valid.device):
        raise ValueError(f"P, M and valid are on {P.device}, {M.device}, {valid.device}")


def _as_words(masks: Tensor) -> Tensor:
    """Bool [..., N] -> int64 [..., ceil(N / 8)] holding the same bytes (zero-padded)."""
    masks = masks.bool().contiguous()
    pad = -masks.shape[-1] % 8
    if pad:
        masks = torch.cat([masks, masks.new_zeros(*masks.shape[:-1], pad)], dim=-1)
    return masks.view(torch.int64)


def _count_words(words: Tensor) -> Tensor:
    """Number of true pixels in each row of :func:`_as_words` words (int64 [...])."""
    full = words.shape[-1] - words.shape[-1] % _LANE_WORDS
    lanes = torch.cat(
        [
            words[..., :full].unflatten(-1, (-1, _LANE_WORDS)).sum(-1),
            words[..., full:].sum(-1, keepdim=True),
        ],
        dim=-1,
    )
    return lanes.view(torch.uint8).sum(-1, dtype=torch.int64)


def candidate_overlaps(P: Tensor, M: Masks, valid: Tensor) -> Overlaps:
    """``|M_k AND P|``, ``|M_k|`` for every candidate and ``|P|`` for every sample.

    One batched bitwise reduction over all candidates. Bool masks are read as 64-bit words,
    8 pixels at a time: candidate areas in one pass, intersections in blocks of candidates that
    bound the temporary memory (8 MiB on CPU). Bit-packed masks (:class:`PackedMasks`, 64
    pixels a word) bring their areas; the intersections are population counts of the ANDed
    words (:func:`semires.utils.bits.and_counts`).
    Exact integer counts on any device; padding slots count 0.
    """
    check_inputs(P, M, valid)
    if isinstance(M, PackedMasks):
        labels = pack(P)
        return Overlaps(and_counts(M.words, labels) * valid, M.area * valid, count(labels))
    batch, k = valid.shape
    m_words = _as_words(M.flatten(2))  # [B, K, n]
    p_words = _as_words(P.flatten(1))[:, None]  # [B, 1, n]
    area_m = _count_words(m_words)  # one pass over all candidates, no temporary
    inter = torch.zeros(batch, k, dtype=torch.int64, device=M.device)
    row_bytes = max(1, batch * m_words.shape[-1] * 8)
    block = max(1, _BLOCK_BYTES.get(M.device.type, _DEFAULT_BLOCK_BYTES) // row_bytes)
    buffer = torch.empty_like(m_words[:, :block])
    for start in range(0, k, block):  # blocks of candidates: the AND temporary stays small
        words = m_words[:, start : start + block]
        both = torch.bitwise_and(words, p_words, out=buffer[:, : words.shape[1]])
        inter[:, start : start + block] = _count_words(both)
    return Overlaps(inter * valid, area_m * valid, _count_words(p_words[:, 0]))


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den in float64, 0 where den = 0."""
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(den))


def _keep_unmatched(matched: Tensor, refined: Tensor, P: Tensor) -> Tensor:
    """refined where the sample matched, else the pseudo-label P (whole samples are copied)."""
    labels = P.bool().clone()
    labels[matched] = refined[matched]
    return labels


def as_bool(M: Masks) -> Tensor:
    """The candidates as a bool [B, K, H, W] tensor (unpacked when bit-packed)."""
    return M.unpack().contiguous() if isinstance(M, PackedMasks) else M


def _masks_at(M: Masks, flat_index: Tensor) -> Tensor:
    """bool [N, H, W]: the candidates at ``flat_index`` (sample * K + slot)."""
    if isinstance(M, PackedMasks):
        return M.select(flat_index)
    return M.flatten(0, 1).index_select(0, flat_index).bool()


def iom_from_overlaps(P: Tensor, M: Masks, valid: Tensor, ov: Overlaps, tau: float) -> IOMResult:
    batch, k = valid.shape
    has_any = valid.any(1)
    if k == 0:
        none = torch.full((batch,), -1, dtype=torch.int64, device=P.device)
        return IOMResult(P.bool().clone(), has_any, none)
    iou = _ratio(ov.inter, ov.area_m + ov.area_p[:, None] - ov.inter)
    iou = iou.masked_fill(~valid, -1.0)  # padding never wins the argmax
    index = iou.argmax(1)  # first maximum on ties
    matched = has_any & (iou.gather(1, index[:, None])[:, 0] > tau)
    best = _masks_at(M, torch.arange(batch, device=M.device) * k + index)
    refined = _keep_unmatched(matched, best, P)
    return IOMResult(refined, matched, index.masked_fill(~has_any, -1))


def iom(P: Tensor, M: Masks, valid: Tensor, tau: float = TAU) -> IOMResult:
    """IoU-based optimal matching (IOM).

    ``IoU_k = |M_k AND P| / |M_k OR P|``, ``k* = argmax_k IoU_k`` (first on ties);
    matched iff ``IoU_k* > tau`` (strictly); refined label = ``M_k*`` where matched, else ``P``.
    """
    return iom_from_overlaps(P, M, valid, candidate_overlaps(P, M, valid), tau)


def cpi_rules(ov: Overlaps, valid: Tensor, t1: float, t2: float) -> tuple[Tensor, Tensor]:
    """The candidates each CPI rule selects: (r1 > t1, r2 > t2), bool [B, K] each."""
    r1 = _ratio(ov.inter, ov.area_p[:, None])  # share of P covered by M_k (CPI-U)
    r2 = _ratio(ov.inter, ov.area_m)  # share of M_k inside P (CPI-O)
    return valid & (r1 > t1), valid & (r2 > t2)


def _union_of(M: Masks, selected: Tensor) -> Tensor:
    """Per sample, the union (OR) of the candidates with ``selected`` set: bool [B, H, W].

    Bit-packed candidates: :meth:`PackedMasks.union`. Bool ones: the selected masks (as words) are added per sample with one ``index_add_``: each byte lane
    then counts the selected masks covering its pixel, and the union is where that count is not
    0. A sample's selected masks go to groups of at most 255 (their own accumulator rows, OR-ed
    at the end), so that no count reaches 256 and overflows.
    """
    if isinstance(M, PackedMasks):
        return M.union(selected)
    batch, k = selected.shape
    pixels = M.shape[2] * M.shape[3]
    sample, slot = selected.nonzero(as_tuple=True)
    chosen = M.reshape(batch * k, pixels).index_select(0, sample * k + slot)  # [S, H * W]
    group = (selected.cumsum(1) - 1)[sample, slot] // _LANE_WORDS
    groups = int(group.max()) + 1 if group.numel() else 1
    counts = torch.zeros(batch * groups, -(-pixels // 8), dtype=torch.int64, device=M.device)
    counts.index_add_(0, sample * groups + group, _as_words(chosen))
    union = counts.view(torch.uint8).view(batch, groups, -1).amax(1).bool()  # count > 0
    return union[:, :pixels].reshape(batch, *M.shape[2:])


def cpi_union(
    P: Tensor, M: Masks, by_u: Tensor, by_o: Tensor, use_u: bool, use_o: bool
) -> CPIResult:
    if not (use_u or use_o):
        raise ValueError("CPI needs at least one of its rules (use_u, use_o)")
    selected = (by_u & use_u) | (by_o & use_o)
    matched = selected.any(1)
    return CPIResult(_keep_unmatched(matched, _union_of(M, selected), P), matched, selected)


def cpi(
    P: Tensor,
    M: Masks,
    valid: Tensor,
    t1: float = T1,
    t2: float = T2,
    use_u: bool = True,
    use_o: bool = True,
) -> CPIResult:
    """Composite parts integration (CPI).

    ``r1_k = |M_k AND P| / |P|`` (CPI-U: M_k covers most of an under-segmented P; 0 if |P| = 0),
    ``r2_k = |M_k AND P| / |M_k|`` (CPI-O: M_k is a part lying inside P; 0 if |M_k| = 0),
    ``S = {k : r1_k > t1 or r2_k > t2}`` (either term can be switched off);
    refined label = ``OR_{k in S} M_k`` where S is not empty, else ``P``.
    """
    by_u, by_o = cpi_rules(candidate_overlaps(P, M, valid), valid, t1, t2)
    return cpi_union(P, M, by_u, by_o, use_u, use_o)


class SoftIOMResult(NamedTuple):
    """Output of :func:`soft_iom`."""

    refined: Tensor  # [B, H, W] bool: M_k* where matched, else P
    matched: Tensor  # [B] bool: softIoU_k* > tau
    index: Tensor  # [B] int64: k*, -1 when a sample has no valid candidate
    score: Tensor  # [B] float64: softIoU_k* (0 without candidates)


def soft_iom(P: Tensor, p: Tensor, M: Masks, valid: Tensor, tau: float = 0.0) -> SoftIOMResult:
    """Soft IoU matching (ours, beyond the paper): choose the candidate that best agrees with
    the teacher's PROBABILITY, not with its thresholded label.

    ``softIoU_k = sum_x p(x) M_k(x) / (|M_k| + sum_x p(x) - sum_x p(x) M_k(x))`` (the IoU of M_k
    with p read as a fuzzy set), ``k* = argmax_k softIoU_k``; matched iff ``softIoU_k* > tau``;
    refined label = ``M_k*`` where matched, else ``P``. A teacher unsure between two objects
    (p near 0.5 on both) scores both candidates lower than one it is sure of, where IOM's
    binary P may have kept only the wrong one.
    """
    check_inputs(P, M, valid)
    if isinstance(M, PackedMasks):
        M = M.unpack()  # the soft score weighs every pixel by p
    batch, k = valid.shape
    has_any = valid.any(1)
    if k == 0:
        none = torch.full((batch,), -1, dtype=torch.int64, device=P.device)
        return SoftIOMResult(
            P.bool().clone(), has_any, none, torch.zeros(batch, dtype=torch.float64)
        )
    pf = p.double().flatten(1)  # [B, N]
    inter = torch.einsum("bkn,bn->bk", M.flatten(2).double(), pf)
    area = M.flatten(2).sum(-1, dtype=torch.float64)
    score = _ratio(inter, area + pf.sum(1, keepdim=True) - inter).masked_fill(~valid, -1.0)
    index = score.argmax(1)
    best_score = score.gather(1, index[:, None])[:, 0].clamp(min=0.0)
    matched = has_any & (best_score > tau)
    best = M.flatten(0, 1).index_select(0, torch.arange(batch, device=M.device) * k + index)
    refined = _keep_unmatched(matched, best.bool(), P)
    return SoftIOMResult(refined, matched, index.masked_fill(~has_any, -1), best_score)


def expression_consensus(probs: Tensor, owner: Tensor, batch: int) -> Tensor:
    """The teacher's probability for each OBJECT: the mean of its probability maps over all the
    expressions of the object (ours, beyond the paper).

    ``probs`` [N, H, W] are the teacher's foreground probabilities for N (image, expression)
    pairs; ``owner`` [N] int64 says which of the ``batch`` samples (objects) each pair belongs
    to. Returns [batch, H, W]: ``p_b = mean_{n : owner_n = b} probs_n`` (a sample without
    pairs gets 0). Every expression names the same object, so where they agree the object is;
    one expression's mistake (the wrong one of two look-alikes) is outvoted.
    """
    if probs.dim() != 3 or owner.shape != probs.shape[:1]:
        raise ValueError(
            f"expected probs [N, H, W] and owner [N]; got {tuple(probs.shape)}, {tuple(owner.shape)}"
        )
    total = probs.new_zeros(batch, *probs.shape[1:]).index_add_(0, owner, probs)
    count = torch.bincount(owner, minlength=batch).to(probs.dtype).clamp(min=1)
    return total / count[:, None, None]


def pwa_weights(p: Tensor, sigma2: float = PWA_SIGMA2, offset: float = PWA_OFFSET) -> Tensor:
    """Pixel-wise adjustment (PWA) weights for samples without a match.

    ``w(x) = offset - exp(-(p(x) - 0.5)^2 / (2 s)) / sqrt(2 pi s)``, ``s = sigma2`` (a variance).
    With the defaults: 0.94 at p = 0 or 1, 0.50 at 0.2 / 0.8, 0.10 at 0.4 / 0.6, 0.04 at 0.5.
    Same dtype and device as ``p``.
    """
    gauss = torch.exp(-((p - 0.5) ** 2) / (2.0 * sigma2)) / math.sqrt(2.0 * math.pi * sigma2)
    return offset - gauss


def confidence_filter(p: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Confidence-filtered pseudo-label (a baseline): ``(label, ignore)``, bool [B, H, W] each.

    ``label = p > 0.5`` (the argmax of 2 classes); ``ignore = max(p, 1 - p) < threshold``.
    """
    return p > 0.5, torch.maximum(p, 1.0 - p) < threshold


@dataclass
class RefineResult:
    """Refined pseudo-labels and per-pixel loss weights for one unlabeled batch.

    ``counts``: the strategy's own counters (its ``counters``, e.g. ``matched_cpi_u``: samples
    where that CPI rule selected at least one candidate), summed per epoch into the run's
    statistics.
    """

    labels: Tensor  # [B, H, W] bool
    weights: Tensor  # [B, H, W] float (p's dtype)
    matched: Tensor  # [B] bool
    counts: dict[str, int] = field(default_factory=dict)
    #: [B, K] bool: the candidates the rule chose (IOM / soft: k* of matched samples; CPI: S);
    #: None for strategies without candidates
    selected: Tensor | None = None

    def mirrored(self, where: Tensor) -> RefineResult:
        """The result with the labels and weights of the samples where ``where`` [B] is True
        mirrored left to right (the student's flipped view, ``semi.flip_student``)."""
        w = where.to(self.labels.device)[:, None, None]
        labels = torch.where(w, self.labels.flip(-1), self.labels)
        weights = torch.where(w, self.weights.flip(-1), self.weights)
        return RefineResult(labels, weights, self.matched, self.counts, self.selected)

    def subset(self, keep: Tensor) -> RefineResult:
        """The result of the samples where ``keep`` [B] is True (the counters unchanged)."""
        selected = None if self.selected is None else self.selected[keep]
        return RefineResult(
            self.labels[keep], self.weights[keep], self.matched[keep], self.counts, selected
        )


def correction_stats(
    before: Tensor, after: Tensor, gt: Tensor, eps: float = 1e-6
) -> dict[str, Any]:
    """Pseudo-label quality before / after refinement, against GT (never used for training).

    Per sample ``IoU_before = IoU(before, gt)`` and ``IoU_after = IoU(after, gt)`` (float64 [B],
    0 where both masks are empty). A correction is ``positive`` if ``IoU_after - IoU_before >
    eps``, ``negative`` if it is ``< -eps``, ``no_change`` otherwise. ``eps = 1e-6`` absorbs
    rounding only: one pixel more or less in the intersection moves the IoU by 1/U, which is
    more than 1e-6 for any union U under 10^6 pixels.
    """
    iou_before = iou_from_counts(*intersection_union(before, gt))
    iou_after = iou_from_counts(*intersection_union(after, gt))
    delta = iou_after - iou_before
    return {
        "iou_before": iou_before,
        "iou_after": iou_after,
        "positive": int((delta > eps).sum()),
        "negative": int((delta < -eps).sum()),
        "no_change": int((delta.abs() <= eps).sum()),
    }

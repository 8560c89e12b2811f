"""Referring-expression-segmentation metrics: oIoU, mIoU and Prec@X (docs/method.md section 1).

Per sample (one sentence), with binary masks ``pred`` and ``gt``::

    I = |pred AND gt|,   U = |pred OR gt|,   IoU = I / U   (IoU = 0 when U = 0)

Over a set of samples::

    oIoU = sum(I) / sum(U)        (overall IoU, the headline number; 0 when sum(U) = 0)
    mIoU = mean(IoU)
    Prec@t = share of samples with IoU >= t,   t in 0.5, 0.6, 0.7, 0.8, 0.9

U = 0 happens when both masks are empty; such a sample counts as IoU 0 (it is not a hit at any
threshold), as the LAVT evaluation code does. Everything is returned as a fraction in [0, 1];
:meth:`RESMetrics.report` converts the aggregates to percent for json files and tables.

Two protocols (always say which one a table uses):

- ``lavt`` (what SemiRES reports): prediction and GT are resized to 480x480 before scoring. Masks
  are resized with nearest neighbour exactly as PIL computes it (LAVT resizes the GT with PIL);
  2-class logits are resized bilinearly (``align_corners=True``, as LAVT's decoder) and then
  argmax-ed, see :func:`logits_to_masks`.
- ``original``: scored at the GT's own resolution; the prediction must have the same size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from semires.errors import ConfigError, DataError

Protocol = Literal["lavt", "original"]
PROTOCOLS: tuple[str, ...] = ("lavt", "original")
LAVT_SIZE = 480
PRECISION_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)


def check_protocol(protocol: str) -> Protocol:
    """Return ``protocol`` if it is known, else raise a :class:`ConfigError` naming it."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    return protocol  # type: ignore[return-value]


def intersection_union(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample intersection and union pixel counts of two [N, H, W] boolean mask batches.

    ``I_n = |pred_n AND gt_n|``, ``U_n = |pred_n OR gt_n|``; both int64 tensors of shape [N].
    Non-boolean inputs are read as ``x != 0``.
    """
    if pred.shape != gt.shape or pred.dim() != 3:
        raise ValueError(
            f"expected two [N, H, W] mask batches of one shape, got {tuple(pred.shape)} and "
            f"{tuple(gt.shape)}"
        )
    pred, gt = pred.bool(), gt.bool()
    inter = (pred & gt).flatten(1).sum(1)
    union = (pred | gt).flatten(1).sum(1)
    return inter, union


def iou_from_counts(inter: Tensor, union: Tensor) -> Tensor:
    """IoU = I / U in float64, and 0 where U = 0 (an empty prediction on an empty GT)."""
    inter, union = inter.double(), union.double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def lavt_resize_mask(
    mask: np.ndarray | Tensor, size: int | tuple[int, int] = LAVT_SIZE
) -> np.ndarray:
    """Resize one (H, W) binary mask with PIL's nearest neighbour, as LAVT resizes the ground
    truth for scoring (``transforms.py:39`` of yz93/LAVT-RIS). Not the same pixels as
    :func:`semires.data.transforms.resize_mask` (torch's ``nearest-exact``, for training): the
    two round differently at some sizes, and the protocol must be LAVT's exactly.

    ``size`` is ``(height, width)`` or one int for a square. Returns (h, w) uint8 in {0, 1}.
    """
    from PIL import Image

    if isinstance(mask, Tensor):
        mask = mask.detach().cpu().numpy()
    height, width = (size, size) if isinstance(size, int) else size
    image = Image.fromarray((np.asarray(mask) != 0).astype(np.uint8))
    return np.array(image.resize((width, height), Image.NEAREST))


def logits_to_masks(
    logits: Tensor, size: tuple[int, int] | None = None, align_corners: bool = True
) -> Tensor:
    """2-class logits [N, 2, h, w] -> boolean masks [N, H, W] (foreground = argmax is class 1).

    With ``size`` the logits are first resized bilinearly (``align_corners=True`` as LAVT's
    decoder does); the mask is then ``logit_1 > logit_0`` (argmax, ties go to background).
    """
    if logits.dim() != 4 or logits.shape[1] != 2:
        raise ValueError(f"expected 2-class logits [N, 2, h, w], got {tuple(logits.shape)}")
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = torch.nn.functional.interpolate(
            logits.float(), size=size, mode="bilinear", align_corners=align_corners
        )
    return logits.argmax(1).bool()


def protocol_size(protocol: str, gt_size: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) at which ``protocol`` scores a sample whose GT has size ``gt_size``."""
    if check_protocol(protocol) == "lavt":
        return (LAVT_SIZE, LAVT_SIZE)
    return (int(gt_size[0]), int(gt_size[1]))


def apply_protocol(
    pred: np.ndarray, gt: np.ndarray, protocol: str, sample: str = "sample"
) -> tuple[np.ndarray, np.ndarray]:
    """Bring one (prediction, GT) pair of binary masks to the resolution ``protocol`` scores at.

    ``lavt`` resizes both to 480x480 (nearest); ``original`` keeps them and requires equal
    sizes, raising a :class:`DataError` that names ``sample`` otherwise.
    """
    if check_protocol(protocol) == "lavt":
        return lavt_resize_mask(pred), lavt_resize_mask(gt)
    if pred.shape != gt.shape:
        raise DataError(
            f"{sample}: prediction size {_hw(pred.shape)} differs from ground truth "
            f"{_hw(gt.shape)} (protocol 'original' needs equal sizes; 'lavt' resizes both)"
        )
    return pred, gt


def _hw(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


class RESMetrics:
    """Streaming accumulator of oIoU / mIoU / Prec@X, mergeable across processes.

    The whole state is a few sums (:meth:`sums`): sum(I), sum(U), sum(IoU), the sample count and
    one hit count per threshold. A distributed evaluation all-reduces that vector::

        sums = metrics.sums(device)
        torch.distributed.all_reduce(sums)
        metrics.load_sums(sums)

    With ``keep_per_sample=True`` every sample's IoU is also kept under its key (a file stem, a
    sentence id), with its counts (I, U and the ground truth's area |G|, for paired comparisons
    and the small-object analysis: :mod:`semires.evaluate.compare`); keys must then be given and
    unique.
    """

    def __init__(
        self,
        thresholds: Iterable[float] = PRECISION_THRESHOLDS,
        keep_per_sample: bool = False,
    ) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        self.keep_per_sample = keep_per_sample
        self._sums = torch.zeros(4 + len(self.thresholds), dtype=torch.float64)
        self._per_sample: dict[str, float] = {}
        self._counts: dict[str, tuple[float, float, float]] = {}

    def update(self, pred: Tensor, gt: Tensor, keys: Sequence[Any] | None = None) -> Tensor:
        """Add a batch of [N, H, W] masks (already at the protocol's resolution).

        Returns the batch's per-sample IoU (float64, [N]).
        """
        inter, union = intersection_union(pred, gt)
        area = torch.as_tensor(gt).reshape(len(inter), -1).bool().sum(1)
        return self.update_counts(inter, union, keys, area)

    def update_counts(
        self,
        inter: Tensor,
        union: Tensor,
        keys: Sequence[Any] | None = None,
        area: Tensor | None = None,
    ) -> Tensor:
        """Add samples given by their intersection / union counts ([N] each; ``area``: the
        ground truths' pixel counts, kept per sample); returns IoU [N]."""
        inter = torch.as_tensor(inter).detach().cpu().double().reshape(-1)
        union = torch.as_tensor(union).detach().cpu().double().reshape(-1)
        if inter.shape != union.shape:
            raise ValueError(f"I and U differ in length: {inter.numel()} vs {union.numel()}")
        iou = iou_from_counts(inter, union)
        if self.keep_per_sample:
            area = torch.full_like(inter, float("nan")) if area is None else torch.as_tensor(area)
            self._keep(iou, keys, inter, union, area.detach().cpu().double().reshape(-1))
        hits = [float((iou >= t).sum()) for t in self.thresholds]
        counts = [float(inter.sum()), float(union.sum()), float(iou.sum()), float(iou.numel())]
        self._sums += torch.tensor(counts + hits, dtype=torch.float64)
        return iou

    def _keep(
        self, iou: Tensor, keys: Sequence[Any] | None, inter: Tensor, union: Tensor, area: Tensor
    ) -> None:
        if keys is None or len(keys) != iou.numel():
            raise ValueError("keep_per_sample needs one key per sample")
        rows = zip(keys, iou.tolist(), inter.tolist(), union.tolist(), area.tolist(), strict=True)
        for key, value, i, u, a in rows:
            name = str(key)
            if name in self._per_sample:
                raise ValueError(f"sample key {name!r} was scored twice")
            self._per_sample[name] = value
            self._counts[name] = (i, u, a)

    def sums(self, device: torch.device | str | None = None) -> Tensor:
        """A copy of the state vector [sum I, sum U, sum IoU, n, hits@t...] (float64)."""
        return self._sums.clone().to(device) if device is not None else self._sums.clone()

    def load_sums(self, sums: Tensor) -> None:
        """Replace the state vector (e.g. with its all-reduced version)."""
        sums = sums.detach().cpu().double()
        if sums.shape != self._sums.shape:
            raise ValueError(f"expected a state vector of shape {tuple(self._sums.shape)}")
        self._sums = sums.clone()

    def merge(self, other: RESMetrics) -> None:
        """Add another accumulator's samples (same thresholds) to this one."""
        if other.thresholds != self.thresholds:
            raise ValueError("cannot merge metrics with different thresholds")
        if self.keep_per_sample:
            both = self._per_sample.keys() & other._per_sample.keys()
            if both:
                raise ValueError(f"sample key {sorted(both)[0]!r} was scored twice")
            self._per_sample.update(other._per_sample)
            self._counts.update(other._counts)
        self._sums += other._sums

    @property
    def n(self) -> int:
        """Number of samples scored."""
        return int(self._sums[3].item())

    @property
    def per_sample(self) -> dict[str, float]:
        """IoU of every sample by key (only with ``keep_per_sample``)."""
        return dict(self._per_sample)

    @property
    def per_sample_counts(self) -> dict[str, tuple[float, float, float]]:
        """(I, U, |G|) of every sample by key (only with ``keep_per_sample``)."""
        return dict(self._counts)

    def compute(self) -> dict[str, Any]:
        """Aggregates as fractions: ``{"oIoU", "mIoU", "precision": {t: share}, "n"}``.

        An empty accumulator reports zeros with ``n = 0``.
        """
        sum_i, sum_u, sum_iou, n = self._sums[:4].tolist()
        hits = self._sums[4:].tolist()
        return {
            "oIoU": sum_i / sum_u if sum_u > 0 else 0.0,
            "mIoU": sum_iou / n if n > 0 else 0.0,
            "precision": {
                t: (h / n if n > 0 else 0.0) for t, h in zip(self.thresholds, hits, strict=True)
            },
            "n": int(n),
        }

    def report(self, protocol: str) -> dict[str, Any]:
        """The json-ready report: aggregates in percent, per-sample IoU as fractions.

        ``{"oIoU": %, "mIoU": %, "precision": {"0.5": %, ...}, "per_sample": {key: IoU},
        "protocol": ..., "n": ...}`` (``per_sample`` only with ``keep_per_sample``).
        """
        agg = self.compute()
        out: dict[str, Any] = {
            "oIoU": 100.0 * agg["oIoU"],
            "mIoU": 100.0 * agg["mIoU"],
            "precision": {f"{t:g}": 100.0 * v for t, v in agg["precision"].items()},
        }
        if self.keep_per_sample:
            out["per_sample"] = self.per_sample
        out["protocol"] = check_protocol(protocol)
        out["n"] = agg["n"]
        return out

"""How good are the candidates? The ceiling of IOM and CPI (docs/method.md section 4).

For every ground-truth object of a split whose image has candidates:

- ``best_iou``: the highest IoU of a single candidate with the object: what IOM can reach with a
  perfect teacher (it picks the candidate of highest IoU with the pseudo-label);
- ``cpi_iou``: the IoU of the CPI union built against the object itself: the union of every
  candidate M with |M and G| / |G| > t1 or |M and G| / |M| > t2 (the training defaults of
  ``semi.refine.t1`` / ``t2``): what CPI gives with a perfect teacher (0 when no candidate
  qualifies);

plus the number of candidates per image. The pixel counts, the CPI rule and the union are the
training's own (``candidate_overlaps``, ``cpi_rules`` and ``cpi_union`` of
:mod:`semires.train.refine`, with the object as the pseudo-label P and the image's candidates as
M), so the report measures the rule training applies.
:func:`summarise` condenses these (mean, median, share of objects above 0.5 / 0.75 / 0.9) and
:func:`plot_quality` draws their histograms.

It lives in :mod:`semires.train` (above :mod:`semires.proposals`, which must not import the
training code) because it applies the training's rule to a proposal store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semires.data.index import RESIndex
from semires.evaluate.metrics import iou_from_counts
from semires.proposals.checks import check_store_images
from semires.proposals.store import ProposalStore
from semires.train.refine import T1, T2, candidate_overlaps, cpi_rules, cpi_union

__all__ = [
    "DEFAULT_T1",
    "DEFAULT_T2",
    "THRESHOLDS",
    "ObjectQuality",
    "QualityReport",
    "check_store_images",
    "check_threshold",
    "evaluate_quality",
    "format_summary",
    "object_quality",
    "plot_quality",
    "summarise",
]

#: the CPI thresholds training uses unless told otherwise (``semi.refine.t1`` / ``t2``)
DEFAULT_T1: float = T1
DEFAULT_T2: float = T2

THRESHOLDS = (0.5, 0.75, 0.9)

#: what :func:`evaluate_quality` counts unless given the images
DEFAULT_COUNTED = "the images the store was made for (those in it, and those it could not read)"


@dataclass(frozen=True)
class ObjectQuality:
    """The candidates' fit to one ground-truth object."""

    image_id: int
    object_id: int
    area: int
    best_iou: float
    best_candidate: int  # index into the image's candidates (-1: none)
    cpi_iou: float
    cpi_candidates: int  # how many candidates the CPI union joins


@dataclass
class QualityReport:
    """Per-object results and candidates per image, over the images the store was made for
    (``counted``: how they were chosen); ``missing_images``: those of them without candidates
    (unreadable, or not made yet); ``not_proposed``: the split's other images (e.g. the labeled
    ones, which are never proposed), left out of every number."""

    generator: str
    split: str | None
    objects: list[ObjectQuality] = field(default_factory=list)
    candidates_per_image: dict[int, int] = field(default_factory=dict)
    missing_images: list[int] = field(default_factory=list)
    t1: float = DEFAULT_T1
    t2: float = DEFAULT_T2
    not_proposed: list[int] = field(default_factory=list)
    counted: str = DEFAULT_COUNTED


def object_quality(
    masks: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    t1: float = DEFAULT_T1,
    t2: float = DEFAULT_T2,
) -> tuple[float, int, float, int]:
    """``(best_iou, best_index, cpi_iou, cpi_count)`` of [K, H, W] bool candidates vs an (H, W)
    ground truth (IoU 0 and index -1 when there are no candidates or the object is empty).

    The ground truth is the pseudo-label P of training's rules and the candidates are M:
    ``best_index`` is the first candidate of highest IoU, the CPI union joins the candidates
    :func:`~semires.train.refine.cpi_rules` selects (both rules on).
    """
    M = torch.as_tensor(masks).bool()
    P = torch.as_tensor(gt).bool()
    if len(M) == 0 or not bool(P.any()):
        return 0.0, -1, 0.0, 0
    P, M = P[None], M.contiguous()[None]
    valid = torch.ones(M.shape[:2], dtype=torch.bool)
    ov = candidate_overlaps(P, M, valid)
    iou = iou_from_counts(ov.inter, ov.area_m + ov.area_p[:, None] - ov.inter)[0]
    best = int(iou.argmax())
    by_u, by_o = cpi_rules(ov, valid, t1, t2)
    cpi = cpi_union(P, M, by_u, by_o, use_u=True, use_o=True)
    chosen = int(cpi.selected.sum())
    cpi_iou = 0.0
    if chosen:
        union = cpi.refined
        cpi_iou = float(iou_from_counts((union & P).sum(), (union | P).sum()))
    return float(iou[best]), best, cpi_iou, chosen


def check_threshold(name: str, value: float) -> float:
    """A CPI threshold (``t1`` / ``t2``) must be a number in [0, 1], as ``semi.refine.<name>``
    of a training config must: a :class:`~semires.errors.ConfigError` otherwise (nan too)."""
    from semires.errors import ConfigError

    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not 0.0 <= value <= 1.0:
        raise ConfigError(
            f"--{name} {value!r}: expected a number in [0, 1] (as semi.refine.{name} of a config)"
        )
    return float(value)


def evaluate_quality(
    store: ProposalStore,
    index: RESIndex,
    split: str | None = "train",
    t1: float = DEFAULT_T1,
    t2: float = DEFAULT_T2,
    progress: bool = True,
    image_ids: list[int] | None = None,
    counted: str | None = None,
) -> QualityReport:
    """Score the candidates of ``store`` against the referred objects of ``split`` of ``index``,
    on the images the store was made for: ``image_ids`` (e.g. the unlabeled images of a split
    folder, as ``propose --split-dir`` chose them; ``counted`` says so in words), by default the
    images in the store and those its generation could not read (``failed.json``).

    Candidates are read at the stored size; an image whose real size differs, or whose
    candidates were made from another image file, raises a
    :class:`~semires.errors.ProposalError`. Those images without candidates are listed in
    ``missing_images``; the split's other images (labeled ones are never proposed) in
    ``not_proposed``; both are left out of the numbers.
    """
    from semires.utils.progress import progress_bar

    t1, t2 = check_threshold("t1", t1), check_threshold("t2", t2)
    report = QualityReport(store.generator, split, t1=t1, t2=t2)
    objects_of: dict[int, set[int]] = {}
    for ref in index.refs_in(split):
        objects_of.setdefault(ref.image_id, set()).add(ref.object_id)
    if image_ids is None:
        wanted = {i for i in objects_of if store.has(i)} | _failed_images(store)
    else:
        wanted = set(image_ids)
        report.counted = counted or f"{len(wanted)} given images"
    report.not_proposed = sorted(set(objects_of) - wanted)
    objects_of = {i: objs for i, objs in objects_of.items() if i in wanted}
    check_store_images(store, index, list(objects_of), progress=progress)
    for image_id in progress_bar(sorted(objects_of), enabled=progress, desc="quality", unit="img"):
        if not store.has(image_id):
            report.missing_images.append(image_id)
            continue
        masks = store.masks(image_id, expect_size=index.image_size(image_id)).contiguous()
        report.candidates_per_image[image_id] = len(masks)
        for object_id in sorted(objects_of[image_id]):
            gt = index.mask(object_id)
            best, best_k, cpi, n_cpi = object_quality(masks, gt.astype(bool), t1, t2)
            report.objects.append(
                ObjectQuality(image_id, object_id, int(gt.sum()), best, best_k, cpi, n_cpi)
            )
    return report


def _failed_images(store: ProposalStore) -> set[int]:
    """The images the store's generation could not read (its ``failed.json``; none without)."""
    import json

    path = Path(store.root) / "failed.json"
    try:
        return {int(k) for k in json.loads(path.read_text(encoding="utf-8"))}
    except (OSError, ValueError, TypeError, AttributeError):
        return set()


def _distribution(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, **{f"share_gt_{t}": None for t in THRESHOLDS}}
    arr = np.asarray(values, np.float64)
    return {
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        **{f"share_gt_{t}": float((arr > t).mean()) for t in THRESHOLDS},
    }


def summarise(report: QualityReport) -> dict[str, Any]:
    """The headline numbers (JSON-friendly) plus the per-object records."""
    counts = np.asarray(list(report.candidates_per_image.values()), np.float64)
    return {
        "generator": report.generator,
        "split": report.split,
        "images": len(report.candidates_per_image),
        "objects": len(report.objects),
        "images_without_candidates": len(report.missing_images),
        "images_not_proposed": len(report.not_proposed),
        "counted": report.counted,
        "cpi_thresholds": {"t1": report.t1, "t2": report.t2},
        "best_iou": _distribution([o.best_iou for o in report.objects]),
        "cpi_iou": _distribution([o.cpi_iou for o in report.objects]),
        "candidates_per_image": {
            "mean": float(counts.mean()) if len(counts) else None,
            "median": float(np.median(counts)) if len(counts) else None,
            "min": int(counts.min()) if len(counts) else None,
            "max": int(counts.max()) if len(counts) else None,
        },
        "per_object": [asdict(o) for o in report.objects],
        "candidates_by_image": {str(k): v for k, v in sorted(report.candidates_per_image.items())},
        "missing_images": report.missing_images,
        "not_proposed_images": report.not_proposed,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A few readable lines of a :func:`summarise` result."""

    def line(name: str, dist: dict[str, Any]) -> str:
        if dist["mean"] is None:
            return f"{name}: no objects"
        shares = "  ".join(f">{t}: {dist[f'share_gt_{t}']:.1%}" for t in THRESHOLDS)
        return f"{name}: mean {dist['mean']:.3f}  median {dist['median']:.3f}  {shares}"

    cands = summary["candidates_per_image"]
    counted = f"counted: {summary.get('counted', DEFAULT_COUNTED)}"
    if summary.get("images_not_proposed"):
        counted += (
            f"; left out: {summary['images_not_proposed']} images of the split the store was not "
            "made for (labeled images are never proposed)"
        )
    lines = [
        f"{summary['generator']} candidates, split {summary['split']}: {summary['images']} images, "
        f"{summary['objects']} objects ({summary['images_without_candidates']} images without "
        "candidates)",
        counted,
        line("best IoU (IOM ceiling)", summary["best_iou"]),
        line("CPI-union IoU (CPI ceiling)", summary["cpi_iou"]),
    ]
    if cands["mean"] is not None:
        lines.append(
            f"candidates per image: mean {cands['mean']:.1f}  median {cands['median']:.0f}  "
            f"min {cands['min']}  max {cands['max']}"
        )
    return "\n".join(lines)


def plot_quality(summary: dict[str, Any], path: str | Path) -> None:
    """Histograms of best IoU, CPI-union IoU and candidates per image, as a PNG (atomic)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semires.utils.io import atomic_write_bytes

    per_object = summary["per_object"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in (
        (axes[0], "best_iou", "best single candidate (IOM ceiling)"),
        (axes[1], "cpi_iou", "CPI union vs GT (CPI ceiling)"),
    ):
        values = [o[key] for o in per_object]
        ax.hist(values, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
        mean = summary[key]["mean"]
        ax.set_title(f"{title}\nmean {mean:.3f}" if mean is not None else title, fontsize=9)
        ax.set_xlabel("IoU with the ground-truth object")
        ax.set_ylabel("objects")
    axes[2].hist(
        list(summary["candidates_by_image"].values()), bins=20, color="tab:green", edgecolor="white"
    )
    axes[2].set_title(
        f"candidates per image\nmean {summary['candidates_per_image']['mean'] or 0:.1f}",
        fontsize=9,
    )
    axes[2].set_xlabel("candidates")
    axes[2].set_ylabel("images")
    fig.suptitle(
        f"{summary['generator']} proposals, split {summary['split']}: "
        f"{summary['objects']} objects on {summary['images']} images",
        fontsize=10,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())

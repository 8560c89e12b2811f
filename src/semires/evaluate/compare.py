"""Comparisons that hold: spread over seeds, paired bootstrap intervals over sentences, and the
small-object analysis.

Inputs are per-sentence counts ``{key: (I, U, |G|)}`` (a stage's ``samples.json``, see
:class:`semires.evaluate.metrics.RESMetrics`): the same test sentences for every method and
seed, so two methods are compared sentence by sentence.

- :func:`spread`: mean, standard deviation (n - 1), min and max of a figure over seeds;
- :func:`paired_bootstrap`: the oIoU difference of method A minus method B, with a 95%
  interval from resampling the sentences (the same resample for both methods, and for every
  seed when several are given: the interval is that of the mean over seeds);
- :func:`small_objects`: oIoU over the sentences whose referred object is among the smallest
  ``share`` by mask area (the paper's analysis: the smallest 5%).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Counts = Mapping[str, Sequence[float]]


def oiou(counts: Counts, keys: Sequence[str] | None = None) -> float:
    """oIoU in percent: sum(I) / sum(U) over ``keys`` (default: all)."""
    keys = list(counts) if keys is None else keys
    inter = sum(float(counts[k][0]) for k in keys)
    union = sum(float(counts[k][1]) for k in keys)
    return 100.0 * inter / union if union > 0 else 0.0


def spread(values: Sequence[float]) -> dict[str, float]:
    """``{"mean", "std", "min", "max", "n"}`` of a figure over seeds (std 0 for one value)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("spread of no values")
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {
        "mean": statistics.fmean(vals),
        "std": std,
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
    }


def _arrays(runs: Sequence[Counts], keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    inter = np.array([[float(r[k][0]) for k in keys] for r in runs])
    union = np.array([[float(r[k][1]) for k in keys] for r in runs])
    return inter, union


def paired_bootstrap(
    a: Counts | Sequence[Counts],
    b: Counts | Sequence[Counts],
    *,
    samples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """oIoU(A) - oIoU(B) in points with a bootstrap interval over sentences.

    ``a`` / ``b``: one run's counts each, or one per seed (paired: ``a[s]`` with ``b[s]``).
    Returns ``{"diff", "low", "high", "share_above_0", "sentences", "seeds"}``: ``diff`` is the
    mean over seeds of the per-seed differences; the interval resamples the sentences with
    replacement (the same draw for every method and seed), so it says how much the difference
    depends on which sentences were drawn. ``share_above_0``: the share of resamples in which
    A beats B.
    """
    runs_a = [a] if isinstance(a, Mapping) else list(a)
    runs_b = [b] if isinstance(b, Mapping) else list(b)
    if len(runs_a) != len(runs_b) or not runs_a:
        raise ValueError(f"paired runs needed: {len(runs_a)} vs {len(runs_b)}")
    keys = sorted(set.intersection(*(set(r) for r in [*runs_a, *runs_b])))
    if not keys:
        raise ValueError("the runs share no sentence")
    ia, ua = _arrays(runs_a, keys)
    ib, ub = _arrays(runs_b, keys)
    point = float(np.mean(100 * ia.sum(1) / ua.sum(1) - 100 * ib.sum(1) / ub.sum(1)))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(keys), size=(samples, len(keys)))
    diffs = np.zeros(samples)
    for s in range(ia.shape[0]):
        sa = 100 * ia[s][draws].sum(1) / np.maximum(ua[s][draws].sum(1), 1e-12)
        sb = 100 * ib[s][draws].sum(1) / np.maximum(ub[s][draws].sum(1), 1e-12)
        diffs += (sa - sb) / ia.shape[0]
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return {
        "diff": point,
        "low": float(low),
        "high": float(high),
        "share_above_0": float((diffs > 0).mean()),
        "sentences": len(keys),
        "seeds": ia.shape[0],
    }


def pooled_bootstrap(
    groups: Sequence[tuple[Sequence[Counts], Sequence[Counts]]],
    *,
    samples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """:func:`paired_bootstrap` over several datasets at once (e.g. synthetic data seeds, each
    with its own test sentences and its training seeds): the difference is the mean over every
    (dataset, seed) run; each resample draws each dataset's sentences anew."""
    rng = np.random.default_rng(seed)
    point, total, runs = 0.0, np.zeros(samples), 0
    for runs_a, runs_b in groups:
        keys = sorted(set.intersection(*(set(r) for r in [*runs_a, *runs_b])))
        ia, ua = _arrays(runs_a, keys)
        ib, ub = _arrays(runs_b, keys)
        point += float(np.sum(100 * ia.sum(1) / ua.sum(1) - 100 * ib.sum(1) / ub.sum(1)))
        draws = rng.integers(0, len(keys), size=(samples, len(keys)))
        for s in range(ia.shape[0]):
            sa = 100 * ia[s][draws].sum(1) / np.maximum(ua[s][draws].sum(1), 1e-12)
            sb = 100 * ib[s][draws].sum(1) / np.maximum(ub[s][draws].sum(1), 1e-12)
            total += sa - sb
        runs += ia.shape[0]
    if not runs:
        raise ValueError("no runs to compare")
    diffs = total / runs
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return {
        "diff": point / runs,
        "low": float(low),
        "high": float(high),
        "share_above_0": float((diffs > 0).mean()),
        "runs": runs,
    }


def small_objects(counts: Counts, share: float = 0.05) -> dict[str, float]:
    """oIoU over the sentences whose ground truth is among the smallest ``share`` by area
    (ties at the cut included); ``{"oIoU", "sentences", "max_area"}``."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    keys = sorted(counts, key=lambda k: float(counts[k][2]))
    if not keys:
        return {"oIoU": 0.0, "sentences": 0, "max_area": 0.0}
    cut = float(counts[keys[max(0, int(np.ceil(share * len(keys))) - 1)]][2])
    chosen = [k for k in keys if float(counts[k][2]) <= cut]
    return {"oIoU": oiou(counts, chosen), "sentences": len(chosen), "max_area": cut}


def summarise(values: Any) -> str:
    """``mean ± std (min..max)`` of a :func:`spread`, for tables."""
    s = values if isinstance(values, dict) else spread(values)
    if s["n"] == 1:
        return f"{s['mean']:.2f}"
    return f"{s['mean']:.2f} ± {s['std']:.2f} ({s['min']:.2f}..{s['max']:.2f})"

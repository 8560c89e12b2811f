"""What the report reads of a run: its inputs, the training histories and per-sentence counts,
the curves' points, the pseudo-label statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semires.layout import RunLayout
from semires.train.teacher_student import reported_keys


@dataclass
class ReportInputs:
    """What the report needs of a run (the pipeline gives it; nothing else is read)."""

    layout: RunLayout
    name: str
    labeled: str
    val_split: str
    #: qualitative examples to draw
    qualitative: int
    #: the run config as data (saved in results.json)
    config: dict[str, Any]
    #: seconds per stage
    timings: dict[str, float]
    #: the training config of each teacher-student method (data, refinement, proposals)
    stage_configs: dict[str, Any]
    #: the burn-in checkpoint (the teacher of the pseudo-labels shown)
    burn_in: Path
    split_dir: Path
    #: the run's dataset, read once by the pipeline (None: read from the stage configs)
    index: Any = None


def headline_split(metrics: dict[str, Any], val_split: str) -> str:
    """The split a table reports: all test splits together when there are several."""
    splits = [s for s in metrics["splits"] if s != val_split]
    combined = [s for s in splits if "+" in s]
    if combined:
        return combined[0]
    return splits[0] if splits else val_split


def read_history(path: Path) -> list[dict[str, Any]]:
    """A stage's history.json (one record per epoch); empty when there is none."""
    return json.loads(path.read_text()) if path.is_file() else []


def stage_samples(layout: RunLayout, stage: str, splits: list[str]) -> dict[str, Any]:
    """A stage's per-sentence counts over ``splits`` together (from its samples.json)."""
    path = layout.stage(stage).samples
    data = json.loads(path.read_text()) if path.is_file() else {}
    out: dict[str, Any] = {}
    for split in splits:
        out.update(data.get(split, {}))
    return out


def curve_points(
    hist: list[dict[str, Any]], parent: list[dict[str, Any]], val: str
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, loss) and (step, val oIoU) points of one run's history.

    ``parent`` is the history of the run it started from (the burn-in, for a teacher-student
    run; empty otherwise): steps continue from its last step, and the val curve starts at its
    last val score. Epochs without a val evaluation are skipped, so the points join up.
    """
    start = parent[-1]["step"] if parent else 0
    loss = [(start + h["step"], h.get("loss", float("nan"))) for h in hist]
    key = f"{val}_oIoU"
    scored = [(start + h["step"], h[key]) for h in hist if key in h]
    if parent and key in parent[-1]:
        scored.insert(0, (start, parent[-1][key]))
    return loss, scored


def pseudo_label_quality(layout: RunLayout, methods: list[str]) -> dict[str, dict[str, float]]:
    """Last-epoch pseudo-label statistics of each teacher-student run
    (:func:`semires.train.teacher_student.reported_keys`)."""
    out = {}
    for m in methods:
        hist = read_history(layout.stage(m).history)
        if hist and "miss_rate" in hist[-1]:
            out[m] = {k: hist[-1][k] for k in reported_keys() if k in hist[-1]}
    return out

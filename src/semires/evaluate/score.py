"""Score a folder of predicted masks against a folder of ground-truth masks (`semires score`).

Mask files are ``.png`` (0/1 or 0/255) or ``.npy``, read with
:func:`semires.data.masks.read_mask_file`; other files and hidden files are ignored. Predictions
and GT are matched by file stem (``12.png`` scores against ``12.npy``). A stem present in only one
folder, two mask files with one stem in a folder, an empty folder or, under the ``original``
protocol, a size mismatch is a :class:`~semires.errors.DataError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from semires.data.masks import read_mask_file
from semires.errors import DataError, missing
from semires.evaluate.metrics import RESMetrics, apply_protocol, check_protocol

MASK_SUFFIXES: tuple[str, ...] = (".png", ".npy")
SHOWN = 5  # how many names an error message lists before "... (N in all)"


def list_mask_files(folder: str | Path, role: str) -> dict[str, Path]:
    """The mask files of ``folder`` by stem; ``role`` ("prediction" / "ground-truth") for errors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise missing(folder, f"{role} folder")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in MASK_SUFFIXES:
            continue
        if path.stem in files:
            raise DataError(
                f"{role} folder {folder}: two mask files for {path.stem!r} "
                f"({files[path.stem].name}, {path.name}); keep one"
            )
        files[path.stem] = path
    if not files:
        raise DataError(f"{role} folder {folder}: no mask files ({' / '.join(MASK_SUFFIXES)})")
    return files


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown if len(names) <= SHOWN else f"{shown}, ... ({len(names)} in all)"


def match_folders(pred_dir: str | Path, gt_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """(stem, prediction file, GT file) for every stem, sorted; an error if the stems differ."""
    preds = list_mask_files(pred_dir, "prediction")
    gts = list_mask_files(gt_dir, "ground-truth")
    absent = sorted(gts.keys() - preds.keys())
    extra = sorted(preds.keys() - gts.keys())
    if absent or extra:
        parts = []
        if absent:
            parts.append(
                f"{len(absent)} ground-truth masks without a prediction ({_listing(absent)})"
            )
        if extra:
            parts.append(f"{len(extra)} predictions without a ground truth ({_listing(extra)})")
        raise DataError(f"{pred_dir} does not match {gt_dir}: {'; '.join(parts)}")
    return [(stem, preds[stem], gts[stem]) for stem in sorted(gts)]


def score_folders(
    pred_dir: str | Path, gt_dir: str | Path, protocol: str = "lavt", progress: bool = False
) -> dict[str, Any]:
    """Score every prediction against its GT; returns :meth:`RESMetrics.report`'s dict.

    Aggregates are in percent, ``per_sample`` maps each file stem to its IoU in [0, 1].
    """
    from tqdm import tqdm

    check_protocol(protocol)
    pairs = match_folders(pred_dir, gt_dir)
    metrics = RESMetrics(keep_per_sample=True)
    for stem, pred_path, gt_path in tqdm(pairs, desc="scoring", unit="mask", disable=not progress):
        pred, gt = apply_protocol(
            read_mask_file(pred_path), read_mask_file(gt_path), protocol, sample=str(pred_path)
        )
        metrics.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None], keys=[stem])
    return metrics.report(protocol)

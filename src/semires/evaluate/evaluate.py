"""Evaluation of a RES model on a split: every sentence of every ref (docs/method.md section 1).

Predictions are made at the model's input size; the 2-class logits are then resized bilinearly
to the protocol's resolution and arg-maxed: 480x480 for the ``lavt`` protocol (the ground truth is
resized there with nearest neighbour), the image's own size for ``original``. Under DDP each
rank scores a share of the sentences and the sums are reduced, so the figures do not depend on
the number of processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from semires.data.dataset import EvalDataset, collate
from semires.data.index import RESIndex
from semires.data.transforms import normalize, resize_mask
from semires.evaluate.metrics import (
    RESMetrics,
    check_protocol,
    logits_to_masks,
    protocol_size,
)
from semires.evaluate.metrics import resize_mask as protocol_resize
from semires.runtime.distributed import DistInfo, gather_objects


def _panel(image: torch.Tensor, gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """One row of a TensorBoard panel: image | GT overlay | prediction overlay (3, S, 3S)."""
    img = image.float() / 255.0
    red = torch.tensor([1.0, 0.2, 0.2]).view(3, 1, 1)
    green = torch.tensor([0.2, 1.0, 0.2]).view(3, 1, 1)
    g = resize_mask(gt, tuple(img.shape[-2:])).float()
    p = resize_mask(pred, tuple(img.shape[-2:])).float()
    return torch.cat(
        [img, img * (1 - 0.5 * g) + 0.5 * g * green, img * (1 - 0.5 * p) + 0.5 * p * red], dim=2
    )


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    index: RESIndex,
    split: str,
    *,
    size: int,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    info: DistInfo | None = None,
    text: Any = None,
    amp: str = "none",
    protocol: str = "lavt",
    max_sentences: int | None = None,
    pred_dir: str | Path | None = None,
    gt_dir: str | Path | None = None,
    cache_images: bool = False,
    progress: bool = True,
    num_panels: int = 0,
) -> dict[str, Any]:
    """Score ``model`` on ``split``; returns ``{"metrics", "per_sample", "panels", "accumulator"}``
    (the :class:`RESMetrics` holding the sums, to combine splits).

    ``per_sample`` maps ``"<ref_id>_<sent_id>"`` to the IoU in [0, 1]; with ``pred_dir`` /
    ``gt_dir`` the masks are written as PNGs of the same names at the protocol's resolution
    (predictions) and at the original resolution (ground truth), so that ``semires score PRED GT
    --protocol <protocol>`` reproduces the figures.
    """
    from semires.data.masks import write_mask_png
    from semires.runtime.precision import autocast
    from semires.runtime.textcache import TextInputs

    check_protocol(protocol)
    info = info or DistInfo()
    device = torch.device(device)
    text = text or TextInputs(model, device)
    ds = EvalDataset(index, split, size, max_sentences=max_sentences, cache_images=cache_images)
    shard = Subset(ds, list(range(info.rank, len(ds), info.world)))
    loader = DataLoader(shard, batch_size=batch_size, collate_fn=collate, num_workers=0)
    was_training = model.training
    model.eval()
    metrics = RESMetrics(keep_per_sample=True)
    panels: list[torch.Tensor] = []
    bar = None
    if progress and info.is_main:
        from tqdm import tqdm

        bar = tqdm(total=len(shard), desc=f"evaluate {split}", unit="sent", leave=False)
    for batch in loader:
        x = normalize(batch["image"].to(device), model.image_mean, model.image_std)
        with autocast(device, amp):
            logits = model(x, **text(batch["sentence"]))
        lavt_preds = (
            logits_to_masks(logits.float(), protocol_size("lavt", (0, 0))).cpu()
            if protocol == "lavt"
            else None
        )
        for i, gt in enumerate(batch["gt"]):
            if lavt_preds is not None:
                pred, gt_p = lavt_preds[i], torch.from_numpy(protocol_resize(gt)).bool()
            else:
                pred, gt_p = (
                    logits_to_masks(logits[i : i + 1].float(), tuple(gt.shape))[0].cpu(),
                    gt.bool(),
                )
            key = f"{batch['ref_id'][i]}_{batch['sent_id'][i]}"
            metrics.update(pred[None], gt_p[None], keys=[key])
            if pred_dir is not None:
                write_mask_png(Path(pred_dir) / f"{key}.png", pred.numpy())
            if gt_dir is not None:
                write_mask_png(Path(gt_dir) / f"{key}.png", gt.numpy())
            if len(panels) < num_panels and info.is_main:
                panels.append(_panel(batch["image"][i], gt, pred))
        if bar is not None:
            bar.update(len(batch["sentence"]))
    if bar is not None:
        bar.close()
    model.train(was_training)
    merged = RESMetrics(keep_per_sample=True)
    for part in gather_objects(metrics, info):
        merged.merge(part)
    grid = torch.cat(panels, dim=1).clamp(0, 1) if panels else None
    report = merged.report(protocol)  # aggregates in percent
    per_sample = report.pop("per_sample")
    return {"metrics": report, "per_sample": per_sample, "panels": grid, "accumulator": merged}


def score_splits(
    evaluate: Any, splits: list[str], test_splits: list[str], protocol: str
) -> dict[str, Any]:
    """``{split: metrics}`` for ``splits`` then ``test_splits`` (``evaluate(split)`` returns what
    :func:`evaluate_model` does), plus all test splits together (``"testA+testB"``) when there
    are several."""
    scores: dict[str, Any] = {}
    combined = RESMetrics()
    for split in [*splits, *test_splits]:
        result = evaluate(split)
        scores[split] = result["metrics"]
        if split in test_splits:
            combined.merge(result["accumulator"])
    if len(test_splits) > 1:
        scores["+".join(test_splits)] = combined.report(protocol)
    return scores


def evaluate_checkpoint(
    checkpoint: str | Path,
    split: str,
    *,
    protocol: str = "lavt",
    batch_size: int = 16,
    device: str = "auto",
    weights: str = "model",
    data_overrides: dict[str, Any] | None = None,
    pred_dir: str | Path | None = None,
    gt_dir: str | Path | None = None,
    json_out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint and the dataset named in its config (``data_overrides``: DataConfig
    fields that replace it), evaluate a split, write json."""
    from semires.data import load_index
    from semires.errors import ConfigError
    from semires.evaluate.predict import load
    from semires.train.config import DataConfig
    from semires.utils.io import atomic_write_json
    from semires.utils.typed_config import load_dataclass

    if weights not in ("model", "companion"):
        raise ConfigError(f"--weights: expected model or companion, got {weights!r}")
    check_protocol(protocol)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size: expected an integer >= 1, got {batch_size!r}")
    seg = load(checkpoint, device=device, weights=weights)
    stored = dict((seg.config or {}).get("data") or {})
    given = {k: v for k, v in (data_overrides or {}).items() if v is not None}
    if "ann" in given and "format" not in given:
        given["format"] = "semires"  # --ann names a semires json
    if not stored and not given:
        raise ConfigError(
            f"{checkpoint} names no dataset (an imported checkpoint): give --format refer --root "
            "DIR --dataset NAME --split-by BY, or --format semires --ann FILE"
        )
    data = load_dataclass(DataConfig, {**stored, **given}, prefix="data")
    if not (data.root or data.ann):
        raise ConfigError(
            "the dataset location is incomplete: give --root (refer) or --ann (semires)"
        )
    index = load_index(data.spec())
    result = evaluate_model(
        seg.model,
        index,
        split,
        size=seg.img_size,
        batch_size=batch_size,
        device=seg.device,
        text=seg.text,
        protocol=protocol,
        pred_dir=pred_dir,
        gt_dir=gt_dir,
        progress=progress,
    )
    if json_out is not None:
        atomic_write_json(
            json_out,
            {
                "checkpoint": str(checkpoint),
                "split": split,
                "protocol": protocol,
                **result["metrics"],
                "per_sample": result["per_sample"],
            },
        )
    return result

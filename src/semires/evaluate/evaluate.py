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
    lavt_resize_mask,
    logits_to_masks,
    protocol_size,
)
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
    """Score ``model`` on ``split``; returns ``{"metrics", "per_sample", "counts", "panels",
    "accumulator"}`` (``counts``: per sentence (I, U, |G|); ``accumulator``: the
    :class:`RESMetrics` holding the sums, to combine splits).

    ``per_sample`` maps ``"<ref_id>_<sent_id>"`` to the IoU in [0, 1]; with ``pred_dir`` /
    ``gt_dir`` the masks are written as PNGs of the same names at the protocol's resolution
    (predictions) and at the original resolution (ground truth), so that ``semires score PRED GT
    --protocol <protocol>`` reproduces the figures.
    """
    from semires.runtime.textcache import TextInputs
    from semires.utils.progress import progress_bar

    check_protocol(protocol)
    info = info or DistInfo()
    device = torch.device(device)
    text = text or TextInputs(model, device)
    loader = _shard_loader(index, split, size, batch_size, info, max_sentences, cache_images)
    was_training = model.training
    model.eval()
    metrics = RESMetrics(keep_per_sample=True)
    panels: list[torch.Tensor] = []
    enabled = progress and info.is_main
    total = len(loader.dataset)  # type: ignore[arg-type]
    bar = progress_bar(
        total=total, desc=f"evaluate {split}", unit="sent", leave=False, enabled=enabled
    )
    with bar:
        for batch in loader:
            logits = _forward(model, batch, text, device, amp)
            for key, image, gt, pred, gt_p in _scored(batch, logits, protocol):
                metrics.update(pred[None], gt_p[None], keys=[key])
                _write_pair(key, pred, gt, pred_dir, gt_dir)
                if len(panels) < num_panels and info.is_main:
                    panels.append(_panel(image, gt, pred))
            bar.update(len(batch["sentence"]))
    model.train(was_training)
    return _gathered(metrics, panels, protocol, info)


def _shard_loader(
    index: RESIndex,
    split: str,
    size: int,
    batch_size: int,
    info: DistInfo,
    max_sentences: int | None,
    cache_images: bool,
) -> DataLoader:
    """The sentences of ``split`` this rank scores (every ``world``-th), in batches."""
    ds = EvalDataset(index, split, size, max_sentences=max_sentences, cache_images=cache_images)
    shard = Subset(ds, list(range(info.rank, len(ds), info.world)))
    return DataLoader(shard, batch_size=batch_size, collate_fn=collate, num_workers=0)


def _forward(
    model: nn.Module, batch: dict[str, Any], text: Any, device: torch.device, amp: str
) -> torch.Tensor:
    """The model's float32 logits for one batch."""
    from semires.runtime.precision import autocast

    x = normalize(batch["image"].to(device), model.image_mean, model.image_std)
    with autocast(device, amp):
        logits = model(x, **text(batch["sentence"]))
    return logits.float()


def _gathered(
    metrics: RESMetrics, panels: list[torch.Tensor], protocol: str, info: DistInfo
) -> dict[str, Any]:
    """Every rank's sums merged into :func:`evaluate_model`'s result."""
    merged = RESMetrics(keep_per_sample=True)
    for part in gather_objects(metrics, info):
        merged.merge(part)
    grid = torch.cat(panels, dim=1).clamp(0, 1) if panels else None
    report = merged.report(protocol)  # aggregates in percent
    per_sample = report.pop("per_sample")
    return {
        "metrics": report,
        "per_sample": per_sample,
        "counts": merged.per_sample_counts,
        "panels": grid,
        "accumulator": merged,
    }


def _scored(batch: dict[str, Any], logits: torch.Tensor, protocol: str) -> Any:
    """Per sentence of a batch: (key, image, original GT, prediction, GT at the protocol's
    resolution). ``lavt``: both at 480x480 (the prediction from the bilinearly resized logits,
    the GT with PIL's nearest neighbour); ``original``: at the GT's own size."""
    lavt = (
        logits_to_masks(logits, protocol_size("lavt", (0, 0))).cpu() if protocol == "lavt" else None
    )
    for i, gt in enumerate(batch["gt"]):
        if lavt is not None:
            pred, gt_p = lavt[i], torch.from_numpy(lavt_resize_mask(gt)).bool()
        else:
            pred, gt_p = logits_to_masks(logits[i : i + 1], tuple(gt.shape))[0].cpu(), gt.bool()
        key = f"{batch['ref_id'][i]}_{batch['sent_id'][i]}"
        yield key, batch["image"][i], gt, pred, gt_p


def _write_pair(key: str, pred: torch.Tensor, gt: torch.Tensor, pred_dir: Any, gt_dir: Any) -> None:
    """The prediction and the ground truth as PNGs named by ``key`` (when the folders are set)."""
    from semires.data.masks import write_mask_png

    if pred_dir is not None:
        write_mask_png(Path(pred_dir) / f"{key}.png", pred.numpy())
    if gt_dir is not None:
        write_mask_png(Path(gt_dir) / f"{key}.png", gt.numpy())


def score_splits(
    evaluate: Any,
    splits: list[str],
    test_splits: list[str],
    protocol: str,
    counts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``{split: metrics}`` for ``splits`` then ``test_splits`` (``evaluate(split)`` returns what
    :func:`evaluate_model` does), plus all test splits together (``"testA+testB"``) when there
    are several. ``counts`` (a dict) receives each split's per-sentence counts."""
    scores: dict[str, Any] = {}
    combined = RESMetrics()
    for split in [*splits, *test_splits]:
        result = evaluate(split)
        scores[split] = result["metrics"]
        if counts is not None:
            counts[split] = result["counts"]
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
    fields that replace it), evaluate a split, write json. As ``semires evaluate``: an ``ann``
    whose file ending names no format takes the checkpoint's format, and a relative dataset
    path the checkpoint keeps that is not found from the current folder is a one-line
    :class:`~semires.errors.DataError` saying what to give (:func:`checkpoint_data_options`)."""
    from semires.data import load_index
    from semires.errors import ConfigError
    from semires.evaluate.predict import load
    from semires.utils.io import atomic_write_json

    if weights not in ("model", "companion"):
        raise ConfigError(f"--weights: expected model or companion, got {weights!r}")
    check_protocol(protocol)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size: expected an integer >= 1, got {batch_size!r}")
    given = {k: v for k, v in (data_overrides or {}).items() if v is not None}
    data_overrides = checkpoint_data_options(checkpoint, given)  # before the model is read
    seg = load(checkpoint, device=device, weights=weights)
    index = load_index(_data_location(seg.config, data_overrides, checkpoint))
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
        metrics = {**result["metrics"], "per_sample": result["per_sample"]}
        head = {"checkpoint": str(checkpoint), "split": split, "protocol": protocol}
        atomic_write_json(json_out, {**head, **metrics})
    return result


def _data_location(config: dict | None, overrides: dict | None, checkpoint: Any) -> Any:
    """The dataset of an evaluation: the checkpoint's own (its training config's ``data``) with
    the given options over it. The format: the one given, else (``ann`` given) the one its file
    ending names (:func:`semires.data.formats.format_for`), else the checkpoint's."""
    from dataclasses import fields

    from semires.data import DataSpec
    from semires.data.formats import format_for
    from semires.errors import ConfigError
    from semires.utils.typed_config import load_dataclass

    location = {f.name for f in fields(DataSpec)}
    stored = {k: v for k, v in ((config or {}).get("data") or {}).items() if k in location}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "ann" in given and "format" not in given:
        given["format"] = format_for(given["ann"])
    if not stored and not given:
        raise ConfigError(
            f"{checkpoint} names no dataset (an imported checkpoint): give --format refer --root "
            "DIR --dataset NAME --split-by BY, or --ann FILE (--format semires, jsonl, ...)"
        )
    return load_dataclass(DataSpec, {**stored, **given}, prefix="data")


#: the dataset paths a checkpoint's config keeps (as given when it was trained)
DATA_PATHS = ("root", "ann", "image_root", "mask_root")


def checkpoint_data_options(checkpoint: str | Path, given: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's dataset options (``given``: DataSpec fields) completed from the
    checkpoint's own dataset, before the model is loaded: an ``ann`` whose file ending names
    no format takes the checkpoint's format (when the checkpoint reads an ``ann`` too); a
    relative path the checkpoint keeps (``data.ann: data/x.jsonl``, relative to the folder
    training ran in) that is not given and is not found from the current folder is a one-line
    :class:`~semires.errors.DataError` saying so. A checkpoint that cannot be read is left to
    :func:`evaluate_checkpoint` to refuse."""
    from semires.data.formats import detect_format
    from semires.errors import DataError

    stored = _stored_data(checkpoint)
    out = dict(given)
    unnamed = "ann" in out and "format" not in out and detect_format(out["ann"]) is None
    if unnamed and stored.get("format") and stored.get("ann"):
        out["format"] = str(stored["format"])
    if out.get("format", stored.get("format")) != stored.get("format"):
        return out  # another format: the checkpoint's paths are not used
    for key in DATA_PATHS:
        value = stored.get(key)
        if key in out or not value or Path(value).is_absolute() or Path(value).exists():
            continue
        option = "--" + key.replace("_", "-")
        raise DataError(
            f"{checkpoint} keeps data.{key} {value!r}, relative to the folder it was trained in, "
            f"and {Path.cwd() / str(value)} does not exist: run evaluate from that folder, or "
            f"give {option} (data_overrides {key!r}) with a path from here"
        )
    return out


def _stored_data(checkpoint: str | Path) -> dict[str, Any]:
    """The ``data`` section of a checkpoint's training config (memory-mapped, so its weights
    are not read); {} when there is none or the file cannot be read."""
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a missing or damaged file: evaluate_checkpoint says what is wrong
        return {}
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    data = config.get("data") if isinstance(config, dict) else None
    return data if isinstance(data, dict) else {}

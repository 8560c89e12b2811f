"""Backbone pretraining on synthetic scenes: the CPU default's stand-in for ImageNet weights.

LAVT (and SemiRES after it) start from a Swin pretrained on ImageNet-22k; the referring part
(pixel-word attention, decoder) is then learnt on RefCOCO. The embedded CPU default has no
pretrained image model to start from, and a randomly initialised backbone learns *what* the
shapes are far more slowly than *where* the referred one is (see docs/training.md). So the
``tiny`` model ships a small ConvNeXt pretrained here, on images of a synthetic benchmark drawn
with its own seed (never the images a run trains or evaluates on), with dense per-pixel labels
that the generator knows for free:

- the shape kind of every object pixel (``circle``, ``star``, ...; background = 0),
- the colour of every object pixel (a part's colour for a two-tone or striped part),
- the part pattern of every object pixel (plain, two-tone, striped, ...).

This is semantic segmentation pretraining (as ImageNet / COCO pretraining is for real images); no
referring expression, no referred mask and no evaluation image is used. The result is a timm-layout
weights file that ``ModelConfig.backbone_weights`` loads like any other.

Reproduce the packaged file with ``semires model pretrain`` (see docs/model.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from semires.data import masks as mask_ops
from semires.data.index import Object, RESIndex
from semires.data.synth.catalog import COLOURS, PATTERNS, SHAPES
from semires.data.transforms import normalize, resize_image
from semires.errors import DataError
from semires.model.backbone import StagedBackbone, build_backbone
from semires.model.config import ModelConfig
from semires.utils.io import atomic_write_torch

#: dense pretraining tasks -> their class names (index 0 = background)
TASKS: dict[str, tuple[str, ...]] = {
    "shape": ("background", *SHAPES),
    "colour": ("background", *COLOURS),
    "pattern": ("background", "plain", *PATTERNS),
}


@dataclass
class PretrainConfig:
    """Knobs of :func:`pretrain_backbone` (defaults: the packaged ``tiny`` weights)."""

    steps: int = 2500
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    head_dim: int = 64
    #: weight of the extra loss over object pixels only (background dominates the pixel mean)
    object_weight: float = 1.0
    seed: int = 0
    threads: int | None = None


def dense_targets(
    index: RESIndex, image_id: int, objects: list[Object] | None = None
) -> np.ndarray:
    """[3, H, W] int64 labels (shape, colour, pattern) of one synthetic image, by z-order.

    Raises DataError when an object has no synthetic attributes (not a synthetic benchmark).
    """
    h, w = index.image_size(image_id)
    out = np.zeros((3, h, w), dtype=np.int64)
    if objects is None:
        objects = [o for o in index.objects.values() if o.image_id == image_id]
    for ob in sorted(objects, key=lambda o: o.attributes.get("z", 0)):
        a = ob.attributes
        if "shape" not in a or "parts" not in a:
            raise DataError(
                f"object {ob.id} of image {image_id} has no synthetic attributes "
                "(shape / parts): backbone pretraining needs a synthetic benchmark"
            )
        full = index.mask(ob.id).astype(bool)
        out[0][full] = TASKS["shape"].index(a["shape"])
        out[2][full] = TASKS["pattern"].index(a.get("pattern") or "plain")
        out[1][full] = TASKS["colour"].index(a["colour"])
        for part in a["parts"]:
            part_mask = mask_ops.decode(part["rle"]).astype(bool)
            out[1][part_mask] = TASKS["colour"].index(part["colour"])
    return out


class DenseHeads(nn.Module):
    """All four stages -> ``dim`` channels at stride 4, summed -> one 1x1 classifier per task."""

    def __init__(self, channels: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in channels)
        self.mix = nn.Sequential(nn.BatchNorm2d(dim), nn.GELU(), nn.Conv2d(dim, dim, 3, padding=1))
        self.classify = nn.ModuleDict(
            {task: nn.Conv2d(dim, len(names), 1) for task, names in TASKS.items()}
        )

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        size = feats[0].shape[-2:]
        x = sum(
            F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False)
            for lat, f in zip(self.lateral, feats, strict=True)
        )
        x = self.mix(x)
        return {task: head(x) for task, head in self.classify.items()}


def dense_loss(
    logits: dict[str, torch.Tensor], targets: torch.Tensor, object_weight: float
) -> torch.Tensor:
    """Cross-entropy of every task over all pixels, plus ``object_weight`` x the same over object
    pixels only (most pixels are background: without it the object classes learn slowly)."""
    size = targets.shape[-2:]
    fg = targets[:, 0] > 0
    total = logits["shape"].new_zeros(())
    for k, task in enumerate(TASKS):
        full = F.interpolate(logits[task], size=size, mode="bilinear", align_corners=False)
        per_px = F.cross_entropy(full, targets[:, k], reduction="none")
        total = total + per_px.mean()
        if object_weight and fg.any():
            total = total + object_weight * per_px[fg].mean()
    return total


def stage_features(backbone: StagedBackbone, images: torch.Tensor) -> list[torch.Tensor]:
    """The four stage outputs of ``backbone`` as [B, C, h, w]."""
    x = backbone.embed(images)
    feats = []
    for i in range(4):
        x = backbone.run_stage(i, x)
        feats.append(backbone.to_nhwc(x).permute(0, 3, 1, 2))
    return feats


def _load_split(
    index: RESIndex, image_ids: list[int], size: int, progress: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    from tqdm.auto import tqdm

    by_image: dict[int, list[Object]] = {}
    for ob in index.objects.values():
        by_image.setdefault(ob.image_id, []).append(ob)
    images = torch.empty(len(image_ids), 3, size, size, dtype=torch.uint8)
    targets = torch.empty(len(image_ids), 3, size, size, dtype=torch.uint8)
    for k, image_id in enumerate(tqdm(image_ids, desc="load", disable=not progress)):
        images[k] = resize_image(index.load_image(image_id), size)
        t = torch.from_numpy(dense_targets(index, image_id, by_image.get(image_id, [])))[None]
        t = t.float()
        targets[k] = F.interpolate(t, size=(size, size), mode="nearest")[0].to(torch.uint8)
    return images, targets


def pretrain_backbone(
    model_cfg: ModelConfig,
    index: RESIndex,
    out_path: str | Path,
    cfg: PretrainConfig | None = None,
    *,
    val_index: RESIndex | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain ``model_cfg``'s backbone on the images of ``index`` and write its weights.

    ``index`` must be a synthetic benchmark (objects carry shape / colour / part attributes).
    Writes ``out_path`` (timm layout, loadable as ``backbone_weights``) atomically and returns
    a summary: steps, seconds, final losses and the per-task object-pixel accuracy on
    ``val_index`` (when given).
    """
    cfg = cfg or PretrainConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(cfg.seed)
    size = model_cfg.img_size
    backbone = build_backbone(model_cfg.backbone, size, model_cfg.backbone_kwargs)
    heads = DenseHeads(backbone.channels, cfg.head_dim)
    ids = sorted(index.images)
    if not ids:
        raise DataError("backbone pretraining: the index has no images")
    images, targets = _load_split(index, ids, size, progress)
    t0 = time.perf_counter()
    losses = _train_dense(backbone, heads, images, targets, cfg, progress)
    summary: dict[str, Any] = {
        "steps": cfg.steps,
        "seconds": round(time.perf_counter() - t0, 1),
        "final_loss": float(np.mean(losses[-50:])),
        "first_loss": float(np.mean(losses[:20])),
    }
    if val_index is not None:
        summary["val_accuracy"] = evaluate_heads(backbone, heads, val_index, size)
    _save(backbone, out_path)
    return summary


def _train_dense(
    backbone: StagedBackbone,
    heads: DenseHeads,
    images: torch.Tensor,
    targets: torch.Tensor,
    cfg: PretrainConfig,
    progress: bool,
) -> list[float]:
    """``cfg.steps`` AdamW steps of the dense tasks on random flipped batches of ``images``
    (uint8 [N, 3, S, S]) and their ``targets``; the loss of every step."""
    from tqdm.auto import tqdm

    params = list(backbone.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    backbone.train()
    heads.train()
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc="pretrain backbone", disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _learning_rate(step, cfg)
        x, y = _random_batch(images, targets, cfg.batch_size, gen)
        logits = heads(stage_features(backbone, normalize(x, backbone.mean, backbone.std)))
        loss = dense_loss(logits, y, cfg.object_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    return losses


def _learning_rate(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up over ``cfg.warmup_steps``, then a cosine decay to 0 at ``cfg.steps``."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))


def _random_batch(
    images: torch.Tensor, targets: torch.Tensor, batch_size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random images (float) and targets (long), each flipped left-right with
    probability 0.5 (drawn from ``gen``)."""
    pick = torch.randint(len(images), (batch_size,), generator=gen)
    x = images[pick].float()
    y = targets[pick].long()
    flip = torch.rand(batch_size, generator=gen) < 0.5
    x[flip] = x[flip].flip(-1)
    y[flip] = y[flip].flip(-1)
    return x, y


@torch.no_grad()
def evaluate_heads(
    backbone: StagedBackbone, heads: DenseHeads, index: RESIndex, size: int
) -> dict[str, float]:
    """Per-task accuracy over the object pixels of ``index``'s images at input side ``size``."""
    images, targets = _load_split(index, sorted(index.images), size, progress=False)
    backbone.eval()
    heads.eval()
    correct = dict.fromkeys(TASKS, 0)
    total = 0
    for s in range(0, len(images), 64):
        x = normalize(images[s : s + 64].float(), backbone.mean, backbone.std)
        y = targets[s : s + 64].long()
        fg = y[:, 0] > 0
        for k, (task, logit) in enumerate(heads(stage_features(backbone, x)).items()):
            full = F.interpolate(logit, size=y.shape[-2:], mode="bilinear", align_corners=False)
            correct[task] += int((full.argmax(1)[fg] == y[:, k][fg]).sum())
        total += int(fg.sum())
    return {task: round(c / max(total, 1.0), 4) for task, c in correct.items()}


def _save(backbone: StagedBackbone, out_path: str | Path) -> None:
    state = {k: v.detach().clone().contiguous() for k, v in backbone.state_dict().items()}
    atomic_write_torch(out_path, state)


#: the synthetic data the packaged ``tiny`` weights were pretrained on (seed far from 0..999,
#: the seeds runs and benchmarks use)
PRETRAIN_DATA: dict[str, Any] = {
    "preset": "demo",
    "seed": 1000,
    "images_train": 4000,
    "images_val": 200,
    "images_testA": 10,
    "images_testB": 10,
    "sentences_min": 1,
    "sentences_max": 1,
}


def pretrain_on_synth(
    model_cfg: ModelConfig,
    out_path: str | Path,
    data_dir: str | Path,
    cfg: PretrainConfig | None = None,
    *,
    data: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Synthesise the pretraining benchmark into ``data_dir`` (cached) and pretrain on its train
    images; the val images measure the per-pixel accuracy. Writes ``out_path`` and a
    ``<out_path>.json`` summary next to it (knobs, data, accuracy); returns the summary."""
    from semires.data.synth.generate import load, synthesize
    from semires.utils.io import atomic_write_json

    data = {**PRETRAIN_DATA, **(data or {})}
    knobs = {k: v for k, v in data.items() if k not in ("preset", "seed")}
    synthesize(data_dir, data["preset"], data["seed"], progress=progress, **knobs)
    index = load(data_dir)
    train = index.subset([r.id for r in index.refs_in("train")])
    val = index.subset([r.id for r in index.refs_in("val")])
    cfg = cfg or PretrainConfig()
    summary = pretrain_backbone(model_cfg, train, out_path, cfg, val_index=val, progress=progress)
    summary = {
        "backbone": model_cfg.backbone,
        "backbone_kwargs": model_cfg.backbone_kwargs,
        "img_size": model_cfg.img_size,
        "data": data,
        "config": dict(cfg.__dict__),
        **summary,
    }
    atomic_write_json(Path(str(out_path) + ".json"), summary)
    return summary

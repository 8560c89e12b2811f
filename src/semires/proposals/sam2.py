"""``sam2``: SAM 2's automatic mask generator (optional extra: ``pip install semires[sam2]``).

``sam2.build_sam.build_sam2(config, checkpoint)`` with ``SAM2AutomaticMaskGenerator`` and every
knob at the sam2 library's defaults (32 x 32 points, pred_iou_thresh 0.8, stability 0.95, box
NMS 0.7, no crops, no mask-to-mask refinement). ``config`` is a sam2 model config name such as
``configs/sam2.1/sam2.1_hiera_l.yaml``; ``bf16`` runs the image encoder under bfloat16 autocast
as for :mod:`semires.proposals.sam`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from semires.errors import CheckpointError, ConfigError
from semires.proposals.base import MaskGenerator, Proposals
from semires.proposals.sam import (
    amg_knobs,
    bf16_image_encoder,
    file_sha256,
    records_to_proposals,
    require_file,
    resolve_device,
)

EXTRA_HINT = "pip install semires[sam2]"


@dataclass(frozen=True)
class Sam2Config:
    """Knobs of the ``sam2`` generator: the model, then every SAM2AutomaticMaskGenerator knob."""

    config: str = "configs/sam2.1/sam2.1_hiera_l.yaml"
    checkpoint: str | None = None
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    mask_threshold: float = 0.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    use_m2m: bool = False
    multimask_output: bool = True
    device: str = "auto"
    bf16: bool = False


def _import_sam2() -> tuple[Any, Any]:
    """``(build_sam2, SAM2AutomaticMaskGenerator)``; a ConfigError naming the extra if absent."""
    try:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
        from sam2.build_sam import build_sam2
    except ImportError as exc:
        raise ConfigError(
            f"generator 'sam2' needs the sam2 package, which is not installed ({exc.name}); "
            f"install the extra: {EXTRA_HINT}"
        ) from exc
    return build_sam2, SAM2AutomaticMaskGenerator


class Sam2Generator(MaskGenerator):
    """SAM 2 "segment everything" (see the module docstring)."""

    name = "sam2"
    config_class = Sam2Config
    runtime_knobs = frozenset({"checkpoint", "device", "points_per_batch"})

    def __init__(self, **knobs: Any) -> None:
        super().__init__(**knobs)
        build_sam2, amg_class = _import_sam2()
        cfg = self.config
        path = require_file(cfg.checkpoint, "sam2", f"a SAM 2 checkpoint for {cfg.config}")
        self.device = resolve_device(cfg.device)
        try:
            self.model = build_sam2(cfg.config, str(path), device=self.device)
        except RuntimeError as exc:  # missing / unexpected keys, unreadable file
            raise CheckpointError(
                f"{path} does not load into SAM 2 {cfg.config}: {str(exc).splitlines()[0][:300]}"
            ) from exc
        self.checkpoint_sha256 = file_sha256(path)
        self.amg = amg_class(self.model, output_mode="coco_rle", **amg_knobs(cfg))

    def params(self) -> dict[str, Any]:
        """The AMG knobs, the model config and the checkpoint's hash."""
        return {**super().params(), "checkpoint_sha256": self.checkpoint_sha256}

    def generate(self, image: np.ndarray) -> Proposals:
        """SAM 2's automatic masks of one (H, W, 3) uint8 RGB image, best predicted IoU first."""
        import torch

        context = (
            bf16_image_encoder(self.model.image_encoder, self.device)
            if self.config.bf16
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), context:
            records = self.amg.generate(np.ascontiguousarray(image))
        return records_to_proposals(records, (image.shape[0], image.shape[1]))

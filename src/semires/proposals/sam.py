"""``sam``: Segment Anything's automatic mask generator (the paper's candidates).

The official ``segment_anything`` package: a model from ``sam_model_registry[model_type]``
(vit_h / vit_l / vit_b) with weights from ``checkpoint`` and ``SamAutomaticMaskGenerator`` with
every knob exposed at the library's defaults (32 x 32 points, pred_iou_thresh 0.88,
stability_score_thresh 0.95, box_nms_thresh 0.7, no crops: the setting of docs/method.md section 4).

``bf16=True`` runs the image encoder (the largest network; the point decoding of 32 x 32 points
costs more on a CPU, docs/proposals.md) under bfloat16 autocast on the model's device; the
prompt encoder, the mask decoder and all thresholds stay in float32, so the filtering by
predicted IoU / stability is not done on rounded logits.

``prefilter=True`` (the default, a runtime knob) replaces the library's batch step with
:func:`process_batch_prefiltered`: full-size masks only for the masks that pass
``pred_iou_thresh``, one-pass RLE encoding and no deep copy of every batch's RLEs. The records
are the library's to the bit (tests; ``bench/bench_sam.py`` measures it side by side).

Model hook (tests, benchmarks, custom architectures):

- ``SamGenerator(model=sam)`` uses an already built ``segment_anything.modeling.Sam`` (no
  checkpoint; the params record a hash of its weights);
- ``register_sam_model(name, builder)`` adds a model type to :data:`MODEL_BUILDERS`, so that
  ``semires propose --generator sam --model-type NAME --checkpoint FILE`` builds it and loads the
  checkpoint into it. The tests register :func:`tiny_sam` as ``tiny`` this way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from semires.errors import CheckpointError, ConfigError
from semires.proposals.base import MaskGenerator, Proposals

#: model type -> builder ``f(checkpoint=None) -> Sam`` (an architecture with random weights).
MODEL_BUILDERS: dict[str, Callable[..., Any]] = {}


def register_sam_model(name: str, builder: Callable[..., Any]) -> None:
    """Make ``builder`` (``f(checkpoint=None) -> Sam``) available as model type ``name``."""
    MODEL_BUILDERS[name] = builder


def _builders() -> dict[str, Callable[..., Any]]:
    from segment_anything import sam_model_registry

    return {**sam_model_registry, **MODEL_BUILDERS}


@dataclass(frozen=True)
class SamConfig:
    """Knobs of the ``sam`` generator: the model, then every SamAutomaticMaskGenerator knob."""

    model_type: str = "vit_h"
    checkpoint: str | None = None
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    device: str = "auto"
    bf16: bool = False
    #: full-size masks only for the masks whose predicted IoU passes ``pred_iou_thresh``
    #: (the same candidates, see :func:`decode_prefiltered`); a runtime knob
    prefilter: bool = True


# ---------------------------------------------------------------------------- shared helpers
def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda:$LOCAL_RANK`` (torchrun) or ``cuda`` when CUDA is available, else
    ``cpu``; anything else as given."""
    import torch

    if device != "auto":
        return device
    if not torch.cuda.is_available():
        return "cpu"
    local_rank = os.environ.get("LOCAL_RANK")
    return f"cuda:{int(local_rank)}" if local_rank is not None else "cuda"


def require_file(checkpoint: str | None, generator: str, what: str) -> Path:
    """The checkpoint path, or a :class:`CheckpointError` when it is not given or missing."""
    if not checkpoint:
        raise CheckpointError(f"generator {generator!r} needs --checkpoint PATH ({what})")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{generator} checkpoint not found: {path}")
    return path


def _hash_cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "semires" / "sha256.json"


@lru_cache(maxsize=32)
def _sha256_uncached(path: str, size: int, mtime_ns: int) -> str:
    cache_file = _hash_cache_file()
    key = f"{path}|{size}|{mtime_ns}"
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return str(cache[key])
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    cache[key] = digest.hexdigest()
    with contextlib.suppress(OSError):
        from semires.utils.io import atomic_write_json

        atomic_write_json(cache_file, cache)
    return cache[key]


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) in memory and in ~/.cache/semires."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _sha256_uncached(str(resolved), stat.st_size, stat.st_mtime_ns)


def weights_sha256(model: Any) -> str:
    """sha256 over a module's state dict (names, shapes and values): identifies a custom model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _to_float32(value: Any) -> Any:
    """Floating tensors in ``value`` (a tensor, or a dict / list / tuple of them) as float32."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_float32(v) for v in value)
    return value


@contextlib.contextmanager
def bf16_image_encoder(encoder: Any, device: str) -> Iterator[None]:
    """Run ``encoder`` under bfloat16 autocast (outputs cast back to float32) inside the block."""
    import torch

    original = encoder.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
            return _to_float32(original(*args, **kwargs))

    had_own = "forward" in vars(encoder)
    encoder.forward = forward
    try:
        yield
    finally:
        if had_own:
            encoder.forward = original
        else:
            del encoder.forward


MODEL_KNOBS = frozenset({"model_type", "config", "checkpoint", "device", "bf16", "prefilter"})
"""Knobs of the SAM configs that choose the model or how it runs; all the others go to the AMG
as they are."""


def amg_knobs(config: Any) -> dict[str, Any]:
    """The automatic-mask-generator keyword arguments of a SAM / SAM 2 config dataclass."""
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in MODEL_KNOBS
    }


def records_to_proposals(records: list[dict[str, Any]], size: tuple[int, int]) -> Proposals:
    """SAM / SAM 2 automatic-generator records (``coco_rle`` output) -> :class:`Proposals`.

    Empty masks are dropped; the score is the model's predicted IoU; best first.
    """
    records = [r for r in records if r["area"] > 0]
    rles = [
        {"size": [int(v) for v in r["segmentation"]["size"]], "counts": r["segmentation"]["counts"]}
        for r in records
    ]
    pred = np.array([r["predicted_iou"] for r in records], np.float32)
    stab = np.array([r["stability_score"] for r in records], np.float32)
    return Proposals.from_rles(size, rles, pred, pred, stab).sorted_by_score()


# ---------------------------------------------------------------------------- the generator
class SamGenerator(MaskGenerator):
    """SAM "segment everything" (see the module docstring); ``model=`` is the test hook."""

    name = "sam"
    config_class = SamConfig
    runtime_knobs = frozenset({"checkpoint", "device", "points_per_batch", "prefilter"})

    def __init__(self, *, model: Any = None, **knobs: Any) -> None:
        super().__init__(**knobs)
        from segment_anything import SamAutomaticMaskGenerator

        cfg = self.config
        amg_class = prefiltering_amg_class() if cfg.prefilter else SamAutomaticMaskGenerator
        self.device = resolve_device(cfg.device)
        self.custom_model = model is not None
        if model is None:
            model = self._load()
        self.model = model.to(self.device).eval()
        try:
            self.amg = amg_class(self.model, output_mode="coco_rle", **amg_knobs(cfg))
        except ImportError as exc:  # min_mask_region_area > 0 needs OpenCV
            raise ConfigError(
                f"sam: min_mask_region_area > 0 needs OpenCV ({exc.name}); "
                "pip install opencv-python-headless"
            ) from exc

    def _load(self) -> Any:
        """Build ``model_type`` and load the checkpoint (strict), with one-line errors."""
        import torch

        cfg = self.config
        builders = _builders()
        if cfg.model_type not in builders:
            raise ConfigError(
                f"unknown SAM model type {cfg.model_type!r}; known: {', '.join(sorted(builders))}"
            )
        path = require_file(cfg.checkpoint, "sam", f"a SAM {cfg.model_type} .pth file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"cannot read SAM checkpoint {path}: {type(exc).__name__}: {str(exc)[:200]}"
            ) from exc
        if not isinstance(state, dict):
            raise CheckpointError(f"SAM checkpoint {path} does not hold a state dict")
        model = builders[cfg.model_type](checkpoint=None)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:2])[:300]
            raise CheckpointError(
                f"{path} is not a SAM {cfg.model_type} checkpoint ({detail})"
            ) from exc
        return model

    def params(self) -> dict[str, Any]:
        """The AMG knobs, the model type and the weights' hash (checkpoint or custom model)."""
        if self.custom_model:
            weights = {"model_type": "custom", "weights_sha256": weights_sha256(self.model)}
        else:
            weights = {"checkpoint_sha256": file_sha256(str(self.config.checkpoint))}
        return {**super().params(), **weights}

    def generate(self, image: np.ndarray) -> Proposals:
        """SAM's automatic masks of one (H, W, 3) uint8 RGB image, best predicted IoU first."""
        import torch

        context = (
            bf16_image_encoder(self.model.image_encoder, self.device)
            if self.config.bf16
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), context:
            records = self.amg.generate(np.ascontiguousarray(image))
        return records_to_proposals(records, (image.shape[0], image.shape[1]))


# ---------------------------------------------------------------------------- prefiltering
def decode_prefiltered(predictor: Any, coords: Any, iou_thresh: float) -> tuple[Any, Any, Any]:
    """SAM's multimask decoding of a batch of point prompts (``coords`` [B, 2] in the model's
    input frame, one positive point each) where only the masks whose predicted IoU exceeds
    ``iou_thresh`` (all when it is <= 0) are upscaled to the image size.

    ``SamPredictor.predict_torch`` makes all 3 B masks at 256 x 256 and upscales every one to
    the image size before ``SamAutomaticMaskGenerator`` drops those below ``pred_iou_thresh``;
    the predicted IoU comes from the transformer's IoU token alone. Here the transformer and
    the heads run on the whole batch as in the library, and the decoder's upscaling, the
    hypernetwork product and the resize run only for the points / masks that pass, on the
    same memory layout (a batch of one is padded to two: its kernel rounds differently). Each
    mask's values are the library's to the bit on this CPU (``tests/test_proposals_sam.py``
    compares the candidates with the library's; ``bench/bench_sam.py`` on real photos).

    Returns (logits [K, H, W] at the image size, predicted IoU [K], index [K] of each mask in
    the library's flattened (point, mask) order).
    """
    import torch

    model, decoder = predictor.model, predictor.model.mask_decoder
    labels = torch.ones(coords.shape[0], dtype=torch.int, device=coords.device)
    sparse, dense = model.prompt_encoder(
        points=(coords[:, None, :], labels[:, None]), boxes=None, masks=None
    )
    # MaskDecoder.predict_masks as the library computes it, up to the heads
    out_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((out_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse), dim=1)
    src = torch.repeat_interleave(predictor.features, tokens.shape[0], dim=0) + dense
    pos = torch.repeat_interleave(model.prompt_encoder.get_dense_pe(), tokens.shape[0], dim=0)
    _, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos, tokens)
    iou = decoder.iou_prediction_head(hs[:, 0, :])[:, 1:]  # the multimask outputs
    mask_tokens = hs[:, 1 : 1 + decoder.num_mask_tokens, :]
    hyper = torch.stack(
        [mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
        dim=1,
    )
    passing = iou > iou_thresh if iou_thresh > 0.0 else torch.ones_like(iou, dtype=torch.bool)
    rows = passing.any(dim=1).nonzero()[:, 0]
    flat = (rows[:, None] * iou.shape[1] + torch.arange(iou.shape[1], device=rows.device))[
        passing[rows]
    ]
    if len(rows) == 0:
        size = predictor.original_size
        return src.new_zeros((0, *size)), iou[passing], flat
    chosen = rows if len(rows) > 1 else rows.repeat(2)
    upscaled = decoder.output_upscaling(src[chosen].transpose(1, 2).view(len(chosen), c, h, w))
    n, uc, uh, uw = upscaled.shape
    low = (hyper[chosen] @ upscaled.view(n, uc, uh * uw)).view(n, -1, uh, uw)[: len(rows), 1:]
    masks = model.postprocess_masks(
        low[passing[rows]][:, None], predictor.input_size, predictor.original_size
    )[:, 0]
    return masks, iou[passing], flat


def process_batch_prefiltered(
    amg: Any, points: np.ndarray, im_size: tuple[int, ...], crop_box: list[int], orig_size: Any
) -> Any:
    """``SamAutomaticMaskGenerator._process_batch`` with :func:`decode_prefiltered`: the
    same ``MaskData`` (masks, scores, points, boxes, RLEs), made from fewer full-size masks.
    ``amg.counts`` adds up the masks decoded, passing the predicted-IoU and the stability
    filters (what random weights change: benchmarks report them)."""
    import torch
    from segment_anything.utils.amg import (
        MaskData,
        batched_mask_to_box,
        calculate_stability_score,
        is_box_near_crop_edge,
        uncrop_masks,
    )

    orig_h, orig_w = orig_size
    predictor = amg.predictor
    coords = torch.as_tensor(
        predictor.transform.apply_coords(points, im_size), device=predictor.device
    )
    masks, iou, index = decode_prefiltered(predictor, coords, amg.pred_iou_thresh)
    n_out = predictor.model.mask_decoder.num_multimask_outputs
    point_rows = torch.as_tensor(points.repeat(n_out, axis=0))[index.cpu()]
    data = MaskData(masks=masks, iou_preds=iou, points=point_rows)
    # from here on the library's own steps, in its order
    threshold = predictor.model.mask_threshold
    data["stability_score"] = calculate_stability_score(
        data["masks"], threshold, amg.stability_score_offset
    )
    if amg.stability_score_thresh > 0.0:
        data.filter(data["stability_score"] >= amg.stability_score_thresh)
    counts = amg.__dict__.setdefault("counts", {"decoded": 0, "iou_pass": 0, "stable": 0})
    counts["decoded"] += len(points) * n_out
    counts["iou_pass"] += len(iou)
    counts["stable"] += len(data["iou_preds"])
    data["masks"] = data["masks"] > threshold
    data["boxes"] = batched_mask_to_box(data["masks"])
    keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
    if not torch.all(keep):
        data.filter(keep)
    data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
    data["rles"] = SharedList(masks_to_rle(data["masks"]))
    del data["masks"]
    return data


def masks_to_rle(masks: Any) -> list[dict[str, Any]]:
    """``segment_anything.utils.amg.mask_to_rle_pytorch`` for a [B, H, W] bool stack, with the
    same output (uncompressed RLE dicts of Python ints), in one pass: the library looks up each
    mask's run boundaries in the whole batch's (a scan of all of them per mask) and syncs with
    the device three times per mask; here the boundaries and first pixels come to the host once
    and are split with numpy."""
    b, h, w = masks.shape
    flat = masks.permute(0, 2, 1).flatten(1)
    change = (flat[:, 1:] ^ flat[:, :-1]).nonzero().cpu().numpy()
    first = flat[:, 0].cpu().numpy() if b else np.zeros(0, bool)
    bounds = np.searchsorted(change[:, 0], np.arange(b + 1)) if b else np.zeros(1, np.int64)
    out = []
    for i in range(b):
        edges = np.concatenate([[0], change[bounds[i] : bounds[i + 1], 1] + 1, [h * w]])
        counts = [] if not first[i] else [0]
        counts.extend(np.diff(edges).tolist())
        out.append({"size": [h, w], "counts": counts})
    return out


class SharedList(list):
    """A list that ``copy.deepcopy`` copies shallowly. ``MaskData.cat`` deep-copies every
    batch's uncompressed RLEs (lists of Python ints) into the crop's data although the batch is
    dropped right after; nothing changes the RLE dicts afterwards (``postprocess_small_regions``
    replaces list items), so sharing them gives the same records without the copy."""

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedList:
        return SharedList(self)


@lru_cache(maxsize=1)
def prefiltering_amg_class() -> type:
    """``SamAutomaticMaskGenerator`` with :func:`process_batch_prefiltered` as its batch step
    (everything else, crops, NMS, small-region removal and the records, is the library's)."""
    from segment_anything import SamAutomaticMaskGenerator

    class PrefilteringMaskGenerator(SamAutomaticMaskGenerator):
        def _process_batch(self, points, im_size, crop_box, orig_size):  # type: ignore[override]
            return process_batch_prefiltered(self, points, im_size, crop_box, orig_size)

    return PrefilteringMaskGenerator


def tiny_sam(
    checkpoint: str | None = None, img_size: int = 256, embed_dim: int = 64, seed: int = 0
) -> Any:
    """A small randomly initialised SAM (2-block ViT, ``img_size`` input) for tests / benchmarks.

    Same classes as the real models (``segment_anything.modeling``), so it runs the real
    automatic-mask-generator code path in about a second per small image on a CPU. Two changes
    to the random weights make its masks usable: the mask decoder's upscaling kernels are made
    spatially constant (no checkerboard: smooth masks) and the hypernetwork outputs are centred
    (masks of varied sizes instead of all-or-nothing). ``checkpoint`` loads a state dict saved
    from such a model.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _small_sam(img_size, embed_dim)
        _smooth_mask_decoder(model.mask_decoder)
    if checkpoint is not None:
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return model.eval()


def _small_sam(img_size: int, embed_dim: int) -> Any:
    """A randomly initialised ``segment_anything`` SAM: a 2-block ViT of ``embed_dim`` channels
    on ``img_size`` inputs (patches of 16), 32-channel prompts, a 1-block two-way decoder."""
    from functools import partial

    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    prompt_dim, patch = 32, 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=img_size,
            patch_size=patch,
            embed_dim=embed_dim,
            depth=2,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=prompt_dim,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(img_size // patch, img_size // patch),
            input_image_size=(img_size, img_size),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=1, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2
            ),
            transformer_dim=prompt_dim,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
    )


def _smooth_mask_decoder(decoder: Any) -> None:
    """Make a random mask decoder's masks usable: spatially constant upscaling kernels (no
    checkerboard: smooth masks) and centred hypernetwork outputs (masks of varied sizes
    instead of all-or-nothing)."""
    import torch

    with torch.no_grad():
        for layer in decoder.output_upscaling:
            if isinstance(layer, torch.nn.ConvTranspose2d):
                layer.weight.copy_(
                    layer.weight.mean(dim=(2, 3), keepdim=True).expand_as(layer.weight)
                )
        for mlp in decoder.output_hypernetworks_mlps:
            last = mlp.layers[-1]
            last.weight.sub_(last.weight.mean(dim=0, keepdim=True))
            last.bias.zero_()

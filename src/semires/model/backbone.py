"""Image backbones from timm, run one stage at a time so that fusion can act between stages.

A :class:`StagedBackbone` keeps only the parts of a timm model that produce the four feature
stages (strides 4, 8, 16, 32) under their timm names, so its state dict is the timm state dict
without the classifier head and the final norm. Supported families:

- Swin (``timm.models.swin_transformer``): ``patch_embed`` then ``layers[i]``, channels-last
  (NHWC). timm puts each patch merging at the start of the next stage, so ``layers[i]`` ends at
  stride ``4 * 2**i`` exactly where LAVT fuses (the original Swin merges at the end of a stage).
  The shifted-window attention is LAVT's (:class:`LAVTSwinBlock`): pad the map to whole windows,
  THEN shift, with the shift mask built on the padded grid, and every odd block shifts by half
  the window whatever the map size. timm rolls before padding and shrinks the window / drops
  the shift on small maps, which gives other outputs for the same weights wherever a map is
  padded by something other than the shift (at 480 px: stage 4, 15x15 padded to 24x24).
- ConvNeXt (``timm.models.convnext``): ``stem`` then ``stages[i]``, channels-first (NCHW).

Weights files are read with timm's loader and converted with the family's own timm
``checkpoint_filter_fn`` (original Microsoft Swin / Facebook ConvNeXt layouts -> timm layout:
moved patch-merging keys, dropped ``relative_position_index`` / ``attn_mask`` buffers, resized
relative-position tables when the window differs).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from semires.errors import CheckpointError, ConfigError
from semires.model.weights import load_state_strict, one_line

#: timm module name -> family name
SUPPORTED_FAMILIES = {"swin_transformer": "swin", "convnext": "convnext"}


class StagedBackbone(nn.Module):
    """The four feature stages of a timm model, callable one by one.

    ``embed(x)`` maps images [B, 3, H, W] to the input of stage 0; ``run_stage(i, x)`` runs stage
    ``i`` in the family's native layout; ``to_nhwc`` / ``from_nhwc`` convert that layout to and
    from [B, H, W, C]. ``channels`` are the widths of the four stage outputs.
    """

    channels_last: bool = False
    #: recompute each block in the backward pass (activation checkpointing, training only)
    checkpoint: bool = False

    def __init__(self, model: nn.Module, keep: tuple[str, ...]) -> None:
        from timm.data import resolve_model_data_config

        super().__init__()
        for name in keep:
            self.add_module(name, getattr(model, name))
        self.part_names = keep  # (patch embedding, list of the four stages)
        self.timm_name = str(model.pretrained_cfg.get("architecture", type(model).__name__))
        self.channels = tuple(int(info["num_chs"]) for info in model.feature_info)
        data_config = resolve_model_data_config(model)
        self.mean = tuple(float(v) for v in data_config["mean"])
        self.std = tuple(float(v) for v in data_config["std"])
        #: top-level timm state-dict prefixes that this backbone drops (head, final norm, ...)
        self.dropped_prefixes = tuple(
            f"{name}." for name, _ in model.named_children() if name not in keep
        )
        self._filter: Callable[..., dict[str, torch.Tensor]] | None = getattr(
            sys.modules[type(model).__module__], "checkpoint_filter_fn", None
        )

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] -> the input of stage 0 (native layout)."""
        raise NotImplementedError

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Run stage ``index`` (0..3) on ``x`` (native layout).

        With ``checkpoint`` set, in training mode with gradients enabled, each block (the
        stage's downsampling together with its first block) is run under non-reentrant
        ``torch.utils.checkpoint``: only its input is kept, and it is recomputed in the backward
        pass with the RNG state of the forward (same drop-path masks). Blocks through which no
        gradient flows are run plainly."""
        stage = getattr(self, self.part_names[1])[index]
        if not (self.checkpoint and self.training and torch.is_grad_enabled()):
            return stage(x)
        from torch.utils.checkpoint import checkpoint

        blocks = list(stage.blocks)
        segments: list[tuple[Callable[[torch.Tensor], torch.Tensor], list[nn.Module]]] = [
            (lambda t: blocks[0](stage.downsample(t)), [stage.downsample, blocks[0]]),
            *((block, [block]) for block in blocks[1:]),
        ]
        for run, modules in segments:
            if x.requires_grad or any(p.requires_grad for m in modules for p in m.parameters()):
                x = checkpoint(run, x, use_reentrant=False)
            else:
                x = run(x)
        return x

    def freeze(self, stages: int) -> None:
        """No gradients into the patch embedding and stages ``0 .. stages - 1`` (0: none frozen,
        4: the whole backbone). Frozen parts stay in the autograd graph only where a later
        trained part needs gradients through them."""
        if stages <= 0:
            return
        embed, staged = self.part_names
        getattr(self, embed).requires_grad_(False)
        for stage in list(getattr(self, staged))[:stages]:
            stage.requires_grad_(False)

    def to_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """Native layout -> [B, H, W, C]."""
        return x if self.channels_last else x.permute(0, 2, 3, 1)

    def from_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, W, C] -> native layout."""
        return x if self.channels_last else x.permute(0, 3, 1, 2)

    def to_timm_layout(self, state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Convert a loaded weights dict to this backbone's keys with timm's own filter."""
        converted = self._filter(state_dict, self) if self._filter else state_dict
        return {k: v for k, v in converted.items() if not k.startswith(self.dropped_prefixes)}


def _lavt_swin_block_class() -> type[nn.Module]:
    """timm's ``SwinTransformerBlock`` with LAVT's window order (built on first use: timm is
    imported lazily)."""
    global _LAVT_BLOCK
    if _LAVT_BLOCK is not None:
        return _LAVT_BLOCK
    from timm.models.swin_transformer import SwinTransformerBlock, window_partition, window_reverse

    class LAVTSwinBlock(SwinTransformerBlock):
        """A timm Swin block whose (shifted-)window attention is computed as LAVT computes it.

        LAVT (``lib/backbone.py:199-238``, ``526``, ``565-584`` of yz93/LAVT-RIS): after
        ``norm1`` the map is zero-padded on the bottom / right to whole windows, then rolled by
        the shift; the shift mask (-100 between the three regions per axis) is built on the
        padded grid; windows keep their full size and odd blocks always shift by half a window.
        Everything else (weights, norms, MLP, relative-position bias, the attention kernel) is
        timm's. Blocks must be built with ``always_partition=True`` (full windows and shifts); timm's own
        ``attn_mask`` buffer is then unused.
        """

        def _attn(self, x: torch.Tensor) -> torch.Tensor:
            _, h, w, c = x.shape
            wh, ww = self.window_size
            x = F.pad(x, (0, 0, 0, (ww - w % ww) % ww, 0, (wh - h % wh) % wh))
            hp, wp = x.shape[1], x.shape[2]
            shift = tuple(self.shift_size)
            mask = None
            if any(shift):
                x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
                mask = self._padded_mask(x)
            windows = window_partition(x, self.window_size).view(-1, self.window_area, c)
            out = self.attn(windows, mask=mask).view(-1, wh, ww, c)
            x = window_reverse(out, self.window_size, hp, wp)
            if any(shift):
                x = torch.roll(x, shifts=shift, dims=(1, 2))
            return x[:, :h, :w, :].contiguous()

        def _padded_mask(self, padded: torch.Tensor) -> torch.Tensor:
            """The shift mask of a padded map's size (cached per size / device / dtype)."""
            key = (padded.shape[1], padded.shape[2], padded.device, padded.dtype)
            cache = self.__dict__.setdefault("_lavt_masks", {})
            if key not in cache:
                cache.clear()
                cache[key] = self.get_attn_mask(padded[:1, :, :, :1])
            return cache[key]

    _LAVT_BLOCK = LAVTSwinBlock
    return LAVTSwinBlock


_LAVT_BLOCK: type[nn.Module] | None = None


class SwinBackbone(StagedBackbone):
    """timm Swin: ``patch_embed`` + ``layers[0..3]``, channels-last, LAVT's window attention."""

    channels_last = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, ("patch_embed", "layers"))
        block_class = _lavt_swin_block_class()
        for stage in self.layers:
            for block in stage.blocks:
                # same module, same parameters: only the window order of ``_attn`` changes
                block.__class__ = block_class

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(images)


class ConvNeXtBackbone(StagedBackbone):
    """timm ConvNeXt: ``stem`` + ``stages[0..3]``, channels-first."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, ("stem", "stages"))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.stem(images)


_FAMILY_CLASSES: dict[str, type[StagedBackbone]] = {
    "swin": SwinBackbone,
    "convnext": ConvNeXtBackbone,
}


def backbone_family(name: str) -> str:
    """The supported family ("swin" / "convnext") of a timm model name, or ConfigError."""
    import timm

    if not timm.is_model(name):
        raise ConfigError(
            f"model config key 'backbone': {name!r} is not a timm model name "
            "(e.g. swin_base_patch4_window12_384, convnext_atto)"
        )
    module = timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]
    if module not in SUPPORTED_FAMILIES:
        raise ConfigError(
            f"model config key 'backbone': timm model {name!r} (family {module!r}) is not supported; "
            f"supported families: {', '.join(sorted(SUPPORTED_FAMILIES))}"
        )
    return SUPPORTED_FAMILIES[module]


def build_backbone(name: str, img_size: int, kwargs: dict[str, Any]) -> StagedBackbone:
    """A randomly initialised staged backbone for timm model ``name`` (no download ever)."""
    import timm

    family = backbone_family(name)
    args: dict[str, Any] = {"pretrained": False, "num_classes": 0}
    if family == "swin":
        # full windows and shifts on every map (LAVT); LAVTSwinBlock builds masks per size
        args.update(img_size=img_size, strict_img_size=False, always_partition=True)
    args.update(kwargs)
    try:
        model = timm.create_model(name, **args)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(
            f"model config key 'backbone_kwargs': timm cannot build {name!r} with {kwargs}: {exc}"
        ) from exc
    if len(model.feature_info) != 4:
        raise ConfigError(
            f"model config key 'backbone': {name!r} has {len(model.feature_info)} stages, expected 4"
        )
    return _FAMILY_CLASSES[family](model)


#: ``backbone_weights: "semires:<name>"`` names a weights file shipped inside the package
PACKAGED_PREFIX = "semires:"


def packaged_weights() -> dict[str, Path]:
    """Backbone weights shipped with semires: name -> file (see semires.model.pretrain)."""
    from importlib.resources import files

    folder = Path(str(files("semires.model") / "pretrained"))
    return {p.stem: p for p in sorted(folder.glob("*.pth"))} if folder.is_dir() else {}


def resolve_weights(spec: str | Path) -> Path:
    """A weights path, or ``semires:<name>`` for a packaged file (ConfigError if unknown)."""
    text = str(spec)
    if not text.startswith(PACKAGED_PREFIX):
        return Path(spec)
    name = text[len(PACKAGED_PREFIX) :]
    shipped = packaged_weights()
    if name not in shipped:
        raise ConfigError(
            f"model config key 'backbone_weights': no packaged weights {name!r}; "
            f"shipped: {', '.join(PACKAGED_PREFIX + n for n in shipped) or 'none'}"
        )
    return shipped[name]


def load_backbone_weights(backbone: StagedBackbone, path: str | Path) -> None:
    """Load a timm-layout or original-layout weights file into ``backbone``, all keys required.

    Raises CheckpointError naming the path when the file is missing or unreadable, and naming a
    few missing / unexpected / mis-shaped keys when it does not fit the backbone.
    """
    from timm.models import load_state_dict

    path = resolve_weights(path)
    if not path.is_file():
        raise CheckpointError(f"backbone weights file not found: {path}")
    try:
        raw = load_state_dict(str(path), use_ema=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read backbone weights {path}: {one_line(exc)}") from exc
    try:
        state = backbone.to_timm_layout(raw)
    except (AttributeError, KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"backbone weights {path} do not fit {backbone.timm_name}: cannot convert ({one_line(exc)})"
        ) from exc
    load_state_strict(backbone, state, f"backbone weights {path} do not fit {backbone.timm_name}")

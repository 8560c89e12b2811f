"""Image and mask transforms for training and evaluation.

All randomness comes from an explicit ``numpy.random.Generator`` so that a sample's
augmentation is a pure function of (seed, step, position): that is what makes resumed runs
exact. Photometric augmentations work on uint8 RGB tensors BEFORE normalisation (the released
SemiRES code jittered normalised tensors and normalised twice; we do not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF


def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) uint8, bilinear (aspect ratio not kept, as LAVT)."""
    if image.shape[0] != size or image.shape[1] != size:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    return (
        torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).contiguous()
    )


def resize_mask(mask: np.ndarray | torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(H, W) or (K, H, W) binary -> the same at ``size`` with nearest neighbour, as bool."""
    t = torch.as_tensor(mask)
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(t.shape[-2:]) == hw:
        return t.bool()
    squeeze = t.dim() == 2
    t = t[None, None] if squeeze else t[None]
    out = F.interpolate(t.to(torch.uint8), size=hw, mode="nearest-exact")[0]
    return (out[0] if squeeze else out).bool()


def resize_to(mask: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
    """A bool (H, W) mask at another (h, w) with nearest neighbour, as a numpy array (for
    showing a training-size label on its image)."""
    return resize_mask(mask.cpu(), tuple(hw)).numpy()


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float normalised, on the images' device."""
    m = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - m) / s


def gaussian_blur(
    image: torch.Tensor, rng: np.random.Generator, p: float, sigma: tuple[float, float]
) -> torch.Tensor:
    """The weak view: Gaussian blur with probability ``p`` (sigma uniform in the range)."""
    if p <= 0 or rng.random() >= p:
        return image
    s = float(rng.uniform(sigma[0], sigma[1]))
    k = 2 * int(np.ceil(3 * s)) + 1
    k = min(k, 2 * (min(image.shape[-2:]) // 2) - 1)
    return TF.gaussian_blur(image, kernel_size=[k, k], sigma=[s, s])


def color_jitter(
    image: torch.Tensor,
    rng: np.random.Generator,
    p: float,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
) -> torch.Tensor:
    """The strong view: colour jitter with probability ``p`` on a uint8 image.

    Factors are drawn uniformly in [1 - x, 1 + x] (hue shift in [-hue, hue]) and applied in a
    random order, as torchvision's ColorJitter does.
    """
    if p <= 0 or rng.random() >= p:
        return image
    ops = []
    if brightness > 0:
        f = float(rng.uniform(1 - brightness, 1 + brightness))
        ops.append(lambda im, f=f: TF.adjust_brightness(im, f))
    if contrast > 0:
        f = float(rng.uniform(1 - contrast, 1 + contrast))
        ops.append(lambda im, f=f: TF.adjust_contrast(im, f))
    if saturation > 0:
        f = float(rng.uniform(1 - saturation, 1 + saturation))
        ops.append(lambda im, f=f: TF.adjust_saturation(im, f))
    if hue > 0:
        f = float(rng.uniform(-hue, hue))
        ops.append(lambda im, f=f: TF.adjust_hue(im, f))
    for i in rng.permutation(len(ops)):
        image = ops[i](image)
    return image


@dataclass(frozen=True)
class Blur:
    """The weak view (the teacher's): Gaussian blur with probability ``p``, sigma uniform in
    ``sigma`` (the SemiRES scripts: PIL radius 1, i.e. ``sigma=(1, 1)``)."""

    p: float = 0.5
    sigma: tuple[float, float] = (0.1, 2.0)

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return gaussian_blur(image, rng, self.p, tuple(self.sigma))


@dataclass(frozen=True)
class Jitter:
    """The strong view (the student's): colour jitter with probability ``p`` (factors in
    [1 - x, 1 + x], hue shift in [-hue, hue]), on uint8 images before normalisation."""

    p: float = 0.5
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.25

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return color_jitter(
            image, rng, self.p, self.brightness, self.contrast, self.saturation, self.hue
        )

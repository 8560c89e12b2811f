"""Segment an image from a sentence with a trained checkpoint.

>>> import semires
>>> seg = semires.load("runs/demo/cpi/best.pt")
>>> mask = seg.predict("photo.jpg", "the small red star left of the blue ring")
>>> mask.shape, mask.dtype          # original image size, bool
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from semires.data.images import read_image, to_rgb_array
from semires.data.transforms import normalize, resize_image
from semires.errors import CheckpointError, DataError

ImageLike = str | Path | np.ndarray | Image.Image


def _as_rgb(image: ImageLike) -> np.ndarray:
    if isinstance(image, str | Path):
        return read_image(image)
    if isinstance(image, Image.Image):
        return to_rgb_array(image)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array, got {arr.dtype}")
    return np.ascontiguousarray(arr[..., :3])


def check_expression(text: str) -> str:
    """A referring expression given by a user (``predict --text``) must hold words: an empty one
    is a :class:`DataError` (the model itself accepts any string)."""
    if not isinstance(text, str) or not text.strip():
        raise DataError(
            f"empty referring expression {text!r}: give the words that pick out the object, "
            "e.g. 'the red ball on the left'"
        )
    return text


class Segmenter:
    """A loaded RES model that maps (image, sentence) to a binary mask at the image's size."""

    def __init__(
        self,
        model: torch.nn.Module,
        img_size: int,
        device: torch.device,
        config: dict | None = None,
        source: str | Path | None = None,
    ) -> None:
        from semires.runtime.textcache import TextInputs

        #: the training config stored in the checkpoint (data location, etc.)
        self.config = config or {}
        #: the checkpoint it was loaded from (named by its errors)
        self.source = str(source) if source is not None else None
        self.model = model.eval().to(device)
        self.img_size = img_size
        self.device = device
        self.text = TextInputs(self.model, device)

    @torch.no_grad()
    def predict_proba(self, image: ImageLike, text: str | list[str]) -> np.ndarray:
        """Foreground probability (H, W) float32 for one sentence, or (N, H, W) for a list."""
        rgb = _as_rgb(image)
        sentences = [text] if isinstance(text, str) else list(text)
        x = resize_image(rgb, self.img_size)[None].expand(len(sentences), -1, -1, -1)
        x = normalize(x.to(self.device), self.model.image_mean, self.model.image_std)
        logits = self.model(x, **self.text(sentences))
        if tuple(logits.shape[-2:]) != tuple(rgb.shape[:2]):
            logits = F.interpolate(
                logits.float(),
                size=rgb.shape[:2],
                mode="bilinear",
                align_corners=bool(getattr(self.model.config, "align_corners", False)),
            )
        prob = logits.float().softmax(dim=1)[:, 1].cpu().numpy()
        if not np.isfinite(prob).all():  # never an empty mask in silence
            raise CheckpointError(
                f"the model{f' of {self.source}' if self.source else ''} gave NaN or infinite "
                "probabilities for this image; its weights or the input are broken"
            )
        return prob[0] if isinstance(text, str) else prob

    def predict(self, image: ImageLike, text: str | list[str]) -> np.ndarray:
        """Binary mask (H, W) bool (argmax of the two classes), or (N, H, W) for a list."""
        return self.predict_proba(image, text) > 0.5


def load(checkpoint: str | Path, device: str = "auto", *, weights: str = "model") -> Segmenter:
    """Load a semires checkpoint (``best.pt`` / ``latest.pt``, or one written by
    ``semires model import-lavt``) for prediction.

    ``weights="companion"``: the other network of a teacher-student ``best.pt`` (the student
    when the teacher was selected, or the other way round). A checkpoint whose weights hold a
    NaN or an infinity (a diverged training) is refused: a :class:`CheckpointError` naming the
    file and the first such tensor.
    """
    from semires.runtime.checkpoint import load_model_checkpoint
    from semires.runtime.distributed import resolve_device

    dev = resolve_device(device, "--device")
    if dev.type == "cpu":
        torch.set_flush_denormal(True)
    model, ck = load_model_checkpoint(checkpoint, weights=weights)
    img_size = int((ck.get("config") or {}).get("data", {}).get("img_size", model.config.img_size))
    return Segmenter(model, img_size, dev, ck.get("config"), source=checkpoint)


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    color: tuple[int, int, int] = (255, 40, 40),
    alpha: float = 0.5,
) -> np.ndarray:
    """The image with the mask tinted and its boundary drawn (uint8 RGB)."""
    from skimage.segmentation import find_boundaries

    out = image.astype(np.float32).copy()
    m = mask.astype(bool)
    out[m] = (1 - alpha) * out[m] + alpha * np.asarray(color, np.float32)
    out[find_boundaries(m, mode="inner")] = color
    return out.clip(0, 255).astype(np.uint8)

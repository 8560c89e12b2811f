"""Drawing candidates over their image (``semires proposals show``)."""

from __future__ import annotations

import numpy as np

from semires.proposals.base import Proposals


def overlay(
    image: np.ndarray,
    masks: np.ndarray,
    alpha: float = 0.45,
    seed: int = 0,
    outline: bool = True,
) -> np.ndarray:
    """Masks ([K, H, W] bool) painted over an (H, W, 3) uint8 image in random colours.

    Larger masks are painted first so that small ones (parts) stay visible on top; each mask's
    outline is drawn in a darker shade of its colour.
    """
    from skimage.segmentation import find_boundaries

    out = image.astype(np.float32).copy()
    colours = np.random.default_rng(seed).uniform(40, 255, size=(len(masks), 3))
    for k in np.argsort([-int(m.sum()) for m in masks], kind="stable"):
        mask = masks[k].astype(bool)
        out[mask] = (1 - alpha) * out[mask] + alpha * colours[k]
        if outline:
            out[find_boundaries(mask, mode="inner")] = 0.5 * colours[k]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def outline_masks(image: np.ndarray, masks: list[np.ndarray], colours: list[tuple]) -> np.ndarray:
    """Outlines (3 px) of a few masks drawn over an image, one colour each."""
    from skimage.morphology import dilation, disk
    from skimage.segmentation import find_boundaries

    out = image.copy()
    for mask, colour in zip(masks, colours, strict=True):
        edge = dilation(find_boundaries(mask.astype(bool), mode="inner"), disk(1))
        out[edge] = colour
    return out


def figure(
    image: np.ndarray,
    proposals: Proposals,
    title: str,
    objects: list[tuple[np.ndarray, float, int]] | None = None,
    max_masks: int | None = None,
) -> bytes:
    """A PNG: the image | all candidates | (with ground truth) each object (green) with its best
    candidate (magenta) and the IoU.

    ``objects``: each ground-truth mask with the IoU and the index (-1: none) of its best
    candidate among all of ``proposals``, as
    :func:`semires.train.proposal_quality.object_quality` finds them."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keep = (
        proposals
        if max_masks is None
        else proposals.select(np.arange(min(max_masks, len(proposals))))
    )
    masks = keep.masks().astype(bool)
    panels = [
        ("image", image),
        (f"{len(keep)} of {len(proposals)} candidates", overlay(image, masks)),
    ]
    if objects:
        all_masks = proposals.masks().astype(bool)
        shown = image.copy()
        ious = []
        for gt, best, k in objects:
            ious.append(best)
            pair = [gt] + ([all_masks[k]] if k >= 0 else [])
            shown = outline_masks(shown, pair, [(0, 255, 0), (255, 0, 255)][: len(pair)])
        text = ", ".join(f"{v:.2f}" for v in ious)
        panels.append((f"GT (green) / best candidate (magenta): IoU {text}", shown))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 4.2 * image.shape[0] / image.shape[1] + 0.6)
    )
    for ax, (name, img) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(img)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return _small_png(buf.getvalue())


def _small_png(data: bytes) -> bytes:
    """The PNG re-encoded with a 256-colour palette (photos shrink about 3x)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        out = io.BytesIO()
        im.convert("RGB").quantize(256).save(out, format="PNG", optimize=True)
    return out.getvalue()

"""Images per second of the ``sam`` generator (randomly initialised weights, no download).

- ``--device cpu`` (default on a machine without GPU): the tiny random SAM of the tests
  (:func:`semires.proposals.sam.tiny_sam`) on small images; a smoke benchmark of the code path.
- ``--device cuda``: SAM ``vit_h`` (``--model``) with random weights, the default automatic mask
  generator (32 x 32 points), on 1024-px images, in four settings: float32 / bf16 image encoder x
  ``points_per_batch`` 64 / 256. For bf16 it also reports how well the bf16 masks agree with the
  float32 ones (mean best IoU of each float32 mask among the bf16 masks).

Random weights pass SAM's quality filters less often than trained ones (0.88 predicted IoU,
0.95 stability), so ``--loose`` sets both thresholds to 0 to keep the post-processing load
realistic (every point's masks survive to the NMS). Usage::

    python bench/bench_sam.py --device cuda [--images 8] [--loose] [--json OUT]
    python bench/bench_sam.py --device cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semires.proposals.sam import SamGenerator, tiny_sam
from semires.train.proposal_quality import object_quality

DEFAULTS = {
    "cpu": {"model": "tiny", "image_size": 256, "images": 3, "points_per_side": 8},
    "cuda": {"model": "vit_h", "image_size": 1024, "images": 8, "points_per_side": 32},
}


def test_images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random colour fields with a few flat shapes (so masks have structure)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = np.asarray(
            Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
        ).copy()
        for _ in range(6):
            r, c = rng.integers(0, size - size // 4, 2)
            image[r : r + size // 6, c : c + size // 5] = rng.integers(0, 256, 3)
        images.append(image)
    return images


def build_model(name: str) -> Any:
    if name == "tiny":
        return tiny_sam()
    from segment_anything import sam_model_registry

    return sam_model_registry[name](checkpoint=None)


def run(gen: SamGenerator, images: list[np.ndarray], device: str) -> tuple[float, list]:
    """Median seconds per image (after one warm-up image) and the outputs."""
    gen.generate(images[0])
    times, outputs = [], []
    for image in images:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        outputs.append(gen.generate(image))
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        print(f"  image {len(times)}: {times[-1]:.2f} s, {len(outputs[-1])} masks", flush=True)
    return statistics.median(times), outputs


def agreement(reference: list, other: list) -> float:
    """Mean over the reference masks of their best IoU among the other run's masks."""
    scores = []
    for ref, oth in zip(reference, other, strict=True):
        if len(oth) == 0:
            scores.extend([0.0] * len(ref))
            continue
        others = oth.masks().astype(bool)
        scores.extend(object_quality(others, m)[0] for m in ref.masks())
    return float(np.mean(scores)) if scores else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--model", help="tiny, vit_b, vit_l or vit_h (random weights)")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--images", type=int)
    parser.add_argument("--points-per-side", type=int)
    parser.add_argument("--batches", default="64,256", help="points_per_batch values")
    parser.add_argument("--loose", action="store_true", help="pred_iou / stability thresholds 0")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    cfg = {**DEFAULTS[args.device]}
    for key in ("model", "image_size", "images", "points_per_side"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    images = test_images(cfg["images"], cfg["image_size"])
    model = build_model(cfg["model"]).to(args.device)
    knobs: dict[str, Any] = {"points_per_side": cfg["points_per_side"], "device": args.device}
    if args.loose:
        knobs.update(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    rows = []
    reference = None
    for batch in (int(b) for b in args.batches.split(",")):
        for bf16 in (False, True):
            print(f"points_per_batch {batch}, bf16 {bf16}:", flush=True)
            gen = SamGenerator(model=model, points_per_batch=batch, bf16=bf16, **knobs)
            seconds, outputs = run(gen, images, args.device)
            row = {
                "points_per_batch": batch,
                "bf16": bf16,
                "seconds_per_image": seconds,
                "images_per_second": 1.0 / seconds,
                "masks_per_image": float(np.mean([len(o) for o in outputs])),
            }
            if reference is None:
                reference = outputs
            else:
                row["agreement_with_first"] = agreement(reference, outputs)
            if args.device == "cuda":
                row["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
                torch.cuda.reset_peak_memory_stats()
            rows.append(row)
            print(json.dumps(row))
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    result = {"device": device_name, "config": cfg, "loose": args.loose, "rows": rows}
    print(f"{device_name}: SAM {cfg['model']} (random weights), {cfg['image_size']}-px images")
    for row in rows:
        extra = (
            f"  agreement {row['agreement_with_first']:.3f}"
            if "agreement_with_first" in row
            else ""
        )
        print(
            f"  points_per_batch {row['points_per_batch']:4d}  bf16 {row['bf16']!s:5s}  "
            f"{row['images_per_second']:7.2f} images/s  {row['masks_per_image']:6.1f} masks{extra}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

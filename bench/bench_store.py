"""Reading one image's candidates at the training size: the proposal store vs the original way.

For every image: ~100 candidate masks of 640x480 (smooth random shapes of every size, as a
segment-everything generator gives), read and resized (nearest) to the training size 480x480.

- ``store``: :meth:`semires.proposals.store.ProposalStore.masks` (sharded COCO RLE, memory-mapped,
  decoded straight to the training size);
- ``pycocotools``: the same records decoded by ``pycocotools.mask.decode`` at full size, then
  resized by index (what a plain COCO-RLE store would do);
- ``baseline``: the original code's way: one JSON file per image holding, per mask, its
  column-major ``[start, length, ...]`` runs, decoded run by run in a Python loop, then resized.

All three give identical masks (checked). Times are medians over images and repeats, measured in
the same run; sizes are bytes on disk per image. Usage::

    python bench/bench_store.py [--images 20] [--candidates 100] [--repeats 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from skimage.draw import ellipse, polygon

from semires.proposals.base import Proposals
from semires.proposals.decode import nearest_indices
from semires.proposals.store import ProposalStore


def random_masks(rng: np.random.Generator, k: int, h: int, w: int) -> np.ndarray:
    """``k`` masks: ellipses and polygons from tiny parts to half the image, some unions."""
    masks = np.zeros((k, h, w), np.uint8)
    for i in range(k):
        scale = float(np.exp(rng.uniform(np.log(0.02), np.log(0.6)))) * min(h, w)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if rng.random() < 0.5:
            rr, cc = ellipse(
                cy, cx, scale * rng.uniform(0.3, 1), scale, (h, w), rng.uniform(0, np.pi)
            )
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 12))))
            radii = scale * rng.uniform(0.4, 1.0, len(angles))
            rr, cc = polygon(cy + radii * np.sin(angles), cx + radii * np.cos(angles), (h, w))
        masks[i, rr, cc] = 1
        if i > 10 and rng.random() < 0.2:  # a whole made of earlier parts
            masks[i] |= masks[rng.integers(0, i)]
    return masks


def runs_json(masks: np.ndarray) -> str:
    """The original format: per mask, 1-based column-major [start, length, ...] runs."""
    records = []
    for mask in masks:
        flat = np.concatenate([[0], mask.T.ravel(), [0]])
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        edges[1::2] -= edges[::2]
        records.append({"size": list(mask.shape), "counts": edges.tolist()})
    return json.dumps(records)


def baseline_read(path: Path, out_size: tuple[int, int]) -> torch.Tensor:
    """Parse the JSON and paint every run in Python (the original code), then resize."""
    masks = []
    for record in json.loads(path.read_text()):
        h, w = record["size"]
        flat = np.zeros(h * w, np.uint8)
        counts = record["counts"]
        for start, length in zip(counts[0::2], counts[1::2], strict=True):
            flat[start - 1 : start - 1 + length] = 1
        masks.append(flat.reshape((h, w), order="F"))
    stack = np.stack(masks)
    rows, cols = nearest_indices(h, out_size[0]), nearest_indices(w, out_size[1])
    return torch.from_numpy(stack[:, rows][:, :, cols].astype(bool))


def pycocotools_read(
    store: ProposalStore, image_id: int, out_size: tuple[int, int]
) -> torch.Tensor:
    """The store's RLEs decoded at full size by pycocotools, then resized by index."""
    props = store.read(image_id)
    coco = [{"size": r["size"], "counts": r["counts"].encode()} for r in props.rles]
    full = mask_utils.decode(coco)  # H x W x K
    h, w = props.size
    rows, cols = nearest_indices(h, out_size[0]), nearest_indices(w, out_size[1])
    return torch.from_numpy(full[rows][:, cols].transpose(2, 0, 1).astype(bool))


def median_ms(fn: Callable[[int], torch.Tensor], ids: list[int], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        for image_id in ids:
            start = time.perf_counter()
            fn(image_id)
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--size", default="480x640", help="image size HxW")
    parser.add_argument("--train-size", default="480x480", help="training size HxW")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    h, w = (int(v) for v in args.size.split("x"))
    out_size = tuple(int(v) for v in args.train_size.split("x"))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = ProposalStore.create(root / "store", "bench", {})
        items = []
        for image_id in range(args.images):
            masks = random_masks(rng, args.candidates, h, w)
            items.append((image_id, Proposals.from_masks(masks, rng.random(len(masks)))))
            (root / f"{image_id}.json").write_text(runs_json(masks))
        store.write_shard(items)
        ids = [image_id for image_id, _ in items]
        store = ProposalStore.open(root / "store")
        for image_id in ids[:3]:  # identical results
            ours = store.masks(image_id, out_size)
            assert torch.equal(ours, baseline_read(root / f"{image_id}.json", out_size))
            assert torch.equal(ours, pycocotools_read(store, image_id, out_size))
        timings = {
            "store": median_ms(lambda i: store.masks(i, out_size), ids, args.repeats),
            "pycocotools": median_ms(
                lambda i: pycocotools_read(store, i, out_size), ids, args.repeats
            ),
            "baseline": median_ms(
                lambda i: baseline_read(root / f"{i}.json", out_size),
                ids,
                max(1, args.repeats // 2),
            ),
        }
        store_bytes = sum(p.stat().st_size for p in (root / "store").rglob("*") if p.is_file())
        json_bytes = sum((root / f"{i}.json").stat().st_size for i in ids)
    result = {
        "images": args.images,
        "candidates_per_image": args.candidates,
        "image_size": [h, w],
        "train_size": list(out_size),
        "median_ms_per_image": timings,
        "speedup_vs_baseline": timings["baseline"] / timings["store"],
        "speedup_vs_pycocotools": timings["pycocotools"] / timings["store"],
        "bytes_per_image": {
            "store": store_bytes / args.images,
            "baseline_json": json_bytes / args.images,
        },
        "torch_threads": torch.get_num_threads(),
    }
    print(
        f"{args.images} images x {args.candidates} candidates of {h}x{w} -> {out_size[0]}x{out_size[1]}"
    )
    for name, ms in timings.items():
        print(f"  {name:12s} {ms:8.2f} ms / image   ({timings['baseline'] / ms:5.1f}x vs baseline)")
    print(
        f"  size on disk: store {store_bytes / args.images / 1024:.1f} KiB / image, "
        f"baseline json {json_bytes / args.images / 1024:.1f} KiB / image"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

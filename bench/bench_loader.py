"""The teacher-student data path at the paper's settings: samples/s per loader worker, bytes.

What one unlabeled sample costs the loader at 480x480 (the paper's training size): read the
640x480 JPEG and resize it, the weak (blur) and strong (colour jitter) views, the object's
sentences, and the image's ~100 candidate masks decoded from the proposal store and resized
to 480x480; then the collate of a batch of 3 (the paper's unlabeled batch per process).

Two candidate formats, measured in the same run on the same samples:

- ``bool``: [K, 480, 480] bool tensors (what the loader carried before), and
- ``packed``: bit-packed words, 64 pixels to an int64 with the areas
  (:class:`semires.utils.bits.PackedMasks`, what it carries now).

The data is the ``refcoco`` synthetic preset (640x480 JPEG, refer layout) at a small size, and
a proposal store of ``--candidates`` random smooth masks per image (ellipses and polygons of
every size and unions of them, as a segment-everything generator returns; the classical
generator would take minutes per hundred images here). Both formats are checked equal first.

Figures: per-sample time split into its parts (image, views, candidates), samples/s of one
worker (the main process, one torch thread: one core), samples/s of a ``DataLoader`` with
``--workers`` worker processes, and the bytes of candidates per sample and per collated batch
(what is pinned and copied to the device), and the peak resident memory of a worker. Medians
of ``--repeats`` passes over the samples; "gain" is before / now for costs and now / before for
rates.

    .venv/bin/python bench/bench_loader.py                 # 24 images, 100 candidates
    .venv/bin/python bench/bench_loader.py --workers 1 2 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from semires.data.dataset import (
    UNLABELED,
    StepBatchSampler,
    UnlabeledDataset,
    collate,
)
from semires.data.synth import load, synthesize
from semires.proposals.base import Proposals
from semires.proposals.store import ProposalStore
from semires.utils.bits import PackedMasks

sys.path.insert(0, str(Path(__file__).parent))
from bench_store import random_masks

SIZE = 480
BATCH = 3


def make_data(
    root: Path, images: int, candidates: int, seed: int, dataset: Path | None = None
) -> tuple[Any, list[Any], ProposalStore]:
    """The refcoco preset with ``images`` training images (or the whole synthetic dataset at
    ``dataset``, of which the first ``images`` training images are used), their refs, and a
    store of random candidates for them."""
    if dataset is None:
        dataset = synthesize(
            root / "synth",
            preset="refcoco",
            seed=seed,
            images_train=images,
            images_val=1,
            images_testA=1,
            images_testB=1,
        )
    index = load(dataset)
    used = set(sorted({r.image_id for r in index.refs_in("train")})[:images])
    refs = [r for r in index.refs_in("train") if r.image_id in used]
    store_dir = root / "store"
    store = ProposalStore.create(store_dir, "random", {"candidates": candidates, "seed": seed})
    if len(store) == 0:
        rng = np.random.default_rng(seed)
        items = []
        for image_id in sorted(used):
            h, w = index.image_size(image_id)
            masks = random_masks(rng, candidates, h, w)
            props = Proposals.from_masks(masks, np.linspace(1.0, 0.5, candidates))
            items.append((image_id, props))
        store.write_shard(items)
    return index, refs, store


def per_sample(ds: UnlabeledDataset, refs: list[Any], repeats: int) -> dict[str, float]:
    """Median milliseconds per sample of each part, and of the whole ``__getitem__``."""
    rng = np.random.default_rng(0)
    parts: dict[str, Callable[[Any], Any]] = {
        "image": lambda r: ds.images.get(r.image_id),
        "views": lambda r: ds.jitter(ds.blur(ds.images.get(r.image_id), rng), rng),
        "candidates": lambda r: ds.candidates(r.image_id),
    }
    times: dict[str, list[float]] = {name: [] for name in [*parts, "sample"]}
    from semires.data.dataset import SampleKey

    for rep in range(repeats):
        for name, fn in parts.items():
            start = time.perf_counter()
            for ref in refs:
                fn(ref)
            times[name].append((time.perf_counter() - start) / len(refs))
        start = time.perf_counter()
        for i in range(len(refs)):
            ds[SampleKey(i, UNLABELED, rep, i)]
        times["sample"].append((time.perf_counter() - start) / len(refs))
    out = {f"{k}_ms": statistics.median(v) * 1e3 for k, v in times.items()}
    out["views_ms"] -= out["image_ms"]  # the views' own cost
    return out


def loader_rate(ds: UnlabeledDataset, workers: int, steps: int) -> tuple[float, float]:
    """Samples/s of a DataLoader over ``steps`` batches of 3 (workers started before timing),
    and the largest peak resident memory of its worker processes in MiB (0 without workers)."""
    sampler = StepBatchSampler(len(ds), BATCH, 0, UNLABELED, 0, steps + 2 * max(1, workers))
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
    it = iter(loader)
    for _ in range(2 * max(1, workers)):  # warm-up: workers started, first batches out
        next(it)
    start = time.perf_counter()
    for _ in range(steps):
        next(it)
    rate = steps * BATCH / (time.perf_counter() - start)
    peaks = [_peak_rss_mib(w.pid) for w in getattr(it, "_workers", [])]
    del it
    return rate, max(peaks, default=0.0)


def _peak_rss_mib(pid: int | None) -> float:
    """VmHWM (peak resident set) of a live process, from /proc (Linux); 0 if unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def candidate_bytes(ds: UnlabeledDataset, refs: list[Any]) -> tuple[float, float]:
    """Mean bytes of one sample's candidates and of a collated batch of 3's."""
    singles, batches = [], []
    for i in range(0, len(refs) - BATCH + 1, BATCH):
        items = [{"candidates": ds.candidates(r.image_id)} for r in refs[i : i + BATCH]]
        singles += [_nbytes(it["candidates"]) for it in items]
        batch = collate(items)
        batches.append(_nbytes(batch["candidates"]) + _nbytes(batch["candidates_valid"]))
    return float(np.mean(singles)), float(np.mean(batches))


def _nbytes(x: torch.Tensor | PackedMasks) -> int:
    if isinstance(x, PackedMasks):
        return x.nbytes + x.area.numel() * x.area.element_size()
    return x.numel() * x.element_size()


def check_same(bool_ds: UnlabeledDataset, packed_ds: UnlabeledDataset, refs: list[Any]) -> None:
    for ref in refs:
        want = bool_ds.candidates(ref.image_id)
        got = packed_ds.candidates(ref.image_id)
        if not torch.equal(got.unpack(), want) or not torch.equal(got.area, want.sum((1, 2))):
            raise SystemExit(f"packed candidates of image {ref.image_id} differ from bool")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24, help="training images")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per image")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="DataLoader worker counts"
    )
    parser.add_argument("--steps", type=int, default=24, help="batches timed per loader run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="keep the data here (default: a temp dir)")
    parser.add_argument(
        "--dataset",
        type=Path,
        help="an existing synthetic dataset (e.g. the refcoco preset at full size): the workers "
        "then hold its whole index, as in training; its first --images training images are read",
    )
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp)
        index, refs, store = make_data(root, args.images, args.candidates, args.seed, args.dataset)
        made = {
            fmt: UnlabeledDataset(
                index, refs, SIZE, args.seed, proposals=store, packed=fmt == "packed"
            )
            for fmt in ("bool", "packed")
        }
        check_same(made["bool"], made["packed"], refs)
        figures: dict[str, Any] = {}
        for fmt, ds in made.items():
            row = per_sample(ds, refs, args.repeats)
            row["samples_per_s_one_core"] = 1e3 / row["sample_ms"]
            row["candidate_bytes_per_sample"], row["candidate_bytes_per_batch"] = candidate_bytes(
                ds, refs
            )
            for n in args.workers:
                rate, peak = loader_rate(ds, n, args.steps)
                row[f"loader_samples_per_s_{n}_workers"] = rate
                row[f"worker_peak_rss_mib_{n}_workers"] = peak
            figures[fmt] = row
    report(figures, args, store_candidates=store.manifest["candidates"])
    if args.json:
        args.json.write_text(json.dumps({"args": _args(args), "figures": figures}, indent=1))


def _args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def report(figures: dict[str, Any], args: argparse.Namespace, store_candidates: int) -> None:
    print(
        f"refcoco preset ({args.dataset or 'made here'}), {args.images} images of 640x480 -> "
        f"{SIZE}x{SIZE}, "
        f"{store_candidates / args.images:.0f} candidates per image, batch {BATCH}, torch "
        f"{torch.__version__}, {os.cpu_count()} CPUs, medians of {args.repeats}, load "
        f"average {os.getloadavg()[0]:.1f}"
    )
    print("\n| figure | bool (before) | packed (now) | gain |")
    print("|---|---:|---:|---:|")
    for key in figures["bool"]:
        a, b = figures["bool"][key], figures["packed"][key]
        rate = key.startswith(("samples_per_s", "loader_samples_per_s"))
        gain = (b / a if rate else a / b) if a and b else float("nan")
        print(f"| {key} | {a:,.2f} | {b:,.2f} | {gain:.2f}x |")


if __name__ == "__main__":
    main()

"""SAM "segment everything", side by side: our ``sam`` generator against segment-anything's
``SamAutomaticMaskGenerator`` called directly, on the same weights and the same images.

Sides (``--sides``, each on every image, in a rotating order so that a busy machine slows
them alike):

- ``library``       ``SamAutomaticMaskGenerator(model, output_mode="coco_rle", **knobs)``;
- ``ours``          ``SamGenerator(model=model, **knobs)``, the default (``prefilter``: full-size
                    masks only for those that pass the predicted-IoU filter, and no deep copy of
                    every batch's RLEs; ``semires.proposals.sam``);
- ``ours-plain``    ``SamGenerator(prefilter=False)``: the library's batch step inside our
                    generator (what the wrapper itself costs);
- ``ours-ppb256``   ``points_per_batch=256``;
- ``ours-bf16``     the image encoder under bfloat16 autocast (changes the masks);
- ``ours-compile``, ``ours-compile-bf16``  ``torch.compile`` of the image encoder (GPU).

Per image and side: wall seconds, CPU seconds of the process, the image encoder's seconds
(``SamPredictor.set_image``) and the point decoding's (the rest), the candidates (after our
conversion: empty masks dropped, best first), whether they are identical to the library's
(RLEs, predicted IoU, stability score) or how they differ, and for our sides how many masks were
decoded / passed the predicted-IoU filter / the stability filter (random weights pass SAM's
0.88 / 0.95 filters almost never: these counts say how the timing transfers). Each image's
lines are appended to ``--out`` (JSON lines) as soon as its sides are done; ``--report`` prints
the table of one or more such files.

Weights are random (``sam_model_registry[model]()`` after ``torch.manual_seed(--seed)``; no
checkpoint is read). Images: ``real:N`` the first N photos of ../shared/realdata/coco_train2014,
``synth:N`` N synthetic 640x480 images (smooth colour fields with flat boxes).
``--encoder-batch N`` also times the image encoder over N images at once against one at a time
(and whether the features are the same), ``--rle-masks N`` the library's RLE encoding of N masks
against ours, ``--import-images N`` ``semires proposals import`` of N amg.py outputs (both
modes, 100 masks of 640x480 per image). Usage::

    python bench/bench_sam.py --model vit_b --points-per-side 16 --images real:3 \\
        --sides library,ours --out runs/bench_sam/pps16.jsonl
    python bench/bench_sam.py --report runs/bench_sam/pps16.jsonl
    python bench/bench_sam.py --device cuda --model vit_h --images real:3,synth:2 --warmup 1 \\
        --sides library,ours,ours-bf16,ours-compile-bf16 --out $OUT/sam.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semires.proposals.base import Proposals
from semires.proposals.sam import SamGenerator, records_to_proposals

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "coco_train2014"
SIDES = (
    "library",
    "ours",
    "ours-plain",
    "ours-ppb256",
    "ours-bf16",
    "ours-compile",
    "ours-compile-bf16",
)


# ---------------------------------------------------------------------------- images and model
def synthetic_images(n: int, size: tuple[int, int] = (480, 640), seed: int = 0) -> list:
    """Smooth random colour fields with a few flat boxes (so that masks have structure)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = size
    out = []
    for k in range(n):  # names say the seed: seed 1 stands in for missing photos
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)).copy()
        for _ in range(6):
            r, c = rng.integers(0, h - h // 4), rng.integers(0, w - w // 4)
            image[r : r + h // 5, c : c + w // 5] = rng.integers(0, 256, 3)
        out.append((f"synth_{k}" if seed == 0 else f"synth_s{seed}_{k}", image))
    return out


def load_images(spec: str) -> list[tuple[str, np.ndarray]]:
    """``real:N,synth:M`` -> [(name, (H, W, 3) uint8 RGB)]."""
    from semires.data.images import read_image

    images: list[tuple[str, np.ndarray]] = []
    for part in spec.split(","):
        kind, _, count = part.partition(":")
        if kind.isdigit():  # a bare count (the old option): synthetic images
            kind, count = "synth", kind
        n = int(count or 1)
        if kind == "real":
            files = sorted(REALDATA.glob("*.jpg"))[:n]
            if len(files) < n:  # e.g. a device machine without ../shared: say so, go on
                print(f"--images {part}: {len(files)} photos in {REALDATA}; synthetic instead")
            images += [(f.stem, read_image(f)) for f in files]
            images += synthetic_images(n - len(files), seed=1)
        elif kind == "synth":
            images += synthetic_images(n)
        else:
            raise SystemExit(f"--images: expected real:N or synth:N, got {part!r}")
    return images


def build_model(name: str, seed: int, device: str) -> Any:
    """A SAM of architecture ``name`` with random weights (seeded), in eval mode."""
    from segment_anything import sam_model_registry

    from semires.proposals.sam import tiny_sam

    torch.manual_seed(seed)
    model = tiny_sam(seed=seed) if name == "tiny" else sam_model_registry[name](checkpoint=None)
    return model.to(device).eval()


# ---------------------------------------------------------------------------- sides
class AutocastEncoder(torch.nn.Module):
    """The image encoder under bfloat16 autocast, its output back in float32 (for compile)."""

    def __init__(self, encoder: torch.nn.Module, device: str) -> None:
        super().__init__()
        self.encoder, self.device_type = encoder, device.split(":")[0]
        self.img_size = encoder.img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.encoder(x).float()


class Side:
    """One way of running everything mode: ``run(image) -> (Proposals, encoder seconds)``."""

    def __init__(self, name: str, model: Any, knobs: dict[str, Any], device: str) -> None:
        self.name, self.model, self.device = name, model, device
        self.encoder = model.image_encoder
        if name == "library":
            from segment_anything import SamAutomaticMaskGenerator

            self.amg = SamAutomaticMaskGenerator(model, output_mode="coco_rle", **knobs)
            self.gen = None
        else:
            extra = {
                "ours": {},
                "ours-plain": {"prefilter": False},
                "ours-ppb256": {"points_per_batch": 256},
                "ours-bf16": {"bf16": True},
                "ours-compile": {},
                "ours-compile-bf16": {},
            }[name]
            self.gen = SamGenerator(model=model, device=device, **knobs, **extra)
            self.amg = self.gen.amg
        if name.startswith("ours-compile"):
            inner = AutocastEncoder(self.encoder, device) if name.endswith("bf16") else self.encoder
            self.encoder = torch.compile(inner)

    @contextlib.contextmanager
    def timed_encoder(self) -> Iterator[list[float]]:
        """Time ``set_image`` (the image encoder) inside the block; the side's encoder in place."""
        predictor, spent = self.amg.predictor, []
        original_set, original_encoder = predictor.set_image, self.model.image_encoder

        def set_image(image: np.ndarray, image_format: str = "RGB") -> None:
            sync(self.device)
            start = time.perf_counter()
            original_set(image, image_format)
            sync(self.device)
            spent.append(time.perf_counter() - start)

        predictor.set_image = set_image
        self.model.image_encoder = self.encoder
        try:
            yield spent
        finally:
            del predictor.set_image
            self.model.image_encoder = original_encoder

    def run(self, image: np.ndarray) -> tuple[Proposals, float, dict[str, int]]:
        self.amg.__dict__.pop("counts", None)
        with self.timed_encoder() as spent, torch.inference_mode():
            if self.gen is None:
                props = records_to_proposals(self.amg.generate(image), image.shape[:2])
            else:
                props = self.gen.generate(image)
        return props, sum(spent), dict(self.amg.__dict__.get("counts", {}))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def compare(reference: Proposals, other: Proposals) -> dict[str, Any]:
    """Identical candidates (RLEs, predicted IoU, stability) or how the two sets differ."""
    same = (
        reference.rles == other.rles
        and np.array_equal(reference.predicted_iou, other.predicted_iou)
        and np.array_equal(reference.stability_score, other.stability_score)
    )
    if same:
        return {"identical": True}
    ref = {r["counts"]: k for k, r in enumerate(reference.rles)}
    shared = [(ref[r["counts"]], k) for k, r in enumerate(other.rles) if r["counts"] in ref]
    score_diff = max(
        (abs(float(reference.scores[i]) - float(other.scores[j])) for i, j in shared), default=0.0
    )
    return {
        "identical": False,
        "reference": len(reference),
        "other": len(other),
        "same_masks": len(shared),
        "max_score_diff": score_diff,
    }


# ---------------------------------------------------------------------------- one image
def run_image(
    name: str, image: np.ndarray, sides: list[Side], turn: int, meta: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every side on one image (order rotated by ``turn``); one record per side."""
    order = sides[turn % len(sides) :] + sides[: turn % len(sides)]
    results: dict[str, tuple[Proposals, dict[str, Any]]] = {}
    for side in order:
        sync(side.device)
        wall, cpu = time.perf_counter(), time.process_time()
        props, encoder_s, counts = side.run(image)
        sync(side.device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        row = {
            **meta,
            "image": name,
            "size": list(image.shape[:2]),
            "side": side.name,
            "seconds": wall,
            "cpu_seconds": cpu,
            "encoder_s": encoder_s,
            "decode_s": wall - encoder_s,
            "candidates": len(props),
            "counts": counts,
            "load_1min": os.getloadavg()[0],  # other processes on the machine, for the record
        }
        results[side.name] = (props, row)
        print(f"  {name} {side.name:18s} {wall:7.2f} s  {len(props)} candidates", flush=True)
    reference = results.get("library", next(iter(results.values())))[0]
    rows = []
    for props, row in results.values():
        row["vs_library"] = compare(reference, props) if "library" in results else None
        rows.append(row)
    return rows


def image_prep_seconds(image_spec: list[tuple[str, np.ndarray]], model: Any) -> float:
    """Median seconds to get an image ready for the encoder once it is decoded: resize to the
    longest side 1024 and normalise / pad (what a loader thread could do ahead)."""
    from segment_anything.utils.transforms import ResizeLongestSide

    transform, times = ResizeLongestSide(model.image_encoder.img_size), []
    for _, image in image_spec:
        start = time.perf_counter()
        resized = torch.as_tensor(transform.apply_image(image)).permute(2, 0, 1)[None]
        model.preprocess(resized.to(next(model.parameters()).device).float())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def encoder_batch(model: Any, images: list[np.ndarray], device: str) -> dict[str, Any]:
    """The image encoder over ``images`` one at a time and as one batch: seconds, same?"""
    from segment_anything.utils.transforms import ResizeLongestSide

    transform = ResizeLongestSide(model.image_encoder.img_size)
    batch = torch.cat(
        [
            model.preprocess(
                torch.as_tensor(transform.apply_image(im), device=device).permute(2, 0, 1)[None]
            )
            for im in images
        ]
    )
    with torch.inference_mode():
        sync(device)
        start = time.perf_counter()
        single = torch.cat([model.image_encoder(batch[i : i + 1]) for i in range(len(batch))])
        sync(device)
        one_by_one = time.perf_counter() - start
        start = time.perf_counter()
        together = model.image_encoder(batch)
        sync(device)
        batched = time.perf_counter() - start
    return {
        "case": "encoder_batch",
        "images": len(images),
        "one_at_a_time_s": one_by_one,
        "batched_s": batched,
        "identical": bool(torch.equal(single, together)),
        "max_abs_diff": float((single - together).abs().max()),
    }


def import_throughput(n_images: int, masks_per_image: int = 100) -> list[dict[str, Any]]:
    """Seconds per image of ``semires proposals import`` (the library call) for amg.py's two
    output modes: ``n_images`` synthetic 640x480 photos with ``masks_per_image`` masks each."""
    import tempfile

    from PIL import Image

    from semires.proposals.importer import import_store

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        root = Path(tmp)
        images = {}
        for k, (_, pixels) in enumerate(synthetic_images(n_images)):
            images[k] = root / "images" / f"photo_{k}.jpg"
            images[k].parent.mkdir(exist_ok=True)
            Image.fromarray(pixels).save(images[k])
            write_amg_outputs(root, f"photo_{k}", pixels.shape[:2], masks_per_image, k)
        for mode, folder in (("amg-png", "png"), ("sam-json", "json")):
            start = time.perf_counter()
            report = import_store(
                root / folder, images, lambda i: (480, 640), root / f"store-{mode}", progress=False
            )
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "case": "import",
                    "source_format": mode,
                    "images": n_images,
                    "candidates_per_image": report.candidates / n_images,
                    "seconds_per_image": seconds / n_images,
                }
            )
    return rows


def write_amg_outputs(root: Path, stem: str, size: tuple, k: int, seed: int) -> None:
    """amg.py's two outputs for one image: ``png/<stem>/`` and ``json/<stem>.json``."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    folder = root / "png" / stem
    folder.mkdir(parents=True)
    (root / "json").mkdir(exist_ok=True)
    rows, records = ["id,area,predicted_iou,stability_score"], []
    for i in range(k):
        cy, cx, ry, rx = (
            rng.uniform(0, h),
            rng.uniform(0, w),
            rng.uniform(5, h / 3),
            rng.uniform(5, w / 3),
        )
        mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
        mask[0, 0] = 1
        pred, stab = rng.uniform(0.88, 1), rng.uniform(0.95, 1)
        Image.fromarray(mask * 255).save(folder / f"{i}.png")
        rows.append(f"{i},{int(mask.sum())},{pred},{stab}")
        rle = mask_utils.encode(np.asfortranarray(mask))
        seg = {"size": [h, w], "counts": rle["counts"].decode()}
        records.append(
            {
                "segmentation": seg,
                "area": int(mask.sum()),
                "predicted_iou": pred,
                "stability_score": stab,
            }
        )
    (folder / "metadata.csv").write_text("\n".join(rows))
    (root / "json" / f"{stem}.json").write_text(json.dumps(records))


def rle_speed(n_masks: int, size: tuple[int, int] = (480, 640)) -> list[dict[str, Any]]:
    """The library's ``mask_to_rle_pytorch`` against our ``masks_to_rle`` on ``n_masks`` noisy
    masks (every other pixel a run: random weights' masks) and ``n_masks`` boxes."""
    from segment_anything.utils.amg import mask_to_rle_pytorch

    from semires.proposals.sam import masks_to_rle

    gen = torch.Generator().manual_seed(0)
    boxes = torch.zeros((n_masks, *size), dtype=torch.bool)
    for i in range(n_masks):
        boxes[i, i % size[0] : i % size[0] + 100, i % size[1] : i % size[1] + 200] = True
    rows = []
    for kind, masks in (
        ("noisy", torch.rand((n_masks, *size), generator=gen) > 0.5),
        ("boxes", boxes),
    ):
        start = time.perf_counter()
        library = mask_to_rle_pytorch(masks)
        middle = time.perf_counter()
        ours = masks_to_rle(masks)
        end = time.perf_counter()
        rows.append(
            {
                "case": "rle",
                "masks": f"{n_masks} {kind} masks of {size[0]}x{size[1]}",
                "library_s": middle - start,
                "ours_s": end - middle,
                "identical": library == ours,
            }
        )
    return rows


# ---------------------------------------------------------------------------- report
def report(paths: list[Path]) -> None:
    """The table of one or more result files (one line per side and setting)."""
    report_rows([json.loads(line) for p in paths for line in p.read_text().splitlines() if line])


def report_rows(rows: list[dict[str, Any]]) -> None:
    """Print the import and encoder lines, then one table per (device, model, knobs)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("case") == "rle":
            print(
                f"RLE of {row['masks']}: library {row['library_s']:.2f} s, ours "
                f"{row['ours_s']:.2f} s, identical {row['identical']}"
            )
            continue
        if row.get("case") == "import":
            print(
                f"import {row['source_format']}: {row['seconds_per_image'] * 1000:.0f} ms / image "
                f"({row['images']} images of 640x480, {row['candidates_per_image']:.0f} masks each)"
            )
            continue
        if row.get("case") == "encoder_batch":
            print(
                f"encoder over {row['images']} images ({row.get('device', '?')}): one at a time "
                f"{row['one_at_a_time_s']:.2f} s, one batch {row['batched_s']:.2f} s, "
                f"identical features {row['identical']} (max diff {row['max_abs_diff']:.2e})"
            )
            continue
        key = (row["device"], row["model"], json.dumps(row["knobs"], sort_keys=True))
        groups.setdefault(key, []).append(row)
    for (device, model, knobs), group in groups.items():
        print(f"\n{device}, SAM {model} (random weights), knobs {knobs}")
        print(_table(group))


def _table(group: list[dict[str, Any]]) -> str:
    """Median seconds per image (wall, CPU, encoder, decoding), candidates and identity."""
    by_side: dict[str, list[dict[str, Any]]] = {}
    for row in group:
        by_side.setdefault(row["side"], []).append(row)
    base = by_side.get("library")
    lines = [
        "| side | images | s / image | CPU s / image | encoder s | decoding s | candidates / image "
        "| decoded / passing IoU / stable masks per image | same candidates as the library "
        "| library / side (wall / CPU) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for side, rows in by_side.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("seconds", "cpu_seconds")}
        enc = statistics.median(r["encoder_s"] for r in rows)
        dec = statistics.median(r["decode_s"] for r in rows)
        cand = statistics.mean(r["candidates"] for r in rows)
        counts = [r["counts"] for r in rows if r["counts"]]
        counted = (
            " / ".join(f"{statistics.mean(c[k] for c in counts):.0f}" for k in counts[0])
            if counts
            else "n/a"
        )
        same = [r["vs_library"] for r in rows if r.get("vs_library")]
        identical = f"{sum(s['identical'] for s in same)} of {len(same)}" if same else "n/a"
        ratio = (
            " / ".join(
                f"{statistics.median(r[k] for r in base) / med[k]:.2f}x"
                for k in ("seconds", "cpu_seconds")
            )
            if base
            else ""
        )
        lines.append(
            f"| {side} | {len(rows)} | {med['seconds']:.2f} | {med['cpu_seconds']:.2f} | "
            f"{enc:.2f} | {dec:.2f} | {cand:.1f} | {counted} | {identical} | {ratio} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda"
    )
    parser.add_argument("--model", default="vit_b", help="vit_b, vit_l, vit_h or tiny")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--images", default="real:3", help="real:N,synth:M (N alone: synth:N)")
    parser.add_argument("--image-start", type=int, default=0, help="skip the first K of them")
    parser.add_argument(
        "--sides", default="library,ours", help=f"of {', '.join(SIDES)}; none: --encoder-batch only"
    )
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--loose", action="store_true", help="pred_iou / stability thresholds 0")
    parser.add_argument("--set", action="append", default=[], help="another AMG knob key=value")
    parser.add_argument("--warmup", type=int, default=0, help="untimed runs of each side first")
    parser.add_argument("--encoder-batch", type=int, default=0, help="also time N images at once")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument(
        "--import-images", type=int, default=0, help="also time importing N amg.py outputs"
    )
    parser.add_argument("--rle-masks", type=int, default=0, help="also time RLE of N masks")
    parser.add_argument("--out", type=Path, help="append the results here (JSON lines)")
    parser.add_argument("--report", type=Path, nargs="+", help="print the table of these files")
    return parser.parse_args()


def knobs_of(args: argparse.Namespace) -> dict[str, Any]:
    """The AMG knobs both sides get: the library's defaults, with --points-per-side etc."""
    knobs: dict[str, Any] = {"points_per_side": args.points_per_side}
    if args.loose:
        knobs.update(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    for item in args.set:
        key, _, value = item.partition("=")
        knobs[key] = float(value) if "." in value else int(value)
    return knobs


def main() -> None:
    args = parse_args()
    if args.report:
        report(args.report)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    images = load_images(args.images)[args.image_start :]
    model = build_model(args.model, args.seed, args.device)
    knobs = knobs_of(args)
    names = [] if args.sides == "none" else args.sides.split(",")
    sides = [Side(name, model, knobs, args.device) for name in names]
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    meta = {
        "device": f"{device}, {torch.get_num_threads()} threads",
        "model": args.model,
        "knobs": knobs,
        "torch": torch.__version__,
        "command": "python bench/bench_sam.py " + " ".join(sys.argv[1:]),
        "prep_s": image_prep_seconds(images, model),
    }
    for _ in range(args.warmup):
        for side in sides:
            side.run(images[0][1])
    out_rows: list[dict[str, Any]] = []
    for turn, (name, image) in enumerate(images if sides else []):
        rows = run_image(name, image, sides, turn, meta)
        out_rows += rows
        write(args.out, rows)
    if args.rle_masks:
        rows = [{**meta, **row} for row in rle_speed(args.rle_masks)]
        out_rows += rows
        write(args.out, rows)
        report_rows(rows)
    if args.import_images:
        rows = [{**meta, **row} for row in import_throughput(args.import_images)]
        out_rows += rows
        write(args.out, rows)
        report_rows(rows)
    if args.encoder_batch:
        batch = [im for _, im in (images * args.encoder_batch)[: args.encoder_batch]]
        row = {**meta, **encoder_batch(model, batch, args.device)}
        out_rows.append(row)
        write(args.out, [row])
    print(_table([r for r in out_rows if "side" in r]))


def write(path: Path | None, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` to ``path`` at once (a killed run keeps every finished image)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


if __name__ == "__main__":
    main()

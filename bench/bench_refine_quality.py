"""How much do IOM and CPI improve realistic, imperfect pseudo-labels with a set of candidates?

For every referred object of a split (synthetic training images by default), its ground-truth
mask G is spoiled the way a teacher spoils it, and the spoiled label P is refined with the
image's candidates by IOM (tau 0.5) and by CPI (t1 = t2 = 0.7), using the training code's own
:func:`semires.train.refine.iom` / :func:`~semires.train.refine.cpi`. Printed per kind of
spoiling: the mean IoU with G of P itself, of the IOM label and of the CPI label, and how often
each rule matched (an unmatched sample keeps P). Kinds of spoiling:

- ``gt``: G itself (refinement should keep it);
- ``dilate N`` / ``erode N``: G grown / shrunk by a disk of radius N px (over- / under-
  segmentation; an object that erodes away gives an empty P);
- ``shift N``: G moved by N px in a direction drawn per object (a misaligned label);
- ``larger part`` / ``smaller part``: only one visible part of an object that has two (from the
  synthetic benchmark's part masks; other datasets have no such rows).

Also printed: the ceilings of ``semires proposals quality`` (mean best single-candidate IoU and
CPI-union IoU with G as the pseudo-label), candidates per image and, when the candidates are
generated here, the generation speed. Usage::

    semires data synth --out /tmp/synth --preset demo --seed 0
    python bench/bench_refine_quality.py --data /tmp/synth                  # classical defaults
    python bench/bench_refine_quality.py --data /tmp/synth --set join_hull_ratio=inf --limit 200
    python bench/bench_refine_quality.py --data /tmp/synth --store runs/proposals/classical

``--store`` reads the candidates of an existing proposal store instead of generating them
(``--generator`` / ``--set`` are then ignored); ``--json OUT`` also writes the table.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import binary_dilation, binary_erosion
from skimage.morphology import disk
from tqdm import tqdm

from semires.data import DataSpec, load_index
from semires.data import masks as mask_ops
from semires.data.index import RESIndex
from semires.proposals import ProposalStore, build_generator, generate_store
from semires.proposals.base import parse_knobs
from semires.train.proposal_quality import object_quality
from semires.train.refine import T1, T2, TAU, cpi, iom  # the paper's constants and rules
from semires.utils.io import atomic_write_json

KINDS = (
    "gt",
    "dilate 2",
    "dilate 4",
    "erode 2",
    "erode 4",
    "shift 3",
    "shift 5",
    "larger part",
    "smaller part",
)


def spoil(
    gt: np.ndarray, kind: str, rng: np.random.Generator, parts: list[np.ndarray]
) -> np.ndarray | None:
    """The pseudo-label of one kind for ground truth ``gt`` (None: the kind does not apply)."""
    name, _, arg = kind.partition(" ")
    if name == "gt":
        return gt
    if name in ("dilate", "erode"):
        op = binary_dilation if name == "dilate" else binary_erosion
        return op(gt, structure=disk(int(arg)).astype(bool))
    if name == "shift":
        angle = rng.uniform(0, 2 * np.pi)
        dy, dx = (round(int(arg) * np.sin(angle)), round(int(arg) * np.cos(angle)))
        out = np.zeros_like(gt)
        h, w = gt.shape
        out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = gt[
            max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
        ]
        return out
    visible = sorted((p & gt for p in parts), key=lambda p: -int(p.sum()))
    if len(visible) < 2 or not visible[1].any():
        return None
    return visible[0] if name == "larger" else visible[-1]


def object_parts(index: RESIndex, object_id: int) -> list[np.ndarray]:
    """The part masks of a synthetic object (empty for other datasets)."""
    parts = index.objects[object_id].attributes.get("parts") or []
    return [mask_ops.decode(p["rle"]).astype(bool) for p in parts if "rle" in p]


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@dataclass
class Tally:
    """Sums over objects for one kind of spoiling."""

    n: int = 0
    label: float = 0.0
    iom: float = 0.0
    cpi: float = 0.0
    iom_matched: int = 0
    cpi_matched: int = 0

    def row(self) -> dict[str, float | int]:
        n = max(self.n, 1)
        return {
            "objects": self.n,
            "label_iou": self.label / n,
            "iom_iou": self.iom / n,
            "iom_matched": self.iom_matched / n,
            "cpi_iou": self.cpi / n,
            "cpi_matched": self.cpi_matched / n,
        }


@dataclass
class Bench:
    """Everything the table is made of."""

    tallies: dict[str, Tally] = field(default_factory=lambda: {k: Tally() for k in KINDS})
    best: list[float] = field(default_factory=list)
    ceiling_cpi: list[float] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)  # images the store does not hold

    def add_image(
        self, masks: np.ndarray, objects: list[tuple[np.ndarray, list[np.ndarray]]], seed: int
    ) -> None:
        """Score one image's [K, H, W] candidates against its (gt, parts) objects."""
        self.candidates.append(len(masks))
        cands = torch.from_numpy(masks.astype(bool))
        for n, (gt, parts) in enumerate(objects):
            best, _, ceiling, _ = object_quality(masks, gt, T1, T2)
            self.best.append(best)
            self.ceiling_cpi.append(ceiling)
            rng = np.random.default_rng([seed, n])
            labels = {k: spoil(gt, k, rng, parts) for k in KINDS}
            self._refine(cands, gt, {k: v for k, v in labels.items() if v is not None})

    def _refine(self, cands: torch.Tensor, gt: np.ndarray, labels: dict[str, np.ndarray]) -> None:
        """Refine each spoiled label of one object with IOM and CPI and tally the IoUs."""
        P = torch.from_numpy(np.stack(list(labels.values())).astype(bool))
        G = torch.from_numpy(gt.astype(bool)).expand_as(P)
        # a candidate that misses every label can be neither matched nor selected
        touching = cands[(cands & P.any(0)).flatten(1).any(1)]
        M = touching.expand(len(P), *touching.shape)
        valid = torch.ones(len(P), len(touching), dtype=torch.bool)
        by_iom = iom(P, M, valid, TAU)
        by_cpi = cpi(P, M, valid, T1, T2)
        label_iou, iom_iou, cpi_iou = (_iou(x, G) for x in (P, by_iom.refined, by_cpi.refined))
        for row, kind in enumerate(labels):
            t = self.tallies[kind]
            t.n += 1
            t.label += float(label_iou[row])
            t.iom += float(iom_iou[row])
            t.cpi += float(cpi_iou[row])
            t.iom_matched += int(by_iom.matched[row])
            t.cpi_matched += int(by_cpi.matched[row])

    def summary(self) -> dict:
        return {
            "objects": len(self.best),
            "images": len(self.candidates),
            "mean_best_iou": float(np.mean(self.best)) if self.best else None,
            "mean_cpi_ceiling": float(np.mean(self.ceiling_cpi)) if self.best else None,
            "candidates_per_image": float(np.mean(self.candidates)) if self.candidates else None,
            "images_not_in_store": len(self.missing),
            "rows": {k: t.row() for k, t in self.tallies.items() if t.n},
        }


def format_table(summary: dict) -> str:
    """The summary as a markdown table plus headline lines."""
    lines = [
        f"{summary['images']} images ({summary['images_not_in_store']} more not in the store), "
        f"{summary['objects']} objects, {summary['candidates_per_image']:.1f} candidates / image",
        f"ceilings with G as the label: mean best IoU {summary['mean_best_iou']:.3f}, "
        f"mean CPI-union IoU {summary['mean_cpi_ceiling']:.3f}",
        "",
        "| pseudo-label | objects | label IoU | IOM IoU (matched) | CPI IoU (matched) |",
        "|---|---|---|---|---|",
    ]
    for kind, r in summary["rows"].items():
        lines.append(
            f"| {kind} | {r['objects']} | {r['label_iou']:.3f} | {r['iom_iou']:.3f} "
            f"({r['iom_matched']:.0%}) | {r['cpi_iou']:.3f} ({r['cpi_matched']:.0%}) |"
        )
    return "\n".join(lines)


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def image_objects(index: RESIndex, split: str) -> dict[int, list[int]]:
    """The referred objects of ``split``, per image (each object once, in ref order)."""
    objects: dict[int, list[int]] = {}
    for ref in index.refs_in(split):
        listed = objects.setdefault(ref.image_id, [])
        if ref.object_id not in listed:
            listed.append(ref.object_id)
    return objects


def generate(args: argparse.Namespace, paths: dict[int, Path], out: Path) -> tuple[Path, str]:
    """Generate a store of candidates for ``paths`` in ``out``: (store folder, speed line)."""
    gen = build_generator(args.generator, **parse_knobs(args.generator, args.knobs))
    cpu, start = _cpu_seconds(), time.perf_counter()
    report = generate_store(gen, paths, out, workers=args.workers)
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    speed = (
        f"generation: {len(paths)} images in {wall:.1f} s wall with {args.workers} worker(s), "
        f"{1000 * cpu / max(len(paths), 1):.0f} ms CPU / image"
    )
    return report.store, speed


def score_store(store: ProposalStore, index: RESIndex, objects: dict[int, list[int]]) -> Bench:
    """Refine the spoiled labels of every object of an image the store holds."""
    bench = Bench()
    for image_id in tqdm(sorted(objects), desc="refine", unit="img"):
        if not store.has(image_id):
            bench.missing.append(image_id)
            continue
        masks = store.masks(image_id, expect_size=index.image_size(image_id)).numpy()
        objs = [(index.mask(o).astype(bool), object_parts(index, o)) for o in objects[image_id]]
        bench.add_image(masks, objs, seed=image_id)
    return bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a folder written by `semires data synth`")
    parser.add_argument("--dataset", default="synthref")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    parser.add_argument("--store", help="read the candidates from this proposal store")
    parser.add_argument("--generator", default="classical")
    parser.add_argument("--set", dest="knobs", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="also write the summary here")
    args = parser.parse_args()
    torch.set_flush_denormal(True)

    index = load_index(DataSpec(root=args.data, dataset=args.dataset))
    objects = image_objects(index, args.split)
    objects = {i: objects[i] for i in sorted(objects)[: args.limit or None]}
    with tempfile.TemporaryDirectory() as tmp:
        speed = ""
        folder = args.store
        if folder is None:
            paths = {i: index.image_path(i) for i in objects}
            folder, speed = generate(args, paths, Path(tmp) / "store")
        summary = score_store(ProposalStore.open(folder), index, objects).summary()
    print(format_table(summary))
    if speed:
        print(speed)
        summary["speed"] = speed
    if args.json:
        atomic_write_json(args.json, summary)


if __name__ == "__main__":
    main()

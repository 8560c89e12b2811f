"""Refinement speed: batched IOM / CPI (semires.train.refine) vs per-candidate Python loops,
and bool vs bit-packed candidates.

Two loop baselines run in the same process on the same data:

- ``loop (released code)``: what the authors' training scripts did, one candidate at a time with
  the dtypes they had (int64 candidate masks from their loader, the int64 argmax label),
  products and sums per candidate and a Python-side comparison per candidate;
- ``loop (bool)``: the same loop written as leanly as we could (bool masks, ``&`` / ``|``).

The batched functions run on the candidates as bool [B, K, H, W] (what the loader carried before)
and bit-packed (``semires.utils.bits.PackedMasks``, 64 pixels a word with their areas, what it
carries now); ``--clean`` draws the pseudo-labels without their 2% salt noise (a teacher's
label is one blob: the packed counts then read only the columns it spans). Every method's
output is checked against the batched one before timing (that run is the warm-up). Times are medians over ``--repeats`` interleaved runs, as wall time and as this
process's CPU time (the latter is less disturbed by other processes on a shared machine).

    .venv/bin/python bench/bench_refine.py                      # CPU, 8 x 128 at 480x480
    .venv/bin/python bench/bench_refine.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from semires.train.refine import candidate_overlaps, cpi, iom
from semires.utils.bits import PackedMasks

TAU, T1, T2 = 0.5, 0.7, 0.7


def make_case(
    batch: int, k: int, size: int, seed: int, device: str, noise: float = 0.02
) -> tuple[Tensor, Tensor, Tensor]:
    """Ellipse candidates (many small, a few large; every third one the left half of the one
    before, as SAM returns parts) and pseudo-labels: a copy of candidate 0 with ``noise`` of its
    pixels flipped in even samples, an unrelated ellipse in odd ones."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")

    def ellipses(n: int) -> Tensor:
        cy, cx = (torch.rand(2, n, 1, 1, generator=gen) * size).unbind(0)
        ry, rx = (size * (0.02 + 0.3 * torch.rand(2, n, 1, 1, generator=gen) ** 2)).unbind(0)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        return torch.where(
            torch.arange(n)[:, None, None] % 3 == 2, (inside & (xx < cx)).roll(1, 0), inside
        )

    labels, masks = [], []
    for b in range(batch):
        masks.append(ellipses(k))
        flip = torch.rand(size, size, generator=gen) < noise
        labels.append(masks[-1][0] ^ flip if b % 2 == 0 else ellipses(1)[0])
    valid = torch.ones(batch, k, dtype=torch.bool)
    return torch.stack(labels).to(device), torch.stack(masks).to(device), valid.to(device)


def loop_iom_released(c: Tensor, masks: list[Tensor]) -> Tensor:
    """IOM as the released script computed it: per candidate, int64 masks (its loader's
    ``ToTensor`` made them int64) times the int64 argmax label, a Python comparison each."""
    out = torch.zeros_like(c)
    for b in range(c.shape[0]):
        top, best = 0.0, None
        for t in range(masks[b].shape[0]):
            fg = masks[b][t]
            iou = (fg * c[b]).sum().double() / (fg + c[b] - fg * c[b]).sum().double()
            if iou > TAU and iou > top:
                top, best = iou, fg
        if best is None:
            out[b] = c[b]
        else:
            out[b][best.bool()] = 1
    return out


def loop_cpi_released(c: Tensor, masks: list[Tensor]) -> Tensor:
    """CPI as the released script computed it (int64 masks and label, per-candidate sums)."""
    out = torch.zeros_like(c)
    for b in range(c.shape[0]):
        missed = 0
        for t in range(masks[b].shape[0]):
            fg = masks[b][t]
            r1 = (fg * c[b]).sum().double() / (c[b].sum().double() + 1e-9)
            r2 = (fg * c[b]).sum().double() / fg.sum().double()  # nan for an empty mask
            if r1 > T1 or r2 > T2:
                out[b][fg.bool()] = 1
            else:
                missed += 1
        if missed == masks[b].shape[0]:
            out[b] = c[b]
    return out


def loop_iom_bool(P: Tensor, M: Tensor) -> Tensor:
    """The same IOM loop with bool masks."""
    out = P.clone()
    for b in range(P.shape[0]):
        top, best = TAU, None
        for t in range(M.shape[1]):
            inter, union = (M[b, t] & P[b]).sum(), (M[b, t] | P[b]).sum()
            iou = inter.double() / union.double() if union > 0 else 0.0
            if iou > top:
                top, best = iou, t
        if best is not None:
            out[b] = M[b, best]
    return out


def loop_cpi_bool(P: Tensor, M: Tensor) -> Tensor:
    """The same CPI loop with bool masks."""
    out = P.clone()
    for b in range(P.shape[0]):
        area_p, union, hit = P[b].sum().double(), torch.zeros_like(P[b]), False
        for t in range(M.shape[1]):
            inter, area_m = (M[b, t] & P[b]).sum().double(), M[b, t].sum().double()
            r1 = inter / area_p if area_p > 0 else 0.0
            r2 = inter / area_m if area_m > 0 else 0.0
            if r1 > T1 or r2 > T2:
                union |= M[b, t]
                hit = True
        if hit:
            out[b] = union
    return out


def timed(fn: Callable[[], object], device: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=128)
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--clean", action="store_true", help="pseudo-labels without noise")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    noise = 0.0 if args.clean else 0.02
    P, M, valid = make_case(args.batch, args.candidates, args.size, args.seed, dev, noise)
    c, masks = P.long(), [m.long() for m in M]  # the released code's dtypes (not timed)
    packed = PackedMasks.from_bool(M)  # what the loader hands over (not timed)

    methods: dict[str, Callable[[], Tensor]] = {
        "IOM batched": lambda: iom(P, M, valid, TAU).refined,
        "IOM loop (released code)": lambda: loop_iom_released(c, masks).bool(),
        "IOM loop (bool)": lambda: loop_iom_bool(P, M),
        "CPI batched": lambda: cpi(P, M, valid, T1, T2).refined,
        "CPI loop (released code)": lambda: loop_cpi_released(c, masks).bool(),
        "CPI loop (bool)": lambda: loop_cpi_bool(P, M),
        "overlap counts only": lambda: candidate_overlaps(P, M, valid).inter,
        "IOM batched, packed": lambda: iom(P, packed, valid, TAU).refined,
        "CPI batched, packed": lambda: cpi(P, packed, valid, T1, T2).refined,
        "overlap counts only, packed": lambda: candidate_overlaps(P, packed, valid).inter,
    }
    for name in ("IOM", "CPI", "overlap"):  # correctness first, and a warm-up
        want = methods[f"{name} batched" if name != "overlap" else "overlap counts only"]()
        variants = ("loop (released code)", "loop (bool)", "batched, packed")
        for variant in variants if name != "overlap" else ("counts only, packed",):
            if not torch.equal(methods[f"{name} {variant}"](), want):
                raise SystemExit(f"{name} {variant} disagrees with the batched result")
    matched_iom = int(iom(P, M, valid, TAU).matched.sum())
    matched_cpi = int(cpi(P, M, valid, T1, T2).matched.sum())

    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            runs[name].append(timed(fn, dev))
    wall = {name: statistics.median(r[0] for r in rs) * 1e3 for name, rs in runs.items()}
    cpu = {name: statistics.median(r[1] for r in rs) * 1e3 for name, rs in runs.items()}

    where = torch.cuda.get_device_name() if dev == "cuda" else platform.machine()
    print(
        f"{args.batch} samples x {args.candidates} candidates at {args.size}x{args.size}, "
        f"device {dev} ({where}, {os.cpu_count()} CPUs), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, medians of {args.repeats}, load average "
        f"{os.getloadavg()[0]:.1f}; matched: IOM {matched_iom}, CPI {matched_cpi} of {args.batch}"
    )
    print(
        "\n| method | wall ms | CPU ms | this / batched (wall) | this / batched (CPU) "
        "| bool / packed (wall) | bool / packed (CPU) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in methods:
        base = "overlap counts only" if name.startswith("overlap") else f"{name[:3]} batched"
        ratios = ["", "", "", ""]
        if "loop" in name:
            ratios[:2] = [f"{wall[name] / wall[base]:.1f}x", f"{cpu[name] / cpu[base]:.1f}x"]
        if "packed" in name:
            ratios[2:] = [f"{wall[base] / wall[name]:.1f}x", f"{cpu[base] / cpu[name]:.1f}x"]
        print(f"| {name} | {wall[name]:.1f} | {cpu[name]:.1f} | {' | '.join(ratios)} |")


if __name__ == "__main__":
    main()

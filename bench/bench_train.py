"""Training throughput (images/s) and peak memory of one training step.

CPU (the embedded default)::

    .venv/bin/python bench/bench_train.py --model tiny --batch 16 --size 128

GPU (the paper's model with random weights, bf16 vs fp32 at the paper's batch per GPU)::

    python bench/bench_train.py --model lavt-swin-b-random --batch 8 --size 480 --device cuda --amp bf16 none

Each configuration runs ``--warmup`` steps, then ``--steps`` timed steps; the median step time
gives images/s. Peak memory is the process's peak resident set (CPU) or
``torch.cuda.max_memory_allocated`` (GPU). With several ``--amp`` values the script prints each
one's speed relative to the first (a ratio measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch


def step_fn(model, optimizer, images, text, target, device, amp):
    from semires.runtime.precision import autocast
    from semires.train.losses import weighted_ce

    weights = torch.tensor([0.9, 1.1], device=device)
    with autocast(device, amp):
        logits = model(images, **text)
        loss = weighted_ce(logits, target, weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def profile_steps(step, steps: int, median_step_s: float, device: torch.device) -> dict:
    """Run ``steps`` more steps under torch.profiler; print the top operators by device time.

    Returns ``busy_share``, the share of the wall time the device spent in kernels (well below 1
    means the step is bound by the host: kernel launches, Python, not the GPU's arithmetic), and
    the number of timed events per step (on CUDA: kernels and copies, i.e. launches).
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    averages = prof.key_averages()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(averages.table(sort_by=key, row_limit=15, max_name_column_width=60))
    # on CUDA a CPU operator also carries the time of the kernels it launched: count the kernel
    # events only, or the busy time is counted twice
    timed = [
        e
        for e in averages
        if getattr(e, key) > 0 and (device.type != "cuda" or e.device_type != DeviceType.CPU)
    ]
    busy_us = sum(getattr(e, key) for e in timed)
    events = sum(e.count for e in timed)
    return {
        "profiled_steps": steps,
        "busy_share": busy_us / 1e6 / (steps * median_step_s),
        "timed_events_per_step": events / steps,
    }


def bench(
    model_name: str,
    batch: int,
    size: int,
    device: torch.device,
    amp: str,
    steps: int,
    warmup: int,
    profile: int = 0,
) -> dict:
    from semires.model import build_model
    from semires.runtime.textcache import TextInputs
    from semires.train.optim import build_optimizer

    torch.manual_seed(0)
    model = build_model(model_name, img_size=size).to(device).train()
    # the paper's optimiser groups for the paper's model (LAVT's rule), ours otherwise
    optimizer = build_optimizer(
        model, 5e-5, 1e-2, "lavt" if model_name.startswith("lavt") else "default"
    )
    text = TextInputs(model, device)
    sentences = [f"the small red star left of the blue ring number {i}" for i in range(batch)]
    text.precompute(sentences)
    kwargs = text(sentences)
    images = torch.randn(batch, 3, size, size, device=device)
    target = torch.rand(batch, size, size, device=device) > 0.7
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step_fn(model, optimizer, images, kwargs, target, device, amp)
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step_fn(model, optimizer, images, kwargs, target, device, amp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    extra = {}
    if profile:
        print(f"== profile: {model_name} amp={amp}, {profile} steps")
        extra = profile_steps(
            lambda: step_fn(model, optimizer, images, kwargs, target, device, amp),
            profile,
            med,
            device,
        )
        what = "GPU kernels busy" if device.type == "cuda" else "operators' self CPU time"
        print(
            f"{what}: {100 * extra['busy_share']:.0f}% of the step (profiled steps run slower), "
            f"{extra['timed_events_per_step']:.0f} timed events per step"
        )
    return {
        **extra,
        "model": model_name,
        "batch": batch,
        "size": size,
        "device": str(device),
        "amp": amp,
        "median_step_s": med,
        "images_per_s": batch / med,
        "peak_memory_mib": peak,
        "text_cached": text.cached,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="tiny")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", nargs="+", default=["none"], choices=["none", "bf16", "fp16"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    p.add_argument(
        "--profile", type=int, default=0, help="profile N more steps per config (top operators)"
    )
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [
        bench(args.model, args.batch, args.size, device, amp, args.steps, args.warmup, args.profile)
        for amp in args.amp
    ]
    base = rows[0]["images_per_s"]
    for r in rows:
        r["speed_vs_first"] = r["images_per_s"] / base
        print(
            f"{r['model']} b{r['batch']} {r['size']}px {r['device']} amp={r['amp']}: "
            f"{r['images_per_s']:.1f} img/s (median step {1000 * r['median_step_s']:.1f} ms), "
            f"peak memory {r['peak_memory_mib']:.0f} MiB, x{r['speed_vs_first']:.2f} vs {rows[0]['amp']}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()

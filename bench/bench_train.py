"""Training throughput (images/s) and peak memory of one training step.

CPU (the embedded default)::

    .venv/bin/python bench/bench_train.py --model tiny --batch 16 --size 128

GPU (the paper's model with random weights, bf16 vs fp32 at the paper's batch per GPU)::

    python bench/bench_train.py --model lavt-swin-b-random --batch 8 --size 480 --device cuda --amp bf16 none

Each configuration runs ``--warmup`` steps, then ``--steps`` timed steps; the median step time
gives images/s. Peak memory is the process's peak resident set (CPU) or
``torch.cuda.max_memory_allocated`` (GPU). With several ``--amp`` values the script prints each
one's speed relative to the first (a ratio measured in the same run).

Peak memory of one training step per per-GPU batch, with and without activation checkpointing
(``--memory``; ``ModelConfig.checkpoint_activations``)::

    .venv/bin/python bench/bench_train.py --memory --model lavt-swin-b-random --size 480 \
        --batch 1 2 --checkpoint none backbone backbone+text --json mem.json
    python bench/bench_train.py --memory --model lavt-swin-b-random --size 480 --device cuda \
        --batch 1 2 4 8 --checkpoint none backbone backbone+text --amp none bf16

The step is the engine's (zero the gradients, forward, weighted CE, backward, AdamW), measured
after one warm-up step, so the gradients and AdamW's state exist as in every later step. On
CUDA (one process): ``max_memory_allocated`` / ``max_memory_reserved`` over the step, and what
was allocated before it (weights, gradients, optimizer state). On the CPU there is no allocator
counter, so each case runs in a fresh subprocess with glibc's ``MALLOC_MMAP_THRESHOLD_=65536``
(every tensor above 64 KiB is its own mapping, returned to the OS when freed, so the resident
set follows the live tensors instead of keeping freed heap): the peak resident set of the
process (``ru_maxrss``) and the resident set just before the measured step; the parent stops a
case whose resident set passes ``--rss-limit-gib`` and skips the larger batches of that setting.
Both report the activations autograd keeps for the backward pass (``saved_tensors_hooks``,
unique storages other than the weights), an allocator-independent measure of what
checkpointing saves. "The step adds" is the peak minus the memory before the step, which still
held the previous step's gradients (freed when the step zeroes them): it is smaller than the
activations by up to the size of the gradients.
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
    optimizer.zero_grad(set_to_none=True)  # before the forward, as the engine does
    with autocast(device, amp):
        logits = model(images, **text)
        loss = weighted_ce(logits, target, weights)
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


def _rss_bytes() -> int:
    """The current resident set of this process (bytes)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def _setup(model_name: str, batch: int, size: int, device: torch.device, mode: str):
    """The model (with ``checkpoint_activations=mode``), its optimizer and one batch."""
    from semires.model import build_model
    from semires.runtime.textcache import TextInputs
    from semires.train.optim import build_optimizer

    torch.manual_seed(0)
    model = build_model(model_name, img_size=size, checkpoint_activations=mode)
    model = model.to(device).train()
    optimizer = build_optimizer(
        model, 5e-5, 1e-2, "lavt" if model_name.startswith("lavt") else "default"
    )
    text = TextInputs(model, device)
    sentences = [f"the small red star left of the blue ring number {i}" for i in range(batch)]
    text.precompute(sentences)
    images = torch.randn(batch, 3, size, size, device=device)
    target = torch.rand(batch, size, size, device=device) > 0.7
    return model, optimizer, text(sentences), images, target, text.cached


def memory_step(model, optimizer, images, kwargs, target, device, amp) -> dict:
    """Memory of one training step after a warm-up step (see the module docstring)."""
    import gc

    step_fn(model, optimizer, images, kwargs, target, device, amp)  # gradients + AdamW state
    gc.collect()
    saved: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:  # activations only, not the weights themselves
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        before = _rss_bytes()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step_fn(model, optimizer, images, kwargs, target, device, amp)
    out = {"before_step_gib": before / 2**30, "saved_for_backward_gib": sum(saved.values()) / 2**30}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    else:
        out["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30
    out["step_extra_gib"] = out["peak_gib"] - out["before_step_gib"]
    return out


def _memory_case_main(args) -> None:
    """One CPU case in this (fresh) process: one JSON line on stdout."""
    device = torch.device(args.device)
    model, optimizer, kwargs, images, target, cached = _setup(
        args.model, args.batch[0], args.size, device, args.checkpoint[0]
    )
    row = memory_step(model, optimizer, images, kwargs, target, device, args.amp[0])
    print("MEMORY_CASE " + json.dumps({**row, "text_cached": cached}), flush=True)


def _run_cpu_case(args, batch: int, mode: str, amp: str, limit_gib: float) -> dict:
    """A CPU case in a fresh subprocess, stopped if its resident set passes ``limit_gib``."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, __file__, "--memory-case", "--model", args.model, "--size",
           str(args.size), "--batch", str(batch), "--checkpoint", mode, "--amp", amp]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    worst = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/statm") as fh:
                rss = int(fh.read().split()[1]) * resource.getpagesize()
        except OSError:
            rss = 0
        worst = max(worst, rss)
        if rss > limit_gib * 2**30:
            proc.kill()
            proc.wait()
            return {"skipped": f"stopped: resident set passed {limit_gib:g} GiB"}
        time.sleep(0.2)
    out, err = proc.communicate()
    lines = [x for x in out.splitlines() if x.startswith("MEMORY_CASE ")]
    if proc.returncode or not lines:
        return {"skipped": f"failed (exit {proc.returncode}): {err.strip()[-300:]}"}
    return json.loads(lines[-1][len("MEMORY_CASE ") :])


def memory_main(args) -> None:
    """``--memory``: the table of peak memory per batch and checkpointing setting."""
    device = torch.device(args.device)
    rows = []
    for mode in args.checkpoint:
        if device.type == "cuda":  # one model per setting, every amp and batch on it
            model, optimizer, kwargs, images, target, cached = _setup(
                args.model, max(args.batch), args.size, device, mode
            )
        for amp in args.amp:
            over = False
            last: dict | None = None
            for batch in sorted(args.batch):
                case = {"model": args.model, "size": args.size, "device": str(device),
                        "amp": amp, "checkpoint": mode, "batch": batch}  # fmt: skip
                if device.type == "cuda":
                    try:
                        sub = {k: v[:batch] for k, v in kwargs.items()}
                        row = memory_step(
                            model, optimizer, images[:batch], sub, target[:batch], device, amp
                        )
                        row["text_cached"] = cached
                    except torch.OutOfMemoryError:
                        row = {"skipped": "out of GPU memory"}
                        model.zero_grad(set_to_none=True)
                        torch.cuda.empty_cache()
                elif over:
                    row = {"skipped": f"predicted above --rss-limit-gib {args.rss_limit_gib:g}"}
                else:
                    if last is not None and "peak_gib" in last:
                        # activations grow with the batch: extrapolate the last case's extra
                        per_image = last["step_extra_gib"] / last["batch"]
                        predicted = last["before_step_gib"] + per_image * batch
                        if predicted > args.rss_limit_gib:
                            over = True
                            row = {
                                "skipped": f"predicted {predicted:.1f} GiB > --rss-limit-gib "
                                f"{args.rss_limit_gib:g}"
                            }
                            rows.append({**case, **row})
                            print(f"{mode} b{batch}: {row['skipped']}", flush=True)
                            continue
                    row = _run_cpu_case(args, batch, mode, amp, args.rss_limit_gib)
                    over = "skipped" in row
                rows.append({**case, **row})
                last = rows[-1]
                if "skipped" in row:
                    print(f"{mode} b{batch} amp={amp}: {row['skipped']}", flush=True)
                else:
                    print(
                        f"{mode} b{batch} amp={amp}: peak {row['peak_gib']:.2f} GiB "
                        f"(before the step {row['before_step_gib']:.2f}, the step adds "
                        f"{row['step_extra_gib']:.2f}; kept for backward "
                        f"{row['saved_for_backward_gib']:.2f} GiB)",
                        flush=True,
                    )
        if device.type == "cuda":
            del model, optimizer
            torch.cuda.empty_cache()
    if device.type == "cuda":
        for budget in (12, 24, 48, 80):
            for amp in args.amp:
                fits = {
                    mode: max(
                        (r["batch"] for r in rows if r["checkpoint"] == mode and r["amp"] == amp
                         and r.get("peak_reserved_gib", 1e9) <= 0.9 * budget),
                        default=0,
                    )
                    for mode in args.checkpoint
                }  # fmt: skip
                print(f"{budget} GB (90% usable), amp={amp}: largest measured batch per GPU {fits}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": _device_name(device), "rows": rows}, fh, indent=2)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="tiny")
    p.add_argument("--batch", type=int, nargs="+", default=[16])
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
    p.add_argument(
        "--memory", action="store_true", help="peak memory of one step per batch / --checkpoint"
    )
    p.add_argument(
        "--checkpoint",
        nargs="+",
        default=["none"],
        choices=["none", "backbone", "backbone+text"],
        help="activation checkpointing settings (--memory)",
    )
    p.add_argument(
        "--rss-limit-gib", type=float, default=12.0, help="CPU --memory: stop a case beyond this"
    )
    p.add_argument("--memory-case", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_case:
        return _memory_case_main(args)
    if args.memory:
        return memory_main(args)
    rows = [
        bench(args.model, batch, args.size, device, amp, args.steps, args.warmup, args.profile)
        for batch in args.batch
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

"""Every data-side stage of the pipeline, timed at fractions of RefCOCO's size.

For each fraction f of ``--fractions`` the synthetic ``refcoco`` preset (RefCOCO's shape: train
16,994 / val 1,500 / testA 750 / testB 750 images, 640x480 JPEG, refer layout with RLE + polygon
masks) is generated with every split size multiplied by f (cached under ``--cache``, never inside
the repository), then every stage runs as its own subprocess, as a user would run it (the real
CLI ``.venv/bin/semires ...``; a short ``python -c`` where no command exists). Per stage and size:
wall seconds, CPU seconds, peak resident memory, bytes written, items.

Stages (``--stages``, in this order; a stage whose input stage failed is recorded as skipped; one
whose input stage is not chosen uses what an earlier run left in ``--cache``):

- ``synth``           ``semires data synth --preset refcoco`` (generation plus the statistics it
                      prints; ``--workers``: the command's default unless given). A cached dataset
                      is reused (``cached`` in the notes) unless ``--resynth``;
- ``stats``           ``semires data stats`` on the refer layout (masks decoded: area quantiles);
- ``split-10pct``, ``split-1pct``  ``semires data split --labeled 10% / 1%``;
- ``convert``         ``semires data convert --to semires`` (refer -> the SemiRES/LAVT json, one
                      ``.npy`` mask per ref beside it);
- ``stats-semires``   ``semires data stats --format semires`` on that json;
- ``stats-real``      ``semires data stats --format semires`` on ``--real-json`` (once, size
                      ``real``; masks and images are absent there: ``--no-masks`` is tried too);
- ``propose``         ``semires propose --generator classical`` on the unlabeled images of the
                      10% split (at most ``--propose-max-images`` of them: then a split folder
                      with that many unlabeled images is written and used by every later stage);
                      seconds per image, store bytes per image and per candidate;
- ``verify``          ``semires proposals verify STORE`` with the data options (sizes and files);
- ``store-check``     what training checks before it starts: ``ProposalStore.open`` +
                      ``check_for_images`` (coverage, sizes, file fingerprints) on the unlabeled
                      images (``python -c``; its sub-times in the notes);
- ``textcache``       the frozen text-feature cache of the ``tiny`` model (MiniLM) for every
                      sentence of every split: ``TextInputs.precompute`` + ``save`` (``python -c``;
                      no CLI builds it alone: ``semires train`` / ``run`` do at start-up);
- ``textcache-real``  the same for every sentence of ``--real-json`` (once, size ``real``);
- ``evaluate``        ``semires evaluate`` of a ``tiny`` checkpoint (packaged backbone + MiniLM,
                      fusion / decoder freshly initialised with seed 0: timing only) over every
                      val sentence at 128 px on the CPU; with ``--eval-max-sentences N`` and more
                      val sentences than N, ``evaluate_model(max_sentences=N)`` in ``python -c``
                      instead (noted ``capped``);
- ``run``             ``semires run`` on the refer layout (the split and store above, methods
                      [iom], one step of burn-in and one teacher-student step, no evaluation
                      during training): the time from launch to the first burn-in step and to the
                      first teacher-student step, from the timestamped output lines; the process is
                      interrupted once the teacher-student step is logged. Unless ``--no-profile``
                      it runs a second time under ``python -m cProfile`` for the breakdown (index
                      reads, split, store checks, text cache, model, evaluation).

Output: a markdown table (stage x size: items, wall s, CPU s, peak RSS MiB, disk MiB, rate),
a growth table (with >= 2 sizes: the exponent log(t2/t1)/log(n2/n1) between the two largest sizes,
the projected full-size time (power law), RSS (linear in items) and disk (proportional)), the run
start-up breakdown, and ``--json PATH`` with every number and every command. A progress line per
stage goes to stderr. A failing stage is recorded with its error line; the bench goes on.

Peak RSS is ``ru_maxrss`` from ``os.wait4`` of that one subprocess: the largest resident set of
the process or of any descendant it waited for (not their sum: the worker processes of ``synth``
and ``propose`` each count alone). CPU seconds are user + system of the process and its waited-for
descendants. Timings on a shared machine are noisy: compare CPU seconds as well as wall seconds.

Usage::

    .venv/bin/python bench/bench_scale.py --fractions 1/64 1/16 --json scale.json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
SEMIRES = str(VENV_BIN / "semires")
PYTHON = str(VENV_BIN / "python")
FULL = {"train": 16994, "val": 1500, "testA": 750, "testB": 750}
DATASET, SPLIT_BY = "synthref", "synth"
REAL_JSON = str(REPO.parent / "shared" / "realdata" / "semires_refcoco" / "refcoco_1%_image.json")
MIB = 1024 * 1024
STAGES = (
    "synth",
    "stats",
    "split-10pct",
    "split-1pct",
    "convert",
    "stats-semires",
    "stats-real",
    "propose",
    "verify",
    "store-check",
    "textcache",
    "textcache-real",
    "evaluate",
    "run",
)
#: the functions whose cumulative time the profiled ``semires run`` reports (module, function)
PROFILED = (
    ("semires/pipeline.py", "check_data"),
    ("semires/pipeline.py", "make_split"),
    ("semires/data/__init__.py", "load_index"),
    ("semires/data/splits.py", "make_split"),
    ("semires/data/splits.py", "read_split"),
    ("semires/proposals/store.py", "open"),
    ("semires/proposals/store.py", "check_for_images"),
    ("semires/proposals/store.py", "stale_images"),
    ("semires/model/registry.py", "build_model"),
    ("semires/train/engine.py", "__init__"),
    ("semires/train/engine.py", "_setup_data"),
    ("semires/train/engine.py", "_setup_model"),
    ("semires/train/engine.py", "_setup_text"),
    ("semires/runtime/textcache.py", "precompute"),
    ("semires/runtime/textcache.py", "load"),
    ("semires/runtime/textcache.py", "save"),
    ("semires/train/engine.py", "train_step"),
    ("semires/train/engine.py", "final_evaluation"),
    ("semires/evaluate/evaluate.py", "evaluate_model"),
)


# ---------------------------------------------------------------------------- records
@dataclass
class Proc:
    """One finished subprocess: exit code, times, peak RSS and its output lines with the
    seconds since launch at which each arrived."""

    cmd: list[str]
    rc: int
    wall_s: float
    cpu_s: float
    rss_mib: float
    lines: list[tuple[float, str, str]]
    timed_out: bool = False
    interrupted: bool = False

    def text(self, stream: str) -> str:
        return "\n".join(line for _, s, line in self.lines if s == stream)

    def error_line(self) -> str:
        """The last non-empty stderr line (or stdout's), for the table."""
        for stream in ("stderr", "stdout"):
            lines = [x.strip() for x in self.text(stream).splitlines() if x.strip()]
            if lines:
                return lines[-1][:300]
        return f"exit code {self.rc}"


@dataclass
class Result:
    """One stage at one size."""

    stage: str
    size: str
    fraction: float | None
    ok: bool
    items: int | None = None
    unit: str = ""
    wall_s: float | None = None
    cpu_s: float | None = None
    rss_mib: float | None = None
    disk_mib: float | None = None
    rate: str = ""
    error: str = ""
    notes: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


@dataclass
class Size:
    """One fraction of RefCOCO's size and the paths of everything made for it."""

    label: str
    fraction: Fraction
    counts: dict[str, int]
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    def path(self, name: str) -> Path:
        return self.root / "work" / name

    def data_options(self) -> list[str]:
        return ["--root", str(self.data), "--dataset", DATASET, "--split-by", SPLIT_BY]


# ---------------------------------------------------------------------------- subprocesses
def _reader(stream: Any, name: str, t0: float, sink: list, on_line: Callable[[str], None]) -> None:
    for raw in iter(stream.readline, ""):
        line = raw.rstrip("\n")
        sink.append((round(time.perf_counter() - t0, 3), name, line))
        on_line(line)
    stream.close()


def _child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the semires CLI sets it for itself
    return env


def run_measured(
    cmd: list[str], *, timeout: float, stop_when: Callable[[str], bool] | None = None
) -> Proc:
    """Run ``cmd`` in its own process group; wall time, ``os.wait4`` rusage (peak RSS of this
    child, CPU of it and its reaped descendants) and timestamped output lines. ``stop_when``:
    a line predicate after which the group gets SIGINT (SIGKILL 30 s later)."""
    stop = threading.Event()
    lines: list[tuple[float, str, str]] = []

    def on_line(line: str) -> None:
        if stop_when is not None and stop_when(line):
            stop.set()

    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        cwd=REPO,
        env=_child_env(),
        start_new_session=True,
    )
    readers = [
        threading.Thread(target=_reader, args=(s, n, t0, lines, on_line), daemon=True)
        for s, n in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))
    ]
    for r in readers:
        r.start()
    status, usage, flags = _wait(proc.pid, t0, timeout, stop)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join(timeout=10)
    return Proc(
        cmd=[str(c) for c in cmd],
        rc=proc.returncode,
        wall_s=round(wall, 3),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
        rss_mib=round(usage.ru_maxrss / 1024, 1),
        lines=sorted(lines, key=lambda x: x[0]),
        timed_out="timeout" in flags,
        interrupted="interrupted" in flags,
    )


def _wait(pid: int, t0: float, timeout: float, stop: threading.Event) -> tuple[int, Any, set]:
    """Poll ``os.wait4`` until the child ends; interrupt / kill its group when asked or late."""
    flags: set[str] = set()
    signalled_at: float | None = None
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage, flags
        now = time.perf_counter()
        if stop.is_set() and signalled_at is None:
            _signal_group(pid, signal.SIGINT)
            signalled_at, flags = now, flags | {"interrupted"}
        late = signalled_at is not None and now - signalled_at > 30
        if late or (now - t0 > timeout and "timeout" not in flags):
            _signal_group(pid, signal.SIGKILL)
            flags |= set() if late else {"timeout"}
        time.sleep(0.02)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def py_snippet(code: str, *args: str, timeout: float) -> tuple[Proc, dict[str, Any]]:
    """Run ``python -c code args``; its last stdout line is a json object of sub-results."""
    proc = run_measured([PYTHON, "-c", code, *args], timeout=timeout)
    out: dict[str, Any] = {}
    tail = [x for x in proc.text("stdout").splitlines() if x.startswith("{")]
    if proc.rc == 0 and tail:
        out = json.loads(tail[-1])
    return proc, out


# ---------------------------------------------------------------------------- helpers
def disk_mib(*paths: Path) -> float:
    """Apparent size of files / folders, MiB."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return round(total / MIB, 2)


def fresh(path: Path) -> Path:
    """``path`` removed (file or folder) and its parent created: every stage writes anew."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def parse_fraction(text: str) -> Fraction:
    value = Fraction(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"fraction {text!r}: expected 0 < f <= 1")
    return value


def make_size(cache: Path, fraction: Fraction, seed: int) -> Size:
    counts = {k: max(1, round(v * fraction)) for k, v in FULL.items()}
    label = f"{fraction.numerator}/{fraction.denominator}"
    name = f"refcoco-{fraction.numerator}_{fraction.denominator}-seed{seed}"
    return Size(label, fraction, counts, cache / name)


def from_proc(stage: str, size: Size | None, proc: Proc, **kw: Any) -> Result:
    """A result from one subprocess (``ok`` when it exited 0)."""
    ok = proc.rc == 0 and not proc.timed_out
    return Result(
        stage=stage,
        size=size.label if size else "real",
        fraction=float(size.fraction) if size else None,
        ok=ok,
        wall_s=proc.wall_s,
        cpu_s=proc.cpu_s,
        rss_mib=proc.rss_mib,
        error="" if ok else ("timed out: " if proc.timed_out else "") + proc.error_line(),
        commands=[" ".join(proc.cmd)],
        **kw,
    )


def per_s(n: int | None, seconds: float | None, unit: str) -> str:
    if not n or not seconds:
        return ""
    return f"{n / seconds:,.1f} {unit}/s"


def s_per(n: int | None, seconds: float | None, unit: str) -> str:
    if not n or not seconds:
        return ""
    return f"{seconds / n:.3f} s/{unit}"


def progress_line(result: Result) -> None:
    if result.ok:
        text = f"{result.wall_s:.1f} s wall, {result.cpu_s:.1f} s CPU, {result.rss_mib:.0f} MiB"
        text += f", {result.items} {result.unit}" if result.items is not None else ""
    else:
        text = f"FAILED: {result.error}"
    print(f"[bench_scale] {result.size:>6} {result.stage:<15} {text}", file=sys.stderr, flush=True)


def synth_counts(size: Size) -> dict[str, dict[str, int]]:
    return json.loads((size.data / DATASET / "synth.json").read_text())["counts"]


def total(size: Size, key: str, splits: tuple[str, ...] | None = None) -> int:
    counts = synth_counts(size)
    return sum(v[key] for k, v in counts.items() if splits is None or k in splits)


# ---------------------------------------------------------------------------- data stages
def stage_synth(size: Size, args: argparse.Namespace) -> Result:
    cmd = [SEMIRES, "data", "synth", "--out", str(size.data), "--preset", "refcoco"]
    cmd += ["--seed", str(args.seed), "-q"]
    for split, n in size.counts.items():
        cmd += [f"--images-{split}", str(n)]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    if args.resynth:
        cmd.append("--force")
    proc = run_measured(cmd, timeout=args.stage_timeout)
    images = sum(size.counts.values())
    cached = proc.text("stdout").startswith("cached ")
    result = from_proc("synth", size, proc, items=images, unit="images")
    result.disk_mib = disk_mib(size.data)
    result.rate = s_per(images, proc.wall_s, "image")
    result.notes["cached"] = cached
    if result.ok:
        result.notes["sentences"] = total(size, "sentences")
        result.notes["refs"] = total(size, "refs")
    return result


def stage_stats(size: Size, args: argparse.Namespace) -> Result:
    return _stats_stage("stats", size, args, size.data_options(), "stats-refer.json")


def _stats_stage(
    name: str, size: Size, args: argparse.Namespace, data: list[str], out_name: str
) -> Result:
    """``semires data stats`` on ``data`` (the dataset options), statistics to ``out_name``."""
    out = fresh(size.path(out_name))
    cmd = [SEMIRES, "data", "stats", *data, "-q", "--json", str(out)]
    proc = run_measured(cmd, timeout=args.stage_timeout)
    refs = total(size, "refs")
    result = from_proc(name, size, proc, items=refs, unit="refs")
    result.disk_mib = disk_mib(out)
    result.rate = per_s(refs, proc.wall_s, "ref")
    return result


def stage_split(size: Size, args: argparse.Namespace, share: str) -> Result:
    tag = share.rstrip("%")
    out = fresh(size.path(f"split-{tag}pct"))
    cmd = [SEMIRES, "data", "split", *size.data_options(), "--labeled", share]
    cmd += ["--out", str(out), "-q"]
    proc = run_measured(cmd, timeout=args.stage_timeout)
    images = size.counts["train"]
    result = from_proc(f"split-{tag}pct", size, proc, items=images, unit="train images")
    result.disk_mib = disk_mib(out)
    return result


def stage_convert(size: Size, args: argparse.Namespace) -> Result:
    folder = fresh(size.path("semires-json"))
    out = folder / "refcoco_synth.json"
    cmd = [SEMIRES, "data", "convert", *size.data_options(), "--to", "semires"]
    cmd += ["--out", str(out), "-q"]
    proc = run_measured(cmd, timeout=args.stage_timeout)
    refs = total(size, "refs")
    result = from_proc("convert", size, proc, items=refs, unit="refs")
    result.disk_mib = disk_mib(folder)
    result.rate = per_s(refs, proc.wall_s, "ref")
    result.notes["json_mib"] = disk_mib(out)
    result.notes["masks_mib"] = disk_mib(folder / "masks")
    return result


def stage_stats_semires(size: Size, args: argparse.Namespace) -> Result:
    ann = size.path("semires-json") / "refcoco_synth.json"
    data = ["--format", "semires", "--ann", str(ann)]
    return _stats_stage("stats-semires", size, args, data, "stats-semires.json")


def stage_stats_real(args: argparse.Namespace) -> Result:
    """The real SemiRES json: without masks or images; ``--no-masks`` tried when plain fails."""
    base = [SEMIRES, "data", "stats", "--format", "semires", "--ann", args.real_json, "-q"]
    plain = run_measured(base, timeout=args.stage_timeout)
    result = from_proc("stats-real", None, plain, items=None, unit="sentences")
    result.notes["plain"] = {"rc": plain.rc, "stdout_tail": plain.text("stdout")[-600:]}
    notes = [x for x in plain.text("stdout").splitlines() if x.startswith("note:")]
    result.notes["plain_notes"] = notes
    nomask = run_measured([*base, "--no-masks"], timeout=args.stage_timeout)
    result.notes["no_masks"] = {"rc": nomask.rc, "wall_s": nomask.wall_s, "rss": nomask.rss_mib}
    result.commands.append(" ".join(nomask.cmd))
    result.items = _real_sentences(plain.text("stdout") or nomask.text("stdout"))
    result.rate = per_s(result.items, plain.wall_s, "sent")
    return result


def _real_sentences(table: str) -> int | None:
    """Sum of the sentences column of ``semires data stats`` output."""
    n = 0
    for line in table.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1].replace(",", "").isdigit():
            n += int(parts[3].replace(",", ""))
    return n or None


# ---------------------------------------------------------------------------- proposals
STORE_CHECK = r"""
import json, resource, sys, time
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
from semires.data import DataSpec, load_index
from semires.data.splits import read_split
from semires.proposals.store import ProposalStore
t1 = time.perf_counter()
index = load_index(DataSpec(format="refer", root=sys.argv[1], dataset="synthref", split_by="synth"))
t2, m2 = time.perf_counter(), rss()
ids = sorted(read_split(sys.argv[2], index).unlabeled_images)
t3 = time.perf_counter()
store = ProposalStore.open(sys.argv[3])
t4 = time.perf_counter()
store.check_for_images(ids, index.image_size, index.image_path)
t5 = time.perf_counter()
stale = store.stale_images({i: index.image_path(i) for i in ids})
t6 = time.perf_counter()
print(json.dumps({"images": len(ids), "import_s": t1 - t0, "load_index_s": t2 - t1,
                  "read_split_s": t3 - t2, "open_store_s": t4 - t3, "check_for_images_s": t5 - t4,
                  "stale_images_s": t6 - t5, "stale": len(stale), "peak_mib_after_index": m2}))
"""


def propose_split(size: Size, cap: int) -> Path:
    """The split folder proposals are made for: the 10% split, or a copy with its first
    ``cap`` unlabeled images (the others left out of both lists)."""
    split = size.path("split-10pct")
    if not cap:
        return split
    ids = [x for x in (split / "unlabeled.txt").read_text().split() if x.isdigit()]
    if len(ids) <= cap:
        return split
    out = fresh(size.path(f"split-10pct-first{cap}"))
    out.mkdir()
    shutil.copy(split / "labeled.txt", out / "labeled.txt")
    (out / "unlabeled.txt").write_text("\n".join(ids[:cap]) + "\n")
    return out


def store_counts(store: Path) -> tuple[int, int]:
    """(images, candidates) from the store's ``index.json`` (entry rows: ..., count, fp)."""
    entries = json.loads((store / "index.json").read_text())["entries"]
    return len(entries), sum(int(row[6]) for row in entries.values())


def stage_propose(size: Size, args: argparse.Namespace) -> Result:
    split = propose_split(size, args.propose_max_images)
    store = fresh(size.path("store"))
    cmd = [SEMIRES, "propose", *size.data_options(), "--generator", "classical"]
    cmd += ["--split-dir", str(split), "--out", str(store), "-q"]
    cmd += ["--workers", str(args.propose_workers)]
    proc = run_measured(cmd, timeout=args.stage_timeout)
    result = from_proc("propose", size, proc, unit="images")
    result.disk_mib = disk_mib(store)
    result.notes["split_dir"] = str(split)
    if result.ok:
        images, candidates = store_counts(store)
        nbytes = result.disk_mib * MIB
        result.items = images
        result.rate = s_per(images, proc.wall_s, "image")
        result.notes.update(
            candidates=candidates,
            candidates_per_image=round(candidates / max(images, 1), 1),
            bytes_per_image=round(nbytes / max(images, 1)),
            bytes_per_candidate=round(nbytes / max(candidates, 1), 1),
            cpu_s_per_image=round(proc.cpu_s / max(images, 1), 4),
        )
    return result


def stage_verify(size: Size, args: argparse.Namespace) -> Result:
    store = size.path("store")
    cmd = [SEMIRES, "proposals", "verify", str(store), *size.data_options(), "-q"]
    proc = run_measured(cmd, timeout=args.stage_timeout)
    images, _ = store_counts(store)
    result = from_proc("verify", size, proc, items=images, unit="images")
    result.rate = per_s(images, proc.wall_s, "image")
    return result


def stage_store_check(size: Size, args: argparse.Namespace, split: Path) -> Result:
    store = size.path("store")
    proc, out = py_snippet(
        STORE_CHECK, str(size.data), str(split), str(store), timeout=args.stage_timeout
    )
    result = from_proc("store-check", size, proc, items=out.get("images"), unit="images")
    result.notes = {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}
    result.rate = per_s(out.get("images"), out.get("check_for_images_s"), "image")
    return result


# ---------------------------------------------------------------------------- text, evaluation
TEXT_CACHE = r"""
import json, resource, sys, time
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
import torch
from semires.data import DataSpec, load_index
from semires.model import build_model
from semires.runtime.textcache import TextInputs
t1 = time.perf_counter()
index = load_index(DataSpec(**json.loads(sys.argv[1])))
sentences = [s.raw for _, s in index.sentences()]
t2 = time.perf_counter()
model = build_model("tiny")
text = TextInputs(model, torch.device("cpu"))
t3, m3 = time.perf_counter(), rss()
encoded = text.precompute(sentences)
t4, m4 = time.perf_counter(), rss()
text.save(sys.argv[2])
t5, m5 = time.perf_counter(), rss()
del text
again = TextInputs(model, torch.device("cpu"))
loaded = again.load(sys.argv[2])
t6, m6 = time.perf_counter(), rss()
print(json.dumps({"sentences": len(sentences), "unique": len(set(sentences)), "encoded": encoded,
                  "frozen_text": again.cached, "loaded": loaded, "import_s": t1 - t0,
                  "load_index_s": t2 - t1, "build_model_s": t3 - t2, "encode_s": t4 - t3,
                  "save_s": t5 - t4, "load_s": t6 - t5, "peak_mib_after_model": m3,
                  "peak_mib_after_encode": m4, "peak_mib_after_save": m5,
                  "peak_mib_after_reload": m6}))
"""

MAKE_CHECKPOINT = r"""
import sys, torch
from semires.model import build_model
from semires.runtime.checkpoint import model_state, save_checkpoint
from semires.train.config import Config, DataConfig
torch.manual_seed(0)
model = build_model("tiny")
state, dropped = model_state(model)
data = DataConfig(format="refer", root=sys.argv[1], dataset="synthref", split_by="synth",
                  img_size=128)
save_checkpoint(sys.argv[2], {"model": state, "text_from_source": dropped,
                              "model_config": model.config_dict(),
                              "config": Config(name="bench_scale", data=data).to_dict()})
print("{}")
"""

EVAL_CAPPED = r"""
import json, sys, time
from semires.data import DataSpec, load_index
from semires.evaluate.evaluate import evaluate_model
from semires.evaluate.predict import load
seg = load(sys.argv[2], device="cpu")
index = load_index(DataSpec(format="refer", root=sys.argv[1], dataset="synthref", split_by="synth"))
t0 = time.perf_counter()
r = evaluate_model(seg.model, index, "val", size=seg.img_size, batch_size=16, device=seg.device,
                   text=seg.text, max_sentences=int(sys.argv[3]), progress=False)
print(json.dumps({"sentences": len(r["per_sample"]), "evaluate_s": time.perf_counter() - t0,
                  "oIoU": r["metrics"]["oIoU"]}))
"""


def text_cache(stage: str, size: Size | None, spec: dict, out: Path, timeout: float) -> Result:
    proc, got = py_snippet(TEXT_CACHE, json.dumps(spec), str(fresh(out)), timeout=timeout)
    result = from_proc(stage, size, proc, items=got.get("encoded"), unit="unique sentences")
    result.disk_mib = disk_mib(out)
    result.notes = {k: round(v, 3) if isinstance(v, float) else v for k, v in got.items()}
    result.rate = per_s(got.get("encoded"), got.get("encode_s"), "sent")
    if got.get("encoded"):
        result.notes["bytes_per_sentence"] = round(disk_mib(out) * MIB / got["encoded"])
    return result


def stage_textcache(size: Size, args: argparse.Namespace) -> Result:
    spec = {"format": "refer", "root": str(size.data), "dataset": DATASET, "split_by": SPLIT_BY}
    return text_cache("textcache", size, spec, size.path("text_features.pt"), args.stage_timeout)


def stage_textcache_real(args: argparse.Namespace, out: Path) -> Result:
    spec = {"format": "semires", "ann": args.real_json}
    return text_cache("textcache-real", None, spec, out, args.stage_timeout)


def stage_evaluate(size: Size, args: argparse.Namespace) -> Result:
    ckpt = fresh(size.path("tiny.pt"))
    made, _ = py_snippet(MAKE_CHECKPOINT, str(size.data), str(ckpt), timeout=args.stage_timeout)
    if made.rc != 0:
        return from_proc("evaluate", size, made)
    sentences = synth_counts(size)["val"]["sentences"]
    cap = args.eval_max_sentences
    if cap and sentences > cap:
        proc, got = py_snippet(
            EVAL_CAPPED, str(size.data), str(ckpt), str(cap), timeout=args.stage_timeout
        )
        result = from_proc("evaluate", size, proc, items=got.get("sentences"), unit="sentences")
        result.notes.update(capped=cap, val_sentences=sentences, **got)
    else:
        out = fresh(size.path("eval-val.json"))
        cmd = [SEMIRES, "evaluate", "--checkpoint", str(ckpt), "--split", "val"]
        cmd += ["--device", "cpu", "--json", str(out), "-q"]
        proc = run_measured(cmd, timeout=args.stage_timeout)
        result = from_proc("evaluate", size, proc, items=sentences, unit="sentences")
        result.disk_mib = disk_mib(out)
    result.rate = per_s(result.items, result.wall_s, "sent")
    result.notes["make_checkpoint_s"] = made.wall_s
    return result


# ---------------------------------------------------------------------------- semires run
HEADER = re.compile(r"^\[(\d+)/(\d+)\] (.+)$")
EPOCH = re.compile(r"^\[(?P<name>[^\]]+)\] epoch=\d+, step=\d+, seconds=(?P<sec>[-+.e0-9]+)")


def run_config(size: Size, split: Path, out: Path) -> dict[str, Any]:
    """A ``semires run`` config on the refer layout: the given split and store, one burn-in
    step, one teacher-student step, no evaluation while training; the final evaluations (which
    the bench interrupts) on testB only."""
    one_step = {
        "epochs": 1,
        "steps_per_epoch": 1,
        "batch_size": 2,
        "skip_eval": True,
        "final_val": False,
        "eval_batch_size": 16,
    }
    return {
        "name": "scale",
        "out": str(out),
        "synth": None,
        "data": {
            "format": "refer",
            "root": str(size.data),
            "dataset": DATASET,
            "split_by": SPLIT_BY,
            "img_size": 128,
            "val_split": "val",
            "test_splits": ["testB"],
        },
        "labeled": "10%",
        "split_dir": str(split),
        "proposals": {"generator": "classical", "store": str(size.path("store"))},
        "model": {"name": "tiny"},
        "burn_in": one_step,
        "teacher_student": one_step,
        "semi": {"unlabeled_batch_size": 2},
        "methods": ["iom"],
        "parallel": 1,
        "report": {"qualitative": 0},
    }


def _epochs_seen(target: int) -> Callable[[str], bool]:
    seen: list[str] = []

    def done(line: str) -> bool:
        if EPOCH.match(line):
            seen.append(line)
        return len(seen) >= target

    return done


def timeline(proc: Proc) -> dict[str, Any]:
    """Seconds since launch of each stage header and of the start / end of each logged step
    (a step starts ``seconds`` before its epoch line: the epoch is that one step)."""
    out: dict[str, Any] = {"headers": {}, "steps": {}}
    for t, _, line in proc.lines:
        if m := HEADER.match(line):
            out["headers"][m.group(3)] = t
        elif m := EPOCH.match(line):
            sec = float(m.group("sec"))
            out["steps"][m.group("name")] = {"start": round(t - sec, 3), "logged": t, "step_s": sec}
    return out


def startup_parts(tl: dict[str, Any]) -> dict[str, float]:
    """The launch -> first-step time cut at the stage headers."""
    marks = sorted(tl["headers"].items(), key=lambda kv: kv[1])
    steps = sorted(tl["steps"].items(), key=lambda kv: kv[1]["start"])
    parts: dict[str, float] = {}
    if marks:
        parts["launch -> first stage header (imports, check_data)"] = marks[0][1]
    for (name, t), (_, t_next) in itertools.pairwise(marks):
        parts[f"stage '{name}'"] = round(t_next - t, 3)
    if steps:
        name, step = steps[0]
        parts["launch -> first burn-in step"] = step["start"]
    if len(steps) > 1:
        name, step = steps[1]
        header = max((t for _, t in marks if t <= step["start"]), default=0.0)
        parts["teacher-student header -> its first step (trainer set-up)"] = round(
            step["start"] - header, 3
        )
        parts["launch -> first teacher-student step"] = step["start"]
    return parts


def profile_breakdown(path: Path) -> dict[str, dict[str, float]]:
    """Cumulative seconds and calls of :data:`PROFILED` in a cProfile output."""
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    out: dict[str, dict[str, float]] = {}
    for (filename, _, func), (_, calls, _, cum, _) in stats.items():
        for module, name in PROFILED:
            if func == name and filename.replace("\\", "/").endswith(module):
                key = f"{module}:{name}"
                row = out.setdefault(key, {"cum_s": 0.0, "calls": 0})
                row["cum_s"] = round(row["cum_s"] + cum, 3)
                row["calls"] += calls
    return out


def stage_run(size: Size, args: argparse.Namespace, split: Path) -> Result:
    cfg_path = fresh(size.path("run.yaml"))
    out = fresh(size.path("run"))
    cfg_path.write_text(json.dumps(run_config(size, split, out), indent=1))  # JSON is YAML
    cmd = [SEMIRES, "run", "--config", str(cfg_path)]
    proc = run_measured(cmd, timeout=args.stage_timeout, stop_when=_epochs_seen(2))
    tl = timeline(proc)
    ok = len(tl["steps"]) >= 2
    result = from_proc("run", size, proc, unit="train images")
    result.ok = ok
    result.error = "" if ok else proc.error_line()
    result.items = size.counts["train"]
    result.disk_mib = disk_mib(out)
    result.notes.update(timeline=tl, startup=startup_parts(tl), interrupted=proc.interrupted)
    if ok:  # the stage's time is what the user waits before training: launch -> TS step
        steps = sorted(v["start"] for v in tl["steps"].values())
        result.notes["to_first_burn_in_step_s"] = steps[0]
        result.notes["to_first_teacher_student_step_s"] = steps[1]
    if ok and args.profile:
        result.notes["profile"] = profiled_run(size, args, cfg_path, out, result)
    return result


def profiled_run(
    size: Size, args: argparse.Namespace, cfg_path: Path, out: Path, result: Result
) -> dict[str, Any]:
    """The same run under cProfile: cumulative seconds of the start-up functions."""
    fresh(out)
    prof = fresh(size.path("run.prof"))
    cmd = [PYTHON, "-m", "cProfile", "-o", str(prof), "-m", "semires", "run"]
    cmd += ["--config", str(cfg_path)]
    proc = run_measured(cmd, timeout=args.stage_timeout, stop_when=_epochs_seen(2))
    result.commands.append(" ".join(cmd))
    if not prof.is_file():
        return {"error": proc.error_line()}
    return {
        "wall_s": proc.wall_s,
        "startup": startup_parts(timeline(proc)),
        "functions": profile_breakdown(prof),
        "file": str(prof),
    }


# ---------------------------------------------------------------------------- driver
NEEDS = {
    "stats-semires": "convert",
    "propose": "split-10pct",
    "verify": "propose",
    "store-check": "propose",
    "run": "propose",
}


def size_stages(size: Size, args: argparse.Namespace) -> list[Result]:
    """Every chosen per-size stage in order; a stage whose input failed is skipped."""
    results: dict[str, Result] = {}
    table: dict[str, Callable[[], Result]] = {
        "synth": lambda: stage_synth(size, args),
        "stats": lambda: stage_stats(size, args),
        "split-10pct": lambda: stage_split(size, args, "10%"),
        "split-1pct": lambda: stage_split(size, args, "1%"),
        "convert": lambda: stage_convert(size, args),
        "stats-semires": lambda: stage_stats_semires(size, args),
        "propose": lambda: stage_propose(size, args),
        "verify": lambda: stage_verify(size, args),
        "store-check": lambda: stage_store_check(size, args, _store_split(results, size, args)),
        "textcache": lambda: stage_textcache(size, args),
        "evaluate": lambda: stage_evaluate(size, args),
        "run": lambda: stage_run(size, args, _store_split(results, size, args)),
    }
    for name, fn in table.items():
        if name not in args.stages:
            continue
        if name != "synth" and "synth" in results and not results["synth"].ok:
            results[name] = skipped(name, size, "synth")
        else:
            results[name] = guarded(name, size, fn, results)
        progress_line(results[name])
    return list(results.values())


def _store_split(results: dict[str, Result], size: Size, args: argparse.Namespace) -> Path:
    """The split folder the store was made for (this run's propose, or an earlier one's)."""
    if "propose" in results:
        return Path(results["propose"].notes["split_dir"])
    return propose_split(size, args.propose_max_images)


#: what a stage reads when the stage making it was not chosen this time (an earlier run's)
OUTPUTS = {
    "convert": "semires-json/refcoco_synth.json",
    "split-10pct": "split-10pct/unlabeled.txt",
    "propose": "store/index.json",
}


def _ready(need: str, size: Size, done: dict[str, Result]) -> bool:
    """Whether the input ``need`` is there: made now, or (not chosen now) by an earlier run."""
    if need in done:
        return done[need].ok
    return size.path(OUTPUTS[need]).is_file()


def skipped(name: str, size: Size, needed: str) -> Result:
    frac = float(size.fraction)
    return Result(name, size.label, frac, ok=False, error=f"skipped: {needed} failed or not run")


def guarded(
    name: str, size: Size | None, fn: Callable[[], Result], done: dict[str, Result]
) -> Result:
    """``fn()``, or a failed result when its input stage failed or it raised."""
    need = NEEDS.get(name)
    if need is not None and size is not None and not _ready(need, size, done):
        return skipped(name, size, need)
    try:
        return fn()
    except Exception as exc:  # a bench bug or a missing output: recorded, not fatal
        frac = float(size.fraction) if size else None
        label = size.label if size else "real"
        return Result(name, label, frac, ok=False, error=f"{type(exc).__name__}: {exc}"[:300])


def real_stages(args: argparse.Namespace) -> list[Result]:
    results = []
    if "stats-real" in args.stages:
        results.append(guarded("stats-real", None, lambda: stage_stats_real(args), {}))
        progress_line(results[-1])
    if "textcache-real" in args.stages:
        out = args.cache / "real" / "text_features.pt"
        results.append(guarded("textcache-real", None, lambda: stage_textcache_real(args, out), {}))
        progress_line(results[-1])
    return results


# ---------------------------------------------------------------------------- growth, tables
def growth(results: list[Result], stage: str) -> dict[str, Any] | None:
    """Exponent between the two largest sizes and the projection to RefCOCO's full size."""
    rows = sorted(
        (
            r
            for r in results
            if r.stage == stage and r.ok and r.items and r.fraction and r.wall_s
            if not (r.stage == "synth" and r.notes.get("cached"))  # that timed the cache check
        ),
        key=lambda r: r.items or 0,
    )
    if len(rows) < 2 or rows[-1].items == rows[-2].items:
        return None
    a, b = rows[-2], rows[-1]
    n1, n2 = float(a.items or 0), float(b.items or 0)
    k = math.log(b.wall_s / a.wall_s) / math.log(n2 / n1)  # type: ignore[operator]
    k_cpu = math.log(b.cpu_s / a.cpu_s) / math.log(n2 / n1) if a.cpu_s and b.cpu_s else None
    n_full = n2 / (b.fraction or 1.0)
    slope = ((b.rss_mib or 0) - (a.rss_mib or 0)) / (n2 - n1)
    return {
        "sizes": [a.size, b.size],
        "items": [a.items, b.items],
        "wall_s": [a.wall_s, b.wall_s],
        "exponent": round(k, 3),
        "exponent_cpu": round(k_cpu, 3) if k_cpu is not None else None,
        "full_items": round(n_full),
        "full_wall_s": round((b.wall_s or 0) * (n_full / n2) ** k, 1),
        "rss_mib": [a.rss_mib, b.rss_mib],
        "full_rss_mib": round(max(b.rss_mib or 0, (b.rss_mib or 0) + slope * (n_full - n2)), 1),
        "full_disk_mib": round((b.disk_mib or 0) * n_full / n2, 1) if b.disk_mib else None,
    }


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def results_table(results: list[Result]) -> str:
    head = "| stage | size | items | wall s | CPU s | peak RSS MiB | disk MiB | rate | notes |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        note = r.error if not r.ok else short_notes(r)
        items = f"{fmt(r.items)} {r.unit}" if r.items is not None else "-"
        lines.append(
            f"| {r.stage} | {r.size} | {items} | {fmt(r.wall_s)} | {fmt(r.cpu_s)} | "
            f"{fmt(r.rss_mib, 0)} | {fmt(r.disk_mib)} | {r.rate} | {note} |"
        )
    return "\n".join(lines)


TEXT_NOTES = (
    "sentences",
    "encode_s",
    "save_s",
    "load_s",
    "bytes_per_sentence",
    "peak_mib_after_model",
    "peak_mib_after_encode",
)


def short_notes(r: Result) -> str:
    keys = {
        "synth": ("cached", "sentences"),
        "convert": ("json_mib", "masks_mib"),
        "propose": ("candidates_per_image", "bytes_per_image", "bytes_per_candidate"),
        "store-check": ("load_index_s", "open_store_s", "check_for_images_s"),
        "textcache": TEXT_NOTES,
        "textcache-real": TEXT_NOTES,
        "evaluate": ("capped",),
        "run": ("to_first_burn_in_step_s", "to_first_teacher_student_step_s"),
        "stats-real": ("plain_notes",),
    }.get(r.stage, ())
    shown = {k: r.notes[k] for k in keys if k in r.notes}
    text = ", ".join(f"{k} {v}" for k, v in shown.items())
    return text.replace("|", "/")[:200]


def growth_table(results: list[Result]) -> str:
    head = (
        "| stage | sizes | items | wall s | exponent (wall / CPU) | full items | "
        "full wall s (proj.) | peak RSS MiB | full RSS MiB (proj.) | full disk MiB (proj.) |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for stage in dict.fromkeys(r.stage for r in results):
        g = growth(results, stage)
        if g is None:
            continue
        lines.append(
            f"| {stage} | {' -> '.join(g['sizes'])} | {fmt(g['items'][0])} -> "
            f"{fmt(g['items'][1])} | {fmt(g['wall_s'][0])} -> {fmt(g['wall_s'][1])} | "
            f"{g['exponent']:.2f} / {fmt(g['exponent_cpu'], 2)} | {fmt(g['full_items'])} | "
            f"{fmt(g['full_wall_s'])} | {fmt(g['rss_mib'][0], 0)} -> {fmt(g['rss_mib'][1], 0)} "
            f"| {fmt(g['full_rss_mib'], 0)} | {fmt(g['full_disk_mib'])} |"
        )
    return "\n".join(lines)


def startup_table(results: list[Result]) -> str:
    runs = [r for r in results if r.stage == "run" and r.ok]
    if not runs:
        return ""
    parts = list(dict.fromkeys(p for r in runs for p in r.notes["startup"]))
    lines = ["| part | " + " | ".join(r.size for r in runs) + " |"]
    lines.append("|---|" + "---|" * len(runs))
    for p in parts:
        lines.append(f"| {p} | " + " | ".join(fmt(r.notes["startup"].get(p)) for r in runs) + " |")
    profiled = [r for r in runs if "functions" in r.notes.get("profile", {})]
    funcs = list(dict.fromkeys(f for r in profiled for f in r.notes["profile"]["functions"]))
    for f in funcs:
        cells = []
        for r in profiled:
            row = r.notes["profile"]["functions"].get(f)
            cells.append(f"{row['cum_s']:.2f} s ({row['calls']})" if row else "-")
        lines.append(f"| cProfile: {f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(results: list[Result]) -> str:
    parts = ["## Stages\n", results_table(results)]
    grown = growth_table(results)
    if grown.count("\n") > 1:
        parts += ["\n## Growth between the two largest sizes, projected to RefCOCO's size\n", grown]
    start = startup_table(results)
    if start:
        parts += ["\n## `semires run`: seconds since launch (cProfile: cumulative s, calls)\n"]
        parts.append(start)
    return "\n".join(parts)


# ---------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--fractions",
        nargs="+",
        type=parse_fraction,
        default=[Fraction(1, 64)],
        help="fractions of RefCOCO's size, e.g. 1/64 1/16 1/4 (default 1/64)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=REPO.parent / "scale-cache",
        help="folder for the datasets and every stage's output; never inside the "
        "repository (default ../scale-cache beside the checkout)",
    )
    p.add_argument("--json", type=Path, default=None, help="write every result here")
    p.add_argument(
        "--previous",
        type=Path,
        nargs="*",
        default=[],
        help="--json files of earlier runs: their results for the (stage, size) pairs not run "
        "now join the tables and the growth fit (e.g. 1/64 and 1/16 before, 1/4 now)",
    )
    p.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="stages to run (default all; the per-size order is fixed)",
    )
    p.add_argument("--seed", type=int, default=0, help="synthetic generator seed (default 0)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="semires data synth --workers (default: the command's own)",
    )
    p.add_argument(
        "--resynth",
        action="store_true",
        help="regenerate the datasets (--force) so that synth measures generation, "
        "not the cache check",
    )
    p.add_argument(
        "--propose-max-images",
        type=int,
        default=0,
        help="propose for at most this many unlabeled images per size (0: all of "
        "the 10%% split's unlabeled images)",
    )
    p.add_argument(
        "--propose-workers",
        type=int,
        default=1,
        help="semires propose --workers (default 1, the command's default)",
    )
    p.add_argument(
        "--eval-max-sentences",
        type=int,
        default=0,
        help="evaluate at most this many val sentences (0: all; a cap switches to "
        "evaluate_model(max_sentences=N) in python -c)",
    )
    p.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="skip the second, cProfiled `semires run`",
    )
    p.add_argument(
        "--real-json",
        default=REAL_JSON,
        help=f"the real SemiRES json for stats-real / textcache-real ({REAL_JSON.replace('%', '%%')})",
    )
    p.add_argument(
        "--stage-timeout",
        type=float,
        default=1800.0,
        help="seconds before a stage's process group is killed (default 1800)",
    )
    args = p.parse_args(argv)
    args.cache = args.cache.resolve()
    if args.cache == REPO or REPO in args.cache.parents:
        p.error(f"--cache {args.cache}: must not be inside the repository {REPO}")
    return args


def previous_results(paths: list[Path], now: list[Result]) -> list[Result]:
    """The results of earlier ``--json`` files for (stage, size) pairs not measured now."""
    seen = {(r.stage, r.size) for r in now}
    out: list[Result] = []
    for path in paths:
        for row in json.loads(path.read_text())["results"]:
            old = Result(**row)
            if (old.stage, old.size) not in seen:
                seen.add((old.stage, old.size))
                out.append(old)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = [make_size(args.cache, f, args.seed) for f in sorted(set(args.fractions))]
    t0 = time.perf_counter()
    results: list[Result] = real_stages(args)
    for size in sizes:
        size.root.mkdir(parents=True, exist_ok=True)
        results += size_stages(size, args)
    results = previous_results(args.previous, results) + results
    text = report(results)
    print(text)
    if args.json is not None:
        payload = {
            "fractions": [s.label for s in sizes],
            "counts": {s.label: s.counts for s in sizes},
            "cache": str(args.cache),
            "seconds": round(time.perf_counter() - t0, 1),
            "results": [asdict(r) for r in results],
            "growth": {s: growth(results, s) for s in dict.fromkeys(r.stage for r in results)},
            "markdown": text,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"\nwrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()

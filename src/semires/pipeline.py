"""The end-to-end SemiRES run (``semires run``): data -> split -> proposals -> burn-in ->
teacher-student runs -> evaluation -> report.

Every stage writes into the run folder and is skipped when its output is complete, so a rerun
after a crash (or with more methods) redoes only what is missing; training stages resume from
their ``latest.pt``. A stage's folder remembers the config it was made with: rerunning with a
different config in the same folder is an error (use another ``--out``), never a silent mix.
``run.yaml`` holds the run's config; the keys that decide the data, the split and the proposals
(:data:`semires.run_config.UPSTREAM_KEYS`) are checked against it before any stage runs, so
another synthetic seed in the same folder cannot overwrite the data under a finished burn-in.

Run folder (:class:`semires.layout.RunLayout`)::

    run.yaml         the run config (the data / split / proposals part is checked on a rerun)
    data/            the synthetic benchmark (when the run synthesises its data)
    split/           labeled.txt / unlabeled.txt (labeled images drawn as SemiRES does)
    proposals/       candidate masks of the unlabeled images
    cache/           frozen text-encoder features shared by all training stages
    supervised/      burn-in on the labeled images (the supervised baseline)
    <method>/        one teacher-student run per method (teacher_student, iom, cpi, ...)
    results.json, results.md, report.html, figures/   the report

What a run is made of (its paths, its stages in order, each stage's training config) is its
:class:`semires.plan.RunPlan`, computed from the config with no side effect (``semires serve``
and ``--seeds`` use only that). :class:`Pipeline` is the executor: it holds a plan, checks and
records the run folder, initialises the process group and runs the stages. The stages are
:class:`Stage` records: a name, what it does, and whether only the main process does it (data,
split, report) or every process (proposals are made in shares, training is DDP).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semires.errors import CheckpointError, ConfigError, SemiresError
from semires.layout import SUPERVISED, RunLayout
from semires.methods import label
from semires.plan import RunPlan, open_plan  # noqa: F401 (re-exported: what a run is made of)
from semires.run_config import (  # noqa: F401 (re-exported: the run's config lives there)
    PRESETS,
    UPSTREAM_KEYS,
    RunConfig,
    load_run_config,
    ratio_tag,
    upstream_config,
)
from semires.train.config import Config, DataConfig
from semires.utils.io import (
    atomic_write_json,
    atomic_write_text,
    check_folder_target,
    disk_full_in,
)
from semires.utils.typed_config import load_dataclass

if TYPE_CHECKING:
    from semires.data.index import RESIndex


@dataclass(frozen=True)
class Stage:
    """One step of a run: ``run()`` does it (and returns metrics for training stages);
    ``main_only``: done by the main process while the others wait."""

    name: str
    label: str
    run: Callable[[], Any]
    main_only: bool = False


class Pipeline:
    """The executor: runs the stages of a :class:`RunPlan` (given, or the plan of a
    :class:`RunConfig`) in its run folder. Making one initialises the process group (under
    torchrun) and makes the run folder; :meth:`run` does the rest, stage by stage."""

    def __init__(
        self,
        plan: RunPlan | RunConfig,
        *,
        progress: bool = True,
        index: RESIndex | None = None,
        generator: Any = None,
    ) -> None:
        from semires.runtime.distributed import init_distributed

        self.plan = plan if isinstance(plan, RunPlan) else RunPlan(plan)
        cfg = self.cfg = self.plan.cfg
        # the dataset, read once for every stage of this process (a RefCOCO-size index takes
        # seconds to read); ``index``: already read by the caller (run's check_data)
        self._index = index
        # the proposal generator :func:`check_run` built (its knobs and files checked)
        self._generator = generator
        self.out = self.plan.out
        self.layout = self.plan.layout
        # under torchrun: one process group for every stage; rank 0 makes the data, the split
        # and the report, every rank makes its share of the proposals and trains
        self.info, self.device = init_distributed(cfg.burn_in.device, "config key 'burn_in.device'")
        self.progress = progress and self.info.is_main
        self.timings: dict[str, float] = {}
        self.out.mkdir(parents=True, exist_ok=True)

    def say(self, text: str) -> None:
        if self.progress:
            print(text, flush=True)

    def _stage(self, number: int, name: str, total: int) -> None:
        self.say(f"\n[{number}/{total}] {name}")

    # -------------------------------------------------------------- the run folder
    def check_run_folder(self) -> None:
        """Refuse a run folder made with another data / split / proposals config, or a stage
        folder trained with another config, then record this run's config in ``run.yaml``
        (rank 0): a refused rerun leaves ``run.yaml`` as it was."""
        import yaml

        path = self.layout.run_yaml
        current = self.plan.recorded_config()
        if path.is_file():
            try:
                old = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"cannot read {path}: {exc}") from exc
            old = _with_defaults(old, RunConfig) if isinstance(old, dict) else {}
            self._check_upstream(old, current)
        for name in self.plan.stage_names:
            if name != SUPERVISED or not self.cfg.burn_in_checkpoint:
                cfg = self.plan.train_config(name)
                self._check_same_config(Path(cfg.output.dir), cfg)
        if self.info.is_main:
            atomic_write_text(path, yaml.safe_dump(current, sort_keys=False))

    def _check_upstream(self, old: dict[str, Any], current: dict[str, Any]) -> None:
        """Refuse changed data / split / proposals settings when something made from them
        exists in the folder; a change over a start that made nothing of them (e.g. a refused
        or failed start) is taken."""
        before, now = upstream_config(old), upstream_config(current)
        changed = [k for k in now if before.get(k) != now[k]]
        made = [p.name for k in changed for p in self._made_from(k)]
        if changed and made:
            details = "; ".join(
                f"{k}: {json.dumps(before.get(k))} -> {json.dumps(now[k])}" for k in changed
            )
            raise ConfigError(
                f"{self.out} was made with other data / split / proposals settings "
                f"({details}); every stage after them depends on them ({', '.join(dict.fromkeys(made))}"
                "): use another --out, or delete that folder to start again"
            )

    def _made_from(self, key: str) -> list[Path]:
        """What exists in the run folder that was made from the setting ``key``: for the
        proposals settings the store and everything after it, for the others everything
        but ``run.yaml`` (and the lock)."""
        from semires.utils.lock import LOCK_NAME

        keep = {self.layout.run_yaml.name, LOCK_NAME}
        if key.startswith("proposals."):
            keep |= {p.name for p in (self.layout.data, self.layout.split)}
            keep |= {self.layout.text_cache.parent.name, SUPERVISED}
        return sorted(p for p in self.out.iterdir() if p.name not in keep)

    # -------------------------------------------------------------- data and split
    @property
    def index(self) -> RESIndex:
        """The run's dataset (read on first use: a synthetic one exists after the data stage)."""
        if self._index is None:
            from semires.data import load_index

            self._index = load_index(self.plan.data_config().spec())
        return self._index

    def make_data(self) -> None:
        if self.cfg.synth is None:
            self.say("  using " + self.cfg.data.spec().describe())
            return
        from semires.data.synth import synthesize

        s = self.cfg.synth
        synthesize(
            self.layout.data, preset=s.preset, seed=s.seed, progress=self.progress, **s.overrides
        )
        self.say(f"  {self.layout.data} (preset {s.preset}, seed {s.seed})")

    def make_split(self) -> None:
        from semires.data.splits import make_split, read_split, write_split

        index, split_dir = self.index, self.plan.split_dir
        check_scored_splits(index, self.cfg.data)
        if self.cfg.split_dir:
            split = read_split(split_dir, index)
        else:
            split = make_split(
                index, self.cfg.labeled, seed=self.cfg.split_seed, split=self.cfg.data.train_split
            )
            if (split_dir / "labeled.txt").is_file():
                old = read_split(split_dir, index)
                if old.labeled_images != split.labeled_images:
                    raise ConfigError(
                        f"{split_dir} holds another labeled split (ratio {old.ratio}, seed {old.seed}); "
                        "use another --out"
                    )
            else:
                write_split(split, split_dir)
        self.say(
            f"  labeled {len(split.labeled_images)} images / unlabeled {len(split.unlabeled_images)} images "
            f"({split_dir})"
        )

    # -------------------------------------------------------------- proposals
    def make_proposals(self) -> None:
        store = self.plan.proposals_dir
        if self.cfg.proposals.store:
            self.say(f"  using the existing store {store}")
            return
        from semires.proposals import build_generator
        from semires.proposals.generate import generate_store, image_paths, select_images

        data = self.plan.data_config()
        index = self.index
        ids = select_images(index, split=data.train_split, split_dir=self.plan.split_dir)
        generator, self._generator = self._generator, None  # built by check_run, used once
        if generator is None:
            generator = build_generator(self.cfg.proposals.generator, **self.cfg.proposals.params)
        self._say_device(generator)
        report = generate_store(
            generator,
            image_paths(index, ids),
            store,
            shard_size=self.cfg.proposals.shard_size,
            workers=self.cfg.proposals.workers,
            progress=self.progress,
        )
        self.say(f"  {report.wanted} images ({report.already_done} cached) -> {store}")

    def _say_device(self, generator: Any) -> None:
        """A network generator (SAM) that ``device: auto`` put on the CPU says so: it is
        hundreds of times slower there than on a GPU."""
        from semires.proposals.generate import cpu_note

        note = cpu_note(generator, "proposals.params.device=cpu")
        if note:
            self.say(f"  {note}")

    # -------------------------------------------------------------- training
    def score_burn_in(self) -> dict[str, Any]:
        """The supervised row when the burn-in is given (``burn_in_checkpoint``): the checkpoint
        scored on the burn-in stage's final splits, cached in ``supervised/metrics.json``."""
        from semires.runtime.checkpoint import load_model_checkpoint
        from semires.train.scoring import Scorer, final_metrics

        path = self.plan.burn_in_path
        metrics = self.layout.supervised.metrics
        if metrics.is_file():
            cached = json.loads(metrics.read_text())
            if cached.get("checkpoint") != str(path):
                raise ConfigError(
                    f"{metrics} scores another burn-in ({cached.get('checkpoint')}); use another "
                    "--out, or delete that folder"
                )
            self.say(f"  cached: {metrics}")
            return cached
        model, _ = load_model_checkpoint(path, map_location="cpu")
        model = model.to(self.device)
        self.say(f"  scoring the given burn-in {path}")
        scorer = Scorer(
            index=self.index,
            data=self.plan.data_config(),
            train=self.cfg.burn_in,
            device=self.device,
            info=self.info,
            progress=self.progress,
        )
        head = {
            "checkpoint": str(path),
            "best": {"score": None, "metric": None, "epoch": None, "step": None},
        }
        return final_metrics(scorer, [("given", model, None)], self.layout.supervised, head)

    def run_training(self, name: str) -> dict[str, Any]:
        from semires.train.engine import train

        if name == SUPERVISED and self.cfg.burn_in_checkpoint:
            return self.score_burn_in()
        cfg = self.plan.train_config(name)
        self._check_same_config(Path(cfg.output.dir), cfg)
        metrics = self.layout.stage(name).metrics
        if metrics.is_file():
            self.say(f"  cached: {metrics}")
            self._finish_stage(name)
            return json.loads(metrics.read_text())
        result = train(cfg, progress=self.progress, index=self.index)
        self._finish_stage(name)
        return result

    def _finish_stage(self, name: str) -> None:
        """A finished training stage keeps what resuming and the report read: its
        ``latest.pt`` becomes the run's record, without weights, optimizer or RNG state
        (:func:`~semires.train.checkpoints.finish_latest`; the paper's model: 1.8-3.4 GB less
        per stage). Said when it frees much."""
        from semires.train.checkpoints import finish_latest

        if not self.info.is_main:
            return
        stage = self.layout.stage(name)
        freed = finish_latest(stage.latest, stage.metrics)
        if freed >= 64 * 2**20:
            self.say(
                f"  {stage.latest}: kept only the run's record ({freed / 2**30:.1f} GiB freed; "
                "best.pt holds the networks)"
            )

    def run_methods_parallel(self, methods: list[str]) -> dict[str, dict[str, Any]]:
        """Train several teacher-student methods at once in worker processes."""
        results: dict[str, dict[str, Any]] = {}
        todo: list[tuple[str, Config]] = []
        for m in methods:
            cfg = self.plan.train_config(m)
            self._check_same_config(Path(cfg.output.dir), cfg)
            metrics = self.layout.stage(m).metrics
            if metrics.is_file():
                self.say(f"  {m}: cached")
                results[m] = json.loads(metrics.read_text())
                self._finish_stage(m)
            else:
                todo.append((m, cfg))
        if not todo:
            return results
        self.say(
            f"  training {', '.join(m for m, _ in todo)} ({min(self.cfg.parallel, len(todo))} at a time)"
        )
        done = run_in_workers(
            _train_worker,
            {m: (cfg.to_dict(),) for m, cfg in todo},
            processes=self.cfg.parallel,
            poll=WorkerProgress(todo, self.say),
        )
        for m, (result, seconds) in done.items():
            results[m], self.timings[m] = result, seconds
            self._finish_stage(m)
        return results

    def _check_same_config(self, run_dir: Path, cfg: Config) -> None:
        """Refuse a stage folder that trained something (``latest.pt``, ``best.pt`` or
        ``metrics.json``) with another config; a start that trained nothing is taken over."""
        import yaml

        from semires.layout import StageLayout

        stage = StageLayout(Path(run_dir))
        trained = (stage.latest, stage.best, stage.metrics)
        if not stage.config.is_file() or not any(p.is_file() for p in trained):
            return
        old = _with_defaults(yaml.safe_load(stage.config.read_text()), Config)
        new = cfg.to_dict()
        if old != new:
            keys = sorted(_diff_keys(old, new))
            raise ConfigError(
                f"{run_dir} was trained with another config (differs in {', '.join(keys[:5])}); "
                "use another --out, or delete that folder to retrain it"
            )

    # -------------------------------------------------------------- all
    def stages(self, results: dict[str, Any]) -> list[Stage]:
        """The run's stages in order; training stages put their metrics into ``results``."""

        def train(name: str) -> Callable[[], None]:
            return lambda: results.__setitem__(name, self.run_training(name))

        stages = [
            Stage("data", "data", self.make_data, main_only=True),
            Stage("split", "split", self.make_split, main_only=True),
        ]
        if self.plan.needs_proposals:
            stages.append(Stage("proposals", "proposals", self.make_proposals))
        stages.append(Stage(SUPERVISED, label(SUPERVISED), train(SUPERVISED)))
        for rnd in range(1, self.cfg.rounds + 1):
            names = self.plan.round_names(rnd)
            if self.cfg.parallel > 1 and not self.info.enabled and len(names) > 1:
                title = "teacher-student runs" + (f", round {rnd}" if rnd > 1 else "")
                parallel = lambda names=names: results.update(self.run_methods_parallel(names))  # noqa: E731
                stages.append(Stage(title, title, parallel))
            else:
                stages += [Stage(m, label(m), train(m)) for m in names]
        stages.append(Stage("report", "report", lambda: self.report(results), main_only=True))
        return stages

    def report(self, results: dict[str, Any]) -> dict[str, Any]:
        """Write the report of ``results`` (metrics per stage, in the run's order)."""
        from semires.report import ReportInputs, write_report

        order = self.plan.stage_names
        inputs = ReportInputs(
            layout=self.layout,
            name=self.cfg.name,
            labeled=self.cfg.labeled,
            val_split=self.cfg.data.val_split,
            qualitative=self._qualitative(),
            config=self.cfg.to_dict(),
            timings=self.timings,
            stage_configs=self.plan.stage_configs(),
            burn_in=self.plan.burn_in_path,
            split_dir=self.plan.split_dir,
            index=self.index,
        )
        self.summary = write_report(inputs, {m: results[m] for m in order}, say=self.say)
        return self.summary

    def _qualitative(self) -> int:
        """The number of examples to draw: none when some unlabeled refs have no mask (JSON
        Lines), since each example shows the ground truth beside the pseudo-labels."""
        from semires.data.splits import read_split

        if not self.cfg.report.qualitative:
            return 0
        index = self.index
        refs = read_split(self.plan.split_dir, index).unlabeled_refs(index)
        if all(index.has_mask(r.object_id) for r in refs):
            return self.cfg.report.qualitative
        self.say("  note: no qualitative examples (the unlabeled images have no masks to show)")
        return 0

    def run(self) -> dict[str, Any]:
        """Run every stage (cached ones are skipped) and write the report; returns results."""
        from semires.runtime.distributed import barrier, broadcast_object, cleanup
        from semires.runtime.logs import worker_count_note

        results: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}
        stages = self.stages(results)
        note = worker_count_note(self.cfg.data.num_workers)  # once, not per loader and stage
        if note:
            self.say(note)
        try:
            self.check_run_folder()
            for i, stage in enumerate(stages, 1):
                self._stage(i, stage.label, len(stages))
                t0 = time.perf_counter()
                if self.info.is_main or not stage.main_only:
                    with disk_full_in(self.out):
                        stage.run()
                barrier(self.info)
                self.timings[stage.name] = time.perf_counter() - t0
            if self.info.is_main:
                self.summary["timings"] = self.timings
                atomic_write_json(self.layout.results_json, self.summary)
            return broadcast_object(self.summary, self.info)
        finally:
            cleanup(self.info)


def run_in_workers(
    fn: Callable[..., Any],
    jobs: dict[str, tuple[Any, ...]],
    *,
    processes: int,
    poll: Callable[[], None] | None = None,
    interval: float = 2.0,
) -> dict[str, Any]:
    """``{name: fn(*args)}`` for every job, computed in at most ``processes`` spawned worker
    processes; ``poll`` is called every ``interval`` seconds while they run (progress lines).

    The workers die with this process, however it ends (SIGKILL included;
    :func:`semires.utils.workers.die_with_parent`), so a killed run leaves no trainer behind;
    they ignore Ctrl-C, which this process answers for all (one line, no worker tracebacks).
    A worker's exception is raised here as soon as it happens (the other jobs are stopped); a
    full disk met by a worker is one line (:class:`~semires.utils.io.DiskFullError`). The
    pool is closed and joined, not terminated, once every job is done: terminated workers cannot
    release their semaphores (tqdm creates one in every process), and Python then warns of
    "leaked semaphore objects" at exit.
    """
    import multiprocessing
    import os

    ctx = multiprocessing.get_context("spawn")
    size = max(1, min(processes, len(jobs)))
    with ctx.Pool(processes=size, initializer=_init_worker, initargs=(os.getpid(),)) as pool:
        pending = {name: pool.apply_async(fn, args) for name, args in jobs.items()}
        while not all(job.ready() for job in pending.values()):
            for job in pending.values():
                if job.ready() and not job.successful():
                    _worker_result(job)  # raises the worker's exception; the rest are stopped
            time.sleep(interval)
            if poll is not None:
                poll()
        results = {name: _worker_result(job) for name, job in pending.items()}
        pool.close()
        pool.join()
    return results


def _init_worker(parent: int) -> None:
    """A worker of :func:`run_in_workers`: it dies with ``parent`` and leaves Ctrl-C to it;
    stopped by the pool (SIGTERM, when the parent is interrupted or another job failed), it
    exits as Python, releasing its semaphores (a bare SIGTERM left the parent warning of
    "leaked semaphore objects" after its one line)."""
    import signal

    from semires.utils.workers import die_with_parent

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop)
    die_with_parent(parent)
    from semires.runtime.logs import quiet_worker_count_warning

    quiet_worker_count_warning()  # the parent said it once


def _worker_result(job: Any) -> Any:
    """A finished worker job's result, or its exception; a full disk the worker met (an
    OSError keeps its errno across processes, not its chain) becomes one line."""
    from semires.utils.io import disk_full_cause, disk_full_error

    try:
        return job.get()
    except SemiresError:
        raise
    except Exception as exc:
        cause = disk_full_cause(exc)
        if cause is None or not cause.filename:
            raise  # without a file name: the stage around it names its folder
        raise disk_full_error(cause.filename, cause) from None


def _train_worker(cfg_dict: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """One training run in a worker process (see :meth:`Pipeline.run_methods_parallel`); the
    run takes its folder's lock, so a second run of the same folder is refused."""
    from semires.train.config import config_from_dict
    from semires.train.engine import train

    t0 = time.perf_counter()
    result = train(config_from_dict(cfg_dict), progress=False)
    return result, time.perf_counter() - t0


class WorkerProgress:
    """The progress lines of training runs in worker processes (polled by
    :func:`run_in_workers`): each run's last epoch record when it is new, and a line saying
    that it is still at work when it has said nothing for :func:`~semires.utils.progress.
    log_every` seconds (a long epoch would leave the log silent for minutes)."""

    def __init__(self, runs: list[tuple[str, Config]], say: Callable[[str], None]) -> None:
        self.runs, self.say = runs, say
        # a resumed run's earlier records were said before: only new ones are
        self.shown: dict[str, str | None] = {m: _progress_line(m, cfg) for m, cfg in runs}
        for m, cfg in runs:
            if _epochs_done(cfg):
                say(f"  [{label(m)}] resumes after epoch {_epochs_done(cfg)}/{cfg.train.epochs}")
        start = time.monotonic()
        self.since = dict.fromkeys((m for m, _ in runs), start)  # its last line
        self.record = dict.fromkeys((m for m, _ in runs), start)  # its last record (or start)

    def __call__(self) -> None:
        from semires.utils.progress import clock, log_every

        now = time.monotonic()
        for m, cfg in self.runs:
            line = _progress_line(m, cfg)
            if line and self.shown.get(m) != line:
                self.shown[m], self.since[m], self.record[m] = line, now, now
                self.say(line)
            elif log_every() > 0 and now - self.since[m] >= log_every():
                epoch = min(_epochs_done(cfg) + 1, cfg.train.epochs)
                after = "its last record" if self.shown.get(m) else "the start"
                self.say(
                    f"  [{label(m)}] epoch {epoch}/{cfg.train.epochs} in progress "
                    f"({clock(now - self.record[m])} since {after})"
                )
                self.since[m] = now


def _epochs_done(cfg: Config) -> int:
    """The epochs a run's history.json records (0 before its first)."""
    from semires.layout import StageLayout

    try:
        return len(json.loads(StageLayout(Path(cfg.output.dir)).history.read_text()))
    except (OSError, ValueError, TypeError):
        return 0


def _progress_line(name: str, cfg: Config) -> str | None:
    """A one-line status of a run in progress, from its history.json."""
    from semires.layout import StageLayout

    path = StageLayout(Path(cfg.output.dir)).history
    try:
        last = json.loads(path.read_text())[-1]
    except (OSError, ValueError, IndexError):
        return None
    parts = [f"  [{label(name)}] epoch {last['epoch']}/{cfg.train.epochs}"]
    val = f"{cfg.data.val_split}_oIoU"
    if val in last:
        parts.append(f"{val} {last[val]:.2f}")
    if "pl_iou_before" in last:
        parts.append(
            f"pseudo-label IoU {100 * last['pl_iou_before']:.1f} -> {100 * last['pl_iou_after']:.1f}"
        )
    if "miss_rate" in last:
        parts.append(f"miss rate {100 * last['miss_rate']:.0f}%")
    return ", ".join(parts)


def _with_defaults(saved: Any, kind: type[Config] | type[RunConfig]) -> Any:
    """A saved config (a stage's ``config.yaml``: ``Config``; ``run.yaml``: ``RunConfig``) with
    the keys it lacks at their defaults: a folder made before a setting existed was made with
    its default (the setting's off switch), so it is the same config. Keys beside the config
    (``run.yaml``'s ``synth_version``) are kept as they are; one that no longer loads (a
    setting since removed or renamed) stays as it is, and differs."""
    if not isinstance(saved, dict):
        return saved
    beside = {k: saved[k] for k in ("synth_version",) if k in saved}
    body = {k: v for k, v in saved.items() if k not in beside}
    try:
        return {**load_dataclass(kind, body).to_dict(), **beside}
    except (SemiresError, TypeError, ValueError):
        return saved


def _diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return set() if a == b else {prefix or "<root>"}


def run_seeds(cfg: RunConfig, seeds: list[int], *, progress: bool = True) -> dict[str, Any]:
    """The run once per training seed, in ``<out>/seed-<s>/``: the first seed's folder makes the
    data, the split, the proposals and the text features, and the others use them (the same
    data, only the training differs). Then ``<out>/results.md`` / ``results.json`` compare the
    methods with their spread over seeds and paired bootstrap intervals over sentences."""
    from semires.report import write_seed_report

    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected distinct training seeds, got {seeds}")
    root = Path(cfg.out)
    summaries: dict[int, dict[str, Any]] = {}
    first: RunPlan | None = None
    for s in seeds:
        one = copy.deepcopy(cfg)
        one.seed, one.out, one.name = s, str(root / f"seed-{s}"), f"{cfg.name}/seed-{s}"
        if first is not None:
            _share_upstream(one, first)
        summaries[s] = run(one, progress=progress)
        first = first or RunPlan(one)
    with run_folder_lock(root):
        return write_seed_report(RunLayout(root), cfg, summaries, say=print if progress else None)


def _share_upstream(cfg: RunConfig, first: RunPlan) -> None:
    """Point ``cfg`` at the data, split, proposals and text features ``first`` made."""
    cfg.data = first.data_config()
    cfg.data.split_dir = None
    cfg.synth = None
    cfg.split_dir = str(first.split_dir)
    cfg.proposals.store = str(first.proposals_dir)
    for stage in (cfg.burn_in, cfg.teacher_student):
        stage.text_cache = stage.text_cache or str(first.layout.text_cache)


def check_scored_splits(index: Any, data: DataConfig) -> None:
    """The val and test splits are scored against masks: a split that is missing, or has refs
    without masks (JSON Lines lines without ``mask``), is an error."""
    for split in dict.fromkeys([data.val_split, *data.test_splits]):
        index.require_masks(
            split, "val_split and test_splits are scored against masks: give those lines masks"
        )


def check_data(cfg: RunConfig) -> RESIndex | None:
    """A dataset that is read (not synthesised) is checked before the run folder is made: its
    val / test splits have masks, and the labeled split can be drawn (or read) from it. Returns
    the dataset read (None for a synthetic one, made later by the run)."""
    from semires.data import load_index
    from semires.data.splits import make_split, read_split

    if cfg.synth is not None:
        return None
    index = load_index(cfg.data.spec())
    check_scored_splits(index, cfg.data)
    if cfg.split_dir:
        split = read_split(cfg.split_dir, index)
    else:
        split = make_split(index, cfg.labeled, seed=cfg.split_seed, split=cfg.data.train_split)
    if cfg.methods and not split.unlabeled_images:
        raise ConfigError(
            f"labeled {cfg.labeled!r}: every {split.split} image of {cfg.data.spec().describe()} "
            "is labeled, and the teacher-student runs need unlabeled images (lines without "
            "masks, or a smaller labeled share)"
        )
    return index


@dataclass
class Checked:
    """What :func:`check_run` read or built while checking a run, handed to the stages."""

    #: the dataset read (None for a synthetic one, made later by the run)
    index: RESIndex | None = None
    #: the proposal generator (None when the run makes no proposals or uses a given store)
    generator: Any = None


def check_run(cfg: RunConfig) -> Checked:
    """Everything about a run that can be checked before its folder is written: the data (a
    read dataset, or the synthetic preset and the scored split names), every stage's training
    config, the model's files (backbone and text weights: the model is built once), the
    proposal generator (its knobs and files: it is built, and then used by the proposals
    stage) or the given store, and the given burn-in checkpoint. A refused start writes
    nothing, so the corrected rerun just works."""
    plan = RunPlan(cfg)
    check_folder_target(cfg.out, "run folder (--out / out)")
    index = check_data(cfg) if cfg.synth is None else check_synth(cfg)
    for name in plan.stage_names:
        plan.train_config(name)  # a method's refinement settings are checked here
    check_model(cfg)
    if cfg.burn_in_checkpoint and not Path(cfg.burn_in_checkpoint).is_file():
        raise ConfigError(
            f"config key 'burn_in_checkpoint': checkpoint not found: {cfg.burn_in_checkpoint}"
        )
    return Checked(index=index, generator=check_proposals(plan))


def check_synth(cfg: RunConfig) -> None:
    """A synthetic run: the preset and its knobs exist, and the scored splits are among the
    synthetic splits (the data itself is made by the run's first stage)."""
    from semires.data.synth import SPLITS, make_config

    assert cfg.synth is not None
    try:
        make_config(cfg.synth.preset, **cfg.synth.overrides)
    except ConfigError as err:
        raise ConfigError(f"config key 'synth': {err}") from None
    scored = [("data.val_split", cfg.data.val_split)]
    scored += [("data.test_splits", name) for name in cfg.data.test_splits]
    for key, name in scored:
        if name not in SPLITS:
            raise ConfigError(
                f"config key {key!r}: split {name!r} is not a synthetic split; "
                f"expected one of {', '.join(SPLITS)}"
            )


def check_model(cfg: RunConfig) -> None:
    """Build the run's model once on the CPU (and drop it), so that a missing backbone or text
    encoder file fails before the first stage rather than at the burn-in, hours later. The
    global RNG is left as it was."""
    import torch

    from semires.model import build_model

    state = torch.random.get_rng_state()
    try:
        build_model(cfg.model.name, **cfg.model.overrides)
    finally:
        torch.random.set_rng_state(state)


def check_proposals(plan: RunPlan) -> Any:
    """The proposal generator the run will use, built (its knobs checked, its weights loaded),
    or the given store checked to exist; None when no method needs proposals."""
    section = plan.cfg.proposals
    if not plan.needs_proposals:
        return None
    if section.store:
        if not Path(section.store).is_dir():
            raise ConfigError(
                f"config key 'proposals.store': no proposal store at {section.store} "
                "(make one with `semires propose`, or leave the key out)"
            )
        return None
    from semires.proposals import build_generator

    try:
        return build_generator(section.generator, **section.params)
    except CheckpointError as err:  # the command line's wording, said as the config's key
        said = str(err).replace("--checkpoint PATH", "a checkpoint file")
        raise ConfigError(f"config key 'proposals.params.checkpoint': {said}") from None
    except SemiresError as err:
        raise ConfigError(
            f"config key 'proposals' (generator {section.generator!r}): {err}"
        ) from None


def run(cfg: RunConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run the whole experiment described by ``cfg``; the run folder is locked meanwhile (a
    second run of the same folder is refused, naming this one's PID). Everything checkable is
    checked first (:func:`check_run`), so a refused start leaves no run folder behind (a
    folder this start made is removed again when it fails before writing into it)."""
    from semires.utils.lock import LOCK_NAME

    checked = check_run(cfg)
    out = Path(cfg.out)
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        with disk_full_in(out), run_folder_lock(out):
            pipeline = Pipeline(
                cfg, progress=progress, index=checked.index, generator=checked.generator
            )
            return pipeline.run()
    except BaseException:
        for folder in created:  # the folders this start made, when nothing else is in them
            with contextlib.suppress(OSError):
                (folder / LOCK_NAME).unlink(missing_ok=True)  # what a full disk left
                folder.rmdir()
        raise


def run_folder_lock(out: str | Path) -> contextlib.AbstractContextManager[Any]:
    """The lock of a run folder (:mod:`semires.utils.lock`); under torchrun rank 0 holds it."""
    import os

    from semires.utils.lock import folder_lock

    if os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    return folder_lock(out)

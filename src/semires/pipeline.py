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

from semires.errors import ConfigError
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
from semires.utils.io import atomic_write_json, atomic_write_text

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
        self, plan: RunPlan | RunConfig, *, progress: bool = True, index: RESIndex | None = None
    ) -> None:
        from semires.runtime.distributed import init_distributed

        self.plan = plan if isinstance(plan, RunPlan) else RunPlan(plan)
        cfg = self.cfg = self.plan.cfg
        # the dataset, read once for every stage of this process (a RefCOCO-size index takes
        # seconds to read); ``index``: already read by the caller (run's check_data)
        self._index = index
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
        """Refuse a run folder made with another data / split / proposals config, then record
        this run's config in ``run.yaml`` (rank 0)."""
        import yaml

        path = self.layout.run_yaml
        current = self.plan.recorded_config()
        if path.is_file():
            try:
                old = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"cannot read {path}: {exc}") from exc
            before, now = upstream_config(old or {}), upstream_config(current)
            changed = [k for k in now if before.get(k) != now[k]]
            if changed:
                details = "; ".join(
                    f"{k}: {json.dumps(before.get(k))} -> {json.dumps(now[k])}" for k in changed
                )
                raise ConfigError(
                    f"{self.out} was made with other data / split / proposals settings "
                    f"({details}); every stage after them depends on them: use another --out, "
                    "or delete that folder to start again"
                )
        if self.info.is_main:
            atomic_write_text(path, yaml.safe_dump(current, sort_keys=False))

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
        generator = build_generator(self.cfg.proposals.generator, **self.cfg.proposals.params)
        report = generate_store(
            generator,
            image_paths(index, ids),
            store,
            shard_size=self.cfg.proposals.shard_size,
            workers=self.cfg.proposals.workers,
            progress=self.progress,
        )
        self.say(f"  {report.wanted} images ({report.already_done} cached) -> {store}")

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
        run_dir = Path(cfg.output.dir)
        self._check_same_config(run_dir, cfg)
        metrics = self.layout.stage(name).metrics
        if metrics.is_file():
            self.say(f"  cached: {metrics}")
            return json.loads(metrics.read_text())
        return train(cfg, progress=self.progress, index=self.index)

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
            else:
                todo.append((m, cfg))
        if not todo:
            return results
        self.say(
            f"  training {', '.join(m for m, _ in todo)} ({min(self.cfg.parallel, len(todo))} at a time)"
        )
        shown: dict[str, str] = {}

        def show_progress() -> None:
            for m, cfg in todo:
                line = _progress_line(m, cfg)
                if line and shown.get(m) != line:
                    shown[m] = line
                    self.say(line)

        done = run_in_workers(
            _train_worker,
            {m: (cfg.to_dict(),) for m, cfg in todo},
            processes=self.cfg.parallel,
            poll=show_progress,
        )
        for m, (result, seconds) in done.items():
            results[m], self.timings[m] = result, seconds
        return results

    def _check_same_config(self, run_dir: Path, cfg: Config) -> None:
        import yaml

        saved = Path(run_dir) / "config.yaml"
        if not saved.is_file():
            return
        old = yaml.safe_load(saved.read_text())
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

        results: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}
        stages = self.stages(results)
        try:
            self.check_run_folder()
            for i, stage in enumerate(stages, 1):
                self._stage(i, stage.label, len(stages))
                t0 = time.perf_counter()
                if self.info.is_main or not stage.main_only:
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
    :func:`semires.utils.workers.die_with_parent`), so a killed run leaves no trainer behind.
    A worker's exception is raised here as soon as it happens (the other jobs are stopped). The
    pool is closed and joined, not terminated, once every job is done: terminated workers cannot
    release their semaphores (tqdm creates one in every process), and Python then warns of
    "leaked semaphore objects" at exit.
    """
    import multiprocessing
    import os

    from semires.utils.workers import die_with_parent

    ctx = multiprocessing.get_context("spawn")
    size = max(1, min(processes, len(jobs)))
    with ctx.Pool(processes=size, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        pending = {name: pool.apply_async(fn, args) for name, args in jobs.items()}
        while not all(job.ready() for job in pending.values()):
            for job in pending.values():
                if job.ready() and not job.successful():
                    job.get()  # raises the worker's exception; leaving the block stops the rest
            time.sleep(interval)
            if poll is not None:
                poll()
        results = {name: job.get() for name, job in pending.items()}
        pool.close()
        pool.join()
    return results


def _train_worker(cfg_dict: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """One training run in a worker process (see :meth:`Pipeline.run_methods_parallel`); the
    run takes its folder's lock, so a second run of the same folder is refused."""
    from semires.train.config import config_from_dict
    from semires.train.engine import train

    t0 = time.perf_counter()
    result = train(config_from_dict(cfg_dict), progress=False)
    return result, time.perf_counter() - t0


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


def run(cfg: RunConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run the whole experiment described by ``cfg``; the run folder is locked meanwhile (a
    second run of the same folder is refused, naming this one's PID). A dataset that is read
    is checked first (:func:`check_data`), so bad data leaves no run folder behind."""
    index = check_data(cfg)
    with run_folder_lock(cfg.out):
        return Pipeline(cfg, progress=progress, index=index).run()


def run_folder_lock(out: str | Path) -> contextlib.AbstractContextManager[Any]:
    """The lock of a run folder (:mod:`semires.utils.lock`); under torchrun rank 0 holds it."""
    import os

    from semires.utils.lock import folder_lock

    if os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    return folder_lock(out)

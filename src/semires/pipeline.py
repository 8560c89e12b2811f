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

The stages are :class:`Stage` records: a name, what it does, and whether only the main process
does it (data, split, report) or every process (proposals are made in shares, training is DDP).
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
from semires.methods import label, method, needs_proposals, split_stage, stage_name
from semires.run_config import (  # noqa: F401 (re-exported: the run's config lives there)
    PRESETS,
    UPSTREAM_KEYS,
    RunConfig,
    load_run_config,
    ratio_tag,
    upstream_config,
)
from semires.train.config import Config, DataConfig, OutputConfig, SemiConfig
from semires.utils.io import atomic_write_json, atomic_write_text
from semires.utils.typed_config import load_dataclass, read_yaml, to_dict

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
    """Runs the stages of a :class:`RunConfig` in its run folder."""

    def __init__(
        self, cfg: RunConfig, *, progress: bool = True, index: RESIndex | None = None
    ) -> None:
        from semires.runtime.distributed import init_distributed

        self.cfg = cfg
        # the dataset, read once for every stage of this process (a RefCOCO-size index takes
        # seconds to read); ``index``: already read by the caller (run's check_data)
        self._index = index
        self.out = Path(cfg.out)
        self.layout = RunLayout(self.out)
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
        current = self.cfg.to_dict()
        if self.cfg.synth is not None:
            from semires.data.synth import VERSION

            current["synth_version"] = VERSION
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
    def data_config(self) -> DataConfig:
        data = copy.deepcopy(self.cfg.data)
        if self.cfg.synth is not None:
            from semires.data.synth import DATASET, SPLIT_BY

            data.format, data.root, data.dataset, data.split_by = (
                "refer",
                str(self.layout.data),
                DATASET,
                SPLIT_BY,
            )
        data.split_dir = str(self.split_dir)
        return data

    @property
    def index(self) -> RESIndex:
        """The run's dataset (read on first use: a synthetic one exists after the data stage)."""
        if self._index is None:
            from semires.data import load_index

            self._index = load_index(self.data_config().spec())
        return self._index

    @property
    def burn_in_path(self) -> Path:
        """The checkpoint the teacher-student runs start from."""
        if self.cfg.burn_in_checkpoint:
            return Path(self.cfg.burn_in_checkpoint)
        return self.layout.supervised.best

    @property
    def split_dir(self) -> Path:
        return Path(self.cfg.split_dir) if self.cfg.split_dir else self.layout.split

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

        index = self.index
        check_scored_splits(index, self.cfg.data)
        if self.cfg.split_dir:
            split = read_split(self.split_dir, index)
        else:
            split = make_split(
                index, self.cfg.labeled, seed=self.cfg.split_seed, split=self.cfg.data.train_split
            )
            if (self.split_dir / "labeled.txt").is_file():
                old = read_split(self.split_dir, index)
                if old.labeled_images != split.labeled_images:
                    raise ConfigError(
                        f"{self.split_dir} holds another labeled split (ratio {old.ratio}, seed {old.seed}); "
                        "use another --out"
                    )
            else:
                write_split(split, self.split_dir)
        self.say(
            f"  labeled {len(split.labeled_images)} images / unlabeled {len(split.unlabeled_images)} images "
            f"({self.split_dir})"
        )

    # -------------------------------------------------------------- proposals
    @property
    def proposals_dir(self) -> Path:
        return Path(self.cfg.proposals.store) if self.cfg.proposals.store else self.layout.proposals

    def make_proposals(self) -> None:
        if self.cfg.proposals.store:
            self.say(f"  using the existing store {self.proposals_dir}")
            return
        from semires.proposals import build_generator
        from semires.proposals.generate import generate_store, image_paths, select_images

        data = self.data_config()
        index = self.index
        ids = select_images(index, split=data.train_split, split_dir=self.split_dir)
        generator = build_generator(self.cfg.proposals.generator, **self.cfg.proposals.params)
        report = generate_store(
            generator,
            image_paths(index, ids),
            self.proposals_dir,
            shard_size=self.cfg.proposals.shard_size,
            workers=self.cfg.proposals.workers,
            progress=self.progress,
        )
        self.say(f"  {report.wanted} images ({report.already_done} cached) -> {self.proposals_dir}")

    # -------------------------------------------------------------- training
    def train_config(self, name: str) -> Config:
        """The training config of a stage: ``supervised`` (burn-in) or a teacher-student
        method (the run's ``semi`` with the method's settings and ``method_overrides``)."""
        cfg = self.cfg
        if name == SUPERVISED:
            train, semi = copy.deepcopy(cfg.burn_in), SemiConfig(enabled=False)
        else:
            m, (base, rnd) = method(name), split_stage(name)
            train = copy.deepcopy(cfg.teacher_student)
            family = base.partition("[")[0]  # a variant cpi[t1=0.5] takes cpi's overrides
            semi_dict = _merge(to_dict(cfg.semi), cfg.method_overrides.get(family, {}), m.semi)
            semi_dict["refine"] = _merge(semi_dict["refine"], m.refine)
            start = (
                self.burn_in_path if rnd == 1 else self.layout.stage(stage_name(base, rnd - 1)).best
            )
            semi_dict.update(
                enabled=True,
                burn_in=str(start),
                proposals=str(self.proposals_dir) if m.needs_proposals else None,
            )
            semi = load_dataclass(SemiConfig, semi_dict, prefix="semi")
        if train.text_cache is None:
            train.text_cache = str(self.layout.text_cache)
        return Config(
            name=f"{cfg.name}/{name}",
            seed=cfg.seed,
            data=self.data_config(),
            model=copy.deepcopy(cfg.model),
            train=train,
            semi=semi,
            output=OutputConfig(dir=str(self.layout.stage(name).root)),
        )

    def score_burn_in(self) -> dict[str, Any]:
        """The supervised row when the burn-in is given (``burn_in_checkpoint``): the checkpoint
        scored on the burn-in stage's final splits, cached in ``supervised/metrics.json``."""
        from semires.evaluate.evaluate import evaluate_model, score_splits
        from semires.runtime.checkpoint import load_model_checkpoint

        path = self.burn_in_path
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
        device = self.device
        model, _ = load_model_checkpoint(path, map_location="cpu")
        model = model.to(device)
        train = self.cfg.burn_in
        data = self.data_config()
        index = self.index
        self.say(f"  scoring the given burn-in {path}")

        def run(split: str) -> dict[str, Any]:
            return evaluate_model(
                model,
                index,
                split,
                size=data.img_size,
                batch_size=train.eval_batch_size,
                device=device,
                info=self.info,
                amp=train.amp,
                protocol=train.protocol,
                progress=self.progress,
            )

        splits = [data.val_split] if train.final_val or not data.test_splits else []
        counts: dict[str, Any] = {}
        result = {
            "checkpoint": str(path),
            "best": {"score": None, "metric": None, "epoch": None, "step": None},
            "eval_model": "given",
            "splits": score_splits(run, splits, data.test_splits, train.protocol, counts),
        }
        if self.info.is_main:
            atomic_write_json(self.layout.supervised.samples, counts, indent=None)
            atomic_write_json(metrics, result)
        return result

    def run_training(self, name: str) -> dict[str, Any]:
        from semires.train.engine import train

        if name == SUPERVISED and self.cfg.burn_in_checkpoint:
            return self.score_burn_in()
        cfg = self.train_config(name)
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
            cfg = self.train_config(m)
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
        if needs_proposals(self.cfg.methods):
            stages.append(Stage("proposals", "proposals", self.make_proposals))
        stages.append(Stage(SUPERVISED, label(SUPERVISED), train(SUPERVISED)))
        for rnd in range(1, self.cfg.rounds + 1):
            names = [stage_name(m, rnd) for m in self.cfg.methods]
            if self.cfg.parallel > 1 and not self.info.enabled and len(names) > 1:
                title = "teacher-student runs" + (f", round {rnd}" if rnd > 1 else "")
                parallel = lambda names=names: results.update(self.run_methods_parallel(names))  # noqa: E731
                stages.append(Stage(title, title, parallel))
            else:
                stages += [Stage(m, label(m), train(m)) for m in names]
        stages.append(Stage("report", "report", lambda: self.report(results), main_only=True))
        return stages

    @property
    def stage_names(self) -> list[str]:
        """The training stages in order: the burn-in, then each round's methods."""
        rounds = range(1, self.cfg.rounds + 1)
        return [SUPERVISED, *(stage_name(m, r) for r in rounds for m in self.cfg.methods)]

    def report(self, results: dict[str, Any]) -> dict[str, Any]:
        """Write the report of ``results`` (metrics per stage, in the run's order)."""
        from semires.report import ReportInputs, write_report

        order = self.stage_names
        inputs = ReportInputs(
            layout=self.layout,
            name=self.cfg.name,
            labeled=self.cfg.labeled,
            val_split=self.cfg.data.val_split,
            qualitative=self._qualitative(),
            config=self.cfg.to_dict(),
            timings=self.timings,
            stage_configs={m: self.train_config(m) for m in self.stage_names[1:]},
            burn_in=self.burn_in_path,
            split_dir=self.split_dir,
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
        refs = read_split(self.split_dir, index).unlabeled_refs(index)
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


def _merge(base: dict[str, Any], *updates: dict[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``updates`` applied in order, nested mappings merged key by key."""
    out = copy.deepcopy(base)
    for update in updates:
        for key, value in (update or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = _merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


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
    first: Pipeline | None = None
    for s in seeds:
        one = copy.deepcopy(cfg)
        one.seed, one.out, one.name = s, str(root / f"seed-{s}"), f"{cfg.name}/seed-{s}"
        if first is not None:
            _share_upstream(one, first)
        summaries[s] = run(one, progress=progress)
        first = first or Pipeline(one, progress=False)
    with run_folder_lock(root):
        return write_seed_report(RunLayout(root), cfg, summaries, say=print if progress else None)


def _share_upstream(cfg: RunConfig, first: Pipeline) -> None:
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


def open_run(path: str | Path, *, progress: bool = False) -> Pipeline:
    """The :class:`Pipeline` of an existing ``semires run`` folder (from its ``run.yaml``), with
    paths taken relative to the folder, so a moved run folder still opens."""
    from semires.errors import DataError

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"run folder not found: {root}")
    layout = RunLayout(root)
    if not layout.run_yaml.is_file():
        raise ConfigError(
            f"{root} is not a semires run folder (no run.yaml; `semires run` makes one)"
        )
    data = read_yaml(layout.run_yaml)
    data.pop("synth_version", None)  # recorded by the pipeline next to the config
    data["out"] = str(root)
    return Pipeline(load_dataclass(RunConfig, data), progress=progress)

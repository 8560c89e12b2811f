"""The end-to-end SemiRES run (``semires run``): data -> split -> proposals -> burn-in ->
teacher-student runs -> evaluation -> report.

Every stage writes into the run folder and is skipped when its output is complete, so a rerun
after a crash (or with more methods) redoes only what is missing; training stages resume from
their ``latest.pt``. A stage's folder remembers the config it was made with: rerunning with a
different config in the same folder is an error (use another ``--out``), never a silent mix.
``run.yaml`` holds the run's config; the keys that decide the data, the split and the proposals
(``UPSTREAM_KEYS``) are checked against it before any stage runs, so another synthetic seed in
the same folder cannot overwrite the data under a finished burn-in.

Run folder::

    run.yaml         the run config (the data / split / proposals part is checked on a rerun)
    data/            the synthetic benchmark (when the run synthesises its data)
    split/           labeled.txt / unlabeled.txt (labeled images drawn as SemiRES does)
    proposals/       candidate masks of the unlabeled images
    cache/           frozen text-encoder features shared by all training stages
    supervised/      burn-in on the labeled images (the supervised baseline)
    <method>/        one teacher-student run per method (teacher_student, iom, cpi, ...)
    results.json, results.md, report.html, figures/   the report
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from semires.errors import ConfigError
from semires.train.config import (
    Config,
    DataConfig,
    ModelSection,
    OutputConfig,
    SemiConfig,
    TrainConfig,
    shipped_configs_dir,
)
from semires.utils.io import atomic_write_json, atomic_write_text
from semires.utils.typed_config import apply_overrides, load_dataclass, read_yaml, to_dict

Method = Literal["teacher_student", "iom", "cpi", "cpi_u", "cpi_o", "confidence"]

#: method -> refine-section overrides of the teacher-student stage
METHODS: dict[str, dict[str, Any]] = {
    "teacher_student": {"strategy": "none"},
    "iom": {"strategy": "iom"},
    "cpi": {"strategy": "cpi"},
    "cpi_u": {"strategy": "cpi", "cpi_u": True, "cpi_o": False},
    "cpi_o": {"strategy": "cpi", "cpi_u": False, "cpi_o": True},
    "confidence": {"strategy": "confidence"},
}
METHOD_LABELS = {
    "supervised": "supervised (burn-in)",
    "teacher_student": "teacher-student (no SAM)",
    "iom": "SemiRES-IOM",
    "cpi": "SemiRES-CPI",
    "cpi_u": "SemiRES-CPI-U",
    "cpi_o": "SemiRES-CPI-O",
    "confidence": "confidence-filtered",
}


@dataclass
class SynthSection:
    """Synthesise the data (``semires data synth``) instead of reading a dataset."""

    preset: str = "demo"
    seed: int = 0
    #: knob overrides, e.g. {images_train: 400}
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProposalSection:
    """How candidate masks are made for the unlabeled images (``semires propose``)."""

    generator: str = "classical"
    #: generator parameters (e.g. sam: {checkpoint: sam_vit_h_4b8939.pth, model_type: vit_h})
    params: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    shard_size: int = 64
    #: an existing store to use instead of generating one
    store: str | None = None


@dataclass
class ReportSection:
    #: number of qualitative examples (image, expression, GT, pseudo-label, refined, prediction)
    qualitative: int = 8


@dataclass
class RunConfig:
    """The whole SemiRES experiment."""

    name: str = "semires"
    out: str = "runs/semires"
    seed: int = 0
    #: synthesise the data; null = read ``data`` (a real dataset)
    synth: SynthSection | None = field(default_factory=SynthSection)
    data: DataConfig = field(default_factory=DataConfig)
    #: labeled share of the train images (percent or fraction), drawn by image
    labeled: str = "10%"
    split_seed: int = 0
    #: an existing split folder to use instead of drawing one
    split_dir: str | None = None
    proposals: ProposalSection = field(default_factory=ProposalSection)
    model: ModelSection = field(default_factory=ModelSection)
    #: the supervised burn-in stage (on the labeled images)
    burn_in: TrainConfig = field(default_factory=TrainConfig)
    #: a trained burn-in to start from instead (a semires checkpoint, e.g. the SemiRES authors'
    #: 1% burn-in converted by ``semires model import-lavt``): the supervised stage only scores
    #: it, and every teacher-student run starts from it
    burn_in_checkpoint: str | None = None
    #: the teacher-student stage (optimisation part); ``semi`` holds EMA, views, refinement
    teacher_student: TrainConfig = field(default_factory=TrainConfig)
    semi: SemiConfig = field(default_factory=SemiConfig)
    methods: list[Method] = field(default_factory=lambda: ["teacher_student", "iom", "cpi"])
    #: teacher-student methods trained at the same time, each in its own process (CPU: with
    #: ``teacher_student.threads: 1`` two or three single-threaded runs use 2 cores better than
    #: one run with 2 threads); 1 = one after the other. Ignored under torchrun.
    parallel: int = 1
    #: per-method overrides of the ``semi`` section, e.g. {iom: {sup_weight: 10}} (the paper's
    #: IOM script weighs the supervised loss by 10, its CPI script by 1)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: ReportSection = field(default_factory=ReportSection)

    def validate(self) -> None:
        from semires.data.splits import parse_ratio

        parse_ratio(self.labeled)  # a bad ratio is an error before anything runs
        if self.synth is None and not (self.data.root or self.data.ann):
            raise ConfigError("config: give either 'synth' (synthetic data) or a 'data' location")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"config key 'methods': duplicates in {self.methods}")
        unknown = sorted(set(self.method_overrides) - set(METHODS))
        if unknown:
            raise ConfigError(
                f"config key 'method_overrides.{unknown[0]}': expected one of {', '.join(METHODS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


#: the config keys every later stage depends on (data, split, proposals): fixed for a run folder
UPSTREAM_KEYS: tuple[str, ...] = (
    "synth",
    "data.format",
    "data.root",
    "data.dataset",
    "data.split_by",
    "data.ann",
    "data.image_root",
    "data.mask_root",
    "data.train_split",
    "labeled",
    "split_seed",
    "split_dir",
    "proposals.generator",
    "proposals.params",
    "proposals.store",
)


def upstream_config(run: dict[str, Any]) -> dict[str, Any]:
    """The ``UPSTREAM_KEYS`` of a run config dict (plus the synthetic generator's version)."""
    out: dict[str, Any] = {}
    for key in UPSTREAM_KEYS:
        value: Any = run
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[key] = value
    if out["synth"] is not None:
        out["synth_version"] = run.get("synth_version")
    return out


#: run presets: a shipped run YAML plus the overrides applied to it (``hard`` is the demo's
#: settings on the harder synthetic benchmark, so the two cannot drift apart)
PRESETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "demo": ("run_demo.yaml", ()),
    "hard": ("run_demo.yaml", ("name=hard", "out=runs/hard", "synth.preset=hard")),
}


def load_run_config(
    config: str | Path | None = None, preset: str | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """A run config from a YAML file, or from a preset name (``demo``), plus overrides."""
    if (config is None) == (preset is None):
        raise ConfigError("give exactly one of --config FILE or --preset NAME")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(
                f"unknown run preset {preset!r}; available: {', '.join(sorted(PRESETS))}"
            )
        name, preset_overrides = PRESETS[preset]
        config = shipped_configs_dir() / name
        overrides = [*preset_overrides, *(overrides or [])]
    else:
        from semires.train.config import resolve_config_path

        config = resolve_config_path(config)
    data = apply_overrides(read_yaml(config), list(overrides or []))
    cfg = load_dataclass(RunConfig, data)
    tag = ratio_tag(cfg.labeled)
    cfg.name, cfg.out = cfg.name.replace("{labeled}", tag), cfg.out.replace("{labeled}", tag)
    return cfg


def ratio_tag(labeled: str) -> str:
    """A labeled share as a file-name part: ``1%`` -> ``1pct``, ``0.5%`` -> ``0p5pct``
    (``{labeled}`` in a run config's ``name`` / ``out`` becomes this)."""
    return str(labeled).strip().replace("%", "pct").replace(".", "p")


# ---------------------------------------------------------------------------- stages
class Pipeline:
    """Runs the stages of a :class:`RunConfig` in its run folder."""

    def __init__(self, cfg: RunConfig, *, progress: bool = True) -> None:
        from semires.runtime.distributed import init_distributed

        self.cfg = cfg
        self.out = Path(cfg.out)
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

        path = self.out / "run.yaml"
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
                str(self.out / "data"),
                DATASET,
                SPLIT_BY,
            )
        data.split_dir = str(self.split_dir)
        return data

    @property
    def burn_in_path(self) -> Path:
        """The checkpoint the teacher-student runs start from."""
        if self.cfg.burn_in_checkpoint:
            return Path(self.cfg.burn_in_checkpoint)
        return self.out / "supervised" / "best.pt"

    @property
    def split_dir(self) -> Path:
        return Path(self.cfg.split_dir) if self.cfg.split_dir else self.out / "split"

    def make_data(self) -> None:
        if self.cfg.synth is None:
            self.say("  using " + self.cfg.data.spec().describe())
            return
        from semires.data.synth import synthesize

        s = self.cfg.synth
        synthesize(
            self.out / "data", preset=s.preset, seed=s.seed, progress=self.progress, **s.overrides
        )
        self.say(f"  {self.out / 'data'} (preset {s.preset}, seed {s.seed})")

    def make_split(self) -> None:
        from semires.data import load_index
        from semires.data.splits import make_split, read_split, write_split

        index = load_index(self.data_config().spec())
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
        return (
            Path(self.cfg.proposals.store) if self.cfg.proposals.store else self.out / "proposals"
        )

    def make_proposals(self) -> None:
        if self.cfg.proposals.store:
            self.say(f"  using the existing store {self.proposals_dir}")
            return
        from semires.data import load_index
        from semires.proposals import build_generator
        from semires.proposals.generate import generate_store, image_paths, select_images

        data = self.data_config()
        index = load_index(data.spec())
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
    def train_config(self, method: str) -> Config:
        """The training config of a stage: ``supervised`` (burn-in) or a teacher-student method."""
        cfg = self.cfg
        data = self.data_config()
        text_cache = str(self.out / "cache" / "text_features.pt")
        if method == "supervised":
            train = copy.deepcopy(cfg.burn_in)
            semi = SemiConfig(enabled=False)
        else:
            train = copy.deepcopy(cfg.teacher_student)
            semi_dict = apply_overrides(
                to_dict(cfg.semi),
                [
                    f"{k}={json.dumps(v)}"
                    for k, v in _flatten(cfg.method_overrides.get(method, {})).items()
                ],
            )
            semi = load_dataclass(SemiConfig, semi_dict, prefix="semi")
            semi.enabled = True
            semi.burn_in = str(self.burn_in_path)
            semi.proposals = (
                str(self.proposals_dir) if METHODS[method]["strategy"] in ("iom", "cpi") else None
            )
            refine = {**to_dict(semi.refine), **METHODS[method]}
            from semires.train.refine import RefineConfig

            semi.refine = load_dataclass(RefineConfig, refine, prefix="semi.refine")
        if train.text_cache is None:
            train.text_cache = text_cache
        return Config(
            name=f"{cfg.name}/{method}",
            seed=cfg.seed,
            data=data,
            model=copy.deepcopy(cfg.model),
            train=train,
            semi=semi,
            output=OutputConfig(dir=str(self.out / method)),
        )

    def score_burn_in(self) -> dict[str, Any]:
        """The supervised row when the burn-in is given (``burn_in_checkpoint``): the checkpoint
        scored on the burn-in stage's final splits, cached in ``supervised/metrics.json``."""
        from semires.data import load_index
        from semires.evaluate.evaluate import evaluate_model, score_splits
        from semires.runtime.checkpoint import load_model_checkpoint

        path = self.burn_in_path
        metrics = self.out / "supervised" / "metrics.json"
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
        index = load_index(data.spec())
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
        result = {
            "checkpoint": str(path),
            "best": {"score": None, "metric": None, "epoch": None, "step": None},
            "eval_model": "given",
            "splits": score_splits(run, splits, data.test_splits, train.protocol),
        }
        if self.info.is_main:
            atomic_write_json(metrics, result)
        return result

    def run_training(self, method: str) -> dict[str, Any]:
        from semires.train.engine import train

        if method == "supervised" and self.cfg.burn_in_checkpoint:
            return self.score_burn_in()
        cfg = self.train_config(method)
        run_dir = Path(cfg.output.dir)
        self._check_same_config(run_dir, cfg)
        metrics = run_dir / "metrics.json"
        if metrics.is_file():
            self.say(f"  cached: {metrics}")
            return json.loads(metrics.read_text())
        return train(cfg, progress=self.progress)

    def run_methods_parallel(self, methods: list[str]) -> dict[str, dict[str, Any]]:
        """Train several teacher-student methods at once in worker processes."""
        results: dict[str, dict[str, Any]] = {}
        todo: list[tuple[str, Config]] = []
        for m in methods:
            cfg = self.train_config(m)
            run_dir = Path(cfg.output.dir)
            self._check_same_config(run_dir, cfg)
            if (run_dir / "metrics.json").is_file():
                self.say(f"  {m}: cached")
                results[m] = json.loads((run_dir / "metrics.json").read_text())
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

        saved = run_dir / "config.yaml"
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
    def run(self) -> dict[str, Any]:
        """Run every stage (cached ones are skipped) and write the report; returns results."""
        needs_props = any(METHODS[m]["strategy"] in ("iom", "cpi") for m in self.cfg.methods)
        stages: list[tuple[str, Any]] = [
            ("data", self.make_data),
            ("split", self.make_split),
        ]
        if needs_props:
            stages.append(("proposals", self.make_proposals))
        results: dict[str, Any] = {}
        stages.append(
            (
                "supervised",
                lambda: results.__setitem__("supervised", self.run_training("supervised")),
            )
        )
        if self.cfg.parallel > 1 and not self.info.enabled and len(self.cfg.methods) > 1:
            stages.append(
                (
                    "teacher-student runs",
                    lambda: results.update(self.run_methods_parallel(self.cfg.methods)),
                )
            )
        else:
            for m in self.cfg.methods:
                stages.append((m, lambda m=m: results.__setitem__(m, self.run_training(m))))
        stages.append(("report", lambda: None))
        from semires.runtime.distributed import barrier, broadcast_object, cleanup

        total = len(stages)
        summary: dict[str, Any] = {}
        try:
            self.check_run_folder()
            for i, (name, fn) in enumerate(stages, 1):
                self._stage(i, METHOD_LABELS.get(name, name), total)
                t0 = time.perf_counter()
                if name == "report":
                    if self.info.is_main:
                        from semires.report import write_report

                        order = ["supervised", *self.cfg.methods]
                        summary = write_report(self, {m: results[m] for m in order})
                elif name in ("data", "split"):
                    if self.info.is_main:
                        fn()
                else:
                    fn()
                barrier(self.info)
                self.timings[name] = time.perf_counter() - t0
            if self.info.is_main:
                summary["timings"] = self.timings
                atomic_write_json(self.out / "results.json", summary)
            return broadcast_object(summary, self.info)
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


def _progress_line(method: str, cfg: Config) -> str | None:
    """A one-line status of a run in progress, from its history.json."""
    path = Path(cfg.output.dir) / "history.json"
    try:
        last = json.loads(path.read_text())[-1]
    except (OSError, ValueError, IndexError):
        return None
    parts = [f"  [{METHOD_LABELS.get(method, method)}] epoch {last['epoch']}/{cfg.train.epochs}"]
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


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return set() if a == b else {prefix or "<root>"}


def run(cfg: RunConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run the whole experiment described by ``cfg``; the run folder is locked meanwhile (a
    second run of the same folder is refused, naming this one's PID)."""
    with run_folder_lock(cfg.out):
        return Pipeline(cfg, progress=progress).run()


def run_folder_lock(out: str | Path) -> contextlib.AbstractContextManager[Any]:
    """The lock of a run folder (:mod:`semires.utils.lock`); under torchrun rank 0 holds it."""
    import os

    from semires.utils.lock import folder_lock

    if os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    return folder_lock(out)

"""The config of a ``semires run`` (:class:`RunConfig`), its presets and what fixes a run folder.

One YAML file describes the whole experiment: where the data comes from (synthesised or read),
the labeled share, the proposals, the model, the two training stages (``burn_in``,
``teacher_student``: :class:`~semires.train.config.TrainConfig` each), the teacher-student
settings (``semi``) and the methods compared (:mod:`semires.methods`). Shipped run configs live in
``configs/run/``; ``semires train`` configs (one training run) in ``configs/train/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from semires.data import DataSpec
from semires.errors import ConfigError
from semires.train.config import (
    SEED_MAX,
    DataConfig,
    ModelSection,
    SemiConfig,
    TrainConfig,
    resolve_config_path,
    shipped_configs_dir,
)
from semires.utils.typed_config import (
    apply_overrides,
    load_dataclass,
    merged,
    numeric,
    read_yaml,
    to_dict,
)


@dataclass
class SynthSection:
    """Synthesise the data (``semires data synth``) instead of reading a dataset."""

    preset: str = "demo"
    seed: int = numeric(0, ge=0, le=SEED_MAX)
    #: knob overrides, e.g. {images_train: 400}
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProposalSection:
    """How candidate masks are made for the unlabeled images (``semires propose``)."""

    generator: str = "classical"
    #: generator parameters (e.g. sam: {checkpoint: sam_vit_h_4b8939.pth, model_type: vit_h})
    params: dict[str, Any] = field(default_factory=dict)
    workers: int = numeric(1, ge=1)
    shard_size: int = numeric(64, ge=1)
    #: an existing store to use instead of generating one
    store: str | None = None


@dataclass
class ReportSection:
    #: number of qualitative examples (image, expression, GT, pseudo-label, refined, prediction)
    qualitative: int = numeric(8, ge=0)


@dataclass
class RunConfig:
    """The whole SemiRES experiment."""

    name: str = "semires"
    out: str = "runs/semires"
    seed: int = numeric(0, ge=0, le=SEED_MAX)
    #: synthesise the data; null = read ``data`` (a real dataset)
    synth: SynthSection | None = field(default_factory=SynthSection)
    data: DataConfig = field(default_factory=DataConfig)
    #: labeled share of the train images (percent or fraction), drawn by image among those
    #: whose refs all have masks; ``masks``: all of those (JSON Lines: the lines with masks)
    labeled: str = "10%"
    split_seed: int = numeric(0, ge=0, le=SEED_MAX)
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
    #: the teacher-student methods compared (names of :func:`semires.methods.methods`)
    methods: list[str] = field(default_factory=lambda: ["teacher_student", "iom", "cpi"])
    #: self-training rounds: in round r >= 2 each method starts again from round r - 1's best
    #: network (its student, or its teacher with ``semi.eval_model: teacher``), which becomes
    #: the new teacher; stage folders ``<method>-round<r>``
    rounds: int = numeric(1, ge=1)
    #: teacher-student methods trained at the same time, each in its own process (CPU: with
    #: ``teacher_student.threads: 1`` two or three single-threaded runs use 2 cores better than
    #: one run with 2 threads); 1 = one after the other. Ignored under torchrun.
    parallel: int = numeric(1, ge=1)
    #: per-method overrides of the ``semi`` section, e.g. {iom: {sup_weight: 10}} (the paper's
    #: IOM script weighs the supervised loss by 10, its CPI script by 1)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: ReportSection = field(default_factory=ReportSection)

    def validate(self) -> None:
        from semires.data.splits import parse_ratio

        parse_ratio(self.labeled)  # a bad ratio is an error before anything runs
        if self.synth is not None:  # the knobs' ranges too, when the config is read
            from semires.data.synth import make_config

            try:
                make_config(self.synth.preset, **self.synth.overrides)
            except ConfigError as err:
                raise ConfigError(f"config key 'synth': {err}") from None
        if self.synth is None and not (self.data.root or self.data.ann):
            raise ConfigError("config: give either 'synth' (synthetic data) or a 'data' location")
        from semires.methods import method, teacher_student_names

        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"config key 'methods': duplicates in {self.methods}")
        for key, names in (("methods", self.methods), ("method_overrides", self.method_overrides)):
            for name in names:
                where = key if key == "methods" else f"{key}.{name}"
                try:
                    known = method(name).teacher_student
                except ConfigError as err:
                    raise ConfigError(f"config key {where!r}: {err}") from None
                valid = teacher_student_names()
                if not known or (key == "method_overrides" and name not in valid):
                    raise ConfigError(
                        f"config key {where!r}: unknown method {name!r}; expected one of "
                        f"{', '.join(valid)}"
                    )
        for name, values in self.method_overrides.items():  # the values too, before any stage
            m = method(name)  # merged as the plan merges a stage's ``semi`` section
            semi = merged(merged(to_dict(self.semi), values), m.semi)
            semi["refine"] = merged(semi["refine"], m.refine or {})
            load_dataclass(SemiConfig, semi, prefix=f"method_overrides.{name}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


#: the config keys every later stage depends on (data, split, proposals): fixed for a run folder
UPSTREAM_KEYS: tuple[str, ...] = (
    "synth",
    *(f"data.{f.name}" for f in fields(DataSpec)),  # where the data is
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
    "demo": ("demo.yaml", ()),
    "hard": ("demo.yaml", ("name=hard", "out=runs/hard", "synth.preset=hard")),
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
        config = shipped_configs_dir("run") / name
        overrides = [*preset_overrides, *(overrides or [])]
    else:
        config = resolve_config_path(config, kind="run")
    data = apply_overrides(read_yaml(config), list(overrides or []))
    cfg = load_dataclass(RunConfig, data)
    tag = ratio_tag(cfg.labeled)
    cfg.name, cfg.out = cfg.name.replace("{labeled}", tag), cfg.out.replace("{labeled}", tag)
    return cfg


def ratio_tag(labeled: str) -> str:
    """A labeled share as a file-name part: ``1%`` -> ``1pct``, ``0.5%`` -> ``0p5pct``
    (``{labeled}`` in a run config's ``name`` / ``out`` becomes this)."""
    return str(labeled).strip().replace("%", "pct").replace(".", "p")


def check_config_kind(data: dict[str, Any], path: str | Path, command: str) -> None:
    """Refuse, with a hint, a ``semires run`` config given to ``semires train`` (it has
    ``burn_in``, ``methods``, ...) or a training config given to ``semires run`` (``train``,
    ``output``): the keys of the other kind would only be reported as unknown."""
    from semires.train.config import Config

    train_keys = {f.name for f in fields(Config)}
    run_keys = {f.name for f in fields(RunConfig)}
    other, own = (
        ("run", run_keys - train_keys) if command == "train" else ("train", train_keys - run_keys)
    )
    found = sorted(set(data) & own)
    if found:
        shipped = Path(path).parent in (shipped_configs_dir("train"), shipped_configs_dir("run"))
        name = Path(path).stem if shipped else path
        raise ConfigError(
            f"{name} is a `semires {other}` config (it has {found[0]!r}), not one for "
            f"`semires {command}`: use `semires {other} -c {name}`"
        )

"""What a ``semires run`` is made of, without running it: :class:`RunPlan`.

A plan is computed from a :class:`~semires.run_config.RunConfig` alone, with no side effect: it
makes no folder, initialises no process group and reads no data. It answers where everything of
the run lives (:class:`~semires.layout.RunLayout`, the split, the proposals, the burn-in), which
training stages run in which order, and each stage's training config. The executor
(:class:`semires.pipeline.Pipeline`) holds a plan and does the work; ``semires serve`` and
``semires run --seeds`` only need the plan, and :func:`open_plan` reads a finished run's plan
from its ``run.yaml``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semires.errors import ConfigError
from semires.layout import SUPERVISED, RunLayout
from semires.methods import method, needs_proposals, split_stage, stage_name
from semires.run_config import RunConfig
from semires.train.config import Config, DataConfig, OutputConfig, SemiConfig
from semires.utils.typed_config import load_dataclass, read_yaml, to_dict


@dataclass(frozen=True)
class RunPlan:
    """The paths, the stages and the per-stage configs of a run (of ``cfg``, read when asked)."""

    cfg: RunConfig

    # -------------------------------------------------------------- where things live
    @property
    def out(self) -> Path:
        """The run folder."""
        return Path(self.cfg.out)

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.out)

    @property
    def split_dir(self) -> Path:
        """labeled.txt / unlabeled.txt: the given ``split_dir``, else the run's ``split/``."""
        return Path(self.cfg.split_dir) if self.cfg.split_dir else self.layout.split

    @property
    def proposals_dir(self) -> Path:
        """The proposal store: the given ``proposals.store``, else the run's ``proposals/``."""
        return Path(self.cfg.proposals.store) if self.cfg.proposals.store else self.layout.proposals

    @property
    def burn_in_path(self) -> Path:
        """The checkpoint the teacher-student runs start from."""
        if self.cfg.burn_in_checkpoint:
            return Path(self.cfg.burn_in_checkpoint)
        return self.layout.supervised.best

    def data_config(self) -> DataConfig:
        """The data every stage trains and is scored on (a synthetic run's ``data/``)."""
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

    # -------------------------------------------------------------- the stages
    @property
    def methods(self) -> list[str]:
        """The teacher-student methods compared (round 1 stage names)."""
        return list(self.cfg.methods)

    @property
    def needs_proposals(self) -> bool:
        """Whether some method refines with proposals (the run has a proposals stage)."""
        return needs_proposals(self.cfg.methods)

    def round_names(self, rnd: int) -> list[str]:
        """The stage names of self-training round ``rnd`` (1-based), one per method."""
        return [stage_name(m, rnd) for m in self.cfg.methods]

    @property
    def stage_names(self) -> list[str]:
        """The training stages in order: the burn-in, then each round's methods."""
        rounds = range(1, self.cfg.rounds + 1)
        return [SUPERVISED, *(name for r in rounds for name in self.round_names(r))]

    def train_config(self, name: str) -> Config:
        """The training config of a stage: ``supervised`` (burn-in) or a teacher-student
        method (the run's ``semi`` with the method's settings and ``method_overrides``)."""
        cfg = self.cfg
        if name == SUPERVISED:
            train, semi = copy.deepcopy(cfg.burn_in), SemiConfig(enabled=False)
        else:
            train, semi = copy.deepcopy(cfg.teacher_student), self._semi_config(name)
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

    def _semi_config(self, name: str) -> SemiConfig:
        """The ``semi`` section of a teacher-student stage (round r starts from round r - 1)."""
        m, (base, rnd) = method(name), split_stage(name)
        family = base.partition("[")[0]  # a variant cpi[t1=0.5] takes cpi's overrides
        semi = _merge(to_dict(self.cfg.semi), self.cfg.method_overrides.get(family, {}), m.semi)
        semi["refine"] = _merge(semi["refine"], m.refine)
        start = self.burn_in_path if rnd == 1 else self.layout.stage(stage_name(base, rnd - 1)).best
        semi.update(
            enabled=True,
            burn_in=str(start),
            proposals=str(self.proposals_dir) if m.needs_proposals else None,
        )
        return load_dataclass(SemiConfig, semi, prefix="semi")

    def stage_configs(self) -> dict[str, Config]:
        """The training config of every teacher-student stage, in the run's order."""
        return {name: self.train_config(name) for name in self.stage_names[1:]}

    # -------------------------------------------------------------- run.yaml
    def recorded_config(self) -> dict[str, Any]:
        """What ``run.yaml`` holds: the run config (plus the synthetic generator's version)."""
        current = self.cfg.to_dict()
        if self.cfg.synth is not None:
            from semires.data.synth import VERSION

            current["synth_version"] = VERSION
        return current


def open_plan(path: str | Path) -> RunPlan:
    """The plan of an existing ``semires run`` folder (from its ``run.yaml``), with paths taken
    relative to the folder, so a moved run folder still opens. Reads ``run.yaml`` only."""
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
    return RunPlan(load_dataclass(RunConfig, data))


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

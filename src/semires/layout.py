"""Where everything of a run lives on disk: one place for every file name.

A training run's folder (``semires train``, or one stage of ``semires run``) is a
:class:`StageLayout`; a ``semires run`` folder is a :class:`RunLayout` whose stages are
StageLayouts. The engine, the pipeline, the report, the web app and the bench scripts all ask
these objects for paths instead of spelling ``"best.pt"`` or ``"supervised"`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: the stage folder of the supervised burn-in
SUPERVISED = "supervised"


@dataclass(frozen=True)
class StageLayout:
    """One training run's folder (``output.dir``)."""

    root: Path

    @property
    def config(self) -> Path:
        """The resolved training config (written once the run started)."""
        return self.root / "config.yaml"

    @property
    def latest(self) -> Path:
        """Everything needed to resume (written at epoch ends, atomically)."""
        return self.root / "latest.pt"

    @property
    def best(self) -> Path:
        """The weights selected on the val split."""
        return self.root / "best.pt"

    @property
    def metrics(self) -> Path:
        """The final evaluation; its presence means the run is finished."""
        return self.root / "metrics.json"

    @property
    def history(self) -> Path:
        """One record per epoch."""
        return self.root / "history.json"

    @property
    def samples(self) -> Path:
        """Per test sentence of the final evaluation: (I, U, |G|), for paired comparisons."""
        return self.root / "samples.json"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"


@dataclass(frozen=True)
class RunLayout:
    """A ``semires run`` folder (see :mod:`semires.pipeline`)."""

    root: Path

    @property
    def run_yaml(self) -> Path:
        """The run's config (the data / split / proposals part is checked on a rerun)."""
        return self.root / "run.yaml"

    @property
    def data(self) -> Path:
        """The synthetic benchmark, when the run synthesises its data."""
        return self.root / "data"

    @property
    def split(self) -> Path:
        """labeled.txt / unlabeled.txt."""
        return self.root / "split"

    @property
    def proposals(self) -> Path:
        """The candidate masks of the unlabeled images."""
        return self.root / "proposals"

    @property
    def text_cache(self) -> Path:
        """Frozen text-encoder features shared by all training stages."""
        return self.root / "cache" / "text_features.pt"

    def stage(self, name: str) -> StageLayout:
        """The folder of a training stage: ``supervised`` or a teacher-student method."""
        return StageLayout(self.root / name)

    @property
    def supervised(self) -> StageLayout:
        return self.stage(SUPERVISED)

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def results_md(self) -> Path:
        return self.root / "results.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

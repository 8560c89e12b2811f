"""``semires run``: the whole SemiRES experiment in one command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from semires.run_config import RunConfig


def run(
    preset: str | None = typer.Option(
        None, "--preset", help="A shipped run preset: demo (the embedded default) or hard."
    ),
    config: str | None = typer.Option(
        None,
        "--config",
        "-c",
        help="A run config YAML, or a shipped one by name (e.g. semires_refcoco labeled=1%).",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Run folder (default: the config's `out`)."
    ),
    overrides: list[str] = typer.Argument(
        None, help="key=value overrides, e.g. synth.seed=1 labeled=5%"
    ),
    seeds: str | None = typer.Option(
        None,
        "--seeds",
        help="Training seeds, e.g. 0,1,2: the run once per seed (<out>/seed-<s>/, the same data, "
        "split and proposals), then <out>/results.md with the spread and bootstrap intervals.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Synthesise or read the data, split it, make proposals, train the burn-in and every
    teacher-student method, evaluate and write the report. Every stage is cached and resumable."""
    from semires.cli.options import main_process
    from semires.pipeline import run as run_pipeline

    cfg = _run_config(preset, config, out, overrides)
    if seeds is not None:
        _run_seeds(cfg, seeds, quiet=quiet)
        return
    # stage headers and epoch lines always (unless -q); bars only on a terminal (cli.entry)
    summary = run_pipeline(cfg, progress=not quiet)
    if not main_process():  # under torchrun the report is said once, by rank 0
        return
    typer.echo(f"\nreport: {Path(cfg.out) / 'results.md'} and {Path(cfg.out) / 'report.html'}")
    if quiet:
        from semires.evaluate.tables import format_metrics_table
        from semires.methods import label

        split = summary["split"]
        rows = {label(m): s[split] for m, s in summary["methods"].items()}
        typer.echo(format_metrics_table(rows, title=f"{cfg.name}: {split}", first="method"))


def _run_config(
    preset: str | None, config: str | None, out: Path | None, overrides: list[str] | None
) -> RunConfig:
    """The run config of the command line (the demo preset when neither is given); a training
    config given to ``semires run`` is refused with a hint."""
    from semires.run_config import check_config_kind, load_run_config
    from semires.train.config import resolve_config_path
    from semires.utils.typed_config import read_yaml

    extra = list(overrides or [])
    if out is not None:
        extra.append(f"out={out}")
    if preset is None and config is None:
        preset = "demo"
    if config is not None and preset is None:
        path = resolve_config_path(config, kind="run")
        data = read_yaml(path)
        refuse_empty_config(data, path, "run")
        check_config_kind(data, path, "run")
    return load_run_config(config=config, preset=preset, overrides=extra)


def refuse_empty_config(data: dict[str, object], path: Path, command: str) -> None:
    """An empty config file is an error, not a run of every default (a full demo run, or a
    training run of the default paths): most likely a file saved before it was written."""
    from semires.errors import ConfigError

    if not data:
        hint = "--preset demo" if command == "run" else "-c synth_tiny"
        raise ConfigError(
            f"config file {path} is empty; write the settings to change into it (or use "
            f"`semires {command} {hint}` for the shipped defaults)"
        )


def _run_seeds(cfg: RunConfig, seeds: str, *, quiet: bool) -> None:
    """``--seeds 0,1,2``: the run once per training seed, then the comparison."""
    from semires.cli.options import main_process
    from semires.errors import ConfigError
    from semires.pipeline import run_seeds

    try:
        chosen = [int(v) for v in seeds.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r}: expected integers like 0,1,2") from None
    run_seeds(cfg, chosen, progress=not quiet)
    if main_process():
        typer.echo(f"\nreport: {Path(cfg.out) / 'results.md'}")


def register(app: typer.Typer) -> None:
    """Add ``semires run``."""
    app.command("run")(run)

"""docs/reproduce.md's dry run: the paper's config on a small `refcoco`-preset dataset with
random weights, run as the page writes it (issue 30, class 8)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from semires.pipeline import load_run_config
from semires.plan import RunPlan
from semires.utils.typed_config import to_dict

DOC = Path(__file__).resolve().parents[1] / "docs" / "reproduce.md"
MARKER = "<!-- the dry run: tests/test_reproduce.py runs this block as it is -->"


def documented_commands() -> list[list[str]]:
    """The commands of the fenced block after :data:`MARKER`, one argument list each (shell
    line continuations joined, quotes removed as a shell does)."""
    text = DOC.read_text(encoding="utf-8")
    assert MARKER in text, f"{DOC}: the dry-run block lost its marker"
    block = text.split(MARKER, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    commands = [shlex.split(line) for line in joined.splitlines() if line.strip()]
    assert [c[0] for c in commands] == ["semires", "semires"], commands
    return commands


def run_overrides(command: list[str]) -> tuple[str, str, list[str]]:
    """``(config, out, overrides)`` of a documented ``semires run`` command."""
    assert command[1] == "run", command
    args = command[2:]
    config = args[args.index("--config") + 1]
    out = args[args.index("--out") + 1]
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    return config, out, overrides


def flatten(data: object, prefix: str = "") -> dict[str, object]:
    if isinstance(data, dict) and data:
        out: dict[str, object] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def test_the_dry_run_is_the_paper_config_but_for_the_documented_keys() -> None:
    """Fast: the documented overrides change only data location, loader processes, model and
    its files, the generator and its files, and the epochs; every other setting of every stage
    is the paper's."""
    config, out, overrides = run_overrides(documented_commands()[1])
    assert config == "semires_refcoco"
    paper = load_run_config(config=config)
    dry = load_run_config(config=config, overrides=[f"out={out}", *overrides])
    before, after = flatten(to_dict(paper)), flatten(to_dict(dry))
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {
        "out",
        "data.root",
        "data.dataset",
        "data.split_by",
        "data.image_root",
        "data.num_workers",
        "data.img_size",
        "model.name",
        "model.overrides.backbone_weights",
        "model.overrides.text_encoder",
        "model.overrides",
        "proposals.generator",
        "proposals.params.model_type",
        "proposals.params.checkpoint",
        "proposals.params",
        "burn_in.epochs",
        "teacher_student.epochs",
    }
    assert (dry.model.name, dry.model.overrides, dry.proposals.params) == ("test-lavt", {}, {})
    plan = RunPlan(dry)
    assert plan.stage_names == ["supervised", "teacher_student", "iom", "cpi"]
    sup, iom, cpi = (plan.train_config(m) for m in ("supervised", "iom", "cpi"))
    assert (sup.train.batch_size, sup.train.lr, sup.train.amp, sup.train.epochs) == (2, 5e-5, "none", 1)  # fmt: skip
    assert (cpi.train.batch_size, cpi.semi.unlabeled_batch_size, cpi.semi.ema) == (3, 3, 0.9996)
    assert iom.semi.sup_weight == 10.0 and cpi.semi.eval_model == "teacher"
    assert dry.labeled == "1%" and dry.split_seed == 0 and dry.data.test_splits == ["testA", "testB"]  # fmt: skip


@pytest.mark.slow
def test_the_documented_dry_run_runs_every_stage(tmp_path: Path) -> None:
    """The two commands of the page, as written, in a fresh folder: every stage of the paper's
    run, the report, and a rerun that takes every stage from the cache (about 35 CPU seconds:
    marked slow; the config test above is the fast check of what the commands resolve to)."""
    commands = documented_commands()
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-m", "semires", *command[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{shlex.join(command)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"  # fmt: skip
    _, out, _ = run_overrides(commands[1])
    run = tmp_path / out
    said = done.stdout
    for header in ("] data", "] split", "] proposals", "] supervised (burn-in)", "] teacher-student (no SAM)", "] SemiRES-IOM", "] SemiRES-CPI", "] report"):  # fmt: skip
        assert header in said, header
    assert "labeled 1 images / unlabeled 11 images" in said  # 1% of 12, at least one image
    results = json.loads((run / "results.json").read_text())
    assert list(results["methods"]) == ["supervised", "teacher_student", "iom", "cpi"]
    for scores in results["methods"].values():
        assert {"testA", "testB", "testA+testB"} <= set(scores)
        assert scores["testA+testB"]["n"] == scores["testA"]["n"] + scores["testB"]["n"] > 0
    recorded = yaml.safe_load((run / "run.yaml").read_text())
    assert recorded["model"] == {"name": "test-lavt", "overrides": {}}
    assert recorded["name"] == "semires_refcoco_1pct" and recorded["methods"] == ["teacher_student", "iom", "cpi"]  # fmt: skip
    assert "SemiRES-CPI" in (run / "results.md").read_text() and (run / "report.html").is_file()
    again = subprocess.run(
        [sys.executable, "-m", "semires", *commands[1][1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("cached: ") == 4  # the burn-in and the three teacher-student runs
    assert json.loads((run / "results.json").read_text())["methods"] == results["methods"]


def test_leaving_out_an_override_of_the_weights_is_refused_before_any_stage(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """The paper's SAM settings left with the weight-free generator: one line naming them, exit
    2, and no run folder (the generator is built before the first stage)."""
    from semires.cli import main

    monkeypatch.chdir(tmp_path)
    synth, run = documented_commands()
    assert main([*synth[1:], "-q"]) == 0
    argv = [a for a in run[1:] if a != "proposals.params={}"]
    capsys.readouterr()
    assert main([*argv, "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config key 'proposals' (generator 'classical')" in err[0], err
    assert "checkpoint" in err[0] and "model_type" in err[0]
    _, out, _ = run_overrides(run)
    assert not (tmp_path / out).exists()

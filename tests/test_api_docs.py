"""docs/api.md: every python block runs, in order, in a folder holding the example dataset and a
tiny `own_data` run (the state the page assumes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from semires.data.jsonl import write_example
from semires.pipeline import load_run_config
from semires.pipeline import run as run_pipeline
from test_pipeline import TINY

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_page_has_examples_for_each_part() -> None:
    text = "\n".join(blocks())
    parts = ("semires.load", "predict_proba", "load_index", "make_split", "ProposalStore")
    for name in (*parts, "register_format", "register_strategy"):
        assert name in text


def test_every_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_example("data/example", progress=False)
    overrides = [o for o in TINY if not o.startswith(("synth.", "labeled="))]
    cfg = load_run_config(config="own_data", overrides=["methods=[cpi]", *overrides])
    run_pipeline(cfg, progress=False)
    for i, code in enumerate(blocks()):
        try:
            exec(compile(code, f"{DOC}:block{i + 1}", "exec"), {})
        except Exception as exc:  # the block's number in the failure message
            raise AssertionError(f"docs/api.md python block {i + 1} failed: {exc!r}") from exc

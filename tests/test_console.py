"""What runs say on the console (issue 30, class 8): a resumed run says where it goes on and
prints no earlier epoch again; shares in percent as the report; `propose` once with totals
under torchrun; a loader worker count above the CPUs said once; SAM left on the CPU said."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from semires.runtime.logs import format_record, is_share, worker_count_note
from semires.train.config import load_config
from semires.train.engine import Trainer, train

BASE = [
    "data.dataset=synthref",
    "data.split_by=synth",
    "data.img_size=64",
    "data.test_splits=[]",
    "data.cache_images=true",
    "model.name=test-tiny",
    "train.epochs=2",
    "train.steps_per_epoch=3",
    "train.batch_size=4",
    "train.eval_batch_size=32",
    "train.num_panels=0",
    "output.tensorboard=false",
]


def epoch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "] epoch=" in line]


@pytest.mark.parametrize(
    ("stop_at", "said"),
    [
        (3, "after epoch 1/2 (step 3)"),  # killed after the first epoch's latest.pt
        (4, "in epoch 2/2 at step 4 (1 of its 3 steps done)"),  # a mid-epoch latest.pt
    ],
)
def test_a_resumed_run_says_where_and_prints_no_earlier_epoch(
    stop_at, said, synth_tiny, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    cfg = load_config(None, [f"data.root={synth_tiny}", f"output.dir={out}", *BASE, "train.checkpoint_every=1"])  # fmt: skip
    real_step = Trainer.train_step

    def killed(self, *args, **kwargs):
        if self.step == stop_at:
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=True)
    first = capsys.readouterr().out
    assert [line.split(",")[0] for line in epoch_lines(first)] == ["[run] epoch=1"]
    assert "resumed" not in first
    monkeypatch.setattr(Trainer, "train_step", real_step)
    train(cfg, progress=True)
    second = capsys.readouterr().out
    assert f"[run] resumed from {out / 'latest.pt'} {said}" in second
    # the second epoch only: the first one's line was said before the kill
    assert [line.split(",")[0] for line in epoch_lines(second)] == ["[run] epoch=2"]
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


def test_shares_are_percent_on_the_console_as_in_the_report() -> None:
    record = {
        "epoch": 3,
        "loss": 0.123456,
        "val_oIoU": 41.23456,  # already percent (the metrics are)
        "pl_iou_before": 0.41234,
        "pl_iou_after": 0.5,
        "miss_rate": 0.125,
        "grounding_after": 0.75,
        "share_matched_cpi_u": 0.364,
        "corrections_positive": 0.0909,
        "kept_share": 1.0,
    }
    text = format_record(record)
    assert text == (
        "epoch=3, loss=0.1235, val_oIoU=41.23, pl_iou_before=41.23%, pl_iou_after=50.00%, "
        "miss_rate=12.5%, grounding_after=75.0%, share_matched_cpi_u=36.4%, "
        "corrections_positive=9.1%, kept_share=100.0%"
    )
    # the report's pseudo-label table: IoU 41.23 / 50.00, miss rate 12.5%
    from semires.report.markdown import quality_section

    table = "\n".join(quality_section({"cpi": record}))
    assert "| 41.23 | 50.00 |" in table and "12.5%" in table
    assert not any(is_share(k) for k in ("val_oIoU", "loss", "lr", "images_per_s", "epoch"))


def test_a_worker_count_above_the_cpus_is_said_once(monkeypatch) -> None:
    import semires.runtime.logs as logs

    monkeypatch.setattr(logs, "usable_cpus", lambda: 2)
    assert worker_count_note(2) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        note = worker_count_note(8)
        for _ in range(3):  # what torch's DataLoader says for every loader of every stage
            warnings.warn(
                "This DataLoader will create 8 worker processes in total. Our suggested max ...",
                UserWarning,
                stacklevel=1,
            )
        warnings.warn("another warning", UserWarning, stacklevel=1)
    assert note == (
        "note: data.num_workers is 8 but this machine gives the process 2 CPUs: the data "
        "loaders may run slowly or stall (set data.num_workers=2 or less)"
    )
    assert [str(w.message) for w in caught] == ["another warning"]


@pytest.mark.parametrize(
    ("env", "report", "said"),
    [
        (
            {},
            dict(wanted=18, already_done=0, generated=18, ranks=1, gathered=False),
            "18 images wanted, 0 already done, 18 generated",
        ),
        # torchrun with a process group: rank 0 says the totals over the ranks, once
        (
            {"RANK": "0", "WORLD_SIZE": "2"},
            dict(wanted=18, already_done=0, generated=18, ranks=2, gathered=True),
            "18 generated (5.0 candidates / image, 9.00 images/s) (over 2 processes)",
        ),
        (
            {"RANK": "1", "WORLD_SIZE": "2"},
            dict(wanted=10, already_done=0, generated=10, ranks=1, gathered=True),
            None,
        ),
        # no process group (no MASTER_ADDR): each rank can only say its share, and says so
        (
            {"RANK": "1", "WORLD_SIZE": "2"},
            dict(wanted=10, already_done=0, generated=10, ranks=1, gathered=False),
            "(rank 1 of 2: this rank's share)",
        ),
    ],
)
def test_propose_says_its_counts_once_with_totals(env, report, said, monkeypatch, capsys) -> None:
    from semires.cli.proposals import _echo_generation

    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    seconds = 2.0
    candidates = 5 * report["generated"]
    rep = SimpleNamespace(**report, candidates=candidates, failed={}, seconds=seconds)
    rep.images_per_second = report["generated"] / seconds
    _echo_generation(Path("store"), rep)
    out = capsys.readouterr().out
    if said is None:
        assert out == ""
    else:
        assert len(out.splitlines()) == 1 and said in out, out


def test_sam_left_on_the_cpu_by_device_auto_is_said() -> None:
    from semires.proposals.generate import cpu_note

    def generator(chosen: str, device: str) -> SimpleNamespace:
        return SimpleNamespace(name="sam", config=SimpleNamespace(device=chosen), device=device)

    note = cpu_note(generator("auto", "cpu"))
    assert note is not None and "the sam generator runs on the CPU" in note
    assert "--set device=cpu chooses it without this note" in note
    assert cpu_note(generator("auto", "cuda")) is None
    assert cpu_note(generator("cpu", "cpu")) is None  # chosen: nothing to say
    assert cpu_note(SimpleNamespace(name="classical")) is None  # no device at all

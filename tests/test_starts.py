"""Starts, disks, interruptions and logs (issue 30): a refused start writes nothing and its
corrected rerun just works; a full disk is one line and leaves no partial output; Ctrl-C says
how to go on; a log is never silent for minutes.

The one-line refusals of bad values are rows of ``tests/test_bad_input.py``; here are the checks
that need more than one command, a real full disk or a signal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from semires.cli import command_of, main
from semires.train.config import resolve_config_path

pytestmark = pytest.mark.usefixtures("one_thread")

SEMIRES = [sys.executable, "-c", "import sys; from semires.cli import entry; sys.argv[0] = 'semires'; entry()"]  # fmt: skip

#: a run of a few seconds: the tiny synthetic set, one method, one step per stage
SHORT_RUN = [
    "synth.preset=tiny",
    "labeled=34%",
    "model.name=test-tiny",
    "data.img_size=64",
    "methods=[cpi]",
    "parallel=1",
    "burn_in.epochs=1",
    "burn_in.steps_per_epoch=1",
    "burn_in.batch_size=2",
    "burn_in.threads=null",
    "teacher_student.epochs=1",
    "teacher_student.steps_per_epoch=1",
    "teacher_student.batch_size=2",
    "teacher_student.threads=null",
    "semi.unlabeled_batch_size=2",
    "report.qualitative=0",
]


def train_args(synth: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "-c", "synth_tiny", "-q", f"data.root={synth}", "data.dataset=synthref",
        "data.split_by=synth", "data.img_size=64", "data.test_splits=[]", "model.name=test-tiny",
        "train.epochs=1", "train.steps_per_epoch=1", "train.batch_size=2",
        "output.tensorboard=false", f"output.dir={out}", *extra,
    ]  # fmt: skip


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    return lines[0]


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ----------------------------------------------------------------------------- a refused start


def test_a_rerun_after_a_refused_start_just_works(tmp_path, capsys):
    """`run` with the SAM generator and no checkpoint is refused before anything is written; the
    corrected rerun works, also over the run.yaml and split/ an older refused start left; a
    rerun refused for another training config leaves run.yaml as it was."""
    out = tmp_path / "run"
    base = ["run", "--preset", "demo", "-q", "--out", str(out), *SHORT_RUN]
    assert main([*base, "proposals.generator=sam"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "config key 'proposals.params.checkpoint'" in line
    assert not tmp_path.joinpath("run").exists()

    # what a start refused at the proposals stage used to leave: run.yaml (SAM) and split/
    from semires.data.splits import make_split, write_split
    from semires.data.synth import synthesize
    from semires.pipeline import load_run_config
    from semires.plan import RunPlan

    sam = load_run_config(preset="demo", overrides=[f"out={out}", *SHORT_RUN, "proposals.generator=sam"])  # fmt: skip
    out.mkdir()
    (out / "run.yaml").write_text(yaml.safe_dump(RunPlan(sam).recorded_config(), sort_keys=False))
    data = synthesize(out / "data", preset="tiny", seed=0)
    write_split(make_split(read_synthetic(data), "34%", seed=0), out / "split")

    assert main(base) == 0, capsys.readouterr().err
    recorded = (out / "run.yaml").read_text()
    assert yaml.safe_load(recorded)["proposals"]["generator"] == "classical"
    assert (out / "cpi" / "metrics.json").is_file()

    capsys.readouterr()
    assert main([*base, "burn_in.lr=0.5"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "supervised was trained with another config" in line and "train.lr" in line
    assert (out / "run.yaml").read_text() == recorded  # checked before run.yaml is written
    assert main([*base, "proposals.params={max_candidates: 5}"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "proposals.params: {} -> " in line and "proposals" in line
    assert (out / "run.yaml").read_text() == recorded


def read_synthetic(folder: Path):
    from semires.data.synth import load

    return load(folder)


def test_a_stage_folder_that_trained_nothing_takes_another_config(tmp_path, synth_tiny):
    """A stage folder with only config.yaml (a start that failed at its first step) is not "a
    run trained with another config": the corrected config trains there."""
    from semires.layout import StageLayout
    from semires.pipeline import Pipeline, load_run_config

    cfg = load_run_config(preset="demo", overrides=[f"out={tmp_path / 'run'}", *SHORT_RUN])
    pipeline = Pipeline(cfg, progress=False)
    stage = StageLayout(tmp_path / "run" / "supervised")
    stage.root.mkdir()
    stage.config.write_text("train: {lr: 99}\n")
    pipeline.check_run_folder()  # taken: nothing was trained there
    (stage.root / "latest.pt").write_bytes(b"x")
    with pytest.raises(Exception, match="supervised was trained with another config"):
        pipeline.check_run_folder()


def test_a_non_finite_loss_at_step_0_says_there_is_no_checkpoint(synth_tiny, tmp_path):
    from semires.train.config import load_config
    from semires.train.engine import Trainer, TrainingError
    from semires.train.losses import PixelLosses

    class NaN(PixelLosses):
        def ce(self, logits, target):
            return super().ce(logits, target) * float("nan")

    cfg = load_config(
        resolve_config_path("synth_tiny"), train_args(synth_tiny, tmp_path / "nan")[4:]
    )
    with pytest.raises(TrainingError, match="at step 0") as err:
        Trainer.from_config(cfg, progress=False, losses=NaN(torch.tensor([0.9, 1.1]))).fit()
    assert "no checkpoint was saved yet" in str(err.value)
    assert "is intact" not in str(err.value)
    assert not (tmp_path / "nan" / "latest.pt").exists()


# ----------------------------------------------------------------------------- a full disk


def run_on_full_disk(script: str, tmp_path: Path, size_kib: int = 64) -> str:
    """Run the shell ``script`` with ``$M`` a tmpfs of ``size_kib`` KiB (in a user and mount
    namespace of its own: ``unshare -rm``); skips where the platform does not allow it."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs {mount}"],
        capture_output=True,
        text=True,
    )
    if shutil.which("unshare") is None or probe.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (unshare -rm: {probe.stderr.strip()[:120]})")
    head = f"set -u\nM={mount}\nE={tmp_path / 'stderr.txt'}\n"  # E: not on the full disk
    body = f"{head}mount -t tmpfs -o size={size_kib}k tmpfs $M || exit 99\n{script}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", body], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode != 99, done.stderr
    return done.stdout


def semires_cmd(*argv: str) -> str:
    """A shell line running semires with ``argv`` (``$M`` in them is the small filesystem),
    then printing its exit code, its stderr (kept in ``$E``) and the files under $M/out."""
    quoted = " ".join(f'"{a}"' for a in argv)
    line = " ".join(f'"{a}"' for a in SEMIRES)
    return textwrap.dedent(
        f"""
        {line} {quoted} > /dev/null 2> $E; echo "rc=$?"
        echo "err=$(cat $E)"; rm $E
        echo "files=$(cd $M/out 2>/dev/null && find . -mindepth 1 | sort | tr '\\n' ' ')"
        """
    )


def parse(block: str) -> list[dict[str, str]]:
    results, current = [], {}
    for raw in block.splitlines():
        key, _, value = raw.partition("=")
        if key in ("rc", "err", "files"):
            current[key] = value.strip()
            if key == "files":
                results.append(current)
                current = {}
    return results


def test_a_full_disk_is_one_line_and_leaves_no_partial_output(synth_tiny, tmp_path):
    """On a real (tiny, full) filesystem: predict --overlay, data stats --json, train and run
    stop with one line naming the file and the space, exit 2, and leave nothing in the output
    folder; predict's mask fits where its overlay does not, and neither is written."""
    from semires.train.config import load_config
    from semires.train.engine import train

    ckpt_dir = tmp_path / "ckpt"
    train(
        load_config(resolve_config_path("synth_tiny"), train_args(synth_tiny, ckpt_dir)[4:]),
        progress=False,
    )
    image = synth_tiny / "images" / "synthref" / "000001.png"
    predict = ["predict", "--checkpoint", str(ckpt_dir / "best.pt"), "--image", str(image)]
    predict += ["--text", "the ring", "--device", "cpu", "--out", "$M/out/m.png"]
    script = "mkdir $M/out\n"
    # 8 KiB free: the mask PNG (~100 bytes) fits, the overlay (~12 KiB) does not
    script += semires_cmd(*predict, "--overlay", "$M/out/o.png")
    script += "dd if=/dev/zero of=$M/fill bs=1k 2>/dev/null\n"  # now the disk is full
    stats = ["data", "stats", "--root", str(synth_tiny), "--dataset", "synthref", "-q"]
    script += semires_cmd(*stats, "--json", "$M/out/s.json")
    script += semires_cmd(*train_args(synth_tiny, Path("$M/out/t")))
    script += semires_cmd("run", "--preset", "demo", "-q", "--out", "$M/out/r", *SHORT_RUN)
    results = parse(run_on_full_disk(script, tmp_path, size_kib=8))
    assert len(results) == 4, results
    for result, written in zip(results, ["m.png and", "s.json", "out/t", "out/r"], strict=True):
        assert result["rc"] == "2", result
        assert result["err"].startswith("error: disk full: cannot write "), result
        assert written in result["err"] and "free" in result["err"], result
        assert "\n" not in result["err"] and result["files"] == "", result
    assert "needed" in results[0]["err"]


WORKERS_ON_A_FULL_DISK = textwrap.dedent(
    """
    import errno, json, sys
    from semires.pipeline import run_in_workers
    from semires.utils.io import atomic_write_json

    def write(path):
        atomic_write_json(path, list(range(100000)))  # ~700 KiB: more than the disk holds

    def raw(path):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    if __name__ == "__main__":
        for fn in (write, raw):
            try:
                run_in_workers(fn, {"a": (sys.argv[1] + "/" + fn.__name__ + ".json",)}, processes=1, interval=0.05)
            except Exception as exc:
                print(json.dumps([type(exc).__name__, str(exc)]))
    """
)


def test_teacher_student_workers_pass_a_full_disk_up_as_one_line(tmp_path):
    """`run`'s parallel teacher-student runs are worker processes: a full disk one of them
    meets (through semires' writers, or a bare OSError of another library) is one line here."""
    script = tmp_path / "workers.py"
    script.write_text(WORKERS_ON_A_FULL_DISK)
    out = run_on_full_disk(f"mkdir $M/out\n{sys.executable} {script} $M/out", tmp_path)
    results = [json.loads(line) for line in out.splitlines() if line.startswith("[")]
    assert [kind for kind, _ in results] == ["DiskFullError", "DiskFullError"], out
    for (_, message), name in zip(results, ["write.json", "raw.json"], strict=True):
        assert message.startswith("disk full: cannot write ") and name in message
        assert "\n" not in message


def test_a_full_disk_at_the_burn_in_is_one_line_and_resumes(tmp_path, capsys, monkeypatch):
    """The burn-in's checkpoint meets a full disk (``torch.save`` raises ENOSPC, as on a full
    filesystem, and torch wraps it in a RuntimeError): one line naming the checkpoint, no
    temporary file left, and the same command then goes on."""
    import errno

    real_save = torch.save

    def full(obj, f, *args, **kwargs):
        if not str(getattr(f, "name", "")).endswith(".tmp") or "best.pt" not in str(f.name):
            return real_save(obj, f, *args, **kwargs)  # the text features: written
        raise RuntimeError("unexpected pos") from OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "run"
    argv = ["run", "--preset", "demo", "-q", "--out", str(out), *SHORT_RUN]
    monkeypatch.setattr(torch, "save", full)
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"disk full: cannot write {out / 'supervised'}" in line and "needed" in line
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not (out / "supervised" / "best.pt").exists()
    monkeypatch.setattr(torch, "save", real_save)
    assert main(argv) == 0
    assert (out / "cpi" / "metrics.json").is_file()


# ----------------------------------------------------------------------------- Ctrl-C


def test_the_command_of_an_argument_list():
    assert command_of(["train", "-c", "x"]) == "train"
    assert command_of(["--plugin", "mine", "proposals", "import", "a"]) == "proposals import"
    assert command_of(["data", "--help"]) == "data"
    assert command_of([]) == ""


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["train", "-c", "synth_tiny"], "interrupted; rerun the same command to resume"),
        (["evaluate", "--checkpoint", "x.pt"], "interrupted"),
    ],
)
def test_ctrl_c_is_one_line_saying_how_to_go_on(argv, said, monkeypatch, capsys):
    import semires.cli.train as train_cli

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "checkpoint_data_options", stop)  # evaluate, at once
    monkeypatch.setattr("semires.train.engine.train", stop)
    assert main(argv) == 130
    assert capsys.readouterr().err == said + "\n"


def _interruptible(cmd: list[str]) -> subprocess.Popen:
    """``cmd`` started with Ctrl-C's default action, as from a terminal: a suite run as a
    background job (``make test &``, nohup) has SIGINT ignored, and children inherit that."""
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_ctrl_c_of_a_training_run_says_rerun_to_resume(synth_tiny, tmp_path):
    """A real SIGINT to `semires train` mid-run: exit 130 and one line."""
    out = tmp_path / "t"
    argv = train_args(synth_tiny, out, "train.epochs=200", "train.steps_per_epoch=null")
    proc = _interruptible([*SEMIRES, *argv])
    deadline = time.monotonic() + 120
    while not (out / "latest.pt").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err == "interrupted; rerun the same command to resume\n"


def test_ctrl_c_during_parallel_runs_is_one_line(tmp_path):
    """SIGINT to `semires run` while its teacher-student runs train in worker processes: the
    workers leave Ctrl-C to the main process and exit cleanly when stopped (no tracebacks, no
    "leaked semaphore" warning), and their folders are left unlocked."""
    out = tmp_path / "run"
    many = [a for a in SHORT_RUN if not a.startswith(("methods=", "parallel=", "teacher_student.epochs", "teacher_student.steps"))]  # fmt: skip
    argv = ["run", "--preset", "demo", "-q", "--out", str(out), *many]
    argv += ["methods=[cpi, iom]", "parallel=2", "teacher_student.epochs=200"]
    proc = _interruptible([*SEMIRES, *argv])
    deadline = time.monotonic() + 300
    while not (out / "cpi" / "config.yaml").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err == "interrupted; rerun the same command to resume\n"
    assert not list(out.rglob(".semires.lock"))


# ----------------------------------------------------------------------------- logs and pages


def test_a_bar_in_a_log_is_a_line_every_interval(monkeypatch, capsys):
    from semires.utils.progress import LogLines, progress_bar

    monkeypatch.setenv("SEMIRES_PROGRESS_EVERY", "0.05")
    monkeypatch.delenv("SEMIRES_PROGRESS", raising=False)
    bar = progress_bar(total=3, desc="epoch 1/2", unit="step")  # stderr is captured: a log
    assert isinstance(bar, LogLines)
    for _ in range(3):
        time.sleep(0.06)
        bar.set_postfix(loss="0.5")
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("epoch 1/2: 3/3 step (")
    assert "loss=0.5" in lines[-1]
    monkeypatch.setenv("SEMIRES_PROGRESS", "0")
    assert not isinstance(progress_bar(total=3, enabled=True), LogLines)
    assert not isinstance(progress_bar(total=3, enabled=False), LogLines)


def test_parallel_runs_say_they_are_at_work(tmp_path, monkeypatch):
    """Stage 5 (teacher-student runs in workers) prints each run's epoch records, and a line
    per run that has said nothing for a while (an epoch of many minutes)."""
    from semires.pipeline import WorkerProgress, load_run_config
    from semires.plan import RunPlan

    monkeypatch.setenv("SEMIRES_PROGRESS_EVERY", "0.05")
    cfg = load_run_config(preset="demo", overrides=[f"out={tmp_path}", *SHORT_RUN])
    stage = RunPlan(cfg).train_config("cpi")
    said: list[str] = []
    poll = WorkerProgress([("cpi", stage)], said.append)
    poll()
    assert said == []
    time.sleep(0.06)
    poll()
    assert said == ["  [SemiRES-CPI] epoch 1/1 in progress (0s since the start)"]
    Path(stage.output.dir).mkdir(parents=True)
    Path(stage.output.dir, "history.json").write_text(json.dumps([{"epoch": 1}]))
    poll()
    assert said[-1] == "  [SemiRES-CPI] epoch 1/1"
    resumed: list[str] = []  # a resumed run: its earlier records are not said again
    WorkerProgress([("cpi", stage)], resumed.append)()
    assert resumed == ["  [SemiRES-CPI] resumes after epoch 1/1"]


def test_a_small_mask_is_framed_and_the_photo_is_not_dimmed():
    pytest.importorskip("gradio")
    from semires.serve.app import draw

    photo = np.full((600, 800, 3), 120, np.uint8)
    small = np.zeros((600, 800), bool)
    small[300:306, 400:408] = True
    big = np.zeros((600, 800), bool)
    big[100:500, 100:700] = True
    for mask, framed in ((small, True), (big, False)):
        shown = draw(photo, [mask], [(255, 0, 0)])
        changed = (shown != photo).any(-1)
        assert changed[mask].all()  # the mask is tinted
        assert changed[~mask].any() == framed  # a frame only around a small mask
        assert (shown[~changed] == 120).all()  # the rest of the photo as it was


def test_long_expressions_give_no_transformers_note(capfd):
    from semires.model import build_model
    from semires.runtime.logs import quiet_tokenizer_length_note

    quiet_tokenizer_length_note()
    model = build_model("tiny")
    with pytest.warns(UserWarning, match="truncated"):
        model.tokenize([" ".join(["the red ring left of the blue star"] * 90)])
    assert "Token indices sequence length" not in capfd.readouterr().err


def test_evaluate_takes_the_checkpoints_format_when_the_ann_ending_names_none(
    synth_tiny, tmp_path, capsys
):
    from semires.data import DataSpec, load_index
    from semires.data.jsonl import write_jsonl
    from semires.train.config import load_config
    from semires.train.engine import train

    train(
        load_config(resolve_config_path("synth_tiny"), train_args(synth_tiny, tmp_path / "t")[4:]),
        progress=False,
    )
    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    jsonl = write_jsonl(index, tmp_path / "j" / "data.jsonl", progress=False)
    ckpt = torch.load(tmp_path / "t" / "best.pt", map_location="cpu", weights_only=True)
    ckpt["config"]["data"].update(format="jsonl", ann=str(jsonl), root=None, dataset=None, split_by=None)  # fmt: skip
    torch.save(ckpt, tmp_path / "j.pt")
    shutil.copy(jsonl, tmp_path / "j" / "data.txt")
    argv = ["evaluate", "--checkpoint", str(tmp_path / "j.pt"), "--device", "cpu", "-q"]
    assert main([*argv, "--ann", str(tmp_path / "j" / "data.txt")]) == 0, capsys.readouterr().err
    assert "| val |" in capsys.readouterr().out

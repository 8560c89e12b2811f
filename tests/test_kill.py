"""A killed run leaves nothing running, and one run per folder.

- workers started by ``run_in_workers`` die with their parent, however it dies (SIGKILL here);
- ``semires run`` killed while its teacher-student workers train: no trainer survives, none
  writes ``metrics.json`` afterwards, a second run of the folder meanwhile is refused naming the
  first one's PID, and the locks a crash leaves are taken over by the next run.

``SEMIRES_KILL_REPEATS=20`` repeats each kill (the default is once per test run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from semires.cli import main
from semires.utils.lock import LOCK_NAME, FolderLock, FolderLockedError
from test_pipeline import TINY

REPEATS = int(os.environ.get("SEMIRES_KILL_REPEATS", "1"))
METHODS = ("teacher_student", "iom", "cpi")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and alive(int(stat.parent.name)):
            out.append(int(stat.parent.name))
    return out


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


PARENT = """
import os, sys, time

def job(folder):
    open(os.path.join(folder, f"{os.getpid()}.pid"), "w").close()
    time.sleep(300)

if __name__ == "__main__":
    from semires.pipeline import run_in_workers

    run_in_workers(job, {name: (sys.argv[1],) for name in "abc"}, processes=3, interval=0.1)
"""


@pytest.mark.parametrize("attempt", range(REPEATS))
def test_workers_die_when_their_parent_is_killed(tmp_path: Path, attempt: int) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)])
    try:
        wait_for(lambda: len(list(tmp_path.glob("*.pid"))) == 3, 120, "three working workers")
        workers = [int(p.stem) for p in tmp_path.glob("*.pid")]
        helpers = children(proc.pid)  # the workers and multiprocessing's resource tracker
        assert set(workers) <= set(helpers)
        kill(proc)
        wait_for(lambda: not any(map(alive, helpers)), 10, f"the workers {helpers} to die")
    finally:
        if proc.poll() is None:
            kill(proc)


def lock_holder(folder: Path) -> int | None:
    """The PID written in a folder's lock file (None when there is none)."""
    try:
        return int((folder / LOCK_NAME).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def test_killed_run_leaves_no_trainer_and_its_folder_is_locked_meanwhile(tmp_path, capsys):
    """SIGKILL ``semires run`` while its three teacher-student workers train (stage 5)."""
    out = tmp_path / "run"
    args = ["run", "--preset", "demo", "--out", str(out), "-q", *TINY]
    args += ["parallel=3", "teacher_student.epochs=500", "teacher_student.threads=1"]
    args += [f"methods=[{', '.join(METHODS)}]"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    previous: set[int] = set()
    for attempt in range(REPEATS):  # after the first kill, stages 1-4 are cached
        proc = subprocess.Popen(
            [sys.executable, "-m", "semires", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:

            def trainers(old: frozenset[int] = frozenset(previous)) -> dict[str, int]:
                found = {m: lock_holder(out / m) for m in METHODS}
                return {m: p for m, p in found.items() if p and p not in old and alive(p)}

            def training(run: subprocess.Popen = proc) -> bool:
                if run.poll() is not None:
                    raise AssertionError(f"the run ended early: {run.stderr.read()[-2000:]}")
                return len(trainers()) == len(METHODS)

            wait_for(training, 300, "three trainers holding their stage folders")
            pids = trainers()
            assert set(pids.values()) <= set(children(proc.pid))  # spawned by the run
            assert lock_holder(out) == proc.pid
            if attempt == 0:  # a second run of the same folder is refused, naming the first
                capsys.readouterr()
                assert main(args) == 2
                err = capsys.readouterr().err.strip()
                assert err.startswith("error: ") and "\n" not in err
                assert f"is in use by another semires process (PID {proc.pid}" in err
                for method in METHODS:  # and a trainer's folder too
                    with pytest.raises(FolderLockedError, match=f"PID {pids[method]}"):
                        FolderLock(out / method, "test").acquire()
            kill(proc)
            trainer_pids = list(pids.values())
            wait_for(
                lambda p=trainer_pids: not any(map(alive, p)), 10, f"the trainers {pids} to die"
            )
            time.sleep(1.0)  # a surviving trainer would finish its epoch and write now
            for method in METHODS:
                assert not (out / method / "metrics.json").exists(), method
                # the lock the kill left behind is stale: the next run takes it over
                assert lock_holder(out / method) == pids[method]
                with FolderLock(out / method, "test") as lock:
                    assert lock_holder(out / method) == os.getpid() and lock.held
                assert not (out / method / LOCK_NAME).exists()
            with FolderLock(out, "test"):
                pass
            previous |= set(pids.values())
        finally:
            if proc.poll() is None:
                kill(proc)

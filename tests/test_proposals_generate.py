"""Generating a store: resume after a crash or a kill, several ranks, workers, unreadable images."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from semires.data.index import Image, Object, Ref, RESIndex, Sentence
from semires.errors import ConfigError
from semires.proposals.classical import ClassicalGenerator
from semires.proposals.generate import Rank, generate_store, plan_chunks, select_images
from semires.proposals.store import ProposalStore, verify_store

SMALL = {"max_candidates": 20}  # fast classical settings for 40 px images


def write_images(folder: Path, n: int = 10, size: int = 40) -> dict[int, Path]:
    """``n`` small images of coloured rectangles on grey; ids 101, 102, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = {}
    for k in range(n):
        image = np.full((size, size + k, 3), 128, np.uint8)
        r, c = rng.integers(2, size // 2, size=2)
        image[r : r + 12, c : c + 15] = rng.integers(0, 255, size=3)
        path = folder / f"{101 + k}.png"
        PILImage.fromarray(image).save(path)
        paths[101 + k] = path
    return paths


def store_bytes(root: Path) -> dict[str, bytes]:
    """Every file of a store (shards, index, manifest) by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def images(tmp_path: Path) -> dict[int, Path]:
    return write_images(tmp_path / "images")


@pytest.fixture
def reference(tmp_path: Path, images: dict[int, Path]) -> dict[str, bytes]:
    """The store an uninterrupted single-process run writes."""
    generate_store(
        ClassicalGenerator(**SMALL), images, tmp_path / "ref", shard_size=3, progress=False
    )
    return store_bytes(tmp_path / "ref")


class CrashingGenerator(ClassicalGenerator):
    """Raises after ``crash_after`` images (a simulated crash in the middle of a shard)."""

    def __init__(self, crash_after: int, **knobs) -> None:
        super().__init__(**knobs)
        self.left = crash_after

    def generate(self, image: np.ndarray):
        if self.left == 0:
            raise RuntimeError("simulated crash")
        self.left -= 1
        return super().generate(image)


def test_plan_chunks_sorts_and_cuts() -> None:
    assert plan_chunks([5, 1, 3, 2, 4, 3], 2) == [[1, 2], [3, 4], [5]]
    with pytest.raises(ConfigError):
        plan_chunks([1], 0)


def test_uninterrupted_run_writes_a_complete_store(tmp_path, images, reference) -> None:
    store = ProposalStore.open(tmp_path / "ref", "classical", ClassicalGenerator(**SMALL).params())
    assert store.image_ids() == sorted(images)
    assert len(list((tmp_path / "ref" / "shards").iterdir())) == 4  # 10 images, 3 per shard
    assert verify_store(tmp_path / "ref").ok
    report = generate_store(
        ClassicalGenerator(**SMALL), images, tmp_path / "ref", shard_size=3, progress=False
    )
    assert report.already_done == 10 and report.generated == 0  # a rerun has nothing to do
    assert store_bytes(tmp_path / "ref") == reference


def test_resume_after_a_crash_mid_shard_gives_the_same_store(tmp_path, images, reference) -> None:
    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_store(CrashingGenerator(5, **SMALL), images, out, shard_size=3, progress=False)
    partial = ProposalStore.open(out)
    assert (
        partial.image_ids() == sorted(images)[:3]
    )  # the finished shard only, nothing half-written
    assert verify_store(out).ok
    report = generate_store(ClassicalGenerator(**SMALL), images, out, shard_size=3, progress=False)
    assert report.already_done == 3 and report.generated == 7
    assert store_bytes(out) == reference


def test_two_ranks_write_the_single_process_store(tmp_path, images, reference, monkeypatch) -> None:
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    out = tmp_path / "ranks"
    reports = [
        generate_store(
            ClassicalGenerator(**SMALL), images, out, shard_size=3, rank=Rank(r, 2), progress=False
        )
        for r in (1, 0)
    ]
    assert reports[0].generated + reports[1].generated == 10
    assert reports[0].wanted == 4 and reports[1].wanted == 6  # chunks 1, 3 / chunks 0, 2
    assert store_bytes(out) == reference


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


RANK_SCRIPT = """
import json, sys
from semires.proposals.classical import ClassicalGenerator
from semires.proposals.generate import generate_store
paths = {int(k): v for k, v in json.load(open(sys.argv[1])).items()}
r = generate_store(
    ClassicalGenerator(max_candidates=20), paths, sys.argv[2], shard_size=3, progress=False
)
print(json.dumps([r.wanted, r.already_done, r.generated, r.ranks, r.gathered]))
"""


def test_torchrun_style_ranks_with_a_gloo_group(tmp_path, images, reference) -> None:
    """The ranks write the single-process store; rank 0's report holds the totals over the
    ranks (what `semires propose` prints once), the others their own share."""
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps({str(k): str(v) for k, v in images.items()}))
    out = tmp_path / "dist"
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", RANK_SCRIPT, str(jobs), str(out)],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    said = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert store_bytes(out) == reference
    counts = [json.loads(text.strip().splitlines()[-1]) for text in said]
    assert counts[0] == [10, 0, 10, 2, True]  # rank 0: every rank's images (chunks 0-3)
    assert counts[1] == [4, 0, 4, 1, True]  # rank 1: its chunks 1 and 3 (it says nothing)


KILL_SCRIPT = """
import json, sys, time
from semires.proposals.classical import ClassicalGenerator
from semires.proposals.generate import generate_store

class Slow(ClassicalGenerator):
    def generate(self, image):
        time.sleep(0.15)
        return super().generate(image)

paths = {int(k): v for k, v in json.load(open(sys.argv[1])).items()}
generate_store(Slow(max_candidates=20), paths, sys.argv[2], shard_size=3, progress=False)
"""


def test_a_killed_run_resumes_to_the_same_store(tmp_path, images, reference) -> None:
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps({str(k): str(v) for k, v in images.items()}))
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(jobs), str(out)])
    deadline = time.monotonic() + 60
    while not list((out / "shards").glob("*.srp")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # well inside the second shard
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = ProposalStore.open(out).image_ids()
    assert 0 < len(done) < 10 and verify_store(out).ok
    generate_store(ClassicalGenerator(**SMALL), images, out, shard_size=3, progress=False)
    assert store_bytes(out) == reference  # no temporary file left either


def test_workers_give_the_same_store(tmp_path, images, reference) -> None:
    out = tmp_path / "pool"
    generate_store(
        ClassicalGenerator(**SMALL), images, out, shard_size=3, workers=2, progress=False
    )
    assert store_bytes(out) == reference


def test_unreadable_image_is_skipped_listed_and_retried(tmp_path, images) -> None:
    bad = images[104]
    good = bad.read_bytes()
    bad.write_bytes(b"not an image")
    out = tmp_path / "store"
    with pytest.warns(UserWarning, match="skipped image 104"):
        report = generate_store(
            ClassicalGenerator(**SMALL), images, out, shard_size=3, progress=False
        )
    assert list(report.failed) == [104] and "cannot decode image" in report.failed[104]
    assert report.generated == 9 and ProposalStore.open(out).image_ids() == sorted(
        set(images) - {104}
    )
    assert list(json.loads((out / "failed.json").read_text())) == ["104"]
    bad.write_bytes(good)
    report = generate_store(ClassicalGenerator(**SMALL), images, out, shard_size=3, progress=False)
    assert report.generated == 1 and not report.failed and not (out / "failed.json").exists()
    assert ProposalStore.open(out).image_ids() == sorted(images) and verify_store(out).ok


def test_another_config_on_an_existing_store_is_refused(tmp_path, images) -> None:
    from semires.errors import ProposalError

    out = tmp_path / "store"
    generate_store(ClassicalGenerator(**SMALL), images, out, shard_size=3, progress=False)
    with pytest.raises(ProposalError, match="max_candidates: 20 -> 30"):
        generate_store(ClassicalGenerator(max_candidates=30), images, out, progress=False)


def test_a_store_made_from_other_image_files_is_refused_then_overwritten(tmp_path, images):
    """Same ids and sizes, other content (another synthetic seed, another dataset numbered the
    same way): completing the store must not mix them; --overwrite makes it again."""
    from semires.errors import ProposalError
    from semires.proposals.generate import delete_store
    from semires.proposals.store import image_fingerprint

    out = tmp_path / "store"
    first = dict(list(images.items())[:6])
    generate_store(ClassicalGenerator(**SMALL), first, out, shard_size=3, progress=False)
    store = ProposalStore.open(out)
    assert all(store.fingerprint(i) == image_fingerprint(p) for i, p in first.items())
    assert store.stale_images(images) == []

    other = write_images(tmp_path / "other", n=10)
    for path in other.values():  # the same sizes, other pixels
        pixels = np.asarray(PILImage.open(path)).copy()
        pixels[:5] = 255 - pixels[:5]
        PILImage.fromarray(pixels).save(path)
    assert ProposalStore.open(out).stale_images(other) == sorted(first)
    before = store_bytes(out)
    with pytest.raises(
        ProposalError, match=r"6 of the 6 images already in it were made from other"
    ):
        generate_store(ClassicalGenerator(**SMALL), other, out, shard_size=3, progress=False)
    assert store_bytes(out) == before  # nothing written
    assert not verify_store(out, image_path=other.get).ok
    assert verify_store(out, image_path=images.get).ok

    report = generate_store(
        ClassicalGenerator(**SMALL), other, out, shard_size=3, overwrite=True, progress=False
    )
    assert report.already_done == 0 and report.generated == 10
    assert (
        ProposalStore.open(out).stale_images(other) == []
        and verify_store(out, image_path=other.get).ok
    )
    with pytest.raises(ConfigError, match="one process"):
        generate_store(
            ClassicalGenerator(**SMALL), other, out, overwrite=True, rank=Rank(0, 2), progress=False
        )
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep me")
    with pytest.raises(ProposalError, match="not a proposal store"):
        delete_store(tmp_path / "notes")
    assert (tmp_path / "notes" / "a.txt").read_text() == "keep me"


def test_stale_images_reads_files_in_threads_and_names_an_unreadable_one(tmp_path, images):
    """The training start checks every unlabeled image (17k for RefCOCO) with several threads:
    the same answer as one thread, in id order, and a missing file is named."""
    from semires.errors import DataError

    out = tmp_path / "store"
    generate_store(ClassicalGenerator(**SMALL), images, out, shard_size=3, progress=False)
    store = ProposalStore.open(out)
    changed = sorted(images)[1::3]
    for image_id in changed:  # same size, other pixels
        pixels = np.asarray(PILImage.open(images[image_id])).copy()
        pixels[:3] = 255 - pixels[:3]
        PILImage.fromarray(pixels).save(images[image_id])
    wanted = {**images, 999: tmp_path / "not-in-store.png"}  # not in the store: not checked
    assert store.stale_images(wanted, threads=1) == changed
    assert store.stale_images(wanted, threads=8, progress=True) == changed
    images[changed[0]].unlink()
    with pytest.raises(DataError, match=rf"cannot read image {changed[0]} \(.*{changed[0]}"):
        store.stale_images(images, threads=4)


def test_a_store_without_fingerprints_still_reads(tmp_path, images):
    """Stores written before fingerprints existed (7-field index, no footer fingerprints)."""
    from semires.proposals.base import Proposals

    out = tmp_path / "old"
    store = ProposalStore.create(out, "old", {})
    store.write_shard([(i, Proposals((40, 40 + k))) for k, i in enumerate(sorted(images))])
    index = json.loads((out / "index.json").read_text())
    index["entries"] = {k: v[:7] for k, v in index["entries"].items()}
    (out / "index.json").write_text(json.dumps(index))
    old = ProposalStore.open(out)
    assert not old.index_was_stale and old.fingerprint(101) is None
    assert old.stale_images(images) == [] and verify_store(out, image_path=images.get).ok


# ---------------------------------------------------------------------------- image selection
def small_index() -> RESIndex:
    images = [Image(i, f"{i}.png", 8, 8) for i in range(1, 9)]
    objects = [Object(10 + i, i, 1, (0, 0, 4, 4)) for i in range(1, 9)]
    refs = [
        Ref(100 + i, 10 + i, i, 1, "train" if i <= 6 else "val", [Sentence.from_text(i, "thing")])
        for i in range(1, 9)
    ]
    return RESIndex(images, objects, refs, {1: "thing"}, name="small")


def test_select_images_unlabeled_or_all(tmp_path) -> None:
    from semires.data.splits import make_split, write_split

    index = small_index()
    split = make_split(index, "50%", seed=0)
    write_split(split, tmp_path / "split")
    chosen = select_images(index, "train", split_dir=tmp_path / "split")
    assert chosen == sorted(split.unlabeled_images) and len(chosen) == 3
    assert not set(chosen) & set(split.labeled_images)
    assert select_images(index, "train", all_images=True) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ConfigError, match=r"--split-dir DIR .* or --all-images"):
        select_images(index, "train")
    with pytest.raises(ConfigError, match=r"--split-dir DIR .* or --all-images"):
        select_images(index, "train", split_dir=tmp_path / "split", all_images=True)


def test_rank_from_env(monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert Rank.from_env() == Rank(1, 4)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK=4 is outside WORLD_SIZE=4"):
        Rank.from_env()


def test_slow_images_say_what_a_killed_run_loses(tmp_path, images, monkeypatch, capsys) -> None:
    """Images slower than SLOW_IMAGE_S: one line, after the first image, saying that a shard is
    written whole and how much a kill redoes (and the knob that shrinks it); fast ones: none."""
    import semires.proposals.generate as gen_mod

    generate_store(ClassicalGenerator(**SMALL), images, tmp_path / "fast", shard_size=4)
    assert "note:" not in capsys.readouterr().out
    monkeypatch.setattr(gen_mod, "SLOW_IMAGE_S", 0.0)
    generate_store(ClassicalGenerator(**SMALL), images, tmp_path / "slow", shard_size=4)
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, notes
    assert "the store is written a shard of 4 images at a time, so a killed run redoes up to 3 images" in notes[0]  # fmt: skip
    assert notes[0].endswith("a smaller --shard-size (proposals.shard_size) loses less")
    generate_store(ClassicalGenerator(**SMALL), images, tmp_path / "quiet", shard_size=4, progress=False)  # fmt: skip
    assert "note:" not in capsys.readouterr().out

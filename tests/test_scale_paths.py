"""The benchmark-scale code paths at a small size (docs/scale.md): the `refcoco` synthetic preset
(640x480 JPEG, polygon and RLE masks, the refer layout) through `semires run` with the classical
proposals on non-square images, bit-packed candidates and CPI; the conversion to the SemiRES json;
and bad input among many files (a corrupt shard, a truncated image, refs pointing to missing
annotations), each named, nothing else lost, and the run resuming after the fix."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RUN = [
    "synth.preset=refcoco",
    "synth.overrides={images_train: 30, images_val: 4, images_testA: 3, images_testB: 3}",
    "labeled=20%",
    "model.name=test-tiny",
    "data.img_size=96",
    "data.test_splits=[testA, testB]",
    "data.cache_images=true",
    "proposals.workers=1",
    "proposals.shard_size=4",
    "burn_in.epochs=1",
    "burn_in.steps_per_epoch=2",
    "burn_in.batch_size=3",
    "burn_in.threads=1",
    "teacher_student.epochs=1",
    "teacher_student.steps_per_epoch=2",
    "teacher_student.batch_size=3",
    "teacher_student.threads=1",
    "semi.unlabeled_batch_size=3",
    "methods=[cpi]",
    "parallel=1",
    "report.qualitative=0",
]


def semires(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "semires", *args], capture_output=True, text=True, env=env
    )
    if check and done.returncode != 0:
        raise AssertionError(f"semires {' '.join(args)} -> {done.returncode}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale") / "run"
    semires("run", "--preset", "demo", f"out={out}", *RUN, "-q")
    return out


def test_the_refcoco_preset_runs_end_to_end(scale_run):
    results = json.loads((scale_run / "results.json").read_text())
    assert set(results["methods"]) >= {"supervised", "cpi"}
    data = scale_run / "data"
    instances = json.loads((data / "synthref" / "instances.json").read_text())
    sizes = {(im["height"], im["width"]) for im in instances["images"]}
    assert sizes == {(480, 640)}
    kinds = {type(a["segmentation"]).__name__ for a in instances["annotations"]}
    assert kinds == {"list", "dict"}  # polygons and RLE, as COCO
    assert all(im["file_name"].endswith(".jpg") for im in instances["images"])
    history = json.loads((scale_run / "cpi" / "history.json").read_text())[-1]
    assert history["no_candidates_rate"] == 0.0
    assert 0.0 <= history["miss_rate"] <= 1.0


def test_conversion_and_stats_at_the_benchmark_layout(scale_run, tmp_path):
    data = scale_run / "data"
    refer = ["--root", str(data), "--dataset", "synthref", "--split-by", "synth"]
    ann = tmp_path / "semires" / "synthref.json"
    semires("data", "convert", *refer, "--to", "semires", "--out", str(ann), "-q")
    semires("data", "stats", *refer, "--json", str(tmp_path / "a.json"), "-q")
    semires(
        "data", "stats", "--format", "semires", "--ann", str(ann),
        "--image-root", str(data / "images" / "synthref"), "--json", str(tmp_path / "b.json"), "-q",
    )  # fmt: skip
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["splits"].keys() == b["splits"].keys() == {"train", "val", "testA", "testB"}
    for split in a["splits"]:
        for key in ("refs", "sentences", "images"):
            assert a["splits"][split][key] == b["splits"][split][key], (split, key)


def test_a_corrupt_shard_among_many_is_named_and_the_run_resumes_after_the_fix(tmp_path):
    import shutil

    run = tmp_path / "run"
    semires("run", "--preset", "demo", f"out={run}", *RUN, "-q")
    store = run / "proposals"
    shards = sorted((store / "shards").glob("*.srp"))
    assert len(shards) >= 4
    victim = shards[len(shards) // 2]
    victim.write_bytes(victim.read_bytes()[:-100])  # cut off: no trailer
    bad = semires("proposals", "verify", str(store), "-q", check=False)
    assert bad.returncode == 2
    assert victim.name in bad.stderr and "truncated" in bad.stderr
    # training meets it too (the cpi stage trained again): one line naming the shard, exit 2
    shutil.rmtree(run / "cpi")
    bad = semires("run", "--preset", "demo", f"out={run}", *RUN, "-q", check=False)
    assert bad.returncode == 2, bad.stderr
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and victim.name in last and "truncated" in last
    # the fix: remove the shard; the run's proposal stage makes only its images again
    others = {p.name: p.read_bytes() for p in shards if p != victim}
    victim.unlink()
    semires("run", "--preset", "demo", f"out={run}", *RUN, "-q")
    after = {p.name: p.read_bytes() for p in (store / "shards").glob("*.srp")}
    assert all(after[name] == data for name, data in others.items())  # the rest intact
    assert len(after) == len(shards) and (run / "cpi" / "metrics.json").is_file()
    assert semires("proposals", "verify", str(store), "-q").returncode == 0


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_a_truncated_image_among_many_is_named(scale_run, tmp_path):
    run = _copy_run(scale_run, tmp_path / "run")
    lines = (run / "split" / "unlabeled.txt").read_text().splitlines()
    unlabeled = [line for line in lines if line and not line.startswith("#")]
    instances = json.loads((run / "data" / "synthref" / "instances.json").read_text())
    files = {str(im["id"]): im["file_name"] for im in instances["images"]}
    victim = run / "data" / "images" / "synthref" / files[unlabeled[len(unlabeled) // 3]]
    victim.write_bytes(victim.read_bytes()[:2000])
    refer = ["--root", str(run / "data"), "--dataset", "synthref", "--split-by", "synth"]
    store = tmp_path / "store"
    done = semires("propose", *refer, "--split-dir", str(run / "split"), "--out", str(store), "-q")
    assert victim.name in done.stderr and "skipped" in done.stderr  # reported, not silent
    made = json.loads((store / "manifest.json").read_text())["images"]
    assert made == len(unlabeled) - 1  # every other image has its candidates
    verify = semires("proposals", "verify", str(run / "proposals"), *refer, "-q", check=False)
    assert verify.returncode == 2 and victim.name in verify.stderr


def test_refs_pointing_to_missing_annotations_are_named(scale_run, tmp_path):
    run = _copy_run(scale_run, tmp_path / "run")
    refs_file = run / "data" / "synthref" / "refs(synth).p"
    refs = pickle.loads(refs_file.read_bytes())
    refs[7]["ann_id"] = 10**9
    refs_file.write_bytes(pickle.dumps(refs))
    done = semires(
        "data", "stats", "--root", str(run / "data"), "--dataset", "synthref",
        "--split-by", "synth", check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"ref {refs[7]['ref_id']} points to missing object (ann_id) {10**9}" in done.stderr


def test_an_interrupted_conversion_leaves_no_half_written_json_and_reruns(scale_run, tmp_path):
    import signal
    import time

    data = scale_run / "data"
    refer = ["--root", str(data), "--dataset", "synthref", "--split-by", "synth"]
    whole = tmp_path / "whole" / "synthref.json"
    semires("data", "convert", *refer, "--to", "semires", "--out", str(whole), "-q")
    cut = tmp_path / "cut" / "synthref.json"
    args = ["data", "convert", *refer, "--to", "semires", "--out", str(cut), "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "semires", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if any((cut.parent / "masks").glob("*.npy")):  # writing masks: kill it now
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    if proc.returncode == -signal.SIGKILL:
        assert not cut.exists()  # the json is written last, atomically
    semires("data", "convert", *refer, "--to", "semires", "--out", str(cut), "-q")
    assert cut.read_bytes() == whole.read_bytes()
    masks = sorted(p.name for p in (whole.parent / "masks").iterdir())
    assert sorted(p.name for p in (cut.parent / "masks").iterdir()) == masks

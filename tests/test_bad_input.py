"""Bad input, as a new user gives it, to every command: one row per case.

Each row runs one ``semires`` command (in process) on one bad input and checks that it exits
with code 2, prints exactly one line ``error: ...`` holding the expected fragment (no
traceback), and leaves every file as it was: the row's own folder (where its outputs would go)
and the shared fixtures (dataset, checkpoint, proposal stores) are compared file by file
before and after. docs/data.md states how many rows there are.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from semires.cli import main
from semires.data import DataSpec, load_index
from semires.train.config import resolve_config_path

# ----------------------------------------------------------------------------- the fixtures


def _refer(root: Path) -> list[str]:
    return ["--root", str(root), "--dataset", "synthref", "--split-by", "synth"]


@pytest.fixture(scope="module")
def world(synth_tiny: Path, tmp_path_factory) -> SimpleNamespace:
    """The tiny synthetic set, its SemiRES json copy, a split, a trained checkpoint and two
    proposal stores (one made for these images, one for other files with the same ids)."""
    from semires.data.semires_json import write_semires_json
    from semires.data.splits import make_split, write_split
    from semires.train.config import load_config
    from semires.train.engine import train

    root = tmp_path_factory.mktemp("world")
    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    write_semires_json(index, root / "sj" / "anns.json", progress=False)
    drawn = make_split(index, "34%", seed=0)
    split = write_split(drawn, root / "split")
    overrides = [
        f"data.root={synth_tiny}",
        "data.dataset=synthref",
        "data.split_by=synth",
        "data.img_size=64",
        "data.test_splits=[]",
        "model.name=test-tiny",
        "train.epochs=1",
        "train.steps_per_epoch=1",
        "train.batch_size=2",
        "output.tensorboard=false",
        f"output.dir={root / 'run'}",
    ]
    train(load_config(None, overrides), progress=False)
    unlabeled = sorted(drawn.unlabeled_images)
    stores = {name: _gt_store(index, unlabeled, root / name, shift=k) for k, name in enumerate(("store", "other"))}  # fmt: skip
    val_ref = index.refs_in("val")[0]
    return SimpleNamespace(
        root=root,
        synth=synth_tiny,
        refer=_refer(synth_tiny),
        images=synth_tiny / "images" / "synthref",
        index=index,
        sj=root / "sj" / "anns.json",
        split=split,
        ckpt=root / "run" / "best.pt",
        train_args=overrides[:-1],
        store=stores["store"],
        other=stores["other"],
        store_image=unlabeled[0],
        val_mask=val_ref.object_id,
        val_image=val_ref.image_id,
    )


def _gt_store(index: Any, image_ids: list[int], out: Path, shift: int) -> Path:
    """A store whose candidates are the images' GT masks; ``shift`` > 0: made (so its
    fingerprints say) from other files than these images."""
    from semires.proposals.base import Proposals
    from semires.proposals.store import ProposalStore, image_fingerprint

    files = [index.image_path(i) for i in image_ids]
    prints = {i: image_fingerprint(files[(k + shift) % len(files)]) for k, i in enumerate(image_ids)}  # fmt: skip
    store = ProposalStore.create(out, "gt-test", {"kind": "gt"})
    items = []
    for image_id in image_ids:
        gt = [index.mask(o.id) for o in index.objects.values() if o.image_id == image_id]
        masks = np.stack(gt).astype(np.uint8)
        items.append((image_id, Proposals.from_masks(masks, np.ones(len(gt), np.float32))))
    store.write_shard(items, fingerprints=prints)
    return out


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file and folder under ``folders``: path -> content hash ("dir" for folders)."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            out[str(p)] = "dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
    return out


# ----------------------------------------------------------------------------- bad files


def copy_sj(w: SimpleNamespace, t: Path) -> Path:
    shutil.copytree(w.sj.parent, t / "sj")
    return t / "sj" / "anns.json"


def bad_mask(content: Any, *, object_id: Callable[[SimpleNamespace], int] = lambda w: w.val_mask):
    """Setup: the SemiRES json copy with one mask file replaced by ``content`` (an array, or
    raw bytes)."""

    def setup(w: SimpleNamespace, t: Path) -> None:
        path = copy_sj(w, t).parent / "masks" / f"{object_id(w)}.npy"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            np.save(path, content, allow_pickle=True)

    return setup


def sj_without_sizes(w: SimpleNamespace, t: Path) -> None:
    """The json as LAVT/SemiRES ship it (no "images": COCO file names, sizes unknown), its
    images under COCO names, and one mask of the wrong size."""
    ann = copy_sj(w, t)
    data = json.loads(ann.read_text())
    data.pop("images")
    ann.write_text(json.dumps(data))
    (t / "coco").mkdir()
    for image in w.index.images.values():
        shutil.copy(w.images / image.file_name, t / "coco" / f"COCO_train2014_{image.id:012d}.jpg")
    np.save(ann.parent / "masks" / f"{w.val_mask}.npy", np.ones((100, 100), np.uint8))


def jsonl_copy(change: Callable[[list[Any]], Any]) -> Callable[[SimpleNamespace, Path], None]:
    """Setup: the tiny set as JSON Lines ``t/j/data.jsonl`` (PNG masks, images where they
    are), its lines (dicts) then changed by ``change``; a 100x100 PNG ``t/j/big.png``."""

    def setup(w: SimpleNamespace, t: Path) -> None:
        from PIL import Image

        from semires.data.jsonl import write_jsonl

        path = write_jsonl(w.index, t / "j" / "data.jsonl", progress=False)
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        change(lines)
        path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
        Image.fromarray(np.full((100, 100), 255, np.uint8)).save(t / "j" / "big.png")

    return setup


def unmask(split: str) -> Callable[[list[Any]], None]:
    """A change of :func:`jsonl_copy`: the lines of ``split`` lose their masks (unlabeled)."""
    return lambda lines: [line.pop("mask") for line in lines if line["split"] == split]


def write(name: str, content: bytes | str | Any) -> Callable[[SimpleNamespace, Path], None]:
    """Setup: write ``t/name`` (bytes, text, or json of an object)."""

    def setup(w: SimpleNamespace, t: Path) -> None:
        path = t / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(json.dumps(content))

    return setup


def refer_copy(change: Callable[[Path], None]) -> Callable[[SimpleNamespace, Path], None]:
    """Setup: the refer layout copied to ``t/refer`` (images linked), then ``change(folder)``."""

    def setup(w: SimpleNamespace, t: Path) -> None:
        shutil.copytree(w.synth / "synthref", t / "refer" / "synthref")
        change(t / "refer" / "synthref")

    return setup


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo owned",))


def evil_pickle() -> bytes:
    return pickle.dumps(_Evil())


def evil_checkpoint(w: SimpleNamespace, t: Path) -> None:
    torch.save({"format": "semires-checkpoint", "x": _Evil()}, t / "evil.pt")


def truncated_checkpoint(w: SimpleNamespace, t: Path) -> None:
    (t / "cut.pt").write_bytes(w.ckpt.read_bytes()[:4000])


def png_bomb() -> bytes:
    """A valid PNG header claiming 100000 x 100000 pixels (10^10: a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")  # fmt: skip


def hold_lock(folder: str) -> Callable[[SimpleNamespace, Path], Any]:
    """Setup: this process holds the lock of ``t/folder`` (as a running run would)."""

    def setup(w: SimpleNamespace, t: Path) -> Any:
        from semires.utils.lock import FolderLock

        return FolderLock(t / folder, "semires run --out other").acquire()

    return setup


def mkdir(name: str) -> Callable[[SimpleNamespace, Path], None]:
    def setup(w: SimpleNamespace, t: Path) -> None:
        (t / name).mkdir(parents=True)

    return setup


def cut_shards(w: SimpleNamespace, t: Path) -> None:
    """Setup: a copy of the store whose shards are cut short."""
    shutil.copytree(w.store, t / "store")
    for shard in (t / "store" / "shards").iterdir():
        shard.write_bytes(shard.read_bytes()[:100])


def score_folders(w: SimpleNamespace, t: Path) -> None:
    """Setup: a prediction with a value other than 0/1/255, and its ground truth."""
    for name, value in (("p", 3), ("g", 1)):
        (t / name).mkdir()
        np.save(t / name / "a.npy", np.full((4, 4), value, np.uint8))


def no_cuda() -> bool:
    return not torch.cuda.is_available()


# ----------------------------------------------------------------------------- the table


@dataclass
class Case:
    id: str
    argv: Callable[[SimpleNamespace, Path], list[str]]
    expect: str
    setup: Callable[[SimpleNamespace, Path], Any] | None = None
    only_if: Callable[[], bool] | None = None


def stats_sj(w, t):
    return ["data", "stats", "--format", "semires", "--ann", str(t / "sj" / "anns.json")]


def eval_sj(w, t):
    ann = t / "sj" / "anns.json"
    return ["evaluate", "--checkpoint", str(w.ckpt), "--ann", str(ann), "--image-root", str(w.images), "--device", "cpu", "-q"]  # fmt: skip


def stats_jsonl(w, t):
    return ["data", "stats", "--format", "jsonl", "--ann", str(t / "j" / "data.jsonl"), "-q"]


def run_jsonl(*extra: str) -> Callable[[SimpleNamespace, Path], list[str]]:
    def argv(w, t):
        return ["run", "--preset", "demo", "--out", str(t / "run"), "-q", "synth=null", "data.format=jsonl", f"data.ann={t / 'j' / 'data.jsonl'}", "labeled=masks", *extra]  # fmt: skip

    return argv


def train_cmd(*extra: str) -> Callable[[SimpleNamespace, Path], list[str]]:
    def argv(w, t):
        return ["train", "-c", "synth_tiny", "-q", *w.train_args, f"output.dir={t / 'out'}", *[e.format(t=t, w=w) for e in extra]]  # fmt: skip

    return argv


def run_cmd(*extra: str) -> Callable[[SimpleNamespace, Path], list[str]]:
    def argv(w, t):
        return ["run", "--preset", "demo", "--out", str(t / "run"), "-q", "synth.preset=tiny", *extra]  # fmt: skip

    return argv


def evaluate(*extra: str, ckpt: str | None = None) -> Callable[[SimpleNamespace, Path], list[str]]:
    def argv(w, t):
        path = str(t / ckpt) if ckpt else str(w.ckpt)
        return ["evaluate", "--checkpoint", path, "--device", "cpu", "-q", *extra]

    return argv


def predict(*extra: str, image: str | None = None) -> Callable[[SimpleNamespace, Path], list[str]]:
    def argv(w, t):
        picture = str(t / image) if image else str(w.images / "000001.png")
        out = ["--out", str(t / "m.png")] if "--out" not in extra else []
        return ["predict", "--checkpoint", str(w.ckpt), "--image", picture, "--text", "the ring", *out, *[e.format(t=t) for e in extra]]  # fmt: skip

    return argv


def quality(*extra: str, store: str = "store") -> Callable[[SimpleNamespace, Path], list[str]]:
    def argv(w, t):
        return ["proposals", "quality", str(getattr(w, store)), *w.refer, "-q", *extra]

    return argv


def propose(*extra: str) -> Callable[[SimpleNamespace, Path], list[str]]:
    def argv(w, t):
        return ["propose", *w.refer, "--all-images", "--out", str(t / "store"), "-q", *[e.format(t=t) for e in extra]]  # fmt: skip

    return argv


def show(*extra: str, store: str = "store") -> Callable[[SimpleNamespace, Path], list[str]]:
    def argv(w, t):
        return ["proposals", "show", str(getattr(w, store)), "--image", str(w.store_image), "--out", str(t / "s.png"), *w.refer, *extra]  # fmt: skip

    return argv


def static(*argv: str) -> Callable[[SimpleNamespace, Path], list[str]]:
    return lambda w, t: [a.format(t=t, w=w) for a in argv]


CASES = [
    # --- datasets: refer layout -------------------------------------------------------------
    Case("refer-missing-root", static("data", "stats", "--root", "{t}/nope", "--dataset", "x"), "refer data root not found"),
    Case("refs-truncated", static("data", "stats", "--root", "{t}/refer", "--dataset", "synthref"), "is not a readable pickle", refer_copy(lambda f: (f / "refs(synth).p").write_bytes((f / "refs(synth).p").read_bytes()[:50]))),
    Case("refs-malicious", static("data", "stats", "--root", "{t}/refer", "--dataset", "synthref"), "refused to load posix.system", refer_copy(lambda f: (f / "refs(synth).p").write_bytes(evil_pickle()))),
    Case("refs-not-a-list", static("data", "stats", "--root", "{t}/refer", "--dataset", "synthref"), "expected a list of ref dicts", refer_copy(lambda f: (f / "refs(synth).p").write_bytes(pickle.dumps({"a": 1})))),
    Case("refs-empty", static("data", "stats", "--root", "{t}/refer", "--dataset", "synthref"), "holds no refs", refer_copy(lambda f: (f / "refs(synth).p").write_bytes(pickle.dumps([])))),
    Case("instances-not-json", static("data", "stats", "--root", "{t}/refer", "--dataset", "synthref"), "is not valid json", refer_copy(lambda f: (f / "instances.json").write_text("{'images': "))),
    Case("instances-a-list", static("data", "stats", "--root", "{t}/refer", "--dataset", "synthref"), "expected a COCO json object", refer_copy(lambda f: (f / "instances.json").write_text("[]"))),
    Case("two-refs-files", static("data", "stats", "--root", "{t}/refer", "--dataset", "synthref"), "pass --split-by", refer_copy(lambda f: shutil.copy(f / "refs(synth).p", f / "refs(unc).p"))),
    # --- datasets: the SemiRES json and its masks -------------------------------------------
    Case("sj-empty-object", static("data", "stats", "--format", "semires", "--ann", "{t}/a.json"), "no entries", write("a.json", {})),
    Case("sj-a-list", static("data", "stats", "--format", "semires", "--ann", "{t}/a.json"), "expected a dict of split name", write("a.json", [])),
    Case("sj-entry-no-mask-id", static("data", "stats", "--format", "semires", "--ann", "{t}/a.json"), "missing key 'mask_id'", write("a.json", {"train": [{"iid": 1, "bbox": [0, 0, 1, 1], "cat_id": 0, "refs": ["x"]}]})),
    Case("sj-no-ann", static("data", "stats", "--format", "semires"), "needs --ann"),
    Case("mask-100x100-stats", stats_sj, "the mask is 100x100 but its image is 96x96", bad_mask(np.ones((100, 100), np.uint8))),
    Case("mask-100x100-evaluate", eval_sj, "the mask is 100x100 but its image is 96x96", bad_mask(np.ones((100, 100), np.uint8))),
    Case("mask-10x10x3-stats", stats_sj, "expected a non-empty 2-D mask, got shape (10, 10, 3)", bad_mask(np.ones((10, 10, 3), np.uint8))),
    Case("mask-10x10x3-evaluate", eval_sj, "expected a non-empty 2-D mask, got shape (10, 10, 3)", bad_mask(np.ones((10, 10, 3), np.uint8))),
    Case("mask-all-zero-stats", stats_sj, "the mask is empty", bad_mask(np.zeros((96, 96), np.uint8))),
    Case("mask-all-zero-evaluate", eval_sj, "the mask is empty", bad_mask(np.zeros((96, 96), np.uint8))),
    Case("mask-non-binary", stats_sj, "expected binary values", bad_mask(np.full((96, 96), 7, np.uint8))),
    Case("mask-a-pickle", stats_sj, "it holds Python objects (a pickle)", bad_mask(np.array([{"a": 1}], dtype=object))),
    Case("mask-truncated", stats_sj, "cannot read mask file", bad_mask(b"\x93NUMPY\x01\x00v\x00{'descr'")),
    Case("mask-wrong-size-coco-names", lambda w, t: [*stats_sj(w, t), "--image-root", str(t / "coco")], "the mask is 100x100 but its image is 96x96", sj_without_sizes),
    Case("mask-wrong-size-show", lambda w, t: ["data", "show", "--format", "semires", "--ann", str(t / "sj" / "anns.json"), "--image-root", str(w.images), "--split", "val", "--n", "12", "--out", str(t / "g.png")], "the mask is 100x100", bad_mask(np.ones((100, 100), np.uint8))),
    # --- datasets: JSON Lines ------------------------------------------------------------------
    Case("jsonl-not-json", stats_jsonl, "data.jsonl:3: not valid JSON", jsonl_copy(lambda ls: ls.__setitem__(2, '{"image": '))),
    Case("jsonl-missing-image", stats_jsonl, "data.jsonl:2: image not found", jsonl_copy(lambda ls: ls[1].update(image="none.png"))),
    Case("jsonl-missing-mask", stats_jsonl, "data.jsonl:1: mask file not found", jsonl_copy(lambda ls: ls[0].update(mask="masks/none.png"))),
    Case("jsonl-mask-other-size", stats_jsonl, "data.jsonl:4: the mask", jsonl_copy(lambda ls: ls[3].update(mask="big.png"))),
    Case("jsonl-empty-expression", stats_jsonl, "data.jsonl:5: expressions[1] is ''", jsonl_copy(lambda ls: ls[4].update(expressions=["the ring", ""]))),
    Case("jsonl-duplicate-object", stats_jsonl, "data.jsonl:6: object id 'x' is also on line 2", jsonl_copy(lambda ls: [ls[i].update(object="x") for i in (1, 5)])),
    Case("jsonl-as-semires", lambda w, t: ["data", "stats", "--format", "semires", "--ann", str(t / "j" / "data.jsonl")], "is JSON Lines: read it with --format jsonl", jsonl_copy(list)),
    Case("split-jsonl-train-without-masks", lambda w, t: ["data", "split", "--labeled", "masks", "--out", str(t / "s"), "--format", "jsonl", "--ann", str(t / "j" / "data.jsonl")], "labeled images need masks", jsonl_copy(unmask("train"))),
    Case("evaluate-jsonl-val-without-masks", lambda w, t: [*evaluate("--split", "val")(w, t), "--format", "jsonl", "--ann", str(t / "j" / "data.jsonl")], "evaluation scores every ref against its mask", jsonl_copy(unmask("val"))),
    Case("convert-unlabeled-to-refer", lambda w, t: ["data", "convert", "--format", "jsonl", "--ann", str(t / "j" / "data.jsonl"), "--to", "refer", "--out", str(t / "r"), "-q"], "the refer layout needs a segmentation", jsonl_copy(unmask("train"))),
    Case("convert-mask-format", lambda w, t: ["data", "convert", *w.refer, "--to", "jsonl", "--out", str(t / "c.jsonl"), "--masks", "gif"], "--masks 'gif': expected one of png, npy, rle"),
    Case("convert-refer-out-is-a-file", lambda w, t: ["data", "convert", *w.refer, "--to", "refer", "--out", str(t / "f")], "the refer layout is written into a folder", write("f", "x")),
    Case("example-unknown-preset", static("data", "example", "--out", "{t}/ex", "--preset", "nope"), "nope"),
    Case("example-ratio-zero", static("data", "example", "--out", "{t}/ex", "--labeled", "0%"), "outside (0, 100%]"),
    # --- data split / show / synth ------------------------------------------------------------
    Case("split-ratio-above-1", lambda w, t: ["data", "split", "--labeled", "5", "--out", str(t / "s"), *w.refer], "5%"),
    Case("split-ratio-not-a-number", lambda w, t: ["data", "split", "--labeled", "abc", "--out", str(t / "s"), *w.refer], "'abc'"),
    Case("split-ratio-zero", lambda w, t: ["data", "split", "--labeled", "0%", "--out", str(t / "s"), *w.refer], "outside (0, 100%]"),
    Case("show-n-zero", lambda w, t: ["data", "show", "--data", str(w.synth), "--n", "0", "--out", str(t / "g.png")], "--n: expected a value >= 1"),
    Case("show-out-missing-folder", lambda w, t: ["data", "show", "--data", str(w.synth), "--out", str(t / "no" / "g.png")], "does not exist"),
    Case("synth-workers-zero", static("data", "synth", "--out", "{t}/d", "--preset", "tiny", "--workers", "0"), "--workers"),
    Case("synth-unknown-preset", static("data", "synth", "--out", "{t}/d", "--preset", "nope"), "nope"),
    Case("stats-json-is-a-folder", lambda w, t: ["data", "stats", *w.refer, "--no-masks", "--json", str(t)], "is a folder"),
    # --- train --------------------------------------------------------------------------------
    Case("train-unknown-key", train_cmd("train.lrr=0.1"), "unknown config key 'train.lrr'"),
    Case("train-run-config", static("train", "-c", "demo"), "demo is a `semires run` config, not one for `semires train`"),
    Case("train-model-override-typo", train_cmd("model.overrides.fusion_heds=2"), "config key 'model.overrides.fusion_heds'"),
    Case("train-model-override-value", train_cmd("model.overrides.fusion_heads=0"), "config key 'model.overrides.fusion_heads': expected an integer >= 1"),
    Case("train-unknown-model", train_cmd("model.name=nope"), "config key 'model.name': unknown model 'nope'"),
    Case("train-refine-t1", train_cmd("semi.refine.t1=2"), "semi.refine.t1 = 2"),
    Case("train-epochs-zero", train_cmd("train.epochs=0"), "config key 'train.epochs': expected >= 1"),
    Case("train-device-gpu", train_cmd("train.device=gpu"), "config key 'train.device': unknown device 'gpu'"),
    Case("train-device-cuda", train_cmd("train.device=cuda"), "no usable CUDA device", only_if=no_cuda),
    Case("train-missing-data", train_cmd("data.root={t}/nope"), "refer data root not found"),
    Case("train-missing-split", train_cmd("data.split_dir={t}/nosplit"), "nosplit"),
    Case("train-existing-folder-stays-empty", train_cmd("data.root={t}/nope"), "refer data root not found", mkdir("out")),
    Case("train-corrupt-burn-in", train_cmd("semi.enabled=true", "semi.refine.strategy=none", "semi.burn_in={t}/cut.pt", "data.split_dir={w.split}"), "not a complete torch checkpoint", truncated_checkpoint),
    Case("train-malicious-burn-in", train_cmd("semi.enabled=true", "semi.refine.strategy=none", "semi.burn_in={t}/evil.pt", "data.split_dir={w.split}"), "refused to load posix.system", evil_checkpoint),
    Case("train-store-of-other-images", train_cmd("semi.enabled=true", "semi.refine.strategy=cpi", "semi.burn_in={w.ckpt}", "semi.proposals={w.other}", "data.split_dir={w.split}"), "were made from other image files"),
    Case("train-folder-in-use", train_cmd(), "is in use by another semires process (PID", hold_lock("out")),
    # --- run ----------------------------------------------------------------------------------
    Case("run-train-config", static("run", "-c", "synth_tiny"), "synth_tiny is a `semires train` config, not one for `semires run`"),
    Case("run-train-config-file", static("run", "-c", "{t}/mine.yaml"), "is a `semires train` config (it has 'output')", lambda w, t: shutil.copy(resolve_config_path("synth_tiny"), t / "mine.yaml")),
    Case("train-run-config-file", static("train", "-c", "{t}/mine.yaml"), "is a `semires run` config (it has 'burn_in')", lambda w, t: shutil.copy(resolve_config_path("demo", kind="run"), t / "mine.yaml")),
    Case("run-ratio", run_cmd("labeled=0%"), "outside (0, 100%]"),
    Case("run-burn-in-epochs", run_cmd("burn_in.epochs=0"), "config key 'burn_in.epochs': expected >= 1"),
    Case("run-teacher-student-lr", run_cmd("teacher_student.lr=0"), "config key 'teacher_student.lr': expected > 0"),
    Case("run-device", run_cmd("burn_in.device=gpu"), "config key 'burn_in.device': unknown device 'gpu'"),
    Case("run-refine-t2", run_cmd("semi.refine.t2=-1"), "semi.refine.t2 = -1"),
    Case("run-unknown-preset", static("run", "--preset", "huge"), "unknown run preset 'huge'"),
    Case("run-folder-in-use", run_cmd(), "is in use by another semires process (PID", hold_lock("run")),
    Case("run-jsonl-val-without-masks", run_jsonl(), "val_split and test_splits are scored against masks", jsonl_copy(unmask("val"))),
    Case("run-jsonl-test-without-masks", run_jsonl(), "split 'testB' of", jsonl_copy(unmask("testB"))),
    Case("run-jsonl-train-without-masks", run_jsonl(), "labeled images need masks", jsonl_copy(unmask("train"))),
    Case("run-jsonl-nothing-unlabeled", run_jsonl(), "the teacher-student runs need unlabeled images", jsonl_copy(list)),
    # --- evaluate / predict -------------------------------------------------------------------
    Case("evaluate-device-gpu", evaluate("--device", "gpu"), "--device: unknown device 'gpu'"),
    Case("evaluate-device-cuda", evaluate("--device", "cuda"), "no usable CUDA device", only_if=no_cuda),
    Case("evaluate-device-cuda-7", evaluate("--device", "cuda:7"), "--device"),
    Case("evaluate-batch-size-zero", evaluate("--batch-size", "0"), "--batch-size: expected an integer >= 1"),
    Case("evaluate-unknown-split", evaluate("--split", "nope"), "split 'nope' not found"),
    Case("evaluate-unknown-protocol", evaluate("--protocol", "mine"), "unknown protocol 'mine'"),
    Case("evaluate-weights", evaluate("--weights", "both"), "--weights"),
    Case("evaluate-missing-checkpoint", evaluate(ckpt="none.pt"), "checkpoint not found"),
    Case("evaluate-corrupt-checkpoint", evaluate(ckpt="cut.pt"), "not a complete torch checkpoint", truncated_checkpoint),
    Case("evaluate-junk-checkpoint", evaluate(ckpt="junk.pt"), "not a complete torch checkpoint", write("junk.pt", b"12345 not a checkpoint")),
    Case("evaluate-malicious-checkpoint", evaluate(ckpt="evil.pt"), "refused to load posix.system", evil_checkpoint),
    Case("evaluate-foreign-checkpoint", evaluate(ckpt="f.pt"), "is not a semires checkpoint", lambda w, t: torch.save({"state_dict": {}}, t / "f.pt")),
    Case("evaluate-ann-of-other-format", evaluate("--ann", "{w.root}/nope.json"), "semires json not found"),
    Case("predict-empty-text", predict("--text", ""), "empty referring expression"),
    Case("predict-blank-text", predict("--text", "   "), "empty referring expression"),
    Case("predict-out-missing-folder", predict("--out", "{t}/missing/dir/m.png"), "the folder"),
    Case("predict-overlay-missing-folder", predict("--overlay", "{t}/missing/o.png"), "does not exist"),
    Case("predict-device-gpu", predict("--device", "gpu"), "unknown device 'gpu'"),
    Case("predict-device-cuda", predict("--device", "cuda"), "no usable CUDA device", only_if=no_cuda),
    Case("predict-missing-image", predict(image="none.png"), "image not found"),
    Case("predict-garbage-image", predict(image="g.png"), "cannot decode image", write("g.png", b"\x89PNG not really")),
    Case("predict-image-bomb", predict(image="bomb.png"), "cannot decode image", write("bomb.png", png_bomb())),
    # --- proposals ----------------------------------------------------------------------------
    Case("quality-t1-above-1", quality("--t1", "2"), "--t1 2.0: expected a number in [0, 1]"),
    Case("quality-t2-negative", quality("--t2", "-1"), "--t2 -1.0: expected a number in [0, 1]"),
    Case("quality-t1-nan", quality("--t1", "nan"), "--t1 nan"),
    Case("quality-store-of-other-images", quality(store="other"), "were made from other image files"),
    Case("quality-missing-store", lambda w, t: ["proposals", "quality", str(t / "none"), *w.refer], "no proposal store"),
    Case("show-store-of-other-images", show(store="other"), "were made from other image files"),
    Case("show-max-zero", show("--max", "0"), "--max: expected a value >= 1"),
    Case("show-image-without-candidates", lambda w, t: ["proposals", "show", str(w.store), "--image", str(w.val_image), "--out", str(t / "s.png"), *w.refer], "has no candidates"),
    Case("verify-store-of-other-images", lambda w, t: ["proposals", "verify", str(w.other), *w.refer, "-q"], "made from another file"),
    Case("verify-corrupt-shard", lambda w, t: ["proposals", "verify", str(t / "store"), "-q"], "corrupt proposal shard", cut_shards),
    Case("propose-all-images-missing", propose("--image-root", "{t}/empty"), "none of the 12 images to propose for exists", mkdir("empty")),
    Case("propose-shard-size-zero", propose("--shard-size", "0"), "--shard-size: expected a value >= 1"),
    Case("propose-workers-zero", propose("--workers", "0"), "--workers: expected a value >= 1"),
    Case("propose-unknown-generator", propose("--generator", "magic"), "magic"),
    Case("propose-unknown-knob", propose("--set", "bogus=1"), "bogus"),
    Case("propose-no-image-choice", lambda w, t: ["propose", *w.refer, "--out", str(t / "store")], "choose the images"),
    Case("propose-into-another-generators-store", lambda w, t: ["propose", *w.refer, "--split-dir", str(w.split), "--out", str(t / "store")], "not 'classical'", lambda w, t: shutil.copytree(w.other, t / "store")),
    # --- score / model ------------------------------------------------------------------------
    Case("score-missing-folder", static("score", "{t}/p", "{t}/g"), "not found"),
    Case("score-non-binary", static("score", "{t}/p", "{t}/g", "-q"), "expected binary values", score_folders),
    Case("pretrain-batch-size-zero", static("model", "pretrain", "--out", "{t}/w.pth", "--data", "{t}/d", "--batch-size", "0"), "--batch-size: expected a value >= 1"),
    Case("pretrain-lr-zero", static("model", "pretrain", "--out", "{t}/w.pth", "--data", "{t}/d", "--lr", "0"), "--lr: expected a value > 0"),
    Case("pretrain-out-missing-folder", static("model", "pretrain", "--out", "{t}/no/w.pth", "--data", "{t}/d"), "does not exist"),
    Case("import-lavt-junk", static("model", "import-lavt", "{t}/l.pth", "--out", "{t}/o.pt"), "cannot read LAVT checkpoint", write("l.pth", b"junk")),
    # --- issue 30: numbers, masks and checkpoints (values)
    # --- issue 30: starts, disks, options and logs
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case: Case, world, tmp_path, capsys) -> None:
    if case.only_if is not None and not case.only_if():
        pytest.skip("not applicable on this machine")
    held = case.setup(world, tmp_path) if case.setup else None  # a lock, for the "in use" rows
    try:
        argv = case.argv(world, tmp_path)
        before = snapshot(tmp_path, world.root, world.synth)
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 2, f"exit {code}; stdout: {out[-500:]}; stderr: {err[-1500:]}"
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err[-1500:]
        assert case.expect in lines[0], lines[0]
        assert snapshot(tmp_path, world.root, world.synth) == before
    finally:
        if hasattr(held, "release"):
            held.release()


def test_the_table_covers_every_command() -> None:
    from semires.cli import app

    def names(group, prefix=""):
        for cmd in group.registered_commands:
            yield prefix + (cmd.name or cmd.callback.__name__)
        for sub in group.registered_groups:
            yield from names(sub.typer_instance, prefix + sub.name + " ")

    commands = set(names(app)) - {"model list", "serve"}  # no input to get wrong
    tried = set()
    for case in CASES:
        argv = case.argv(SimpleNamespace(**dict.fromkeys(("root", "synth", "images", "sj", "split", "ckpt", "store", "other", "store_image", "val_mask", "val_image"), Path("x")), refer=[], train_args=[]), Path("t"))  # fmt: skip
        tried.add(argv[0] if argv[0] not in ("data", "proposals", "model") else " ".join(argv[:2]))
    assert commands <= tried, sorted(commands - tried)

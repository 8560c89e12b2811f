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


# issue 30 (starts, disks, options and logs): setups of its rows


def truncated_image_copy(w: SimpleNamespace, t: Path) -> None:
    """Setup: the tiny set copied to ``t/synth``, the unlabeled image the stores begin with
    cut to half its bytes (a truncated download)."""
    shutil.copytree(w.synth, t / "synth")
    path = t / "synth" / "images" / "synthref" / w.index.images[w.store_image].file_name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def relative_data_checkpoint(w: SimpleNamespace, t: Path) -> None:
    """Setup: ``t/rel.pt``, the checkpoint as `semires train` run in another folder keeps it:
    its dataset a relative path (``data.ann: elsewhere/anns.json``)."""
    ckpt = torch.load(w.ckpt, map_location="cpu", weights_only=True)
    ckpt["config"]["data"].update(format="semires", ann="elsewhere/anns.json", root=None)
    torch.save(ckpt, t / "rel.pt")


class HeldPort:
    """Setup: a port of 127.0.0.1 in use (written to ``t/port``) until released."""

    def __init__(self, w: SimpleNamespace, t: Path) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        (t / "port").write_text(str(self.sock.getsockname()[1]))

    def release(self) -> None:
        self.sock.close()


def serve_cmd(*extra: str) -> Callable[[SimpleNamespace, Path], list[str]]:
    def argv(w, t):
        port = (t / "port").read_text() if (t / "port").is_file() else "7860"
        return ["serve", "--checkpoint", str(w.ckpt), "--port", port, "--device", "cpu", *extra]

    return argv


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
    Case("import-missing-source", lambda w, t: ["proposals", "import", str(t / "none"), *w.refer, "--all-images", "--out", str(t / "store"), "-q"], "mask source folder not found"),
    Case("import-empty-source", lambda w, t: ["proposals", "import", str(t / "src"), *w.refer, "--all-images", "--out", str(t / "store"), "-q"], "holds no output for any of the", mkdir("src")),
    # --- issue 30: numbers, masks and checkpoints (values)
    # config numbers: finite and in range, checked at load with the key named (class 1)
    Case("train-weight-decay-nan", train_cmd("train.weight_decay=nan"), "config key 'train.weight_decay': expected a finite number >= 0, got nan"),
    Case("train-class-weights-nan", train_cmd("train.class_weights=[nan,1]"), "config key 'train.class_weights[0]': expected a finite number > 0, got nan"),
    Case("train-class-weight-zero", train_cmd("train.class_weights=[0,1]"), "config key 'train.class_weights[0]': expected > 0, got 0.0"),
    Case("train-lr-inf", train_cmd("train.lr=.inf"), "config key 'train.lr': expected a finite number > 0, got inf"),
    Case("train-lr-huge-int", train_cmd("train.lr=1" + "0" * 400), "config key 'train.lr': expected a finite number"),
    Case("train-poly-power-negative", train_cmd("train.poly_power=-1"), "config key 'train.poly_power': expected >= 0, got -1.0"),
    Case("train-grad-clip-zero", train_cmd("train.grad_clip=0"), "config key 'train.grad_clip': expected null or > 0, got 0.0"),
    Case("train-grad-clip-nan", train_cmd("train.grad_clip=nan"), "config key 'train.grad_clip': expected null or a finite number > 0, got nan"),
    Case("train-warmup-negative", train_cmd("train.warmup_steps=-5"), "config key 'train.warmup_steps': expected >= 0, got -5"),
    Case("train-num-workers-negative", train_cmd("data.num_workers=-1"), "config key 'data.num_workers': expected >= 0, got -1"),
    Case("train-max-val-sentences-zero", train_cmd("data.max_val_sentences=0"), "config key 'data.max_val_sentences': expected null or >= 1, got 0"),
    Case("train-seed-negative", train_cmd("seed=-1"), "config key 'seed': expected a value in [0, 4294967295], got -1"),
    Case("train-ema-nan", train_cmd("semi.ema=nan"), "config key 'semi.ema': expected a finite number in [0, 1], got nan"),
    Case("train-unsup-weight-negative", train_cmd("semi.unsup_weight=-1"), "config key 'semi.unsup_weight': expected >= 0, got -1.0"),
    Case("train-blur-sigma-zero", train_cmd("semi.augment.blur_sigma=[0,1]"), "config key 'semi.augment.blur_sigma[0]': expected > 0, got 0.0"),
    Case("train-blur-sigma-reversed", train_cmd("semi.augment.blur_sigma=[2,1]"), "config key 'semi.augment.blur_sigma': expected (min, max) with min <= max"),
    Case("train-hue-inf", train_cmd("semi.augment.hue=.inf"), "config key 'semi.augment.hue': expected a finite number in [0, 0.5], got inf"),
    Case("train-refine-tau-nan", train_cmd("semi.refine.tau=nan"), "config key 'semi.refine.tau': expected a finite number, got nan"),
    Case("train-refine-sigma2-inf", train_cmd("semi.refine.pwa_sigma2=.inf"), "config key 'semi.refine.pwa_sigma2': expected a finite number, got inf"),
    Case("train-model-dropout-nan", train_cmd("model.overrides.fusion_dropout=nan"), "config key 'model.overrides.fusion_dropout': expected a finite number, got nan"),
    Case("train-drop-path-rate", train_cmd("model.overrides.backbone_kwargs={{drop_path_rate: 2}}"), "config key 'model.overrides.backbone_kwargs.drop_path_rate': expected a value in [0, 1), got 2"),
    Case("train-override-int-too-long", train_cmd("train.epochs=" + "9" * 5000), "cannot parse the value"),
    Case("run-teacher-student-weight-decay-nan", run_cmd("teacher_student.weight_decay=nan"), "config key 'teacher_student.weight_decay': expected a finite number >= 0, got nan"),
    Case("run-burn-in-class-weights-inf", run_cmd("burn_in.class_weights=[1,.inf]"), "config key 'burn_in.class_weights[1]': expected a finite number > 0, got inf"),
    Case("run-parallel-zero", run_cmd("parallel=0"), "config key 'parallel': expected >= 1, got 0"),
    Case("run-split-seed-negative", run_cmd("split_seed=-3"), "config key 'split_seed': expected a value in [0, 4294967295], got -3"),
    Case("run-proposal-workers-zero", run_cmd("proposals.workers=0"), "config key 'proposals.workers': expected >= 1, got 0"),
    Case("run-proposal-params-inf", run_cmd("proposals.params={min_area: .inf}"), "config key 'proposals.params.min_area': expected a finite number, got inf"),
    Case("run-qualitative-negative", run_cmd("report.qualitative=-1"), "config key 'report.qualitative': expected >= 0, got -1"),
    Case("run-method-override-nan", run_cmd("method_overrides={iom: {sup_weight: .nan}}"), "config key 'method_overrides.iom.sup_weight': expected a finite number"),
    Case("run-method-override-negative", run_cmd("method_overrides={cpi: {ema: -1}}"), "config key 'method_overrides.cpi.ema': expected a value in [0, 1], got -1.0"),
    Case("run-synth-knob-nan", run_cmd("synth.overrides={clutter: .nan}"), "config key 'synth.overrides.clutter': expected a finite number, got nan"),
    # checkpoints with non-finite weights: refused where they are loaded (class 1)
    Case("predict-non-finite-checkpoint", lambda w, t: [*predict()(w, t)[:1], "--checkpoint", str(t / "nan.pt"), *predict()(w, t)[3:]], "nan.pt: the weights", lambda w, t: torch.save({**(ck := torch.load(w.ckpt, weights_only=True)), "model": {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in ck["model"].items()}}, t / "nan.pt")),
    Case("evaluate-non-finite-checkpoint", evaluate(ckpt="nan.pt"), "hold NaN or infinite values", lambda w, t: torch.save({**(ck := torch.load(w.ckpt, weights_only=True)), "model": {k: v.fill_(float("inf")) if v.is_floating_point() else v for k, v in ck["model"].items()}}, t / "nan.pt")),
    Case("train-non-finite-burn-in", train_cmd("semi.enabled=true", "semi.refine.strategy=none", "semi.burn_in={t}/nan.pt", "data.split_dir={w.split}"), "nan.pt: the weights", lambda w, t: torch.save({**(ck := torch.load(w.ckpt, weights_only=True)), "model": {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in ck["model"].items()}}, t / "nan.pt")),
    # masks checked where they are read: RLE counts, polygons, boxes (class 2)
    Case("jsonl-rle-garbage-string", stats_jsonl, "data.jsonl:3: the RLE's counts are not a valid COCO RLE string", jsonl_copy(lambda ls: ls[2].update(mask={"size": [96, 96], "counts": "garbage!!"}))),
    Case("jsonl-rle-counts-1e8", stats_jsonl, "data.jsonl:3: the RLE's counts add up to 100000000 pixels, but its size 96x96 has 9216", jsonl_copy(lambda ls: ls[2].update(mask={"size": [96, 96], "counts": [0, 1e8]}))),
    Case("jsonl-rle-counts-short", stats_jsonl, "data.jsonl:2: the RLE's counts add up to 100 pixels", jsonl_copy(lambda ls: ls[1].update(mask={"size": [96, 96], "counts": [0, 100]}))),
    Case("jsonl-rle-counts-negative", stats_jsonl, "data.jsonl:2: the RLE's counts hold a negative run length (-5)", jsonl_copy(lambda ls: ls[1].update(mask={"size": [96, 96], "counts": [-5, 9221]}))),
    Case("jsonl-rle-string-cut", stats_jsonl, "data.jsonl:4: the RLE's counts", jsonl_copy(lambda ls: ls[3].update(mask={"size": [96, 96], "counts": "_S58h200000000000I>I0"}))),
    Case("jsonl-rle-empty", stats_jsonl, "data.jsonl:4: the mask is empty", jsonl_copy(lambda ls: ls[3].update(mask={"size": [96, 96], "counts": [9216]}))),
    Case("jsonl-polygon-outside", stats_jsonl, "data.jsonl:5: polygon 0 has the point (500, 500) outside its 96x96 image", jsonl_copy(lambda ls: ls[4].update(mask=[[500, 500, 600, 500, 600, 600]]))),
    Case("jsonl-polygon-nan", stats_jsonl, "data.jsonl:5: polygon 0 has the coordinate nan", jsonl_copy(lambda ls: ls[4].update(mask=[[1, 1, float("nan"), 1, 9, 9]]))),
    Case("jsonl-bbox-nan", stats_jsonl, "data.jsonl:2: 'bbox' should be [x, y, w, h] with finite numbers and w, h >= 0, got [nan, 0, 1, 1]", jsonl_copy(lambda ls: ls[1].update(bbox=[float("nan"), 0, 1, 1]))),
    Case("jsonl-bbox-inf", stats_jsonl, "data.jsonl:2: 'bbox' should be [x, y, w, h] with finite numbers", jsonl_copy(lambda ls: ls[1].update(bbox=[0, 0, float("inf"), 1]))),
    Case("jsonl-bbox-negative-size", stats_jsonl, "data.jsonl:2: 'bbox' should be [x, y, w, h] with finite numbers and w, h >= 0", jsonl_copy(lambda ls: ls[1].update(bbox=[0, 0, -3, 1]))),
    Case("convert-jsonl-bbox-nan", lambda w, t: ["data", "convert", "--format", "jsonl", "--ann", str(t / "j" / "data.jsonl"), "--to", "semires", "--out", str(t / "c" / "a.json"), "-q"], "data.jsonl:2: 'bbox' should be", jsonl_copy(lambda ls: ls[1].update(bbox=[float("nan"), 0, 1, 1]))),
    Case("evaluate-jsonl-rle-garbage", lambda w, t: [*evaluate()(w, t), "--format", "jsonl", "--ann", str(t / "j" / "data.jsonl")], "data.jsonl:3: the RLE's counts", jsonl_copy(lambda ls: ls[2].update(mask={"size": [96, 96], "counts": "garbage!!"}))),
    Case("run-jsonl-rle-counts-1e8", run_jsonl(), "data.jsonl:3: the RLE's counts add up to 100000000 pixels", jsonl_copy(lambda ls: ls[2].update(mask={"size": [96, 96], "counts": [0, 1e8]}))),
    Case("train-jsonl-rle-garbage", train_cmd("data.format=jsonl", "data.root=null", "data.dataset=null", "data.split_by=null", "data.ann={t}/j/data.jsonl"), "data.jsonl:3: the RLE's counts", jsonl_copy(lambda ls: ls[2].update(mask={"size": [96, 96], "counts": "garbage!!"}))),
    Case("instances-rle-garbage-string", static("data", "stats", "--root", "{t}/refer", "--dataset", "synthref"), "annotations[0] (id 1): the RLE's counts are not a valid COCO RLE string", refer_copy(lambda f: (f / "instances.json").write_text(json.dumps((d := json.loads((f / "instances.json").read_text()), d["annotations"][0].update(segmentation={"size": [96, 96], "counts": "garbage!!"}))[0])))),
    Case("instances-rle-counts-1e8", static("data", "stats", "--root", "{t}/refer", "--dataset", "synthref"), "annotations[1] (id 2): the RLE's counts add up to 100000000 pixels", refer_copy(lambda f: (f / "instances.json").write_text(json.dumps((d := json.loads((f / "instances.json").read_text()), d["annotations"][1].update(segmentation={"size": [96, 96], "counts": [0, 100000000]}))[0])))),
    Case("instances-rle-other-size", static("data", "stats", "--root", "{t}/refer", "--dataset", "synthref"), "annotations[1] (id 2): the mask is 10x10 but its image is 96x96", refer_copy(lambda f: (f / "instances.json").write_text(json.dumps((d := json.loads((f / "instances.json").read_text()), d["annotations"][1].update(segmentation={"size": [10, 10], "counts": [0, 100]}))[0])))),
    Case("instances-polygon-outside", static("data", "stats", "--root", "{t}/refer", "--dataset", "synthref"), "annotations[2] (id 3): polygon 0 has the point (-40, 10) outside its 96x96 image", refer_copy(lambda f: (f / "instances.json").write_text(json.dumps((d := json.loads((f / "instances.json").read_text()), d["annotations"][2].update(segmentation=[[-40, 10, 50, 10, 50, 50]]))[0])))),
    Case("instances-bbox-nan", static("data", "stats", "--root", "{t}/refer", "--dataset", "synthref"), "annotations[0] (id 1): 'bbox' should be [x, y, w, h] with finite numbers", refer_copy(lambda f: (f / "instances.json").write_text(json.dumps((d := json.loads((f / "instances.json").read_text()), d["annotations"][0].update(bbox=[float("nan"), 1, 2, 3]))[0])))),
    Case("instances-area-inf", static("data", "stats", "--root", "{t}/refer", "--dataset", "synthref"), "annotations[0] (id 1): 'area' is inf", refer_copy(lambda f: (f / "instances.json").write_text(json.dumps((d := json.loads((f / "instances.json").read_text()), d["annotations"][0].update(area=float("inf")))[0])))),
    Case("instances-image-height-zero", static("data", "stats", "--root", "{t}/refer", "--dataset", "synthref"), "images[0]: height x width is 0x96; expected positive sizes", refer_copy(lambda f: (f / "instances.json").write_text(json.dumps((d := json.loads((f / "instances.json").read_text()), d["images"][0].update(height=0))[0])))),
    Case("train-instances-rle-garbage", train_cmd("data.root={t}/refer"), "the RLE's counts are not a valid COCO RLE string", refer_copy(lambda f: (f / "instances.json").write_text(json.dumps((d := json.loads((f / "instances.json").read_text()), d["annotations"][0].update(segmentation={"size": [96, 96], "counts": "garbage!!"}))[0])))),
    Case("sj-bbox-nan", stats_sj, "'bbox' should be [x, y, w, h] with finite numbers", lambda w, t: (ann := copy_sj(w, t)).write_text(json.dumps((d := json.loads(ann.read_text()), d["val"][0].update(bbox=[1, float("nan"), 2, 3]))[0]))),
    Case("sj-image-width-negative", stats_sj, "images[0]: height x width is 96x-1; expected positive sizes", lambda w, t: (ann := copy_sj(w, t)).write_text(json.dumps((d := json.loads(ann.read_text()), d.update(images=[{"id": 1, "file_name": "000001.png", "height": 96, "width": -1}]))[0]))),
    # resuming over another run's latest.pt: the setting that differs, before any state is loaded (class 4)
    Case("resume-other-model-settings", train_cmd("model.overrides.decoder_dim=8"), "latest.pt belongs to another run: its model.decoder_dim is 16, this run's is 8; use another output.dir", lambda w, t: (t / "out").mkdir() or shutil.copy(w.ckpt.parent / "latest.pt", t / "out" / "latest.pt")),
    Case("resume-other-frozen-stages", train_cmd("model.overrides.frozen_stages=2"), "its model.frozen_stages is 0, this run's is 2", lambda w, t: (t / "out").mkdir() or shutil.copy(w.ckpt.parent / "latest.pt", t / "out" / "latest.pt")),
    Case("resume-other-method", train_cmd("semi.enabled=true", "semi.refine.strategy=none", "semi.burn_in={w.ckpt}", "data.split_dir={w.split}"), "its semi.enabled is False, this run's is True", lambda w, t: (t / "out").mkdir() or shutil.copy(w.ckpt.parent / "latest.pt", t / "out" / "latest.pt")),
    Case("resume-other-decay-rule", train_cmd("train.decay_rule=lavt"), "its train.decay_rule is 'default', this run's is 'lavt'", lambda w, t: (t / "out").mkdir() or shutil.copy(w.ckpt.parent / "latest.pt", t / "out" / "latest.pt")),
    # --- issue 30: starts, disks, options and logs
    Case("train-val-split-unknown", train_cmd("data.val_split=nope"), "config key 'data.val_split': split 'nope' not found"),
    Case("train-test-split-unknown", train_cmd("data.test_splits=[testA, nope]"), "config key 'data.test_splits': split 'nope' not found"),
    Case("train-output-dir-is-a-file", train_cmd("output.dir={t}/f"), "config key 'output.dir': ", write("f", "x")),
    Case("train-empty-config", static("train", "-c", "{t}/empty.yaml"), "empty.yaml is empty; write the settings to change into it", write("empty.yaml", "")),
    Case("train-truncated-unlabeled-image", train_cmd("data.root={t}/synth", "semi.enabled=true", "semi.refine.strategy=cpi", "semi.burn_in={w.ckpt}", "semi.proposals={w.store}", "data.split_dir={w.split}"), "the file is truncated or damaged", truncated_image_copy),
    Case("run-sam-without-checkpoint", run_cmd("proposals.generator=sam"), "config key 'proposals.params.checkpoint': generator 'sam' needs a checkpoint file"),
    Case("run-sam-checkpoint-missing", run_cmd("proposals.generator=sam", "proposals.params={checkpoint: none.pth}"), "sam checkpoint not found: none.pth"),
    Case("run-generator-unknown", run_cmd("proposals.generator=magic"), "config key 'proposals' (generator 'magic')"),
    Case("run-generator-knob-unknown", run_cmd("proposals.params={bogus: 1}"), "unknown option(s) bogus for generator 'classical'"),
    Case("run-proposal-store-missing", run_cmd("proposals.store=none-store"), "config key 'proposals.store': no proposal store at none-store"),
    Case("run-backbone-weights-missing", run_cmd("model.overrides={backbone_weights: none.pth}"), "backbone weights file not found: none.pth"),
    Case("run-burn-in-checkpoint-missing", run_cmd("burn_in_checkpoint=none.pt"), "config key 'burn_in_checkpoint': checkpoint not found: none.pt"),
    Case("run-val-split-unknown", run_cmd("data.val_split=nope"), "config key 'data.val_split': split 'nope' is not a synthetic split"),
    Case("run-test-split-unknown", run_cmd("data.test_splits=[testA, nope]"), "config key 'data.test_splits': split 'nope' is not a synthetic split"),
    Case("run-synth-preset-unknown", run_cmd("synth.preset=nope"), "config key 'synth': unknown synthetic preset 'nope'"),
    Case("run-synth-knob-unknown", run_cmd("synth.overrides={bogus: 1}"), "config key 'synth': unknown synthetic knob 'bogus'"),
    Case("run-out-is-a-file", static("run", "--preset", "demo", "-q", "--out", "{t}/f"), "/f: is a file; expected a folder", write("f", "x")),
    Case("run-empty-config", static("run", "-c", "{t}/empty.yaml"), "empty.yaml is empty", write("empty.yaml", "# nothing yet\n")),
    Case("split-out-is-a-file", lambda w, t: ["data", "split", "--labeled", "10%", "--out", str(t / "f"), *w.refer], "is a file; expected a folder", write("f", "x")),
    Case("split-out-under-a-file", lambda w, t: ["data", "split", "--labeled", "10%", "--out", str(t / "f" / "s"), *w.refer], "f is a file; expected a folder", write("f", "x")),
    Case("split-semires-json-under-a-file", lambda w, t: ["data", "split", "--labeled", "10%", "--out", str(t / "s"), "--semires-json", str(t / "f" / "a.json"), *w.refer], "--semires-json", write("f", "x")),
    Case("evaluate-pred-dir-is-a-file", lambda w, t: [*evaluate()(w, t), "--pred-dir", str(t / "f")], "--pred-dir", write("f", "x")),
    Case("evaluate-gt-dir-is-a-file", lambda w, t: [*evaluate()(w, t), "--gt-dir", str(t / "f")], "--gt-dir", write("f", "x")),
    Case("evaluate-relative-data-path", evaluate(ckpt="rel.pt"), "keeps data.ann 'elsewhere/anns.json', relative to the folder it was trained in", relative_data_checkpoint),
    Case("serve-host-unresolvable", serve_cmd("--host", "no-such-host.invalid"), "--host 'no-such-host.invalid': cannot resolve"),
    Case("serve-host-not-this-machine", serve_cmd("--host", "192.0.2.1"), "--host '192.0.2.1': cannot serve on it"),
    Case("serve-port-in-use", serve_cmd(), "already in use on 127.0.0.1", HeldPort),
    # --- issue 30, class 8: the paper's path as a cluster user runs it
    Case("quality-split-dir-missing", quality("--split-dir", "no-such-split"), "no-such-split"),
    Case("quality-split-dir-of-another-split", lambda w, t: [*quality("--split", "val")(w, t), "--split-dir", str(w.split)], "divides split 'train', not 'val'"),
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

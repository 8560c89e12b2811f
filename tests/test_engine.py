"""The training engine end to end on the tiny synthetic preset with the test-tiny model.

Covers supervised training, exact resume after a crash, NaN-loss handling, the teacher-student
stage with refinement, evaluation / prediction, and a 2-process gloo DDP run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from semires.data import DataSpec, load_index
from semires.errors import CheckpointError, DataError, ProposalError
from semires.runtime.checkpoint import load_checkpoint
from semires.train import teacher_student as ts_mod
from semires.train.config import load_config
from semires.train.engine import Trainer, TrainingError, train

BASE = [
    "data.dataset=synthref",
    "data.split_by=synth",
    "data.img_size=64",
    "data.test_splits=[testA]",
    "data.cache_images=true",
    "model.name=test-tiny",
    "train.epochs=2",
    "train.steps_per_epoch=3",
    "train.batch_size=4",
    "train.lr=1e-3",
    "train.eval_batch_size=32",
    "train.num_panels=2",
]


def make_cfg(root: Path, out: Path, *extra: str):
    return load_config(None, [f"data.root={root}", f"output.dir={out}", *BASE, *extra])


def semi_args(burn_in: Path, split_dir: Path, props: Path | None, *semi: str) -> list[str]:
    """The overrides of a teacher-student run from ``burn_in`` (``semi.<key>=<value>`` for each
    of ``semi``)."""
    args = [f"semi.burn_in={burn_in}", f"data.split_dir={split_dir}", "semi.enabled=true"]
    if props is not None:
        args += ["semi.unlabeled_batch_size=4", f"semi.proposals={props}"]
    return args + [f"semi.{kv}" for kv in semi]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


@pytest.fixture(scope="module")
def supervised_run(synth_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "sup"
    result = train(make_cfg(synth_tiny, out), progress=False)
    return out, result


def test_supervised_run_writes_everything(supervised_run):
    out, result = supervised_run
    for name in (
        "config.yaml",
        "latest.pt",
        "best.pt",
        "metrics.json",
        "history.json",
        "train.log",
    ):
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"val", "testA"}
    for m in metrics["splits"].values():
        assert 0.0 <= m["oIoU"] <= 100.0 and 0.0 <= m["mIoU"] <= 100.0
        assert set(m["precision"]) == {"0.5", "0.6", "0.7", "0.8", "0.9"}
        assert m["n"] > 0 and m["protocol"] == "lavt"
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["step"] == 6
    assert history[-1]["lr"] < history[0]["lr"]  # poly schedule decays
    best = result["best"]
    assert best["metric"] == "oIoU" and best["epoch"] in (1, 2)
    assert best["score"] == max(h["val_oIoU"] for h in history)
    latest = load_checkpoint(out / "latest.pt")
    assert latest["step"] == 6 and "optimizer" in latest and "rng" in latest


def test_rerun_of_finished_run_resumes_without_training(supervised_run, synth_tiny):
    out, result = supervised_run
    before = weights(out / "latest.pt")
    again = train(make_cfg(synth_tiny, out), progress=False)
    assert again["splits"] == result["splits"]
    after = weights(out / "latest.pt")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_after_a_crash_is_exact(synth_tiny, tmp_path, monkeypatch, supervised_run):
    ref_out, ref_result = supervised_run
    out = tmp_path / "crash"
    cfg = make_cfg(synth_tiny, out, "train.checkpoint_every=2")
    real_step = Trainer.train_step

    def crashing_step(self, *args, **kwargs):
        if self.step == 4:  # killed during step 5; latest.pt was written at steps 2, 3 and 4
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    assert load_checkpoint(out / "latest.pt")["step"] == 4  # mid-epoch 2 (3 steps/epoch)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    result = train(cfg, progress=False)
    assert result["splits"] == ref_result["splits"]
    ref_w, w = weights(ref_out / "latest.pt"), weights(out / "latest.pt")
    assert ref_w.keys() == w.keys()
    assert all(torch.equal(ref_w[k], w[k]) for k in ref_w)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(
    synth_tiny, tmp_path, monkeypatch
):
    from semires.train.losses import PixelLosses

    out = tmp_path / "nan"
    cfg = make_cfg(synth_tiny, out, "train.checkpoint_every=1")
    calls = {"n": 0}

    class Flaky(PixelLosses):  # the loss is injected: the step only calls it
        def ce(self, logits, target):
            calls["n"] += 1
            loss = super().ce(logits, target)
            return loss * float("nan") if calls["n"] == 3 else loss

    losses = Flaky(torch.tensor([0.9, 1.1]))
    with pytest.raises(TrainingError, match="at step 2") as err:
        Trainer.from_config(cfg, progress=False, losses=losses).fit()
    assert "latest.pt" in str(err.value)
    assert load_checkpoint(out / "latest.pt")["step"] == 2
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_evaluate_and_predict_agree_with_score(supervised_run, synth_tiny, tmp_path):
    from semires.evaluate.evaluate import evaluate_checkpoint
    from semires.evaluate.predict import load
    from semires.evaluate.score import score_folders

    out, result = supervised_run
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    res = evaluate_checkpoint(
        out / "best.pt",
        "val",
        pred_dir=pred,
        gt_dir=gt,
        json_out=tmp_path / "e.json",
        progress=False,
    )
    assert res["metrics"]["oIoU"] == pytest.approx(result["splits"]["val"]["oIoU"])
    rescored = score_folders(pred, gt, "lavt")
    assert rescored["oIoU"] == pytest.approx(res["metrics"]["oIoU"], abs=1e-6)
    assert rescored["per_sample"] == pytest.approx(res["per_sample"])
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["split"] == "val" and len(saved["per_sample"]) == res["metrics"]["n"]

    orig = evaluate_checkpoint(out / "best.pt", "val", protocol="original", progress=False)
    assert orig["metrics"]["protocol"] == "original" and orig["metrics"]["n"] == res["metrics"]["n"]

    seg = load(out / "best.pt", device="cpu")
    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    ref = index.refs_in("val")[0]
    image = index.load_image(ref.image_id)
    mask = seg.predict(image, ref.sentences[0].raw)
    assert mask.shape == image.shape[:2] and mask.dtype == bool
    masks = seg.predict(index.image_path(ref.image_id), [s.raw for s in ref.sentences])
    assert masks.shape == (len(ref.sentences), *image.shape[:2])
    assert np.array_equal(masks[0], mask)


def test_predict_handles_unusual_image_modes_and_sentences(supervised_run, tmp_path):
    from PIL import Image

    from semires.evaluate.predict import load

    out, _ = supervised_run
    seg = load(out / "best.pt", device="cpu")
    rng = np.random.default_rng(0)
    for mode, arr in [
        ("L", rng.integers(0, 255, (40, 50), dtype=np.uint8)),
        ("RGBA", rng.integers(0, 255, (40, 50, 4), dtype=np.uint8)),
        ("I;16", rng.integers(0, 65535, (40, 50), dtype=np.uint16)),
    ]:
        path = tmp_path / f"img_{mode.replace(';', '')}.png"
        im = Image.fromarray(arr)
        assert im.mode == mode
        im.save(path)
        assert seg.predict(path, "the red circle").shape == (40, 50)
    assert seg.predict(path, "").shape == (40, 50)
    with pytest.warns(UserWarning, match="truncated"):
        seg.predict(path, " ".join(["very"] * 60) + " long sentence")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"bad\.png"):
        seg.predict(bad, "x")


def test_checkpoint_from_another_model_config_is_rejected(supervised_run, synth_tiny, tmp_path):
    out, _ = supervised_run
    common = semi_args(out / "best.pt", _split(synth_tiny, tmp_path), None, "refine.strategy=none")
    cfg = make_cfg(synth_tiny, tmp_path / "semi", "model.name=test-tiny-swin", *common)
    with pytest.raises(CheckpointError, match=r"made for another model \(backbone: checkpoint"):
        Trainer.from_config(cfg, progress=False)
    # a difference no tensor shape shows (fusion heads) is refused too, naming the key
    heads = make_cfg(synth_tiny, tmp_path / "semi2", "model.overrides.fusion_heads=2", *common)
    with pytest.raises(CheckpointError, match=r"fusion_heads: checkpoint 1, run 2"):
        Trainer.from_config(heads, progress=False)


def _split(root: Path, tmp_path: Path, ratio: str = "34%") -> Path:
    from semires.data.splits import make_split, write_split

    index = load_index(DataSpec(root=str(root), dataset="synthref", split_by="synth"))
    return write_split(make_split(index, ratio, seed=0), tmp_path / "split")


def _gt_proposals(
    root: Path, out: Path, image_ids: list[int], parts: bool = True, shift_files: int = 0
) -> Path:
    """A store whose candidates are the GT objects of each image (and their halves), with the
    fingerprints of the image files (of the file ``shift_files`` places on: made from others)."""
    from semires.proposals.base import Proposals
    from semires.proposals.store import ProposalStore, image_fingerprint

    index = load_index(DataSpec(root=str(root), dataset="synthref", split_by="synth"))
    files = [index.image_path(i) for i in image_ids]
    prints = {
        i: image_fingerprint(files[(k + shift_files) % len(files)]) for k, i in enumerate(image_ids)
    }
    store = ProposalStore.create(out, "gt-test", {"kind": "gt"})
    items = []
    for image_id in image_ids:
        masks = [index.mask(o.id) for o in index.objects.values() if o.image_id == image_id]
        if parts:
            for m in list(masks):
                half = m.copy()
                half[:, : m.shape[1] // 2] = 0
                masks.append(half)
        stack = np.stack(masks).astype(np.uint8)
        items.append((image_id, Proposals.from_masks(stack, np.ones(len(stack), np.float32))))
    store.write_shard(items, fingerprints=prints)
    return out


def test_proposals_made_from_other_image_files_are_refused(supervised_run, synth_tiny, tmp_path):
    """Same ids and sizes, other files (e.g. another synthetic seed): a clear error, not a silent
    mix; allow_proposal_mismatch accepts the store anyway."""
    out, _ = supervised_run
    split_dir = _split(synth_tiny, tmp_path)
    from semires.data.splits import read_split

    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    unl = sorted(read_split(split_dir, index).unlabeled_images)
    props = _gt_proposals(synth_tiny, tmp_path / "props", unl, shift_files=1)
    common = [
        f"semi.burn_in={out / 'best.pt'}",
        f"data.split_dir={split_dir}",
        "semi.enabled=true",
        f"semi.proposals={props}",
        "semi.refine.strategy=cpi",
    ]
    with pytest.raises(
        ProposalError,
        match=rf"{len(unl)} of the {len(unl)} images already in it were made from "
        rf"other image files \(e.g. image {unl[0]}, now .*{index.images[unl[0]].file_name}\).*"
        "--overwrite",
    ):
        Trainer.from_config(make_cfg(synth_tiny, tmp_path / "bad", *common), progress=False)
    cfg = make_cfg(synth_tiny, tmp_path / "ok", *common, "semi.allow_proposal_mismatch=true")
    assert Trainer.from_config(cfg, progress=False).method.proposals is not None


def test_teacher_student_with_refinement_logs_pseudo_label_quality(
    supervised_run, synth_tiny, tmp_path
):
    out, _ = supervised_run
    split_dir = _split(synth_tiny, tmp_path)
    from semires.data.splits import read_split

    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    unl = list(read_split(split_dir, index).unlabeled_images)
    props = _gt_proposals(synth_tiny, tmp_path / "props", unl[:-1])  # last image: missing -> error
    common = [
        f"semi.burn_in={out / 'best.pt'}",
        f"data.split_dir={split_dir}",
        "semi.enabled=true",
        "semi.unlabeled_batch_size=4",
        "semi.ema=0.9",
    ]
    with pytest.raises(ProposalError, match="no entry for 1 of"):
        Trainer.from_config(
            make_cfg(synth_tiny, tmp_path / "bad", *common, f"semi.proposals={props}"),
            progress=False,
        )

    props = _gt_proposals(synth_tiny, tmp_path / "props2", unl)
    cfg = make_cfg(
        synth_tiny,
        tmp_path / "cpi",
        *common,
        f"semi.proposals={props}",
        "semi.refine.strategy=cpi",
        "train.epochs=1",
    )
    trainer = Trainer.from_config(cfg, progress=False)
    burn = weights(out / "best.pt")
    teacher_before = {k: v.clone() for k, v in trainer.method.teacher.state_dict().items()}
    result = trainer.fit()
    hist = json.loads((tmp_path / "cpi" / "history.json").read_text())[-1]
    for key in (
        "miss_rate",
        "share_matched_cpi_u",
        "share_matched_cpi_o",
        "pl_iou_before",
        "pl_iou_after",
        "corrections_positive",
        "corrections_negative",
        "corrections_no_change",
        "loss_unsup",
    ):
        assert key in hist, key
    assert 0.0 <= hist["miss_rate"] <= 1.0
    total = (
        hist["corrections_positive"] + hist["corrections_negative"] + hist["corrections_no_change"]
    )
    assert total == pytest.approx(1.0)
    # candidates are the GT objects: whatever CPI selects overlaps GT more than a random teacher
    assert hist["pl_iou_after"] >= hist["pl_iou_before"] - 1e-9
    assert result["splits"]["val"]["n"] > 0
    # the teacher moved by EMA, away from the burn-in weights but not equal to the student
    t_after = trainer.method.teacher.state_dict()
    moved = [
        k
        for k in burn
        if t_after[k].is_floating_point() and not torch.equal(t_after[k], teacher_before[k])
    ]
    assert moved
    ck = load_checkpoint(tmp_path / "cpi" / "latest.pt")
    assert "teacher" in ck


def test_packed_candidates_train_exactly_as_bool_ones(
    supervised_run, synth_tiny, tmp_path, monkeypatch
):
    """The loader carries candidates bit-packed; the same run with bool candidates (the format
    before) ends with the same weights and the same refinement statistics, to the bit."""
    out, _ = supervised_run
    split_dir = _split(synth_tiny, tmp_path)
    from semires.data.splits import read_split

    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    unl = list(read_split(split_dir, index).unlabeled_images)
    props = _gt_proposals(synth_tiny, tmp_path / "props", unl)
    args = [
        *semi_args(out / "best.pt", split_dir, props, "refine.strategy=cpi"),
        "train.epochs=1",
    ]
    train(make_cfg(synth_tiny, tmp_path / "packed", *args), progress=False)

    class BoolCandidates(ts_mod.UnlabeledDataset):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw, packed=False)

    monkeypatch.setattr(ts_mod, "UnlabeledDataset", BoolCandidates)
    train(make_cfg(synth_tiny, tmp_path / "bool", *args), progress=False)
    a, b = weights(tmp_path / "packed" / "latest.pt"), weights(tmp_path / "bool" / "latest.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    hist = [json.loads((tmp_path / d / "history.json").read_text()) for d in ("packed", "bool")]
    assert hist[0][-1]["share_matched_cpi_u"] + hist[0][-1]["share_matched_cpi_o"] > 0
    drop = ("time", "seconds", "wall", "_per_s")
    clean = [[{k: v for k, v in r.items() if not k.endswith(drop)} for r in h] for h in hist]
    assert clean[0] == clean[1]


def test_teacher_student_without_candidates_uses_pwa(supervised_run, synth_tiny, tmp_path):
    out, _ = supervised_run
    split_dir = _split(synth_tiny, tmp_path)
    from semires.data.splits import read_split
    from semires.proposals.base import Proposals
    from semires.proposals.store import ProposalStore

    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    unl = list(read_split(split_dir, index).unlabeled_images)
    store = ProposalStore.create(tmp_path / "empty", "gt-test", {"kind": "none"})
    store.write_shard([(i, Proposals(index.image_size(i))) for i in unl])
    cfg = make_cfg(
        synth_tiny,
        tmp_path / "iom",
        f"semi.burn_in={out / 'best.pt'}",
        f"data.split_dir={split_dir}",
        "semi.enabled=true",
        "semi.unlabeled_batch_size=4",
        f"semi.proposals={tmp_path / 'empty'}",
        "semi.refine.strategy=iom",
        "train.epochs=1",
        "train.skip_eval=true",
        "train.final_val=false",
    )
    result = train(cfg, progress=False)
    assert sorted(result["splits"]) == ["testA"]  # final_val off: the test split only
    hist = json.loads((tmp_path / "iom" / "history.json").read_text())[-1]
    assert hist["miss_rate"] == 1.0 and hist["no_candidates_rate"] == 1.0
    assert hist["pl_iou_after"] == pytest.approx(hist["pl_iou_before"])


def test_training_batches_show_what_refinement_gets_and_train_nothing(
    supervised_run, synth_tiny, tmp_path
):
    """``Trainer.batches`` + the method's pseudo-labeler (bench_refine_teacher.py): the burn-in
    teacher's probabilities on the weak views, the candidates resized with them and the GT, in a
    fixed order; nothing is trained."""
    from semires.train.refine import as_bool

    out, _ = supervised_run
    split_dir = _split(synth_tiny, tmp_path)
    from semires.data.splits import read_split

    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    unl = list(read_split(split_dir, index).unlabeled_images)
    props = _gt_proposals(synth_tiny, tmp_path / "props", unl, parts=False)
    cfg = make_cfg(
        synth_tiny,
        tmp_path / "cpi",
        f"semi.burn_in={out / 'best.pt'}",
        f"data.split_dir={split_dir}",
        "semi.enabled=true",
        "semi.unlabeled_batch_size=4",
        f"semi.proposals={props}",
    )
    trainer = Trainer.from_config(cfg, progress=False)
    labeler = trainer.method.labeler
    before = {k: v.clone() for k, v in trainer.method.teacher.state_dict().items()}
    first = [(unl, labeler(unl)) for _, unl in trainer.batches(0, 2)]
    assert len(first) == 2
    for b, labels in first:
        n, h, w = labels.prob.shape
        assert n == 4 == len(b["sentence"]) and (h, w) == (64, 64)
        assert float(labels.prob.min()) >= 0.0 and float(labels.prob.max()) <= 1.0
        cands = as_bool(labels.candidates)
        assert cands.dtype == torch.bool and cands.shape[0] == n and cands.shape[2:] == (h, w)
        assert labels.valid.shape == cands.shape[:2] and labels.valid.any(1).all()
        gt = b["gt"].bool()
        assert gt.shape == (n, h, w)
        # the candidates are the images' GT objects, so one of them is each referred object
        inter = (cands & gt[:, None]).flatten(2).sum(2)
        union = (cands | gt[:, None]).flatten(2).sum(2).clamp(min=1)
        assert float((inter / union).amax(1).min()) > 0.9
    again = [(unl, labeler(unl)) for _, unl in trainer.batches(0, 2)]
    for (a, la), (b, lb) in zip(first, again, strict=True):
        assert a["sentence"] == b["sentence"] and torch.equal(la.prob, lb.prob)
    after = trainer.method.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.step == 0 and not (tmp_path / "cpi" / "latest.pt").exists()


def test_empty_labeled_split_is_an_error(synth_tiny, tmp_path):
    split_dir = _split(synth_tiny, tmp_path)
    (split_dir / "labeled.txt").write_text("# nothing\n")
    with pytest.raises(DataError):
        Trainer.from_config(
            make_cfg(synth_tiny, tmp_path / "x", f"data.split_dir={split_dir}"), progress=False
        )


def test_two_process_gloo_run_matches_single_process_evaluation(synth_tiny, tmp_path):
    out = tmp_path / "ddp"
    overrides = [
        f"data.root={synth_tiny}",
        f"output.dir={out}",
        *BASE,
        "train.epochs=1",
        "train.batch_size=2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "semires",
        "train",
        "-c",
        "synth_tiny",
        "--quiet",
        *overrides,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert load_checkpoint(out / "latest.pt")["world"] == 2
    assert load_checkpoint(out / "latest.pt")["step"] == 3
    from semires.evaluate.evaluate import evaluate_checkpoint

    single = evaluate_checkpoint(out / "best.pt", "val", progress=False)
    assert metrics["splits"]["val"]["oIoU"] == pytest.approx(single["metrics"]["oIoU"], abs=1e-6)
    assert metrics["splits"]["val"]["n"] == single["metrics"]["n"]


def test_gradient_accumulation_and_the_authors_switches(synth_tiny, tmp_path, monkeypatch):
    """grad_accum=2 feeds two micro-batches of train.batch_size per optimizer step (one epoch
    has half the steps), and the steps match one batch of twice the size where nothing depends
    on the batch (BatchNorm in eval mode); sync_bn off on CPU says so once; text_dropout off
    keeps the text encoder in eval mode while training."""
    seen: list[int] = []
    original = Trainer._micro_loss

    def record(self, batches):
        seen.append(len(batches[0]["sentence"]))
        return original(self, batches)

    monkeypatch.setattr(Trainer, "_micro_loss", record)
    common = [
        "train.steps_per_epoch=null",
        "train.epochs=1",
        "train.skip_eval=true",
        "train.lr=1e-2",
        "train.ce_mean=plain",  # equal micro-batches: the mean of their means is the batch mean
    ]
    one = Trainer.from_config(
        make_cfg(synth_tiny, tmp_path / "one", *common, "train.batch_size=4"), progress=False
    )
    two = Trainer.from_config(
        make_cfg(
            synth_tiny,
            tmp_path / "two",
            *common,
            "train.batch_size=2",
            "train.grad_accum=2",
            "train.sync_bn=true",
            "train.text_dropout=false",
        ),
        progress=False,
    )
    assert two.steps_per_epoch == one.steps_per_epoch
    two.model.train()
    assert not two.model.text.training and one.model.train().text.training
    assert (
        "train.sync_bn is off in a single process" in (tmp_path / "two" / "train.log").read_text()
    )
    one.model.text_eval = True  # no dropout in either, so the two steps are comparable
    for trainer in (one, two):  # BatchNorm frozen: the two ways compute the same gradient
        trainer.model.train()
        trainer.model.decoder.eval()
        trainer.model.train = lambda mode=True, m=trainer.model: m  # keep the eval-mode BN
    grads: list[dict[str, torch.Tensor]] = []
    for trainer in (one, two):  # the gradient the optimizer is handed
        trainer.scaler.step = lambda opt, m=trainer.model: grads.append(
            {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        )
    lab_one = list(next(iter(one.batches(0, 1))))
    seen.clear()
    one.train_step(lab_one)
    two.train_step(lab_one)
    assert seen == [4, 2, 2]
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-7, msg=name)

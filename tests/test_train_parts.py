"""Engine parts: poly schedule, EMA teacher, stateless sampling, augmentations, checkpoints, losses."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from semires.data.dataset import SampleKey, StepBatchSampler, batch_indices, collate
from semires.data.transforms import color_jitter, gaussian_blur, normalize, resize_mask
from semires.errors import CheckpointError
from semires.runtime import checkpoint as ckpt_io
from semires.train.ema import EMATeacher
from semires.train.losses import masked_ce, pixel_weighted_ce, weighted_ce
from semires.train.optim import poly_factor


def test_poly_schedule_starts_at_base_and_reaches_zero():
    total = 100
    f = [poly_factor(t, total, 0.9) for t in range(total + 1)]
    assert f[0] == 1.0
    assert f[total] == 0.0
    assert f[total - 1] == pytest.approx((1 / total) ** 0.9)
    assert all(a > b for a, b in itertools.pairwise(f))
    # the released code's bug stopped at ~54% of the base rate; ours passes 10% before the end
    assert f[int(0.9 * total)] < 0.15
    assert poly_factor(0, 10, 0.9, warmup=4) == pytest.approx(0.25)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.bn = nn.BatchNorm1d(3)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_ema_updates_params_and_float_buffers_and_copies_int_buffers():
    torch.manual_seed(0)
    student, teacher = _Net(), _Net()
    teacher.load_state_dict(student.state_dict())
    with torch.no_grad():
        for p in student.lin.parameters():
            p.add_(1.0)
        student.bn.running_mean.fill_(2.0)
        student.bn.num_batches_tracked.fill_(7)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema = EMATeacher(teacher, student, decay=0.9)
    ema.update()
    after = teacher.state_dict()
    s = student.state_dict()
    for k in ("lin.weight", "lin.bias", "bn.running_mean"):
        assert torch.allclose(after[k], 0.9 * before[k] + 0.1 * s[k])
    assert int(after["bn.num_batches_tracked"]) == 7
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not teacher.training


def test_batch_indices_are_epochs_of_permutations_and_shard_across_ranks():
    n, b = 10, 3
    cycle = [i for step in range(3) for i in batch_indices(n, b, seed=1, stream=0, step=step)]
    assert len(set(cycle)) == 9  # 3 steps x 3 = one pass without repeats
    assert batch_indices(n, b, 1, 0, 5) == batch_indices(n, b, 1, 0, 5)  # stateless
    assert batch_indices(n, b, 1, 0, 0) != batch_indices(n, b, 2, 0, 0)
    r0 = batch_indices(n, 2, 1, 0, 0, rank=0, world=2)
    r1 = batch_indices(n, 2, 1, 0, 0, rank=1, world=2)
    assert not set(r0) & set(r1)
    small = batch_indices(2, 5, 0, 0, 0)  # dataset smaller than a batch: repeated
    assert len(small) == 5 and set(small) == {0, 1}


def test_step_sampler_resumes_mid_run_exactly():
    full = list(StepBatchSampler(20, 4, 0, 0, start=0, stop=10))
    resumed = list(StepBatchSampler(20, 4, 0, 0, start=6, stop=10))
    assert resumed == full[6:]
    assert all(isinstance(k, SampleKey) for k in full[0])


def test_sample_rng_is_a_function_of_the_key():
    a = SampleKey(3, 1, 10, 2).rng(0).random()
    assert a == SampleKey(3, 1, 10, 2).rng(0).random()
    assert a != SampleKey(3, 1, 11, 2).rng(0).random()


def test_photometric_views_are_deterministic_and_pixel_aligned():
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    weak1 = gaussian_blur(img, np.random.default_rng(1), 1.0, (0.5, 1.0))
    weak2 = gaussian_blur(img, np.random.default_rng(1), 1.0, (0.5, 1.0))
    assert torch.equal(weak1, weak2) and not torch.equal(weak1, img)
    assert gaussian_blur(img, np.random.default_rng(1), 0.0, (0.5, 1.0)) is img
    jit = color_jitter(img, np.random.default_rng(2), 1.0, 0.25, 0.25, 0.25, 0.1)
    assert jit.dtype == torch.uint8 and jit.shape == img.shape and not torch.equal(jit, img)
    x = normalize(img[None], (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_resize_mask_nearest_and_collate_pads_candidates():
    m = np.zeros((4, 4), np.uint8)
    m[:2, :2] = 1
    r = resize_mask(m, 8)
    assert r.dtype == torch.bool and r.sum() == 16 and r[:4, :4].all()
    items = [
        {"candidates": torch.ones((2, 4, 4), dtype=torch.bool), "s": "a", "x": torch.zeros(2)},
        {"candidates": torch.ones((0, 4, 4), dtype=torch.bool), "s": "b", "x": torch.ones(2)},
    ]
    out = collate(items)
    assert out["candidates"].shape == (2, 2, 4, 4)
    assert out["candidates_valid"].tolist() == [[True, True], [False, False]]
    assert out["s"] == ["a", "b"] and out["x"].shape == (2, 2)


def test_losses_match_their_definitions():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 4, 4)
    target = torch.rand(2, 4, 4) > 0.5
    cw = torch.tensor([0.9, 1.1])
    ce = nn.functional.cross_entropy(logits, target.long(), reduction="none")
    w_pix = cw[target.long()]
    assert weighted_ce(logits, target, cw) == pytest.approx(
        float((ce * w_pix).sum() / w_pix.sum()), rel=1e-5
    )
    pw = torch.rand(2, 4, 4)
    assert pixel_weighted_ce(logits, target, pw, cw) == pytest.approx(
        float((ce * w_pix * pw).mean()), rel=1e-5
    )
    keep = torch.rand(2, 4, 4) > 0.3
    expect = (ce * w_pix * keep).sum() / (w_pix * keep).sum()
    assert masked_ce(logits, target, keep, cw) == pytest.approx(float(expect), rel=1e-5)
    # the SemiRES scripts' forms: a plain mean of the class-weighted CE, PWA without class weights
    assert weighted_ce(logits, target, cw, mean="plain") == pytest.approx(
        float((ce * w_pix).mean()), rel=1e-5
    )
    assert pixel_weighted_ce(logits, target, pw, None) == pytest.approx(
        float((ce * pw).mean()), rel=1e-5
    )
    assert float(weighted_ce(logits, target, cw, mean="plain")) != pytest.approx(
        float(weighted_ce(logits, target, cw)), rel=1e-4
    )


def test_split_batch_cuts_every_field():
    from semires.train.engine import split_batch

    batch = {
        "image": torch.arange(12).view(6, 2),
        "sentence": list("abcdef"),
        "mask": torch.ones(6, 3),
    }
    parts = split_batch(batch, 3)
    assert [p["sentence"] for p in parts] == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert torch.equal(torch.cat([p["image"] for p in parts]), batch["image"])
    assert split_batch(batch, 1) == [batch]
    with pytest.raises(ValueError, match="does not split"):
        split_batch(batch, 4)


def test_checkpoint_atomic_and_errors(tmp_path):
    path = tmp_path / "c.pt"
    ckpt_io.save_checkpoint(path, {"model": {"w": torch.ones(2)}})
    assert ckpt_io.load_checkpoint(path)["model"]["w"].sum() == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(CheckpointError, match="not found"):
        ckpt_io.load_checkpoint(tmp_path / "missing.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a semires checkpoint"):
        ckpt_io.load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        ckpt_io.load_checkpoint(tmp_path / "junk.pt")


def test_load_model_state_names_mismatched_parameters():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    other = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2), nn.Linear(2, 2))
    with pytest.raises(CheckpointError) as err:
        ckpt_io.load_model_state(net, other.state_dict(), "x.pt")
    msg = str(err.value)
    assert "x.pt does not match the model config" in msg and "2.bias" in msg and "\n" not in msg
    same_keys = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2))
    with pytest.raises(
        CheckpointError, match=r"3 mis-shaped keys, e\.g\. 0\.bias \(5,\) vs \(4,\)"
    ):
        ckpt_io.load_model_state(net, same_keys.state_dict(), "x.pt")


class _Unsavable:
    def __reduce__(self):
        raise RuntimeError("this object cannot be saved")


def test_atomic_write_torch_keeps_the_old_file_when_saving_fails(tmp_path):
    from semires.utils.io import atomic_write_torch

    path = tmp_path / "ck.pt"
    atomic_write_torch(path, {"w": torch.arange(3)})
    assert torch.equal(torch.load(path)["w"], torch.arange(3))
    with pytest.raises(RuntimeError, match="cannot be saved"):  # fails part-way through
        atomic_write_torch(path, {"w": torch.zeros(2), "f": _Unsavable()})
    assert torch.equal(torch.load(path)["w"], torch.arange(3))  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary left behind

"""Bit-packed candidate masks (semires.utils.bits) from the store to refinement: the layout on
hand-made masks, both code paths (numpy on CPU, the torch ops an accelerator runs, here forced
on CPU), and every refinement rule equal on packed and bool candidates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semires.data.dataset import SampleKey, UnlabeledDataset, collate, split_batch
from semires.proposals.base import Proposals
from semires.proposals.decode import decode_packed, decode_resized
from semires.proposals.store import ProposalStore
from semires.train import refine
from semires.utils import bits
from semires.utils.bits import PackedMasks


@pytest.fixture(params=["numpy", "torch"])
def path(request, monkeypatch):
    """Run a test on the numpy (CPU) path and on the torch ops of the device path."""
    if request.param == "torch":
        monkeypatch.setattr(bits, "_numpy_ok", lambda tensor: False)
    return request.param


def random_masks(seed: int, *shape: int, p: float = 0.3) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(shape) < p)


def test_layout_puts_pixel_y_x_at_bit_y_mod_64_of_word_x_y_div_64(path):
    masks = torch.zeros(3, 70, 5, dtype=torch.bool)
    masks[0, 0, 0] = True  # word (0, 0), bit 0
    masks[1, 65, 4] = True  # word (4, 1), bit 1
    masks[2, 63, 2] = True  # word (2, 0), bit 63: the sign bit of an int64
    words = bits.pack(masks)
    assert words.shape == (3, 5, 2) and words.dtype == torch.int64
    expect = torch.zeros(3, 5, 2, dtype=torch.int64)
    expect[0, 0, 0] = 1
    expect[1, 4, 1] = 2
    expect[2, 2, 0] = -(2**63)
    assert torch.equal(words, expect)


@pytest.mark.parametrize(
    "shape", [(4, 37, 29), (2, 64, 64), (3, 130, 7), (0, 16, 16), (2, 3, 1, 9)]
)
def test_pack_unpack_round_trip_and_counts(path, shape):
    masks = random_masks(0, *shape)
    words = bits.pack(masks)
    assert words.shape == (*shape[:-2], shape[-1], bits.words_per_column(shape[-2]))
    assert torch.equal(bits.unpack(words, shape[-2]), masks)
    assert torch.equal(bits.count(words), masks.flatten(-2).sum(-1))
    packed = PackedMasks.from_bool(masks)
    assert packed.shape == masks.shape and torch.equal(packed.unpack(), masks)


def test_both_paths_pack_to_the_same_words(monkeypatch):
    masks = random_masks(1, 5, 100, 33)
    numpy_words = bits.pack(masks)
    monkeypatch.setattr(bits, "_numpy_ok", lambda tensor: False)
    assert torch.equal(bits.pack(masks), numpy_words)


def test_popcount_bytes_counts_each_byte_of_negative_and_positive_words():
    words = torch.tensor([-1, 0, 0x0102040810204080, 0x7F00FF0003000001, -(2**63)])
    per_byte = bits.popcount_bytes(words).view(torch.uint8).view(5, 8)
    want = [[bin(b).count("1") for b in int(w).to_bytes(8, "little", signed=True)] for w in words]
    assert per_byte.tolist() == want


def test_and_counts_match_bool_counts_and_read_only_the_labels_columns(path):
    masks = random_masks(2, 3, 6, 50, 70)
    labels = torch.zeros(3, 50, 70, dtype=torch.bool)
    labels[0, 10:20, 30:40] = True  # a blob: only 10 columns are read on CPU
    labels[1] = random_masks(3, 50, 70)  # everywhere
    # labels[2] empty: all counts 0
    got = bits.and_counts(bits.pack(masks), bits.pack(labels))
    want = (masks & labels[:, None]).flatten(2).sum(-1)
    assert torch.equal(got, want) and got[2].eq(0).all() and got[0].gt(0).all()
    with pytest.raises(ValueError, match="do not agree"):
        bits.and_counts(bits.pack(masks), bits.pack(labels[:2]))


def test_union_of_the_selected_masks(path):
    masks = random_masks(4, 3, 5, 40, 30, p=0.1)
    selected = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    got = PackedMasks.from_bool(masks).union(selected)
    want = (masks & selected[..., None, None]).any(1)
    assert got.shape == (3, 40, 30) and torch.equal(got, want) and not got[1].any()


def _case(seed: int, batch: int, k: int, h: int, w: int):
    """Candidates with padding slots, pseudo-labels that are a candidate, noise, or empty."""
    rng = np.random.default_rng(seed)
    masks = torch.from_numpy(rng.random((batch, k, h, w)) < rng.random((batch, k, 1, 1)) * 0.3)
    valid = torch.ones(batch, k, dtype=torch.bool)
    valid[0, k // 2 :] = False
    masks[0, k // 2 :] = False
    P = masks[:, 0].clone()
    P[1] = torch.from_numpy(rng.random((h, w)) < 0.2)
    P[-1] = False
    p = torch.from_numpy(rng.random((batch, h, w))).float()
    return P, p, masks, valid


@pytest.mark.parametrize("dims", [(4, 9, 33, 47), (3, 4, 64, 64), (2, 1, 5, 70)])
def test_every_refinement_rule_is_the_same_on_packed_candidates(path, dims):
    P, p, M, valid = _case(5, *dims)
    packed = PackedMasks.from_bool(M)
    ov_bool, ov_packed = (refine.candidate_overlaps(P, m, valid) for m in (M, packed))
    assert all(torch.equal(a, b) for a, b in zip(ov_bool, ov_packed, strict=True))
    for rule in (
        lambda m: refine.iom(P, m, valid, 0.3),
        lambda m: refine.cpi(P, m, valid, 0.5, 0.5),
        lambda m: refine.cpi(P, m, valid, 0.5, 0.5, use_o=False),
        lambda m: refine.soft_iom(P, p, m, valid, 0.05),
    ):
        want, got = rule(M), rule(packed)
        assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    assert torch.equal(refine.as_bool(packed), M)


def test_no_candidates_at_all():
    P = torch.ones(2, 8, 8, dtype=torch.bool)
    empty = PackedMasks.from_bool(torch.zeros(2, 0, 8, 8, dtype=torch.bool))
    valid = torch.zeros(2, 0, dtype=torch.bool)
    result = refine.cpi(P, empty, valid)
    assert not result.matched.any() and torch.equal(result.refined, P)
    assert torch.equal(refine.iom(P, empty, valid).index, torch.tensor([-1, -1]))


def _store(tmp_path, sizes: dict[int, tuple[int, int]], k: int) -> ProposalStore:
    store = ProposalStore.create(tmp_path / "store", "test", {})
    items = []
    for image_id, (h, w) in sizes.items():
        masks = (random_masks(image_id, k, h, w, p=0.2)).numpy().astype(np.uint8)
        masks[:, : h // 3] = 0  # runs that start and end inside columns
        items.append((image_id, Proposals.from_masks(masks, np.ones(k, np.float32))))
    store.write_shard(items)
    return store


def test_the_store_decodes_packed_candidates_equal_to_bool(tmp_path):
    store = _store(tmp_path, {1: (48, 64), 2: (31, 17)}, k=6)
    for image_id in (1, 2):
        for size in (None, (40, 40), (70, 90)):
            want = store.masks(image_id, size)
            got = store.packed_masks(image_id, size)
            assert torch.equal(got.unpack(), want)
            assert torch.equal(got.area, want.flatten(1).sum(1))
        record = store._record(image_id, None)
        words = decode_packed(record.counts, record.size, (33, 65))
        assert np.array_equal(
            words, bits.pack_numpy(decode_resized(record.counts, record.size, (33, 65)))
        )


def test_the_loader_carries_packed_candidates_7x_smaller(synth_tiny, tmp_path):
    from semires.data import DataSpec, load_index

    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    refs = index.refs_in("train")[:5]
    sizes = {r.image_id: index.image_size(r.image_id) for r in refs}
    store = _store(tmp_path, sizes, k=4)
    made = {
        fmt: UnlabeledDataset(index, refs, 96, 0, proposals=store, packed=fmt == "packed")
        for fmt in ("bool", "packed")
    }
    keys = [SampleKey(i, 1, 0, i) for i in range(len(refs))]
    batches = {fmt: collate([ds[key] for key in keys]) for fmt, ds in made.items()}
    packed, plain = batches["packed"], batches["bool"]
    assert isinstance(packed["candidates"], PackedMasks)
    assert torch.equal(packed["candidates"].unpack(), plain["candidates"])
    assert torch.equal(packed["candidates_valid"], plain["candidates_valid"])
    assert torch.equal(packed["weak"], plain["weak"]) and packed["sentence"] == plain["sentence"]
    ratio = plain["candidates"].numel() / packed["candidates"].nbytes
    assert ratio == pytest.approx(96 / (8 * 2))  # 96 rows in 2 words of 8 bytes
    halves = split_batch(packed, 5)
    assert torch.equal(halves[1]["candidates"].unpack(), plain["candidates"][1:2])
    assert torch.equal(halves[1]["candidates"].area, plain["candidates"][1:2].flatten(2).sum(2))
    no_store = UnlabeledDataset(index, refs, 96, 0)
    assert no_store.candidates(refs[0].image_id).shape == (0, 96, 96)


def test_the_loader_pins_packed_candidates(monkeypatch):
    """DataLoader(pin_memory=True) pins what has a ``pin_memory`` method: the words and areas."""
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned: list[int] = []

    def fake_pin(tensor, *args, **kwargs):  # no CUDA here: record the call, copy the tensor
        pinned.append(tensor.numel())
        return tensor.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    masks = PackedMasks.from_bool(random_masks(7, 2, 3, 20, 20))
    batch = pin_memory({"candidates": masks, "sentence": ["a", "b"]})
    got = batch["candidates"]
    assert isinstance(got, PackedMasks) and torch.equal(got.unpack(), masks.unpack())
    assert sorted(pinned) == sorted([masks.words.numel(), masks.area.numel()])

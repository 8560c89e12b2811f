"""The proposal store: RLE round trip, fast resized decoding, manifest checks, damage detection."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from semires.errors import ProposalError
from semires.proposals.base import Proposals
from semires.proposals.decode import decode_resized, nearest_indices, parse_counts
from semires.proposals.store import ProposalStore, verify_store


def _random_masks(rng: np.random.Generator, k: int, h: int, w: int) -> np.ndarray:
    """Blobs plus noise: many runs, empty and full masks included."""
    masks = rng.random((k, h, w)) < rng.uniform(0.05, 0.95, size=(k, 1, 1))
    if k >= 2:
        masks[0] = False
        masks[1] = True
    return masks.astype(np.uint8)


def _props(
    rng: np.random.Generator, k: int, h: int, w: int, scores_only: bool = False
) -> Proposals:
    masks = _random_masks(rng, k, h, w)
    extra = None if scores_only else rng.random(k)
    return Proposals.from_masks(masks, rng.random(k), extra, extra)


def _counts(masks: np.ndarray) -> list[bytes]:
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    return [r["counts"] for r in rles]


# ---------------------------------------------------------------------------- decoding
def test_parse_counts_matches_run_lengths() -> None:
    # column-major runs of [[0,1],[1,1]]: 0 (1 px) then 1 (3 px)
    runs, n_runs = parse_counts(_counts(np.array([[[0, 1], [1, 1]]], np.uint8)))
    assert runs.tolist() == [1, 3] and n_runs.tolist() == [2]
    # long runs need several 5-bit chunks and negative deltas
    big = np.zeros((1, 1000, 900), np.uint8)
    big[0, 500:, 400:] = 1
    runs, _ = parse_counts(_counts(big))
    assert runs.sum() == 900_000 and runs[1::2].sum() == 500 * 500


@pytest.mark.parametrize("seed", range(4))
def test_decode_resized_equals_pycocotools_then_nearest(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(25):
        h, w = rng.integers(1, 40, size=2)
        masks = _random_masks(rng, int(rng.integers(1, 5)), h, w)
        counts = _counts(masks)
        assert np.array_equal(decode_resized(counts, (h, w)), masks.astype(bool))
        oh, ow = rng.integers(1, 60, size=2)  # down- and upsampling
        expected = masks[:, nearest_indices(h, oh)][:, :, nearest_indices(w, ow)].astype(bool)
        assert np.array_equal(decode_resized(counts, (h, w), (oh, ow)), expected)


def test_nearest_indices_is_pixel_centre_rule() -> None:
    assert nearest_indices(4, 2).tolist() == [1, 3]  # floor((i + 0.5) * 2)
    assert nearest_indices(2, 4).tolist() == [0, 0, 1, 1]
    assert nearest_indices(640, 480)[:4].tolist() == [0, 2, 3, 4]


def test_decode_rejects_counts_of_another_size() -> None:
    counts = _counts(np.ones((1, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="4x5"):
        decode_resized(counts, (4, 5))


# ---------------------------------------------------------------------------- round trip
def test_store_round_trip_is_exact(tmp_path) -> None:
    rng = np.random.default_rng(0)
    items = [(7, _props(rng, 5, 13, 17)), (3, _props(rng, 4, 9, 11, scores_only=True))]
    items.append((11, Proposals((6, 5))))  # an image without candidates
    store = ProposalStore.create(tmp_path / "s", "test", {"a": 1})
    store.write_shard(items[:2])
    store.write_shard(items[2:])
    again = ProposalStore.open(tmp_path / "s", expect_generator="test", expect_params={"a": 1})
    assert again.image_ids() == [3, 7, 11] and len(again) == 3 and 7 in again
    for image_id, props in items:
        back = again.read(image_id, expect_size=props.size)
        assert back.rles == props.rles and back.size == props.size
        for name in ("areas", "bboxes", "scores"):
            assert np.array_equal(getattr(back, name), getattr(props, name))
        for name in ("predicted_iou", "stability_score"):
            ours, theirs = getattr(back, name), getattr(props, name)
            assert (ours is None and theirs is None) or np.array_equal(ours, theirs)
        assert again.image_size(image_id) == props.size and again.count(image_id) == len(props)
        full = again.masks(image_id)
        assert full.dtype == torch.bool and tuple(full.shape) == (len(props), *props.size)
        assert np.array_equal(full.numpy(), props.masks().astype(bool))
    again.close()  # nothing read keeps a shard mapped; the next read maps it again
    assert again.read(7).rles == items[0][1].rles
    small = again.masks(7, size=(4, 6)).numpy()
    expected = items[0][1].masks()[:, nearest_indices(13, 4)][:, :, nearest_indices(17, 6)]
    assert np.array_equal(small, expected.astype(bool))
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["generator"] == "test" and manifest["params"] == {"a": 1}
    assert manifest["images"] == 3 and manifest["candidates"] == 9
    assert manifest["semires_version"]
    assert verify_store(tmp_path / "s").ok


def test_store_pickles_without_its_memory_maps(tmp_path) -> None:
    rng = np.random.default_rng(1)
    store = ProposalStore.create(tmp_path, "test", {})
    props = _props(rng, 3, 8, 8)
    store.write_shard([(1, props)])
    store.read(1)  # maps the shard
    clone = pickle.loads(pickle.dumps(store))
    assert clone.read(1).rles == props.rles


def test_index_is_rebuilt_from_shard_footers(tmp_path) -> None:
    rng = np.random.default_rng(2)
    store = ProposalStore.create(tmp_path, "test", {})
    store.write_shard([(1, _props(rng, 2, 5, 5))])
    store.write_shard([(2, _props(rng, 2, 5, 5))])
    (tmp_path / "index.json").unlink()
    reopened = ProposalStore.open(tmp_path)
    assert reopened.index_was_stale and reopened.image_ids() == [1, 2]
    reopened.write_index()
    assert not ProposalStore.open(tmp_path).index_was_stale


# ---------------------------------------------------------------------------- bad input
def test_missing_store_is_a_proposal_error(tmp_path) -> None:
    with pytest.raises(ProposalError, match="no proposal store"):
        ProposalStore.open(tmp_path / "nothing")


def test_a_folder_that_is_not_a_store_is_not_written_into(tmp_path) -> None:
    (tmp_path / "data.txt").write_text("mine")
    with pytest.raises(ProposalError, match="is not a proposal store"):
        ProposalStore.create(tmp_path, "test", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt"]


def test_other_generator_config_is_refused_unless_allowed(tmp_path) -> None:
    ProposalStore.create(tmp_path, "classical", {"scales": [30]})
    with pytest.raises(ProposalError, match="generator 'classical', not 'sam'"):
        ProposalStore.open(tmp_path, expect_generator="sam")
    with pytest.raises(ProposalError, match=r"scales: \[30\] -> \[50\]"):
        ProposalStore.open(tmp_path, expect_params={"scales": (50,)})
    with pytest.raises(ProposalError, match="other classical settings"):
        ProposalStore.create(tmp_path, "classical", {"scales": [50]})
    store = ProposalStore.open(tmp_path, "sam", {"x": 1}, allow_mismatch=True)
    assert store.generator == "classical"
    # equal after a JSON round trip (tuples vs lists) is not a mismatch
    ProposalStore.open(tmp_path, "classical", {"scales": (30,)})


def test_image_size_mismatch_names_image_and_both_sizes(tmp_path) -> None:
    store = ProposalStore.create(tmp_path, "test", {})
    store.write_shard([(5, _props(np.random.default_rng(3), 2, 6, 8))])
    with pytest.raises(ProposalError, match=r"image 5: .* size 6x8 but the image is 8x6"):
        store.read(5, expect_size=(8, 6))
    with pytest.raises(ProposalError, match="image 5"):
        store.masks(5, size=(4, 4), expect_size=(7, 8))
    report = verify_store(tmp_path, image_size={5: (8, 6)}.get)
    assert not report.ok and "stored size 6x8 but the image is 8x6" in report.problems[0]


def test_unknown_image_is_a_proposal_error(tmp_path) -> None:
    store = ProposalStore.create(tmp_path, "test", {})
    with pytest.raises(ProposalError, match="image 42 has no candidates"):
        store.read(42)


def _one_shard_store(tmp_path):
    store = ProposalStore.create(tmp_path, "test", {})
    rng = np.random.default_rng(4)
    name = store.write_shard([(1, _props(rng, 3, 10, 10)), (2, _props(rng, 3, 10, 10))])
    return tmp_path / "shards" / name


def test_corrupt_shard_is_named_and_found_by_verify(tmp_path) -> None:
    shard = _one_shard_store(tmp_path)
    data = bytearray(shard.read_bytes())
    data[60] ^= 0xFF  # inside the first record
    shard.write_bytes(bytes(data))
    store = ProposalStore.open(tmp_path)
    with pytest.raises(ProposalError, match=rf"corrupt proposal shard .*{shard.name}.*checksum"):
        store.read(1)
    report = verify_store(tmp_path)
    assert not report.ok and shard.name in report.problems[0] and "image 1" in report.problems[0]


def test_truncated_shard_is_named_and_found_by_verify(tmp_path) -> None:
    shard = _one_shard_store(tmp_path)
    shard.write_bytes(shard.read_bytes()[:-20])
    with pytest.raises(ProposalError, match=rf"{shard.name}.*truncated"):
        ProposalStore.open(tmp_path).read(2)  # the index is still fresh: found on read
    (tmp_path / "index.json").unlink()
    with pytest.raises(ProposalError, match=rf"{shard.name}.*truncated"):
        ProposalStore.open(tmp_path)  # rebuilding the index reads the footer
    report = verify_store(tmp_path)
    assert not report.ok and shard.name in report.problems[0]

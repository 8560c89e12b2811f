"""The frozen text-feature store (semires.runtime.textcache): features kept as views of their
batch tables, mapped from the file by every process that loads it; the same features after a
round trip; caches of per-sentence tensors (written before) still read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from semires.model import build_model
from semires.runtime.textcache import TextInputs, encoder_key
from semires.utils.io import atomic_write_torch

SENTENCES = [
    "the small red star left of the blue ring",
    "a ring",
    "the big green square under the yellow triangle which is striped",
    "blue",
    "the second shape from the left",
]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("test-tiny", freeze_text=True)


def fresh(model) -> TextInputs:
    text = TextInputs(model, torch.device("cpu"))
    assert text.cached
    return text


def test_a_saved_store_loads_the_same_features_mapped_from_the_file(model, tmp_path):
    made = fresh(model)
    assert made.precompute(SENTENCES) == len(SENTENCES)
    assert len({made._feats[s].untyped_storage().data_ptr() for s in SENTENCES}) == 1
    made.save(tmp_path / "feats.pt")
    loaded = fresh(model)
    assert loaded.load(tmp_path / "feats.pt")
    assert loaded.precompute(SENTENCES) == 0  # nothing to encode again
    for s in SENTENCES:
        assert torch.equal(loaded._feats[s], made._feats[s])
    storages = {loaded._feats[s].untyped_storage().data_ptr() for s in SENTENCES}
    assert len(storages) == 1  # one batch table for all five sentences, not a tensor each
    maps = Path("/proc/self/maps")
    if maps.is_file():  # Linux: the table is mapped from the file, not read into memory
        assert str(tmp_path / "feats.pt") in maps.read_text()
    got, want = loaded(SENTENCES[:2]), made(SENTENCES[:2])
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_loaded_store_grows_and_saves_everything_again(model, tmp_path):
    first = fresh(model)
    first.precompute(SENTENCES[:2])
    first.save(tmp_path / "feats.pt")
    second = fresh(model)
    second.load(tmp_path / "feats.pt")
    assert second.precompute(SENTENCES) == len(SENTENCES) - 2
    second.save(tmp_path / "feats.pt")  # over the file it maps
    third = fresh(model)
    third.load(tmp_path / "feats.pt")
    assert sorted(third._feats) == sorted(SENTENCES)
    for s in SENTENCES:
        assert torch.equal(third._feats[s], second._feats[s])


def test_a_cache_of_the_old_format_is_read(model, tmp_path):
    made = fresh(model)
    made.precompute(SENTENCES)
    old = {"key": encoder_key(model), "features": {s: made._feats[s].clone() for s in SENTENCES}}
    atomic_write_torch(tmp_path / "old.pt", old)
    loaded = fresh(model)
    assert loaded.load(tmp_path / "old.pt")
    assert all(torch.equal(loaded._feats[s], made._feats[s]) for s in SENTENCES)


def test_a_cache_of_another_encoder_or_unreadable_is_ignored(model, tmp_path, caplog):
    made = fresh(model)
    made.precompute(SENTENCES)
    made.save(tmp_path / "feats.pt")
    data = torch.load(tmp_path / "feats.pt", weights_only=True)
    atomic_write_torch(tmp_path / "other.pt", {**data, "key": "another"})
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    for name, needle in (("other.pt", "another text encoder"), ("bad.pt", "unreadable")):
        loaded = fresh(model)
        assert not loaded.load(tmp_path / name)
        assert not loaded._feats and needle in caplog.text

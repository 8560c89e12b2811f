"""Per-split statistics, checked against hand-computed values of the toy index."""

from __future__ import annotations

from pathlib import Path

import pytest

from semires.data.semires_json import read_semires_json, write_semires_json
from semires.data.stats import area_quantiles, compute_stats, format_stats
from test_refer import make_index


def test_counts_and_lengths() -> None:
    stats = compute_stats(make_index())
    assert list(stats["splits"]) == ["train", "val", "testA"]
    train, val, test_a = (stats["splits"][s] for s in ("train", "val", "testA"))
    # train: refs 100 (image 1) and 103 (image 3); sentences of 5, 2 and 2 words
    assert (train["images"], train["refs"], train["sentences"]) == (2, 2, 3)
    assert train["mean_sentence_length"] == pytest.approx(3.0)
    assert val["mean_sentence_length"] == 2.0  # "Bear, right": punctuation is not a word
    assert (test_a["images"], test_a["refs"], test_a["sentences"]) == (1, 1, 1)
    assert stats["dataset"] == "toy" and stats["notes"] == []


def test_mask_area_quantiles() -> None:
    splits = compute_stats(make_index())["splits"]
    # train: polygon 60 px of a 20x30 image (0.1), square 64 px of 16x16 (0.25)
    q = splits["train"]["mask_area_quantiles"]
    assert q["min"] == pytest.approx(0.1) and q["max"] == pytest.approx(0.25)
    assert q["p50"] == pytest.approx(0.175) and q["p10"] == pytest.approx(0.115)
    assert splits["val"]["mask_area_quantiles"]["p50"] == pytest.approx(50 / 600)
    assert splits["testA"]["mask_area_quantiles"]["p90"] == pytest.approx(0.3)  # crowd RLE
    assert splits["train"]["masks"] == 2


def test_no_masks_option() -> None:
    stats = compute_stats(make_index(), masks=False)
    assert all(s["mask_area_quantiles"] is None for s in stats["splits"].values())
    assert any("--no-masks" in n for n in stats["notes"])


def test_absent_mask_files_are_skipped_with_a_note(tmp_path: Path) -> None:
    out = write_semires_json(make_index(), tmp_path / "a.json")
    (tmp_path / "masks" / "100.npy").unlink()
    (tmp_path / "masks" / "101.npy").unlink()
    stats = compute_stats(read_semires_json(out))
    assert stats["splits"]["val"]["mask_area_quantiles"] is None
    assert stats["splits"]["train"]["masks"] == 1
    assert stats["splits"]["train"]["mask_area_quantiles"]["p50"] == pytest.approx(0.25)
    assert stats["notes"] == [
        "train: 1 of 2 masks absent; area quantiles over the rest",
        "val: 1 of 1 masks absent; area quantiles skipped",
    ]


def test_area_quantiles_of_nothing() -> None:
    assert area_quantiles([]) is None
    assert area_quantiles([0.5])["min"] == 0.5


def test_format_stats_table() -> None:
    text = format_stats(compute_stats(make_index(), masks=False)).splitlines()
    assert text[1].split() == [
        "split", "images", "refs", "sentences", "words/sent", "area", "p10", "p50", "p90",
    ]  # fmt: skip
    assert text[3].split() == ["train", "2", "2", "3", "3.00", "-", "-", "-"]
    assert text[-1].startswith("note: masks not read")
    with_masks = format_stats(compute_stats(make_index())).splitlines()
    assert with_masks[3].split()[-3:] == ["0.1150", "0.1750", "0.2350"]

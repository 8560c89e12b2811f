"""Pseudo-labels on the right object: text-aligned flips, exclusive assignment, object-level
signals and selection (semires.data.flip, semires.train.objects)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from semires.data.dataset import LabeledDataset, SampleKey, UnlabeledDataset
from semires.data.flip import SWAPS, flip_image, flip_sentence, spatial_words
from semires.data.synth import language
from semires.errors import ConfigError
from semires.train.config import load_config
from semires.train.objects import (
    assignment_margin,
    candidate_cover,
    exclusive_candidates,
    expression_agreement,
    keep_top,
    kept_share,
    label_confidence,
    mask_agreement,
)

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def _index(root: Path):
    from semires.data import DataSpec, load_index

    return load_index(DataSpec(root=str(root), dataset="synthref", split_by="synth"))


# ---------------------------------------------------------------------------- flips
@pytest.mark.parametrize(
    ("sentence", "flipped"),
    [
        ("the leftmost star", "the rightmost star"),
        ("the star left of the blue ring", "the star right of the blue ring"),
        ("second from the Right, the box", "second from the Left, the box"),
        ("guy on RIGHT", "guy on LEFT"),
        ("bottomleft corner, left-most", "bottomright corner, right-most"),
        ("bright upright lamp on the far left", "bright upright lamp on the far right"),
        ("the circle at the top", "the circle at the top"),
        ("man in red", "man in red"),
    ],
)
def test_flip_sentence_swaps_horizontal_words_only(sentence, flipped):
    assert flip_sentence(sentence) == flipped
    assert flip_sentence(flipped) == sentence  # a flip undone by a flip
    assert spatial_words(sentence) == sum(
        a != b for a, b in zip(sentence.split(), flipped.split(), strict=True)
    )


def test_swap_table_is_an_involution_without_fixed_points():
    for word, mirror in SWAPS.items():
        assert SWAPS[mirror] == word and mirror != word
        assert ("left" in word) == ("right" in mirror)


def test_every_horizontal_phrase_of_the_synthetic_grammar_is_swapped():
    """Each wording of left / right that the generator uses becomes the other side's."""
    phrases: dict[str, set[str]] = {"left": set(), "right": set()}
    for side in phrases:
        phrases[side].update(language.RELATION_WORDS[side])
        for words in language.EXTREME_WORDS[side]:
            phrases[side].update(words)
    assert phrases["left"] and phrases["right"]
    for text in phrases["left"]:
        assert flip_sentence(text) in phrases["right"], text
    for text in phrases["right"]:
        assert flip_sentence(text) in phrases["left"], text


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is not here")
def test_real_refcoco_sentences():
    """On the SemiRES RefCOCO json: every sentence with "left" or "right" as a word changes, no
    sentence without a horizontal word does, and flipping twice gives the sentence back."""
    data = json.loads((REALDATA / "semires_refcoco" / "refcoco_1%_image.json").read_text())
    sentences = [r for entries in data.values() for e in entries for r in e["refs"]]
    assert len(sentences) > 20000
    words = re.compile(r"\b(left|right)\b", re.IGNORECASE)
    changed = 0
    for s in sentences:
        f = flip_sentence(s)
        assert flip_sentence(f) == s
        if words.search(s):
            assert f != s, s
        if f != s:
            changed += 1
            assert spatial_words(s) > 0
        else:
            assert spatial_words(s) == 0
    assert 0.2 < changed / len(sentences) < 0.6  # RefCOCO's spatial language is common


def test_labeled_flip_mirrors_image_mask_and_sentence(synth_tiny):
    index = _index(synth_tiny)
    refs = index.refs_in("train")[:6]
    plain = LabeledDataset(index, refs, 64, seed=3)
    flipped = LabeledDataset(index, refs, 64, seed=3, flip=1.0)
    never = LabeledDataset(index, refs, 64, seed=3, flip=0.0)
    for i in range(len(refs)):
        key = SampleKey(i, 0, 5, i)
        a, b, c = plain[key], flipped[key], never[key]
        assert torch.equal(b["image"], flip_image(a["image"]))
        assert torch.equal(b["gt"], flip_image(a["gt"]))
        assert b["sentence"] == flip_sentence(a["sentence"])
        assert torch.equal(c["image"], a["image"]) and c["sentence"] == a["sentence"]


def test_unlabeled_others_are_the_other_objects_of_the_image(synth_tiny):
    index = _index(synth_tiny)
    refs = index.refs_in("train")
    ds = UnlabeledDataset(index, refs, 64, 0, referents=True)
    for ref in refs:
        others = ds.others(ref)
        same = [r for r in refs if r.image_id == ref.image_id and r.object_id != ref.object_id]
        assert sorted(map(sorted, others)) == sorted(
            sorted(s.raw for s in r.sentences) for r in same
        )
    item = ds[SampleKey(0, 1, 0, 0)]
    assert item["others"] == ds.others(refs[0])
    assert "others" not in UnlabeledDataset(index, refs, 64, 0)[SampleKey(0, 1, 0, 0)]


# ---------------------------------------------------------------------------- assignment
def _masks(*rows: list[tuple[int, int]], size: int = 8) -> torch.Tensor:
    """bool [B, K, size, size]: per sample, candidates as column ranges [a, b) over all rows."""
    k = max(len(r) for r in rows)
    out = torch.zeros(len(rows), k, size, size, dtype=torch.bool)
    for b, cands in enumerate(rows):
        for j, (lo, hi) in enumerate(cands):
            out[b, j, :, lo:hi] = True
    return out


def test_candidate_cover_is_mean_probability_inside():
    M = _masks([(0, 4), (4, 8), (0, 0)])
    probs = torch.zeros(1, 2, 8, 8)
    probs[0, 0, :, :4] = 0.8
    probs[0, 1, :, 2:6] = 1.0
    cover = candidate_cover(probs, M)
    assert cover.shape == (1, 3, 2)
    assert torch.allclose(cover[0], torch.tensor([[0.8, 0.5], [0.0, 0.5], [0.0, 0.0]]).double())


def test_exclusive_assignment_gives_each_candidate_to_the_referent_covering_it_most():
    M = _masks([(0, 4), (4, 8)], [(0, 4), (4, 8)])
    valid = torch.ones(2, 2, dtype=torch.bool)
    p = torch.zeros(2, 8, 8)
    p[0, :, :4] = 0.9  # sample 0: its referent is on the left object
    p[0, :, 4:] = 0.6  # and somewhat on the right one
    p[1, :, 4:] = 0.6  # sample 1 covers only the right object, weakly
    q = torch.zeros(2, 1, 8, 8)
    q[0, 0, :, 4:] = 0.8  # the image's other referent claims the right object strongly
    q[1, 0, :, 4:] = 0.6  # a tie: the sample keeps it
    q_valid = torch.ones(2, 1, dtype=torch.bool)
    kept, margin = exclusive_candidates(p, q, q_valid, M, valid)
    assert kept.tolist() == [[True, False], [True, True]]
    assert torch.allclose(margin[0], torch.tensor([0.9, 0.6 - 0.8]).double())
    assert margin[1, 1] == 0.0
    # no other referent: every valid candidate stays, margin = own cover
    none = torch.zeros(2, 1, dtype=torch.bool)
    kept, margin = exclusive_candidates(
        p, q, none, M, valid & torch.tensor([[1, 0], [1, 1]]).bool()
    )
    assert kept.tolist() == [[True, False], [True, True]]
    assert torch.allclose(margin[0, 0], torch.tensor(0.9).double())


def test_assignment_margin_is_the_selected_candidates_mean():
    margin = torch.tensor([[0.4, -0.2, 0.8], [0.5, 0.5, 0.5]]).double()
    selected = torch.tensor([[True, True, True], [False, False, False]])
    assert torch.allclose(assignment_margin(margin, selected), torch.tensor([0.4, 0.0]).double())
    assert assignment_margin(margin, None).tolist() == [0.0, 0.0]


def test_agreement_and_confidence_signals():
    a = torch.zeros(3, 4, 4, dtype=torch.bool)
    b = a.clone()
    a[0, :2], b[0, 1:3] = True, True  # IoU 1/3
    a[1], b[1] = True, True  # identical
    # both empty: agreement 1
    assert torch.allclose(mask_agreement(a, b), torch.tensor([1 / 3, 1.0, 1.0]).double())
    labels = torch.stack([a[0], b[0], a[1]])
    owner = torch.tensor([0, 0, 1])
    assert torch.allclose(
        expression_agreement(labels, owner, 2), torch.tensor([1 / 3, 1.0]).double()
    )
    p = torch.full((3, 4, 4), 0.25)
    p[0, :2] = 0.75
    conf = label_confidence(p, a)
    assert torch.allclose(conf, torch.tensor([0.75, 0.25, 0.0]).double())


def test_selection_keeps_the_top_share_and_widens():
    signal = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.2])
    assert keep_top(signal, 0.4).tolist() == [False, True, False, True, False]
    assert keep_top(signal, 0.01).tolist() == [False, True, False, False, False]
    assert keep_top(signal, 1.0).all()
    assert kept_share(0, 300, 0.5, 1.0, 1.0) == 0.5
    assert kept_share(150, 300, 0.5, 1.0, 1.0) == pytest.approx(0.75)
    assert kept_share(300, 300, 0.5, 1.0, 0.5) == 1.0
    assert kept_share(75, 300, 0.5, 1.0, 0.5) == pytest.approx(0.75)


def test_config_checks_the_signal_needs_its_source():
    with pytest.raises(ConfigError, match=r"semi\.select\.signal.*needs semi\.consensus"):
        load_config(None, ["semi.select.signal=agreement"])
    with pytest.raises(ConfigError, match=r"semi\.select\.signal.*needs semi\.flip_view"):
        load_config(None, ["semi.select.signal=flip"])
    with pytest.raises(ConfigError, match=r"semi\.select\.start"):
        load_config(None, ["semi.select.start=0.9", "semi.select.end=0.5"])
    with pytest.raises(ConfigError, match=r"data\.flip"):
        load_config(None, ["data.flip=1.5"])
    cfg = load_config(None, ["semi.select.signal=margin", "semi.consensus=true"])
    assert cfg.semi.select.signal == "margin"


def test_flip_image_mirrors_the_last_axis():
    x = torch.arange(6).view(1, 2, 3)
    assert flip_image(x).tolist() == [[[2, 1, 0], [5, 4, 3]]]
    assert np.array_equal(flip_image(flip_image(x)).numpy(), x.numpy())


def test_student_flip_is_drawn_last_and_only_when_on(synth_tiny):
    """``semi.flip_student``: the loader marks samples whose student side is mirrored, drawn
    after everything else, so the views are the same with it on or off."""
    index = _index(synth_tiny)
    refs = index.refs_in("train")
    plain = UnlabeledDataset(index, refs, 64, 0)
    always = UnlabeledDataset(index, refs, 64, 0, flip_student=1.0)
    half = UnlabeledDataset(index, refs, 64, 0, flip_student=0.5)
    flags = []
    for i in range(len(refs)):
        key = SampleKey(i, 1, 2, i % 4)
        a, b, c = plain[key], always[key], half[key]
        assert "student_flip" not in a
        assert bool(b["student_flip"]) is True
        for x in (b, c):
            assert torch.equal(x["weak"], a["weak"]) and torch.equal(x["strong"], a["strong"])
            assert x["sentence"] == a["sentence"]
        flags.append(bool(c["student_flip"]))
    assert 0 < sum(flags) < len(flags)  # a mix at 0.5


def test_mirrored_result_flips_labels_and_weights_where_asked():
    from semires.train.refine import RefineResult

    labels = torch.zeros(2, 3, 4, dtype=torch.bool)
    labels[:, :, 0] = True  # the left column
    weights = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    r = RefineResult(labels, weights, torch.tensor([True, False]), {"x": 1})
    m = r.mirrored(torch.tensor([True, False]))
    assert m.labels[0, :, 3].all() and not m.labels[0, :, 0].any()  # mirrored: right column
    assert torch.equal(m.labels[1], labels[1])  # untouched
    assert torch.equal(m.weights[0], weights[0].flip(-1)) and torch.equal(m.weights[1], weights[1])
    assert torch.equal(m.matched, r.matched) and m.counts == r.counts

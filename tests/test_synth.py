"""The synthetic benchmark: determinism, semantics, masks vs pixels, knobs, atomic + cached output."""

from __future__ import annotations

import hashlib
import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from semires.cli import main
from semires.data import masks as mask_ops
from semires.data.index import RESIndex
from semires.data.refer import read_refer
from semires.data.synth import (
    DATASET,
    PRESETS,
    SPLIT_BY,
    SPLITS,
    Facts,
    Form,
    build,
    generate_sample,
    is_complete,
    load,
    make_config,
    read_meta,
    resolve,
    synthesize,
)
from semires.data.synth import generate as generate_mod
from semires.data.synth.catalog import BACKGROUND_RANGE, COLOURS, OBJECT_TOLERANCE, SHAPES
from semires.data.synth.config import parse_knob_args
from semires.data.synth.generate import partial_dir
from semires.data.synth.language import concepts, form_concepts, realise
from semires.data.synth.render import TINT
from semires.data.synth.semantics import (
    FALSE,
    MAYBE,
    TRUE,
    NounPhrase,
    World,
    relation_truth,
    valid_forms,
)
from semires.errors import ConfigError, DataError

SMALL = {"images_train": 4, "images_val": 2, "images_testA": 2, "images_testB": 2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` preset, seed 0."""
    return synthesize(tmp_path_factory.mktemp("synth") / "tiny", "tiny", 0)


@pytest.fixture(scope="module")
def index(tiny: Path) -> RESIndex:
    return read_refer(tiny, DATASET, SPLIT_BY)


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def by_image(index: RESIndex) -> dict[int, list]:
    """Objects of each image in drawing order."""
    out: dict[int, list] = {}
    for ob in sorted(index.objects.values(), key=lambda o: (o.image_id, o.attributes["z"])):
        out.setdefault(ob.image_id, []).append(ob)
    return out


# ---------------------------------------------------------------------- layout and determinism
def test_layout_and_meta(tiny: Path, index: RESIndex) -> None:
    cfg = PRESETS["tiny"]
    assert (tiny / DATASET / "refs(synth).p").is_file()
    assert (tiny / DATASET / "instances.json").is_file()
    pngs = sorted((tiny / "images" / DATASET).glob("*.png"))
    assert len(pngs) == sum(cfg.images(s) for s in SPLITS) == len(index.images)
    meta = read_meta(tiny)
    assert meta is not None
    assert (meta["preset"], meta["seed"], meta["version"]) == ("tiny", 0, generate_mod.VERSION)
    assert meta["config"] == cfg.to_dict()
    assert index.splits() == list(SPLITS)
    for split in SPLITS:
        assert len(index.image_ids(split)) == cfg.images(split)
        assert meta["counts"][split]["refs"] == len(index.refs_in(split))
    assert index.categories == {i + 1: s for i, s in enumerate(SHAPES)}
    image = index.load_image(next(iter(index.images)))
    assert image.shape == (cfg.image_size, cfg.image_size, 3)


def test_same_seed_same_bytes_other_seed_differs(tiny: Path, tmp_path: Path) -> None:
    again = synthesize(tmp_path / "again", "tiny", 0)
    assert digest(again) == digest(tiny)
    other = digest(synthesize(tmp_path / "other", "tiny", 1))
    same_files = [k for k, v in other.items() if digest(tiny).get(k) == v]
    assert same_files == []


def test_worker_processes_give_the_same_bytes(tmp_path: Path) -> None:
    one = synthesize(tmp_path / "one", "tiny", 5, workers=1, **SMALL)
    two = synthesize(tmp_path / "two", "tiny", 5, workers=2, **SMALL)
    assert digest(one) == digest(two)


def test_images_do_not_depend_on_other_splits() -> None:
    cfg = make_config("tiny")
    bigger = make_config("tiny", images_train=30)
    a = generate_sample(cfg, 0, "val", 1)
    b = generate_sample(bigger, 0, "val", 1)
    assert np.array_equal(a.image, b.image)


# ---------------------------------------------------------------------- expressions
def test_every_expression_resolves_to_its_object(tiny: Path, index: RESIndex) -> None:
    margin = read_meta(tiny)["margin_px"]  # type: ignore[index]
    objects = by_image(index)
    checked = 0
    for ref in index.refs.values():
        obs = objects[ref.image_id]
        facts = [Facts.from_attributes(ob.attributes) for ob in obs]
        target = [ob.id for ob in obs].index(ref.object_id)
        attrs = index.objects[ref.object_id].attributes
        forms = {e["sent_id"]: Form.from_dict(e["form"]) for e in attrs["expressions"]}
        assert sorted(forms) == sorted(s.id for s in ref.sentences)
        assert 2 <= len(ref.sentences) <= 4
        assert len({s.raw for s in ref.sentences}) == len(ref.sentences)
        for sent in ref.sentences:
            form = forms[sent.id]
            assert resolve(form, facts, margin) == target, sent.raw
            assert concepts(sent.raw) == form_concepts(form), sent.raw
            checked += 1
        first = forms[ref.sentences[0].id]
        assert first.cost == min(f.cost for f in forms.values())
    assert checked == sum(len(r.sentences) for r in index.refs.values()) > 50


def test_test_splits_policy(tiny: Path, index: RESIndex) -> None:
    """testA: attribute-only expressions; testB: refs that no attribute form can single out."""
    margin = read_meta(tiny)["margin_px"]  # type: ignore[index]
    objects = by_image(index)
    for split, need in (("testA", 0), ("testB", 1)):
        refs = index.refs_in(split)
        assert refs
        for ref in refs:
            attrs = index.objects[ref.object_id].attributes
            depths = {e["depth"] for e in attrs["expressions"]}
            assert (depths == {0}) if need == 0 else (min(depths) >= 1)
            world = World(
                [Facts.from_attributes(o.attributes) for o in objects[ref.image_id]], margin
            )
            target = [o.id for o in objects[ref.image_id]].index(ref.object_id)
            assert bool(valid_forms(world, target, max_depth=0)) == (need == 0)


def test_relations_and_ordinals_occur() -> None:
    cfg = make_config("tiny", image_size=128)
    kinds = set()
    for n in range(12):
        for d in generate_sample(cfg, 3, "train", n).described:
            kinds |= {form.kind for form, _ in d.sentences}
    assert kinds == {"attr", "extreme", "relation", "ordinal"}


# ---------------------------------------------------------------------- masks vs pixels
def test_masks_are_visible_parts_and_match_pixel_colours(index: RESIndex) -> None:
    for image_id, obs in by_image(index).items():
        image = index.load_image(image_id).astype(int)
        union = np.zeros(image.shape[:2], dtype=np.uint8)
        for ob in obs:
            mask = index.mask(ob.id)
            assert mask.any()
            assert not (union & mask).any(), "masks of one image must not overlap"
            union |= mask
            assert list(ob.bbox) == mask_ops.bbox(index.rle(ob.id))
            parts = ob.attributes["parts"]
            covered = np.zeros_like(mask)
            for part in parts:
                pm = mask_ops.decode(part["rle"])
                assert not (covered & pm).any()
                covered |= pm
                pixels = image[pm.astype(bool)]
                error = np.abs(pixels - np.array(COLOURS[part["colour"]])).max(axis=1)
                assert (error <= OBJECT_TOLERANCE).all(), (ob.id, part["role"])
            assert np.array_equal(covered, mask)
            assert len(parts) == (1 if ob.attributes["pattern"] == "plain" else 2)
        background = image[union == 0]
        lo, hi = BACKGROUND_RANGE
        assert background.min() >= lo and background.max() <= hi
        assert (background.max(axis=1) - background.min(axis=1)).max() <= 2 * TINT


def test_palette_is_separable() -> None:
    """The premise of the colour test: object colours are far apart and far from the background."""
    for (a, ca), (b, cb) in itertools.combinations(COLOURS.items(), 2):
        assert max(abs(x - y) for x, y in zip(ca, cb, strict=True)) > 2 * OBJECT_TOLERANCE, (a, b)
    lo, hi = BACKGROUND_RANGE
    for name, rgb in COLOURS.items():
        spread = max(rgb) - min(rgb)
        assert (
            spread - OBJECT_TOLERANCE > 2 * TINT
            or min(rgb) - OBJECT_TOLERANCE > hi
            or (max(rgb) + OBJECT_TOLERANCE < lo)
        ), name


def test_parts_present_when_part_probability_is_one() -> None:
    cfg = make_config("tiny", parts=1.0)
    for n in range(6):
        for ob in generate_sample(cfg, 0, "train", n).objects:
            assert ob.look.pattern != "plain" and ob.look.pattern_colour != ob.look.colour
            assert ob.visible_body.sum() > 0 and ob.visible_part.sum() > 0


def test_occlusion_when_asked_and_none_otherwise() -> None:
    def fractions(occlusion: float) -> list[float]:
        cfg = make_config("tiny", occlusion=occlusion, objects_min=3, objects_max=4)
        obs = [ob for n in range(6) for ob in generate_sample(cfg, 0, "train", n).objects]
        return [float(ob.visible.sum() / ob.full.sum()) for ob in obs]

    occluded = fractions(1.0)
    assert min(occluded) >= PRESETS["tiny"].min_visible
    assert sum(f < 1 for f in occluded) >= 3
    assert all(f == 1.0 for f in fractions(0.0))


# ---------------------------------------------------------------------- round trip
def test_round_trip_through_read_refer(tiny: Path, index: RESIndex, tmp_path: Path) -> None:
    built = build(PRESETS["tiny"], 0, tmp_path / "images")
    assert built.refs.keys() == index.refs.keys()
    for ref_id, ref in built.refs.items():
        back = index.refs[ref_id]
        assert (back.object_id, back.image_id, back.split) == (
            ref.object_id,
            ref.image_id,
            ref.split,
        )
        assert [(s.id, s.raw, s.tokens) for s in back.sentences] == [
            (s.id, s.raw, s.tokens) for s in ref.sentences
        ]
    for ob_id, ob in built.objects.items():
        assert np.array_equal(index.mask(ob_id), built.mask(ob_id))
        assert index.objects[ob_id].attributes == json.loads(json.dumps(ob.attributes))
    assert load(tiny).refs.keys() == index.refs.keys()


# ---------------------------------------------------------------------- knobs
@pytest.mark.parametrize(
    ("preset", "overrides", "expected"),
    [
        ("nope", {}, "unknown synthetic preset 'nope'; valid: demo, hard, tiny, large"),
        ("demo", {"colour": ["red"]}, "unknown synthetic knob 'colour'; valid: image_size,"),
        ("demo", {"clutter": 2}, "knob 'clutter' = 2.0 is out of range; expected 0..1"),
        ("demo", {"images_train": "many"}, "config key 'images_train': expected an integer"),
        ("demo", {"objects_min": 4, "objects_max": 3}, "knob 'objects_max' = 3 is out of range"),
        ("demo", {"colours": ["red", "teal"]}, "unknown value 'teal'; valid: red, orange,"),
        ("demo", {"relation_depth": 0}, "images_testB' > 0 needs relation_depth >= 1"),
    ],
)
def test_bad_knobs(preset: str, overrides: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(preset, **overrides)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_presets_are_valid_and_demo_is_default() -> None:
    for name in PRESETS:
        make_config(name)
    assert make_config() == PRESETS["demo"]
    demo = PRESETS["demo"]
    assert (demo.image_size, demo.images_train, demo.objects_min, demo.objects_max) == (
        128,
        800,
        2,
        5,
    )


def test_parse_knob_args() -> None:
    parsed = parse_knob_args(["--images-train", "7", "--clutter=0.25", "--colours", "red,blue"])
    assert parsed == {"images_train": 7, "clutter": 0.25, "colours": ["red", "blue"]}
    assert parse_knob_args(["--images-testA", "3"]) == {"images_testA": 3}
    with pytest.raises(ConfigError, match="unknown synth option '--nope'; knobs: --image-size"):
        parse_knob_args(["--nope", "1"])
    with pytest.raises(ConfigError, match="needs a value"):
        parse_knob_args(["--clutter"])


# ---------------------------------------------------------------------- atomic output, cache
def test_failure_midway_resumes_to_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generation stopped midway leaves only its partial folder; the rerun generates just the
    chunks not yet recorded and gives the bytes of an uninterrupted run."""
    monkeypatch.setattr(generate_mod, "CHUNK", 4)
    whole = digest(synthesize(tmp_path / "whole", "tiny", 0, **SMALL))
    calls = {"n": 0}
    real = generate_mod.generate_sample

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generate_mod, "generate_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path / "out", "tiny", 0, **SMALL)
    assert not (tmp_path / "out").exists()
    partial = partial_dir(tmp_path / "out")
    assert sorted(p.name for p in (partial / "chunks").iterdir()) == ["00000.pkl", "00001.pkl"]
    calls["n"] = -(10**6)  # no more failures; count the images generated by the rerun
    synthesize(tmp_path / "out", "tiny", 0, **SMALL)
    total = sum(make_config("tiny", **SMALL).images(s) for s in SPLITS)
    assert calls["n"] + 10**6 == total - 8  # the two recorded chunks were not generated again
    assert digest(tmp_path / "out") == whole
    assert not partial.exists()


def test_partial_build_of_other_knobs_is_started_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generate_mod, "CHUNK", 4)

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr("semires.data.refer.write_refer", failing)
        with pytest.raises(KeyboardInterrupt):
            synthesize(tmp_path / "out", "tiny", 1, **SMALL)  # every chunk recorded, seed 1
    assert len(list((partial_dir(tmp_path / "out") / "chunks").iterdir())) > 2
    out = synthesize(tmp_path / "out", "tiny", 0, **SMALL)
    assert digest(out) == digest(synthesize(tmp_path / "fresh", "tiny", 0, **SMALL))


def test_killed_run_is_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM during a parallel generation: no output appears, the recorded chunks stay, and
    the next run continues from them to a complete dataset."""
    knobs = {"images_train": 300}
    script = (
        "import sys; import semires.data.synth.generate as g; g.CHUNK = 16; "
        f"g.synthesize(sys.argv[1], 'tiny', 0, workers=2, **{knobs!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out")])
    chunks = partial_dir(tmp_path / "out") / "chunks"
    deadline = time.monotonic() + 120
    while not list(chunks.glob("*.pkl")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not (tmp_path / "out").exists()
    recorded = len(list(chunks.glob("*.pkl")))
    assert recorded >= 1
    # the rerun (here, in-process, with the same chunk size) reads the recorded chunks back
    monkeypatch.setattr(generate_mod, "CHUNK", 16)
    out = synthesize(tmp_path / "out", "tiny", 0, workers=1, **knobs)
    cfg = make_config("tiny", **knobs)
    assert is_complete(out, cfg, 0)
    index = load(out)
    for number in (0, 16 * recorded - 1, 299):
        image_id = number + 1
        expected = generate_mod._encoded_sample((cfg, 0, "train", number))
        assert (out / "images" / DATASET / index.images[image_id].file_name).read_bytes() == (
            expected.png
        )


def test_failure_keeps_previous_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = synthesize(tmp_path / "out", "tiny", 0, **SMALL)
    before = digest(out)

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr("semires.data.refer.write_refer", broken)
    with pytest.raises(OSError, match="disk full"):
        synthesize(out, "tiny", 1, **SMALL)
    assert digest(out) == before
    # the failed build waits, apart, to be resumed
    assert sorted(p.name for p in tmp_path.iterdir()) == [partial_dir(out).name, "out"]


def test_rerun_is_cached_unless_forced_or_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = synthesize(tmp_path / "out", "tiny", 0, **SMALL)
    cfg = make_config("tiny", **SMALL)
    assert is_complete(out, cfg, 0)
    assert not is_complete(out, cfg, 1)
    stamp = (out / DATASET / "synth.json").stat().st_mtime_ns
    builds = {"n": 0}
    real = generate_mod.build

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        builds["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(generate_mod, "build", counting)
    synthesize(out, "tiny", 0, **SMALL)
    assert builds["n"] == 0
    assert (out / DATASET / "synth.json").stat().st_mtime_ns == stamp
    synthesize(out, "tiny", 0, force=True, **SMALL)
    synthesize(out, "tiny", 0, **{**SMALL, "clutter": 0.9})
    assert builds["n"] == 2
    assert read_meta(out)["config"]["clutter"] == 0.9  # type: ignore[index]
    (next((out / "images" / DATASET).glob("*.png"))).unlink()
    assert not is_complete(out, make_config("tiny", **{**SMALL, "clutter": 0.9}), 0)


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing to replace it"):
        synthesize(tmp_path / "mine", "tiny", 0, **SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------------- CLI
def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d"
    args = ["data", "synth", "--out", str(out), "--preset", "tiny", "--seed", "2"]
    assert main([*args, "--images-train", "3", "--images-val", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"wrote {out} (preset tiny, seed 2)"
    rows = {line.split()[0]: line.split() for line in lines[3:7]}
    assert rows["train"][1] == "3" and rows["val"][1] == "1"
    assert read_meta(out)["config"]["images_train"] == 3  # type: ignore[index]
    assert main([*args, "--images-train", "3", "--images-val", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"cached {out}")
    assert main([*args, "--colour", "red"]) == 2
    assert "unknown synth option '--colour'" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--preset", "nope"]) == 2
    assert "unknown synthetic preset 'nope'" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--seed", "-1"]) == 2
    assert "synthetic seed -1 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------- semantics by hand
def facts(shape: str, colour: str, x: float, y: float, **kw: str) -> Facts:
    return Facts(
        shape, colour, kw.get("size", "small"), kw.get("pattern", "plain"), kw.get("pc"), x, y
    )


def test_hand_made_scene() -> None:
    scene = [
        facts("star", "red", 10, 50),
        facts("star", "red", 50, 50),
        facts("star", "red", 90, 52),
        facts("ring", "blue", 70, 50),
        facts("circle", "green", 50, 90, pattern="striped", pc="red"),
    ]
    m = 8.0
    star = NounPhrase("star")
    assert resolve(Form("attr", star), scene, m) is None
    assert resolve(Form("attr", NounPhrase("ring")), scene, m) == 3
    assert resolve(Form("extreme", star, "left"), scene, m) == 0
    assert resolve(Form("extreme", star, "right"), scene, m) == 2
    assert resolve(Form("extreme", star, "top"), scene, m) is None  # 50 vs 50 vs 52: no gap
    assert resolve(Form("ordinal", star, "left", 2), scene, m) == 1
    assert resolve(Form("ordinal", star, "left", 3), scene, m) is None  # = the rightmost
    ring = Form("attr", NounPhrase("ring"))
    assert resolve(Form("relation", star, "right", anchor=ring), scene, m) == 2
    assert resolve(Form("relation", star, "left", anchor=ring), scene, m) is None  # two of them
    # "the red circle": red is only the stripes' colour -> MAYBE -> ambiguous
    assert NounPhrase("circle", colour="red").match(scene[4]) == MAYBE
    assert resolve(Form("attr", NounPhrase("circle", colour="red")), scene, m) is None
    assert resolve(Form("attr", NounPhrase("circle", colour="green")), scene, m) == 4


def test_relation_truth_is_three_valued() -> None:
    anchor = facts("ring", "blue", 50, 50)
    assert relation_truth("left", facts("star", "red", 30, 50), anchor, 8) == TRUE
    assert relation_truth("left", facts("star", "red", 45, 50), anchor, 8) == MAYBE  # 5 px
    assert relation_truth("left", facts("star", "red", 48, 50), anchor, 8) == FALSE  # < m/3
    assert relation_truth("left", facts("star", "red", 30, 65), anchor, 8) == TRUE  # 20 vs 15
    assert relation_truth("left", facts("star", "red", 30, 90), anchor, 8) == MAYBE  # 20 vs 40
    assert relation_truth("left", facts("star", "red", 30, 120), anchor, 8) == FALSE  # far below
    assert relation_truth("above", facts("star", "red", 50, 20), anchor, 8) == TRUE
    assert relation_truth("below", facts("star", "red", 50, 20), anchor, 8) == FALSE


def test_two_tone_colours_are_named_together() -> None:
    two = facts("circle", "red", 10, 10, pattern="two-tone", pc="blue")
    assert NounPhrase("circle", colour="red").match(two) == MAYBE
    assert (
        NounPhrase("circle", colour="blue", pattern="two-tone", pattern_colour="red").match(two)
        == TRUE
    )
    form = Form(
        "attr", NounPhrase("circle", colour="red", pattern="two-tone", pattern_colour="blue")
    )
    text = realise(form, np.random.default_rng(0), concise=True)
    assert text == "the red and blue circle"
    assert concepts(text) == form_concepts(form) == {"circle", "red", "blue", "two-tone"}


def test_form_dict_round_trip() -> None:
    anchor = Form("extreme", NounPhrase("ring", size="large"), "top")
    form = Form("relation", NounPhrase("star", colour="red"), "left", anchor=anchor)
    assert Form.from_dict(json.loads(json.dumps(form.to_dict()))) == form
    assert (form.depth, form.cost) == (2, 2 + 1 + 3)

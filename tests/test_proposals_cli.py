"""``semires propose`` and ``semires proposals verify|show|quality`` on the tiny synthetic set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from semires.cli import main
from semires.proposals.store import ProposalStore


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from semires.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth"), preset="tiny", seed=0)


@pytest.fixture(scope="module")
def data(synth: Path) -> list[str]:
    return ["--root", str(synth), "--dataset", "synthref"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, data: list[str]) -> Path:
    """A classical store of the unlabeled train images of a 25 % split."""
    root = tmp_path_factory.mktemp("run")
    assert main(["data", "split", "--labeled", "25%", "--out", str(root / "split"), *data]) == 0
    out = root / "store"
    args = ["propose", *data, "--split", "train", "--split-dir", str(root / "split")]
    assert main([*args, "--workers", "2", "--shard-size", "4", "--out", str(out)]) == 0
    return out


def test_propose_writes_the_unlabeled_images(store: Path, synth: Path) -> None:
    from semires.data.refer import read_refer
    from semires.data.splits import read_split

    index = read_refer(synth, "synthref", None)
    split = read_split(store.parent / "split", index)
    opened = ProposalStore.open(store, expect_generator="classical")
    assert opened.image_ids() == sorted(split.unlabeled_images)
    for image_id in opened.image_ids():
        assert opened.image_size(image_id) == index.image_size(image_id)
        assert 1 <= opened.count(image_id) <= 100


def test_verify_show_and_quality(store: Path, data: list[str], tmp_path: Path, capsys) -> None:
    assert main(["proposals", "verify", str(store), *data]) == 0
    assert "ok:" in capsys.readouterr().out
    image_id = ProposalStore.open(store).image_ids()[0]
    figure = tmp_path / "show.png"
    assert (
        main(
            ["proposals", "show", str(store), "--image", str(image_id), "--out", str(figure), *data]
        )
        == 0
    )
    assert PILImage.open(figure).size[0] > 600  # three panels
    out_json, plot = tmp_path / "q.json", tmp_path / "q.png"
    args = ["proposals", "quality", str(store), *data, "--json", str(out_json), "--plot", str(plot)]
    assert main(args) == 0
    summary = json.loads(out_json.read_text())
    # the 3 labeled images were never proposed: left out, not "without candidates"
    assert summary["images"] == len(ProposalStore.open(store)) == 9
    assert summary["images_without_candidates"] == 0 and summary["images_not_proposed"] == 3
    assert summary["best_iou"]["mean"] > 0.8  # the tuned default on synthetic shapes
    assert plot.read_bytes()[:4] == b"\x89PNG"
    said = capsys.readouterr().out
    assert "best IoU (IOM ceiling)" in said and "(0 images without candidates)" in said
    assert "left out: 3 images of the split the store was not made for" in said
    # --split-dir: the unlabeled images of the split folder are what is counted
    args += ["--split-dir", str(store.parent / "split")]
    assert main(args) == 0
    again = json.loads(out_json.read_text())
    assert again["counted"] == f"the 9 unlabeled images of {store.parent / 'split'}"
    assert (again["images"], again["images_without_candidates"], again["images_not_proposed"]) == (9, 0, 3)  # fmt: skip
    assert again["best_iou"] == summary["best_iou"]
    capsys.readouterr()


def test_verify_names_a_corrupt_shard(store: Path, tmp_path: Path, capsys) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(store, broken)
    shard = sorted((broken / "shards").glob("*.srp"))[1]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x55
    shard.write_bytes(bytes(data))
    assert main(["proposals", "verify", str(broken)]) == 2
    err = capsys.readouterr().err
    assert shard.name in err and "problem(s)" in err


def test_show_refuses_an_image_of_another_size(
    store: Path, synth: Path, data, tmp_path, capsys
) -> None:
    import shutil

    copy = tmp_path / "synth"
    shutil.copytree(synth, copy)
    image_id = ProposalStore.open(store).image_ids()[0]
    path = sorted((copy / "images" / "synthref").iterdir())[image_id - 1]
    PILImage.fromarray(np.zeros((50, 70, 3), np.uint8)).save(path)
    args = [
        "proposals",
        "show",
        str(store),
        "--image",
        str(image_id),
        "--out",
        str(tmp_path / "x.png"),
    ]
    assert main([*args, "--root", str(copy), "--dataset", "synthref"]) == 2
    assert f"image {image_id}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--generator", "sam3"], "unknown generator 'sam3'; registered: classical, sam, sam2"),
        (["--checkpoint", "x.pth"], "generator 'classical' takes no --checkpoint"),
        (["--set", "scales=ten"], "option scales: expected int, got 'ten'"),
        ([], "--split-dir DIR"),
    ],
)
def test_propose_bad_options(data, tmp_path, capsys, extra, message) -> None:
    assert main(["propose", *data, *extra, "--out", str(tmp_path / "s")]) == 2
    assert message in capsys.readouterr().err


def test_a_store_for_other_images_is_found_and_overwritten(store: Path, tmp_path, capsys) -> None:
    """Another synthetic seed: the same image ids and sizes, other pictures."""
    import shutil

    from semires.data.synth import synthesize

    other = synthesize(tmp_path / "seed1", preset="tiny", seed=1)
    data = ["--root", str(other), "--dataset", "synthref"]
    assert main(["proposals", "verify", str(store), *data]) == 2
    assert "made from another file than" in capsys.readouterr().err
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    args = ["propose", *data, "--split", "train", "--split-dir", str(store.parent / "split")]
    assert main([*args, "--out", str(copy)]) == 2
    assert "were made from other image files" in capsys.readouterr().err
    assert main([*args, "--out", str(copy), "--overwrite"]) == 0
    assert "0 already done" in capsys.readouterr().out
    assert main(["proposals", "verify", str(copy), *data]) == 0

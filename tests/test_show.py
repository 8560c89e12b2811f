"""``semires data show``: sample grids of any dataset the readers support."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semires.cli import main
from semires.data.index import Ref, Sentence
from semires.data.refer import read_refer
from semires.data.semires_json import write_semires_json
from semires.data.show import DIM, caption, grid_size, highlight, pick_refs, render_grid
from semires.data.synth import DATASET, SPLIT_BY, synthesize
from semires.errors import DataError


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sizes = {"images_train": 3, "images_val": 3, "images_testA": 1, "images_testB": 1}
    return synthesize(tmp_path_factory.mktemp("show") / "d", "tiny", 0, **sizes)


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_grid_size_by_hand() -> None:
    # 5 cells in 4 columns -> 2 rows; a cell is 2.6 in wide, 2.6 + 0.1 + 0.36 * 2 in high
    assert grid_size(5, 4, 2, 100) == (1040, 2 * 342)
    assert grid_size(2, 4, 1, 50) == (260, 153)


def test_render_grid_writes_png_of_expected_size(data: Path, tmp_path: Path) -> None:
    index = read_refer(data, DATASET, SPLIT_BY)
    out = render_grid(index, tmp_path / "g.png", split="val", n=5, cols=2, sentences=1)
    assert png_size(out) == grid_size(5, 2, 1, 100)
    pixels = np.asarray(Image.open(out).convert("RGB"))
    assert (pixels == (0x39, 0xFF, 0x14)).all(axis=2).any()  # the outline colour is drawn


def test_pick_refs_prefers_distinct_images_and_is_seeded(data: Path) -> None:
    index = read_refer(data, DATASET, SPLIT_BY)
    picked = pick_refs(index, "train", 3, seed=0)
    assert len({r.image_id for r in picked}) == 3
    assert [r.id for r in pick_refs(index, "train", 3, seed=0)] == [r.id for r in picked]
    assert len(pick_refs(index, "train", 1000, seed=0)) == len(index.refs_in("train"))


def test_highlight_dims_outside_the_mask() -> None:
    image = np.full((2, 2, 3), 200, dtype=np.uint8)
    mask = np.array([[1, 0], [0, 0]], dtype=np.uint8)
    out = highlight(image, mask)
    assert np.allclose(out[0, 0], 200 / 255)
    assert np.allclose(out[1, 1], DIM * 200 / 255)


def test_caption_quotes_and_wraps() -> None:
    sentences = [
        Sentence.from_text(1, "the small red star left of the big blue ring"),
        Sentence.from_text(2, "x"),
    ]
    ref = Ref(1, 1, 1, 1, "val", sentences)
    assert caption(ref, 1, width=30) == "\u201cthe small red star left of\nthe big blue ring\u201d"
    assert caption(ref, 2).endswith("\n\u201cx\u201d")


def test_cli_show_synthetic_shortcut(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "grid.png"
    args = ["data", "show", "--data", str(data), "--split", "val", "--n", "3", "--out", str(out)]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert png_size(out) == grid_size(3, 4, 2, 100)


def test_cli_show_refer_and_semires_formats(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "refer.png"
    refer = ["--format", "refer", "--root", str(data), "--dataset", DATASET, "--split-by", SPLIT_BY]
    assert main(["data", "show", *refer, "--split", "train", "--n", "2", "--out", str(out)]) == 0
    assert png_size(out) == grid_size(2, 4, 2, 100)
    ann = write_semires_json(read_refer(data, DATASET, SPLIT_BY), tmp_path / "lavt" / "refs.json")
    out = tmp_path / "semires.png"
    semires = [
        "--format",
        "semires",
        "--ann",
        str(ann),
        "--image-root",
        str(data / "images" / DATASET),
    ]
    assert main(["data", "show", *semires, "--split", "testA", "--n", "1", "--out", str(out)]) == 0
    assert png_size(out) == grid_size(1, 4, 2, 100)


def test_show_errors(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = read_refer(data, DATASET, SPLIT_BY)
    with pytest.raises(DataError, match="split 'test' not found"):
        render_grid(index, tmp_path / "x.png", split="test")
    with pytest.raises(DataError, match="must be >= 1"):
        render_grid(index, tmp_path / "x.png", split="val", n=0)
    assert (
        main(["data", "show", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "x.png")])
        == 2
    )
    assert "refer data root not found" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()

"""JSON Lines: read, write, conversions to and from the other formats, unlabeled lines, bad
input, and the `semires data convert / example` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from semires.cli import main
from semires.data import DataSpec, load_index
from semires.data import masks as mask_ops
from semires.data.jsonl import read_jsonl, write_example, write_jsonl
from semires.data.refer import read_refer, write_refer
from semires.data.semires_json import mask_available, read_semires_json, write_semires_json
from semires.data.splits import make_split, read_split, write_split
from semires.data.stats import compute_stats
from semires.errors import DataError
from test_refer import make_index, small_mask

SIZES = {"photos/a.png": (6, 8), "photos/b.png": (5, 5)}


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(array).save(path)


def lines_file(tmp_path: Path, lines: list[dict | str], name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


def hand_dataset(tmp_path: Path) -> Path:
    """Two images; a PNG mask, an NPY mask, an RLE, a polygon, and two lines without a mask."""
    for name, (h, w) in SIZES.items():
        save_png(tmp_path / name, np.full((h, w, 3), 90, np.uint8))
    save_png(tmp_path / "masks" / "a1.png", small_mask(6, 8, 1, 3, 2, 5) * 255)
    np.save(tmp_path / "masks" / "b1.npy", small_mask(5, 5, 0, 2, 0, 2))
    rle = mask_ops.encode(small_mask(6, 8, 4, 6, 0, 8))
    return lines_file(
        tmp_path,
        [
            {"image": "photos/a.png", "expressions": ["man on the left", "Guy in red"], "mask": "masks/a1.png", "split": "train", "object": "a1", "category": "person"},
            {"image": "photos/b.png", "expressions": ["the cup"], "mask": "masks/b1.npy", "split": "train", "bbox": [0, 0, 2, 2]},
            "",  # blank lines are skipped, and counted
            {"image": "photos/a.png", "expressions": ["floor"], "mask": rle, "split": "val", "object": 7},
            {"image": "./photos/b.png", "expressions": ["square"], "mask": [[1, 1, 4, 1, 4, 4, 1, 4]], "split": "val"},
            {"image": "photos/b.png", "expressions": ["the dog", "a dog"], "split": "train", "category": "dog"},
            {"image": "photos/a.png", "expressions": ["sky"], "split": "test"},
        ],
    )  # fmt: skip


def test_read_one_ref_per_line(tmp_path: Path) -> None:
    path = hand_dataset(tmp_path)
    index = read_jsonl(path)
    assert sorted(index.refs) == [1, 2, 4, 5, 6, 7]  # ids are line numbers
    assert (
        index.images[1].file_name == "photos/a.png" and index.images[2].file_name == "photos/b.png"
    )
    assert (index.images[1].height, index.images[1].width) == (6, 8)  # from the file header
    assert index.refs[5].image_id == 2  # "./photos/b.png" is photos/b.png
    assert [(s.id, s.raw, s.tokens) for s in index.refs[1].sentences] == [
        (0, "man on the left", ("man", "on", "the", "left")),
        (1, "Guy in red", ("guy", "in", "red")),
    ]
    assert index.refs[2].sentences[0].id == 2 and index.refs[4].sentences[0].id == 3
    assert index.categories == {0: "", 1: "person", 2: "dog"}
    assert index.refs[1].category_id == 1 and index.refs[2].category_id == 0
    assert index.objects[1].key == "a1" and index.objects[4].key == "7"
    assert index.objects[2].bbox == (0.0, 0.0, 2.0, 2.0) and index.objects[1].bbox is None
    assert index.bbox(1) == (2.0, 1.0, 3.0, 2.0)  # from the mask
    assert index.mask(1).sum() == 6 and index.mask(2).sum() == 4
    assert index.mask(4).sum() == 16 and index.mask(5).shape == (5, 5)
    assert [index.has_mask(i) for i in sorted(index.objects)] == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]
    assert index.origins[6] == f"{path}:6"
    with pytest.raises(DataError, match=rf"{path}:6: object 6 \(image 2\) has no mask"):
        index.mask(6)


def test_stats_count_paths_lines_and_expressions(tmp_path: Path) -> None:
    stats = compute_stats(read_jsonl(hand_dataset(tmp_path)), progress=False)
    counts = {
        s: (v["images"], v["refs"], v["sentences"], v["masks"]) for s, v in stats["splits"].items()
    }
    assert counts == {"train": (2, 3, 5, 2), "val": (2, 2, 2, 2), "test": (1, 1, 1, 0)}
    assert "train: 1 of 3 refs have no mask; area quantiles over the rest" in stats["notes"]
    assert stats["splits"]["test"]["mask_area_quantiles"] is None


def test_paths_relative_to_the_given_roots(tmp_path: Path) -> None:
    path = hand_dataset(tmp_path)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    path = path.rename(moved / "data.jsonl")
    with pytest.raises(
        DataError, match=rf"{moved}/data.jsonl:1: image not found: {moved}/photos/a.png"
    ):
        read_jsonl(path)
    index = load_index(
        DataSpec(format="jsonl", ann=str(path), image_root=str(tmp_path), mask_root=str(tmp_path))
    )
    assert index.image_path(1) == tmp_path / "photos" / "a.png" and index.mask(1).sum() == 6


@pytest.mark.parametrize("masks", ["png", "npy", "rle"])
def test_write_then_read_gives_the_same_lines(tmp_path: Path, masks: str) -> None:
    index = read_jsonl(hand_dataset(tmp_path))
    out = write_jsonl(index, tmp_path / "out" / "copy.jsonl", masks=masks, progress=False)
    again = read_jsonl(out)
    assert len(again.refs) == len(index.refs)
    for a, b in zip(index.refs.values(), again.refs.values(), strict=True):
        assert (a.split, [s.raw for s in a.sentences]) == (b.split, [s.raw for s in b.sentences])
        assert index.image_path(a.image_id).resolve() == again.image_path(b.image_id).resolve()
        assert index.has_mask(a.object_id) == again.has_mask(b.object_id)
        if index.has_mask(a.object_id):
            assert np.array_equal(index.mask(a.object_id), again.mask(b.object_id))
        assert index.objects[a.object_id].key == again.objects[b.object_id].key
    first = json.loads(out.read_text().splitlines()[0])
    assert first["image"] == "../photos/a.png"  # images stay where they are
    assert first["mask"] == (
        {"size": [6, 8], "counts": index.rle(1)["counts"]} if masks == "rle" else f"masks/1.{masks}"
    )


def image_files(index, root: Path) -> None:
    """Blank image files of the index's sizes under ``root`` (make_index has none)."""
    for im in index.images.values():
        save_png(root / im.file_name, np.zeros((im.height, im.width, 3), np.uint8))


def test_refer_to_jsonl_to_refer_keeps_sentences_and_masks(tmp_path: Path) -> None:
    index = make_index()
    image_files(index, tmp_path / "imgs")
    index = index.with_image_root(tmp_path / "imgs")
    out = write_jsonl(index, tmp_path / "j" / "toy.jsonl", copy_images=True, progress=False)
    assert (tmp_path / "j" / "images" / "img_1.jpg").is_file()
    back = read_jsonl(out)
    write_refer(back, tmp_path / "r", "toy", "jsonl")
    final = read_refer(tmp_path / "r", "toy", "jsonl", image_root=out.parent)
    for a, b in zip(index.refs.values(), final.refs.values(), strict=True):
        assert [s.raw for s in a.sentences] == [s.raw for s in b.sentences]
        assert a.split == b.split and np.array_equal(
            index.mask(a.object_id), final.mask(b.object_id)
        )
        assert index.categories[a.category_id] == final.categories[b.category_id]
        assert final.objects[b.object_id].bbox == index.objects[a.object_id].bbox
    assert [o.key for o in back.objects.values()] == ["100", "101", "102", "103"]  # the ref ids


def test_unlabeled_lines_through_the_semires_json_and_not_the_refer_layout(tmp_path: Path) -> None:
    index = read_jsonl(hand_dataset(tmp_path))
    out = write_semires_json(index, tmp_path / "sj" / "a.json", progress=False)
    sj = read_semires_json(out, image_root=tmp_path)
    assert sorted(p.name for p in (tmp_path / "sj" / "masks").iterdir()) == [
        "1.npy",
        "2.npy",
        "4.npy",
        "5.npy",
    ]
    assert not mask_available(sj, 6) and sj.objects[7].bbox == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(
        DataError,
        match=r"split 'train' of .*data.jsonl: 1 of 3 refs have no mask \(first: .*data.jsonl:6: object 6",
    ):
        write_refer(index, tmp_path / "r", "d", "x")
    assert not (tmp_path / "r").exists()


def test_split_labels_the_images_whose_lines_all_have_masks(tmp_path: Path) -> None:
    index = read_jsonl(hand_dataset(tmp_path))
    split = make_split(index, "masks")
    assert split.labeled_images == (1,) and split.unlabeled_images == (2,)  # image 2: line 6
    assert [r.id for r in split.unlabeled_refs(index)] == [2, 6]
    write_split(split, tmp_path / "s")
    (tmp_path / "s" / "labeled.txt").write_text("1\n2\n")
    (tmp_path / "s" / "unlabeled.txt").write_text("")
    with pytest.raises(
        DataError, match=r"labeled.txt: labeled images \[2\] have refs without masks"
    ):
        read_split(tmp_path / "s", index)
    with pytest.raises(
        DataError, match=r"split 'test' of .*: 1 of 1 refs have no mask .*labeled images need masks"
    ):
        make_split(index, "50%", split="test")


def test_datasets_refuse_refs_without_masks(tmp_path: Path) -> None:
    from semires.data.dataset import EvalDataset, LabeledDataset, UnlabeledDataset

    index = read_jsonl(hand_dataset(tmp_path))
    with pytest.raises(
        DataError, match=r"split 'test' .*1 of 1 refs have no mask .*evaluation scores every ref"
    ):
        EvalDataset(index, "test", 32)
    assert len(EvalDataset(index, "val", 32)) == 2
    with pytest.raises(DataError, match="labeled refs need masks"):
        LabeledDataset(index, index.refs_in("train"), 32, 0)
    assert not UnlabeledDataset(index, index.refs_in("train"), 32, 0).with_gt
    assert UnlabeledDataset(index, index.refs_in("val"), 32, 0).with_gt


# ---------------------------------------------------------------------- bad input
A = {"image": "photos/a.png", "expressions": ["x"], "split": "train"}


@pytest.mark.parametrize(
    ("lines", "line", "expected"),
    [
        (['{"image": "photos/a.png",'], 1, "not valid JSON"),
        ([A, "[1, 2]"], 2, "expected a JSON object, got list"),
        ([{**A, "expresions": ["x"]}], 1, "unknown key 'expresions'"),
        ([{"expressions": ["x"], "split": "train"}], 1, "missing key 'image'"),
        ([{**A, "expressions": []}], 1, "'expressions' is empty"),
        ([{**A, "expressions": ["ok", " "]}], 1, r"expressions\[1\] is ' '; expected a non-empty string"),
        ([{**A, "expressions": "x"}], 1, "'expressions' should be list, got str"),
        ([{**A, "split": ""}], 1, "'split' is empty"),
        ([A, {**A, "image": "photos/none.png"}], 2, "image not found"),
        ([{**A, "image": "masks/junk.png"}], 1, "cannot decode image"),
        ([{**A, "mask": "masks/none.png"}], 1, "mask file not found"),
        ([{**A, "mask": "masks/big.png"}], 1, r"the mask .*big.png is 10x10 but its image is 6x8"),
        ([{**A, "mask": "masks/big.npy"}], 1, r"the mask .*big.npy is 10x10 but its image is 6x8"),
        ([{**A, "mask": {"size": [5, 5], "counts": "abc"}}], 1, "the RLE mask is 5x5 but its image is 6x8"),
        ([{**A, "mask": {"counts": "abc"}}], 1, "'mask' as COCO RLE should be"),
        ([{**A, "mask": [[1, 2, 3]]}], 1, "'mask' as polygons should be"),
        ([{**A, "mask": 3}], 1, "'mask' should be a file name"),
        ([{**A, "object": "o"}, {**A, "object": "o"}], 2, "object id 'o' is also on line 1"),
        ([{**A, "bbox": [1, 2]}], 1, r"'bbox' should be \[x, y, w, h\]"),
        ([{**A, "category": 3}], 1, "'category' should be str"),
        ([b"\xff\xfe{}"], 1, "not UTF-8 text"),
    ],
    ids=["not-json", "not-object", "unknown-key", "no-image", "no-expressions", "blank-expression", "expressions-str", "empty-split", "missing-image", "junk-image", "missing-mask", "mask-size-png", "mask-size-npy", "rle-size", "rle-shape", "polygon", "mask-type", "duplicate-object", "bbox", "category", "not-utf8"],
)  # fmt: skip
def test_bad_lines(tmp_path: Path, lines: list, line: int, expected: str) -> None:
    save_png(tmp_path / "photos" / "a.png", np.zeros((6, 8, 3), np.uint8))
    save_png(tmp_path / "masks" / "big.png", np.full((10, 10), 255, np.uint8))
    np.save(tmp_path / "masks" / "big.npy", np.ones((10, 10), np.uint8))
    (tmp_path / "masks" / "junk.png").write_bytes(b"not a png")
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join((ln if isinstance(ln, bytes) else (ln if isinstance(ln, str) else json.dumps(ln)).encode()) + b"\n" for ln in lines))  # fmt: skip
    with pytest.raises(DataError, match=expected) as err:
        read_jsonl(path)
    assert str(err.value).startswith(f"{path}:{line}: ") and "\n" not in str(err.value)


def test_empty_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="jsonl file not found"):
        read_jsonl(tmp_path / "none.jsonl")
    with pytest.raises(DataError, match="holds no lines"):
        read_jsonl(lines_file(tmp_path, ["", "  "]))
    with pytest.raises(DataError, match="is JSON Lines: read it with --format jsonl"):
        load_index(DataSpec(format="semires", ann=str(tmp_path / "x.jsonl")))


@pytest.mark.parametrize(
    ("content", "expected"),
    [(np.full((6, 8), 7, np.uint8), "expected binary values"), (np.zeros((6, 8), np.uint8), "the mask is empty")],
    ids=["non-binary", "empty"],
)  # fmt: skip
def test_mask_pixels_are_checked_when_read_and_name_the_line(
    tmp_path: Path, content, expected
) -> None:
    path = hand_dataset(tmp_path)
    np.save(tmp_path / "masks" / "b1.npy", content[:5, :5])
    index = read_jsonl(path)  # the header is fine: read at once
    with pytest.raises(DataError, match=expected) as err:
        index.mask(2)
    assert str(err.value).startswith(f"{path}:2: ")


# ---------------------------------------------------------------------- the commands
def test_convert_command_to_each_format(tmp_path: Path, capsys) -> None:
    ann = str(hand_dataset(tmp_path))
    source = ["--format", "jsonl", "--ann", ann]
    assert (
        main(
            [
                "data",
                "convert",
                *source,
                "--to",
                "jsonl",
                "--out",
                str(tmp_path / "j" / "c.jsonl"),
                "--masks",
                "rle",
                "-q",
            ]
        )
        == 0
    )
    assert (
        "wrote" in capsys.readouterr().out
        and read_jsonl(tmp_path / "j" / "c.jsonl").mask(1).sum() == 6
    )
    assert (
        main(
            [
                "data",
                "convert",
                *source,
                "--to",
                "semires",
                "--out",
                str(tmp_path / "s" / "a.json"),
                "-q",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "data",
                "convert",
                "--format",
                "semires",
                "--ann",
                str(tmp_path / "s" / "a.json"),
                "--image-root",
                str(tmp_path),
                "--to",
                "jsonl",
                "--out",
                str(tmp_path / "k.jsonl"),
                "-q",
            ]
        )
        == 0
    )
    assert not read_jsonl(tmp_path / "k.jsonl").has_mask(6)  # its mask file was absent
    assert (
        main(["data", "convert", *source, "--to", "refer", "--out", str(tmp_path / "r"), "-q"]) == 2
    )
    assert "refs have no mask" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main(["data", "stats", *source, "--json", str(tmp_path / "stats.json"), "-q"]) == 0
    assert json.loads((tmp_path / "stats.json").read_text())["splits"]["train"]["refs"] == 3  # fmt: skip


def test_example_command_writes_labeled_and_unlabeled_lines(tmp_path: Path, capsys) -> None:
    assert main(["data", "example", "--out", str(tmp_path / "ex"), "--labeled", "25%", "-q"]) == 0
    out = capsys.readouterr().out
    assert "refs have no mask" in out and "next: semires data stats --format jsonl" in out
    index = read_jsonl(tmp_path / "ex" / "data.jsonl")
    split = make_split(index, "masks")
    assert len(split.labeled_images) == 3 and len(split.unlabeled_images) == 9  # 25% of 12
    for name in ("val", "testA", "testB"):
        assert all(index.has_mask(r.object_id) for r in index.refs_in(name))
    assert (tmp_path / "ex" / "images" / "000001.png").is_file()
    first = json.loads((tmp_path / "ex" / "data.jsonl").read_text().splitlines()[0])
    assert set(first) <= {"image", "expressions", "mask", "split", "object", "bbox", "category"}
    assert main(["data", "show", "--format", "jsonl", "--ann", str(tmp_path / "ex" / "data.jsonl"), "--split", "train", "--out", str(tmp_path / "g.png")]) == 0  # fmt: skip
    assert (tmp_path / "g.png").is_file()


def test_example_is_deterministic(tmp_path: Path) -> None:
    a = write_example(tmp_path / "a", progress=False)
    b = write_example(tmp_path / "b", progress=False)
    assert a.read_text() == b.read_text()


def test_semires_run_on_a_jsonl_dataset_end_to_end(tmp_path: Path) -> None:
    """`semires run --config own_data` on the example: the labeled images are exactly those whose
    lines have masks, proposals exist for the others, and every stage reaches the report."""
    from semires.pipeline import load_run_config
    from semires.pipeline import run as run_pipeline
    from test_pipeline import TINY

    ann = write_example(tmp_path / "ex", labeled="25%", progress=False)
    overrides = [o for o in TINY if not o.startswith(("synth.", "labeled="))]
    cfg = load_run_config(
        config="own_data",
        overrides=[f"out={tmp_path / 'run'}", f"data.ann={ann}", "methods=[cpi]", *overrides],
    )
    summary = run_pipeline(cfg, progress=False)
    index = read_jsonl(ann)
    split = read_split(tmp_path / "run" / "split", index)
    with_masks = {
        i for i in index.image_ids("train")
        if all(index.has_mask(r.object_id) for r in index.refs_in("train") if r.image_id == i)
    }  # fmt: skip
    assert set(split.labeled_images) == with_masks and len(with_masks) == 3
    assert set(split.unlabeled_images) == set(index.image_ids("train")) - with_masks
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["methods"]) == {"supervised", "cpi"}
    n = sum(len(r.sentences) for s in ("testA", "testB") for r in index.refs_in(s))
    assert results["methods"]["cpi"]["testA+testB"]["n"] == n
    assert 0.0 <= results["methods"]["cpi"]["testA+testB"]["oIoU"] <= 100.0
    assert (tmp_path / "run" / "results.md").is_file() and summary


def test_a_run_whose_test_split_lacks_masks_fails_before_any_folder(tmp_path: Path) -> None:
    from semires.pipeline import load_run_config
    from semires.pipeline import run as run_pipeline

    ann = write_example(tmp_path / "ex", progress=False)
    lines = [json.loads(x) for x in ann.read_text().splitlines()]
    for line in lines:
        if line["split"] == "testB":
            line.pop("mask")
    ann.write_text("".join(json.dumps(x) + "\n" for x in lines))
    cfg = load_run_config(
        config="own_data", overrides=[f"out={tmp_path / 'run'}", f"data.ann={ann}"]
    )
    with pytest.raises(DataError, match="testB"):
        run_pipeline(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_polygon_without_an_image_size_names_the_line() -> None:
    from semires.data.index import Image, Object, Ref, RESIndex, Sentence

    index = RESIndex(
        [Image(1, "a.png", None, None)],
        [Object(3, 1, 0, None, segmentation=[[1.0, 1.0, 4.0, 1.0, 4.0, 4.0]])],
        [Ref(3, 3, 1, 0, "train", [Sentence.from_text(0, "a cup")])],
        {},
        origins={3: "data.jsonl:3"},
    )
    with pytest.raises(DataError, match=r"^data\.jsonl:3: object 3 .*polygon mask needs the size"):
        index.rle(3)

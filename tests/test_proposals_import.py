"""``semires proposals import``: SAM / SAM 2 outputs people already have, into a proposal store.

The sources are written here the way segment-anything's ``scripts/amg.py`` writes them (its
exact metadata.csv header, 0/255 PNGs, ``--convert-to-rle`` records with pycocotools RLE) for the
training images of a tiny synthetic dataset; the store must hold exactly those masks and scores,
best first, fingerprinted with the image files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from semires.cli import main
from semires.errors import ProposalError
from semires.proposals.importer import counts_problem, image_stems
from semires.proposals.store import ProposalStore, verify_store

AMG_HEADER = (
    "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,"
    "stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"
)


# ---------------------------------------------------------------------------- writing SAM outputs
def sam_masks(size: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
    """Random candidate masks (ellipses and boxes) with amg.py's per-mask numbers."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    masks = []
    for k in range(int(rng.integers(3, 7))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(4, h / 2), rng.uniform(4, w / 2)
        if k % 2:
            masks.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
        else:
            masks.append((abs(yy - cy) <= ry / 2) & (abs(xx - cx) <= rx / 2))
    stack = np.stack(masks).astype(np.uint8)
    stack[0, 0, 0] = 1  # never empty
    k = len(stack)
    return {
        "masks": stack,
        "predicted_iou": rng.uniform(0.88, 1.0, k).astype(np.float32),
        "stability_score": rng.uniform(0.95, 1.0, k).astype(np.float32),
    }


def amg_record(mask: np.ndarray, pred: float, stab: float, counts: str = "rle") -> dict:
    """One record as SamAutomaticMaskGenerator returns it (coco_rle / uncompressed_rle)."""
    rle = mask_utils.encode(np.asfortranarray(mask))
    if counts == "rle":
        segmentation = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}
    else:  # uncompressed: run lengths in column-major order
        flat = mask.flatten(order="F")
        change = np.flatnonzero(np.diff(flat)) + 1
        bounds = np.concatenate([[0], change, [flat.size]])
        runs = np.diff(bounds).tolist()
        segmentation = {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}
    return {
        "segmentation": segmentation,
        "area": int(mask.sum()),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "predicted_iou": float(pred),
        "point_coords": [[1.0, 2.0]],
        "stability_score": float(stab),
        "crop_box": [0, 0, mask.shape[1], mask.shape[0]],
    }


def write_png_output(folder: Path, made: dict) -> None:
    """amg.py's default output for one image: ``<i>.png`` (0/255) and ``metadata.csv``."""
    folder.mkdir(parents=True)
    rows = [AMG_HEADER]
    for i, mask in enumerate(made["masks"]):
        Image.fromarray(mask * 255).save(folder / f"{i}.png")
        rec = amg_record(mask, made["predicted_iou"][i], made["stability_score"][i])
        numbers = [i, rec["area"], *rec["bbox"], *rec["point_coords"][0]]
        numbers += [rec["predicted_iou"], rec["stability_score"], *rec["crop_box"]]
        rows.append(",".join(str(v) for v in numbers))
    (folder / "metadata.csv").write_text("\n".join(rows))  # amg.py: no newline at the end


def write_json_output(path: Path, made: dict, counts: str = "rle") -> None:
    """``amg.py --convert-to-rle``'s output for one image: ``<stem>.json``."""
    records = [
        amg_record(m, p, s, counts)
        for m, p, s in zip(
            made["masks"], made["predicted_iou"], made["stability_score"], strict=True
        )
    ]
    path.write_text(json.dumps(records))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A private copy of the tiny synthetic set (some tests change an image file)."""
    from semires.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth") / "tiny", preset="tiny", seed=0)


@pytest.fixture(scope="module")
def index(dataset):
    from semires.data.refer import read_refer

    return read_refer(dataset, "synthref", None)


@pytest.fixture(scope="module")
def made(index) -> dict[int, dict]:
    """The masks SAM "made" for every training image."""
    return {i: sam_masks(index.image_size(i), seed=i) for i in index.image_ids("train")}


def write_source(root: Path, index, made: dict, fmt: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for image_id, output in made.items():
        stem = index.image_path(image_id).stem
        if fmt == "amg-png":
            write_png_output(root / stem, output)
        else:
            write_json_output(
                root / f"{stem}.json", output, "list" if fmt == "uncompressed" else "rle"
            )
    return root


def import_args(dataset: Path, src: Path, out: Path, *extra: str) -> list[str]:
    data = ["--root", str(dataset), "--dataset", "synthref", "--split", "train", "--all-images"]
    return ["proposals", "import", str(src), *data, "--out", str(out), *extra]


def assert_store_holds(out: Path, made: dict) -> None:
    """The store holds exactly the written masks and numbers, best predicted IoU first."""
    store = ProposalStore.open(out, expect_generator="import")
    assert store.image_ids() == sorted(made)
    for image_id, output in made.items():
        props = store.read(image_id)
        order = np.argsort(-output["predicted_iou"], kind="stable")
        assert np.array_equal(props.masks(), output["masks"][order])
        assert np.array_equal(props.scores, output["predicted_iou"][order])
        assert np.array_equal(props.predicted_iou, output["predicted_iou"][order])
        assert np.array_equal(props.stability_score, output["stability_score"][order])
        assert np.array_equal(props.areas, output["masks"][order].sum(axis=(1, 2)))


def no_temp_files(root: Path) -> bool:
    return not list(root.rglob(".*.tmp")) if root.exists() else True


# ---------------------------------------------------------------------------- the formats
@pytest.mark.parametrize("fmt", ["amg-png", "sam-json", "uncompressed"])
def test_import_keeps_the_masks_and_scores(fmt, dataset, index, made, tmp_path, capsys) -> None:
    src = write_source(tmp_path / "masks", index, made, fmt)
    out = tmp_path / "store"
    assert main(import_args(dataset, src, out)) == 0
    expected = "amg-png" if fmt == "amg-png" else "sam-json"
    assert f"12 imported from {src} ({expected};" in capsys.readouterr().out
    assert_store_holds(out, made)
    store = ProposalStore.open(out)
    assert store.params == {"source": str(src.resolve()), "source_format": expected}
    assert verify_store(out).ok
    # what training checks before it starts: coverage, sizes and the image files
    store.check_for_images(made, index.image_size, index.image_path)
    assert (
        main(["proposals", "verify", str(out), "--root", str(dataset), "--dataset", "synthref"])
        == 0
    )


def test_plain_coco_json_needs_only_the_segmentation(dataset, index, made, tmp_path) -> None:
    src = tmp_path / "coco"
    src.mkdir()
    for image_id, output in made.items():
        records = [
            {"segmentation": amg_record(m, 0, 0)["segmentation"], "score": float(s)}
            for m, s in zip(output["masks"], output["predicted_iou"], strict=True)
        ]
        body = {"annotations": records} if image_id % 2 else records
        (src / f"{index.image_path(image_id).stem}.json").write_text(json.dumps(body))
    out = tmp_path / "store"
    assert main(import_args(dataset, src, out)) == 0
    store = ProposalStore.open(out)
    assert store.params["source_format"] == "coco-json"
    for image_id, output in made.items():
        props = store.read(image_id)
        order = np.argsort(-output["predicted_iou"], kind="stable")
        assert np.array_equal(props.masks(), output["masks"][order])
        assert np.array_equal(props.scores, output["predicted_iou"][order])
        assert props.predicted_iou is None and props.stability_score is None


def test_no_score_keeps_larger_masks_first_and_empty_masks_are_dropped(tmp_path) -> None:
    from semires.proposals.importer import import_store

    image = tmp_path / "images" / "a.png"
    image.parent.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(image)
    masks = np.zeros((3, 20, 30), np.uint8)
    masks[0, :2, :2] = 1
    masks[2, :10, :10] = 1  # masks[1] stays empty
    (tmp_path / "src").mkdir()
    records = [{"segmentation": amg_record(m, 0, 0)["segmentation"]} for m in masks]
    (tmp_path / "src" / "a.json").write_text(json.dumps(records))
    report = import_store(tmp_path / "src", {7: image}, lambda i: (20, 30), tmp_path / "s")
    assert report.source_format == "coco-json" and report.dropped_empty == 1
    props = ProposalStore.open(tmp_path / "s").read(7)
    assert np.array_equal(props.masks(), masks[[2, 0]]) and np.all(props.scores == 0)


def test_a_changed_image_file_is_caught(dataset, index, made, tmp_path) -> None:
    src = write_source(tmp_path / "masks", index, made, "sam-json")
    out = tmp_path / "store"
    assert main(import_args(dataset, src, out)) == 0
    image_id = min(made)
    path = index.image_path(image_id)
    original = path.read_bytes()
    try:
        pixels = np.asarray(Image.open(path).convert("RGB")).copy()
        pixels[0, 0] = 255 - pixels[0, 0]
        Image.fromarray(pixels).save(path)
        store = ProposalStore.open(out)
        with pytest.raises(
            ProposalError, match=rf"made from other image files \(e.g. image {image_id}"
        ):
            store.check_for_images(made, index.image_size, index.image_path)
    finally:
        path.write_bytes(original)


# ---------------------------------------------------------------------------- bad input
def fail(dataset: Path, src: Path, out: Path, capsys, *extra: str) -> str:
    """Run the import, which must fail with exit 2 and one line, leaving no store behind."""
    assert main(import_args(dataset, src, out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert not out.exists() and no_temp_files(src.parent)
    return err


def test_an_image_without_output(dataset, index, made, tmp_path, capsys) -> None:
    src = write_source(tmp_path / "masks", index, made, "amg-png")
    stem = index.image_path(max(made)).stem
    shutil.rmtree(src / stem)
    err = fail(dataset, src, tmp_path / "store", capsys)
    assert f"no amg-png output for 1 of the 12 images (e.g. image {max(made)}" in err
    assert f"expected {src / stem / 'metadata.csv'}" in err


def test_a_mask_of_the_wrong_size(dataset, index, made, tmp_path, capsys) -> None:
    src = write_source(tmp_path / "masks", index, made, "amg-png")
    image_id = max(made)
    png = src / index.image_path(image_id).stem / "1.png"
    Image.fromarray(np.zeros((50, 96), np.uint8)).save(png)
    err = fail(dataset, src, tmp_path / "store", capsys)
    assert f"{png}: image {image_id}'s mask is 50x96 but its image is 96x96" in err


def test_a_record_of_the_wrong_size(dataset, index, made, tmp_path, capsys) -> None:
    src = write_source(tmp_path / "masks", index, made, "sam-json")
    path = src / f"{index.image_path(min(made)).stem}.json"
    records = json.loads(path.read_text())
    records[2] = amg_record(np.ones((96, 95), np.uint8), 0.9, 0.96)
    path.write_text(json.dumps(records))
    err = fail(dataset, src, tmp_path / "store", capsys)
    assert f"{path} record 2: image {min(made)}'s mask is 96x95 but its image is 96x96" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("predicted_iou"), "record 1: no 'predicted_iou'"),
        (
            lambda r: r.update(stability_score="high"),
            "record 1: stability_score must be a finite number",
        ),
        (
            lambda r: r["segmentation"].update(counts="0" + r["segmentation"]["counts"][1:-1]),
            "record 1: segmentation counts",
        ),
        (lambda r: r["segmentation"].update(counts="a b"), "outside COCO's RLE alphabet"),
        (
            lambda r: r.update(segmentation=[[1, 2, 3, 4, 5, 6]]),
            "record 1: no COCO RLE segmentation",
        ),
        (lambda r: r.update(area=1), "record 1: area 1 but the mask has"),
    ],
)
def test_a_malformed_record(change, message, dataset, index, made, tmp_path, capsys) -> None:
    src = write_source(tmp_path / "masks", index, made, "sam-json")
    path = src / f"{index.image_path(max(made)).stem}.json"
    records = json.loads(path.read_text())
    change(records[1])
    path.write_text(json.dumps(records))
    err = fail(dataset, src, tmp_path / "store", capsys)
    assert str(path) in err and message in err


def test_a_json_file_that_is_not_json(dataset, index, made, tmp_path, capsys) -> None:
    src = write_source(tmp_path / "masks", index, made, "sam-json")
    path = src / f"{index.image_path(max(made)).stem}.json"
    path.write_text('[{"segmentation": ')
    err = fail(dataset, src, tmp_path / "store", capsys)
    assert f"{path}: not a readable JSON file" in err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda rows: rows.__setitem__(2, rows[2].replace(",0.", ",x.", 1)),
            "line 3: predicted_iou",
        ),
        (
            lambda rows: rows.__setitem__(0, rows[0].replace("stability_score", "stab")),
            "line 1: no column 'stability_score'",
        ),
        (lambda rows: rows.__setitem__(1, rows[1] + ",7"), "line 2: 15 fields, the header has 14"),
        (lambda rows: rows.append(rows[1]), "id 0 appears again (first on line 2)"),
    ],
)
def test_a_malformed_metadata_csv(edit, message, dataset, index, made, tmp_path, capsys) -> None:
    src = write_source(tmp_path / "masks", index, made, "amg-png")
    path = src / index.image_path(max(made)).stem / "metadata.csv"
    rows = path.read_text().split("\n")
    edit(rows)
    path.write_text("\n".join(rows))
    err = fail(dataset, src, tmp_path / "store", capsys)
    assert err.startswith(f"error: {path} line ") and message in err


def test_a_malformed_or_unlisted_png(dataset, index, made, tmp_path, capsys) -> None:
    src = write_source(tmp_path / "masks", index, made, "amg-png")
    folder = src / index.image_path(max(made)).stem
    (folder / "0.png").write_bytes(b"not a png")
    err = fail(dataset, src, tmp_path / "store", capsys)
    assert f"cannot read mask file {folder / '0.png'}" in err
    write_png_output(folder.with_name("fresh"), made[max(made)])
    shutil.rmtree(folder)
    (folder.with_name("fresh")).rename(folder)
    Image.fromarray(np.zeros((96, 96), np.uint8)).save(folder / "99.png")
    err = fail(dataset, src, tmp_path / "store", capsys)
    assert f"{folder / '99.png'}: a mask without a row in {folder / 'metadata.csv'}" in err


def test_both_formats_in_one_folder_need_a_choice(dataset, index, made, tmp_path, capsys) -> None:
    src = write_source(tmp_path / "masks", index, made, "amg-png")
    write_source(src, index, {max(made): made[max(made)]}, "sam-json")
    err = fail(dataset, src, tmp_path / "store", capsys)
    assert "holds both amg.py PNG folders" in err and "--source-format" in err
    assert main(import_args(dataset, src, tmp_path / "store", "--source-format", "amg-png")) == 0
    assert_store_holds(tmp_path / "store", made)


def test_two_images_with_one_stem_are_named() -> None:
    with pytest.raises(
        ProposalError, match=r"images 3 \(a/x.jpg\) and 5 \(b/x.png\) have the same file stem 'x'"
    ):
        image_stems({3: "a/x.jpg", 4: "a/y.jpg", 5: "b/x.png"})


def test_counts_are_checked_before_pycocotools_sees_them() -> None:
    good = mask_utils.encode(np.asfortranarray(np.eye(5, dtype=np.uint8)))["counts"]
    assert counts_problem(good, 25) is None
    assert "cover" in counts_problem(good, 24)
    assert "truncated" in counts_problem(good + b"P", 25)
    assert "too long" in counts_problem(b"oooooooo0", 25)


# ---------------------------------------------------------------------------- resuming
def test_a_failed_import_resumes_to_the_same_store(dataset, index, made, tmp_path, capsys) -> None:
    src = write_source(tmp_path / "masks", index, made, "sam-json")
    broken = src / f"{index.image_path(max(made)).stem}.json"
    good = broken.read_text()
    broken.write_text("[1]")
    out = tmp_path / "store"
    assert main(import_args(dataset, src, out, "--shard-size", "4")) == 2
    assert f"{broken} record 0: expected an object" in capsys.readouterr().err
    store = ProposalStore.open(out)
    assert len(store) == 8 and verify_store(out).ok and no_temp_files(out)  # two whole shards
    broken.write_text(good)
    assert main(import_args(dataset, src, out, "--shard-size", "4")) == 0
    assert "12 images wanted, 8 already imported, 4 imported" in capsys.readouterr().out
    assert_store_holds(out, made)
    fresh = tmp_path / "fresh"
    assert main(import_args(dataset, src, fresh, "--shard-size", "4")) == 0
    shards = sorted(p.name for p in (out / "shards").iterdir())
    assert shards == sorted(p.name for p in (fresh / "shards").iterdir())
    for name in shards:
        assert (out / "shards" / name).read_bytes() == (fresh / "shards" / name).read_bytes()
    assert main(import_args(dataset, src, out, "--shard-size", "4")) == 0
    assert "12 already imported, 0 imported" in capsys.readouterr().out


def test_another_source_is_refused_unless_overwritten(
    dataset, index, made, tmp_path, capsys
) -> None:
    src = write_source(tmp_path / "png", index, made, "amg-png")
    other = write_source(tmp_path / "json", index, made, "sam-json")
    out = tmp_path / "store"
    assert main(import_args(dataset, src, out)) == 0
    assert main(import_args(dataset, other, out)) == 2
    assert "was made with other import settings" in capsys.readouterr().err
    assert main(import_args(dataset, other, out, "--overwrite")) == 0
    assert ProposalStore.open(out).params["source_format"] == "sam-json"


def test_a_split_folder_imports_its_unlabeled_images(dataset, index, made, tmp_path) -> None:
    from semires.data.splits import read_split

    data = ["--root", str(dataset), "--dataset", "synthref"]
    assert main(["data", "split", "--labeled", "25%", "--out", str(tmp_path / "split"), *data]) == 0
    src = write_source(tmp_path / "masks", index, made, "amg-png")  # every train image
    out = tmp_path / "store"
    args = ["proposals", "import", str(src), *data, "--split-dir", str(tmp_path / "split")]
    assert main([*args, "--out", str(out), "-q"]) == 0
    unlabeled = sorted(read_split(tmp_path / "split", index).unlabeled_images)
    assert ProposalStore.open(out).image_ids() == unlabeled and len(unlabeled) == 9
    assert_store_holds(out, {i: made[i] for i in unlabeled})


def shapes_image(seed: int) -> np.ndarray:
    """Two coloured boxes on grey with noise (the tiny random SAM finds several masks)."""
    rng = np.random.default_rng(seed)
    pixels = np.full((64, 80, 3), 120, np.uint8)
    y, x = rng.integers(0, 30, 2)
    pixels[y : y + 30, x : x + 20] = (200, 30, 30)
    pixels[30:60, 40:75] = (30, 60, 210)
    return np.clip(pixels + rng.integers(0, 10, pixels.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("mode", ["binary_mask", "coco_rle"])
def test_the_library_generator_output_imports_as_propose_makes_it(mode, tmp_path) -> None:
    """SamAutomaticMaskGenerator's own records, saved as amg.py saves them, import to the very
    candidates ``semires propose --generator sam`` stores for the same model."""
    from segment_anything import SamAutomaticMaskGenerator

    from semires.proposals.importer import import_store
    from semires.proposals.sam import SamGenerator, tiny_sam

    loose = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "points_per_side": 4}
    model = tiny_sam()
    amg = SamAutomaticMaskGenerator(model, output_mode=mode, **loose)
    pixels = {i: shapes_image(i) for i in range(3)}
    images = {i: tmp_path / "images" / f"photo_{i}.png" for i in pixels}
    images[0].parent.mkdir()
    src = tmp_path / "masks"
    for image_id, path in images.items():
        Image.fromarray(pixels[image_id]).save(path)
        records = amg.generate(pixels[image_id])
        if mode == "binary_mask":  # amg.py's write_masks_to_folder, with Pillow for OpenCV
            made = {
                "masks": np.stack([r["segmentation"] for r in records]).astype(np.uint8),
                "predicted_iou": np.array([r["predicted_iou"] for r in records]),
                "stability_score": np.array([r["stability_score"] for r in records]),
            }
            write_png_output(src / path.stem, made)
        else:
            src.mkdir(exist_ok=True)
            (src / f"{path.stem}.json").write_text(json.dumps(records))
    import_store(src, images, lambda i: (64, 80), tmp_path / "store", progress=False)
    store = ProposalStore.open(tmp_path / "store")
    ours = SamGenerator(model=model, **loose)
    for image_id in images:
        expected = ours.generate(pixels[image_id])
        got = store.read(image_id)
        assert len(got) == len(expected) >= 3
        assert got.rles == expected.rles and np.array_equal(got.scores, expected.scores)
        assert np.array_equal(got.stability_score, expected.stability_score)

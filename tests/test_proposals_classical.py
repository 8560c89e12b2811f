"""The weight-free ``classical`` generator: wholes and parts, no masks that glue two objects or
an object and its background together (the object tests), hull geometry, NMS, determinism,
knobs, registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.draw import disk

from semires.errors import ConfigError
from semires.proposals.base import GENERATORS, build_generator, parse_knobs
from semires.proposals.classical import (
    HULL_DIRECTIONS,
    ClassicalConfig,
    ClassicalGenerator,
    _boxes,
    _Candidates,
    _group,
    _nms,
    _region_stats,
    _supports,
    hull_areas,
    not_objects,
)
from semires.train.proposal_quality import object_quality


def two_part_scene(size: int = 96) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Grey textured background; a red|blue two-tone square and a green disk with a yellow dot."""
    rng = np.random.default_rng(0)
    image = np.full((size, size, 3), 120.0) + rng.normal(0, 3, (size, size, 1))
    parts = {name: np.zeros((size, size), bool) for name in ("left", "right", "body", "dot")}
    parts["left"][10:40, 10:25] = True
    parts["right"][10:40, 25:40] = True
    parts["body"][disk((65, 62), 16, shape=(size, size))] = True
    parts["dot"][disk((65, 62), 6, shape=(size, size))] = True
    parts["body"] &= ~parts["dot"]
    colours = {
        "left": (210, 40, 40),
        "right": (40, 70, 220),
        "body": (30, 170, 50),
        "dot": (240, 210, 30),
    }
    for name, colour in colours.items():
        image[parts[name]] = np.asarray(colour) + rng.normal(0, 3, (int(parts[name].sum()), 1))
    objects = {
        **parts,
        "square": parts["left"] | parts["right"],
        "disk": parts["body"] | parts["dot"],
    }
    return np.clip(image, 0, 255).astype(np.uint8), objects


def test_returns_whole_objects_and_their_parts() -> None:
    image, objects = two_part_scene()
    props = ClassicalGenerator().generate(image)
    masks = props.masks().astype(bool)
    assert 0 < len(props) <= 100 and props.size == (96, 96)
    for name, gt in objects.items():
        best, _, _, _ = object_quality(masks, gt)
        assert best >= 0.9, f"{name}: best IoU {best:.3f}"
    # scores are sorted, in 0..1, and a whole object outranks the background
    assert np.all(np.diff(props.scores) <= 0) and 0 <= props.scores.min() <= props.scores.max() <= 1
    assert np.array_equal(props.areas, masks.sum(axis=(1, 2)))


def paint(shapes: list[tuple[np.ndarray, tuple[int, int, int]]], size: int = 96) -> np.ndarray:
    """A grey, slightly noisy background with each (mask, RGB colour) painted in turn."""
    rng = np.random.default_rng(1)
    image = np.full((size, size, 3), 120.0) + rng.normal(0, 3, (size, size, 1))
    for mask, colour in shapes:
        image[mask] = np.asarray(colour) + rng.normal(0, 3, (int(mask.sum()), 1))
    return np.clip(image, 0, 255).astype(np.uint8)


def disk_mask(centre: tuple[int, int], radius: int, size: int = 96) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[disk(centre, radius, shape=(size, size))] = True
    return mask


def box_mask(r0: int, c0: int, r1: int, c1: int, size: int = 96) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[r0:r1, c0:c1] = True
    return mask


def touching_disks() -> tuple[np.ndarray, list[np.ndarray]]:
    """A red disk and a blue disk that touch (they do not make one shape)."""
    a, b = disk_mask((30, 26), 12), disk_mask((30, 49), 12)
    return paint([(a, (200, 40, 40)), (b & ~a, (40, 70, 220))]), [a, b & ~a]


def occluding_disk() -> tuple[np.ndarray, list[np.ndarray]]:
    """A red disk lying half over the edge of a blue square (one object in front of another)."""
    square, front = box_mask(20, 20, 60, 60), disk_mask((40, 60), 11)
    return paint([(square, (40, 70, 220)), (front, (200, 40, 40))]), [square & ~front, front]


def ring() -> tuple[np.ndarray, list[np.ndarray]]:
    """A yellow ring: its hole shows the grey background."""
    outer, hole = disk_mask((48, 48), 20), disk_mask((48, 48), 10)
    return paint([(outer & ~hole, (230, 200, 40))]), [outer & ~hole]


def containers(masks: np.ndarray, objects: list[np.ndarray]) -> int:
    """Candidates covering > 70 % of some object and a quarter as much again outside it (CPI-U
    would take them, and their surplus, into the refined label)."""
    count = 0
    for obj in objects:
        inside = (masks & obj).sum(axis=(1, 2))
        outside = (masks & ~obj).sum(axis=(1, 2))
        count += int(((inside > 0.7 * obj.sum()) & (outside > 0.25 * obj.sum())).sum())
    return count


@pytest.mark.parametrize(
    ("scene", "rule_off"),
    [
        (touching_disks, {"touch_share": 0.0}),
        (occluding_disk, {"occlusion_overlap": 1.0}),
        (ring, {"ground_distance": 0.0}),
    ],
)
def test_object_tests_keep_containers_out_so_cpi_recovers_each_object(scene, rule_off) -> None:
    image, objects = scene()
    masks = ClassicalGenerator().generate(image).masks().astype(bool)
    assert containers(masks, objects) == 0
    for obj in objects:
        best, _, cpi, _ = object_quality(masks, obj)
        assert best >= 0.95 and cpi >= 0.95, (best, cpi)
    # switching the rule off lets a container in: the rule is what keeps it out
    loose = ClassicalGenerator(**rule_off).generate(image).masks().astype(bool)
    assert containers(loose, objects) >= 1
    assert min(object_quality(loose, obj)[2] for obj in objects) < 0.8


def test_an_object_embedded_in_border_reaching_background_is_flagged() -> None:
    # left band (0), right background (1) reaching the border, a disk (2) inside the right part
    labels = np.zeros((40, 60), np.int64)
    labels[:, 20:] = 1
    labels[disk((20, 40), 8, shape=labels.shape)] = 2
    lab = np.zeros((40, 60, 3))
    lab[labels == 0] = (30.0, 0.0, 0.0)
    lab[labels == 1] = (50.0, 0.0, 0.0)
    lab[labels == 2] = (50.0, 60.0, 40.0)
    cfg = ClassicalConfig(ground_distance=0.0)  # only the embedding test
    regions = _region_stats(labels, lab, cfg.edge_threshold)
    size_first = {"colour": 0.0, "size": 1.0, "fill": 0.0, "shared": 0.0}
    run = _group(regions, size_first, cfg.colour_sigma, cfg.edge_threshold)
    assert run.children[3:] == [(1, 2), (3, 0)]  # disk + its background, then everything
    assert not_objects(run, regions.supports, cfg).tolist() == [False] * 3 + [True, True]
    off = ClassicalConfig(ground_distance=0.0, embed_share=1.0)
    assert not not_objects(run, regions.supports, off).any()


def test_hull_areas_of_squares_rectangles_and_disks() -> None:
    labels = np.zeros((64, 64), np.int64)
    labels[5:9, 40:60] = 1  # 4 x 20 rectangle
    labels[disk((30, 30), 12, shape=labels.shape)] = 2
    labels[0, 0] = 3  # a single pixel: a unit square
    supports = _supports(labels, 4)
    areas = hull_areas(supports)
    assert areas[3] == pytest.approx(1.0) and areas[1] == pytest.approx(80.0)
    # a disk of pixel squares: between its pixel count and 3 % above the circle through them
    assert (labels == 2).sum() <= areas[2] <= 1.03 * math.pi * 12.5**2
    rows, cols = np.nonzero(labels == 2)
    assert _boxes(supports)[2].tolist() == [rows.min(), cols.min(), rows.max(), cols.max()]
    assert supports.shape == (4, HULL_DIRECTIONS)


def test_supports_match_a_brute_force_projection() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, (30, 45))
    supports = _supports(labels, 7)
    angles = 2 * np.pi * np.arange(HULL_DIRECTIONS) / HULL_DIRECTIONS
    rows, cols = np.indices(labels.shape)
    for k in range(7):
        r, c = rows[labels == k], cols[labels == k]
        reach = np.outer(c, np.cos(angles)) + np.outer(r, np.sin(angles))
        expected = reach.max(axis=0) + 0.5 * (np.abs(np.cos(angles)) + np.abs(np.sin(angles)))
        np.testing.assert_allclose(supports[k], expected, atol=1e-9)


def test_nms_matches_all_pairs_greedy_suppression() -> None:
    rng = np.random.default_rng(3)
    atoms = rng.integers(0, 30, (20, 20))
    pixels = np.bincount(atoms.ravel(), minlength=30)
    for _ in range(20):
        membership = rng.random((int(rng.integers(1, 120)), 30)) < rng.random()
        areas = (membership * pixels).sum(axis=1).astype(float)
        candidates = _Candidates(membership, areas, areas, np.zeros((len(areas), 3)))
        for thresh in (0.5, 0.9):
            inter = (membership[:, None] & membership[None]) @ pixels
            iou = inter / np.maximum(areas[:, None] + areas[None] - inter, 1)
            expected: list[int] = []
            for idx in range(len(areas)):
                if all(iou[idx, kept] <= thresh for kept in expected):
                    expected.append(idx)
            assert _nms(candidates, thresh, atoms) == expected


def test_is_deterministic_and_masks_keep_the_image_size() -> None:
    image, _ = two_part_scene()
    wide = np.repeat(image, 3, axis=1)[:, :250]  # 96 x 250, segmented at max_side 128
    gen = ClassicalGenerator(max_side=128)
    first, second = gen.generate(wide), gen.generate(wide)
    assert first.rles == second.rles and np.array_equal(first.scores, second.scores)
    assert first.size == (96, 250) and all(r["size"] == [96, 250] for r in first.rles)


def test_a_flat_image_has_no_candidates() -> None:
    props = ClassicalGenerator().generate(np.full((32, 40, 3), 100, np.uint8))
    assert len(props) == 0 and props.size == (32, 40) and props.masks().shape == (0, 32, 40)


def test_knobs_limit_the_candidates() -> None:
    image, _ = two_part_scene()
    props = ClassicalGenerator(max_candidates=5, min_area=0.05).generate(image)
    assert len(props) == 5 and props.areas.min() >= 0.05 * 96 * 96


def test_params_hold_every_knob() -> None:
    gen = build_generator("classical", scales=(40,))
    params = gen.params()
    assert gen.name == "classical" and params["scales"] == [40]
    assert set(params) == {f for f in ClassicalGenerator.config_class.__dataclass_fields__}


def test_bad_knobs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown option.*colour_bins.*valid: scales"):
        build_generator("classical", colour_bins=4)
    with pytest.raises(ConfigError, match=r"unknown grouping strategy 'colour\+texture'"):
        ClassicalGenerator(strategies=("colour+texture",))
    with pytest.raises(ConfigError, match="min_area < max_area"):
        ClassicalGenerator(min_area=0.5, max_area=0.4)
    with pytest.raises(ConfigError, match=r"0 <= touch_share <= 1, got 1\.5"):
        ClassicalGenerator(touch_share=1.5)
    with pytest.raises(ConfigError, match="ground_distance >= 0, got -1"):
        ClassicalGenerator(ground_distance=-1.0)


def test_unknown_generator_lists_the_registered_ones() -> None:
    with pytest.raises(
        ConfigError, match="unknown generator 'sam3'; registered: classical, sam, sam2"
    ):
        build_generator("sam3")
    assert set(GENERATORS) == {"classical", "sam", "sam2"}


def test_parse_knobs_types_values_from_the_command_line() -> None:
    knobs = parse_knobs("classical", ["scales=20,60", "nms_iou=0.8", "max_candidates=50"])
    assert knobs == {"scales": (20, 60), "nms_iou": 0.8, "max_candidates": 50}
    sam = parse_knobs("sam", ["bf16=true", "checkpoint=none", "points_per_side=16"])
    assert sam == {"bf16": True, "checkpoint": None, "points_per_side": 16}
    with pytest.raises(ConfigError, match="option nms_iou: expected float, got 'high'"):
        parse_knobs("classical", ["nms_iou=high"])
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_knobs("classical", ["scales"])
    with pytest.raises(ConfigError, match="unknown option 'points' for generator 'sam'"):
        parse_knobs("sam", ["points=3"])

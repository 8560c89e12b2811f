"""The weight-free ``classical`` generator: wholes and parts, determinism, knobs, registry."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from semires.errors import ConfigError
from semires.proposals.base import GENERATORS, build_generator, parse_knobs
from semires.proposals.classical import ClassicalGenerator
from semires.proposals.quality import object_quality


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

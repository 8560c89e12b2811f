"""Typed YAML configs: defaults, overrides, validation errors naming the key."""

from __future__ import annotations

import pytest

from semires.errors import ConfigError
from semires.train.config import Config, load_config, resolve_config_path


def _write(tmp_path, text: str):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_shipped_configs_load_and_validate():
    for name in ("synth_tiny", "refcoco_lavt"):
        cfg = load_config(resolve_config_path(name))
        assert isinstance(cfg, Config)
    paper = load_config(resolve_config_path("refcoco_lavt"))
    assert paper.train.lr == pytest.approx(5e-5)
    assert paper.train.weight_decay == pytest.approx(1e-2)
    assert paper.train.epochs == 40
    assert paper.data.img_size == 480
    assert paper.train.class_weights == (0.9, 1.1)
    assert paper.data.val_split == "val" and "val" not in paper.data.test_splits


def test_overrides_are_typed(tmp_path):
    cfg = load_config(
        _write(tmp_path, "train:\n  lr: 1e-3\n"),
        ["train.epochs=3", "semi.refine.tau=0.6", "data.test_splits=[testA]"],
    )
    assert cfg.train.lr == pytest.approx(1e-3)  # YAML reads 1e-3 as a string: accepted for floats
    assert cfg.train.epochs == 3
    assert cfg.semi.refine.tau == pytest.approx(0.6)
    assert cfg.data.test_splits == ["testA"]


@pytest.mark.parametrize(
    ("text", "overrides", "needle"),
    [
        ("train:\n  lrr: 0.1\n", [], "train.lrr"),
        ("bogus: 1\n", [], "'bogus'"),
        ("train:\n  epochs: many\n", [], "train.epochs"),
        ("train:\n  epochs: 2.5\n", [], "train.epochs"),
        ("train:\n  amp: fp8\n", [], "train.amp"),
        ("", ["semi.refine.tau=1.5"], "refine.tau"),
        ("", ["semi.refine.t1=-0.1"], "refine.t1"),
        ("", ["semi.refine.strategy=magic"], "refine.strategy"),
        ("", ["data.img_size=100"], "data.img_size"),
        ("", ["data.test_splits=[val]"], "data.val_split"),
        ("", ["train.lr=0"], "train.lr"),
        ("", ["semi.ema=2"], "semi.ema"),
        ("", ["trainlr"], "key=value"),
        ("- a\n- b\n", [], "mapping"),
        ("train: [\n", [], "invalid YAML"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, overrides, needle):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text), overrides)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file_lists_shipped(tmp_path):
    with pytest.raises(ConfigError, match="synth_tiny"):
        resolve_config_path(tmp_path / "nope.yaml")


def test_semi_strategy_needs_proposals():
    with pytest.raises(ConfigError, match=r"semi\.proposals"):
        load_config(None, ["semi.enabled=true", "semi.refine.strategy=iom"])
    cfg = load_config(None, ["semi.enabled=true", "semi.refine.strategy=none"])
    assert cfg.semi.enabled

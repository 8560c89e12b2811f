"""A generator of one's own: one decorator in the user's module registers it, and
``semires propose --generator NAME`` builds a store with it once the module is a plugin
(``semires --plugin MODULE`` or ``SEMIRES_PLUGINS``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from semires.cli import main
from semires.errors import ConfigError
from semires.proposals.base import GENERATORS, MaskGenerator, Proposals, build_generator
from semires.proposals.store import ProposalStore
from semires.utils import registry


@dataclass(frozen=True)
class StripesConfig:
    bands: int = 2


class StripesGenerator(MaskGenerator):
    """Horizontal bands of the image, and its pixels brighter than their mean."""

    config_class = StripesConfig

    def generate(self, image: np.ndarray) -> Proposals:
        h, w = image.shape[:2]
        bands = self.config.bands
        edges = np.linspace(0, h, bands + 1).astype(int)
        masks = np.zeros((bands + 1, h, w), np.uint8)
        for k in range(bands):
            masks[k, edges[k] : edges[k + 1]] = 1
        grey = image.mean(axis=2)
        masks[bands] = grey > grey.mean()
        return Proposals.from_masks(masks, np.linspace(1.0, 0.5, bands + 1))


#: the user's plugin module: the test's generator, registered with one decorator
PLUGIN = f'''
from semires.proposals.base import register_generator
from {__name__} import StripesGenerator


@register_generator("stripes")
class Stripes(StripesGenerator):
    """Registered under "stripes" (which becomes its name)."""
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Writes a plugin module (returns its name); the registry, the loaded plugins and
    ``SEMIRES_PLUGINS`` are as before once the test is done."""
    monkeypatch.setattr(GENERATORS, "_items", dict(GENERATORS._items))
    monkeypatch.setattr(registry, "_loaded", set(registry._loaded))
    monkeypatch.setenv(registry.PLUGINS_ENV, "")  # restored (or removed) after the test
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str) -> str:
        (tmp_path / f"{name}.py").write_text(PLUGIN)
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("how", ["--plugin", "SEMIRES_PLUGINS"])
def test_propose_builds_a_store_with_a_plugin_generator(
    synth_tiny: Path, tmp_path, plugin, monkeypatch, capsys, how: str
) -> None:
    from semires.data import DataSpec, load_index
    from semires.data.images import read_image

    data = ["--root", str(synth_tiny), "--dataset", "synthref"]
    args = ["propose", *data, "--split", "val", "--all-images", "--set", "bands=3"]
    out = tmp_path / "store"
    assert main([*args, "--generator", "stripes", "--out", str(out)]) == 2
    assert (
        "unknown generator 'stripes'; registered: classical, sam, sam2" in capsys.readouterr().err
    )

    module = plugin(f"stripes_plugin_{how.strip('-').lower()}")
    if how == "--plugin":
        assert main(["--plugin", module, *args, "--generator", "stripes", "--out", str(out)]) == 0
    else:
        monkeypatch.setenv(registry.PLUGINS_ENV, module)
        assert main([*args, "--generator", "stripes", "--out", str(out)]) == 0
    assert "4 generated" in capsys.readouterr().out

    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    store = ProposalStore.open(out, expect_generator="stripes", expect_params={"bands": 3})
    assert store.image_ids() == sorted(index.image_ids("val"))
    made_here = GENERATORS.get("stripes")(bands=3)  # the plugin's class, not imported here
    for image_id in store.image_ids():
        expected = made_here.generate(read_image(index.image_path(image_id)))
        stored = store.read(image_id)
        assert len(stored) == 4 and stored.rles == expected.rles
        assert np.array_equal(stored.scores, expected.scores)
        assert np.array_equal(stored.masks(), expected.masks())


def test_registering_checks_the_class_and_its_name(monkeypatch) -> None:
    monkeypatch.setattr(GENERATORS, "_items", dict(GENERATORS._items))

    @GENERATORS.register("bands")
    class Bands(StripesGenerator):
        pass

    assert Bands.name == "bands" and isinstance(build_generator("bands", bands=4), Bands)
    assert "stripes" not in GENERATORS  # the class it derives from is not registered
    with pytest.raises(ConfigError, match="generator 'bands' is registered already"):
        GENERATORS.register("bands")(type("Other", (StripesGenerator,), {}))
    with pytest.raises(ConfigError, match="names itself 'bands'"):
        GENERATORS.register("strips")(Bands)
    with pytest.raises(ConfigError, match="not a MaskGenerator subclass"):
        GENERATORS.register("nothing")(StripesConfig)
    assert GENERATORS.names() == ("classical", "sam", "sam2", "bands")

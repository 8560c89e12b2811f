"""Random bytes and random shapes to every reader: a correct read or a one-line semires error,
never a traceback or a hang.

Each reader gets its valid file cut short, with bytes changed or inserted, or replaced by noise
(``mutations``), and the json readers also get their valid structure with one node replaced by
a value of another shape (``reshaped``). Seeded: a failure names the case and reproduces.
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semires.errors import SemiresError

CASES = 40  # per reader and kind
pytestmark = pytest.mark.timeout(300)


def mutations(data: bytes, seed: int, n: int = CASES) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)``: ``data`` cut, with bytes changed or inserted, or pure noise."""
    rng = np.random.default_rng(seed)
    yield "empty", b""
    for i in range(n):
        kind = ("cut", "flip", "insert", "noise")[i % 4]
        if kind == "cut":
            out = data[: int(rng.integers(0, max(1, len(data))))]
        elif kind == "flip":
            buf = bytearray(data)
            for pos in rng.integers(0, len(buf), int(rng.integers(1, 9))):
                buf[pos] = int(rng.integers(0, 256))
            out = bytes(buf)
        elif kind == "insert":
            pos = int(rng.integers(0, len(data) + 1))
            out = data[:pos] + rng.bytes(int(rng.integers(1, 64))) + data[pos:]
        else:
            out = data[:8] * int(rng.integers(0, 2)) + rng.bytes(int(rng.integers(0, 4096)))
        yield f"{kind}{i}", out


ODD_VALUES: list[Any] = [None, True, -1, 0, 2**63, 1e308, float("nan"), "", "x", [], {}, [[1, 2]], {"a": []}]  # fmt: skip


def reshaped(data: Any, seed: int, n: int = CASES) -> Iterator[tuple[str, Any]]:
    """``(name, structure)``: ``data`` with one random node (a value, a list item, a key's
    value) replaced by a value of another type or shape, or removed."""
    rng = np.random.default_rng(seed)
    nodes: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()  # fmt: skip
        for key, child in items:
            nodes.append((node, key))
            walk(child)

    walk(data)
    for i in range(n):
        out = copy.deepcopy(data)
        nodes.clear()
        walk(out)
        parent, key = nodes[int(rng.integers(0, len(nodes)))]
        if i % 5 == 4:
            del parent[key]
        else:
            parent[key] = copy.deepcopy(ODD_VALUES[int(rng.integers(0, len(ODD_VALUES)))])
        yield f"reshape{i}", out


def read_or_refuse(name: str, read: Any, *args: Any, **kwargs: Any) -> Any:
    """``read(*args, **kwargs)``, or None when it raised a one-line SemiresError; anything else
    fails the test with the case's name."""
    try:
        return read(*args, **kwargs)
    except SemiresError as err:
        assert "\n" not in str(err) and str(err), f"{name}: {err!r}"
        return None
    except Exception as exc:  # pragma: no cover - what this test exists to catch
        raise AssertionError(f"{name}: {type(exc).__name__}: {exc}") from exc


# ----------------------------------------------------------------------------- datasets
def _dataset_ok(index: Any) -> None:
    """A read that succeeded gives an index whose masks decode (or refuse) cleanly too."""
    from semires.data.stats import compute_stats

    index.validate()
    read_or_refuse("stats", compute_stats, index, progress=False)


def test_refer_layout_fuzz(synth_tiny: Path, tmp_path: Path) -> None:
    from semires.data.refer import read_refer

    for file_name, seed in (("refs(synth).p", 1), ("instances.json", 2)):
        valid = (synth_tiny / "synthref" / file_name).read_bytes()
        for name, data in mutations(valid, seed):
            folder = tmp_path / name / "synthref"
            shutil.copytree(synth_tiny / "synthref", folder)
            (folder / file_name).write_bytes(data)
            index = read_or_refuse(
                f"{file_name} {name}", read_refer, folder.parent, "synthref", "synth"
            )
            if index is not None:
                _dataset_ok(index)
            shutil.rmtree(folder.parent)
    refs = pickle.loads((synth_tiny / "synthref" / "refs(synth).p").read_bytes())
    instances = json.loads((synth_tiny / "synthref" / "instances.json").read_text())
    for (name, data), kind in [*((c, "refs") for c in reshaped(refs, 3)), *((c, "instances") for c in reshaped(instances, 4))]:  # fmt: skip
        folder = tmp_path / f"{kind}-{name}" / "synthref"
        shutil.copytree(synth_tiny / "synthref", folder)
        if kind == "refs":
            (folder / "refs(synth).p").write_bytes(pickle.dumps(data))
        else:
            (folder / "instances.json").write_text(json.dumps(data))
        index = read_or_refuse(f"{kind} {name}", read_refer, folder.parent, "synthref", "synth")
        if index is not None:
            _dataset_ok(index)
        shutil.rmtree(folder.parent)


def test_semires_json_fuzz(synth_tiny: Path, tmp_path: Path) -> None:
    from semires.data import DataSpec, load_index
    from semires.data.semires_json import read_semires_json, write_semires_json

    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    ann = write_semires_json(index, tmp_path / "sj" / "anns.json", progress=False)
    valid = ann.read_bytes()
    cases = [*mutations(valid, 5), *((n, json.dumps(d).encode()) for n, d in reshaped(json.loads(valid), 6))]  # fmt: skip
    for name, data in cases:
        ann.write_bytes(data)
        read = read_or_refuse(
            name, read_semires_json, ann, image_root=synth_tiny / "images" / "synthref"
        )
        if read is not None:
            _dataset_ok(read)


# ----------------------------------------------------------------------------- masks, images
def random_arrays(seed: int, n: int = CASES) -> Iterator[tuple[str, np.ndarray]]:
    """Arrays of random shape (0-4 dimensions, some empty), dtype and values."""
    rng = np.random.default_rng(seed)
    dtypes = [bool, np.uint8, np.int64, np.float32, np.float64, np.complex64, object, "U3"]
    for i in range(n):
        shape = tuple(int(v) for v in rng.integers(0, 6, int(rng.integers(0, 5))))
        dtype = dtypes[i % len(dtypes)]
        values = rng.choice([0, 1, 255, 7, -1], size=shape)
        yield f"array{i}-{np.dtype(dtype).str}-{shape}", values.astype(dtype)


def _mask_ok(mask: np.ndarray | None) -> None:
    if mask is not None:
        assert mask.ndim == 2 and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}


def test_mask_file_fuzz(tmp_path: Path) -> None:
    from semires.data.masks import read_mask_file, write_mask_npy, write_mask_png

    good = np.zeros((6, 7), np.uint8)
    good[1:4, 2:5] = 1
    for suffix, writer in ((".npy", write_mask_npy), (".png", write_mask_png)):
        writer(tmp_path / f"good{suffix}", good)
        valid = (tmp_path / f"good{suffix}").read_bytes()
        assert np.array_equal(read_mask_file(tmp_path / f"good{suffix}"), good)
        for name, data in mutations(valid, 7 if suffix == ".npy" else 8):
            path = tmp_path / f"{name}{suffix}"
            path.write_bytes(data)
            _mask_ok(read_or_refuse(path.name, read_mask_file, path))
    for name, array in random_arrays(9):
        path = tmp_path / f"{name}.npy"
        np.save(path, array, allow_pickle=True)
        mask = read_or_refuse(name, read_mask_file, path)
        _mask_ok(mask)
        if mask is not None:  # a correct read: the array's own 0/1 (or 0/255) pixels
            assert mask.shape == array.shape and np.array_equal(mask, (array > 0).astype(np.uint8))


def test_image_fuzz(synth_tiny: Path, tmp_path: Path) -> None:
    from PIL import Image

    from semires.data.images import image_size, read_image

    valid = (synth_tiny / "images" / "synthref" / "000001.png").read_bytes()
    rng = np.random.default_rng(10)
    cases = list(mutations(valid, 11))
    for i, mode in enumerate(["L", "P", "RGBA", "I;16", "I", "F", "1", "CMYK", "LA"] * 3):
        buf = io.BytesIO()
        size = (int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        picture = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        picture.convert(mode).save(buf, format="TIFF" if mode in ("I;16", "I", "F", "CMYK") else "PNG")  # fmt: skip
        cases.append((f"mode{i}-{mode}", buf.getvalue()))
    for name, data in cases:
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        rgb = read_or_refuse(name, read_image, path)
        if rgb is not None:
            assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8, name
            assert image_size(path) == rgb.shape[:2], name


# ----------------------------------------------------------------------------- stores, checkpoints
def test_proposal_store_fuzz(tmp_path: Path) -> None:
    from semires.proposals.base import Proposals
    from semires.proposals.store import ProposalStore, verify_store

    rng = np.random.default_rng(12)
    good = tmp_path / "good"
    store = ProposalStore.create(good, "fuzz", {"k": 1})
    items = []
    for image_id in (3, 5, 8):
        masks = rng.random((4, 9, 11)) > 0.6
        items.append((image_id, Proposals.from_masks(masks.astype(np.uint8), rng.random(4).astype(np.float32))))  # fmt: skip
    store.write_shard(items)
    shard = next((good / "shards").iterdir())
    for target in (shard, good / "index.json", good / "manifest.json"):
        for name, data in mutations(target.read_bytes(), 13 + len(target.name)):
            copy_dir = tmp_path / f"{target.name}-{name}"
            shutil.copytree(good, copy_dir)
            (copy_dir / target.relative_to(good)).write_bytes(data)

            def read_all(root: Path = copy_dir) -> list[Proposals]:
                opened = ProposalStore.open(root)
                return [opened.read(i) for i in opened.image_ids()] + [opened.masks(i) for i in opened.image_ids()]  # fmt: skip

            got = read_or_refuse(f"{target.name} {name}", read_all)
            for props in got or []:
                assert len(props) >= 0
            report = read_or_refuse(f"verify {name}", verify_store, copy_dir)
            if report is not None and report.ok:  # what verify passes reads back intact
                assert read_all() is not None
            shutil.rmtree(copy_dir)


def test_checkpoint_fuzz(tmp_path: Path) -> None:
    import torch

    from semires.runtime.checkpoint import load_checkpoint, save_checkpoint

    good = tmp_path / "good.pt"
    payload = {"model": {"w": torch.arange(12.0).reshape(3, 4)}, "step": 7, "best": {"score": 1.5}}
    save_checkpoint(good, payload)
    assert load_checkpoint(good)["step"] == 7
    for name, data in mutations(good.read_bytes(), 14):
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        ck = read_or_refuse(name, load_checkpoint, path)
        if ck is not None:
            assert isinstance(ck, dict) and ck["format"] == "semires-checkpoint", name


# ----------------------------------------------------------------------------- RLE masks
def random_rles(seed: int, n: int = 4 * CASES) -> Iterator[tuple[str, dict[str, Any]]]:
    """RLE dicts of 6 x 8 masks: valid ones cut or with characters changed, garbage strings,
    count lists with wrong totals, negative, fractional or huge runs."""
    from semires.data.masks import encode

    rng = np.random.default_rng(seed)
    for i in range(n):
        mask = (rng.random((6, 8)) < 0.4).astype(np.uint8)
        counts: Any = encode(mask)["counts"]
        kind = ("cut", "flip", "garbage", "list", "total", "odd")[i % 6]
        if kind == "cut":
            counts = counts[: int(rng.integers(0, len(counts) + 1))]
        elif kind == "flip":
            chars = list(counts)
            chars[int(rng.integers(0, len(chars)))] = chr(int(rng.integers(32, 127)))
            counts = "".join(chars)
        elif kind == "garbage":
            counts = "".join(chr(int(c)) for c in rng.integers(32, 127, int(rng.integers(1, 12))))
        elif kind == "list":
            counts = [int(v) for v in rng.integers(-3, 30, int(rng.integers(0, 8)))]
        elif kind == "total":
            counts = [0, int(rng.choice([1, 47, 48, 49, 10**8, 2**40]))]
        else:
            counts = [rng.choice([1.5, 2**70, float("nan"), -0.0, 1e8, "3"]), 47]
        yield f"rle{i}-{kind}", {"size": [6, 8], "counts": counts}


def test_rle_fuzz(tmp_path: Path) -> None:
    """Every RLE is refused in one line or decodes to a non-empty mask of its size; the same
    through the JSON Lines reader (naming the line) and a dataset's statistics."""
    from PIL import Image

    from semires.data.jsonl import read_jsonl
    from semires.data.masks import decode, validate_mask

    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "a.png")
    for name, rle in random_rles(15):
        checked = read_or_refuse(name, validate_mask, rle, (6, 8), "x")
        if checked is not None:
            mask = decode(checked)
            assert mask.shape == (6, 8) and mask.any(), name
        line = {"image": "a.png", "expressions": ["a thing"], "split": "train", "mask": rle}
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(line) + "\n")
        index = read_or_refuse(f"jsonl {name}", read_jsonl, path)
        assert (index is None) == (checked is None), name
        if index is not None:
            _dataset_ok(index)


def test_refer_rle_fuzz(synth_tiny: Path, tmp_path: Path) -> None:
    """The refer layout's instances.json with one annotation's RLE replaced: refused when it is
    read (naming the annotation) or read to masks that decode."""
    from semires.data.refer import read_refer

    instances = json.loads((synth_tiny / "synthref" / "instances.json").read_text())
    for name, rle in list(random_rles(16))[:CASES]:
        height, width = instances["images"][0]["height"], instances["images"][0]["width"]
        folder = tmp_path / name / "synthref"
        shutil.copytree(synth_tiny / "synthref", folder)
        changed = copy.deepcopy(instances)
        target = next(a for a in changed["annotations"] if a["image_id"] == changed["images"][0]["id"])  # fmt: skip
        target["segmentation"] = {**rle, "size": [height, width]}
        (folder / "instances.json").write_text(json.dumps(changed))
        index = read_or_refuse(name, read_refer, folder.parent, "synthref", "synth")
        if index is not None:
            _dataset_ok(index)
        shutil.rmtree(folder.parent)


# ----------------------------------------------------------------------------- config numbers
BAD_NUMBERS = [".nan", ".inf", "-.inf", "nan", "-1", "-2.5", "1" + "0" * 400]


def numeric_keys(cls: type, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, annotation)`` of every numeric field of the dataclass tree ``cls`` (int,
    float, optional, tuples / lists of them, ``int | list[int]``)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], f"{prefix}{f.name}"
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        nested = [a for a in args if dataclasses.is_dataclass(a)]
        if nested:
            yield from numeric_keys(nested[0], f"{key}.")
            continue
        flat = {b for a in args for b in (typing.get_args(a) or (a,))}
        if flat & {int, float} and not flat & {str, bool}:
            yield key, tp


def _refuses(load: Any, override: str, names: tuple[str, ...]) -> None:
    """``load([override])`` must raise a one-line ConfigError naming each of ``names``."""
    from semires.errors import ConfigError

    try:
        load([override])
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message and all(n in message for n in names), f"{override}: {message}"
        return
    except Exception as exc:  # pragma: no cover - what this test exists to catch
        raise AssertionError(f"{override}: {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"{override} was accepted")


def test_every_numeric_config_field_refuses_non_finite_and_negative_values() -> None:
    """NaN, infinities, negative numbers and numbers beyond the float range in every numeric
    field of ``semires train``'s and ``semires run``'s configs, the model settings and the
    synthetic knobs: refused with the key named, never accepted or a traceback."""
    from semires.data.synth import SynthConfig
    from semires.model.config import ModelConfig
    from semires.run_config import RunConfig, load_run_config
    from semires.train.config import Config, load_config

    def train(overrides: list[str]) -> Any:
        return load_config(None, overrides)

    def run(overrides: list[str]) -> Any:
        return load_run_config(preset="demo", overrides=overrides)

    tried = 0
    for cls, load, prefix in ((Config, train, ""), (RunConfig, run, ""), (ModelConfig, train, "model.overrides.")):  # fmt: skip
        for key, tp in numeric_keys(cls):
            sequence = "tuple" in str(tp) or str(tp).startswith("list")
            for text in BAD_NUMBERS:
                _refuses(load, f"{prefix}{key}={f'[{text}, 1]' if sequence else text}", (prefix + key,))  # fmt: skip
                tried += 1
    for key, _ in numeric_keys(SynthConfig):  # knobs: a mapping, checked with the run config
        for text in BAD_NUMBERS:
            _refuses(run, f"synth.overrides={{{key}: {text}}}", ("synth", key))
            tried += 1
    assert tried > 400  # every section was walked

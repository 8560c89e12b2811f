"""Generating the synthetic benchmark: scenes -> images, masks and expressions -> refer layout.

Layout written by :func:`synthesize` (``DIR`` = ``out_dir``)::

    DIR/synthref/refs(synth).p      refs: one per referred object, with its sentences
    DIR/synthref/instances.json     images, annotations (visible-part RLE masks + attributes)
    DIR/synthref/synth.json         generator version, preset, seed, every knob, counts
    DIR/images/synthref/<id>.png    the images

Every image is generated from its own random stream (seed, split, image number), so an image
does not change when other splits grow. The whole folder is built under a temporary name and
renamed when complete; a rerun with the same version, seed and knobs finds it and does nothing.

Splits (by image): ``train`` and ``val`` hold i.i.d. scenes (``lookalike`` controls how often
objects repeat each other's look) with every kind of expression; ``testA`` holds scenes whose
objects all look different, with attribute-only expressions ("the small red star"); ``testB``
holds scenes with at least one pair of identical objects and only the refs that need a spatial
relation ("the red star left of the blue ring", "the second circle from the top").
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semires.data import masks as mask_ops
from semires.data.index import Image, Object, Ref, RESIndex, Sentence
from semires.data.synth.catalog import PART_ROLE, categories, category_id
from semires.data.synth.config import SPLITS, SynthConfig, make_config
from semires.data.synth.language import describe
from semires.data.synth.render import render
from semires.data.synth.scene import SceneObject, sample_scene
from semires.data.synth.semantics import MARGIN, Form, World, valid_forms
from semires.errors import ConfigError, DataError

VERSION = 1
"""Bump when the generator's output for a given config and seed changes."""

DATASET = "synthref"
SPLIT_BY = "synth"
META = "synth.json"
SCENE_MODE = {"train": "mixed", "val": "mixed", "testA": "distinct", "testB": "lookalike"}
MAX_SCENES = 50
MIN_PARALLEL = 200  # fewer images than this are generated in-process


@dataclass
class Described:
    """One referred object: its index in the scene, (form, sentence) pairs, required depth."""

    index: int
    sentences: list[tuple[Form, str]]
    required_depth: int


@dataclass
class Sample:
    """One generated image: pixels, objects in drawing order, the described objects."""

    image: np.ndarray
    objects: list[SceneObject]
    described: list[Described]


def margin_px(cfg: SynthConfig) -> float:
    """The spatial margin of the relations, in pixels (see :mod:`.semantics`)."""
    return MARGIN * cfg.image_size


def _describe_scene(
    cfg: SynthConfig, objects: list[SceneObject], split: str, rng: np.random.Generator
) -> list[Described]:
    """The referred objects of a scene with their sentences, as the split's policy allows.

    testA keeps attribute-only expressions, testB only the objects that need a relation.
    """
    world = World([ob.facts() for ob in objects], margin_px(cfg))
    out = []
    for i in range(len(objects)):
        plain = valid_forms(world, i, max_depth=0)
        if split == "testA" or (split == "testB" and plain):
            forms = plain if split == "testA" else []
        else:
            forms = valid_forms(world, i, cfg.relation_depth)
        if forms:
            n = int(rng.integers(cfg.sentences_min, cfg.sentences_max + 1))
            depth = 0 if plain else min(f.depth for f in forms)
            out.append(Described(i, describe(forms, n, rng), depth))
    keep = max(1, round(cfg.ref_share * len(out))) if out else 0
    chosen = sorted(rng.permutation(len(out))[:keep].tolist())
    return [out[j] for j in chosen]


def generate_sample(cfg: SynthConfig, seed: int, split: str, number: int) -> Sample:
    """Image ``number`` of ``split``: a scene with at least one describable object."""
    rng = np.random.default_rng([seed, SPLITS.index(split), number])
    for _ in range(MAX_SCENES):
        objects = sample_scene(cfg, rng, SCENE_MODE[split])
        described = _describe_scene(cfg, objects, split, rng)
        if described:
            return Sample(render(objects, cfg.image_size, cfg.clutter, rng), objects, described)
    raise ConfigError(
        f"no describable scene for {split} image {number} after {MAX_SCENES} tries; "
        "raise relation_depth or objects_max"
    )


# ---------------------------------------------------------------------- to the index
class _Ids:
    """Running ids for images, objects, refs and sentences (all start at 1)."""

    def __init__(self) -> None:
        self.counters = {"image": 0, "object": 0, "ref": 0, "sentence": 0}

    def next(self, kind: str) -> int:
        self.counters[kind] += 1
        return self.counters[kind]


def _object_attributes(ob: SceneObject, z: int) -> dict[str, Any]:
    look = ob.look
    parts = [{"role": "body", "colour": look.colour, "rle": mask_ops.encode(ob.visible_body)}]
    if look.pattern_colour is not None:
        parts.append(
            {
                "role": PART_ROLE[look.pattern],
                "colour": look.pattern_colour,
                "rle": mask_ops.encode(ob.visible_part),
            }
        )
    return {
        "shape": look.shape,
        "colour": look.colour,
        "size": look.size,
        "pattern": look.pattern,
        "pattern_colour": look.pattern_colour,
        "layout": {"direction": ob.layout.direction, "phase": round(ob.layout.phase, 4)},
        "center": [round(ob.cx, 2), round(ob.cy, 2)],
        "radius": round(ob.r, 2),
        "z": z,
        "visible_fraction": round(float(ob.visible.sum()) / float(ob.full.sum()), 4),
        "parts": parts,
    }


@dataclass
class Encoded:
    """A sample reduced to what the dataset keeps (small and picklable, for worker processes)."""

    png: bytes
    objects: list[tuple[dict[str, Any], mask_ops.RLE]]  # (attributes, visible mask) by z
    described: list[Described]


def encode_sample(sample: Sample) -> Encoded:
    """PNG-encode the image and RLE-encode the masks of a sample."""
    objects = [
        (_object_attributes(ob, z), mask_ops.encode(ob.visible))
        for z, ob in enumerate(sample.objects)
    ]
    return Encoded(_png(sample.image), objects, sample.described)


def _encoded_sample(task: tuple[SynthConfig, int, str, int]) -> Encoded:
    return encode_sample(generate_sample(*task))


def _add_sample(
    sample: Encoded, split: str, ids: _Ids, cfg: SynthConfig, index_parts: dict[str, list[Any]]
) -> str:
    """Append the sample's image, objects and refs to ``index_parts``; returns the file name."""
    image_id = ids.next("image")
    file_name = f"{image_id:06d}.png"
    side = cfg.image_size
    index_parts["images"].append(Image(image_id, file_name, side, side))
    described = {d.index: d for d in sample.described}
    for z, (attributes, rle) in enumerate(sample.objects):
        object_id = ids.next("object")
        cat = category_id(attributes["shape"])
        index_parts["objects"].append(
            Object(
                id=object_id,
                image_id=image_id,
                category_id=cat,
                bbox=tuple(mask_ops.bbox(rle)),  # type: ignore[arg-type]
                segmentation=rle,
                area=float(mask_ops.area(rle)),
                attributes=attributes,
            )
        )
        entry = described.get(z)
        if entry is None:
            continue
        sentences = [Sentence.from_text(ids.next("sentence"), text) for _, text in entry.sentences]
        attributes["required_depth"] = entry.required_depth
        attributes["expressions"] = [
            {"sent_id": s.id, "form": form.to_dict(), "depth": form.depth, "cost": form.cost}
            for s, (form, _) in zip(sentences, entry.sentences, strict=True)
        ]
        index_parts["refs"].append(Ref(ids.next("ref"), object_id, image_id, cat, split, sentences))
    return file_name


def _png(image: np.ndarray) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def default_workers(images: int) -> int:
    """Worker processes for ``images`` images: one per CPU (at most 8), one for small sets."""
    return 1 if images < MIN_PARALLEL else max(1, min(8, len(os.sched_getaffinity(0))))


@contextlib.contextmanager
def _mapper(workers: int) -> Iterator[Callable[..., Iterator[Any]]]:
    """An ordered ``map``: the builtin one, or a pool of ``workers`` spawned processes."""
    if workers <= 1:
        yield map
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield lambda fn, items: pool.map(fn, items, chunksize=8)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def build(
    cfg: SynthConfig,
    seed: int,
    image_dir: Path,
    progress: Callable[[int], Any] | None = None,
    workers: int = 1,
) -> RESIndex:
    """Generate every split: write the PNGs into ``image_dir`` and return the index.

    Images are generated in ``workers`` processes; the result does not depend on their number.
    """
    ids = _Ids()
    parts: dict[str, list[Any]] = {"images": [], "objects": [], "refs": []}
    image_dir.mkdir(parents=True, exist_ok=True)
    tasks = [(cfg, seed, split, n) for split in SPLITS for n in range(cfg.images(split))]
    with _mapper(workers) as map_:
        for task, sample in zip(tasks, map_(_encoded_sample, tasks), strict=True):
            file_name = _add_sample(sample, task[2], ids, cfg, parts)
            (image_dir / file_name).write_bytes(sample.png)
            if progress is not None:
                progress(1)
    return RESIndex(
        parts["images"],
        parts["objects"],
        parts["refs"],
        categories(),
        name=DATASET,
        split_by=SPLIT_BY,
        image_root=image_dir,
        source="synthetic",
    )


# ---------------------------------------------------------------------- on disk
def _meta(cfg: SynthConfig, preset: str, seed: int, index: RESIndex | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "generator": "semires.data.synth",
        "version": VERSION,
        "preset": preset,
        "seed": seed,
        "config": cfg.to_dict(),
        "margin_px": margin_px(cfg),
    }
    if index is not None:
        meta["counts"] = {
            split: {
                "images": cfg.images(split),
                "refs": len(index.refs_in(split)),
                "sentences": sum(len(r.sentences) for r in index.refs_in(split)),
            }
            for split in index.splits()
        }
    return meta


def read_meta(out_dir: str | Path) -> dict[str, Any] | None:
    """The ``synth.json`` of a synthetic dataset folder, or None if there is none."""
    path = Path(out_dir) / DATASET / META
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(out_dir: str | Path, cfg: SynthConfig, seed: int) -> bool:
    """Whether ``out_dir`` already holds the dataset of this generator version, seed and knobs."""
    out_dir = Path(out_dir)
    meta = read_meta(out_dir)
    if meta is None:
        return False
    wanted = _meta(cfg, meta.get("preset", ""), seed, None)
    if any(meta.get(k) != wanted[k] for k in ("generator", "version", "seed", "config")):
        return False
    folder = out_dir / DATASET
    images = out_dir / "images" / DATASET
    expected = sum(cfg.images(s) for s in SPLITS)
    return (
        (folder / f"refs({SPLIT_BY}).p").is_file()
        and (folder / "instances.json").is_file()
        and images.is_dir()
        and sum(1 for _ in images.glob("*.png")) == expected
    )


def _check_target(out_dir: Path) -> None:
    """Refuse to replace a folder that is not a synthetic dataset."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"output folder {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and read_meta(out_dir) is None:
        raise DataError(
            f"output folder {out_dir} is not empty and has no {DATASET}/{META}; "
            "refusing to replace it (pick an empty or new folder)"
        )


def synthesize(
    out_dir: str | Path,
    preset: str = "demo",
    seed: int = 0,
    *,
    force: bool = False,
    progress: bool = False,
    workers: int | None = None,
    **overrides: Any,
) -> Path:
    """Write the synthetic benchmark of ``preset`` (with knob ``overrides``) to ``out_dir``.

    Returns ``out_dir``. Does nothing when ``out_dir`` already holds the same dataset (same
    generator version, seed and knobs) unless ``force``. The folder is written atomically: an
    interrupted run leaves the previous content (or nothing) behind. An unknown preset or knob
    raises :class:`~semires.errors.ConfigError`; a non-empty ``out_dir`` that is not a synthetic
    dataset raises :class:`~semires.errors.DataError`. ``workers`` processes generate the images
    (default: :func:`default_workers`); the output is the same for any number.
    """
    from semires.data.refer import write_refer
    from semires.utils.io import atomic_dir, atomic_write_json

    cfg = make_config(preset, **overrides)
    if not 0 <= seed < 2**63:
        raise ConfigError(f"synthetic seed {seed} is out of range; expected 0 <= seed < 2**63")
    out_dir = Path(out_dir)
    _check_target(out_dir)
    if not force and is_complete(out_dir, cfg, seed):
        return out_dir
    total = sum(cfg.images(s) for s in SPLITS)
    with _sigterm_raises(), atomic_dir(out_dir) as tmp, _progress_bar(total, progress) as bar:
        jobs = default_workers(total) if workers is None else workers
        index = build(cfg, seed, tmp / "images" / DATASET, bar, jobs)
        write_refer(index, tmp, DATASET, SPLIT_BY)
        atomic_write_json(tmp / DATASET / META, _meta(cfg, preset, seed, index))
    return out_dir


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` meanwhile, so that a killed run still cleans up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[[int], Any] | None]:
    """A tqdm bar's ``update`` (or None when disabled)."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc="synth", unit="img") as bar:
        yield bar.update


def load(out_dir: str | Path) -> RESIndex:
    """Read a synthetic dataset written by :func:`synthesize`."""
    from semires.data.refer import read_refer

    return read_refer(out_dir, DATASET, SPLIT_BY)

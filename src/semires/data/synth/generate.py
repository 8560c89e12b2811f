"""Generating the synthetic benchmark: scenes -> images, masks and expressions -> refer layout.

Layout written by :func:`synthesize` (``DIR`` = ``out_dir``)::

    DIR/synthref/refs(synth).p      refs: one per referred object, with its sentences
    DIR/synthref/instances.json     images, annotations (visible-part RLE masks + attributes)
    DIR/synthref/synth.json         generator version, preset, seed, every knob, counts
    DIR/images/synthref/<id>.png    the images

Every image is generated from its own random stream (seed, split, image number), so an image
does not change when other splits grow. The whole folder is built under the hidden name
``.DIR.partial`` and renamed when complete; a rerun with the same version, seed and knobs finds
it and does nothing. Generation is resumable: images are generated in chunks of
:data:`CHUNK`, and each finished chunk is recorded (``chunks/<n>.pkl``, written atomically after
its images); a killed or failed generation leaves ``.DIR.partial`` behind, and the next
:func:`synthesize` with the same knobs and seed continues from the recorded chunks (the result
is byte-identical to an uninterrupted run). Other knobs or seed start it afresh.

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
import shutil
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
CHUNK = 128  # images per resumable chunk
PARTIAL = ".{name}.partial"  # the folder a dataset is built in, next to it
POLYGON_MIN_IOU = 0.9  # a mask is written as polygons only when they reproduce it this well


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
    return MARGIN * cfg.short_side


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
            return Sample(render(objects, cfg.shape, cfg.clutter, rng), objects, described)
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
    """A sample reduced to what the dataset keeps (small and picklable, for worker processes).

    ``objects`` holds, by z, (attributes, mask RLE, polygons or None): when an object's mask is
    written as COCO polygons, the RLE is the polygons' rasterisation (what a reader decodes).
    """

    png: bytes  # the encoded image (PNG, or JPEG with ``image_format: jpg``)
    objects: list[tuple[dict[str, Any], mask_ops.RLE, list[list[float]] | None]]
    described: list[Described]


def encode_sample(
    sample: Sample,
    image_format: str = "png",
    polygon_rng: np.random.Generator | None = None,
    polygons: float = 0.0,
) -> Encoded:
    """Encode the image and the masks of a sample (RLE; a ``polygons`` share as polygons)."""
    objects = []
    for z, ob in enumerate(sample.objects):
        rle, poly = mask_ops.encode(ob.visible), None
        if polygon_rng is not None and polygon_rng.random() < polygons:
            poly = mask_polygons(ob.visible)
            if poly is not None:
                h, w = ob.visible.shape
                rle = mask_ops.from_segmentation(poly, h, w)
        objects.append((_object_attributes(ob, z), rle, poly))
    return Encoded(_image_bytes(sample.image, image_format), objects, sample.described)


def mask_polygons(mask: np.ndarray) -> list[list[float]] | None:
    """COCO polygons ([x0, y0, x1, y1, ...] per outline) tracing ``mask``, or None when their
    rasterisation would differ from it by more than :data:`POLYGON_MIN_IOU` (holes: polygons
    cannot carve them)."""
    from skimage.measure import approximate_polygon, find_contours

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    y0, x0 = max(0, rows[0] - 1), max(0, cols[0] - 1)
    crop = mask[y0 : rows[-1] + 2, x0 : cols[-1] + 2]
    out = []
    for contour in find_contours(np.pad(crop, 1).astype(np.float32), 0.5):
        simple = approximate_polygon(contour, tolerance=0.5)
        if len(simple) >= 3:
            xy = simple[:, ::-1] + (x0 - 1, y0 - 1)
            out.append([round(float(v), 2) for v in xy.ravel()])
    if not out:
        return None
    h, w = mask.shape
    drawn = mask_ops.decode(mask_ops.from_segmentation(out, h, w))
    iou = (drawn & mask).sum() / max(1, (drawn | mask).sum())
    return out if iou >= POLYGON_MIN_IOU else None


def _encoded_sample(task: tuple[SynthConfig, int, str, int]) -> Encoded:
    cfg, seed, split, number = task
    sample = generate_sample(cfg, seed, split, number)
    # a stream of its own, so that the polygons never change the scene
    rng = np.random.default_rng([seed, SPLITS.index(split), number, 1]) if cfg.polygons else None
    return encode_sample(sample, cfg.image_format, rng, cfg.polygons)


def _add_sample(
    sample: Encoded, split: str, ids: _Ids, cfg: SynthConfig, index_parts: dict[str, list[Any]]
) -> str:
    """Append the sample's image, objects and refs to ``index_parts``; returns the file name."""
    image_id = ids.next("image")
    file_name = image_name(image_id, cfg)
    height, width = cfg.shape
    index_parts["images"].append(Image(image_id, file_name, height, width))
    described = {d.index: d for d in sample.described}
    for z, (attributes, rle, poly) in enumerate(sample.objects):
        object_id = ids.next("object")
        cat = category_id(attributes["shape"])
        index_parts["objects"].append(
            Object(
                id=object_id,
                image_id=image_id,
                category_id=cat,
                bbox=tuple(mask_ops.bbox(rle)),  # type: ignore[arg-type]
                segmentation=rle if poly is None else poly,
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


IMAGE_FORMATS = {"png": ("PNG", {"compress_level": 1}), "jpg": ("JPEG", {"quality": 92})}
"""``image_format`` -> (PIL format, save options). PNG keeps masks and pixels exactly in step;
JPEG is COCO's format (smaller, faster to write and read, lossy at the edges)."""


def _image_bytes(image: np.ndarray, image_format: str = "png") -> bytes:
    from PIL import Image as PILImage

    name, options = IMAGE_FORMATS[image_format]
    buf = io.BytesIO()
    PILImage.fromarray(image).save(buf, format=name, **options)
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


def image_name(image_id: int, cfg: SynthConfig) -> str:
    """The file name of image ``image_id`` (ids are 1-based, in generation order)."""
    return f"{image_id:06d}.{cfg.image_format}"


def _tasks(cfg: SynthConfig, seed: int) -> list[tuple[SynthConfig, int, str, int]]:
    return [(cfg, seed, split, n) for split in SPLITS for n in range(cfg.images(split))]


def generate_chunks(
    cfg: SynthConfig,
    seed: int,
    image_dir: Path,
    chunk_dir: Path,
    progress: Callable[[int], Any] | None = None,
    workers: int = 1,
) -> list[Encoded]:
    """Generate every image into ``image_dir``, resuming from the chunks in ``chunk_dir``.

    Chunk ``c`` (images ``c * CHUNK ...``) is recorded as ``chunk_dir/<c>.pkl`` (the samples
    without their image bytes) once all its images are written, so a recorded chunk is complete
    and is not generated again. Returns the samples (image bytes dropped) in generation order.
    """
    from semires.utils.io import atomic_write_pickle

    image_dir.mkdir(parents=True, exist_ok=True)
    chunk_dir.mkdir(parents=True, exist_ok=True)
    tasks = _tasks(cfg, seed)
    n_chunks = -(-len(tasks) // CHUNK)
    done: dict[int, list[Encoded]] = {}
    for c in range(n_chunks):
        path = chunk_dir / f"{c:05d}.pkl"
        if path.is_file():
            try:
                done[c] = _read_chunk(path, min(CHUNK, len(tasks) - c * CHUNK))
            except DataError:
                path.unlink()  # unreadable (cannot happen with atomic writes): generate again
    if progress is not None and done:
        progress(sum(len(v) for v in done.values()))
    todo = [t for c in range(n_chunks) if c not in done for t in tasks[c * CHUNK : (c + 1) * CHUNK]]
    positions = [
        i
        for c in range(n_chunks)
        if c not in done
        for i in range(c * CHUNK, min((c + 1) * CHUNK, len(tasks)))
    ]
    pending: list[Encoded] = []
    with _mapper(workers) as map_:
        for pos, sample in zip(positions, map_(_encoded_sample, todo), strict=True):
            (image_dir / image_name(pos + 1, cfg)).write_bytes(sample.png)
            pending.append(Encoded(b"", sample.objects, sample.described))
            if pos + 1 == len(tasks) or (pos + 1) % CHUNK == 0:
                c = pos // CHUNK
                atomic_write_pickle(chunk_dir / f"{c:05d}.pkl", pending)
                done[c], pending = pending, []
            if progress is not None:
                progress(1)
    return [sample for c in range(n_chunks) for sample in done[c]]


def _read_chunk(path: Path, expected: int) -> list[Encoded]:
    import pickle

    try:
        with path.open("rb") as fh:
            records = pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError) as exc:
        raise DataError(f"{path}: unreadable chunk record ({exc})") from exc
    if not isinstance(records, list) or len(records) != expected:
        raise DataError(f"{path}: expected {expected} samples")
    return records


def build(
    cfg: SynthConfig,
    seed: int,
    image_dir: Path,
    progress: Callable[[int], Any] | None = None,
    workers: int = 1,
    chunk_dir: Path | None = None,
) -> RESIndex:
    """Generate every split: write the images into ``image_dir`` and return the index.

    Images are generated in ``workers`` processes; the result does not depend on their number.
    With ``chunk_dir`` the generation resumes from (and records) chunks there (see
    :func:`generate_chunks`); without, the chunks go to a temporary folder.
    """
    import tempfile

    with contextlib.ExitStack() as stack:
        if chunk_dir is None:
            chunk_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        samples = generate_chunks(cfg, seed, image_dir, chunk_dir, progress, workers)
    ids = _Ids()
    parts: dict[str, list[Any]] = {"images": [], "objects": [], "refs": []}
    for task, sample in zip(_tasks(cfg, seed), samples, strict=True):
        _add_sample(sample, task[2], ids, cfg, parts)
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
        and sum(1 for _ in images.glob(f"*.{cfg.image_format}")) == expected
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
    generator version, seed and knobs) unless ``force``. The folder is built in
    :func:`partial_dir` and renamed onto ``out_dir`` when complete, so ``out_dir`` holds the
    previous content (or nothing) until then; an interrupted run leaves the partial folder,
    and the next call with the same knobs and seed resumes it (byte-identical result). An unknown preset or knob
    raises :class:`~semires.errors.ConfigError`; a non-empty ``out_dir`` that is not a synthetic
    dataset raises :class:`~semires.errors.DataError`. ``workers`` processes generate the images
    (default: :func:`default_workers`); the output is the same for any number.
    """
    from semires.data.refer import write_refer
    from semires.utils.io import atomic_write_json, replace_dir

    cfg = make_config(preset, **overrides)
    if not 0 <= seed < 2**63:
        raise ConfigError(f"synthetic seed {seed} is out of range; expected 0 <= seed < 2**63")
    out_dir = Path(out_dir)
    _check_target(out_dir)
    if not force and is_complete(out_dir, cfg, seed):
        return out_dir
    total = sum(cfg.images(s) for s in SPLITS)
    work = partial_dir(out_dir)
    job = _meta(cfg, preset, seed, None)
    if work.exists() and (force or _read_json(work / "job.json") != job):
        shutil.rmtree(work)  # another dataset's (or a forced) partial build: start afresh
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / "job.json", job)
    with _sigterm_raises(), _progress_bar(total, progress) as bar:
        jobs = default_workers(total) if workers is None else workers
        index = build(cfg, seed, work / "images" / DATASET, bar, jobs, work / "chunks")
        write_refer(index, work, DATASET, SPLIT_BY)
        atomic_write_json(work / DATASET / META, _meta(cfg, preset, seed, index))
    shutil.rmtree(work / "chunks")
    (work / "job.json").unlink()
    replace_dir(work, out_dir)
    return out_dir


def partial_dir(out_dir: str | Path) -> Path:
    """Where the dataset of ``out_dir`` is built (and a killed build waits to be resumed)."""
    out_dir = Path(out_dir)
    return out_dir.with_name(PARTIAL.format(name=out_dir.name))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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

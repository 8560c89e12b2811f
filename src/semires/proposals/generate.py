"""Generating a proposal store for a dataset: resumable, parallel, distributed.

The wanted image ids are sorted and cut into chunks of ``shard_size``; chunk k becomes one shard
(named after its first image id and a hash of its ids) and is handled by rank ``k % world_size``.
The plan depends only on the wanted ids, so

- a rerun skips the images already in the store and rebuilds exactly the missing chunks: a run
  killed at any moment (shards are written atomically) resumes to the same store as an
  uninterrupted run. Each image's file fingerprint is stored with its candidates, and a rerun
  on a store whose images were made from other files (same ids, other content) stops with a
  :class:`~semires.errors.ProposalError` instead of mixing them (``overwrite`` starts afresh);
- under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``) every rank writes its own
  chunks' shards and the result is byte for byte the store one process writes; rank 0 writes
  the index at the end (after a barrier when a process group is available).

``workers > 1`` decodes and segments images in a process pool (CPU generators); an image that
cannot be read is skipped with a warning and listed at the end (and in ``failed.json``).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semires.data.index import RESIndex
from semires.errors import ConfigError, ProposalError, SemiresError
from semires.proposals.base import MaskGenerator, Proposals
from semires.proposals.checks import image_fingerprint, require_same_files
from semires.proposals.store import ProposalStore
from semires.utils.io import atomic_write_json

FAILED_FILE = "failed.json"


@dataclass(frozen=True)
class Rank:
    """This process's place in a distributed run (``rank`` of ``world_size``)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> Rank:
        """From torchrun's ``RANK`` / ``WORLD_SIZE`` (a single process when they are unset)."""
        try:
            rank = int(os.environ.get("RANK", "0"))
            world = int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError as exc:
            raise ConfigError(f"RANK / WORLD_SIZE must be integers ({exc})") from None
        if not 0 <= rank < world:
            raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world}")
        return cls(rank, world)


@dataclass
class GenerationReport:
    """What a :func:`generate_store` call did. Counts over this process's share; under
    torchrun with a process group, rank 0's report holds the totals over every rank
    (``ranks`` says how many were added up; ``seconds``: the slowest rank's)."""

    store: Path
    wanted: int
    already_done: int = 0
    generated: int = 0
    candidates: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    ranks: int = 1
    #: the ranks' counts went to rank 0 (a process group existed): only rank 0 has a report to
    #: say; without one (no ``MASTER_ADDR``) each rank's report is its own share
    gathered: bool = False

    _COUNTS = ("wanted", "already_done", "generated", "candidates")

    def counts(self) -> dict[str, Any]:
        """This process's counts (what :meth:`add_up` sums over the ranks)."""
        return {
            **{k: getattr(self, k) for k in self._COUNTS},
            "failed": dict(self.failed),
            "seconds": self.seconds,
        }

    def add_up(self, parts: list[dict[str, Any]]) -> None:
        """Set the totals of every rank's :meth:`counts` (this one's among them)."""
        for key in self._COUNTS:
            setattr(self, key, sum(int(p[key]) for p in parts))
        self.failed = {k: v for p in parts for k, v in p["failed"].items()}
        self.seconds = max(float(p["seconds"]) for p in parts)
        self.ranks = len(parts)

    @property
    def images_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else 0.0


def select_images(
    index: RESIndex,
    split: str = "train",
    split_dir: str | Path | None = None,
    all_images: bool = False,
) -> list[int]:
    """The image ids to propose for: the unlabeled images of a labeled/unlabeled split folder,
    or (``all_images``) every image of ``split``. Exactly one of the two must be chosen."""
    if (split_dir is None) == (not all_images):
        raise ConfigError(
            "choose the images: --split-dir DIR (the unlabeled images of a split) "
            "or --all-images (every image of the split)"
        )
    ids = index.image_ids(split)
    if all_images:
        return ids
    from semires.data.splits import read_split

    labeled_split = read_split(split_dir, index)
    if labeled_split.split != split:
        raise ConfigError(
            f"split folder {split_dir} divides split {labeled_split.split!r}, not {split!r}"
        )
    return sorted(labeled_split.unlabeled_images)


def plan_chunks(image_ids: list[int], shard_size: int) -> list[list[int]]:
    """The sorted unique ids cut into chunks of ``shard_size`` (the last one may be shorter)."""
    if shard_size < 1:
        raise ConfigError(f"shard size (--shard-size): expected an integer >= 1, got {shard_size}")
    ids = sorted(set(image_ids))
    return [ids[i : i + shard_size] for i in range(0, len(ids), shard_size)]


def cpu_note(generator: MaskGenerator, knob: str = "--set device=cpu") -> str | None:
    """The line to say when ``device: auto`` left a network generator (SAM, SAM 2) on the CPU
    (no CUDA device): it is hundreds of times slower there. ``knob``: how to choose the CPU
    without the note. None when the device was chosen, or is a GPU, or the generator has none."""
    chosen = getattr(getattr(generator, "config", None), "device", None)
    if chosen != "auto" or str(getattr(generator, "device", "")) != "cpu":
        return None
    return (
        f"note: no CUDA device, so the {generator.name} generator runs on the CPU (tens of "
        f"seconds an image; {knob} chooses it without this note)"
    )


# ---------------------------------------------------------------------------- workers
_WORKER_GENERATOR: MaskGenerator | None = None


def _init_worker(generator: MaskGenerator, parent_pid: int | None = None) -> None:
    """A worker's start: its generator, and (in a pool) death with the parent process."""
    global _WORKER_GENERATOR
    _WORKER_GENERATOR = generator
    if parent_pid is not None:
        from semires.utils.workers import die_with_parent

        die_with_parent(parent_pid)


def _propose_one(job: tuple[int, str]) -> tuple[int, Proposals | str]:
    """Read one image and generate its candidates; an unreadable image gives its error text."""
    from semires.data.images import read_image

    image_id, path = job
    assert _WORKER_GENERATOR is not None
    try:
        image = read_image(path)
    except SemiresError as err:
        return image_id, str(err)
    return image_id, _WORKER_GENERATOR.generate(image)


def _results(
    generator: MaskGenerator, jobs: list[tuple[int, str]], workers: int
) -> Iterator[tuple[int, Proposals | str]]:
    """Results of ``jobs`` in order, in this process or in a pool of ``workers`` processes."""
    if workers <= 1 or len(jobs) <= 1:
        _init_worker(generator)
        yield from map(_propose_one, jobs)
        return
    import multiprocessing

    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(generator, os.getpid()),
    ) as pool:
        yield from pool.map(_propose_one, jobs, chunksize=4)


# ---------------------------------------------------------------------------- generation
def generate_store(
    generator: MaskGenerator,
    image_paths: dict[int, str | Path],
    out_dir: str | Path,
    *,
    shard_size: int = 64,
    workers: int = 1,
    rank: Rank | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> GenerationReport:
    """Generate (or complete) the proposal store ``out_dir`` for the images ``image_paths``.

    Images already in the store are skipped; the store must have been made with the same
    generator and parameters, from the same image files (:class:`~semires.errors.ProposalError`
    otherwise, naming what differs). ``overwrite`` first deletes the store at ``out_dir`` (one
    process only) and makes it again. With several ranks, each handles its chunks and rank 0
    finalises the index.
    """
    rank = rank or Rank.from_env()
    # every setting and the images are checked before the store is created or changed
    plan = plan_chunks(list(image_paths), shard_size)
    _check_workers(generator, workers)
    _check_images_exist(image_paths)
    store = _open_store(generator, image_paths, out_dir, overwrite, rank, progress)
    chunks = [c for k, c in enumerate(plan) if k % rank.world_size == rank.rank]
    todo = [[i for i in chunk if not store.has(i)] for chunk in chunks]
    jobs = [(i, str(image_paths[i])) for chunk in todo for i in chunk]
    report = GenerationReport(store.root, sum(map(len, chunks)))
    report.already_done = report.wanted - len(jobs)
    start = time.perf_counter()
    with _progress_bar(generator, len(jobs), progress, rank) as bar:
        results = _results(generator, jobs, workers)
        slow = _SlowNote(bar, shard_size, start) if progress and rank.rank == 0 else None
        _write_chunks(store, todo, results, image_paths, bar, report, rank, slow)
    report.seconds = time.perf_counter() - start
    _finish(store, report, rank)
    if jobs and report.generated == 0 and rank.world_size == 1:
        first = min(report.failed)
        raise ProposalError(
            f"proposal store {store.root}: none of the {len(jobs)} images could be read "
            f"(e.g. image {first}: {report.failed[first]}); see {store.root / FAILED_FILE}"
        )
    return report


def _check_workers(generator: MaskGenerator, workers: int) -> None:
    """``workers`` processes: an integer >= 1, and 1 for a generator on a GPU."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers (--workers): expected an integer >= 1, got {workers!r}")
    if workers > 1 and str(getattr(generator, "device", "cpu")).startswith("cuda"):
        raise ConfigError("--workers > 1 is for CPU generators; use torchrun for several GPUs")


def _open_store(
    generator: MaskGenerator,
    image_paths: dict[int, str | Path],
    out_dir: str | Path,
    overwrite: bool,
    rank: Rank,
    progress: bool,
) -> ProposalStore:
    """The store to write into (deleted first with ``overwrite``), made with the same generator
    and parameters from the same image files as its images already there."""
    if overwrite:
        if rank.world_size > 1:
            raise ConfigError(
                "overwrite (--overwrite) deletes the store and runs in one process; delete "
                f"{out_dir} first, then start the ranks"
            )
        delete_store(out_dir)
    store = ProposalStore.create(out_dir, generator.name, generator.params())
    require_same_files(
        store,
        image_paths,
        "use another --out, or --overwrite (overwrite=True) to make it again",
        progress=progress and rank.rank == 0,
    )
    return store


def _progress_bar(generator: MaskGenerator, total: int, progress: bool, rank: Rank) -> Any:
    """The bar of the images to generate (shown by rank 0)."""
    from semires.utils.progress import progress_bar

    return progress_bar(
        total=total,
        enabled=progress and rank.rank == 0,
        unit="img",
        desc=f"propose {generator.name}" + (f" [rank {rank.rank}]" if rank.world_size > 1 else ""),
        dynamic_ncols=True,
    )


def _check_images_exist(image_paths: dict[int, str | Path]) -> None:
    """At least one of the wanted image files must exist (else the image root is wrong); a
    missing one among others is skipped and listed, as an unreadable one is."""
    if not image_paths or any(Path(p).is_file() for p in image_paths.values()):
        return
    first = min(image_paths)
    raise ProposalError(
        f"none of the {len(image_paths)} images to propose for exists (e.g. image {first}: "
        f"{image_paths[first]}); check --image-root / the dataset's image folder"
    )


def delete_store(root: str | Path) -> None:
    """Delete the proposal store at ``root`` (its manifest, index, shards and failure list).

    Nothing happens when ``root`` does not exist; a folder that is not a proposal store is left
    alone (:class:`~semires.errors.ProposalError`).
    """
    import shutil

    root = Path(root)
    if not root.exists():
        return
    if not (root / "manifest.json").is_file():
        raise ProposalError(f"{root} is not a proposal store (no manifest.json); not deleting it")
    shutil.rmtree(root / "shards", ignore_errors=True)
    for name in ("index.json", FAILED_FILE, "manifest.json"):
        (root / name).unlink(missing_ok=True)


def _write_chunks(
    store: ProposalStore,
    todo: list[list[int]],
    results: Iterator[tuple[int, Proposals | str]],
    image_paths: dict[int, str | Path],
    bar: Any,
    report: GenerationReport,
    rank: Rank,
    slow: _SlowNote | None = None,
) -> None:
    """Consume the results chunk by chunk and write each chunk's shard (failures recorded),
    with the fingerprints of the image files the candidates were made from."""
    for chunk in todo:
        items = []
        for image_id, result in (next(results) for _ in chunk):
            bar.update(1)
            if slow is not None:
                slow.image_done(len(chunk))
            if isinstance(result, str):
                warnings.warn(f"skipped image {image_id}: {result}", stacklevel=3)
                report.failed[image_id] = result
                continue
            items.append((image_id, result))
            report.candidates += len(result)
        if items:
            fingerprints = {i: image_fingerprint(image_paths[i]) for i, _ in items}
            store.write_shard(items, update_index=rank.world_size == 1, fingerprints=fingerprints)
            report.generated += len(items)


#: seconds per image from which ``propose`` says what a killed run loses (SAM on a CPU takes
#: tens of seconds an image, on a GPU about one; the classical generator well under one)
SLOW_IMAGE_S = 2.0


class _SlowNote:
    """One console line, once the first image is done, when images are slow: the store is
    written a whole shard at a time (atomically), so a killed run redoes the unfinished shard
    of each process, and at this speed that is worth saying (with the knob that shrinks it)."""

    def __init__(self, bar: Any, shard_size: int, start: float) -> None:
        self.bar, self.shard_size, self.start, self.said = bar, shard_size, start, False

    def image_done(self, chunk: int) -> None:
        if self.said:
            return
        self.said = True
        per_image = time.perf_counter() - self.start
        if per_image < SLOW_IMAGE_S or chunk < 2:
            return
        from semires.utils.progress import clock

        line = (
            f"note: {per_image:.0f} s for the first image; the store is written a shard of "
            f"{self.shard_size} images at a time, so a killed run redoes up to "
            f"{self.shard_size - 1} images (~{clock((self.shard_size - 1) * per_image)}) per "
            "process; a smaller --shard-size (proposals.shard_size) loses less"
        )
        write = getattr(self.bar, "write", None)  # tqdm's: above the bar
        (write or (lambda text: print(text, flush=True)))(line)


def _finish(store: ProposalStore, report: GenerationReport, rank: Rank) -> None:
    """Single process: write the index. Several ranks: gather the failures (rank 0's report then
    lists every rank's) and let rank 0 write the index once every rank is done (the gather is
    the barrier); without a process group every rank finalises (the index is rebuilt from the
    shards, so the last one to finish writes the complete index)."""
    failed = dict(report.failed)
    if rank.world_size > 1:
        import torch.distributed as dist

        owned = dist.is_available() and not dist.is_initialized()
        group = _process_group()
        if group is not None:
            gathered: list[dict[str, Any] | None] = [None] * rank.world_size
            dist.all_gather_object(gathered, report.counts())
            report.gathered = True
            if owned:
                # a group this function created is shut down here: left to interpreter exit,
                # gloo's threads can abort the process ("terminate called without an active
                # exception") once the rank hosting the store has gone
                dist.destroy_process_group()
            if rank.rank != 0:
                return
            report.add_up([part for part in gathered if part is not None])  # the totals
            failed = dict(report.failed)
    store.write_index()
    store.remove_temp_files()
    path = store.root / FAILED_FILE
    if failed:
        atomic_write_json(path, {str(k): v for k, v in sorted(failed.items())})
    else:
        path.unlink(missing_ok=True)


def _process_group() -> object | None:
    """The default process group, initialised with gloo from torchrun's env when possible."""
    import torch.distributed as dist

    if not dist.is_available():
        return None
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            return None
        from datetime import timedelta

        dist.init_process_group("gloo", timeout=timedelta(hours=1))
    return dist.group.WORLD


def image_paths(index: RESIndex, image_ids: list[int]) -> dict[int, Path]:
    """Image id -> file of the index (a DataError for an id the index does not have)."""
    return {i: index.image_path(i) for i in image_ids}

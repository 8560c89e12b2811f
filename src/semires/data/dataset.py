"""Torch datasets for training and evaluation, with stateless, resumable sampling.

Sampling is a pure function of ``(seed, stream, global step, rank)``: the indices of the batch a
rank sees at a given optimizer step never depend on what happened before. A run resumed at step
``t`` therefore sees exactly the batches an uninterrupted run sees, and per-sample randomness
(which sentence of a ref, augmentation parameters) is drawn from a generator seeded by the same
key. Streams: 0 = labeled, 1 = unlabeled.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from semires.data.flip import flip_image, flip_sentence
from semires.data.index import Ref, RESIndex
from semires.data.transforms import Blur, Jitter, resize_image, resize_mask
from semires.utils.bits import PackedMasks

LABELED, UNLABELED = 0, 1


def batch_indices(
    n: int, batch: int, seed: int, stream: int, step: int, rank: int = 0, world: int = 1
) -> list[int]:
    """Indices into a dataset of ``n`` items for one rank's batch at global ``step``.

    Every ``cycle`` of ``n // (batch * world)`` steps is a fresh permutation (an epoch over the
    data), so each item is seen once per cycle; a dataset smaller than one global batch is
    repeated within the cycle.
    """
    if n <= 0:
        raise ValueError("cannot sample from an empty dataset")
    global_batch = batch * world
    per_cycle = max(1, n // global_batch)
    cycle, pos = divmod(step, per_cycle)
    repeats = math.ceil(global_batch / n) if n < global_batch else 1
    perm = np.concatenate(
        [np.random.default_rng([seed, stream, cycle, r]).permutation(n) for r in range(repeats)]
    )
    start = pos * global_batch + rank * batch
    return perm[start : start + batch].tolist()


@dataclass(frozen=True)
class SampleKey:
    """What a dataset needs to produce one sample deterministically."""

    index: int
    stream: int
    step: int
    slot: int  # position of the sample in the global batch

    def rng(self, seed: int) -> np.random.Generator:
        return np.random.default_rng([seed, self.stream, self.step, self.slot, 7])


class StepBatchSampler(Sampler[list[SampleKey]]):
    """Yields this rank's batch of :class:`SampleKey` for steps ``start .. stop - 1``."""

    def __init__(
        self,
        n: int,
        batch: int,
        seed: int,
        stream: int,
        start: int,
        stop: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.n, self.batch, self.seed, self.stream = n, batch, seed, stream
        self.start, self.stop, self.rank, self.world = start, stop, rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for step in range(self.start, self.stop):
            idx = batch_indices(
                self.n, self.batch, self.seed, self.stream, step, self.rank, self.world
            )
            base = self.rank * self.batch
            yield [SampleKey(i, self.stream, step, base + j) for j, i in enumerate(idx)]


class _ImageCache:
    """Decoded, resized images of an index (optionally kept in memory)."""

    def __init__(self, index: RESIndex, size: int, keep: bool) -> None:
        self.index, self.size, self.keep = index, size, keep
        self._cache: dict[int, torch.Tensor] = {}

    def get(self, image_id: int) -> torch.Tensor:
        hit = self._cache.get(image_id)
        if hit is not None:
            return hit
        img = resize_image(self.index.load_image(image_id), self.size)
        if self.keep:
            self._cache[image_id] = img
        return img


class LabeledDataset(Dataset):
    """Labeled refs: (image, one random sentence of the ref, GT mask), resized to ``size``.

    ``augment="photometric"`` applies the strong colour jitter to labeled images too (off in the
    paper). ``flip``: the probability of a text-aligned horizontal flip (image and mask mirrored,
    the expression's left and right swapped, :mod:`semires.data.flip`; 0 in the paper).
    """

    def __init__(
        self,
        index: RESIndex,
        refs: Sequence[Ref],
        size: int,
        seed: int,
        *,
        cache_images: bool = False,
        augment: str = "none",
        jitter: Jitter | None = None,
        flip: float = 0.0,
    ) -> None:
        self.index, self.refs, self.size, self.seed = index, list(refs), size, seed
        self.flip = flip
        if self.refs:
            index.require_masks(self.refs[0].split, "labeled refs need masks", self.refs)
        self.images = _ImageCache(index, size, cache_images)
        self.augment = augment
        self.jitter = jitter or Jitter()
        self._masks: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.refs)

    def mask(self, ref: Ref) -> torch.Tensor:
        hit = self._masks.get(ref.object_id)
        if hit is None:
            hit = resize_mask(self.index.mask(ref.object_id), self.size)
            self._masks[ref.object_id] = hit
        return hit

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        ref = self.refs[key.index]
        rng = key.rng(self.seed)
        sentence = ref.sentences[int(rng.integers(len(ref.sentences)))].raw
        image, gt = self.images.get(ref.image_id), self.mask(ref)
        if self.augment == "photometric":
            image = self.jitter(image, rng)
        # drawn last and only when on: runs without flips draw exactly what they always drew
        if self.flip > 0 and rng.random() < self.flip:
            image, gt, sentence = flip_image(image), flip_image(gt), flip_sentence(sentence)
        return {
            "image": image,
            "gt": gt,
            "sentence": sentence,
            "ref_id": ref.id,
            "image_id": ref.image_id,
        }


class UnlabeledDataset(Dataset):
    """Unlabeled refs: weak and strong views (pixel-aligned), a sentence, SAM-style candidates.

    The candidates of the image come from a proposal store and go through the same resize as the
    image, so they align with both views; ``packed`` (the default) carries them bit-packed
    (:class:`semires.utils.bits.PackedMasks`, 64 pixels a word, with their areas), else as a
    bool [K, size, size] tensor. The GT mask is returned only for logging pseudo-label
    quality (``gt``; never used for training) when the index has masks. With ``referents``
    each sample also carries the expressions of every OTHER referred object of its image
    (``others``: one list per object, objects in id order; the split is by image, so they are
    unlabeled too), for assigning candidates to an image's referents jointly
    (``semi.assign``). With ``flip_student`` > 0 each sample carries ``student_flip`` (a bool
    drawn with that probability): whether the student sees it mirrored (``semi.flip_student``).
    """

    def __init__(
        self,
        index: RESIndex,
        refs: Sequence[Ref],
        size: int,
        seed: int,
        *,
        proposals: Any = None,
        max_candidates: int = 256,
        blur: Blur | None = None,
        jitter: Jitter | None = None,
        cache_images: bool = False,
        with_gt: bool = True,
        packed: bool = True,
        referents: bool = False,
        flip_student: float = 0.0,
    ) -> None:
        self.index, self.refs, self.size, self.seed = index, list(refs), size, seed
        self.referents = referents
        self.flip_student = flip_student
        self._objects: dict[int, dict[int, list[str]]] | None = None
        self.images = _ImageCache(index, size, cache_images)
        self.proposals = proposals
        self.max_candidates = max_candidates
        self.packed = packed
        self.blur = blur or Blur()
        self.jitter = jitter or Jitter()
        # statistics against the ground truth only where every unlabeled ref has a mask
        self.with_gt = with_gt and all(index.has_mask(r.object_id) for r in self.refs)

    def __len__(self) -> int:
        return len(self.refs)

    def candidates(self, image_id: int) -> torch.Tensor | PackedMasks:
        """The candidate masks of an image at (size, size), K of them (K may be 0): packed, or
        a bool [K, size, size] tensor."""
        size, top = (self.size, self.size), self.max_candidates
        if self.proposals is None:
            empty = torch.zeros((0, *size), dtype=torch.bool)
            return PackedMasks.from_bool(empty) if self.packed else empty
        # stores keep every image's candidates best-first: the first K are the best-scored
        if self.packed:
            return self.proposals.packed_masks(image_id, size)[:top]
        return self.proposals.masks(image_id, size)[:top]

    def others(self, ref: Ref) -> list[list[str]]:
        """The expressions of every other referred object of ``ref``'s image (same split), one
        list per object, objects in id order (refs of one object merged)."""
        if self._objects is None:
            objects: dict[int, dict[int, list[str]]] = {}
            splits = {r.split for r in self.refs}
            for r in (r for split in sorted(splits) for r in self.index.refs_in(split)):
                objects.setdefault(r.image_id, {}).setdefault(r.object_id, []).extend(
                    s.raw for s in r.sentences
                )
            self._objects = objects
        image = self._objects.get(ref.image_id, {})
        return [image[o] for o in sorted(image) if o != ref.object_id]

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        ref = self.refs[key.index]
        rng = key.rng(self.seed)
        sentence = ref.sentences[int(rng.integers(len(ref.sentences)))].raw
        image = self.images.get(ref.image_id)
        weak = self.blur(image, rng)
        item = self._item(ref, sentence, weak, self.jitter(weak, rng))
        # drawn last and only when on: runs without it draw exactly what they always drew
        if self.flip_student > 0:
            item["student_flip"] = torch.tensor(bool(rng.random() < self.flip_student))
        return item

    def item(self, ref: Ref, sentence: str) -> dict[str, Any]:
        """The sample of ``ref`` with ``sentence``, without augmentation (both views are the
        image): what labelling a sample outside training starts from."""
        image = self.images.get(ref.image_id)
        return self._item(ref, sentence, image, image)

    def _item(self, ref: Ref, sentence: str, weak: torch.Tensor, strong: torch.Tensor) -> dict:
        item = {
            "weak": weak,
            "strong": strong,
            "sentence": sentence,
            "expressions": [s.raw for s in ref.sentences],  # all of the object's (consensus)
            "candidates": self.candidates(ref.image_id),
            "ref_id": ref.id,
            "image_id": ref.image_id,
        }
        if self.referents:
            item["others"] = self.others(ref)
        if self.with_gt:  # for statistics only: never a training target
            item["gt"] = resize_mask(self.index.mask(ref.object_id), self.size)
        return item


class EvalDataset(Dataset):
    """Every (ref, sentence) of a split: the unit of the RES metrics (docs/method.md section 1)."""

    def __init__(
        self,
        index: RESIndex,
        split: str,
        size: int,
        *,
        max_sentences: int | None = None,
        cache_images: bool = False,
    ) -> None:
        self.index, self.size = index, size
        index.require_masks(split, "evaluation scores every ref against its mask")
        self.items = [(ref, s) for ref, s in index.sentences(split)]
        if max_sentences is not None and len(self.items) > max_sentences:
            pick = np.random.default_rng(0).choice(
                len(self.items), size=max_sentences, replace=False
            )
            self.items = [self.items[i] for i in sorted(pick)]
        self.images = _ImageCache(index, size, cache_images)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ref, sent = self.items[i]
        return {
            "image": self.images.get(ref.image_id),
            "sentence": sent.raw,
            "gt": torch.from_numpy(self.index.mask(ref.object_id)),
            "ref_id": ref.id,
            "sent_id": sent.id,
            "image_id": ref.image_id,
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors of equal shape, pad candidate stacks, keep the rest as lists."""
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if key == "candidates" and isinstance(values[0], PackedMasks):
            out["candidates"], out["candidates_valid"] = PackedMasks.stack(values)
        elif key == "candidates":
            k = max(v.shape[0] for v in values)
            h, w = values[0].shape[-2:]
            padded = torch.zeros((len(values), k, h, w), dtype=torch.bool)
            valid = torch.zeros((len(values), k), dtype=torch.bool)
            for i, v in enumerate(values):
                padded[i, : v.shape[0]] = v
                valid[i, : v.shape[0]] = True
            out["candidates"], out["candidates_valid"] = padded, valid
        elif isinstance(values[0], torch.Tensor) and all(
            v.shape == values[0].shape for v in values
        ):
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out


def split_batch(batch: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    """A collated batch cut into ``parts`` micro-batches along the first dimension (tensors and
    lists alike); ``parts=1`` returns the batch itself."""
    if parts == 1:
        return [batch]
    size = len(batch["sentence"])
    if size % parts:
        raise ValueError(f"a batch of {size} does not split into {parts} micro-batches")
    step = size // parts
    return [{k: v[i * step : (i + 1) * step] for k, v in batch.items()} for i in range(parts)]


def step_loader(
    ds: Dataset,
    batch: int,
    stream: int,
    start: int,
    stop: int,
    *,
    seed: int,
    rank: int = 0,
    world: int = 1,
    workers: int = 0,
    pin: bool = False,
) -> Any:
    """A DataLoader of ``ds`` giving rank ``rank``'s batches of the steps ``start .. stop - 1``
    on sampling stream ``stream`` (:class:`StepBatchSampler`), collated by :func:`collate`. Its
    generator is private: creating an iterator must not draw from the global RNG (dropout), or
    a resumed run would diverge from an uninterrupted one."""
    from torch.utils.data import DataLoader

    sampler = StepBatchSampler(len(ds), batch, seed, stream, start, stop, rank, world)
    return DataLoader(
        ds,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),
    )

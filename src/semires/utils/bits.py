"""Bit-packed binary masks: 64 pixels to a word, from the proposal store to the overlap counts.

A stack of masks [..., H, W] is held column by column, as COCO's RLE and the proposal store
decode them: int64 words [..., W, Q] with ``Q = ceil(H / 64)``, where pixel ``(y, x)`` is bit
``y % 64`` of word ``(x, y // 64)`` (the little-endian order of ``np.packbits(...,
bitorder="little")`` viewed as 64-bit words; the padding bits at the end of a column are 0).
The store's decoder writes the columns contiguously, so packing them costs one pass and no
transpose. A candidate mask of 480x480 is 30 KiB instead of 225 KiB as bool: 7.5x fewer bytes
to collate, to copy to the device and to read when counting overlaps.

:class:`PackedMasks` is what the loader hands to refinement (words, height and the areas,
counted once when the masks are packed); :func:`and_counts` counts ``|M_k AND P|`` on it:

- on CPU with numpy's ``bitwise_count`` (the POPCNT instruction), over the columns where the
  pseudo-label has pixels only (an object covering a fifth of the columns costs a fifth of the
  work; the counts are exact either way);
- on an accelerator with a SWAR population count in torch (:func:`popcount_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

WORD_BITS = 64
# numpy blocks: AND and count this many bytes of candidate words at a time (a whole image's
# 128 candidates at 480x480; measured on the 2-core development VM: 1 MiB blocks cost 3%
# more, 128 KiB ones 30% more, in per-call overhead)
_BLOCK_BYTES = 4 << 20
_M1, _M2, _M4 = 0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F


def _numpy_ok(tensor: Tensor) -> bool:
    """Whether ``tensor`` is worked on with numpy (CPU) rather than torch ops (the device path,
    which the tests also run on CPU by patching this)."""
    return tensor.device.type == "cpu"


def words_per_column(height: int) -> int:
    """64-bit words per column of a mask ``height`` pixels high."""
    return -(-int(height) // WORD_BITS)


def pack_columns(columns: np.ndarray) -> np.ndarray:
    """Binary [..., W, H] (the masks' columns, best C-contiguous) -> uint64 [..., W, Q] words."""
    packed = np.packbits(np.ascontiguousarray(columns, dtype=bool), axis=-1, bitorder="little")
    pad = -packed.shape[-1] % 8
    if pad:
        packed = np.concatenate([packed, np.zeros((*packed.shape[:-1], pad), np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view(np.uint64)


def pack_numpy(masks: np.ndarray) -> np.ndarray:
    """Binary [..., H, W] -> uint64 [..., W, Q] words (see the module docstring). The transposed
    view of a column-major buffer (what the store decodes) is packed without a copy."""
    return pack_columns(np.swapaxes(np.asarray(masks), -1, -2))


def pack(masks: Tensor) -> Tensor:
    """Binary [..., H, W] tensor -> int64 [..., W, Q] words on the same device."""
    if _numpy_ok(masks):
        return torch.from_numpy(pack_numpy(masks.numpy(force=True)).view(np.int64))
    height = masks.shape[-2]
    q = words_per_column(height)
    bits = masks.bool().transpose(-1, -2)
    if q * WORD_BITS != height:
        bits = torch.nn.functional.pad(bits, (0, q * WORD_BITS - height))
    weights = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8, device=masks.device)
    octets = (bits.unflatten(-1, (-1, 8)).to(torch.uint8) * weights).sum(-1, dtype=torch.uint8)
    return octets.contiguous().view(torch.int64)


def unpack(words: Tensor, height: int) -> Tensor:
    """int64 [..., W, Q] words -> bool [..., H, W] (any device; a transposed view)."""
    octets = words.contiguous().view(torch.uint8)
    if _numpy_ok(words):
        flat = np.unpackbits(octets.numpy(), axis=-1, count=height, bitorder="little")
        return torch.from_numpy(flat.view(bool)).transpose(-1, -2)
    shifts = torch.arange(8, dtype=torch.uint8, device=words.device)
    bits = (octets[..., None] >> shifts) & 1
    return bits.flatten(-2)[..., :height].bool().transpose(-1, -2)


def popcount_bytes(words: Tensor) -> Tensor:
    """Per byte of int64 ``words``, the number of its set bits (a SWAR population count: shifts,
    masks and adds on whole words; the arithmetic right shift of a negative word brings in ones
    that the masks remove). The result has the words' shape and dtype; view it as uint8."""
    x = words - ((words >> 1) & _M1)
    x = (x & _M2) + ((x >> 2) & _M2)
    return (x + (x >> 4)) & _M4


def count(words: Tensor) -> Tensor:
    """Set bits of each mask: int64 [..., W, Q] words -> int64 [...] counts."""
    if _numpy_ok(words):
        counts = np.bitwise_count(words.numpy().view(np.uint64))
        return torch.from_numpy(counts.sum(axis=(-2, -1), dtype=np.int64))
    per_byte = popcount_bytes(words).view(torch.uint8)
    return per_byte.flatten(-2).sum(-1, dtype=torch.int64)


def and_counts(masks: Tensor, labels: Tensor) -> Tensor:
    """``|M_k AND P_b|`` for masks int64 [B, K, W, Q] and labels int64 [B, W, Q]: int64 [B, K].

    Exact on every device. On CPU only the columns where ``P_b`` has pixels are read."""
    if masks.shape[0] != labels.shape[0] or masks.shape[2:] != labels.shape[1:]:
        raise ValueError(
            f"packed masks {tuple(masks.shape)} and labels {tuple(labels.shape)} do not agree"
        )
    if not _numpy_ok(masks):
        both = masks & labels[:, None]
        return popcount_bytes(both).view(torch.uint8).flatten(2).sum(-1, dtype=torch.int64)
    return torch.from_numpy(_and_counts_numpy(masks.numpy(), labels.numpy()))


def _and_counts_numpy(masks: np.ndarray, labels: np.ndarray) -> np.ndarray:
    batch, k, _, q = masks.shape
    out = np.zeros((batch, k), np.int64)
    masks, labels = masks.view(np.uint64), labels.view(np.uint64)
    for b in range(batch):
        columns = np.flatnonzero(labels[b].any(axis=-1))
        if k == 0 or len(columns) == 0:
            continue
        left, right = int(columns[0]), int(columns[-1]) + 1
        label = labels[b, left:right]
        block = max(1, _BLOCK_BYTES // max(1, (right - left) * q * 8))
        both = np.empty((min(block, k), right - left, q), np.uint64)
        bits = np.empty(both.shape, np.uint8)
        for start in range(0, k, block):
            part = masks[b, start : start + block, left:right]
            n = part.shape[0]
            np.bitwise_and(part, label, out=both[:n])
            np.bitwise_count(both[:n], out=bits[:n])
            out[b, start : start + n] = bits[:n].reshape(n, -1).sum(axis=1, dtype=np.uint32)
    return out


@dataclass(frozen=True)
class PackedMasks:
    """A padded batch of bit-packed candidate masks.

    ``words``: int64 [B, K, W, Q] (or [K, W, Q] for one image, see the module docstring);
    ``height``: H in pixels; ``area``: int64 [B, K] (or [K]) set pixels per mask, counted once
    when packed."""

    words: Tensor
    height: int
    area: Tensor

    @classmethod
    def from_numpy(cls, words: np.ndarray, height: int) -> PackedMasks:
        """One image's uint64 [K, W, Q] words (:func:`pack_numpy`), areas counted here."""
        area = np.bitwise_count(words).sum(axis=(-2, -1), dtype=np.int64)
        return cls(torch.from_numpy(words.view(np.int64)), int(height), torch.from_numpy(area))

    @classmethod
    def from_bool(cls, masks: Tensor) -> PackedMasks:
        """Pack bool [..., H, W] masks."""
        words = pack(masks)
        return cls(words, masks.shape[-2], count(words))

    @property
    def shape(self) -> torch.Size:
        """The shape of the unpacked masks: [..., H, W]."""
        return torch.Size((*self.words.shape[:-2], self.height, self.words.shape[-2]))

    @property
    def device(self) -> torch.device:
        return self.words.device

    @property
    def nbytes(self) -> int:
        return self.words.numel() * self.words.element_size()

    def __len__(self) -> int:
        return self.words.shape[0]

    def __getitem__(self, item: slice | int | Tensor) -> PackedMasks:
        """Masks along the first dimension (``[:k]``, ``[b]``, a bool or index tensor)."""
        return PackedMasks(self.words[item], self.height, self.area[item])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedMasks:
        return PackedMasks(
            self.words.to(device, non_blocking=non_blocking),
            self.height,
            self.area.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> PackedMasks:
        """A copy in page-locked memory (the DataLoader's ``pin_memory`` calls this on CUDA, so
        that the host-to-device copy of the words can overlap the step)."""
        return PackedMasks(self.words.pin_memory(), self.height, self.area.pin_memory())

    def unpack(self) -> Tensor:
        """bool [..., H, W] (a transposed view)."""
        return unpack(self.words, self.height)

    def select(self, flat_index: Tensor) -> Tensor:
        """bool [N, H, W] (C-contiguous): the masks at ``flat_index`` of the first two
        dimensions flattened (sample * K + slot), unpacked; the rest stays packed."""
        chosen = self.words.flatten(0, 1).index_select(0, flat_index)
        return unpack(chosen, self.height).contiguous()

    def union(self, selected: Tensor) -> Tensor:
        """bool [B, H, W]: per sample, the OR of the masks with ``selected`` [B, K] set (all
        False where none is). On CPU the words are OR-ed packed and only B masks unpacked."""
        batch, k = selected.shape
        sample, slot = selected.nonzero(as_tuple=True)
        if not _numpy_ok(self.words):
            chosen = self.select(sample * k + slot).flatten(1).int()
            hits = torch.zeros(batch, chosen.shape[1], dtype=torch.int32, device=self.device)
            return (hits.index_add_(0, sample, chosen) > 0).view(batch, *self.shape[-2:])
        words = self.words.numpy().view(np.uint64)
        out = np.zeros((batch, *words.shape[2:]), np.uint64)
        if len(sample):
            rows, starts = np.unique(sample.numpy(), return_index=True)
            chosen = words[sample.numpy(), slot.numpy()]
            out[rows] = np.bitwise_or.reduceat(chosen, starts, axis=0)
        return unpack(torch.from_numpy(out.view(np.int64)), self.height).contiguous()

    @staticmethod
    def stack(items: list[PackedMasks]) -> tuple[PackedMasks, Tensor]:
        """Per-image [K_i, W, Q] stacks padded to one [B, K, W, Q] batch, and ``valid`` [B, K]."""
        k = max(len(it) for it in items)
        w, q = items[0].words.shape[-2:]
        words = torch.zeros((len(items), k, w, q), dtype=torch.int64)
        area = torch.zeros((len(items), k), dtype=torch.int64)
        valid = torch.zeros((len(items), k), dtype=torch.bool)
        for i, it in enumerate(items):
            n = len(it)
            words[i, :n], area[i, :n], valid[i, :n] = it.words, it.area, True
        return PackedMasks(words, items[0].height, area), valid

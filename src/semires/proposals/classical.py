"""``classical``: a weight-free candidate generator (scikit-image; CPU).

Like SAM's "segment everything", it returns whole objects AND their parts at several
granularities, by hierarchical grouping (in the spirit of selective search):

1. the image (downscaled so that its longer side is at most ``max_side``) is over-segmented
   into small regions (Felzenszwalb's graph segmentation at each of ``scales``);
2. for each over-segmentation and each grouping ``strategy`` the two most similar adjacent
   regions are merged again and again until one region is left; every region met on the way
   (the small ones, their unions, whole objects, groups of objects) is a candidate. Similarity
   mixes ``colour`` (mean Lab colour), ``size`` (merge small regions first), ``fill`` (the
   union fills its bounding box) and ``shared`` (the two share much of their outline), so that
   the differently coloured parts of one object are merged before the object is merged with
   the background;
3. each candidate is scored by its outline: the share of the outline that is a clear edge (a
   Lab difference above ``edge_threshold`` across it) times the mean Lab difference across it
   squashed to 0..1 (``1 - exp(-contrast / contrast_scale)``); an object's outline is an edge
   all round, a piece of an object or of the background is not. The outline statistics are
   carried through the merges (outline(A u B) = outline(A) + outline(B) - 2 shared(A, B)), so
   scoring costs nothing per candidate;
4. candidates smaller than ``min_area`` or larger than ``max_area`` (fractions of the image) or
   scoring below ``min_score`` are dropped, duplicates are removed by mask-IoU non-maximum
   suppression (``nms_iou``, best score first) and the best ``max_candidates`` are kept.

All candidates of one image are unions of "atoms" (the cells of the common refinement of the
over-segmentations), so areas and IoUs are computed on atoms, not pixels.

The candidate set is nested (a hierarchy: parts, objects, groups, background with the objects
it encloses), which suits IOM; CPI's rule "covers 70 % of the pseudo-label" also collects the
ancestors of an object (see docs/results/proposals.md).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from semires.errors import ConfigError
from semires.proposals.base import MaskGenerator, Proposals

CUES = ("colour", "size", "fill", "shared")


@dataclass(frozen=True)
class ClassicalConfig:
    """Knobs of the classical generator (defaults tuned on the synthetic training images)."""

    scales: tuple[int, ...] = (50,)
    """Felzenszwalb ``scale`` of each over-segmentation (larger: fewer, bigger regions)."""
    sigma: float = 0.0
    """Gaussian smoothing before the over-segmentation."""
    min_size: int = 8
    """Smallest region of the over-segmentation, in pixels at the working resolution."""
    strategies: tuple[str, ...] = ("colour+size+fill+shared", "colour+size")
    """Grouping strategies: ``+``-joined cues out of colour, size, fill, shared."""
    colour_sigma: float = 12.0
    """Lab distance at which the colour similarity drops to exp(-1/2)."""
    contrast_scale: float = 12.0
    """Mean Lab contrast along a candidate's outline at which its contrast factor is 1 - 1/e."""
    edge_threshold: float = 10.0
    """Lab difference across a pixel pair of the outline that counts as a clear edge."""
    max_side: int = 256
    """Images are segmented at this longer side at most (masks are upsampled back)."""
    min_area: float = 0.001
    """Smallest candidate, as a fraction of the image."""
    max_area: float = 0.95
    """Largest candidate, as a fraction of the image."""
    min_score: float = 0.0
    """Candidates scoring below this are dropped (like SAM's quality thresholds)."""
    nms_iou: float = 0.9
    """Mask IoU above which the lower-scoring of two candidates is dropped."""
    max_candidates: int = 100
    """At most this many candidates per image (best scores)."""

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) <= 0:
            raise ConfigError(f"classical: scales must be positive numbers, got {self.scales}")
        if not self.strategies:
            raise ConfigError("classical: at least one grouping strategy is needed")
        for strategy in self.strategies:
            parse_strategy(strategy)
        if not 0.0 <= self.min_area < self.max_area <= 1.0:
            raise ConfigError(
                f"classical: expected 0 <= min_area < max_area <= 1, "
                f"got {self.min_area} and {self.max_area}"
            )
        if not 0.0 < self.nms_iou <= 1.0 or self.max_candidates < 1 or self.max_side < 16:
            raise ConfigError(
                "classical: expected 0 < nms_iou <= 1, max_candidates >= 1, max_side >= 16"
            )


def parse_strategy(strategy: str) -> dict[str, float]:
    """``"colour+fill"`` -> weights of the four cues (1 for each named cue)."""
    names = [s.strip() for s in strategy.split("+") if s.strip()]
    unknown = [n for n in names if n not in CUES]
    if unknown or not names:
        raise ConfigError(
            f"classical: unknown grouping strategy {strategy!r}; join cues out of "
            f"{', '.join(CUES)} with '+'"
        )
    return {cue: float(cue in names) for cue in CUES}


# ---------------------------------------------------------------------------- regions
@dataclass
class _Regions:
    """Per-region statistics of an over-segmentation, and its adjacency.

    An "edge triple" sums, over the 4-neighbour pixel pairs of a boundary: (number of pairs,
    sum of their Lab differences, number of pairs whose difference exceeds the threshold).
    """

    sizes: np.ndarray  # [n] pixels
    colours: np.ndarray  # [n, 3] mean Lab
    boxes: np.ndarray  # [n, 4] row0, col0, row1, col1 (inclusive)
    perimeters: np.ndarray  # [n] outline length, image border included
    outlines: np.ndarray  # [n, 3] edge triple of the outline (image border excluded)
    shared: dict[tuple[int, int], tuple[float, float, float]]  # (i < j) -> edge triple


def _pairs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values at both ends of every 4-neighbour pixel pair (right, then down neighbours)."""
    tail = values.shape[2:]
    a = np.concatenate([values[:, :-1].reshape(-1, *tail), values[:-1, :].reshape(-1, *tail)])
    b = np.concatenate([values[:, 1:].reshape(-1, *tail), values[1:, :].reshape(-1, *tail)])
    return a, b


def _region_stats(labels: np.ndarray, lab: np.ndarray, threshold: float) -> _Regions:
    n = int(labels.max()) + 1
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=n).astype(np.float64)
    colours = (
        np.stack([np.bincount(flat, lab[..., c].ravel(), n) for c in range(3)], axis=1)
        / sizes[:, None]
    )
    rows, cols = np.indices(labels.shape)
    boxes = np.stack(
        [
            _group_min(flat, rows.ravel(), n),
            _group_min(flat, cols.ravel(), n),
            -_group_min(flat, -rows.ravel(), n),
            -_group_min(flat, -cols.ravel(), n),
        ],
        axis=1,
    )
    a, b = _pairs(labels)
    cut = np.flatnonzero(a != b)
    la, lb = _pairs(lab)
    diff = np.sqrt(((la[cut] - lb[cut]) ** 2).sum(axis=1))
    lo, hi = np.minimum(a[cut], b[cut]), np.maximum(a[cut], b[cut])
    key = lo * n + hi
    triples = np.stack(
        [
            np.bincount(key, minlength=n * n),
            np.bincount(key, diff, n * n),
            np.bincount(key, diff > threshold, n * n),
        ],
        axis=1,
    ).astype(np.float64)
    edges = np.flatnonzero(triples[:, 0])
    shared = {
        (int(k // n), int(k % n)): (t[0], t[1], t[2])
        for k, t in zip(edges.tolist(), triples[edges].tolist(), strict=True)
    }
    outlines = np.zeros((n, 3))
    np.add.at(outlines, edges // n, triples[edges])
    np.add.at(outlines, edges % n, triples[edges])
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    perimeters = outlines[:, 0] + np.bincount(border, minlength=n)
    return _Regions(sizes, colours, boxes, perimeters, outlines, shared)


def _group_min(groups: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(out, groups, values)
    return out


# ---------------------------------------------------------------------------- grouping
@dataclass
class _Hierarchy:
    """Every region met by one grouping run: base regions first, then each union."""

    members: list[int]  # bitsets over the base regions
    sizes: list[float]
    outlines: list[tuple[float, float, float]]  # edge triples


def _add(
    x: tuple[float, float, float], y: tuple[float, float, float]
) -> tuple[float, float, float]:
    return (x[0] + y[0], x[1] + y[1], x[2] + y[2])


def _group(regions: _Regions, weights: dict[str, float], colour_sigma: float) -> _Hierarchy:
    """Greedy hierarchical grouping: merge the most similar adjacent pair until one is left."""
    n = len(regions.sizes)
    total = float(regions.sizes.sum())
    sizes = regions.sizes.tolist()
    colours = [tuple(c) for c in regions.colours.tolist()]
    boxes = [tuple(b) for b in regions.boxes.tolist()]
    perims = regions.perimeters.tolist()
    outlines = [tuple(o) for o in regions.outlines.tolist()]
    members = [1 << i for i in range(n)]
    alive = [True] * n
    neighbours: list[dict[int, tuple[float, float, float]]] = [{} for _ in range(n)]
    for (i, j), triple in regions.shared.items():
        neighbours[i][j] = triple
        neighbours[j][i] = triple
    w_colour, w_size, w_fill, w_shared = (weights[c] for c in CUES)
    two_var = 2.0 * colour_sigma**2

    def similarity(i: int, j: int) -> float:
        s = 0.0
        if w_colour:
            (l1, a1, b1), (l2, a2, b2) = colours[i], colours[j]
            s += w_colour * math.exp(-((l1 - l2) ** 2 + (a1 - a2) ** 2 + (b1 - b2) ** 2) / two_var)
        if w_size:
            s += w_size * (1.0 - (sizes[i] + sizes[j]) / total)
        if w_fill:
            bi, bj = boxes[i], boxes[j]
            box = (max(bi[2], bj[2]) - min(bi[0], bj[0]) + 1) * (
                max(bi[3], bj[3]) - min(bi[1], bj[1]) + 1
            )
            s += w_fill * (1.0 - (box - sizes[i] - sizes[j]) / total)
        if w_shared:
            s += w_shared * neighbours[i][j][0] / min(perims[i], perims[j])
        return s

    heap = [(-similarity(i, j), i, j) for (i, j) in regions.shared]
    heapq.heapify(heap)
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue
        k = len(sizes)
        alive[i] = alive[j] = False
        shared_ij = neighbours[i][j]
        si, sj = sizes[i], sizes[j]
        sk = si + sj
        sizes.append(sk)
        (l1, a1, b1), (l2, a2, b2) = colours[i], colours[j]
        colours.append(
            ((l1 * si + l2 * sj) / sk, (a1 * si + a2 * sj) / sk, (b1 * si + b2 * sj) / sk)
        )
        bi, bj = boxes[i], boxes[j]
        boxes.append((min(bi[0], bj[0]), min(bi[1], bj[1]), max(bi[2], bj[2]), max(bi[3], bj[3])))
        perims.append(perims[i] + perims[j] - 2.0 * shared_ij[0])
        oi, oj = outlines[i], outlines[j]
        outlines.append(
            (
                oi[0] + oj[0] - 2.0 * shared_ij[0],
                oi[1] + oj[1] - 2.0 * shared_ij[1],
                oi[2] + oj[2] - 2.0 * shared_ij[2],
            )
        )
        members.append(members[i] | members[j])
        alive.append(True)
        merged: dict[int, tuple[float, float, float]] = {}
        for old in (i, j):
            for m, triple in neighbours[old].items():
                if m not in (i, j) and alive[m]:
                    merged[m] = _add(merged[m], triple) if m in merged else triple
                    del neighbours[m][old]
            neighbours[old] = {}
        neighbours.append(merged)
        for m, triple in merged.items():
            neighbours[m][k] = triple
            heapq.heappush(heap, (-similarity(k, m), k, m))
    return _Hierarchy(members, sizes, outlines)


def _bits_to_bool(bits: list[int], n: int) -> np.ndarray:
    """Bitsets over ``n`` base regions -> [len(bits), n] bool."""
    nbytes = (n + 7) // 8
    buf = b"".join(b.to_bytes(nbytes, "little") for b in bits)
    packed = np.frombuffer(buf, np.uint8).reshape(len(bits), nbytes)
    return np.unpackbits(packed, axis=1, count=n, bitorder="little").astype(bool)


# ---------------------------------------------------------------------------- generator
@dataclass
class _Candidates:
    """Candidates over atoms, with their areas (pixels) and outline edge triples."""

    membership: np.ndarray  # [N, A] bool
    areas: np.ndarray  # [N]
    outlines: np.ndarray  # [N, 3]

    def take(self, index: np.ndarray | list[int]) -> _Candidates:
        return _Candidates(self.membership[index], self.areas[index], self.outlines[index])

    @staticmethod
    def concat(parts: list[_Candidates]) -> _Candidates:
        return _Candidates(
            np.concatenate([p.membership for p in parts]),
            np.concatenate([p.areas for p in parts]),
            np.concatenate([p.outlines for p in parts]),
        )


class ClassicalGenerator(MaskGenerator):
    """Weight-free multi-scale hierarchical grouping (see the module docstring)."""

    name = "classical"
    config_class = ClassicalConfig

    def generate(self, image: np.ndarray) -> Proposals:
        """Candidates for one (H, W, 3) uint8 RGB image, best score first."""
        from skimage.color import rgb2lab
        from skimage.segmentation import felzenszwalb

        cfg = self.config
        work = _downscale(image, cfg.max_side)
        lab = rgb2lab(work)
        segmentations = [
            felzenszwalb(work, scale=s, sigma=cfg.sigma, min_size=cfg.min_size) for s in cfg.scales
        ]
        atoms, atom_of = _refine(segmentations)
        membership, scores = self._select(self._candidates(segmentations, atom_of, lab), atoms)
        return _to_proposals(membership, scores, atoms, image.shape[:2])

    def _select(self, candidates: _Candidates, atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dedupe, filter by area and score, NMS, size-balanced cut: (membership, scores)."""
        cfg = self.config
        candidates = _dedupe(candidates)
        keep = (candidates.areas >= cfg.min_area * atoms.size) & (
            candidates.areas <= cfg.max_area * atoms.size
        )
        candidates = candidates.take(np.flatnonzero(keep))
        scores = self.score(candidates.outlines)
        good = np.flatnonzero(scores >= cfg.min_score)
        candidates, scores = candidates.take(good), scores[good]
        order = np.lexsort((-candidates.areas, -scores))
        candidates, scores = candidates.take(order), scores[order]
        kept = np.asarray(_nms(candidates, cfg.nms_iou, atoms), np.int64)
        kept = kept[_balanced(candidates.areas[kept] / atoms.size, cfg.max_candidates)]
        return candidates.membership[kept], scores[kept]

    def score(self, outlines: np.ndarray) -> np.ndarray:
        """Score from outline edge triples: the share of the outline that is a clear edge times
        the squashed mean contrast across it (0 for a candidate without outline)."""
        length = np.maximum(outlines[:, 0], 1.0)
        contrast = outlines[:, 1] / length
        share = outlines[:, 2] / length
        return np.where(
            outlines[:, 0] > 0, share * (1.0 - np.exp(-contrast / self.config.contrast_scale)), 0.0
        )

    def _candidates(
        self, segmentations: list[np.ndarray], atom_of: list[np.ndarray], lab: np.ndarray
    ) -> _Candidates:
        """Every region of every grouping run, over atoms (with repeats)."""
        cfg = self.config
        parts = []
        for labels, to_label in zip(segmentations, atom_of, strict=True):
            regions = _region_stats(labels, lab, cfg.edge_threshold)
            for strategy in cfg.strategies:
                run = _group(regions, parse_strategy(strategy), cfg.colour_sigma)
                parts.append(
                    _Candidates(
                        _bits_to_bool(run.members, len(regions.sizes))[:, to_label],
                        np.asarray(run.sizes),
                        np.asarray(run.outlines),
                    )
                )
        return _Candidates.concat(parts)


def _downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """The image resized (bilinear, anti-aliased) so that its longer side is <= ``max_side``."""
    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return image
    from skimage.transform import resize

    scale = max_side / max(height, width)
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    work = resize(image, shape, order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(work), 0, 255).astype(np.uint8)


def _refine(segmentations: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The common refinement: an atom label map and, per segmentation, atom -> its label."""
    key = np.zeros(segmentations[0].shape, np.int64)
    for labels in segmentations:
        key = key * (int(labels.max()) + 1) + labels
    _, first, atoms = np.unique(key.ravel(), return_index=True, return_inverse=True)
    atoms = atoms.reshape(key.shape)
    return atoms, [labels.ravel()[first] for labels in segmentations]


def _dedupe(candidates: _Candidates) -> _Candidates:
    """The distinct candidates (same atoms), in order of first appearance."""
    packed = np.packbits(candidates.membership, axis=1)
    first: dict[bytes, int] = {}
    for idx, row in enumerate(packed):
        first.setdefault(row.tobytes(), idx)
    return candidates.take(list(first.values()))


def _nms(candidates: _Candidates, thresh: float, atoms: np.ndarray) -> list[int]:
    """Greedy mask-IoU non-maximum suppression over candidates sorted best first."""
    area = np.bincount(atoms.ravel(), minlength=candidates.membership.shape[1]).astype(np.float32)
    rows = candidates.membership.astype(np.float32)
    inter = (rows * area) @ rows.T
    sizes = candidates.areas.astype(np.float32)
    duplicate = inter > thresh * (sizes[:, None] + sizes[None, :] - inter)
    suppressed = np.zeros(len(rows), bool)
    kept: list[int] = []
    for idx in range(len(rows)):
        if not suppressed[idx]:
            kept.append(idx)
            suppressed |= duplicate[idx]
    return kept


def _balanced(area_fractions: np.ndarray, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` candidates (given best first), shared out over sizes.

    Candidates are binned by octave of area (1/2, 1/4, ... of the image); the best of every bin
    comes first, then the second best of every bin, and so on (in score order within a round),
    so that many small high-contrast pieces (a textured carpet) cannot crowd out the few large
    regions (the teddy bear on it).
    """
    octave = np.floor(-np.log2(np.maximum(area_fractions, 1e-9))).astype(np.int64)
    rank = np.zeros(len(octave), np.int64)
    for value in np.unique(octave):
        members = np.flatnonzero(octave == value)
        rank[members] = np.arange(len(members))
    order = np.lexsort((np.arange(len(rank)), rank))[:limit]
    return np.sort(order)


def _to_proposals(
    membership: np.ndarray, scores: np.ndarray, atoms: np.ndarray, size: tuple[int, int]
) -> Proposals:
    """Masks at the image size (atoms upsampled by nearest neighbour) as :class:`Proposals`."""
    if atoms.shape != tuple(size):
        from semires.proposals.decode import nearest_indices

        atoms = atoms[nearest_indices(atoms.shape[0], size[0])][
            :, nearest_indices(atoms.shape[1], size[1])
        ]
    masks = membership[:, atoms]
    return Proposals.from_masks(masks.astype(np.uint8), scores.astype(np.float32))

"""``classical``: a weight-free candidate generator (scikit-image; CPU).

Like SAM's "segment everything", it returns whole objects AND their parts, and, like SAM, hardly
any mask that glues an object to another object or to its background, so that both IOM and CPI
(docs/method.md section 4) work with it. Steps:

1. the image (downscaled so that its longer side is at most ``max_side``) is over-segmented
   into small regions (Felzenszwalb's graph segmentation at each of ``scales``);
2. for each over-segmentation and each grouping ``strategy`` the two most similar adjacent
   regions are merged again and again until one region is left (in the spirit of selective
   search). Similarity mixes ``colour`` (mean Lab colour), ``size`` (merge small regions
   first), ``fill`` (the union fills its bounding box) and ``shared`` (the two share much of
   their outline), so that the differently coloured parts of one object are merged before the
   object is merged with the background. Every region met on the way is a hierarchy node;
3. **object tests** (:func:`not_objects`). A merge across a clear edge (mean Lab difference
   across the removed boundary above ``edge_threshold``) is a merge of two *things*; it is
   rejected when the two do not make one object: they merely *touch* (the union's convex hull
   exceeds their two hulls together, and they share less than ``touch_share`` of the smaller
   one's outline), one *occludes* the other (their hulls overlap by more than
   ``occlusion_overlap`` while the smaller is not enclosed by the larger), or one is the
   *ground* of the other (its colour is within ``ground_distance`` of the colour around the
   union, or the smaller lies embedded in a region that reaches the image border). A rejected
   node and every node above it (they contain it) is no candidate; the nodes below (objects,
   their parts) are. The parts of one object fit together instead: two halves fill their
   common hull along a long shared boundary, a dot or a body is enclosed by its body or rim;
4. each node is scored by its outline: the share of the outline that is a clear edge (a pixel
   pair differing by more than ``edge_threshold``; the image border counts as ``border_edge``
   of an edge) times the squashed mean contrast across it (``1 - exp(-contrast /
   contrast_scale)``). Outline statistics are carried through the merges (outline(A u B) =
   outline(A) + outline(B) - 2 shared(A, B)), so scoring costs nothing per node;
5. candidates smaller than ``min_area`` or larger than ``max_area`` (fractions of the image),
   whose outline is a clear edge for less than ``min_edge_share`` (off by default) or scoring
   below ``min_score`` are dropped, duplicates are removed by mask-IoU non-maximum suppression
   (``nms_iou``, best score first) and at most ``max_candidates`` are kept, shared out over
   sizes.

All candidates of one image are unions of "atoms" (the cells of the common refinement of the
over-segmentations), so areas and IoUs are computed on atoms, not pixels. Convex hulls are those
of the regions' pixel squares, approximated by the circumscribed polygon with
``HULL_DIRECTIONS`` evenly spaced edge normals (at most 2 % larger than the hull of a disk):
a union's supports are the maxima of its base regions' supports.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from semires.errors import ConfigError
from semires.proposals.base import MaskGenerator, Proposals

CUES = ("colour", "size", "fill", "shared")
SHARES = (
    "touch_share",
    "enclose_share",
    "solid_edge_share",
    "embed_share",
    "border_edge",
    "min_edge_share",
)
"""Knobs that are shares of an outline (0..1)."""
HULL_DIRECTIONS = 16
_ANGLES = 2.0 * np.pi * np.arange(HULL_DIRECTIONS) / HULL_DIRECTIONS

Triple = tuple[float, float, float]


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
    edge_threshold: float = 20.0
    """Lab difference across a pixel pair, or mean across a boundary, that is a clear edge."""
    touch_share: float = 0.25
    """Object test "touch": two regions that share less than this share of the smaller one's
    outline and whose union's hull exceeds their two hulls together are two objects (0: off)."""
    occlusion_overlap: float = 0.05
    """Object test "occlusion": two solid regions whose hulls overlap by more than this share of
    the smaller hull, the smaller not enclosed, are one object in front of another."""
    enclose_share: float = 0.7
    """A region sharing more than this share of its outline with another is enclosed by it (a
    dot in a body, a body in its rim), which is no occlusion."""
    solid_edge_share: float = 0.85
    """Only regions outlined by a clear edge for at least this share occlude one another."""
    ground_distance: float = 10.0
    """Object test "ground": a part whose mean Lab colour is closer than this to the colour
    around the union is background (0: off)."""
    embed_share: float = 0.5
    """Object test "ground": a region sharing more than this share of its outline with a region
    that reaches the image border (while it does not) lies on the background (1: off)."""
    border_edge: float = 0.5
    """How much of a clear edge the image border counts as in an outline's edge share."""
    min_edge_share: float = 0.0
    """Candidates whose outline is a clear edge for less than this share are dropped (0: off;
    0.9 suits clean images, but the outlines of objects in photos are rarely that clear)."""
    max_side: int = 256
    """Images are segmented at this longer side at most (masks are upsampled back)."""
    min_area: float = 0.001
    """Smallest candidate, as a fraction of the image."""
    max_area: float = 0.95
    """Largest candidate, as a fraction of the image."""
    min_score: float = 0.0
    """Candidates scoring below this are dropped."""
    nms_iou: float = 0.9
    """Mask IoU above which the lower-scoring of two candidates is dropped."""
    max_candidates: int = 100
    """At most this many candidates per image (best scores, shared out over sizes)."""

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
        for name in SHARES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(
                    f"classical: expected 0 <= {name} <= 1, got {getattr(self, name)}"
                )
        for name in ("edge_threshold", "occlusion_overlap", "ground_distance"):
            if not getattr(self, name) >= 0.0:
                raise ConfigError(f"classical: expected {name} >= 0, got {getattr(self, name)}")
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
    supports: np.ndarray  # [n, HULL_DIRECTIONS] support of the region's pixel squares
    shared: dict[tuple[int, int], Triple]  # (i < j) -> edge triple


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
    supports = _supports(labels, n)
    return _Regions(sizes, colours, _boxes(supports), perimeters, outlines, supports, shared)


def _supports(labels: np.ndarray, n: int) -> np.ndarray:
    """[n, HULL_DIRECTIONS]: how far the unit pixel squares of each of the ``n`` regions of a
    label map reach along each normal (cos a, sin a) in (column, row) coordinates.

    Only pixels on a region's boundary (or the image border) can be extreme, so only those are
    projected; they are grouped by a stable (radix) sort of their labels.
    """
    inner = labels[1:-1, 1:-1]
    edge = np.ones(labels.shape, bool)
    edge[1:-1, 1:-1] = (
        (inner != labels[:-2, 1:-1])
        | (inner != labels[2:, 1:-1])
        | (inner != labels[1:-1, :-2])
        | (inner != labels[1:-1, 2:])
    )
    rows, cols = np.nonzero(edge)
    groups = labels[rows, cols]
    order = np.argsort(groups.astype(np.uint16) if n <= 1 << 16 else groups, kind="stable")
    cos, sin = np.cos(_ANGLES), np.sin(_ANGLES)
    reach = cols[order, None] * cos + rows[order, None] * sin + 0.5 * (np.abs(cos) + np.abs(sin))
    starts = np.searchsorted(groups[order], np.arange(n))
    return np.maximum.reduceat(reach, starts, axis=0)


def _boxes(supports: np.ndarray) -> np.ndarray:
    """[n, 4] row0, col0, row1, col1 (inclusive pixel indices) from the axis-aligned supports."""
    quarter = HULL_DIRECTIONS // 4  # normals 0, 90, 180, 270 degrees: +col, +row, -col, -row
    extent = np.rint(supports[:, [3 * quarter, 2 * quarter, quarter, 0]] - 0.5)
    return (extent * np.array([-1, -1, 1, 1])).astype(np.int64)


def hull_areas(supports: np.ndarray) -> np.ndarray:
    """Areas of the polygons ``{x : n_k . x <= h_k}`` for [N, HULL_DIRECTIONS] supports ``h``.

    With the supports of a point set this is its circumscribed polygon: the convex hull, up to
    the corners cut off between neighbouring normals.
    """
    step = _ANGLES[1] - _ANGLES[0]
    h, h_next = supports, np.roll(supports, -1, axis=1)
    sin, cos = np.sin(_ANGLES), np.cos(_ANGLES)
    sin_next, cos_next = np.roll(sin, -1), np.roll(cos, -1)
    x = (h * sin_next - h_next * sin) / math.sin(step)
    y = (h_next * cos - h * cos_next) / math.sin(step)
    cross = x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y
    return 0.5 * np.abs(cross.sum(axis=1))


# ---------------------------------------------------------------------------- grouping
@dataclass
class _Hierarchy:
    """Every region met by one grouping run: base regions first, then each union."""

    members: list[int]  # bitsets over the base regions
    sizes: list[float]
    perimeters: list[float]  # image border included
    outlines: list[Triple]  # edge triples of the outlines (image border excluded)
    children: list[tuple[int, int]]  # the two regions merged into each union ((-1, -1): base)
    joins: list[Triple]  # edge triple of the boundary each union removed (zeros: base)
    grounds: list[float]  # Lab distance of a union's nearer part to its surroundings (or inf)


def _add(x: Triple, y: Triple) -> Triple:
    return (x[0] + y[0], x[1] + y[1], x[2] + y[2])


def _group(
    regions: _Regions, weights: dict[str, float], colour_sigma: float, edge_threshold: float
) -> _Hierarchy:
    """Greedy hierarchical grouping: merge the most similar adjacent pair until one is left.

    For a merge across a clear edge (mean difference above ``edge_threshold``) the distance of
    the nearer part's colour to the union's surroundings is recorded (inf otherwise)."""
    run, colours, boxes, neighbours = _start_hierarchy(regions)
    similarity = _similarity(regions, weights, colour_sigma, run, colours, boxes, neighbours)
    alive = [True] * len(colours)
    heap = [(-similarity(i, j), i, j) for (i, j) in regions.shared]
    heapq.heapify(heap)
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue
        k = len(alive)
        alive[i] = alive[j] = False
        alive.append(True)
        merged = _merge(run, colours, boxes, neighbours, alive, i, j)
        for m in merged:
            heapq.heappush(heap, (-similarity(k, m), k, m))
        shared_ij = run.joins[k]
        across = shared_ij[1] > edge_threshold * shared_ij[0]
        run.grounds.append(_ground_distance(colours, merged, i, j) if across else math.inf)
    return run


def _start_hierarchy(
    regions: _Regions,
) -> tuple[_Hierarchy, list[tuple[float, ...]], list[tuple[int, ...]], list[dict[int, Triple]]]:
    """The hierarchy of the base regions alone, with the per-node lists that grouping extends:
    mean Lab colours, bounding boxes (row0, col0, row1, col1) and neighbours (node -> edge
    triple of the boundary they share)."""
    n = len(regions.sizes)
    run = _Hierarchy(
        members=[1 << i for i in range(n)],
        sizes=regions.sizes.tolist(),
        perimeters=regions.perimeters.tolist(),
        outlines=[tuple(o) for o in regions.outlines.tolist()],
        children=[(-1, -1)] * n,
        joins=[(0.0, 0.0, 0.0)] * n,
        grounds=[math.inf] * n,
    )
    colours = [tuple(c) for c in regions.colours.tolist()]
    boxes = [tuple(b) for b in regions.boxes.tolist()]
    neighbours: list[dict[int, Triple]] = [{} for _ in range(n)]
    for (i, j), triple in regions.shared.items():
        neighbours[i][j] = triple
        neighbours[j][i] = triple
    return run, colours, boxes, neighbours


def _similarity(
    regions: _Regions,
    weights: dict[str, float],
    colour_sigma: float,
    run: _Hierarchy,
    colours: list[tuple[float, ...]],
    boxes: list[tuple[int, ...]],
    neighbours: list[dict[int, Triple]],
) -> Callable[[int, int], float]:
    """The similarity of two adjacent nodes: the weighted cues (colour, size, fill, shared
    boundary), read from the lists grouping extends (the hot inner function of grouping)."""
    total = float(regions.sizes.sum())
    sizes, perims = run.sizes, run.perimeters
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

    return similarity


def _merge(
    run: _Hierarchy,
    colours: list[tuple[float, ...]],
    boxes: list[tuple[int, ...]],
    neighbours: list[dict[int, Triple]],
    alive: list[bool],
    i: int,
    j: int,
) -> dict[int, Triple]:
    """Append the union k of nodes i and j to ``run`` and the per-node lists (its size,
    colour, box, perimeter, outline, members, children, join) and move the neighbours of i and
    j still alive to k; returns k's neighbours (node -> shared edge triple)."""
    k = len(run.sizes)
    sizes, perims, outlines = run.sizes, run.perimeters, run.outlines
    shared_ij = neighbours[i][j]
    si, sj = sizes[i], sizes[j]
    sk = si + sj
    sizes.append(sk)
    (l1, a1, b1), (l2, a2, b2) = colours[i], colours[j]
    colours.append(((l1 * si + l2 * sj) / sk, (a1 * si + a2 * sj) / sk, (b1 * si + b2 * sj) / sk))
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
    run.members.append(run.members[i] | run.members[j])
    run.children.append((i, j))
    run.joins.append(shared_ij)
    merged: dict[int, Triple] = {}
    for old in (i, j):
        for m, triple in neighbours[old].items():
            if m not in (i, j) and alive[m]:
                merged[m] = _add(merged[m], triple) if m in merged else triple
                del neighbours[m][old]
        neighbours[old] = {}
    neighbours.append(merged)
    for m, triple in merged.items():
        neighbours[m][k] = triple
    return merged


def _ground_distance(
    colours: list[tuple[float, float, float]], around: dict[int, Triple], i: int, j: int
) -> float:
    """Lab distance between the mean colour around a union (its neighbours, weighted by the
    shared outline) and the nearer of its two parts' mean colours (inf without neighbours)."""
    length = sum(t[0] for t in around.values())
    if not length:
        return math.inf
    ground = [sum(t[0] * colours[m][c] for m, t in around.items()) / length for c in range(3)]
    return min(math.dist(colours[c], ground) for c in (i, j))


def not_objects(run: _Hierarchy, supports: np.ndarray, cfg: ClassicalConfig) -> np.ndarray:
    """[nodes] bool: the nodes that are not one object (or a part of one).

    A merge across a clear edge (mean Lab difference across the removed boundary above
    ``edge_threshold``) is flagged when it

    - **touches**: the union's convex hull is larger than the two hulls together (the two do not
      fit into one shape) and they share less than ``touch_share`` of the smaller one's outline:
      two objects side by side;
    - **occludes**: the two hulls overlap by more than ``occlusion_overlap`` of the smaller one,
      the smaller one is not enclosed (it shares at most ``enclose_share`` of its outline) and
      both are solid (a clear edge for at least ``solid_edge_share`` of their outlines): one
      object in front of another. (A dot inside a body, a body inside its rim are enclosed.)
    - **stands on its ground**: the colour of one of the two is closer than ``ground_distance``
      to the colour around the union (an object and a piece of its background, or the hole of a
      ring), or the smaller one shares more than ``embed_share`` of its outline with the larger
      one, which reaches the image border while the smaller one does not (an object lying on
      the background).

    A flagged node and every node above it (it is a subset of theirs) is not an object.
    ``supports`` are the base regions' hull supports (:func:`_supports`).
    """
    children = np.asarray(run.children)
    merged = children[:, 0] >= 0
    i, j = children[:, 0], children[:, 1]  # -1 for base regions, masked out by ``merged``
    joins = np.asarray(run.joins)
    outlines, perims = np.asarray(run.outlines), np.asarray(run.perimeters)
    across = merged & (joins[:, 1] > cfg.edge_threshold * np.maximum(joins[:, 0], 1.0))
    tested = np.flatnonzero(across)
    hulls = _node_hulls(run, supports, np.unique(np.concatenate([tested, i[tested], j[tested]])))
    small = np.where(perims[i] <= perims[j], i, j)
    large = i + j - small
    fit = joins[:, 0] / np.maximum(perims[small], 1.0)  # share of the smaller outline removed
    slack = (hulls - hulls[i] - hulls[j]) / np.maximum(np.minimum(hulls[i], hulls[j]), 1.0)
    solid = edge_share(outlines, perims, cfg.border_edge) >= cfg.solid_edge_share
    at_border = perims > outlines[:, 0]
    touching = (slack > 0.0) & (fit < cfg.touch_share)
    occluding = (slack < -cfg.occlusion_overlap) & (fit <= cfg.enclose_share) & solid[i] & solid[j]
    on_ground = (np.asarray(run.grounds) < cfg.ground_distance) | (
        (fit > cfg.embed_share) & at_border[large] & ~at_border[small]
    )
    flagged = (across & (touching | occluding | on_ground)).tolist()
    for k, (a, b) in enumerate(run.children):  # children come before parents
        if a >= 0 and (flagged[a] or flagged[b]):
            flagged[k] = True
    return np.asarray(flagged, bool)


def _node_hulls(run: _Hierarchy, supports: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """[all nodes] convex hull areas of ``nodes`` (nan for the others), from the supports of
    their base regions."""
    members = _bits_to_bool([run.members[k] for k in nodes.tolist()], len(supports))
    reach = np.where(members[:, :, None], supports[None], -np.inf).max(axis=1)
    hulls = np.full(len(run.members), np.nan)
    hulls[nodes] = hull_areas(reach)
    return hulls


def edge_share(outlines: np.ndarray, perimeters: np.ndarray, border_edge: float) -> np.ndarray:
    """Share of each outline that is a clear edge, the image border counting as
    ``border_edge`` of an edge (0 for a region without outline)."""
    strong = outlines[:, 2] + border_edge * (perimeters - outlines[:, 0])
    return np.where(perimeters > 0, strong / np.maximum(perimeters, 1.0), 0.0)


def _bits_to_bool(bits: list[int], n: int) -> np.ndarray:
    """Bitsets over ``n`` base regions -> [len(bits), n] bool."""
    nbytes = (n + 7) // 8
    buf = b"".join(b.to_bytes(nbytes, "little") for b in bits)
    packed = np.frombuffer(buf, np.uint8).reshape(len(bits), nbytes)
    return np.unpackbits(packed, axis=1, count=n, bitorder="little").astype(bool)


# ---------------------------------------------------------------------------- generator
@dataclass
class _Candidates:
    """Candidates over atoms, with their areas (pixels), perimeters (image border included)
    and outline edge triples (image border excluded)."""

    membership: np.ndarray  # [N, A] bool
    areas: np.ndarray  # [N]
    perimeters: np.ndarray  # [N]
    outlines: np.ndarray  # [N, 3]

    def take(self, index: np.ndarray | list[int]) -> _Candidates:
        return _Candidates(
            self.membership[index], self.areas[index], self.perimeters[index], self.outlines[index]
        )

    @staticmethod
    def concat(parts: list[_Candidates]) -> _Candidates:
        return _Candidates(
            np.concatenate([p.membership for p in parts]),
            np.concatenate([p.areas for p in parts]),
            np.concatenate([p.perimeters for p in parts]),
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
        """Filter by area, outline and score, dedupe, NMS, size-balanced cut:
        (membership, scores)."""
        cfg = self.config
        share = edge_share(candidates.outlines, candidates.perimeters, cfg.border_edge)
        scores = self.score(candidates.outlines, candidates.perimeters)
        keep = (
            (candidates.areas >= cfg.min_area * atoms.size)
            & (candidates.areas <= cfg.max_area * atoms.size)
            & (share >= cfg.min_edge_share)
            & (scores >= cfg.min_score)
        )
        candidates, scores = candidates.take(np.flatnonzero(keep)), scores[keep]
        first = _distinct(candidates.membership)
        candidates, scores = candidates.take(first), scores[first]
        order = np.lexsort((-candidates.areas, -scores))
        candidates, scores = candidates.take(order), scores[order]
        kept = np.asarray(_nms(candidates, cfg.nms_iou, atoms), np.int64)
        kept = kept[_balanced(candidates.areas[kept] / atoms.size, cfg.max_candidates)]
        return candidates.membership[kept], scores[kept]

    def score(self, outlines: np.ndarray, perimeters: np.ndarray) -> np.ndarray:
        """Score from outline edge triples and perimeters: :func:`edge_share` times the
        squashed mean contrast across the outline away from the image border."""
        contrast = outlines[:, 1] / np.maximum(outlines[:, 0], 1.0)
        squashed = 1.0 - np.exp(-contrast / self.config.contrast_scale)
        return edge_share(outlines, perimeters, self.config.border_edge) * squashed

    def _candidates(
        self, segmentations: list[np.ndarray], atom_of: list[np.ndarray], lab: np.ndarray
    ) -> _Candidates:
        """The nodes of every grouping run that pass the object tests, over atoms (with
        repeats)."""
        cfg = self.config
        parts = []
        for labels, to_label in zip(segmentations, atom_of, strict=True):
            regions = _region_stats(labels, lab, cfg.edge_threshold)
            for strategy in cfg.strategies:
                run = _group(
                    regions, parse_strategy(strategy), cfg.colour_sigma, cfg.edge_threshold
                )
                nodes = np.flatnonzero(~not_objects(run, regions.supports, cfg))
                members = _bits_to_bool([run.members[k] for k in nodes], len(regions.sizes))
                parts.append(
                    _Candidates(
                        members[:, to_label],
                        np.asarray(run.sizes)[nodes],
                        np.asarray(run.perimeters)[nodes],
                        np.asarray(run.outlines).reshape(-1, 3)[nodes],
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


def _distinct(membership: np.ndarray) -> list[int]:
    """Index of the first of each distinct row (same atoms), in order of first appearance."""
    packed = np.packbits(membership, axis=1)
    first: dict[bytes, int] = {}
    for idx, row in enumerate(packed):
        first.setdefault(row.tobytes(), idx)
    return list(first.values())


def _nms(candidates: _Candidates, thresh: float, atoms: np.ndarray) -> list[int]:
    """Greedy mask-IoU non-maximum suppression over candidates sorted best first.

    Two masks have an IoU above ``thresh`` only if the smaller has more than ``thresh`` times
    the area of the larger, so only such pairs are compared (few, unlike all pairs).
    """
    sizes = candidates.areas
    n = len(sizes)
    by_area = np.argsort(sizes, kind="stable")
    ends = np.searchsorted(sizes[by_area], sizes[by_area] / thresh, side="right")
    counts = ends - np.arange(n) - 1  # partners after each candidate in area order
    first = np.repeat(np.arange(n), counts)
    offset = np.arange(len(first)) - np.repeat(np.cumsum(counts) - counts, counts)
    a, b = by_area[first], by_area[first + 1 + offset]
    atom_area = np.bincount(atoms.ravel(), minlength=candidates.membership.shape[1])
    inter = np.concatenate(
        [
            (candidates.membership[a[s:e]] & candidates.membership[b[s:e]]) @ atom_area
            for s, e in _chunks(len(a), 4096)
        ]
    )
    duplicate = inter > thresh * (sizes[a] + sizes[b] - inter)
    partners: dict[int, list[int]] = {}
    for x, y in zip(a[duplicate].tolist(), b[duplicate].tolist(), strict=True):
        partners.setdefault(x, []).append(y)
        partners.setdefault(y, []).append(x)
    suppressed = [False] * n
    kept: list[int] = []
    for idx in range(n):
        if not suppressed[idx]:
            kept.append(idx)
            for other in partners.get(idx, ()):
                suppressed[other] = True
    return kept


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of consecutive chunks of ``size`` covering ``range(total)`` (at least
    one, possibly empty)."""
    return [(s, min(s + size, total)) for s in range(0, max(total, 1), size)]


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
    # [K, W, H] in C order is [H, W, K] in Fortran order, the layout pycocotools encodes
    masks = membership.astype(np.uint8)[:, atoms.T].transpose(0, 2, 1)
    return Proposals.from_masks(masks, scores.astype(np.float32))

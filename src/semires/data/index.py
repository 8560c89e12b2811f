"""The in-memory index of a referring-expression dataset.

Both readers (the refer API layout and the LAVT/SemiRES json) produce a :class:`RESIndex`:

- images   (id, file name, size),
- objects  (id, image, category, bbox, mask as RLE, decoded lazily),
- refs     (id, object, split, sentences).

A ref is one referred object in one split with one or more sentences (expressions). Masks are
decoded on demand and cached as RLE, so an index of the whole of RefCOCO stays small.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semires.data import masks as mask_ops
from semires.errors import DataError

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens, as the refer API's ``tokens`` field."""
    return _TOKEN_RE.findall(text.lower())


@dataclass(frozen=True, slots=True)
class Image:
    id: int
    file_name: str
    height: int | None = None
    width: int | None = None


@dataclass(slots=True)
class Object:
    """One annotated object (a COCO instance). ``segmentation`` is decoded lazily.

    An object with neither ``segmentation`` nor ``mask_file`` has no mask: unlabeled data (a
    JSON Lines line without ``mask``); :meth:`RESIndex.has_mask` tells.
    """

    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float] | None  # None: not given (RESIndex.bbox derives it)
    segmentation: Any = None  # COCO polygons / RLE, or None when ``mask_file`` is used
    mask_file: Path | None = None  # LAVT/SemiRES json layout: masks/<mask_id>.npy
    iscrowd: int = 0
    area: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)  # e.g. synthetic shape/colour/parts
    key: str | None = None  # the object's own id in its file (JSON Lines ``object``)


@dataclass(frozen=True, slots=True)
class Sentence:
    id: int
    raw: str
    tokens: tuple[str, ...]

    @property
    def sent(self) -> str:
        return " ".join(self.tokens)

    @classmethod
    def from_text(cls, sent_id: int, raw: str) -> Sentence:
        return cls(id=int(sent_id), raw=raw, tokens=tuple(tokenize(raw)))


@dataclass(slots=True)
class Ref:
    id: int
    object_id: int
    image_id: int
    category_id: int
    split: str
    sentences: list[Sentence]


class RESIndex:
    """Images, objects and refs of one dataset (all splits)."""

    def __init__(
        self,
        images: Iterable[Image],
        objects: Iterable[Object],
        refs: Iterable[Ref],
        categories: dict[int, str] | None = None,
        *,
        name: str = "",
        split_by: str = "",
        image_root: str | Path | None = None,
        source: str = "",
        origins: dict[int, str] | None = None,
    ) -> None:
        self.images: dict[int, Image] = {im.id: im for im in images}
        self.objects: dict[int, Object] = {ob.id: ob for ob in objects}
        self.refs: dict[int, Ref] = {r.id: r for r in sorted(refs, key=lambda r: r.id)}
        self.categories: dict[int, str] = dict(categories or {})
        self.name = name
        self.split_by = split_by
        self.image_root = Path(image_root) if image_root is not None else None
        self.source = source  # where the index was read from, for error messages
        #: object id -> where it was read from (``file:line``), named by its mask errors
        self.origins: dict[int, str] = dict(origins or {})
        self._rle_cache: dict[int, mask_ops.RLE] = {}
        self._header_sizes: dict[int, tuple[int, int] | None] = {}  # image files' own sizes
        self._mask_sizes: dict[int, tuple[int, int]] = {}  # size of the first checked mask
        self._by_image: dict[int, list[int]] | None = None  # see _objects_by_image

    # ------------------------------------------------------------------ queries
    def __repr__(self) -> str:
        return (
            f"RESIndex(name={self.name!r}, images={len(self.images)}, objects={len(self.objects)}, "
            f"refs={len(self.refs)}, splits={self.splits()})"
        )

    def splits(self) -> list[str]:
        order = {"train": 0, "val": 1, "test": 2, "testA": 3, "testB": 4}
        return sorted({r.split for r in self.refs.values()}, key=lambda s: (order.get(s, 9), s))

    def refs_in(self, split: str | None = None) -> list[Ref]:
        """Refs of one split (all refs when ``split`` is None), sorted by id."""
        if split is not None and split not in set(self.splits()):
            raise DataError(
                f"split {split!r} not found in {self.source or self.name}; "
                f"available: {', '.join(self.splits())}"
            )
        return [r for r in self.refs.values() if split is None or r.split == split]

    def image_ids(self, split: str | None = None) -> list[int]:
        """Sorted unique image ids of the refs of a split."""
        return sorted({r.image_id for r in self.refs_in(split)})

    def sentences(self, split: str | None = None) -> Iterator[tuple[Ref, Sentence]]:
        """Every (ref, sentence) pair of a split: the unit of evaluation."""
        for ref in self.refs_in(split):
            for sent in ref.sentences:
                yield ref, sent

    # ------------------------------------------------------------------ images
    def image_path(self, image_id: int) -> Path:
        if image_id not in self.images:
            raise DataError(f"image id {image_id} not in {self.source or self.name}")
        if self.image_root is None:
            raise DataError(f"no image root set for {self.source or self.name}; pass --image-root")
        return self.image_root / self.images[image_id].file_name

    def load_image(self, image_id: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        from semires.data.images import read_image

        return read_image(self.image_path(image_id))

    def image_size(self, image_id: int) -> tuple[int, int]:
        """(height, width), from the index, else from a mask of the image, else the image file."""
        im = self.images[image_id]
        if im.height is not None and im.width is not None:
            return im.height, im.width
        for object_id in self._objects_by_image().get(image_id, ()):
            if self.has_mask(object_id):
                h, w = self.rle(object_id)["size"]
                return int(h), int(w)
        from semires.data.images import image_size

        return image_size(self.image_path(image_id))

    def _objects_by_image(self) -> dict[int, list[int]]:
        """Image id -> its object ids in the index's order, built once: :meth:`image_size` of
        every image of an index without sizes (the SemiRES json) would otherwise scan all
        objects per image, quadratic in the dataset's size."""
        if self._by_image is None:
            by_image: dict[int, list[int]] = {}
            for ob in self.objects.values():
                by_image.setdefault(ob.image_id, []).append(ob.id)
            self._by_image = by_image
        return self._by_image

    # ------------------------------------------------------------------ masks
    def rle(self, object_id: int) -> mask_ops.RLE:
        """The object's mask as a compressed RLE (decoded from its source once, then cached)."""
        cached = self._rle_cache.get(object_id)
        if cached is not None:
            return cached
        ob = self.objects.get(object_id)
        if ob is None:
            raise DataError(f"object id {object_id} not in {self.source or self.name}")
        where = self._where(ob)
        if ob.mask_file is not None:
            rle = self._read_mask_file(ob)
            where += f", mask file {ob.mask_file}"
        elif ob.segmentation is not None:
            rle = self._decode_segmentation(ob, where)
        else:
            raise DataError(f"{where} has no mask")
        mask_ops.validate_mask(rle, self._known_image_size(ob.image_id), where)
        self._mask_sizes.setdefault(ob.image_id, (int(rle["size"][0]), int(rle["size"][1])))
        self._rle_cache[object_id] = rle
        return rle

    def _where(self, ob: Object) -> str:
        """How errors name an object: its ``file:line`` when known, else the index's source."""
        origin = self.origins.get(ob.id)
        if origin is not None:
            return f"{origin}: object {ob.id} (image {ob.image_id})"
        return f"object {ob.id} (image {ob.image_id}) in {self.source or self.name}"

    def _read_mask_file(self, ob: Object) -> mask_ops.RLE:
        try:
            return mask_ops.encode(mask_ops.read_mask_file(ob.mask_file))  # type: ignore[arg-type]
        except DataError as err:
            if ob.id not in self.origins:
                raise
            raise DataError(f"{self.origins[ob.id]}: {err}") from err

    def _decode_segmentation(self, ob: Object, where: str) -> mask_ops.RLE:
        im = self.images.get(ob.image_id)
        h = im.height if im else None
        w = im.width if im else None
        if isinstance(ob.segmentation, list) and (h is None or w is None):
            raise DataError(f"{where}: polygon mask needs the size of image {ob.image_id}")
        try:
            return mask_ops.from_segmentation(ob.segmentation, h or 0, w or 0)
        except Exception as exc:
            raise DataError(f"{where}: cannot decode its segmentation ({exc})") from exc

    def _known_image_size(self, image_id: int) -> tuple[int, int] | None:
        """(height, width) of an image without reading any mask of its own: the index's
        size, else the image file's header, else the size of a mask of the image already
        checked (None when there is nothing to compare with)."""
        im = self.images.get(image_id)
        if im is not None and im.height is not None and im.width is not None:
            return im.height, im.width
        if image_id not in self._header_sizes:
            from semires.data.images import image_size

            size = None
            if im is not None and self.image_root is not None:
                path = self.image_root / im.file_name
                if path.is_file():
                    try:
                        size = image_size(path)
                    except DataError:
                        size = None  # an unreadable image fails where it is read
            self._header_sizes[image_id] = size
        return self._header_sizes[image_id] or self._mask_sizes.get(image_id)

    def mask(self, object_id: int) -> np.ndarray:
        """The object's (H, W) uint8 mask in {0, 1}."""
        return mask_ops.decode(self.rle(object_id))

    def has_mask(self, object_id: int) -> bool:
        """Whether the object has a mask (a segmentation or a mask file; the file may still be
        absent, see :func:`semires.data.semires_json.mask_available`)."""
        ob = self.objects[object_id]
        return ob.segmentation is not None or ob.mask_file is not None

    def has_masks(self) -> bool:
        """Whether any object has a mask."""
        return any(self.has_mask(i) for i in self.objects)

    def bbox(self, object_id: int) -> tuple[float, float, float, float] | None:
        """The object's [x, y, w, h] box: as given, else the mask's extent, else None."""
        ob = self.objects[object_id]
        if ob.bbox is not None or not self.has_mask(object_id):
            return ob.bbox
        x, y, w, h = mask_ops.bbox(self.rle(object_id))
        return (x, y, w, h)

    def require_masks(self, split: str, why: str, refs: Iterable[Ref] | None = None) -> None:
        """Refuse a split (or these ``refs`` of it) some of whose refs have no mask, in one line
        naming the first of them; ``why``: what needs the masks."""
        refs = self.refs_in(split) if refs is None else list(refs)
        without = [r for r in refs if not self.has_mask(r.object_id)]
        if without:
            first = self.objects[without[0].object_id]
            raise DataError(
                f"split {split!r} of {self.source or self.name}: {len(without)} of {len(refs)} "
                f"refs have no mask (first: {self._where(first)}); {why}"
            )

    # ------------------------------------------------------------------ checks / views
    def validate(self) -> None:
        """Every ref points to an existing object and image, every object to an existing image."""
        where = self.source or self.name or "the index"
        for ob in self.objects.values():
            if ob.image_id not in self.images:
                raise DataError(f"{where}: object {ob.id} points to missing image {ob.image_id}")
        for ref in self.refs.values():
            if ref.object_id not in self.objects:
                raise DataError(
                    f"{where}: ref {ref.id} points to missing object (ann_id) {ref.object_id}"
                )
            if ref.image_id not in self.images:
                raise DataError(f"{where}: ref {ref.id} points to missing image {ref.image_id}")
            if self.objects[ref.object_id].image_id != ref.image_id:
                raise DataError(
                    f"{where}: ref {ref.id} says image {ref.image_id} but its object "
                    f"{ref.object_id} is on image {self.objects[ref.object_id].image_id}"
                )

    def subset(self, ref_ids: Iterable[int]) -> RESIndex:
        """A new index holding only the given refs and the objects / images they use."""
        wanted = set(ref_ids)
        unknown = wanted - set(self.refs)
        if unknown:
            raise DataError(
                f"unknown ref ids for {self.source or self.name}: {sorted(unknown)[:10]}"
            )
        refs = [self.refs[i] for i in sorted(wanted)]
        obj_ids = {r.object_id for r in refs}
        img_ids = {r.image_id for r in refs}
        out = RESIndex(
            [self.images[i] for i in sorted(img_ids)],
            [self.objects[i] for i in sorted(obj_ids)],
            refs,
            self.categories,
            name=self.name,
            split_by=self.split_by,
            image_root=self.image_root,
            source=self.source,
            origins={k: v for k, v in self.origins.items() if k in obj_ids},
        )
        out._rle_cache = {k: v for k, v in self._rle_cache.items() if k in obj_ids}
        out._header_sizes = {k: v for k, v in self._header_sizes.items() if k in img_ids}
        out._mask_sizes = {k: v for k, v in self._mask_sizes.items() if k in img_ids}
        return out

    def replace_objects(self, objects: Iterable[Object]) -> RESIndex:
        """A copy of the index with these objects in place of those of the same ids (their
        decoded masks forgotten)."""
        out = self.with_image_root(self.image_root)
        for ob in objects:
            out.objects[ob.id] = ob
            out._rle_cache.pop(ob.id, None)
        out._by_image = None
        return out

    def with_image_root(self, image_root: str | Path | None) -> RESIndex:
        out = self.subset(self.refs)
        out.images = dict(self.images)
        out.objects = dict(self.objects)
        out._by_image = None
        out.origins = dict(self.origins)
        out.image_root = Path(image_root) if image_root is not None else None
        return out

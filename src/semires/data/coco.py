"""The 80 COCO object categories: contiguous index 0..79, COCO category id (1..90, with gaps), name.

The LAVT/SemiRES json stores ``cat_id`` as the contiguous index (person = 0, teddy bear = 77);
the refer API layout stores the COCO category id (person = 1, teddy bear = 88).
"""

from __future__ import annotations

from semires.errors import DataError

# (COCO category id, name), in the order of the contiguous index.
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"),
    (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"),
    (24, "zebra"), (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"),
    (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"),
    (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"),
    (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"),
    (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"), (56, "broccoli"),
    (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"),
    (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
    (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"),
    (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)  # fmt: skip

COCO_NAMES: dict[int, str] = dict(COCO_CATEGORIES)
"""COCO category id -> name."""

_INDEX_OF_ID: dict[int, int] = {cid: i for i, (cid, _) in enumerate(COCO_CATEGORIES)}


def coco_id(index: int) -> int:
    """The COCO category id of contiguous index ``index`` (0..79)."""
    if not 0 <= index < len(COCO_CATEGORIES):
        raise DataError(f"COCO category index {index} out of range; expected 0..79")
    return COCO_CATEGORIES[index][0]


def coco_index(category_id: int) -> int:
    """The contiguous index (0..79) of COCO category id ``category_id``."""
    if category_id not in _INDEX_OF_ID:
        raise DataError(f"{category_id} is not a COCO category id (1..90, 80 of them)")
    return _INDEX_OF_ID[category_id]


def is_coco(categories: dict[int, str]) -> bool:
    """Whether every (id, name) pair is a COCO category (names compared case-insensitively)."""
    return all(COCO_NAMES.get(cid, "").lower() == name.lower() for cid, name in categories.items())

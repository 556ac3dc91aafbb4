"""The review load of a round as people feel it: images, items looked at, label changes, and an estimated time.

Per class (a case's class is the class it is about) and for the whole round:

- ``images``: case images (single-particle cases and galleries);
- ``items``: what a reviewer looks at: a single-particle case's rows (its label and candidates), a gallery's crops;
- ``label_changes``: adds, removes, moves and relabels of the new version (keeps are not changes);
- ``images_per_change`` and ``items_per_change``;
- ``minutes``: ``images x SECONDS_PER_IMAGE + items x SECONDS_PER_ITEM``, in minutes.

The two constants are declared, not measured on byu's reviewers: one look and at most one key per item is the
pace of image-level yes/no verification (about 1.6 s per question, Papadopoulos et al., "We don't need no
bounding-boxes", CVPR 2016), rounded up to 2 s for three views of a 3D crop; orienting on a new image (reading its
header, finding the crops) is taken as 8 s. A lab that times its own reviewers should use their figures; the
counts the estimate rests on are reported beside it.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from byu.labels.diff import label_changes
from byu.review.cases import Case

SECONDS_PER_IMAGE = 8.0
SECONDS_PER_ITEM = 2.0


def _ratio(a: float, b: float) -> float | None:
    return None if not b else round(a / b, 3)


def _entry(images: int, items: int, changes: int) -> dict[str, float | int | None]:
    return {"images": images, "items": items, "label_changes": changes,
            "images_per_change": _ratio(images, changes), "items_per_change": _ratio(items, changes),
            "minutes": round((images * SECONDS_PER_IMAGE + items * SECONDS_PER_ITEM) / 60.0, 1)}


def review_load(cases: Iterable[Case], changes: pd.DataFrame | None = None) -> dict:
    """``{"total": {...}, "by_class": {class: {...}}, "by_kind": {kind: images}}`` (see the module docstring);
    ``changes`` is the new version's changes table (None: before the review, no changes yet)."""
    cases = list(cases)
    moved = label_changes(changes) if changes is not None and len(changes) else pd.DataFrame(columns=["particle"])
    per_change = moved["particle"].astype(str).value_counts().to_dict()
    classes = list(dict.fromkeys([*(c.particle for c in cases), *per_change]))
    by_class = {}
    for name in classes:
        mine = [c for c in cases if c.particle == name]
        by_class[name] = _entry(len(mine), sum(len(c.candidates) for c in mine), int(per_change.get(name, 0)))
    total = _entry(len(cases), sum(len(c.candidates) for c in cases), int(len(moved)))
    kinds = pd.Series([c.kind for c in cases], dtype=object).value_counts().to_dict()
    return {"total": total, "by_class": by_class, "by_kind": {str(k): int(v) for k, v in kinds.items()},
            "seconds_per_image": SECONDS_PER_IMAGE, "seconds_per_item": SECONDS_PER_ITEM}


__all__ = ["SECONDS_PER_IMAGE", "SECONDS_PER_ITEM", "review_load"]

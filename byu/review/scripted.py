"""A scripted reviewer that answers from a known truth (synthetic cohorts, demos, tests).

It tags like a careful annotator, with the round's vocabulary (:mod:`byu.review.tags`). An item "is" a true particle
when one lies within the match radius of the item's class (and of the true particle's class) in the item's
tomogram; each true particle is claimed by at most one item of the round (the first shown), and a prediction is not
claimed for a true particle that is already labeled.

- FN case: ``0`` when the labeled pick is a true particle (``0:<class>`` when it is one of another class), plus
  every other candidate that is a true, unlabeled particle (``k``, or ``k:<class>`` when shown as another class:
  keep + add); otherwise the candidates that are true particles (a move), or ``none``.
- FP case: every candidate that is a true particle not yet labeled, or ``none``.
- ``GL`` gallery: ``x<k>`` for every crop that is not a true particle, ``k:<class>`` for one of another class; ``ok``
  when every crop is right.
- ``GP`` gallery: ``k`` (``k:<class>``) for every crop that is a true particle not yet labeled; ``ok`` when none is.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from byu.labels.model import LabelSet
from byu.review.cases import Candidate, Case
from byu.review.decisions import DECISION_COLUMNS
from byu.review.tags import KEEP, NONE, OK, candidate_class_tag, join_tags, reject_tag

_Points = dict[str, list[tuple[str, np.ndarray]]]


def _index(labels: LabelSet) -> _Points:
    """Picks per tomogram as ``(class, position in Å)``."""
    spacing = labels.spacing_of()
    out: _Points = {}
    for r in labels.picks.itertuples(index=False):
        out.setdefault(r.tomo_id, []).append((r.particle, np.array([r.z, r.y, r.x], float) * spacing[r.tomo_id]))
    return out


class _Truth:
    """The true particles of a round, each claimed by at most one item."""

    def __init__(self, truth: LabelSet, labeled: LabelSet | None, radius_A: float | None) -> None:
        self.true = _index(truth)
        self.labeled = _index(labeled) if labeled is not None else None
        self.radii = {c.name: c.match_radius_A for c in truth.classes}
        self.radius_A = radius_A
        self.claimed: set[tuple[str, int]] = set()

    def radius(self, case: Case, *names: str) -> float:
        if self.radius_A is not None:
            return float(self.radius_A)
        return min(self.radii.get(n, case.radius_A) for n in names)

    def claim(self, case: Case, c: Candidate) -> str | None:
        """The true class of the particle candidate ``c`` of ``case`` shows (and claim it), or None."""
        frame = case.frame_of(c)
        p = np.array(c.zyx) * frame.voxel_spacing
        best, best_d = None, np.inf
        true = self.true.get(frame.tomo_id, [])
        for i, (cls, q) in enumerate(true):
            d = float(np.linalg.norm(q - p))
            if (frame.tomo_id, i) not in self.claimed and d <= self.radius(case, c.particle, cls) and d < best_d:
                best, best_d = i, d
        if best is None:
            return None
        cls, q = true[best]
        if c.source == "prediction":
            if self.labeled is not None:
                labeled = self.labeled.get(frame.tomo_id, [])
            else:
                labeled = [(lp.particle, np.array([lp.z, lp.y, lp.x]) * frame.voxel_spacing) for lp in case.labels]
            if any(lc == cls and float(np.linalg.norm(lq - q)) <= self.radius(case, cls) for lc, lq in labeled):
                return None  # that true particle is already labeled
        self.claimed.add((frame.tomo_id, best))
        return cls


def _real(c: Candidate, cls: str) -> str:
    return str(c.k) if cls == c.particle else candidate_class_tag(c.k, cls)


def case_tags(case: Case, truth: _Truth) -> list[str]:
    """What a careful annotator tags on ``case`` (see the module docstring)."""
    if case.kind == "GL":
        tags = []
        for c in case.candidates:
            cls = truth.claim(case, c)
            if cls is None:
                tags.append(reject_tag(c.k))
            elif cls != c.particle:
                tags.append(candidate_class_tag(c.k, cls))
        return tags or [OK]
    if case.kind == "GP":
        tags = [_real(c, cls) for c in case.candidates if (cls := truth.claim(case, c)) is not None]
        return tags or [OK]
    label = case.label
    if case.kind == "FN" and label is not None:
        cls = truth.claim(case, label)
        if cls is not None:
            keep = KEEP if cls == label.particle else candidate_class_tag(0, cls)
            return [keep] + [_real(c, cc) for c in case.candidates if c.k > 0 and (cc := truth.claim(case, c))]
    tags = [_real(c, cls) for c in case.candidates if c.k > 0 and (cls := truth.claim(case, c)) is not None]
    return tags or [NONE]


def scripted_decisions(cases: Iterable[Case], truth: LabelSet, *, radius_A: float | None = None,
                       reviewer: str = "scripted", labeled: LabelSet | None = None) -> pd.DataFrame:
    """Decisions (``DECISION_COLUMNS``) for every case, from the ``truth`` labels. ``labeled`` is the version the
    cases were mined against (what is already labeled, for gallery predictions; single cases carry their
    tomogram's labels)."""
    state = _Truth(truth, labeled, radius_A)
    rows = [{"case_id": case.case_id, "image": case.image, "tags": join_tags(case_tags(case, state)),
             "reviewer": reviewer, "source": "scripted", "job_state": ""} for case in cases]
    return pd.DataFrame(rows, columns=DECISION_COLUMNS)


__all__ = ["case_tags", "scripted_decisions"]

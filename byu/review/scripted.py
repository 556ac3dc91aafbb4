"""A scripted reviewer that answers from a known truth (synthetic cohorts, demos, tests).

It tags like a careful annotator. A candidate "is" a true particle when one lies within the match radius of the
candidate's class (and of the true particle's class); each true particle is claimed by at most one candidate (the
first shown), and a prediction is not claimed for a true particle that is already labeled.

- FN case: ``0`` when the labeled pick is a true particle (``0`` + ``as:<class>`` when it is one of another
  class), plus the other candidates that are true, unlabeled particles of that class (keep + add); otherwise the candidates that are true particles (a move), or ``none``.
- FP case: every candidate that is a true particle not yet labeled, or ``none``.
- A candidate shown with the wrong class is tagged with ``as:<true class>``. One class per image: the candidates
  that are true particles of the class they are shown as come first (a motor case's real motor is tagged, not a
  ribosome a motor prediction fell on); only when there are none, those of the first mis-shown class. The others
  are left for their own cases.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from byu.labels.model import LabelSet
from byu.review.cases import Candidate, Case
from byu.review.decisions import DECISION_COLUMNS
from byu.review.tags import KEEP, NONE, class_tag, join_tags


def _truth_index(truth: LabelSet) -> dict[str, list[tuple[str, np.ndarray]]]:
    spacing = truth.spacing_of()
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for r in truth.picks.itertuples(index=False):
        out.setdefault(r.tomo_id, []).append((r.particle, np.array([r.z, r.y, r.x], float) * spacing[r.tomo_id]))
    return out


def scripted_decisions(cases: Iterable[Case], truth: LabelSet, *, radius_A: float | None = None,
                       reviewer: str = "scripted") -> pd.DataFrame:
    """Decisions (``DECISION_COLUMNS``) for every case, from the ``truth`` labels."""
    radii = {c.name: c.match_radius_A for c in truth.classes}
    index = _truth_index(truth)
    rows = []
    for case in cases:
        s = case.voxel_spacing
        true = index.get(case.tomo_id, [])
        labeled = [(p.particle, np.array([p.z, p.y, p.x]) * s) for p in case.labels]
        claimed: set[int] = set()

        def radius(*names: str) -> float:
            if radius_A is not None:
                return float(radius_A)
            return min(radii.get(n, case.radius_A) for n in names)

        def claim(c: Candidate) -> str | None:
            """The true class of the particle ``c`` shows (and claim it), or None."""
            p = np.array(c.zyx) * s
            best, best_d = None, np.inf
            for i, (cls, q) in enumerate(true):
                d = float(np.linalg.norm(q - p))
                if i not in claimed and d <= radius(c.particle, cls) and d < best_d:
                    best, best_d = i, d
            if best is None:
                return None
            cls, q = true[best]
            if c.source == "prediction" and any(
                    lc == cls and float(np.linalg.norm(lq - q)) <= radius(cls) for lc, lq in labeled):
                return None  # that true particle is already labeled
            claimed.add(best)
            return cls

        tags: list[str] = []
        label = case.label
        if case.kind == "FN" and label is not None:
            cls = claim(label)
            if cls is not None:
                # the label is right; a reviewer also tags any other shown candidate that is a real, unlabeled
                # particle of that class (keep + add), e.g. a second motor next to the labeled one
                relabel = cls != label.particle  # then as:<cls> names the class of every tagged candidate
                others = [str(c.k) for c in case.candidates
                          if c.k > 0 and (relabel or c.particle == cls) and claim(c) == cls]
                tags = [KEEP] + others + ([class_tag(cls)] if cls != label.particle else [])
        if not tags:
            claims = [(c.k, c.particle, cls) for c in case.candidates if c.k > 0 and (cls := claim(c)) is not None]
            right = [str(k) for k, shown, true_cls in claims if shown == true_cls]
            wrong = [true_cls for _, shown, true_cls in claims if shown != true_cls]
            if right or not wrong:  # one class per image: the candidates shown as what they are first
                tags = right
            else:  # else those of the first mis-shown class
                named = wrong[0]
                tags = [str(k) for k, _, true_cls in claims if true_cls == named] + [class_tag(named)]
            tags = tags or [NONE]
        rows.append({"case_id": case.case_id, "image": case.image, "tags": join_tags(tags), "reviewer": reviewer,
                     "source": "scripted", "job_state": ""})
    return pd.DataFrame(rows, columns=DECISION_COLUMNS)

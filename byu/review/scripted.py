"""A scripted reviewer that answers from a known truth (synthetic cohorts, demos, tests).

It tags like a careful annotator: for an FN case ``0`` when the labeled motor is a true motor, otherwise the
candidate that is a true motor (a move) or ``none``; for an FP case every candidate that is a true motor not yet
labeled, or ``none``. Each true motor is claimed by at most one candidate (the most confident).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from byu.review.decisions import DECISION_COLUMNS
from byu.review.match import case_candidates
from byu.review.tags import KEEP, NONE, join_tags



def _nearest_within(points: np.ndarray, p: np.ndarray, radius: float) -> int | None:
    if not len(points):
        return None
    d = np.linalg.norm(points - p, axis=1)
    i = int(d.argmin())
    return i if d[i] <= radius else None


def scripted_decisions(cases: pd.DataFrame, truth: pd.DataFrame, *, radius_A: float | None = None,
                       reviewer: str = "scripted") -> pd.DataFrame:
    """Decisions (``case_id,image,tags,reviewer,source``) for every case, from the ``truth`` label table."""
    truth_by = {r.tomo_id: r for r in truth.itertuples(index=False)}
    rows = []
    for case in cases.itertuples(index=False):
        radius = float(radius_A if radius_A is not None else case.radius_A)
        s = float(case.voxel_spacing)
        t = truth_by.get(case.tomo_id)
        true_A = np.asarray(t.motor_zyx, float).reshape(-1, 3) * float(t.voxel_spacing) if t is not None \
            else np.zeros((0, 3))
        labeled_A = np.asarray(json.loads(case.labels), float).reshape(-1, 3) * s
        claimed: set[int] = set()

        def claims(c: dict) -> bool:
            p = np.array([c["z"], c["y"], c["x"]], float) * s
            i = _nearest_within(true_A, p, radius)
            if i is None or i in claimed:
                return False
            if c["source"] == "prediction" and _nearest_within(labeled_A, true_A[i], radius) is not None:
                return False  # that true motor is already labeled
            claimed.add(i)
            return True

        cands = case_candidates(case)
        if case.kind == "FN" and claims(cands[0]):
            tags = [KEEP]
        else:
            tags = [str(c["k"]) for c in cands if c["k"] > 0 and claims(c)] or [NONE]
        rows.append({"case_id": case.case_id, "image": case.image, "tags": join_tags(tags), "reviewer": reviewer,
                     "source": "scripted"})
    return pd.DataFrame(rows, columns=DECISION_COLUMNS)

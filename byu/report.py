"""Score a refined label version against a known truth: which planted errors were fixed (demo, benchmarks)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from byu.labels.diff import label_changes
from byu.labels.model import LabelSet


def _near(points_A: np.ndarray, p_A: np.ndarray, radius: float) -> bool:
    return bool(len(points_A)) and float(np.linalg.norm(points_A - p_A, axis=1).min()) <= radius


def planted_errors_fixed(errors: pd.DataFrame, refined: LabelSet) -> pd.DataFrame:
    """Per planted error (``tomo_id,[particle,]kind,true_*,label_*``, coordinates in the refined version's frame of
    that tomogram), whether ``refined`` fixed it, judged within the class's match radius:

    missed: a pick of the class now near the true one; false (a label on a decoy or look-alike) and background (a
    label on empty background: the crowded world of :mod:`byu.synth`): no pick of the class left near the false
    label; shifted: a pick near the true position and none left at the wrong one.
    """
    radius = {c.name: c.match_radius_A for c in refined.classes}
    spacing = refined.spacing_of()
    points: dict[tuple[str, str], np.ndarray] = {}
    for (tid, name), g in refined.picks.groupby(["tomo_id", "particle"], sort=False):
        points[(tid, name)] = g[["z", "y", "x"]].to_numpy(dtype=float) * spacing[tid]
    fixed = []
    for e in errors.to_dict("records"):
        name = str(e.get("particle") or "motor")
        tid = e["tomo_id"]
        if tid not in spacing:
            fixed.append(False)
            continue
        s = spacing[tid]
        r = radius.get(name, 1000.0)
        pts = points.get((tid, name), np.zeros((0, 3)))
        true_p = np.array([e["true_z"], e["true_y"], e["true_x"]], float) * s
        label_p = np.array([e["label_z"], e["label_y"], e["label_x"]], float) * s
        if e["kind"] == "missed":
            ok = _near(pts, true_p, r)
        elif e["kind"] in ("false", "background"):
            ok = not _near(pts, label_p, r)
        else:
            ok = _near(pts, true_p, r) and not _near(pts, label_p, r)
        fixed.append(bool(ok))
    out = errors.copy()
    out["fixed"] = fixed
    return out


def changes_without_decision(changes: pd.DataFrame) -> int:
    """Label changes (add/remove/move/relabel) that no review case or override accounts for."""
    ch = label_changes(changes)
    case = ch["case_id"].map(lambda v: isinstance(v, str) and bool(v.strip()) and v != "nan")
    override = ch["source"].astype(str).str.startswith("override:")
    return int((~case & ~override).sum())


def safe_ratio(a: float, b: float) -> float | None:
    return None if b == 0 else round(a / b, 3) if math.isfinite(a / b) else None


def errors_against_truth(labels: LabelSet, truth: LabelSet, tomo_ids: list[str] | None = None) -> dict[str, int]:
    """Per class, the label errors ``labels`` holds against ``truth`` in ``tomo_ids`` (default: every tomogram):
    picks no true particle matches plus true particles no pick matches, one to one within the class's match radius
    (so a shifted label counts twice: a false pick and a missed particle)."""
    from byu.matching import match_points

    radius = {c.name: c.match_radius_A for c in truth.classes}
    ids = set(labels.tomo_ids if tomo_ids is None else tomo_ids)
    spacing = labels.spacing_of()
    out: dict[str, int] = {c: 0 for c in radius}
    for name in radius:
        for tid in sorted(ids):
            s = spacing.get(tid)
            if s is None:
                continue
            mine = labels.picks[(labels.picks.tomo_id == tid) & (labels.picks.particle == name)]
            true = truth.picks[(truth.picks.tomo_id == tid) & (truth.picks.particle == name)]
            m = match_points(mine[["z", "y", "x"]].to_numpy(float) * s, true[["z", "y", "x"]].to_numpy(float) * s,
                             radius[name])
            out[name] += len(m.unmatched_a) + len(m.unmatched_b)
    return out

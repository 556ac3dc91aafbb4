"""Score a refined label version against a known truth: which planted errors were fixed (demo, benchmarks)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from byu.labels.diff import motor_changes


def _near(motors_A: np.ndarray, p_A: np.ndarray, radius: float) -> bool:
    return bool(len(motors_A)) and float(np.linalg.norm(motors_A - p_A, axis=1).min()) <= radius


def planted_errors_fixed(errors: pd.DataFrame, refined: pd.DataFrame, *, radius_A: float = 1000.0) -> pd.DataFrame:
    """Per planted error (``tomo_id,kind,true_*,label_*``, original frame), whether ``refined`` fixed it.

    missed: a motor now within ``radius_A`` of the true one; false: no motor within ``radius_A`` of the false label;
    shifted: a motor near the true position and none left at the wrong one.
    """
    by = {r.tomo_id: r for r in refined.itertuples(index=False)}
    fixed = []
    for e in errors.itertuples(index=False):
        r = by.get(e.tomo_id)
        if r is None:
            fixed.append(False)
            continue
        s = float(r.voxel_spacing)
        motors = np.asarray(r.motor_zyx, float).reshape(-1, 3) * s
        true_p = np.array([e.true_z, e.true_y, e.true_x], float) * s
        label_p = np.array([e.label_z, e.label_y, e.label_x], float) * s
        if e.kind == "missed":
            ok = _near(motors, true_p, radius_A)
        elif e.kind == "false":
            ok = not _near(motors, label_p, radius_A)
        else:
            ok = _near(motors, true_p, radius_A) and not _near(motors, label_p, radius_A)
        fixed.append(bool(ok))
    out = errors.copy()
    out["fixed"] = fixed
    return out


def changes_without_decision(changes: pd.DataFrame) -> int:
    """Label changes (add/remove/move) that no review case or override accounts for."""
    motor = motor_changes(changes)
    case = motor["case_id"].map(lambda v: isinstance(v, str) and bool(v.strip()) and v != "nan")
    override = motor["source"].astype(str).str.startswith("override:")
    return int((~case & ~override).sum())


def safe_ratio(a: float, b: float) -> float | None:
    return None if b == 0 else round(a / b, 3) if math.isfinite(a / b) else None

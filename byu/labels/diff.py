"""Differences between two label tables, motor by motor, matched in Å."""

from __future__ import annotations

import numpy as np
import pandas as pd

from byu.labels.table import motors_angstrom
from byu.matching import match_points

CHANGE_COLUMNS = [
    "tomo_id", "action", "old_z", "old_y", "old_x", "new_z", "new_y", "new_x",
    "source", "case_id", "reviewer", "confidence",
]
ACTIONS = ("add", "remove", "move", "keep", "add_tomo", "remove_tomo")
DEFAULT_RADIUS_A = 1000.0
MOTOR_ACTIONS = ("add", "remove", "move")  # changes to the motor list; keep/add_tomo/remove_tomo are not


def motor_changes(changes: pd.DataFrame) -> pd.DataFrame:
    """The rows of a changes table that add, remove or move a motor."""
    return changes[changes["action"].isin(MOTOR_ACTIONS)]


def change_row(tomo_id: str, action: str, old=None, new=None, *, source: str = "", case_id: str = "",
               reviewer: str = "", confidence: float | None = None) -> dict:
    """One row of a ``.changes.csv`` table; ``old``/``new`` are ``[z, y, x]`` in the new table's frame."""
    o = list(old) if old is not None else [np.nan] * 3
    n = list(new) if new is not None else [np.nan] * 3
    return {
        "tomo_id": tomo_id, "action": action,
        "old_z": o[0], "old_y": o[1], "old_x": o[2], "new_z": n[0], "new_y": n[1], "new_x": n[2],
        "source": source, "case_id": case_id, "reviewer": reviewer,
        "confidence": np.nan if confidence is None else float(confidence),
    }


def changes_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=CHANGE_COLUMNS)


def diff_tables(old: pd.DataFrame, new: pd.DataFrame, *, radius_A: float = DEFAULT_RADIUS_A,
                source: str = "") -> pd.DataFrame:
    """Changes that turn ``old`` into ``new``: per tomogram, motors matched one-to-one within ``radius_A``.

    A matched pair at a different position is a ``move``; unmatched old motors are ``remove``d, unmatched new ones
    ``add``ed; tomograms only on one side are ``add_tomo``/``remove_tomo`` (plus their motors). Coordinates are in
    each table's own frame (old in old's, new in new's).
    """
    rows: list[dict] = []
    old_by = {r.tomo_id: r for r in old.itertuples(index=False)}
    new_by = {r.tomo_id: r for r in new.itertuples(index=False)}
    for tid in sorted(set(old_by) | set(new_by)):
        o, n = old_by.get(tid), new_by.get(tid)
        if o is None:
            rows.append(change_row(tid, "add_tomo", source=source))
            rows += [change_row(tid, "add", new=m, source=source) for m in n.motor_zyx]
            continue
        if n is None:
            rows += [change_row(tid, "remove", old=m, source=source) for m in o.motor_zyx]
            rows.append(change_row(tid, "remove_tomo", source=source))
            continue
        m = match_points(motors_angstrom(o), motors_angstrom(n), radius_A)
        for i, j, dist in m.pairs:
            if dist > 1e-9:
                rows.append(change_row(tid, "move", old=o.motor_zyx[i], new=n.motor_zyx[j], source=source))
        rows += [change_row(tid, "remove", old=o.motor_zyx[i], source=source) for i in m.unmatched_a]
        rows += [change_row(tid, "add", new=n.motor_zyx[j], source=source) for j in m.unmatched_b]
    return changes_frame(rows)


def diff_summary(changes: pd.DataFrame) -> pd.DataFrame:
    """Per tomogram counts of added / removed / moved motors (only tomograms with a change)."""
    motor = motor_changes(changes)
    if motor.empty:
        return pd.DataFrame(columns=["tomo_id", "added", "removed", "moved"])
    table = pd.crosstab(motor["tomo_id"], motor["action"])
    for a in ("add", "remove", "move"):
        if a not in table.columns:
            table[a] = 0
    table = table[["add", "remove", "move"]].rename(columns={"add": "added", "remove": "removed", "move": "moved"})
    table.columns.name = None
    return table.reset_index().astype({"added": "int64", "removed": "int64", "moved": "int64"})

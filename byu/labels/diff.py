"""Changes between label versions, pick by pick and class by class, compared in Å.

One definition of a label change, shared by the audit trail (``<version>.changes.csv``), ``byu labels diff`` and
the reports:

- ``add`` / ``remove``: a pick appears / disappears;
- ``move``: the same particle at another position (review: a labeled pick moved onto a candidate; computed: a pair
  of picks of one class matched one-to-one, nearest first, within the class's match radius);
- ``relabel``: the same particle given another class (``old_particle`` → ``particle``; computed: an unmatched
  removed and an unmatched added pick of different classes within the smaller of their match radii);
- ``keep`` (a reviewed pick confirmed), ``add_tomo`` / ``remove_tomo``: not label changes.

When version B descends from A (A is B's first parent), the diff A → B *is* B's audit trail (so a reviewed
1,340 Å correction shows as the ``move`` it was, not as remove + add); other pairs are computed.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from byu.labels.model import LabelSet
from byu.matching import match_points
from byu.textsafe import safe_columns

CHANGE_COLUMNS = [
    "tomo_id", "particle", "action", "old_z", "old_y", "old_x", "new_z", "new_y", "new_x", "old_particle",
    "source", "case_id", "reviewer", "confidence",
]
TEXT_COLUMNS = ["tomo_id", "particle", "action", "old_particle", "source", "case_id", "reviewer"]
ACTIONS = ("add", "remove", "move", "relabel", "keep", "add_tomo", "remove_tomo")
LABEL_ACTIONS = ("add", "remove", "move", "relabel")  # changes to the picks; keep/add_tomo/remove_tomo are not
DEFAULT_RADIUS_A = 1000.0


def label_changes(changes: pd.DataFrame) -> pd.DataFrame:
    """The rows of a changes table that add, remove, move or relabel a pick."""
    return changes[changes["action"].isin(LABEL_ACTIONS)]


def change_row(tomo_id: str, action: str, old=None, new=None, *, particle: str = "motor",
               old_particle: str = "", source: str = "", case_id: str = "", reviewer: str = "",
               confidence: float | None = None) -> dict[str, Any]:
    """One row of a changes table; ``old``/``new`` are ``[z, y, x]`` in the version's frame."""
    o = list(old) if old is not None else [np.nan] * 3
    n = list(new) if new is not None else [np.nan] * 3
    return {
        "tomo_id": tomo_id, "particle": particle, "action": action,
        "old_z": o[0], "old_y": o[1], "old_x": o[2], "new_z": n[0], "new_y": n[1], "new_x": n[2],
        "old_particle": old_particle, "source": source, "case_id": case_id, "reviewer": reviewer,
        "confidence": np.nan if confidence is None else float(confidence),
    }


def changes_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=CHANGE_COLUMNS)


def changes_csv_bytes(changes: pd.DataFrame) -> bytes:
    """The bytes of a ``.changes.csv`` (columns in order; outside text made spreadsheet-safe)."""
    out = safe_columns(changes.reindex(columns=CHANGE_COLUMNS), TEXT_COLUMNS)
    buf = io.StringIO()
    out.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def read_changes(path: str | Path) -> pd.DataFrame:
    """A changes file (older ones, without class columns, are motor changes)."""
    df = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=True)
    if "particle" not in df.columns:
        df["particle"] = "motor"
    if "old_particle" not in df.columns:
        df["old_particle"] = ""
    for c in TEXT_COLUMNS:
        df[c] = df[c].astype(object).where(df[c].notna(), "")
    return df.reindex(columns=CHANGE_COLUMNS)


class _Index:
    """Picks of a version grouped by (tomogram, class): voxel and Å arrays, built once."""

    def __init__(self, labels: LabelSet) -> None:
        spacing = labels.spacing_of()
        self.groups: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        for (tid, name), g in labels.picks.groupby(["tomo_id", "particle"], sort=False):
            vox = g[["z", "y", "x"]].to_numpy(dtype=float)
            self.groups[(tid, name)] = (vox, vox * spacing[tid])
        self.names: dict[str, list[str]] = {}
        for tid, name in self.groups:
            self.names.setdefault(tid, []).append(name)

    def get(self, tid: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.groups.get((tid, name), (np.zeros((0, 3)), np.zeros((0, 3))))


def diff_labels(old: LabelSet, new: LabelSet, *, radius_A: float | None = None, source: str = "") -> pd.DataFrame:
    """Changes that turn ``old`` into ``new`` (see the module docstring); ``radius_A`` overrides every class's
    match radius. Coordinates are in each version's own frame (old in old's, new in new's)."""
    rows: list[dict] = []
    classes = {c.name: c for c in (*old.classes, *new.classes)}

    def radius(name: str) -> float:
        return float(radius_A) if radius_A is not None else classes[name].match_radius_A

    old_ids, new_ids = set(old.tomo_ids), set(new.tomo_ids)
    oi, ni = _Index(old), _Index(new)
    for tid in sorted(old_ids | new_ids):
        if tid not in old_ids:
            rows.append(change_row(tid, "add_tomo", particle="", source=source))
            rows += [change_row(tid, "add", new=v, particle=name, source=source)
                     for name in ni.names.get(tid, []) for v in ni.get(tid, name)[0]]
            continue
        if tid not in new_ids:
            rows += [change_row(tid, "remove", old=v, particle=name, source=source)
                     for name in oi.names.get(tid, []) for v in oi.get(tid, name)[0]]
            rows.append(change_row(tid, "remove_tomo", particle="", source=source))
            continue
        gone: list[tuple[str, list[float], np.ndarray]] = []
        came: list[tuple[str, list[float], np.ndarray]] = []
        names = list(dict.fromkeys([*oi.names.get(tid, []), *ni.names.get(tid, [])]))
        for name in names:
            ov, oa = oi.get(tid, name)
            nv, na = ni.get(tid, name)
            m = match_points(oa, na, radius(name))
            for i, j, dist in m.pairs:
                if dist > 1e-9:
                    rows.append(change_row(tid, "move", old=ov[i], new=nv[j], particle=name, source=source))
            gone += [(name, list(ov[i]), oa[i]) for i in m.unmatched_a]
            came += [(name, list(nv[j]), na[j]) for j in m.unmatched_b]
        rows += _relabels(tid, gone, came, radius, source)
        rows += [change_row(tid, "remove", old=v, particle=n, source=source) for n, v, _ in gone]
        rows += [change_row(tid, "add", new=v, particle=n, source=source) for n, v, _ in came]
    return changes_frame(rows)


def _relabels(tid: str, gone: list, came: list, radius, source: str) -> list[dict]:
    """Pair removed and added picks of different classes closer than the smaller match radius (nearest first);
    the pairs are taken out of ``gone``/``came`` and returned as ``relabel`` rows."""
    pairs = []
    for i, (ni, _, ai) in enumerate(gone):
        for j, (nj, _, aj) in enumerate(came):
            if ni != nj:
                d = float(np.linalg.norm(ai - aj))
                if d <= min(radius(ni), radius(nj)):
                    pairs.append((d, i, j))
    used_i, used_j, rows = set(), set(), []
    for _, i, j in sorted(pairs):
        if i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        rows.append(change_row(tid, "relabel", old=gone[i][1], new=came[j][1], particle=came[j][0],
                               old_particle=gone[i][0], source=source))
    gone[:] = [g for k, g in enumerate(gone) if k not in used_i]
    came[:] = [c for k, c in enumerate(came) if k not in used_j]
    return rows


def diff_versions(store: Any, a: str, b: str, *, radius_A: float | None = None) -> pd.DataFrame:
    """Changes from stored version ``a`` to ``b``: ``b``'s audit trail when ``a`` is its first parent (and no
    radius is forced), else computed with :func:`diff_labels`."""
    m = store.manifest(b)
    if radius_A is None and m.parents[:1] == [a]:
        return store.changes(b)
    return diff_labels(store.get(a), store.get(b), radius_A=radius_A, source=f"diff {a} {b}")


def diff_summary(changes: pd.DataFrame) -> pd.DataFrame:
    """Per tomogram and class: added / removed / moved / relabeled picks (only rows with a change)."""
    cols = ["tomo_id", "particle", "added", "removed", "moved", "relabeled"]
    ch = label_changes(changes)
    if ch.empty:
        return pd.DataFrame(columns=cols)
    table = pd.crosstab([ch["tomo_id"], ch["particle"]], ch["action"])
    names = {"add": "added", "remove": "removed", "move": "moved", "relabel": "relabeled"}
    table = table.reindex(columns=list(names), fill_value=0).rename(columns=names)
    table.columns.name = None
    return table.reset_index().astype({c: "int64" for c in cols[2:]})[cols]


def changes_by_class(changes: pd.DataFrame) -> pd.DataFrame:
    """Label changes per class and action (rows: classes, columns: add/remove/move/relabel)."""
    ch = label_changes(changes)
    if ch.empty:
        return pd.DataFrame(columns=["particle", *LABEL_ACTIONS])
    table = pd.crosstab(ch["particle"], ch["action"]).reindex(columns=list(LABEL_ACTIONS), fill_value=0)
    table.columns.name = None
    return table.reset_index()


__all__ = [
    "ACTIONS", "CHANGE_COLUMNS", "LABEL_ACTIONS", "change_row", "changes_by_class", "changes_csv_bytes",
    "changes_frame", "diff_labels", "diff_summary", "diff_versions", "label_changes", "read_changes",
]

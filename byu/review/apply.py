"""Turn review decisions into the next label version: the parent plus exactly the reviewed changes.

Meaning of the tags (``byu.review.tags``):
- FN case (candidate 0 is the labeled motor): ``0`` keep; ``none`` remove it; ``k`` move it to candidate k (the
  first k; further k's are added); ``0``+``k`` keep it and add k; ``none``+``k`` remove it and add k.
- FP case: ``k`` add candidate k; ``0`` or ``none`` change nothing.
- ``unsure`` or no decision: nothing changes.
Manual overrides (``tomo_id,action,z,y,x,note`` with action add/remove/clear) are applied afterwards and recorded
with source ``override``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from byu.errors import InputError, InputErrors
from byu.labels.diff import change_row, changes_frame, motor_changes
from byu.labels.table import make_table, normalize
from byu.review.match import case_candidates
from byu.review.tags import KEEP, NONE, UNSURE, is_candidate, split_tags, tag_problems

OVERRIDE_ACTIONS = ("add", "remove", "clear")
REMOVE_TOLERANCE_A = 1000.0  # an override "remove z,y,x" takes the nearest motor only within this distance


@dataclass
class ApplyResult:
    table: pd.DataFrame
    changes: pd.DataFrame
    applied_cases: list[str] = field(default_factory=list)
    unsure_cases: list[str] = field(default_factory=list)
    unreviewed_cases: list[str] = field(default_factory=list)

    @property
    def label_changes(self) -> int:
        return len(motor_changes(self.changes))


def _nearest(motors: list[list[float]], zyx, tol: float = 1e-3) -> int | None:
    if not motors:
        return None
    d = np.linalg.norm(np.asarray(motors, float) - np.asarray(zyx, float), axis=1)
    i = int(d.argmin())
    return i if d[i] <= tol else None


def _in_bounds(zyx, shape) -> list[float]:
    return [float(min(max(v, 0.0), s - 1e-3)) for v, s in zip(zyx, shape)]


def apply_decisions(parent: pd.DataFrame, cases: pd.DataFrame, decisions: pd.DataFrame, *,
                    round_name: str, overrides: pd.DataFrame | None = None,
                    overrides_source: str = "overrides", decisions_source: str = "decisions.csv") -> ApplyResult:
    """Apply ``decisions`` (``case_id,tags,reviewer``) about ``cases`` to ``parent``; nothing else changes."""
    table = normalize(parent)
    shapes = {r.tomo_id: (r.Z, r.Y, r.X) for r in table.itertuples(index=False)}
    spacings = {r.tomo_id: float(r.voxel_spacing) for r in table.itertuples(index=False)}
    motors = {r.tomo_id: [list(m) for m in r.motor_zyx] for r in table.itertuples(index=False)}
    by_case = {r.case_id: r for r in cases.itertuples(index=False)}
    rows: list[dict] = []
    errors: list[InputError] = []
    result = ApplyResult(table=table, changes=changes_frame([]))
    decided = set()
    source = f"review:{round_name}"
    for line, d in enumerate(decisions.itertuples(index=False), start=2):
        case = by_case.get(d.case_id)
        if case is None:
            errors.append(InputError(f"decision for unknown case {d.case_id!r}", file=decisions_source, row=line,
                                     field="case_id"))
            continue
        if d.case_id in decided:
            errors.append(InputError(f"second decision for case {d.case_id}", file=decisions_source, row=line,
                                     field="case_id"))
            continue
        decided.add(d.case_id)
        tags = split_tags(d.tags)
        cands = {c["k"]: c for c in case_candidates(case)}
        n_shown = sum(1 for k in cands if k > 0)
        problems = tag_problems(tags, n_shown)
        if problems:
            errors += [InputError(p, file=decisions_source, row=line, field="tags") for p in problems]
            continue
        if not tags:
            continue
        if UNSURE in tags:
            result.unsure_cases.append(d.case_id)
            continue
        tid = case.tomo_id
        if tid not in motors:
            errors.append(InputError(f"case {d.case_id}: tomogram {tid!r} is not in the parent version",
                                     file=decisions_source, row=line, field="case_id"))
            continue
        reviewer = "" if pd.isna(d.reviewer) else str(d.reviewer)
        picks = [cands[int(t)] for t in sorted((t for t in tags if is_candidate(t) and t != KEEP), key=int)]
        meta = {"source": source, "case_id": d.case_id, "reviewer": reviewer}
        current = motors[tid]
        if case.kind == "FN":
            label = cands[0]
            zyx = [label["z"], label["y"], label["x"]]
            i = _nearest(current, zyx)
            if i is None:
                errors.append(InputError(f"case {d.case_id}: the labeled motor {zyx} is not in the parent version "
                                         "(were the cases mined against another version?)",
                                         file=decisions_source, row=line, field="case_id"))
                continue
            if KEEP in tags:
                rows.append(change_row(tid, "keep", old=zyx, new=zyx, **meta))
            elif picks:
                first = picks.pop(0)
                new = _in_bounds([first["z"], first["y"], first["x"]], shapes[tid])
                current[i] = new
                rows.append(change_row(tid, "move", old=zyx, new=new, confidence=first["conf"], **meta))
            elif NONE in tags:
                current.pop(i)
                rows.append(change_row(tid, "remove", old=zyx, **meta))
        for c in picks:
            new = _in_bounds([c["z"], c["y"], c["x"]], shapes[tid])
            current.append(new)
            rows.append(change_row(tid, "add", new=new, confidence=c["conf"], **meta))
        result.applied_cases.append(d.case_id)
    if errors:
        raise InputErrors(errors)
    if overrides is not None and len(overrides):
        rows += _apply_overrides(overrides, motors, shapes, spacings, source=overrides_source)
    result.table = make_table([(r.tomo_id, (r.Z, r.Y, r.X), r.voxel_spacing, motors[r.tomo_id])
                               for r in table.itertuples(index=False)])
    result.changes = changes_frame(rows)
    result.unreviewed_cases = [c for c in cases["case_id"] if c not in decided]
    return result


def _apply_overrides(overrides: pd.DataFrame, motors: dict, shapes: dict, spacings: dict, *,
                     source: str) -> list[dict]:
    rows, errors = [], []
    for line, o in enumerate(overrides.itertuples(index=False), start=2):
        tid, action = str(o.tomo_id), str(o.action).strip().lower()
        if tid not in motors:
            errors.append(InputError(f"unknown tomo_id {tid!r}", file=source, row=line, field="tomo_id"))
            continue
        if action not in OVERRIDE_ACTIONS:
            errors.append(InputError(f"unknown action {action!r} (expected {OVERRIDE_ACTIONS})", file=source,
                                     row=line, field="action"))
            continue
        note = "" if pd.isna(getattr(o, "note", "")) else str(getattr(o, "note", ""))
        meta = {"source": f"override:{Path(source).name}", "case_id": "", "reviewer": note}
        if action == "clear":
            rows += [change_row(tid, "remove", old=m, **meta) for m in motors[tid]]
            motors[tid] = []
            continue
        values = {c: pd.to_numeric(getattr(o, c), errors="coerce") for c in ("z", "y", "x")}
        bad = [InputError(f"action {action} needs a number for {c}, got {getattr(o, c)!r}", file=source, row=line,
                          field=c) for c, v in values.items() if pd.isna(v)]
        if bad:
            errors += bad
            continue
        zyx = [float(values[c]) for c in ("z", "y", "x")]
        if any(not 0 <= v < s for v, s in zip(zyx, shapes[tid])):
            errors.append(InputError(f"coordinates {zyx} outside the volume {shapes[tid]}", file=source, row=line,
                                     field="z"))
            continue
        if action == "add":
            motors[tid].append(zyx)
            rows.append(change_row(tid, "add", new=zyx, **meta))
        else:
            if not motors[tid]:
                errors.append(InputError(f"{tid} has no motor to remove", file=source, row=line, field="action"))
                continue
            d = np.linalg.norm((np.asarray(motors[tid]) - zyx) * spacings[tid], axis=1)
            if d.min() > REMOVE_TOLERANCE_A:
                errors.append(InputError(f"no motor of {tid} within {REMOVE_TOLERANCE_A:g} Å of {zyx} "
                                         f"(nearest: {d.min():.0f} Å)", file=source, row=line, field="z"))
                continue
            old = motors[tid].pop(int(d.argmin()))
            rows.append(change_row(tid, "remove", old=old, **meta))
    if errors:
        raise InputErrors(errors)
    return rows


def read_overrides(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError("overrides file not found", file=path)
    try:
        df = pd.read_csv(path, dtype={"tomo_id": str, "action": str, "note": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable CSV: {exc}", file=path) from exc
    missing = [c for c in ("tomo_id", "action") if c not in df.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}; expected tomo_id,action[,z,y,x,note]", file=path)
    for c in ("z", "y", "x", "note"):
        if c not in df.columns:
            df[c] = np.nan
    return df

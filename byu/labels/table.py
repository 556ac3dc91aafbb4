"""The canonical label table: one row per tomogram, all its motors in ``motor_zyx``.

``tomo_id,Z,Y,X,voxel_spacing,num_motors,motor_z,motor_y,motor_x,motor_zyx``

In memory ``motor_zyx`` holds a Python list of ``[z, y, x]`` float lists; ``motor_z/y/x`` repeat the first
motor (``-1.0`` when there is none). Coordinates are voxels of the row's own frame (``Z,Y,X`` and
``voxel_spacing``); distances are always compared in Å.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from byu.errors import InputError, InputErrors
from byu.paths import check_id

CANONICAL_COLUMNS = [
    "tomo_id", "Z", "Y", "X", "voxel_spacing", "num_motors", "motor_z", "motor_y", "motor_x", "motor_zyx",
]
NO_MOTOR = -1.0
MAX_SHAPE = 1_000_000  # voxels along an axis: more is a corrupt header, not a tomogram
MAX_SPACING = 1_000_000.0
PICK_COLUMNS = ["tomo_id", "particle", "z", "y", "x"]


def _as_motor_list(motors: Iterable[Sequence[float]] | np.ndarray) -> list[list[float]]:
    return [[float(v) for v in m] for m in np.asarray(list(motors), dtype=float).reshape(-1, 3)]


def make_row(tomo_id: str, shape: Sequence[int], voxel_spacing: float,
             motors: Iterable[Sequence[float]] = ()) -> dict[str, Any]:
    """One canonical row from a tomogram's shape, spacing and motor list."""
    zyx = _as_motor_list(motors)
    first = zyx[0] if zyx else [NO_MOTOR, NO_MOTOR, NO_MOTOR]
    z, y, x = (int(s) for s in shape)
    return {
        "tomo_id": tomo_id, "Z": z, "Y": y, "X": x, "voxel_spacing": float(voxel_spacing),
        "num_motors": len(zyx), "motor_z": first[0], "motor_y": first[1], "motor_x": first[2], "motor_zyx": zyx,
    }


def make_table(rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> pd.DataFrame:
    """Build a canonical table from dicts (canonical keys) or tuples ``(tomo_id, (Z,Y,X), spacing, motors)``."""
    out = []
    for r in rows:
        if isinstance(r, Mapping):
            if "motor_zyx" in r:
                out.append(make_row(r["tomo_id"], (r["Z"], r["Y"], r["X"]), r["voxel_spacing"], r["motor_zyx"]))
            else:
                out.append(make_row(r["tomo_id"], r["shape"], r["voxel_spacing"], r.get("motors", ())))
        else:
            out.append(make_row(*r))
    return normalize(pd.DataFrame(out, columns=CANONICAL_COLUMNS))


def empty_table() -> pd.DataFrame:
    return make_table([])


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical column order and dtypes (ints for shape and counts, floats for coordinates)."""
    df = df.loc[:, CANONICAL_COLUMNS].copy()
    df["tomo_id"] = df["tomo_id"].astype(object)
    for c in ("Z", "Y", "X", "num_motors"):
        df[c] = df[c].astype("int64")
    for c in ("voxel_spacing", "motor_z", "motor_y", "motor_x"):
        df[c] = df[c].astype("float64")
    df["motor_zyx"] = df["motor_zyx"].astype(object)
    return df.reset_index(drop=True)


def _finite_positive(value: Any) -> bool:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and v > 0


def row_errors(row: Mapping[str, Any], *, file: str | Path | None, line: int | None) -> list[InputError]:
    """Every problem of one canonical row (already parsed: motor_zyx a list)."""
    errs: list[InputError] = []

    def err(field: str, msg: str) -> None:
        errs.append(InputError(msg, file=file, row=line, field=field))

    try:
        check_id(row.get("tomo_id"), file=file, row=line)
    except InputError as e:
        errs.append(e)
    shape_ok = True
    for c in ("Z", "Y", "X"):
        v: Any = row.get(c)
        if not _finite_positive(v) or float(v) != int(float(v)) or float(v) > MAX_SHAPE:
            err(c, f"shape must be a positive integer (at most {MAX_SHAPE}), got {v!r}")
            shape_ok = False
    spacing: Any = row.get("voxel_spacing")
    if not _finite_positive(spacing) or float(spacing) > MAX_SPACING:
        err("voxel_spacing", f"voxel spacing must be a positive number of Å, got {row.get('voxel_spacing')!r}")
    motors = row.get("motor_zyx")
    if not isinstance(motors, list) or any(not isinstance(m, list) or len(m) != 3 for m in motors):
        err("motor_zyx", f"must be a list of [z, y, x] triples, got {motors!r}")
        return errs
    shape = [int(float(row[c])) for c in ("Z", "Y", "X")] if shape_ok else None
    for i, m in enumerate(motors):
        for axis, (v, name) in enumerate(zip(m, "zyx", strict=True)):
            if not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                err("motor_zyx", f"motor {i} coordinate {name} is {v!r}, not a finite number")
            elif shape is not None and not (0 <= float(v) < shape[axis]):
                err("motor_zyx", f"motor {i} coordinate {name}={v} is outside [0, {shape[axis]})")
    n: Any = row.get("num_motors")
    try:
        n_int = int(float(n))
        if float(n) != n_int:
            raise ValueError
    except (TypeError, ValueError):
        err("num_motors", f"must be an integer, got {n!r}")
    else:
        if n_int != len(motors):
            err("num_motors", f"says {n_int} but motor_zyx lists {len(motors)} motor(s)")
    first = motors[0] if motors else [NO_MOTOR] * 3
    for c, want in zip(("motor_z", "motor_y", "motor_x"), first, strict=True):
        v = row.get(c)
        if v is None:
            continue
        try:
            fv = float(v)
        except (TypeError, ValueError):
            err(c, f"not a number: {v!r}")
            continue
        if not math.isfinite(fv):
            err(c, f"is {v!r}; use -1 only as the no-motor marker")
        elif not motors and fv != NO_MOTOR:
            err(c, f"is {fv} but the tomogram has no motors (expected -1)")
        elif motors and isinstance(want, (int, float)) and math.isfinite(float(want)) and abs(fv - float(want)) > 1e-6:
            err(c, f"is {fv} but the first motor in motor_zyx has {want}")
    return errs


def validate_labels(df: pd.DataFrame, *, source: str | Path | None = None,
                    line_of: Sequence[int] | None = None) -> pd.DataFrame:
    """Check a canonical table; raise ``InputErrors`` listing every problem (file, row, field).

    ``line_of[i]`` is the line in ``source`` (header = line 1) that produced table row ``i`` (default i + 2).
    Returns the normalized table.
    """
    missing = [c for c in CANONICAL_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}; expected {CANONICAL_COLUMNS}", file=source)
    errs: list[InputError] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(df.to_dict("records")):
        line = line_of[i] if line_of is not None else i + 2
        errs.extend(row_errors(row, file=source, line=line))
        tid = row.get("tomo_id")
        if isinstance(tid, str):
            if tid in seen:
                errs.append(InputError(f"duplicate tomo_id {tid!r} (first at line {seen[tid]})",
                                       file=source, row=line, field="tomo_id"))
            else:
                seen[tid] = line
    if errs:
        raise InputErrors(errs)
    return normalize(df)


def motor_points(df: pd.DataFrame, *, particle: str = "motor") -> pd.DataFrame:
    """Long form of a canonical table: one row per motor
    (``tomo_id, particle, z, y, x, motor_index, voxel_spacing``)."""
    rows = [
        {"tomo_id": r.tomo_id, "particle": particle, "z": m[0], "y": m[1], "x": m[2], "motor_index": i,
         "voxel_spacing": float(r.voxel_spacing)}
        for r in df.itertuples(index=False)
        for i, m in enumerate(r.motor_zyx)
    ]
    return pd.DataFrame(rows, columns=["tomo_id", "particle", "z", "y", "x", "motor_index", "voxel_spacing"])


def motors_angstrom(row: Any) -> np.ndarray:
    """(n, 3) motor positions of one row in Å."""
    return np.asarray(row.motor_zyx, dtype=float).reshape(-1, 3) * float(row.voxel_spacing)


def with_motors(df: pd.DataFrame, tomo_id: str, motors: Iterable[Sequence[float]]) -> pd.DataFrame:
    """A copy of ``df`` where ``tomo_id``'s motor list is replaced (shape and spacing kept)."""
    out = df.copy()
    idx = out.index[out["tomo_id"] == tomo_id]
    if len(idx) != 1:
        raise KeyError(tomo_id)
    r = out.loc[idx[0]]
    new = make_row(tomo_id, (r.Z, r.Y, r.X), r.voxel_spacing, motors)
    for c in CANONICAL_COLUMNS:
        out.at[idx[0], c] = new[c]
    return normalize(out)

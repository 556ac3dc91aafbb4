"""Read every label form we accept; write only the canonical one.

Forms (see DESIGN.md):
- canonical: ``tomo_id,Z,Y,X,voxel_spacing,num_motors,motor_z,motor_y,motor_x,motor_zyx``
- wide: canonical plus Å-scaled copies (``ori_num_motors, ZA, ... motor_zyxA``), ignored on read
- competition points: ``row_id,tomo_id,Motor axis 0..2,Array shape (axis 0..2),Voxel spacing,Number of motors``,
  one row per motor (a tomogram without motors has one row with -1 coordinates)
- multi-class picks (long): ``tomo_id,particle,z,y,x[,conf]``

Line numbers in errors are lines of the file (the header is line 1).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from byu.atomic import write_bytes
from byu.errors import InputError, InputErrors
from byu.labels.table import CANONICAL_COLUMNS, NO_MOTOR, PICK_COLUMNS, make_row, normalize, validate_labels
from byu.paths import check_id

COMPETITION_COLUMNS = [
    "tomo_id", "Motor axis 0", "Motor axis 1", "Motor axis 2",
    "Array shape (axis 0)", "Array shape (axis 1)", "Array shape (axis 2)", "Voxel spacing",
]
MAX_LABEL_BYTES = 256 << 20


def _read_raw(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=path)
    if path.stat().st_size > MAX_LABEL_BYTES:
        raise InputError(f"file is larger than {MAX_LABEL_BYTES >> 20} MiB; refusing to read it", file=path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"not a readable CSV: {exc}", file=path) from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


def detect_form(columns: list[str]) -> str:
    cols = set(columns)
    if set(CANONICAL_COLUMNS) <= cols:
        return "wide" if "motor_zyxA" in cols or "ori_num_motors" in cols else "canonical"
    if set(COMPETITION_COLUMNS) <= cols:
        return "competition"
    if set(PICK_COLUMNS) <= cols:
        return "picks"
    return "unknown"


def _num(value: str, *, field: str, file: Path, line: int, errs: list[InputError]) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        errs.append(InputError(f"not a number: {value!r}", file=file, row=line, field=field))
        return math.nan
    if not math.isfinite(v):
        errs.append(InputError(f"is {value!r}, not a finite number", file=file, row=line, field=field))
    return v


def _parse_zyx(text: str, *, file: Path, line: int, errs: list[InputError]) -> Any:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        errs.append(InputError(f"malformed motor list {text!r}: expected [[z, y, x], ...]",
                               file=file, row=line, field="motor_zyx"))
        return None
    ok = isinstance(value, list) and all(
        isinstance(m, list) and len(m) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in m)
        for m in value
    )
    if not ok:
        errs.append(InputError(f"malformed motor list {text!r}: expected [[z, y, x], ...]",
                               file=file, row=line, field="motor_zyx"))
        return None
    return [[float(v) for v in m] for m in value]


def _from_canonical(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    errs: list[InputError] = []
    rows = []
    for i, r in enumerate(raw.to_dict("records")):
        line = i + 2
        row: dict[str, Any] = {"tomo_id": r["tomo_id"]}
        for c in ("Z", "Y", "X", "voxel_spacing", "num_motors", "motor_z", "motor_y", "motor_x"):
            row[c] = _num(r[c], field=c, file=path, line=line, errs=errs)
        row["motor_zyx"] = _parse_zyx(r["motor_zyx"], file=path, line=line, errs=errs)
        rows.append(row)
    if errs:
        raise InputErrors(errs)
    df = pd.DataFrame(rows, columns=CANONICAL_COLUMNS)
    return validate_labels(df, source=path, line_of=[i + 2 for i in range(len(df))])


def _from_competition(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    errs: list[InputError] = []
    order: list[str] = []
    info: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(raw.to_dict("records")):
        line = i + 2
        tid = r["tomo_id"]
        try:
            check_id(tid, file=path, row=line)
        except InputError as e:
            errs.append(e)
            continue
        shape = tuple(_num(r[f"Array shape (axis {a})"], field=f"Array shape (axis {a})", file=path, line=line,
                           errs=errs) for a in range(3))
        spacing = _num(r["Voxel spacing"], field="Voxel spacing", file=path, line=line, errs=errs)
        zyx = [_num(r[f"Motor axis {a}"], field=f"Motor axis {a}", file=path, line=line, errs=errs) for a in range(3)]
        if tid not in info:
            order.append(tid)
            info[tid] = {"shape": shape, "spacing": spacing, "motors": [], "line": line}
        elif (info[tid]["shape"], info[tid]["spacing"]) != (shape, spacing):
            errs.append(InputError(f"shape/spacing differ from line {info[tid]['line']} of the same tomogram",
                                   file=path, row=line, field="Array shape (axis 0)"))
        if all(v == NO_MOTOR for v in zyx):
            continue
        if any(v == NO_MOTOR for v in zyx):
            errs.append(InputError(f"partial no-motor marker {zyx}: use -1 for all three axes or none",
                                   file=path, row=line, field="Motor axis 0"))
            continue
        info[tid]["motors"].append(zyx)
    if errs:
        raise InputErrors(errs)
    rows = [make_row(t, [int(v) if math.isfinite(v) else 0 for v in info[t]["shape"]], info[t]["spacing"],
                     info[t]["motors"]) for t in order]
    df = pd.DataFrame(rows, columns=CANONICAL_COLUMNS)
    return validate_labels(df, source=path, line_of=[info[t]["line"] for t in order])


def read_labels(path: str | Path) -> pd.DataFrame:
    """Read a label table in any accepted form; return the validated canonical table.

    Raises ``InputError`` (or ``InputErrors`` listing every problem) naming file, line and field.
    """
    path = Path(path)
    raw = _read_raw(path)
    form = detect_form(list(raw.columns))
    if form in ("canonical", "wide"):
        return _from_canonical(raw, path)
    if form == "competition":
        return _from_competition(raw, path)
    if form == "picks":
        raise InputError("this is a multi-class picks table (tomo_id,particle,z,y,x); read it with read_picks",
                         file=path)
    raise InputError(f"unrecognised label columns {list(raw.columns)}; expected the canonical, wide or "
                     f"competition form (see DESIGN.md)", file=path)


def _format_zyx(motors: list[list[float]]) -> str:
    return json.dumps([[float(v) for v in m] for m in motors])


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    """The canonical CSV bytes of a table (columns in order, floats as pandas writes them)."""
    out = normalize(validate_labels(df))
    out["motor_zyx"] = out["motor_zyx"].map(_format_zyx)
    buf = io.StringIO()
    out.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def write_labels(df: pd.DataFrame, path: str | Path) -> Path:
    """Validate and write ``df`` in canonical form, atomically."""
    write_bytes(path, to_csv_bytes(df))
    return Path(path)


def read_picks(path: str | Path) -> pd.DataFrame:
    """Read the multi-class long form ``tomo_id,particle,z,y,x[,conf]``, validated."""
    path = Path(path)
    raw = _read_raw(path)
    if not set(PICK_COLUMNS) <= set(raw.columns):
        raise InputError(f"expected columns {PICK_COLUMNS}[+conf], got {list(raw.columns)}", file=path)
    has_conf = "conf" in raw.columns
    errs: list[InputError] = []
    rows = []
    for i, r in enumerate(raw.to_dict("records")):
        line = i + 2
        try:
            check_id(r["tomo_id"], file=path, row=line)
        except InputError as e:
            errs.append(e)
        particle = str(r["particle"]).strip()
        if not particle:
            errs.append(InputError("particle name is empty", file=path, row=line, field="particle"))
        row = {"tomo_id": r["tomo_id"], "particle": particle}
        for c in ("z", "y", "x"):
            row[c] = _num(r[c], field=c, file=path, line=line, errs=errs)
            if math.isfinite(row[c]) and row[c] < 0:
                errs.append(InputError(f"negative coordinate {row[c]}", file=path, row=line, field=c))
        if has_conf:
            row["conf"] = _num(r["conf"], field="conf", file=path, line=line, errs=errs)
            if math.isfinite(row["conf"]) and not 0 <= row["conf"] <= 1:
                errs.append(InputError(f"confidence {row['conf']} outside [0, 1]", file=path, row=line, field="conf"))
        rows.append(row)
    if errs:
        raise InputErrors(errs)
    cols = PICK_COLUMNS + (["conf"] if has_conf else [])
    return pd.DataFrame(rows, columns=cols)


def write_picks(df: pd.DataFrame, path: str | Path) -> Path:
    cols = PICK_COLUMNS + (["conf"] if "conf" in df.columns else [])
    buf = io.StringIO()
    df.loc[:, cols].to_csv(buf, index=False, lineterminator="\n")
    write_bytes(path, buf.getvalue().encode("utf-8"))
    return Path(path)

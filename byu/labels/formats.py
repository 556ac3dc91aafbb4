"""Every label form byu reads and writes: import and export views of a label version.

Forms:
- canonical motor form (the reference's ``gt*.csv``): ``tomo_id,Z,Y,X,voxel_spacing,num_motors,motor_z,motor_y,
  motor_x,motor_zyx``, one row per tomogram; written byte-exactly as the reference does;
- wide: canonical plus Å-scaled copies (``ori_num_motors, ZA, ... motor_zyxA``), ignored on read;
- competition points: ``row_id,tomo_id,Motor axis 0..2,Array shape (axis 0..2),Voxel spacing,Number of motors``,
  one row per motor (a tomogram without motors has one row with -1 coordinates);
- picks: ``tomo_id,particle,z,y,x,voxel_spacing`` (any class; without ``voxel_spacing`` the coordinates are Å,
  the CZII convention; an optional ``conf`` column is read by :func:`read_picks`).

A version's own files are ``NAME.tomograms.csv`` + ``NAME.picks.csv`` (:func:`picks_bytes`,
:func:`tomograms_bytes`); ``NAME.csv`` is the canonical form for a motor version, the picks form otherwise
(:func:`labelset_view_bytes`). Line numbers in errors are lines of the file (the header is line 1; blank lines
count).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from byu.atomic import write_bytes
from byu.errors import InputError, InputErrors
from byu.labels.classes import ClassRegistry, ParticleClass
from byu.labels.model import (
    OPTIONAL_PICK_COLUMNS,
    PROVENANCE_COLUMNS,
    STORED_PICK_COLUMNS,
    TOMOGRAM_COLUMNS,
    LabelSet,
)
from byu.labels.table import CANONICAL_COLUMNS, NO_MOTOR, PICK_COLUMNS, make_row, make_table, normalize, validate_labels
from byu.paths import check_id

COMPETITION_COLUMNS = [
    "tomo_id", "Motor axis 0", "Motor axis 1", "Motor axis 2",
    "Array shape (axis 0)", "Array shape (axis 1)", "Array shape (axis 2)", "Voxel spacing",
]
MAX_LABEL_BYTES = 256 << 20  # any label file
MAX_TABLE_BYTES = 32 << 20  # the one-row-per-tomogram forms (~500,000 tomograms): their reader holds ~40x this
MAX_PICKS_BYTES = 128 << 20  # the picks form (~3.5 million picks): ~12x this in memory
EXPORT_PICK_COLUMNS = ["tomo_id", "particle", "z", "y", "x", "voxel_spacing"]
FORMS = ("picks", "canonical", "competition")
LINE = "__line__"


def _read_raw(path: str | Path) -> pd.DataFrame:
    """All cells as text, blank lines dropped, and the file line of every row in column ``__line__``."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=path)
    if path.is_dir():
        raise InputError("is a directory, not a CSV file", file=path)
    if path.stat().st_size > MAX_LABEL_BYTES:
        raise InputError(f"file is larger than {MAX_LABEL_BYTES >> 20} MiB; refusing to read it", file=path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise InputError(f"not a readable CSV: {type(exc).__name__}: {str(exc)[:200]}", file=path) from None
    df.columns = [str(c).strip() for c in df.columns]
    if LINE in df.columns:
        raise InputError(f"column name {LINE!r} is reserved", file=path)
    df[LINE] = np.arange(2, len(df) + 2)
    cells = df.drop(columns=[LINE])
    blank = (cells == "").all(axis=1) if len(cells.columns) else pd.Series(True, index=df.index)
    return df[~blank].reset_index(drop=True)


def _check_form_size(path: Path, form: str) -> None:
    """Refuse files larger than a form's bound before reading them (memory stays bounded on hostile input)."""
    limit = MAX_PICKS_BYTES if form == "picks" else MAX_TABLE_BYTES
    if path.is_file() and path.stat().st_size > limit:
        what = "picks" if form == "picks" else "one-row-per-tomogram label"
        raise InputError(f"a {what} file of {path.stat().st_size >> 20} MiB is larger than the {limit >> 20} MiB "
                         "byu reads in one go; split it (by tomogram) and combine the versions", file=path)


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
    lines = raw[LINE].tolist()
    for r, line in zip(raw.to_dict("records"), lines, strict=True):
        row: dict[str, Any] = {"tomo_id": r["tomo_id"]}
        for c in ("Z", "Y", "X", "voxel_spacing", "num_motors", "motor_z", "motor_y", "motor_x"):
            row[c] = _num(r[c], field=c, file=path, line=line, errs=errs)
        row["motor_zyx"] = _parse_zyx(r["motor_zyx"], file=path, line=line, errs=errs)
        rows.append(row)
    if errs:
        raise InputErrors(errs)
    df = pd.DataFrame(rows, columns=CANONICAL_COLUMNS)
    return validate_labels(df, source=path, line_of=lines)


def _said(counts: list[tuple[int, float, str]]) -> str:
    """``'1' (line 3), '0' (line 4)``: each distinct count of a tomogram's rows as written, with its first line."""
    first: dict[float, tuple[int, str]] = {}
    for line, c, text in counts:
        first.setdefault(c, (line, text))
    return ", ".join(f"{text!r} (line {line})" for line, text in first.values())


def _from_competition(raw: pd.DataFrame, path: Path, *, notes: list[str] | None = None,
                      strict_counts: bool = False) -> pd.DataFrame:
    """The competition point form. Its rows are the truth: a ``Number of motors`` that disagrees with a tomogram's
    motor rows (the reference's ``train_labels_v2.csv`` gives its pseudo-label rows 0 beside the tomogram's first
    row's 1) becomes a note in ``notes`` naming the tomograms, or with ``strict_counts`` an error naming the line."""
    errs: list[InputError] = []
    order: list[str] = []
    info: dict[str, dict[str, Any]] = {}
    has_count = "Number of motors" in raw.columns
    for r in raw.to_dict("records"):
        line = int(r[LINE])
        tid = r["tomo_id"]
        try:
            check_id(tid, file=path, row=line)
        except InputError as e:
            errs.append(e)
            continue
        shape = []
        for a in range(3):
            field = f"Array shape (axis {a})"
            v = _num(r[field], field=field, file=path, line=line, errs=errs)
            if math.isfinite(v) and (v != int(v) or v < 1 or v > 1e6):
                errs.append(InputError(f"shape must be a whole number from 1 to 1000000, got {r[field]!r}",
                                       file=path, row=line, field=field))
            shape.append(v)
        shape_t = tuple(shape)
        spacing = _num(r["Voxel spacing"], field="Voxel spacing", file=path, line=line, errs=errs)
        zyx = [_num(r[f"Motor axis {a}"], field=f"Motor axis {a}", file=path, line=line, errs=errs) for a in range(3)]
        count = _num(r["Number of motors"], field="Number of motors", file=path, line=line, errs=errs) \
            if has_count else None
        if tid not in info:
            order.append(tid)
            info[tid] = {"shape": shape_t, "spacing": spacing, "motors": [], "line": line, "empty_line": None,
                         "counts": []}
        elif (info[tid]["shape"], info[tid]["spacing"]) != (shape_t, spacing):
            errs.append(InputError(f"shape/spacing differ from line {info[tid]['line']} of the same tomogram",
                                   file=path, row=line, field="Array shape (axis 0)"))
        t = info[tid]
        if count is not None and math.isfinite(count):
            t["counts"].append((line, count, r["Number of motors"]))
        if all(v == NO_MOTOR for v in zyx):
            if t["motors"] or t["empty_line"] is not None:
                errs.append(InputError("a -1 (no motor) row for a tomogram that has other rows (lines "
                                       f"{t['line']}..{line})", file=path, row=line, field="Motor axis 0"))
            t["empty_line"] = line
            continue
        if any(v == NO_MOTOR for v in zyx):
            errs.append(InputError(f"partial no-motor marker {zyx}: use -1 for all three axes or none",
                                   file=path, row=line, field="Motor axis 0"))
            continue
        if t["empty_line"] is not None:
            errs.append(InputError(f"a motor row for a tomogram marked as having no motor on line "
                                   f"{t['empty_line']}", file=path, row=line, field="Motor axis 0"))
            continue
        if zyx in [m for m, _ in t["motors"]]:
            first = next(ln for m, ln in t["motors"] if m == zyx)
            errs.append(InputError(f"duplicate motor {zyx} (also on line {first})", file=path, row=line,
                                   field="Motor axis 0"))
            continue
        t["motors"].append((zyx, line))
    disagree = [] if errs else [tid for tid in order
                                if any(c != len(info[tid]["motors"]) for _, c, _ in info[tid]["counts"])]
    if disagree and strict_counts:
        for tid in disagree:
            counts = info[tid]["counts"]  # the line named: the first whose count differs from the tomogram's first
            line = next((ln for ln, c, _ in counts if c != counts[0][1]), counts[0][0])
            errs.append(InputError(f"'Number of motors' says {_said(counts)} but the file lists "
                                   f"{len(info[tid]['motors'])} motor row(s) for {tid!r} (--strict-counts; without "
                                   "it the rows are taken as the truth)", file=path, row=line,
                                   field="Number of motors"))
    if errs:
        raise InputErrors(errs)
    if disagree and notes is not None:
        shown = "; ".join(f"{tid}: {len(info[tid]['motors'])} motor row(s), the count says {_said(info[tid]['counts'])}"
                          for tid in disagree[:20])
        more = f"; and {len(disagree) - 20} more" if len(disagree) > 20 else ""
        notes.append(f"{path}: 'Number of motors' disagrees with the motor rows of {len(disagree)} tomogram(s) "
                     f"({shown}{more}); the rows are taken as the truth (--strict-counts refuses such a file)")
    rows = [make_row(t, [int(v) for v in info[t]["shape"]], info[t]["spacing"], [m for m, _ in info[t]["motors"]])
            for t in order]
    df = pd.DataFrame(rows, columns=CANONICAL_COLUMNS)
    return validate_labels(df, source=path, line_of=[info[t]["line"] for t in order])


def read_labels(path: str | Path, *, notes: list[str] | None = None, strict_counts: bool = False) -> pd.DataFrame:
    """Read a label table in any accepted form; return the validated canonical table.

    Raises ``InputError`` (or ``InputErrors`` listing every problem) naming file, line and field. Warnings (a
    competition table's ``Number of motors`` that disagrees with its motor rows) are appended to ``notes``;
    ``strict_counts`` makes them errors.
    """
    path = Path(path)
    _check_form_size(path, "canonical")
    raw = _read_raw(path)
    form = detect_form([c for c in raw.columns if c != LINE])
    if form in ("canonical", "wide"):
        return _from_canonical(raw, path)
    if form == "competition":
        return _from_competition(raw, path, notes=notes, strict_counts=strict_counts)
    if form == "picks":
        raise InputError("this is a picks table (tomo_id,particle,z,y,x): it holds classes other than motors "
                         "or no tomogram shapes; import it as a version (byu labels convert), not as a "
                         "canonical motor table", file=path)
    raise InputError(f"unrecognised label columns {[c for c in raw.columns if c != LINE]}; expected the "
                     "canonical, wide, competition or picks form", file=path)


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
    for r in raw.to_dict("records"):
        line = int(r[LINE])
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


# ---------------------------------------------------------------------------------------------------------------
# views of a version


def _frame_bytes(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def to_canonical(labels: LabelSet, *, source: str | Path | None = None) -> pd.DataFrame:
    """The canonical motor table of a motor version (InputError naming the other classes otherwise)."""
    others = sorted(set(labels.class_names) - {"motor"})
    if others:
        raise InputError(f"holds classes {others}: the canonical and competition forms hold only motors; "
                         "export it in the picks form", file=source, field="particle")
    motors: dict[str, list[list[float]]] = {t: [] for t in labels.tomograms["tomo_id"]}
    p = labels.picks
    for tid, z, y, x in zip(p["tomo_id"], p["z"], p["y"], p["x"], strict=True):
        motors[tid].append([float(z), float(y), float(x)])
    return make_table([(r.tomo_id, (r.Z, r.Y, r.X), r.voxel_spacing, motors[r.tomo_id])
                       for r in labels.tomograms.itertuples(index=False)])


def picks_export_frame(labels: LabelSet) -> pd.DataFrame:
    """The picks form ``tomo_id,particle,z,y,x,voxel_spacing`` (each pick in its tomogram's frame)."""
    out = labels.picks.loc[:, ["tomo_id", "particle", "z", "y", "x"]].copy()
    out["voxel_spacing"] = out["tomo_id"].map(labels.spacing_of()).astype(float)
    return out.reset_index(drop=True)


def competition_frame(labels: LabelSet) -> pd.DataFrame:
    """The competition point form of a motor version (a tomogram without motors: one row of -1)."""
    table = to_canonical(labels)
    rows = []
    for r in table.itertuples(index=False):
        for m in (r.motor_zyx or [[NO_MOTOR] * 3]):
            rows.append({"tomo_id": r.tomo_id, "Motor axis 0": m[0], "Motor axis 1": m[1], "Motor axis 2": m[2],
                         "Array shape (axis 0)": r.Z, "Array shape (axis 1)": r.Y, "Array shape (axis 2)": r.X,
                         "Voxel spacing": r.voxel_spacing, "Number of motors": r.num_motors})
    out = pd.DataFrame(rows, columns=[*COMPETITION_COLUMNS, "Number of motors"])
    for c in ("Motor axis 0", "Motor axis 1", "Motor axis 2"):  # whole voxels as the competition writes them
        out[c] = [int(v) if float(v).is_integer() else float(v) for v in out[c]]
        out[c] = out[c].astype(object)
    out.insert(0, "row_id", range(len(out)))
    return out


def export_frame(labels: LabelSet, form: str) -> pd.DataFrame:
    """A version in one of ``FORMS`` (picks, canonical, competition) as a table."""
    if form == "picks":
        return picks_export_frame(labels)
    if form == "canonical":
        out = normalize(to_canonical(labels))
        out["motor_zyx"] = out["motor_zyx"].map(_format_zyx)
        return out
    if form == "competition":
        return competition_frame(labels)
    raise InputError(f"unknown form {form!r}; choose one of {', '.join(FORMS)}", field="form")


def export_bytes(labels: LabelSet, form: str) -> bytes:
    if form == "canonical":
        return to_csv_bytes(to_canonical(labels))
    return _frame_bytes(export_frame(labels, form))


def labelset_view_bytes(labels: LabelSet) -> tuple[bytes, str]:
    """``NAME.csv`` of a version and its form: canonical for a motor version, picks otherwise."""
    if labels.is_motor_only:
        return export_bytes(labels, "canonical"), "canonical"
    return export_bytes(labels, "picks"), "picks"


def picks_bytes(labels: LabelSet) -> bytes:
    """``NAME.picks.csv``: the picks with their provenance (spreadsheet-safe text); an optional column
    (``OPTIONAL_PICK_COLUMNS``: ``transform``) only when some pick has a value, so versions without one are stored
    byte for byte as before it existed."""
    from byu.textsafe import safe_columns

    picks = labels.picks
    columns = [c for c in STORED_PICK_COLUMNS if c not in OPTIONAL_PICK_COLUMNS
               or (c in picks.columns and bool((picks[c].astype(str) != "").any()))]
    return _frame_bytes(safe_columns(picks.loc[:, columns], PROVENANCE_COLUMNS))


def tomograms_bytes(labels: LabelSet) -> bytes:
    """``NAME.tomograms.csv``."""
    return _frame_bytes(labels.tomograms.loc[:, TOMOGRAM_COLUMNS])


def read_stored_labelset(tomograms_path: Path, picks_path: Path, classes: list[ParticleClass]) -> LabelSet:
    """A stored version's content from its own files (already verified against the manifest)."""
    tomos = pd.read_csv(tomograms_path, dtype={"tomo_id": str}, keep_default_na=False)
    picks = pd.read_csv(picks_path, dtype={c: str for c in ("tomo_id", "particle", *PROVENANCE_COLUMNS,
                                                            *OPTIONAL_PICK_COLUMNS)},
                        keep_default_na=False)
    return LabelSet.build(tomos, picks, classes, source=picks_path)


# ---------------------------------------------------------------------------------------------------------------
# any form -> a version


def _frames_from(tomograms: pd.DataFrame | str | Path | None, data_root: Any, tomo_ids: list[str],
                 source: Path) -> pd.DataFrame:
    """Tomogram frames for a picks file: a tomograms table/file, else the stored tomograms' original frames."""
    if tomograms is not None:
        if isinstance(tomograms, pd.DataFrame):
            return tomograms
        raw = _read_raw(tomograms)
        missing = [c for c in TOMOGRAM_COLUMNS if c not in raw.columns]
        if missing:
            raise InputError(f"missing column(s) {missing}; expected {TOMOGRAM_COLUMNS}", file=tomograms)
        return raw
    from byu.tomo.io import META_NAME, read_meta

    rows, missing = [], []
    for tid in tomo_ids:
        d = data_root.tomograms / tid if data_root is not None else None
        if d is None or not (d / META_NAME).exists():
            missing.append(tid)
            continue
        meta = read_meta(d)
        rows.append({"tomo_id": tid, "Z": meta.original_shape[0], "Y": meta.original_shape[1],
                     "X": meta.original_shape[2], "voxel_spacing": meta.original_spacing})
    if missing:
        where = f"under {data_root.tomograms}" if data_root is not None else "(no data root given)"
        raise InputError(f"the picks form has no tomogram shapes and {len(missing)} tomogram(s) are not stored "
                         f"{where}: {', '.join(missing[:10])}; give a tomograms table (tomo_id,Z,Y,X,voxel_spacing)",
                         file=source, field="tomo_id")
    return pd.DataFrame(rows, columns=TOMOGRAM_COLUMNS)


def read_version_file(path: str | Path, *, tomograms: pd.DataFrame | str | Path | None = None,
                      data_root: Any = None, registry: ClassRegistry | None = None,
                      classes: list[ParticleClass] | None = None, notes: list[str] | None = None,
                      strict_counts: bool = False) -> LabelSet:
    """A label version from a file in any form (canonical, wide, competition or picks).

    The picks form carries no tomogram shapes: they come from ``tomograms`` (a table or a CSV
    ``tomo_id,Z,Y,X,voxel_spacing``), else from the data root's stored tomograms (their original frames). Picks are
    converted into those frames through Å (a ``voxel_spacing`` column gives their own spacing; without it they are
    Å). Classes come from ``classes``, else the picks' class names looked up in ``registry`` (built-ins by default).
    ``notes`` and ``strict_counts``: as :func:`read_labels` (the competition form's counts).
    """
    path = Path(path)
    _check_form_size(path, "picks")
    raw = _read_raw(path)
    form = detect_form([c for c in raw.columns if c != LINE])
    if form != "picks":
        return LabelSet.from_canonical(read_labels(path, notes=notes, strict_counts=strict_counts), source=path)
    return labels_from_picks(raw, source=path, lines=raw[LINE].to_numpy(), tomograms=tomograms, data_root=data_root,
                             registry=registry, classes=classes)


def labels_from_picks(raw: pd.DataFrame, *, source: str | Path | None = None, lines: Any = None,
                      tomograms: pd.DataFrame | str | Path | None = None, data_root: Any = None,
                      registry: ClassRegistry | None = None,
                      classes: list[ParticleClass] | None = None) -> LabelSet:
    """A LabelSet from a picks table (``tomo_id,particle,z,y,x[,voxel_spacing]``; see :func:`read_version_file`)."""
    registry = registry or ClassRegistry()
    source_path = Path(source) if source is not None else Path("<picks>")
    errs: list[InputError] = []
    lines = np.asarray(lines) if lines is not None else np.arange(2, len(raw) + 2)
    ids = raw["tomo_id"].astype(str).str.strip()
    for i in np.flatnonzero((ids == "").to_numpy()):
        errs.append(InputError("empty tomo_id", file=source, row=int(lines[i]), field="tomo_id"))
    frames = _frames_from(tomograms, data_root, list(dict.fromkeys(t for t in ids if t)), source_path)
    frames_checked = LabelSet.build(frames, None, [], source=tomograms if isinstance(tomograms, (str, Path))
                                    else source).tomograms
    spacing_by = dict(zip(frames_checked["tomo_id"], frames_checked["voxel_spacing"], strict=True))
    own = pd.to_numeric(raw["voxel_spacing"], errors="coerce").to_numpy(dtype=float) \
        if "voxel_spacing" in raw.columns else np.ones(len(raw))
    for i in np.flatnonzero(~np.isfinite(own) | (own <= 0)):
        errs.append(InputError(f"voxel spacing must be a positive number, got {raw['voxel_spacing'].iloc[i]!r}",
                               file=source, row=int(lines[i]), field="voxel_spacing"))
    if errs:
        raise InputErrors(errs)
    target = ids.map(spacing_by).to_numpy(dtype=float)
    factor = np.where(np.isfinite(target), own / np.where(np.isfinite(target), target, 1.0), 1.0)
    picks = pd.DataFrame({"tomo_id": ids.to_numpy(dtype=object),
                          "particle": raw["particle"].astype(str).str.strip().to_numpy(dtype=object)})
    for c in ("z", "y", "x"):
        v = pd.to_numeric(raw[c], errors="coerce").to_numpy(dtype=float)
        picks[c] = np.where(np.isfinite(v), v * factor, raw[c].to_numpy(dtype=object))
    for c in PROVENANCE_COLUMNS:
        if c in raw.columns:
            picks[c] = raw[c].astype(str).to_numpy(dtype=object)
    if classes is None:
        names = list(dict.fromkeys(n for n in picks["particle"] if n))
        unknown = [n for n in names if n not in registry]
        if unknown:
            raise InputError(f"unknown particle class(es) {unknown}; known: {', '.join(registry)} (describe "
                             "others in a classes file: --classes-file)", file=source, field="particle")
        classes = [registry[n] for n in names] or [registry["motor"]]
    return LabelSet.build(frames_checked, picks, classes, source=source, pick_lines=lines)


def write_export(labels: LabelSet, form: str, out: str | Path) -> Path:
    """Write a version in ``form`` to ``out`` (atomically)."""
    write_bytes(out, export_bytes(labels, form))
    return Path(out)

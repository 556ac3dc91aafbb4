"""Point files read by the portal ingest: the portal's ndjson annotations and external point CSVs.

Both readers report every bad row at once (file, row, field) and return coordinates in the tomogram's own voxels;
:mod:`byu.portal.query` (which runs an external CSV selects) and :mod:`byu.portal.convert` (which turns points into
labels) share them from here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from byu.errors import InputError, InputErrors

_COORD_SETS = (("z", "y", "x"), ("Motor axis 0", "Motor axis 1", "Motor axis 2"), ("motor_z", "motor_y", "motor_x"))
_SPACING_COLUMNS = ("voxel_spacing", "Voxel spacing")
_RUN_COLUMNS = ("tomo_id", "run_name")


def read_ndjson_points(path: str | Path) -> np.ndarray:
    """(n, 3) ``z, y, x`` voxel coordinates from a portal ndjson point file (``point``/``orientedPoint``)."""
    path = Path(path)
    pts: list[list[float]] = []
    errors: list[InputError] = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                loc = rec["location"]
                zyx = [float(loc["z"]), float(loc["y"]), float(loc["x"])]
            except (ValueError, KeyError, TypeError) as exc:
                errors.append(InputError(f"not a point record: {exc}", file=path, row=i, field="location"))
                continue
            if not all(math.isfinite(v) for v in zyx):
                errors.append(InputError(f"non-finite coordinate {zyx}", file=path, row=i, field="location"))
                continue
            pts.append(zyx)
    if errors:
        raise InputErrors(errors)
    return np.asarray(pts, dtype=float).reshape(-1, 3)


def read_external_points(path: str | Path) -> pd.DataFrame:
    """An external point CSV as ``dataset_id, run_name, z, y, x, voxel_spacing, row`` (NaN z/y/x: no motor;
    NaN spacing: not given). Every bad cell is reported at once (file, row, field)."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable CSV: {exc}", file=path) from exc
    cols = [c.strip() for c in raw.columns]
    raw.columns = cols
    run_col = next((c for c in _RUN_COLUMNS if c in cols), None)
    coord = next((s for s in _COORD_SETS if all(c in cols for c in s)), None)
    missing = []
    if "dataset_id" not in cols:
        missing.append("dataset_id")
    if run_col is None:
        missing.append("tomo_id (the portal run name)")
    if coord is None:
        missing.append("z,y,x (or 'Motor axis 0..2')")
    if missing or run_col is None or coord is None:
        raise InputError(f"missing column(s): {', '.join(missing)}; found {cols}", file=path)
    spacing_col = next((c for c in _SPACING_COLUMNS if c in cols), None)
    particle_col = "particle" if "particle" in cols else None
    errors: list[InputError] = []
    rows: list[dict[str, Any]] = []
    def num(rec: dict[str, Any], col: str, i: int) -> float | None:
        text = str(rec[col]).strip()
        try:
            v = float(text)
        except ValueError:
            errors.append(InputError(f"not a number: {text!r}", file=path, row=i, field=col))
            return None
        if not math.isfinite(v):
            errors.append(InputError(f"not a finite number: {text!r}", file=path, row=i, field=col))
            return None
        return v

    for i, rec in enumerate(raw.to_dict("records"), start=2):  # file lines, header = line 1
        ds_text = str(rec["dataset_id"]).strip()
        if not ds_text.isdigit():
            errors.append(InputError(f"dataset_id must be a positive integer, got {ds_text!r}",
                                     file=path, row=i, field="dataset_id"))
        run = str(rec[run_col]).strip()
        if not run:
            errors.append(InputError("empty run name", file=path, row=i, field=run_col))
        zyx = [num(rec, c, i) for c in coord]
        spacing = float("nan")
        if spacing_col is not None and str(rec[spacing_col]).strip():
            s = num(rec, spacing_col, i)
            if s is not None and s <= 0:
                errors.append(InputError(f"voxel spacing must be positive, got {s}", file=path, row=i,
                                         field=spacing_col))
            elif s is not None:
                spacing = s
        if any(v is None for v in zyx):
            continue
        if all(v == -1.0 for v in zyx):
            zyx = [float("nan")] * 3
        elif any(v < 0 for v in zyx):  # type: ignore[operator]
            errors.append(InputError(f"negative coordinate {zyx} (use -1,-1,-1 for 'no motor')", file=path,
                                     row=i, field=coord[0]))
            continue
        if ds_text.isdigit() and run:
            particle = str(rec[particle_col]).strip() if particle_col else ""
            rows.append({"dataset_id": int(ds_text), "run_name": run, "z": zyx[0], "y": zyx[1], "x": zyx[2],
                         "voxel_spacing": spacing, "particle": particle, "row": i})
    if errors:
        raise InputErrors(errors)
    return pd.DataFrame(rows, columns=["dataset_id", "run_name", "z", "y", "x", "voxel_spacing", "particle", "row"])



__all__ = ["read_external_points", "read_ndjson_points"]

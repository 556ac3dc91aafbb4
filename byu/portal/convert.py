"""Portal point annotations (ndjson) or an external point CSV -> canonical label rows.

Every point goes through Å: ``Å = voxel * spacing of its source`` (the annotation file's voxel spacing, the
CSV's ``voxel_spacing`` column, or the chosen tomogram's original spacing when the CSV has none), then into
the stored tomogram's frame ``voxel = Å / stored spacing`` (:func:`byu.tomo.io.to_frame`). Rows carry the
stored shape and spacing (``meta.json`` of ``tomograms/<tomo_id>``, or the shape preprocessing will produce).

One row per tomogram; ``num_motors`` counts its points. Tomograms whose run has a matching annotation get a
row even when it holds no point (annotated, no motor); tomograms with no annotation at all get an empty row
only when ``include_empty=True``. Points that several annotations repeat (closer than ``dedupe_radius_A``)
are kept once; points just outside the volume (less than one voxel) are clamped inside, farther ones are
dropped and reported.

External CSV: columns ``dataset_id`` and ``tomo_id`` (the portal run name; ``run_name`` is accepted too), the
coordinates as ``z,y,x`` or ``Motor axis 0,Motor axis 1,Motor axis 2`` (voxels; ``-1`` in all three means
"no motor" and still lists the tomogram), and optionally ``voxel_spacing`` / ``Voxel spacing`` (Å/voxel of the
coordinates).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from byu.errors import InputError, InputErrors
from byu.labels.store import LabelStore, Manifest
from byu.labels.table import make_table, validate_labels
from byu.portal.query import PortalTomogram, Selection
from byu.tomo.io import META_NAME, read_meta, to_frame
from byu.tomo.preprocess import DEFAULT_TARGET_SPACING, resampled_shape, working_spacing

DEFAULT_DEDUPE_RADIUS_A = 100.0
_COORD_SETS = (("z", "y", "x"), ("Motor axis 0", "Motor axis 1", "Motor axis 2"), ("motor_z", "motor_y", "motor_x"))
_SPACING_COLUMNS = ("voxel_spacing", "Voxel spacing")
_RUN_COLUMNS = ("tomo_id", "run_name")


@dataclass(frozen=True)
class TomoFrame:
    """The stored frame of a tomogram: shape (Z, Y, X) and Å/voxel."""

    tomo_id: str
    shape: tuple[int, int, int]
    voxel_spacing: float


@dataclass
class ConversionNotes:
    """What conversion dropped or merged, per tomogram (for the CLI report and the manifest)."""

    dropped: dict[str, list[list[float]]] = field(default_factory=dict)  # Å points outside the volume
    merged: dict[str, int] = field(default_factory=dict)  # duplicates removed
    unmatched_rows: list[int] = field(default_factory=list)  # CSV rows whose run was not selected


# ---------------------------------------------------------------------------------------------- reading
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
    if missing:
        raise InputError(f"missing column(s): {', '.join(missing)}; found {cols}", file=path)
    spacing_col = next((c for c in _SPACING_COLUMNS if c in cols), None)
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
            rows.append({"dataset_id": int(ds_text), "run_name": run, "z": zyx[0], "y": zyx[1], "x": zyx[2],
                         "voxel_spacing": spacing, "row": i})
    if errors:
        raise InputErrors(errors)
    return pd.DataFrame(rows, columns=["dataset_id", "run_name", "z", "y", "x", "voxel_spacing", "row"])


# ------------------------------------------------------------------------------------------------ frames
def stored_frame(tomograms_dir: str | Path, tomo_id: str) -> TomoFrame | None:
    """The frame of a stored tomogram (``None`` when it has not been preprocessed)."""
    d = Path(tomograms_dir) / tomo_id
    if not (d / META_NAME).exists():
        return None
    meta = read_meta(d)
    return TomoFrame(tomo_id, tuple(meta.shape), float(meta.voxel_spacing))  # type: ignore[arg-type]


def expected_frame(t: PortalTomogram, target_spacing: float = DEFAULT_TARGET_SPACING) -> TomoFrame:
    """The frame preprocessing will produce for portal tomogram ``t``."""
    return TomoFrame(t.tomo_id, resampled_shape(t.shape, t.voxel_spacing, target_spacing),
                     working_spacing(t.voxel_spacing, target_spacing))


def frames_for(selection: Selection, tomograms_dir: str | Path, *, require_stored: bool = True) -> dict[str, TomoFrame]:
    """Frames of the selected tomograms: stored ones from ``meta.json``; the others from the portal shape
    (only when ``require_stored`` is False)."""
    out: dict[str, TomoFrame] = {}
    for t in selection.tomograms:
        f = stored_frame(tomograms_dir, t.tomo_id)
        if f is None and not require_stored:
            f = expected_frame(t, selection.target_spacing)
        if f is not None:
            out[t.tomo_id] = f
    return out


# ------------------------------------------------------------------------------------------------ points
def portal_points_A(selection: Selection, paths: Mapping[int, str | Path]) -> dict[str, np.ndarray]:
    """Å points per tomo_id from downloaded point files (``annotation_file_id -> path``); a tomogram with
    at least one downloaded file is present even with zero points."""
    out: dict[str, list[np.ndarray]] = {}
    for pf in selection.point_files:
        p = paths.get(pf.annotation_file_id)
        if p is None:
            continue
        out.setdefault(pf.tomo_id, []).append(read_ndjson_points(p) * pf.voxel_spacing)
    return {k: np.concatenate(v) if v else np.zeros((0, 3)) for k, v in out.items()}


def external_points_A(points: pd.DataFrame, selection: Selection, *,
                      notes: ConversionNotes | None = None) -> dict[str, np.ndarray]:
    """Å points per tomo_id from :func:`read_external_points` rows, matched to the selection by
    ``(dataset_id, run name)``; coordinates without a spacing are in the chosen tomogram's original voxels."""
    by_run = {(t.dataset_id, t.run_name): t for t in selection.tomograms}
    out: dict[str, list[list[float]]] = {}
    for r in points.itertuples(index=False):
        t = by_run.get((int(r.dataset_id), str(r.run_name)))
        if t is None:
            if notes is not None:
                notes.unmatched_rows.append(int(r.row))
            continue
        pts = out.setdefault(t.tomo_id, [])
        if not math.isnan(r.z):
            spacing = t.voxel_spacing if math.isnan(r.voxel_spacing) else float(r.voxel_spacing)
            pts.append([r.z * spacing, r.y * spacing, r.x * spacing])
    return {k: np.asarray(v, dtype=float).reshape(-1, 3) for k, v in out.items()}


def dedupe_points(points_A: np.ndarray, radius_A: float) -> np.ndarray:
    """Keep the first of any points closer than ``radius_A`` to an already kept one."""
    pts = np.asarray(points_A, dtype=float).reshape(-1, 3)
    if radius_A <= 0 or len(pts) < 2:
        return pts
    kept: list[np.ndarray] = []
    for p in pts:
        if all(np.linalg.norm(p - q) >= radius_A for q in kept):
            kept.append(p)
    return np.asarray(kept).reshape(-1, 3)


def labels_from_points(frames: Mapping[str, TomoFrame], points_A: Mapping[str, np.ndarray], *,
                       include_empty: bool = False, dedupe_radius_A: float = DEFAULT_DEDUPE_RADIUS_A,
                       notes: ConversionNotes | None = None) -> pd.DataFrame:
    """Canonical rows (sorted by tomo_id) in each tomogram's stored frame; see the module docstring."""
    notes = notes if notes is not None else ConversionNotes()
    rows = []
    for tomo_id in sorted(frames):
        if tomo_id not in points_A and not include_empty:
            continue
        frame = frames[tomo_id]
        pts = np.asarray(points_A.get(tomo_id, np.zeros((0, 3))), dtype=float).reshape(-1, 3)
        unique = dedupe_points(pts, dedupe_radius_A)
        if len(unique) < len(pts):
            notes.merged[tomo_id] = len(pts) - len(unique)
        vox = to_frame(unique, 1.0, frame.voxel_spacing).reshape(-1, 3)
        shape = np.asarray(frame.shape, dtype=float)
        inside = np.all((vox > -1.0) & (vox < shape + 1.0), axis=1) if len(vox) else np.zeros(0, bool)
        if (~inside).any():
            notes.dropped[tomo_id] = unique[~inside].round(1).tolist()
        upper = shape - 1e-3  # strictly below the shape, as the table requires
        vox = np.clip(vox[inside], 0.0, upper)
        rows.append((tomo_id, frame.shape, frame.voxel_spacing, vox.tolist()))
    return validate_labels(make_table(rows))


def portal_label_table(selection: Selection, tomograms_dir: str | Path, *,
                       point_paths: Mapping[int, str | Path] | None = None,
                       external: pd.DataFrame | None = None, include_empty: bool = False,
                       require_stored: bool = True, dedupe_radius_A: float = DEFAULT_DEDUPE_RADIUS_A,
                       ) -> tuple[pd.DataFrame, ConversionNotes]:
    """The label table of a selection from portal point files and/or external points (merged per tomogram)."""
    notes = ConversionNotes()
    frames = frames_for(selection, tomograms_dir, require_stored=require_stored)
    points: dict[str, list[np.ndarray]] = {}
    sources: list[Mapping[str, np.ndarray]] = []
    if point_paths is not None:
        sources.append(portal_points_A(selection, point_paths))
    if external is not None:
        sources.append(external_points_A(external, selection, notes=notes))
    for src in sources:
        for k, v in src.items():
            points.setdefault(k, []).append(v)
    merged = {k: np.concatenate(v) for k, v in points.items()}
    table = labels_from_points(frames, merged, include_empty=include_empty, dedupe_radius_A=dedupe_radius_A,
                               notes=notes)
    return table, notes


def store_portal_labels(store: LabelStore, name: str, table: pd.DataFrame, *, selection: Selection,
                        parents: Sequence[str] = (), producer: str = "byu portal labels",
                        notes: ConversionNotes | None = None, sources: Iterable[str] = ()) -> Manifest:
    """Store ``table`` as label version ``name`` with the portal ids in its manifest ``extra``."""
    by_id = selection.by_tomo_id()
    extra: dict[str, Any] = {
        "portal_url": selection.portal_url,
        "object_name": selection.object_name,
        "points_csv": selection.points_csv,
        "sources": list(sources),
        "tomograms": {tid: by_id[tid].portal_ids() for tid in table["tomo_id"] if tid in by_id},
        "annotation_files": sorted({pf.annotation_file_id for pf in selection.point_files
                                    if pf.tomo_id in set(table["tomo_id"])}),
    }
    if notes is not None:
        extra["dropped_points_A"] = notes.dropped
        extra["merged_duplicates"] = notes.merged
    return store.put(name, table, parents=list(parents), producer=producer, extra=extra)

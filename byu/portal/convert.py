"""Portal point annotations (ndjson) or an external point CSV -> a label version (any class).

Every point goes through Å: ``Å = voxel * spacing of its source`` (the annotation file's voxel spacing, the CSV's
``voxel_spacing`` column, or the chosen tomogram's spacing when the CSV has none), then into the chosen portal
tomogram's own frame ``voxel = Å / its spacing`` (its shape and spacing as the portal gives them): the frame the
label version records for that tomogram (Å = voxel × spacing, as the portal and copick count).

One tomogram row per stored tomogram that has an annotation of a chosen object (annotated, possibly with no point)
or, with ``include_empty=True``, every stored tomogram. Each point becomes a pick of its annotation's class, with
provenance ``source = portal:annotation <id>`` (``external:<csv name>`` for CSV points). Points an annotation
repeats are kept once: of points of one class closer than that class's **merge distance** the first is kept. The
merge distance is ``merge_fraction`` (default 0.5) times the class radius, or one ``merge_distance_A`` for every
class: half a radius because two particles of a class cannot have centres closer than about two radii (they would
overlap), so points within half a radius are one particle clicked twice, while real neighbours, even packed tight or
marked a little off-centre, stay apart (apo-ferritin, 60 Å: 30 Å; ribosome, 150 Å: 75 Å; motor, 250 Å: 125 Å). What
was merged is reported per tomogram and class with the distance used (``ConversionNotes.merges``, the CLI, the
version manifest's ``merged_points``). Points just outside the volume (less than one voxel) are clamped inside,
farther ones are dropped and reported.

External CSV: columns ``dataset_id`` and ``tomo_id`` (the portal run name; ``run_name`` is accepted too), the
coordinates as ``z,y,x`` or ``Motor axis 0,Motor axis 1,Motor axis 2`` (voxels; ``-1`` in all three means "no
particle" and still lists the tomogram), optionally ``voxel_spacing`` / ``Voxel spacing`` (Å/voxel of the
coordinates) and ``particle`` (the class; default: the selection's first class, else motor).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from byu.errors import InputError, InputErrors
from byu.labels.classes import ParticleClass
from byu.labels.model import STORED_PICK_COLUMNS, TOMOGRAM_COLUMNS, LabelSet
from byu.labels.store import LabelStore, Manifest
from byu.portal.points import read_ndjson_points
from byu.portal.query import PortalTomogram, Selection
from byu.tomo.io import META_NAME, read_meta
from byu.tomo.preprocess import DEFAULT_TARGET_SPACING, resampled_shape, working_spacing

DEFAULT_MERGE_FRACTION = 0.5  # of the class radius: see the module docstring


@dataclass(frozen=True)
class TomoFrame:
    """The stored frame of a tomogram: shape (Z, Y, X) and Å/voxel."""

    tomo_id: str
    shape: tuple[int, int, int]
    voxel_spacing: float


@dataclass(frozen=True)
class MergeNote:
    """Points of one class in one tomogram merged away: closer than ``distance_A`` to a kept one."""

    tomo_id: str
    particle: str
    merged: int
    distance_A: float

    def as_dict(self) -> dict[str, Any]:
        return {"tomo_id": self.tomo_id, "particle": self.particle, "merged": self.merged,
                "distance_A": self.distance_A}


@dataclass
class ConversionNotes:
    """What conversion dropped or merged, per tomogram (for the CLI report and the manifest)."""

    dropped: dict[str, list[list[float]]] = field(default_factory=dict)  # Å points outside the volume
    merged: dict[str, int] = field(default_factory=dict)  # duplicates removed
    merges: list[MergeNote] = field(default_factory=list)  # the same, per tomogram and class, with the distance
    unmatched_rows: list[int] = field(default_factory=list)  # CSV rows whose run was not selected


# ------------------------------------------------------------------------------------------------ frames
def stored_frame(tomograms_dir: str | Path, tomo_id: str) -> TomoFrame | None:
    """The stored (resampled) frame of a tomogram (``None`` when it has not been preprocessed)."""
    d = Path(tomograms_dir) / tomo_id
    if not (d / META_NAME).exists():
        return None
    meta = read_meta(d)
    return TomoFrame(tomo_id, tuple(meta.shape), float(meta.voxel_spacing))  # type: ignore[arg-type]


def expected_frame(t: PortalTomogram, target_spacing: float = DEFAULT_TARGET_SPACING) -> TomoFrame:
    """The stored frame preprocessing will produce for portal tomogram ``t``."""
    return TomoFrame(t.tomo_id, resampled_shape(t.shape, t.voxel_spacing, target_spacing),
                     working_spacing(t.voxel_spacing, target_spacing))


def label_frames(selection: Selection, tomograms_dir: str | Path, *,
                 require_stored: bool = True) -> dict[str, TomoFrame]:
    """The label frame (the portal tomogram's own shape and spacing) of each selected tomogram; only the stored
    ones when ``require_stored``."""
    return {t.tomo_id: TomoFrame(t.tomo_id, tuple(t.shape), float(t.voxel_spacing))  # type: ignore[arg-type]
            for t in selection.tomograms
            if not require_stored or (Path(tomograms_dir) / t.tomo_id / META_NAME).exists()}


# ------------------------------------------------------------------------------------------------ points
Points = dict[str, list[tuple[str, np.ndarray, str]]]  # tomo_id -> [(class, Å points, source)]


def portal_points_A(selection: Selection, paths: Mapping[int, str | Path]) -> Points:
    """Å points per tomo_id and class from downloaded point files (``annotation_file_id -> path``); a tomogram with
    at least one downloaded file is present even with zero points."""
    out: Points = {}
    for pf in selection.point_files:
        p = paths.get(pf.annotation_file_id)
        if p is None:
            continue
        out.setdefault(pf.tomo_id, []).append(
            (pf.particle, read_ndjson_points(p) * pf.voxel_spacing, f"portal:annotation {pf.annotation_id}"))
    return out


def external_points_A(points: pd.DataFrame, selection: Selection, *, source: str = "external",
                      notes: ConversionNotes | None = None) -> Points:
    """Å points per tomo_id and class from :func:`read_external_points` rows, matched to the selection by
    ``(dataset_id, run name)``; coordinates without a spacing are in the chosen tomogram's voxels."""
    by_run = {(t.dataset_id, t.run_name): t for t in selection.tomograms}
    default = selection.label_classes[0].name
    known = {c.name for c in selection.label_classes}
    out: dict[str, dict[str, list[list[float]]]] = {}
    errors = []
    for r in points.itertuples(index=False):
        t = by_run.get((int(r.dataset_id), str(r.run_name)))
        if t is None:
            if notes is not None:
                notes.unmatched_rows.append(int(r.row))
            continue
        particle = str(getattr(r, "particle", "") or "") or default
        if particle not in known:
            errors.append(InputError(f"class {particle!r} is not one of the selection's classes {sorted(known)}",
                                     file=source, row=int(r.row), field="particle"))
            continue
        pts = out.setdefault(t.tomo_id, {}).setdefault(particle, [])
        if not math.isnan(r.z):
            spacing = t.voxel_spacing if math.isnan(r.voxel_spacing) else float(r.voxel_spacing)
            pts.append([r.z * spacing, r.y * spacing, r.x * spacing])
    if errors:
        raise InputErrors(errors)
    return {k: [(c, np.asarray(v, dtype=float).reshape(-1, 3), f"external:{Path(source).name}")
                for c, v in per.items()] for k, per in out.items()}


def dedupe_points(points_A: np.ndarray, radius_A: float) -> np.ndarray:
    """Keep the first of any points closer than ``radius_A`` to an already kept one (in order)."""
    pts = np.asarray(points_A, dtype=float).reshape(-1, 3)
    if radius_A <= 0 or len(pts) < 2:
        return pts
    from scipy.spatial import cKDTree

    near = cKDTree(pts).query_ball_point(pts, r=radius_A)
    keep = np.ones(len(pts), dtype=bool)
    for i in range(len(pts)):  # in order: a point dropped here was closer than radius_A to an earlier kept one
        if not keep[i]:
            continue
        for j in near[i]:
            if j > i and keep[j] and np.linalg.norm(pts[j] - pts[i]) < radius_A:
                keep[j] = False
    return pts[keep]


def merge_distance(cls: ParticleClass, *, merge_distance_A: float | None = None,
                   merge_fraction: float = DEFAULT_MERGE_FRACTION) -> float:
    """The merge distance of a class in Å: ``merge_distance_A`` when given, else ``merge_fraction`` x its radius."""
    if merge_distance_A is not None:
        return float(merge_distance_A)
    return float(merge_fraction) * float(cls.radius)


def check_merge(merge_distance_A: float | None, merge_fraction: float) -> None:
    """Both finite and >= 0 (0: nothing is merged)."""
    for what, v in (("merge_distance_A", merge_distance_A), ("merge_fraction", merge_fraction)):
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise InputError(f"the merge distance must be a finite number >= 0 (0: merge nothing), got {v!r}",
                             field=what)


def labels_from_points(frames: Mapping[str, TomoFrame], points: Points, classes: list[ParticleClass], *,
                       include_empty: bool = False, merge_distance_A: float | None = None,
                       merge_fraction: float = DEFAULT_MERGE_FRACTION,
                       notes: ConversionNotes | None = None) -> LabelSet:
    """A LabelSet (tomograms sorted by tomo_id) in each tomogram's label frame; see the module docstring."""
    check_merge(merge_distance_A, merge_fraction)
    notes = notes if notes is not None else ConversionNotes()
    by_name = {c.name: c for c in classes}
    tomos, picks = [], []
    for tomo_id in sorted(frames):
        if tomo_id not in points and not include_empty:
            continue
        frame = frames[tomo_id]
        tomos.append({"tomo_id": tomo_id, "Z": frame.shape[0], "Y": frame.shape[1], "X": frame.shape[2],
                      "voxel_spacing": frame.voxel_spacing})
        shape = np.asarray(frame.shape, dtype=float)
        merged: dict[str, tuple[int, float]] = {}  # class -> (merged, distance), in order of appearance
        for particle, pts_A, source in points.get(tomo_id, []):
            pts = np.asarray(pts_A, dtype=float).reshape(-1, 3)
            distance = merge_distance(by_name[particle], merge_distance_A=merge_distance_A,
                                      merge_fraction=merge_fraction) if particle in by_name else 0.0
            unique = dedupe_points(pts, distance)
            if len(unique) < len(pts):
                notes.merged[tomo_id] = notes.merged.get(tomo_id, 0) + len(pts) - len(unique)
                merged[particle] = (merged.get(particle, (0, distance))[0] + len(pts) - len(unique), distance)
            vox = unique / frame.voxel_spacing
            inside = np.all((vox > -1.0) & (vox < shape + 1.0), axis=1) if len(vox) else np.zeros(0, bool)
            if (~inside).any():
                notes.dropped.setdefault(tomo_id, []).extend(unique[~inside].round(1).tolist())
            for z, y, x in np.clip(vox[inside], 0.0, shape - 1e-3):  # strictly below the shape
                picks.append({"tomo_id": tomo_id, "particle": particle, "z": float(z), "y": float(y), "x": float(x),
                              "source": source, "user_id": "", "session_id": ""})
        notes.merges.extend(MergeNote(tomo_id, c, n, d) for c, (n, d) in merged.items())
    return LabelSet.build(pd.DataFrame(tomos, columns=TOMOGRAM_COLUMNS),
                          pd.DataFrame(picks, columns=STORED_PICK_COLUMNS), classes)


def portal_labels(selection: Selection, tomograms_dir: str | Path, *,
                  point_paths: Mapping[int, str | Path] | None = None, external: pd.DataFrame | None = None,
                  external_source: str = "external", include_empty: bool = False, require_stored: bool = True,
                  merge_distance_A: float | None = None,
                  merge_fraction: float = DEFAULT_MERGE_FRACTION) -> tuple[LabelSet, ConversionNotes]:
    """The labels of a selection from portal point files and/or external points (merged per tomogram)."""
    notes = ConversionNotes()
    frames = label_frames(selection, tomograms_dir, require_stored=require_stored)
    points: Points = {}
    if point_paths is not None:
        for k, v in portal_points_A(selection, point_paths).items():
            points.setdefault(k, []).extend(v)
    if external is not None:
        for k, v in external_points_A(external, selection, source=external_source, notes=notes).items():
            points.setdefault(k, []).extend(v)
    labels = labels_from_points(frames, points, selection.label_classes, include_empty=include_empty,
                                merge_distance_A=merge_distance_A, merge_fraction=merge_fraction, notes=notes)
    return labels, notes


def store_portal_labels(store: LabelStore, name: str, labels: LabelSet, *, selection: Selection,
                        parents: Sequence[str] = (), producer: str = "byu portal labels",
                        notes: ConversionNotes | None = None, sources: Iterable[str] = (),
                        extra: dict[str, Any] | None = None) -> Manifest:
    """Store ``labels`` as version ``name`` with the portal ids in its manifest ``extra``."""
    by_id = selection.by_tomo_id()
    ids = set(labels.tomo_ids)
    info: dict[str, Any] = {
        "portal_url": selection.portal_url,
        "objects": {c.name: {"portal_object": c.portal_object, "go_id": c.go_id} for c in selection.label_classes},
        "points_csv": selection.points_csv,
        "sources": list(sources),
        "tomograms": {tid: by_id[tid].portal_ids() for tid in labels.tomo_ids if tid in by_id},
        "annotation_files": sorted({pf.annotation_file_id for pf in selection.point_files if pf.tomo_id in ids}),
        **(extra or {}),
    }
    if notes is not None:
        info["dropped_points_A"] = notes.dropped
        info["merged_duplicates"] = notes.merged
        if notes.merges:  # only then: versions stored before this existed keep their manifests
            info["merged_points"] = [m.as_dict() for m in notes.merges]
    return store.put(name, labels, parents=list(parents), producer=producer, extra=info)

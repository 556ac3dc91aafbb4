"""What a synthetic cohort writes under its data root (every coordinate in each tomogram's ORIGINAL voxel frame).

- ``tomograms/synth_NNN/``: uint8 slice stacks + ``meta.json`` (:func:`write_tomogram_of`), ``source`` naming the
  world (``synth``: motor cohort, ``synth_multi``: multi-class, ``synth_crowded``: crowded) with its seed and index;
- ``synth/truth_picks.csv``: the truth in the picks form ``tomo_id,particle,z,y,x,voxel_spacing``
  (:data:`PICK_COLUMNS`; ``voxel_spacing`` the tomogram's original spacing), rows sorted by tomo_id, then particle
  (class name), then the order the particles were placed in; every world writes it;
- ``synth/tomograms.csv``: ``tomo_id,Z,Y,X,voxel_spacing`` (original frame) of every tomogram;
- the noisy labels: ``synth/labels_noisy_picks.csv`` (picks form) in the multi-class and crowded worlds; the motor
  cohort writes the canonical form instead, ``synth/labels_noisy.csv``, with its truth also in the canonical form,
  ``synth/truth.csv`` (``tomo_id,Z,Y,X,voxel_spacing,num_motors,motor_zyx``, like a gt.csv);
- ``synth/planted_errors.csv``: :data:`ERROR_COLUMNS` (NaN where not applicable); the motor cohort's has no
  ``particle`` column (:data:`MOTOR_ERROR_COLUMNS`); the crowded world's adds ``on`` (:data:`CROWDED_ERROR_COLUMNS`:
  the look-alike species a ``false`` label sits on, else empty);
- ``synth/decoys.csv``: ``tomo_id,z,y,x,kind`` (motor cohort: its decoys), + ``mimics`` (multi-class: the class a
  decoy is sized like; empty for gold beads), + ``species`` (crowded: every unlabeled particle, kind ``lookalike``,
  and the gold beads, kind ``gold``);
- ``synth/classes.json``: the classes (multi-class and crowded); ``synth/species.json``: the crowded world's
  species (:meth:`~byu.synth.species.Species.summary`) with their counts per tomogram.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from byu.atomic import atomic_open, write_bytes, write_text
from byu.labels.classes import ParticleClass
from byu.labels.formats import tomograms_bytes, write_export, write_labels
from byu.labels.model import LabelSet
from byu.labels.table import make_table
from byu.paths import DataRoot
from byu.synth.imaging import CLIP_PERCENTILES
from byu.synth.scene import Plan
from byu.synth.shapes import SHAPES
from byu.tomo.io import TomoMeta, write_tomogram

PICK_COLUMNS = ["tomo_id", "particle", "z", "y", "x", "voxel_spacing"]
TOMOGRAM_COLUMNS = ["tomo_id", "Z", "Y", "X", "voxel_spacing"]
ERROR_COLUMNS = ["tomo_id", "particle", "kind", "true_z", "true_y", "true_x", "label_z", "label_y", "label_x"]
MOTOR_ERROR_COLUMNS = [c for c in ERROR_COLUMNS if c != "particle"]
CROWDED_ERROR_COLUMNS = [*ERROR_COLUMNS, "on"]
MOTOR_DECOY_COLUMNS = ["tomo_id", "z", "y", "x", "kind"]
DECOY_COLUMNS = [*MOTOR_DECOY_COLUMNS, "mimics"]
CROWDED_DECOY_COLUMNS = [*DECOY_COLUMNS, "species"]


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    with atomic_open(path, "w", newline="") as fh:
        df.to_csv(fh, index=False, lineterminator="\n")
    return path


def write_tomogram_of(root: DataRoot, plan: Plan, volume: Any, clip: tuple[float, float],
                      source: dict[str, Any]) -> Path:
    meta = TomoMeta(tomo_id=plan.tomo_id, shape=plan.shape, voxel_spacing=plan.spacing,
                    original_shape=plan.original_shape, original_spacing=plan.original_spacing, clip=clip,
                    clip_percentiles=CLIP_PERCENTILES, source=source)
    return write_tomogram(root.tomogram(plan.tomo_id), volume, meta)


def write_motor_tables(synth_dir: Path, plans: list[Plan], errors: list[dict[str, Any]]) -> dict[str, Path]:
    """The motor cohort's tables (module docstring); returns their paths by name."""
    truth_rows, noisy_rows = [], []
    by_tomo = {e["plan"].tomo_id: e for e in errors}
    for t in plans:
        motors = t.of("particle")
        true = [t.to_original(m.pos) for m in motors]
        noisy = list(true)
        e = by_tomo.get(t.tomo_id)
        if e is not None:
            if e["kind"] == "false":
                noisy.append(e["label"])
            else:
                i = next(j for j, m in enumerate(motors) if m is e["obj"])
                if e["kind"] == "missed":
                    noisy.pop(i)
                else:
                    noisy[i] = e["label"]
        truth_rows.append((t.tomo_id, t.original_shape, t.original_spacing, true))
        noisy_rows.append((t.tomo_id, t.original_shape, t.original_spacing, noisy))
    truth_table = make_table(truth_rows)
    paths = {"truth_canonical": write_labels(truth_table, synth_dir / "truth.csv"),
             "noisy": write_labels(make_table(noisy_rows), synth_dir / "labels_noisy.csv")}
    truth_labels = LabelSet.from_canonical(truth_table)  # the same truth in the picks form, with its tomograms
    paths["truth"] = write_export(truth_labels, "picks", synth_dir / "truth_picks.csv")
    paths["tomograms"] = synth_dir / "tomograms.csv"
    write_bytes(paths["tomograms"], tomograms_bytes(truth_labels))
    err_df = pd.DataFrame(
        [[e["plan"].tomo_id, e["kind"], *e["true"], *e["label"]]
         for e in sorted(errors, key=lambda e: e["plan"].tomo_id)],
        columns=MOTOR_ERROR_COLUMNS,
    )
    decoy_df = pd.DataFrame([[t.tomo_id, *t.to_original(d.pos), SHAPES[d.shape].table_name]
                             for t in plans for d in t.of("decoy")], columns=MOTOR_DECOY_COLUMNS)
    paths["errors"] = write_csv(err_df, synth_dir / "planted_errors.csv")
    paths["decoys"] = write_csv(decoy_df, synth_dir / "decoys.csv")
    return paths


def _picks(rows: list[list[Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=PICK_COLUMNS)
    return df.sort_values(["tomo_id", "particle"], kind="stable").reset_index(drop=True)


def write_class_tables(synth_dir: Path, plans: list[Plan], classes: list[ParticleClass],
                       errors: list[dict[str, Any]], *, crowded: bool) -> dict[str, Path]:
    """The multi-class and crowded worlds' tables (module docstring); returns their paths by name."""
    by_obj = {id(e["obj"]): e for e in errors if e["kind"] in ("missed", "shifted")}
    by_plan: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in errors:
        by_plan.setdefault((e["plan"].tomo_id, e["cls"]), []).append(e)
    truth_rows, noisy_rows = [], []
    for p in plans:
        for c in classes:
            for o in p.of("particle", c.name):
                row = [p.tomo_id, c.name, *p.to_original(o.pos), p.original_spacing]
                truth_rows.append(row)
                err = by_obj.get(id(o))
                if err is None:
                    noisy_rows.append(row)
                elif err["kind"] == "shifted":
                    noisy_rows.append([p.tomo_id, c.name, *err["label"], p.original_spacing])
            for kind in ("false", "background"):
                for e in by_plan.get((p.tomo_id, c.name), []):
                    if e["kind"] == kind:
                        noisy_rows.append([p.tomo_id, c.name, *e["label"], p.original_spacing])

    paths = {"truth": write_csv(_picks(truth_rows), synth_dir / "truth_picks.csv"),
             "noisy": write_csv(_picks(noisy_rows), synth_dir / "labels_noisy_picks.csv"),
             "tomograms": write_csv(pd.DataFrame([[p.tomo_id, *p.original_shape, p.original_spacing] for p in plans],
                                                 columns=TOMOGRAM_COLUMNS), synth_dir / "tomograms.csv")}
    ordered = sorted(errors, key=lambda e: (e["plan"].tomo_id, e["cls"]))
    if crowded:
        err_df = pd.DataFrame([[e["plan"].tomo_id, e["cls"], e["kind"], *e["true"], *e["label"], e["on"]]
                               for e in ordered], columns=CROWDED_ERROR_COLUMNS)
        decoy_df = pd.DataFrame(
            [[p.tomo_id, *p.to_original(o.pos), "lookalike" if o.role == "lookalike" else "gold", o.cls, o.species]
             for p in plans for o in p.objects if o.role in ("lookalike", "bead")],
            columns=CROWDED_DECOY_COLUMNS,
        )
    else:
        err_df = pd.DataFrame([[e["plan"].tomo_id, e["cls"], e["kind"], *e["true"], *e["label"]] for e in ordered],
                              columns=ERROR_COLUMNS)
        decoy_df = pd.DataFrame(
            [[p.tomo_id, *p.to_original(o.pos), o.shape, o.cls] for p in plans for o in p.objects
             if o.role in ("decoy", "bead")],
            columns=DECOY_COLUMNS,
        )
    paths["errors"] = write_csv(err_df, synth_dir / "planted_errors.csv")
    paths["decoys"] = write_csv(decoy_df, synth_dir / "decoys.csv")
    paths["classes"] = synth_dir / "classes.json"
    write_text(paths["classes"], json.dumps([c.model_dump(mode="json") for c in classes], indent=2) + "\n")
    return paths


def write_species(path: Path, species: list[dict[str, Any]]) -> Path:
    write_text(path, json.dumps(species, indent=2) + "\n")
    return path

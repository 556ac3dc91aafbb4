"""Cross-validation splits of a label version.

Motor versions, fresh (exactly the reference recipe): rows sorted by tomo_id,
``StratifiedKFold(n_splits=K, shuffle=True, random_state=S)`` stratified on the number of motors; then per fold,
validation tomograms with more than ``max_val_motors`` motors move to train.

Multi-class versions, fresh: rows sorted by tomo_id, ``iterstrat``'s ``MultilabelStratifiedKFold`` (iterative
stratification, Sechidis et al. 2011) on, per class, "holds the class" and "holds more of it than the median
tomogram that does", so that every fold's validation part holds every class (a class in fewer tomograms than
folds is an error naming it). The ``max_val_motors`` rule is the BYU motor setting's (its metric scores one motor
per tomogram) and applies to motor versions only: in a multi-class version every tomogram keeps its validation
fold, so every tomogram has an out-of-fold model.

Carry-forward: every tomogram keeps the fold it had, the ``max_val_motors`` rule is re-applied with the new
counts, and tomograms new to the table go to train of every fold (or, if asked, are spread over the folds by
a fresh split of the new tomograms alone).

JSON: ``{"splitter": "sklearn.model_selection.StratifiedKFold", "num_folds": K, "random_state": S,
"folds": [{"train": [...], "val": [...]}, ...]}``; both lists sorted by tomo_id.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from byu.atomic import write_text
from byu.errors import InputError
from byu.labels.model import LabelSet

SPLITTER = "sklearn.model_selection.StratifiedKFold"
MULTILABEL_SPLITTER = "iterstrat.ml_stratifiers.MultilabelStratifiedKFold"
MAX_FOLDS = 100
SEED_RANGE = (0, 2**32 - 1)


def as_labels(labels: LabelSet | pd.DataFrame) -> LabelSet:
    """A LabelSet from a LabelSet or a canonical motor table."""
    return labels if isinstance(labels, LabelSet) else LabelSet.from_canonical(labels)


def _check(folds: int, seed: int, n: int) -> None:
    if not 2 <= folds <= MAX_FOLDS:
        raise InputError(f"--folds must be from 2 to {MAX_FOLDS}, got {folds}", field="folds")
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise InputError(f"--seed must be from {SEED_RANGE[0]} to {SEED_RANGE[1]}, got {seed}", field="seed")
    if n < folds:
        raise InputError(f"cannot make {folds} folds from {n} tomogram(s)", field="folds")


def _stratified_val_sets(labels: LabelSet, folds: int, seed: int) -> list[list[str]]:
    counts = labels.per_tomogram_counts().sort_index(kind="stable")
    _check(folds, seed, len(counts))
    ids = counts.index.to_numpy()
    if labels.is_motor_only:
        from sklearn.model_selection import StratifiedKFold  # sklearn only where a split is made

        skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        y = counts["motor"].to_numpy()
        if np.bincount(y).max() < folds:
            raise InputError(f"cannot stratify {folds} folds: no motor-count class has {folds} tomograms "
                             f"(counts: {dict(zip(*np.unique(y, return_counts=True), strict=True))})", field="folds")
        with warnings.catch_warnings():  # "least populated class has only N members": expected for rare counts
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            return [list(ids[val_idx]) for _, val_idx in skf.split(np.zeros(len(ids)), y)]
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    present = counts > 0
    few = {c: int(present[c].sum()) for c in counts.columns if 0 < present[c].sum() < folds}
    if few:
        raise InputError(f"cannot put every class in each of {folds} folds: too few tomograms hold "
                         + ", ".join(f"{c} ({n})" for c, n in few.items()) + "; use fewer folds", field="folds")
    columns = []
    for c in counts.columns:
        if present[c].any():
            columns.append(present[c].to_numpy(dtype=int))
            median = float(np.median(counts.loc[present[c], c]))
            columns.append((counts[c] > median).to_numpy(dtype=int))
    y = np.column_stack(columns) if columns else np.zeros((len(ids), 1), dtype=int)
    mskf = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [list(ids[val_idx]) for _, val_idx in mskf.split(np.zeros(len(ids)), y)]


def _folds_from_val(labels: LabelSet, val_sets: list[list[str]], max_val_motors: int) -> list[dict[str, list[str]]]:
    counts = labels.motor_counts()
    if not labels.is_motor_only:
        max_val_motors = max(counts.values(), default=0)  # the motor rule is for motor versions only
    all_ids = sorted(counts)
    out = []
    for val in val_sets:
        keep = {t for t in val if t in counts and counts[t] <= max_val_motors}
        out.append({"train": [t for t in all_ids if t not in keep], "val": sorted(keep)})
    return out


def fresh_split(labels: LabelSet | pd.DataFrame, *, folds: int, seed: int, max_val_motors: int = 1) -> dict[str, Any]:
    """A new stratified K-fold split of a label version (see the module docstring)."""
    labels = as_labels(labels)
    val_sets = _stratified_val_sets(labels, folds, seed)
    return {"splitter": SPLITTER if labels.is_motor_only else MULTILABEL_SPLITTER, "num_folds": int(folds),
            "random_state": int(seed), "folds": _folds_from_val(labels, val_sets, max_val_motors)}


def carry_split(labels: LabelSet | pd.DataFrame, prev: dict[str, Any], *, max_val_motors: int = 1,
                assign_new: bool = False) -> dict[str, Any]:
    """Carry a previous split forward to a new version (same folds for the tomograms both know)."""
    labels = as_labels(labels)
    folds = int(prev["num_folds"])
    seed = int(prev["random_state"])
    val_sets = [list(f["val"]) for f in prev["folds"]]
    known = {t for f in prev["folds"] for part in ("train", "val") for t in f[part]}
    new = [t for t in labels.tomo_ids if t not in known]
    if assign_new and len(new) >= folds:
        for k, extra in enumerate(_stratified_val_sets(labels.select(new), folds, seed)):
            val_sets[k].extend(extra)
    return {"splitter": prev.get("splitter", SPLITTER), "num_folds": folds, "random_state": seed,
            "folds": _folds_from_val(labels, val_sets, max_val_motors)}


def validate_split(split: Any, *, source: str | Path | None = None) -> dict[str, Any]:
    """Check a split's structure; raise InputError naming the field."""
    if not isinstance(split, dict):
        raise InputError("a split must be a JSON object", file=source)
    for key in ("num_folds", "random_state", "folds"):
        if key not in split:
            raise InputError(f"missing key {key!r}", file=source, field=key)
    folds = split["folds"]
    if not isinstance(folds, list) or len(folds) != split["num_folds"] or not folds:
        raise InputError(f"'folds' must list num_folds={split['num_folds']} folds", file=source, field="folds")
    for k, f in enumerate(folds):
        if not isinstance(f, dict) or not isinstance(f.get("train"), list) or not isinstance(f.get("val"), list):
            raise InputError(f"fold {k} needs 'train' and 'val' lists", file=source, field=f"folds[{k}]")
        overlap = set(f["train"]) & set(f["val"])
        if overlap:
            raise InputError(f"fold {k}: tomograms in both train and val: {sorted(overlap)[:5]}",
                             file=source, field=f"folds[{k}]")
    return split


def write_split(split: dict[str, Any], path: str | Path) -> Path:
    write_text(path, json.dumps(split, indent=2) + "\n")
    return Path(path)


def read_split(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError("split file not found" if not path.exists() else "not a file", file=path)
    if path.stat().st_size > 64 << 20:
        raise InputError("split file is larger than 64 MiB", file=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"not valid JSON: {type(exc).__name__}", file=path) from None
    return validate_split(data, source=path)


def write_split_new(split: dict[str, Any], path: str | Path) -> Path:
    """Write a split, refusing to replace an existing file with other content (same content: nothing written)."""
    path = Path(path)
    text = json.dumps(split, indent=2) + "\n"
    if path.exists():
        if path.read_text(encoding="utf-8") == text:
            return path
        raise InputError("a different split is already stored here; splits that training may have used are "
                         "never overwritten: write it to another path", file=path)
    return write_split(split, path)


def split_balance(labels: LabelSet | pd.DataFrame, split: dict[str, Any]) -> pd.DataFrame:
    """Per fold and part, tomogram counts by number of motors (for tables and plots)."""
    counts = as_labels(labels).motor_counts()
    rows = [
        {"fold": k, "part": part, "num_motors": counts.get(t, -1)}
        for k, f in enumerate(split["folds"]) for part in ("train", "val") for t in f[part]
    ]
    frame = pd.DataFrame(rows, columns=["fold", "part", "num_motors"])
    return frame.groupby(["fold", "part", "num_motors"]).size().rename("tomograms").reset_index()


def class_balance(labels: LabelSet | pd.DataFrame, split: dict[str, Any]) -> pd.DataFrame:
    """Per fold, part and class: tomograms holding the class and its picks (``fold,part,particle,tomograms,
    picks``); every class of the version appears for every fold and part, zeros included."""
    labels = as_labels(labels)
    counts = labels.per_tomogram_counts()
    rows = []
    for k, f in enumerate(split["folds"]):
        for part in ("train", "val"):
            ids = [t for t in f[part] if t in counts.index]
            sub = counts.loc[ids] if ids else counts.iloc[0:0]
            for c in counts.columns:
                rows.append({"fold": k, "part": part, "particle": c, "tomograms": int((sub[c] > 0).sum()),
                             "picks": int(sub[c].sum())})
    return pd.DataFrame(rows, columns=["fold", "part", "particle", "tomograms", "picks"])

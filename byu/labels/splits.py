"""Cross-validation splits, exactly the reference recipe (DESIGN.md).

Fresh: rows sorted by tomo_id, ``StratifiedKFold(n_splits=K, shuffle=True, random_state=S)`` stratified on
``num_motors``; then per fold, validation tomograms with more than ``max_val_motors`` motors move to train.
Carry-forward: every tomogram keeps the fold it had, the ``max_val_motors`` rule is re-applied with the new
counts, and tomograms new to the table go to train of every fold (or, if asked, are spread over the folds by
a fresh stratified split of the new tomograms alone).

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
from sklearn.model_selection import StratifiedKFold

from byu.atomic import write_text
from byu.errors import InputError

SPLITTER = "sklearn.model_selection.StratifiedKFold"


def _stratified_val_sets(df: pd.DataFrame, folds: int, seed: int) -> list[list[str]]:
    df = df.sort_values("tomo_id", kind="stable").reset_index(drop=True)
    if folds < 2:
        raise InputError(f"--folds must be at least 2, got {folds}", field="folds")
    if len(df) < folds:
        raise InputError(f"cannot make {folds} folds from {len(df)} tomogram(s)", field="folds")
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    ids = df["tomo_id"].to_numpy()
    y = df["num_motors"].to_numpy()
    if np.bincount(y).max() < folds:
        raise InputError(f"cannot stratify {folds} folds: no motor-count class has {folds} tomograms "
                         f"(counts: {dict(zip(*np.unique(y, return_counts=True)))})", field="folds")
    with warnings.catch_warnings():  # "least populated class has only N members": expected for rare counts
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return [list(ids[val_idx]) for _, val_idx in skf.split(np.zeros(len(df)), y)]


def _folds_from_val(df: pd.DataFrame, val_sets: list[list[str]], max_val_motors: int) -> list[dict[str, list[str]]]:
    counts = dict(zip(df["tomo_id"], df["num_motors"]))
    all_ids = sorted(counts)
    out = []
    for val in val_sets:
        keep = {t for t in val if t in counts and counts[t] <= max_val_motors}
        out.append({"train": [t for t in all_ids if t not in keep], "val": sorted(keep)})
    return out


def fresh_split(df: pd.DataFrame, *, folds: int, seed: int, max_val_motors: int = 1) -> dict[str, Any]:
    """A new stratified K-fold split of a canonical label table."""
    val_sets = _stratified_val_sets(df, folds, seed)
    return {"splitter": SPLITTER, "num_folds": int(folds), "random_state": int(seed),
            "folds": _folds_from_val(df, val_sets, max_val_motors)}


def carry_split(df: pd.DataFrame, prev: dict[str, Any], *, max_val_motors: int = 1,
                assign_new: bool = False) -> dict[str, Any]:
    """Carry a previous split forward to a new table (same folds for the tomograms both know)."""
    folds = int(prev["num_folds"])
    seed = int(prev["random_state"])
    val_sets = [list(f["val"]) for f in prev["folds"]]
    known = {t for f in prev["folds"] for part in ("train", "val") for t in f[part]}
    new = df[~df["tomo_id"].isin(known)]
    if assign_new and len(new) >= folds:
        for k, extra in enumerate(_stratified_val_sets(new, folds, seed)):
            val_sets[k].extend(extra)
    return {"splitter": prev.get("splitter", SPLITTER), "num_folds": folds, "random_state": seed,
            "folds": _folds_from_val(df, val_sets, max_val_motors)}


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
    if not path.exists():
        raise InputError("split file not found", file=path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc}", file=path) from exc
    return validate_split(data, source=path)


def split_balance(df: pd.DataFrame, split: dict[str, Any]) -> pd.DataFrame:
    """Per fold and part, tomogram counts by number of motors (for tables and plots)."""
    counts = dict(zip(df["tomo_id"], df["num_motors"]))
    rows = [
        {"fold": k, "part": part, "num_motors": counts.get(t, -1)}
        for k, f in enumerate(split["folds"]) for part in ("train", "val") for t in f[part]
    ]
    frame = pd.DataFrame(rows, columns=["fold", "part", "num_motors"])
    return frame.groupby(["fold", "part", "num_motors"]).size().rename("tomograms").reset_index()

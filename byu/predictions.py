"""The predictions table (``data/predictions/<run>.csv``), shared by the model (writer), review and metrics.

Columns ``tomo_id,particle,z,y,x,conf,models,voxel_spacing``: coordinates in the tomogram's ORIGINAL voxel frame,
whose spacing is the ``voxel_spacing`` column; ``models`` is the ``;``-joined ``run/foldK`` list that predicted it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd

from byu.atomic import write_bytes
from byu.errors import InputError
from byu.paths import check_id

PREDICTION_COLUMNS = ["tomo_id", "particle", "z", "y", "x", "conf", "models", "voxel_spacing"]

#: how a run predicts: out of fold (each tomogram by the fold models that never saw it) or with every model
PredictMode = Literal["oof", "all"]
PREDICT_MODES: tuple[PredictMode, ...] = get_args(PredictMode)


def empty_predictions() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float if c in ("z", "y", "x", "conf", "voxel_spacing") else object)
                         for c in PREDICTION_COLUMNS})


def write_predictions(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a predictions table atomically (rows sorted by tomogram, class, descending confidence)."""
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"predictions lack column(s) {missing}", file=path)
    out = df.loc[:, PREDICTION_COLUMNS].sort_values(["tomo_id", "particle", "conf"], ascending=[True, True, False],
                                                    kind="stable")
    buf = io.StringIO()
    out.to_csv(buf, index=False, lineterminator="\n", float_format="%.6g")
    write_bytes(path, buf.getvalue().encode("utf-8"))
    return Path(path)


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read and check a predictions CSV; every problem names file, line and field.

    ``particle`` defaults to ``motor`` and ``models`` to empty when absent; ``voxel_spacing`` is required by
    review and the metrics (they compare in Å) and is checked when present.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("predictions file not found", file=path)
    try:
        df = pd.read_csv(path, dtype={"tomo_id": str, "particle": str, "models": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable CSV: {exc}", file=path) from exc
    missing = [c for c in ("tomo_id", "z", "y", "x", "conf") if c not in df.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}; expected {PREDICTION_COLUMNS}", file=path)
    if "particle" not in df.columns:
        df["particle"] = "motor"
    if "models" not in df.columns:
        df["models"] = ""
    for line, tid in enumerate(df["tomo_id"], start=2):
        check_id(tid, file=path, row=line)
    for c in ("z", "y", "x", "conf") + (("voxel_spacing",) if "voxel_spacing" in df.columns else ()):
        vals = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(vals))
        if len(bad):
            raise InputError(f"not a finite number: {df[c].iloc[bad[0]]!r}", file=path, row=int(bad[0]) + 2, field=c)
        df[c] = vals
    bad = np.flatnonzero((df["conf"] < 0) | (df["conf"] > 1))
    if len(bad):
        raise InputError(f"confidence {df['conf'].iloc[bad[0]]} outside [0, 1]", file=path, row=int(bad[0]) + 2,
                         field="conf")
    if "voxel_spacing" in df.columns:
        bad = np.flatnonzero(df["voxel_spacing"] <= 0)
        if len(bad):
            raise InputError("voxel spacing must be positive", file=path, row=int(bad[0]) + 2, field="voxel_spacing")
    return df

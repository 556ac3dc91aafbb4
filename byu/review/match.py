"""Mine review cases: predictions vs the current labels, matched one-to-one in Å.

Per tomogram, predictions at or above ``threshold`` are matched to labeled motors within ``radius_A``, nearest
pairs first. A labeled motor no prediction matched is an **FN** case; predictions no label matched are shown as
candidates, attached to the nearest FN case of their tomogram, or, when the tomogram has none, grouped in one
**FP** case. Each case lists up to ``max_candidates`` predictions ranked by confidence.

With ``confirm_threshold`` set, a labeled motor whose only support is a weak prediction (matched, but with
confidence below it) is reviewed too, as an FN case: the model barely sees a motor there, the way it sees decoys
that were labeled by mistake. Its score is ``1 - confidence`` of that weak match.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from byu.atomic import write_bytes
from byu.errors import InputError, NotFoundError
from byu.labels.table import motors_angstrom
from byu.matching import match_points

CASE_COLUMNS = [
    "case_id", "kind", "index", "tomo_id", "image", "score", "label_version", "prediction_run",
    "Z", "Y", "X", "voxel_spacing", "radius_A", "focus_k", "candidates", "labels",
]
def image_name(kind: str, index: int, tomo_id: str, shape: tuple[int, int, int], spacing: float) -> str:
    z, y, x = shape
    return f"{kind}-{index}-{tomo_id}-{z}x{y}x{x}-spacing{spacing:g}.jpg"


def _candidate(k: int, zyx, conf: float | None, source: str) -> dict:
    return {"k": k, "z": round(float(zyx[0]), 3), "y": round(float(zyx[1]), 3), "x": round(float(zyx[2]), 3),
            "conf": None if conf is None else round(float(conf), 6), "source": source}


def find_cases(labels: pd.DataFrame, predictions: pd.DataFrame, *, label_version: str = "",
               prediction_run: str = "", threshold: float = 0.05, radius_A: float = 1000.0,
               max_candidates: int = 5, tomo_ids: list[str] | None = None,
               particle: str | None = None, confirm_threshold: float | None = None) -> pd.DataFrame:
    """Review cases (``CASE_COLUMNS``) for the tomograms ``tomo_ids`` (default: every labeled tomogram).

    Only tomograms that were actually predicted should be passed: a tomogram absent from ``predictions`` turns
    every labeled motor into an FN case.
    """
    if "voxel_spacing" not in predictions.columns:
        raise InputError("predictions lack the voxel_spacing column: distances are compared in Å",
                         file=prediction_run or None, field="voxel_spacing")
    by_id = {r.tomo_id: r for r in labels.itertuples(index=False)}
    ids = list(by_id) if tomo_ids is None else list(tomo_ids)
    unknown = sorted(set(ids) - set(by_id))
    if unknown:
        raise NotFoundError(f"tomo_id(s) not in the label table {label_version or ''}: {unknown[:10]}")
    preds = predictions[predictions["conf"] >= threshold]
    if particle is not None:
        preds = preds[preds["particle"] == particle]
    grouped = {t: g for t, g in preds.groupby("tomo_id", sort=False)}
    raw_cases: list[dict] = []
    for tid in ids:
        row = by_id[tid]
        g = grouped.get(tid)
        label_A = motors_angstrom(row)
        if g is not None:
            g = g.sort_values("conf", ascending=False, kind="stable")
            pred_A = g[["z", "y", "x"]].to_numpy(float) * g["voxel_spacing"].to_numpy(float)[:, None]
            conf = g["conf"].to_numpy(float)
        else:
            pred_A, conf = np.zeros((0, 3)), np.zeros(0)
        m = match_points(label_A, pred_A, radius_A)
        free = m.unmatched_b  # already in descending confidence order
        weak = {i: float(conf[j]) for i, j, _ in m.pairs
                if confirm_threshold is not None and conf[j] < confirm_threshold}
        unsupported = sorted(m.unmatched_a + list(weak))
        to_label_frame = pred_A / float(row.voxel_spacing)
        base = {"tomo_id": tid, "Z": int(row.Z), "Y": int(row.Y), "X": int(row.X),
                "voxel_spacing": float(row.voxel_spacing), "label_version": label_version,
                "prediction_run": prediction_run, "radius_A": float(radius_A),
                "labels": json.dumps(row.motor_zyx)}
        if unsupported:
            owner = {j: min(unsupported, key=lambda i: (np.linalg.norm(label_A[i] - pred_A[j]), i)) for j in free}
            for i in unsupported:
                mine = [j for j in free if owner[j] == i][:max_candidates]
                cands = [_candidate(0, row.motor_zyx[i], None, "label")]
                cands += [_candidate(n + 1, to_label_frame[j], conf[j], "prediction") for n, j in enumerate(mine)]
                if i in weak:
                    score = 1.0 - weak[i]
                else:
                    near = np.linalg.norm(pred_A - label_A[i], axis=1) <= 2 * radius_A if len(pred_A) else []
                    score = 1.0 - (float(conf[near].max()) if np.any(near) else 0.0)
                raw_cases.append({**base, "kind": "FN", "score": score, "focus_k": 0, "candidates": cands})
        elif free:
            mine = free[:max_candidates]
            cands = [_candidate(n + 1, to_label_frame[j], conf[j], "prediction") for n, j in enumerate(mine)]
            raw_cases.append({**base, "kind": "FP", "score": float(conf[mine[0]]), "focus_k": 1, "candidates": cands})
    raw_cases.sort(key=lambda c: (-c["score"], c["tomo_id"], c["kind"]))
    for index, c in enumerate(raw_cases, start=1):
        c["index"] = index
        c["case_id"] = f"{c['kind']}-{index:04d}"
        c["image"] = image_name(c["kind"], index, c["tomo_id"], (c["Z"], c["Y"], c["X"]), c["voxel_spacing"])
        c["candidates"] = json.dumps(c["candidates"])
    return pd.DataFrame(raw_cases, columns=CASE_COLUMNS)


def cases_csv_bytes(cases: pd.DataFrame) -> bytes:
    """The bytes of ``cases.csv`` for a cases table (columns in contract order)."""
    return cases.loc[:, CASE_COLUMNS].to_csv(index=False, lineterminator="\n").encode("utf-8")


def write_cases(cases: pd.DataFrame, path: str | Path) -> Path:
    write_bytes(path, cases_csv_bytes(cases))
    return Path(path)


def read_cases(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: no cases for this round (run the mining step first)")
    df = pd.read_csv(path, dtype={"case_id": str, "kind": str, "tomo_id": str, "image": str, "label_version": str,
                                  "prediction_run": str, "candidates": str, "labels": str},
                     keep_default_na=False)
    missing = [c for c in CASE_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}", file=path)
    return df


def case_candidates(case) -> list[dict]:
    """The candidates of a case row (parsed JSON)."""
    raw = case["candidates"] if isinstance(case, (dict, pd.Series)) else case.candidates
    return json.loads(raw) if isinstance(raw, str) else raw

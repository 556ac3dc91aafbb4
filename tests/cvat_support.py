"""Test helpers for the CVAT review area: a hand-made review round (cases.csv + JPEG images)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

CASE_COLUMNS = [
    "case_id", "kind", "index", "tomo_id", "image", "score", "label_version", "prediction_run",
    "Z", "Y", "X", "voxel_spacing", "radius_A", "focus_k", "candidates", "labels",
]


def make_cases(n_candidates: Sequence[int], *, kinds: Sequence[str] | None = None) -> pd.DataFrame:
    """Cases per the review contract, written by hand: case i shows ``n_candidates[i]`` predictions.

    FN cases also show k=0 (the labeled motor). Image names follow the contract pattern but are
    never parsed by the code under test.
    """
    rows = []
    counters = {"FN": 0, "FP": 0}
    for i, n in enumerate(n_candidates):
        kind = kinds[i] if kinds else ("FN" if i % 2 == 0 else "FP")
        counters[kind] += 1
        index = i + 1
        tomo = f"tomo_{i:03d}"
        shape, spacing = (64, 128, 128), 15.6
        cands = []
        if kind == "FN":
            cands.append({"k": 0, "z": 30.0, "y": 60.0, "x": 61.5, "conf": None, "source": "label"})
        for k in range(1, n + 1):
            cands.append({"k": k, "z": 10.0 + k, "y": 20.0 * k, "x": 5.0 * k, "conf": round(0.9 - 0.1 * k, 3),
                          "source": "prediction"})
        rows.append({
            "case_id": f"{kind}-{index:04d}", "kind": kind, "index": index, "tomo_id": tomo,
            "image": f"{kind}-{index}-{tomo}-{shape[0]}x{shape[1]}x{shape[2]}-spacing{spacing:g}.jpg",
            "score": round(1.0 - i / 100, 3), "label_version": "gt", "prediction_run": "run1",
            "Z": shape[0], "Y": shape[1], "X": shape[2], "voxel_spacing": spacing, "radius_A": 1000.0,
            "focus_k": 0 if kind == "FN" else 1, "candidates": json.dumps(cands),
            "labels": json.dumps([[30.0, 60.0, 61.5]] if kind == "FN" else []),
        })
    return pd.DataFrame(rows, columns=CASE_COLUMNS)


def make_round(review_root: Path, round_name: str, n_candidates: Sequence[int], *,
               kinds: Sequence[str] | None = None, seed: int = 0) -> Path:
    """Write ``review_root/<round>/cases.csv`` and one small JPEG per case; return the round dir."""
    rd = review_root / round_name
    (rd / "images").mkdir(parents=True, exist_ok=True)
    cases = make_cases(n_candidates, kinds=kinds)
    cases.to_csv(rd / "cases.csv", index=False)
    rng = np.random.default_rng(seed)
    for name in cases["image"]:
        arr = rng.integers(0, 255, size=(24, 40), dtype=np.uint8)
        Image.fromarray(arr).save(rd / "images" / name, quality=85)
    return rd

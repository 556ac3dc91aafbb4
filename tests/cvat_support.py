"""Test helpers for the review area: a hand-made review round (cases.csv + JPEG images) and a small multi-class
world (truth, noisy labels, predictions)."""

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
    write_images(rd / "images", list(cases["image"]), seed=seed)
    return rd


def write_images(images_dir: Path, names: Sequence[str], *, seed: int = 0) -> None:
    """A small noise JPEG per name (stand-ins for rendered case images)."""
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 255, size=(24, 40), dtype=np.uint8)).save(images_dir / name, quality=85)


def round_root(tmp_path: Path, labels, predictions: pd.DataFrame, run: str = "oof.csv"):
    """A data root holding ``labels`` as version ``gt`` and ``predictions`` as ``predictions/<run>``."""
    from byu.labels.store import LabelStore
    from byu.paths import DataRoot

    root = DataRoot(tmp_path / "data")
    LabelStore(root.labels).put("gt", labels)
    root.predictions.mkdir(parents=True)
    predictions.to_csv(root.predictions / run, index=False)
    return root, root.predictions / run


def prediction_row(tomo, z, y, x, conf, spacing=5.0, particle="motor") -> dict:
    return dict(tomo_id=tomo, particle=particle, z=z, y=y, x=x, conf=conf, models="run/fold0", voxel_spacing=spacing)


def multiclass_world():
    """Two 100x200x200 tomograms at 10 Å with ribosomes and apo-ferritin: the truth, noisy labels holding one of each
    error (wrong class, shift, false, miss) and predictions at 5 Å that see every true particle."""
    from byu.labels.model import LabelSet

    shape, s = (100, 200, 200), 10.0
    tomos = pd.DataFrame({"tomo_id": ["a", "b"], "Z": [shape[0]] * 2, "Y": [shape[1]] * 2, "X": [shape[2]] * 2,
                          "voxel_spacing": [s, s]})

    def picks(rows):
        return pd.DataFrame(rows, columns=["tomo_id", "particle", "z", "y", "x"])

    truth = LabelSet.build(tomos, picks([
        ("a", "ribosome", 50, 50, 50), ("a", "apo-ferritin", 50, 100, 100), ("a", "ribosome", 20, 150, 150),
        ("b", "apo-ferritin", 30, 30, 30), ("b", "ribosome", 60, 120, 40)]))
    noisy = LabelSet.build(tomos, picks([
        ("a", "ribosome", 50, 50, 50),
        ("a", "ribosome", 50, 100, 100),    # an apo-ferritin labeled as a ribosome
        ("a", "ribosome", 20, 150, 180),    # shifted 300 Å (> 2 x 150 Å)
        ("b", "apo-ferritin", 30, 30, 30),
        ("b", "apo-ferritin", 80, 80, 80)]),  # false: nothing there
        ["ribosome", "apo-ferritin"])       # the missed b ribosome
    preds = pd.DataFrame([
        prediction_row("a", 100, 100, 100, 0.9, particle="ribosome"),
        prediction_row("a", 100, 200, 200, 0.8, particle="apo-ferritin"),
        prediction_row("a", 40, 300, 300, 0.7, particle="ribosome"),
        prediction_row("b", 60, 60, 60, 0.9, particle="apo-ferritin"),
        prediction_row("b", 120, 240, 80, 0.85, particle="ribosome"),
    ])
    return truth, noisy, preds

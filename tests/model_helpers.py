"""Small tomograms with bright motor-like particles, written the way the portal flow writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from byu.labels.splits import write_split
from byu.labels.table import make_table
from byu.tomo.io import TomoMeta, write_tomogram


def render(shape: tuple[int, int, int], spacing: float, motors_a: list[np.ndarray], rng: np.random.Generator,
           *, radius: float = 220.0, noise: float = 0.25) -> np.ndarray:
    """uint8 volume: smooth noise plus bright balls of ``radius`` Å, each with a rod, at ``motors_a`` (Å)."""
    z, y, x = (np.arange(n, dtype=np.float32) * spacing for n in shape)
    vol = rng.normal(0.0, noise, size=shape).astype(np.float32)
    for p in motors_a:
        d2 = (z[:, None, None] - p[0]) ** 2 + (y[None, :, None] - p[1]) ** 2 + (x[None, None, :] - p[2]) ** 2
        vol += 1.0 / (1.0 + np.exp((np.sqrt(d2) - radius) / 30.0))
        rod = ((y[None, :, None] - p[1]) ** 2 + (x[None, None, :] - p[2]) ** 2 < 50.0**2) & \
              (z[:, None, None] > p[0]) & (z[:, None, None] < p[0] + 2.2 * radius)
        vol += 0.8 * rod
    lo, hi = np.percentile(vol, [0.5, 99.5])
    return np.clip((vol - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)


def make_root(root: Path, *, n: int = 4, seed: int = 0, stored_spacing: float = 16.0,
              original_spacing: float = 10.0, shape: tuple[int, int, int] = (48, 96, 96),
              motors_per_tomo: list[int] | None = None) -> dict:
    """Write ``n`` tomograms under ``root/tomograms`` and return ``{"labels": table, "truth_a": {id: (k,3) Å}}``.

    Labels are in the ORIGINAL frame (``original_spacing``), the stacks at ``stored_spacing``.
    """
    rng = np.random.default_rng(seed)
    counts = motors_per_tomo or [1] * n
    rows, truth = [], {}
    extent = np.asarray(shape, dtype=float) * stored_spacing
    for i in range(n):
        tid = f"t{i:02d}"
        motors = []
        while len(motors) < counts[i]:
            p = rng.uniform(0.25, 0.75, 3) * extent
            if all(np.linalg.norm(p - q) > 700 for q in motors):
                motors.append(p)
        vol = render(shape, stored_spacing, motors, rng)
        orig_shape = tuple(int(round(s * stored_spacing / original_spacing)) for s in shape)
        meta = TomoMeta(tomo_id=tid, shape=shape, voxel_spacing=stored_spacing, original_shape=orig_shape,
                        original_spacing=original_spacing, source={"test": i})
        write_tomogram(root / "tomograms" / tid, vol, meta)
        truth[tid] = np.asarray(motors).reshape(-1, 3)
        rows.append((tid, orig_shape, original_spacing, [list(p / original_spacing) for p in motors]))
    return {"labels": make_table(rows), "truth_a": truth}


def two_fold_split(ids: list[str], path: Path) -> Path:
    half = len(ids) // 2
    folds = [{"train": sorted(ids[half:]), "val": sorted(ids[:half])},
             {"train": sorted(ids[:half]), "val": sorted(ids[half:])}]
    return write_split({"splitter": "manual", "num_folds": 2, "random_state": 0, "folds": folds}, path)

"""Helpers for the ops tests (plots, notebook): a small data root built with the real store and split APIs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from byu.labels.combine import combine_labels
from byu.labels.model import LabelSet
from byu.labels.splits import fresh_split, write_split
from byu.labels.store import LabelStore
from byu.labels.table import make_table
from byu.paths import DataRoot

GT_ROWS = [
    ("tomo_00", (100, 200, 200), 16.0, [[50.0, 100.0, 100.0]]),
    ("tomo_01", (100, 200, 200), 16.0, []),
    ("tomo_02", (100, 200, 200), 16.0, [[20.0, 30.0, 40.0]]),
    ("tomo_03", (100, 200, 200), 16.0, [[60.0, 60.0, 60.0], [10.0, 150.0, 150.0]]),
    ("tomo_04", (80, 160, 160), 13.1, []),
    ("tomo_05", (80, 160, 160), 13.1, [[40.0, 80.0, 80.0]]),
    ("tomo_06", (80, 160, 160), 13.1, []),
    ("tomo_07", (80, 160, 160), 13.1, [[30.0, 50.0, 120.0]]),
    ("tomo_08", (80, 160, 160), 13.1, [[35.0, 70.0, 90.0]]),
    ("tomo_09", (100, 200, 200), 16.0, []),
    ("tomo_10", (100, 200, 200), 16.0, [[45.0, 110.0, 60.0]]),
    ("tomo_11", (100, 200, 200), 16.0, []),
]


def build_versions_root(root: Path, *, images: int = 2) -> DataRoot:
    """``gt`` -> ``gt_v2`` (one motor added, one removed, one moved) plus ``external_gt`` and ``all_gt``
    (= gt_v2 + external_gt), a 3-fold split of gt in the flows' style ``cv/v1/skf3_rd7.json``, a 4-fold split of
    gt_v2 in DESIGN.md's style ``cv/gt_v2/skf4_rd42.json``, and ``images`` small case JPEGs
    in ``review/round1/images``."""
    dr = DataRoot(Path(root))
    store = LabelStore(dr.labels)
    gt = make_table(GT_ROWS)
    store.put("gt", gt, producer="test: as received")
    v2_rows = [list(r) for r in GT_ROWS]
    v2_rows[1][3] = [[40.0, 90.0, 90.0]]                       # FN found: add
    v2_rows[2][3] = []                                          # FP removed
    v2_rows[5][3] = [[40.0, 80.0, 80.0], [10.0, 20.0, 20.0]]   # second motor added
    v2_rows[7][3] = [[32.0, 52.0, 118.0]]                       # small move (same motor, within 1000 Å)
    gt_v2 = make_table([tuple(r) for r in v2_rows])
    store.put("gt_v2", gt_v2, parents=["gt"], producer="test: round1")
    ext = make_table([(f"ext_{i:02d}", (120, 256, 256), 10.0, [[60.0, 100.0 + i, 100.0]] if i % 3 else [])
                      for i in range(6)])
    store.put("external_gt", ext, producer="test: portal")
    store.put("all_gt", combine_labels([("gt_v2", LabelSet.from_canonical(gt_v2)),
                                        ("external_gt", LabelSet.from_canonical(ext))]),
              parents=["gt_v2", "external_gt"], producer="test: combine")
    with warnings.catch_warnings():  # sklearn: "least populated class has only 2 members" (expected here)
        warnings.simplefilter("ignore", UserWarning)
        write_split(fresh_split(gt, folds=3, seed=7), dr.cv / "v1" / "skf3_rd7.json")
        write_split(fresh_split(gt_v2, folds=4, seed=42), dr.split_path("gt_v2", 4, 42))
    img_dir = dr.review_round("round1") / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(images):
        kind = "FN" if i % 2 == 0 else "FP"
        grey = rng.normal(128, 30, size=(96, 320)).clip(0, 255).astype(np.uint8)
        im = Image.fromarray(grey).convert("RGB")
        ImageDraw.Draw(im).ellipse((140, 28, 180, 68), outline=(255, 215, 0), width=3)
        im.save(img_dir / f"{kind}-{i}-tomo_0{i}-100x200x200-spacing16.0.jpg", quality=90)
    return dr


def python_kernel_manager(kernels_dir: Path):
    """A jupyter ``KernelManager`` for this interpreter (a kernelspec written under ``kernels_dir``), so notebook
    runs use the venv's Python whatever kernelspecs the user or system has."""
    import json
    import sys

    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = Path(kernels_dir) / "byu-python"
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "byu (this interpreter)", "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(kernels_dir)], ensure_native_kernel=False)
    return KernelManager(kernel_name="byu-python", kernel_spec_manager=ksm)


def execute_notebook(path: Path, *, kernels_dir: Path, parameters: dict | None = None, timeout: int = 120):
    """Execute a notebook with nbclient in its own folder; ``parameters`` replace assignments in the cell tagged
    ``parameters`` (papermill style). Returns the executed notebook (raises ``CellExecutionError`` on error)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if parameters:
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        cell.source += "\n# injected\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    client = NotebookClient(nb, km=python_kernel_manager(kernels_dir), timeout=timeout,
                            resources={"metadata": {"path": str(Path(path).parent)}})
    client.execute()
    return nb

"""`byu demo` end to end on a small cohort (micro config), and the notebook executed on the demo's output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from byu.labels.store import LabelStore
from byu.paths import DataRoot
from tests.ops_helpers import execute_notebook

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "label_versions.ipynb"


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_demo_layout_report_and_notebook(tmp_path: Path, monkeypatch):
    from flows.demo import run_demo

    data = tmp_path / "demo"
    report = run_demo(data, n=12, seed=1, config="micro", train_overrides={"epochs": 1, "steps_per_epoch": 3},
                      log=lambda *_: None)
    root = DataRoot(data)
    store = LabelStore(root.labels)
    # the layout the issue fixes
    assert (data / "synth" / "truth.csv").exists() and (data / "synth" / "planted_errors.csv").exists()
    assert {"gt", "gt_v2"} <= set(store.names()) and store.manifest("gt_v2").parents == ["gt"]
    assert (root.cv / "v2" / "skf4_rd42.json").exists() and (root.cv / "v2" / "skf5_rd42.json").exists()
    on_disk = json.loads((data / "demo_report.json").read_text())
    assert on_disk == report
    for key in ("planted_errors", "errors_fixed", "cases_reviewed", "label_changes", "changes_without_decision",
                "wall_time_s"):
        assert key in report
    assert report["planted_errors"] >= 2
    assert report["changes_without_decision"] == 0
    assert report["label_changes"] == sum(
        v for k, v in report["label_changes_by_action"].items() if k in ("add", "remove", "move"))
    assert (data / "demo_label_changes.png").read_bytes()[:4] == b"\x89PNG"
    # a second run reuses everything and gives the same labels
    before = store.path("gt_v2").read_bytes()
    run_demo(data, n=12, seed=1, config="micro", train_overrides={"epochs": 1, "steps_per_epoch": 3},
             log=lambda *_: None)
    assert store.path("gt_v2").read_bytes() == before

    monkeypatch.setenv("BYU_DATA", str(data))
    nb = execute_notebook(NOTEBOOK, kernels_dir=tmp_path / "kernels",
                          parameters={"figures_dir": str(tmp_path / "figures")}, timeout=180)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert (tmp_path / "figures" / "versions.png").exists()

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
                "wall_time_s", "review_images", "review_items", "images_per_label_change", "annotator_minutes"):
        assert key in report
    # the review load is counted from the round's image files
    assert report["review_images"] == report["review_image_files"] == report["cases"]
    assert report["review_load"]["total"]["images"] == report["review_images"]
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

    # benchmarks/recovery_misses.py reads the same root and sees each label as mining did
    check_recovery_misses(data, report, tmp_path / "misses.png")

    # recovery.py --replay reruns only the round on a copy: the same settings give the same round
    from benchmarks.recovery import replay_cohort

    again = replay_cohort(data, tmp_path / "replay")
    for key in ("errors_fixed", "errors_not_fixed", "cases", "cases_reviewed", "label_changes",
                "changes_without_decision", "review_load"):
        assert again[key] == report[key], key
    replayed = tmp_path / "replay" / data.name
    assert (replayed / "review" / "round1" / "cases.csv").read_bytes() == \
        (data / "review" / "round1" / "cases.csv").read_bytes()
    assert json.loads((replayed / "demo_report.json").read_text())["seed"] == 1
    assert not (data / "tomograms").is_symlink() and (replayed / "tomograms").is_symlink()

    # benchmarks/mining.py mines the same round again in a linked root, timed, and leaves the kept root as it was
    from benchmarks.mining import main as mining_main

    kept = sorted(p.relative_to(data) for p in data.rglob("*"))
    assert mining_main([str(data), "--json", str(tmp_path / "mining.json")]) == 0
    timed = json.loads((tmp_path / "mining.json").read_text())[0]
    assert (timed["cases"], timed["images"]) == (report["cases"], report["review_images"])
    assert timed["mine_with_verification_s"] >= timed["verification_s"] >= 0 and timed["render_s"] > 0
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == kept


def check_recovery_misses(data: Path, report: dict, png: Path) -> None:
    import subprocess
    import sys

    from benchmarks.recovery_misses import Cohort
    from byu.review.cases import read_cases

    cohort = Cohort(data)
    thr = cohort.confirm["motor"]
    sup = cohort.supports
    # the labels mining reviews (alone with their candidates, or in galleries) are exactly those with no
    # prediction (support 0), a weaker one than the threshold, or the verifier believes least; known-answer
    # items (labels believed most, shown to measure the reviewer) are not among them
    cases = read_cases(data / "review" / "round1" / "cases.csv")
    reviewed = {(c.frame_of(k).tomo_id, round(k.z, 2), round(k.y, 2), round(k.x, 2)) for c in cases
                if c.kind in ("FN", "GL") for k in c.candidates if k.source == "label" and k.known is None}
    bar = cohort.verify_bar.get("motor", float("-inf"))  # none: too few labels, or a verifier that cannot separate
    verified = {r.Index: cohort.verified("motor", r.tomo_id, (r.z, r.y, r.x)) for r in sup.itertuples()}
    assert reviewed == {(r.tomo_id, round(r.z, 2), round(r.y, 2), round(r.x, 2)) for r in sup.itertuples()
                        if r.support < thr or (verified[r.Index] is not None and verified[r.Index] < bar)}
    assert len(sup) == sum(t in cohort.predicted for t in cohort.labels.picks["tomo_id"])
    misses = cohort.misses()
    assert [(m["tomo_id"], m["kind"]) for m in misses] == [(e["tomo_id"], e["kind"])
                                                          for e in report["errors_not_fixed"]]
    for m in misses:  # a false label still there was believed at least as much as the round's threshold
        assert m["kind"] != "false" or m["support"] is None or m["support"] >= thr
    out = subprocess.run([sys.executable, "benchmarks/recovery_misses.py", str(data), "--figure", str(png)],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=True).stdout
    assert "motor: true" in out and "AUC" in out
    for e in report["errors_not_fixed"]:
        assert f"not fixed: {e['tomo_id']} motor {e['kind']}" in out
    if any(m["kind"] == "false" and m["support"] is not None for m in misses):
        assert png.read_bytes()[:4] == b"\x89PNG"

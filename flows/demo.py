"""The demo: synthetic cohort with planted errors → train (tiny) → round1 under Prefect → review → gt_v2.

``byu demo --data-dir DIR [--reviewer scripted|cvat]`` (and ``make demo``) runs it offline on a CPU. The scripted
reviewer answers from the cohort's truth; with ``--reviewer cvat`` (``BYU_CVAT_URL`` set) the cases go to a real
CVAT and the flow waits for people to tag them. Writes ``DIR/demo_report.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from byu.atomic import write_json
from byu.labels.diff import motor_changes
from byu.labels.formats import read_labels
from byu.labels.splits import fresh_split, write_split
from byu.labels.store import LabelStore
from byu.paths import DataRoot
from byu.plots import plot_label_diff
from byu.report import changes_without_decision, planted_errors_fixed, safe_ratio
from flows.common import ReviewSettings
from flows.round1 import Round1Params, round1
from flows.train import TrainParams, train

DEMO_MODEL_RUN = "round1"


def run_demo(data_dir: str | Path, *, reviewer: str = "scripted", n: int = 24, seed: int = 0, config: str = "tiny",
             train_overrides: dict | None = None, wait: str = "poll", log=print) -> dict:
    """Run the whole loop on a synthetic cohort in ``data_dir``; return (and write) the report."""
    import pandas as pd

    from byu.synth import make_cohort

    t0 = time.monotonic()
    root = DataRoot(Path(data_dir).resolve())
    store = LabelStore(root.labels)
    truth_path = root.root / "synth" / "truth.csv"
    if not truth_path.exists():
        log(f"[1/5] synthetic cohort: {n} tomograms (seed {seed}) → {root.root}")
        make_cohort(root.root, n=n, seed=seed)
    else:
        log(f"[1/5] synthetic cohort already in {root.root}")
    noisy = read_labels(root.root / "synth" / "labels_noisy.csv")
    store.put("gt", noisy, producer="byu demo: synthetic cohort with planted errors",
              extra={"cohort": {"n": n, "seed": seed}})
    split_path = root.cv / "v1" / "skf4_rd42.json"
    if not split_path.exists():
        write_split(fresh_split(noisy, folds=4, seed=42), split_path)

    log(f"[2/5] training {config} fold models (Prefect flow 'train')")
    train(TrainParams(data_dir=str(root.root), labels="gt", split=str(split_path), folds="all", config=config,
                      run_name=DEMO_MODEL_RUN, seed=seed, overrides=train_overrides or {}))

    log(f"[3/5] round1 under Prefect: OOF predictions at 0.05 → cases → {reviewer} review → gt_v2")
    review = ReviewSettings(reviewer="scripted", truth=str(truth_path)) if reviewer == "scripted" \
        else ReviewSettings(reviewer="cvat", wait=wait, poll_interval_s=30)
    summary = round1(Round1Params(data_dir=str(root.root), model_dirs=[str(root.models / DEMO_MODEL_RUN)],
                                  review=review))

    log("[4/5] scoring the refined labels against the synthetic truth")
    errors = pd.read_csv(root.root / "synth" / "planted_errors.csv")
    fixed = planted_errors_fixed(errors, store.get("gt_v2"))
    changes = store.changes("gt_v2")
    label_changes = len(motor_changes(changes))
    cases = pd.read_csv(root.review / "round1" / "cases.csv")
    decisions = pd.read_csv(root.review / "round1" / "decisions.csv")
    report = {
        "planted_errors": int(len(errors)),
        "planted_errors_by_kind": errors["kind"].value_counts().to_dict(),
        "errors_fixed": int(fixed["fixed"].sum()),
        "errors_fixed_fraction": safe_ratio(fixed["fixed"].sum(), len(errors)),
        "errors_not_fixed": fixed.loc[~fixed["fixed"], ["tomo_id", "kind"]].to_dict("records"),
        "cases": int(len(cases)),
        "cases_reviewed": int(len(decisions)),
        "label_changes": label_changes,
        "label_changes_by_action": changes["action"].value_counts().to_dict(),
        "cases_reviewed_per_label_change": safe_ratio(len(decisions), label_changes),
        "changes_without_decision": changes_without_decision(changes),
        "versions": store.names(),
        "splits": summary.get("splits", []),
        "predictions": summary.get("predictions"),
        "review_images": str(root.review / "round1" / "images"),
        "wall_time_s": round(time.monotonic() - t0, 1),
    }
    log("[5/5] pictures and report")
    plot_label_diff(changes, out=root.root / "demo_label_changes.png")
    write_json(root.root / "demo_report.json", report)
    log(json.dumps(report, indent=2))
    return report

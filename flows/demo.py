"""The demo: synthetic cohort with planted errors → train → round1 under Prefect → review → gt_v2.

``byu demo --data-dir DIR [--classes motor,ribosome,apo-ferritin] [--reviewer scripted|cvat]`` (and ``make demo``)
runs it offline on a CPU. The scripted reviewer answers from the cohort's truth; with ``--reviewer cvat``
(``BYU_CVAT_URL`` set) the cases go to a real CVAT and the flow waits for people to tag them. Writes
``DIR/demo_report.json`` and ``DIR/demo_label_changes.png``.

A motor cohort is the BYU setting: tiny model at 32 Å, round 1 reviews tomograms with at most one labeled motor.
Any other set of classes gets the multi-class cohort, the ``small`` model at 16 Å (one heatmap channel per class)
and a round over every tomogram.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from byu.atomic import write_json
from byu.labels.diff import label_changes
from byu.labels.formats import read_version_file
from byu.labels.splits import fresh_split, write_split_new
from byu.labels.store import LabelStore
from byu.paths import DataRoot
from byu.plots import plot_label_diff
from byu.report import changes_without_decision, planted_errors_fixed, safe_ratio
from byu.review.cases import read_cases
from byu.review.decisions import read_decisions
from byu.review.paths import round_paths
from flows.common import ReviewSettings
from flows.round1 import Round1Params, round1
from flows.train import TrainParams, train

DEMO_MODEL_RUN = "round1"


def make_demo_cohort(root: DataRoot, *, classes: Sequence[str], n: int, seed: int, log=print) -> dict[str, Path]:
    """The synthetic cohort (once): paths of its truth, noisy labels (+ tomograms table) and planted errors."""
    synth = root.root / "synth"
    motor_only = list(classes) == ["motor"]
    files = {"truth": synth / ("truth.csv" if motor_only else "truth_picks.csv"),
             "noisy": synth / ("labels_noisy.csv" if motor_only else "labels_noisy_picks.csv"),
             "tomograms": synth / "tomograms.csv", "errors": synth / "planted_errors.csv"}
    if files["truth"].exists():
        log(f"[1/5] synthetic cohort already in {root.root}")
        return files
    log(f"[1/5] synthetic cohort: {n} tomograms, classes {', '.join(classes)} (seed {seed}) → {root.root}")
    if motor_only:
        from byu.synth import make_cohort

        make_cohort(root.root, n=n, seed=seed)
    else:
        from byu.labels.classes import ClassRegistry
        from byu.synth_multi import make_multiclass_cohort

        make_multiclass_cohort(root.root, classes=ClassRegistry().resolve(list(classes)), n=n, seed=seed)
    return files


def _labels(files: dict[str, Path], key: str):
    """A cohort table as labels (the picks form takes its tomograms from ``synth/tomograms.csv``)."""
    return read_version_file(files[key], tomograms=files["tomograms"] if files["tomograms"].exists() else None)


def scripted_review(store: LabelStore, files: dict[str, Path], classes: Sequence[str], **settings) -> ReviewSettings:
    """Review settings for the scripted reviewer answering from the cohort's truth (``settings`` as given). A
    multi-class truth is read with its tomograms, so it is stored as the version ``synth_truth`` first."""
    if list(classes) == ["motor"]:
        return ReviewSettings(reviewer="scripted", truth=str(files["truth"]), **settings)
    store.put("synth_truth", _labels(files, "truth"), producer="byu demo: the synthetic truth (for the scripted "
              "reviewer)")
    return ReviewSettings(reviewer="scripted", truth="synth_truth", **settings)


def recovery_report(root: DataRoot, files: dict[str, Path], *, version: str = "gt_v2",
                    round_name: str = "round1") -> dict:
    """Planted errors fixed (overall, by kind, by class), review load, and changes without a decision."""
    import pandas as pd

    store = LabelStore(root.labels)
    errors = pd.read_csv(files["errors"])
    if "particle" not in errors.columns:
        errors["particle"] = "motor"
    fixed = planted_errors_fixed(errors, store.get(version))
    changes = store.changes(version)
    n_changes = len(label_changes(changes))
    paths = round_paths(root, round_name)
    cases = read_cases(paths.cases)
    decisions = read_decisions(paths.decisions)
    by_class = {c: {"planted": int(len(g)), "fixed": int(g["fixed"].sum()),
                    "fraction": safe_ratio(g["fixed"].sum(), len(g))} for c, g in fixed.groupby("particle")}
    return {
        "planted_errors": int(len(errors)),
        "planted_errors_by_kind": errors["kind"].value_counts().to_dict(),
        "errors_fixed": int(fixed["fixed"].sum()),
        "errors_fixed_fraction": safe_ratio(fixed["fixed"].sum(), len(errors)),
        "errors_fixed_by_kind": fixed.groupby("kind")["fixed"].sum().astype(int).to_dict(),
        "errors_by_class": by_class,
        "errors_not_fixed": fixed.loc[~fixed["fixed"], ["tomo_id", "particle", "kind"]].to_dict("records"),
        "cases": int(len(cases)),
        "cases_reviewed": int(len(decisions)),
        "label_changes": n_changes,
        "label_changes_by_action": changes["action"].value_counts().to_dict(),
        "cases_reviewed_per_label_change": safe_ratio(len(decisions), n_changes),
        "changes_without_decision": changes_without_decision(changes),
    }


def run_demo(data_dir: str | Path, *, reviewer: str = "scripted", n: int = 24, seed: int = 0,
             classes: Sequence[str] = ("motor",), config: str | None = None, train_overrides: dict | None = None,
             wait: str = "poll", confirm_threshold: float | str | None = "auto", log=print) -> dict:
    """Run the whole loop on a synthetic cohort in ``data_dir``; return (and write) the report."""
    t0 = time.monotonic()
    classes = list(dict.fromkeys(classes))
    motor_only = classes == ["motor"]
    config = config or ("tiny" if motor_only else "small")
    root = DataRoot(Path(data_dir).resolve())
    store = LabelStore(root.labels)
    files = make_demo_cohort(root, classes=classes, n=n, seed=seed, log=log)
    noisy = _labels(files, "noisy")
    store.put("gt", noisy, producer="byu demo: synthetic cohort with planted errors",
              extra={"cohort": {"n": n, "seed": seed, "classes": classes}})
    split_path = root.cv / "v1" / "skf4_rd42.json"
    write_split_new(fresh_split(noisy, folds=4, seed=42), split_path)

    log(f"[2/5] training {config} fold models (Prefect flow 'train')")
    train(TrainParams(data_dir=str(root.root), labels="gt", split=str(split_path), folds="all", config=config,
                      run_name=DEMO_MODEL_RUN, seed=seed, overrides=train_overrides or {}))

    log(f"[3/5] round1 under Prefect: OOF predictions at 0.05 → cases → {reviewer} review → gt_v2")
    review = scripted_review(store, files, classes, confirm_threshold=confirm_threshold) \
        if reviewer == "scripted" else ReviewSettings(reviewer="cvat", wait=wait, poll_interval_s=30,
                                                      confirm_threshold=confirm_threshold)
    summary = round1(Round1Params(data_dir=str(root.root), model_dirs=[DEMO_MODEL_RUN], review=review,
                                  max_labeled_motors=1 if motor_only else None))

    log("[4/5] scoring the refined labels against the synthetic truth")
    report = {**recovery_report(root, files),
              "classes": classes, "config": config, "versions": store.names(),
              "splits": summary.get("splits", []), "predictions": summary.get("predictions"),
              "review_images": str(round_paths(root, "round1").images),
              "wall_time_s": round(time.monotonic() - t0, 1)}
    log("[5/5] pictures and report")
    plot_label_diff(store.changes("gt_v2"), out=root.root / "demo_label_changes.png")
    write_json(root.root / "demo_report.json", report)
    log(json.dumps(report, indent=2))
    return report

"""The demo: synthetic cohort with planted errors → train → round1 under Prefect → review → gt_v2.

``byu demo --data-dir DIR [--classes motor,ribosome,apo-ferritin] [--reviewer scripted|cvat]`` (and ``make demo``)
runs it offline on a CPU. The scripted reviewer answers from the cohort's truth; with ``--reviewer cvat``
(``BYU_CVAT_URL`` set) the cases go to a real CVAT and the flow waits for people to tag them. Writes
``DIR/demo_report.json`` and ``DIR/demo_label_changes.png``.

A motor cohort is the BYU setting: tiny model at 32 Å, round 1 reviews tomograms with at most one labeled motor.
Any other set of classes gets the multi-class cohort, the ``small`` model at 16 Å (one heatmap channel per class)
and a round over every tomogram. ``world="crowded"`` (with ``species``, ``snr``, ``crowding``) gets the crowded
world of :mod:`byu.synth` (classes ribosome, apo-ferritin, thyroglobulin unless others are given), read like a
multi-class cohort (picks form), with the ``small`` model and a round over every tomogram; the cohort's arguments
are recorded in ``gt``'s manifest (``extra.cohort``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from byu.atomic import write_json
from byu.errors import InputError
from byu.labels.diff import label_changes
from byu.labels.formats import read_version_file
from byu.labels.splits import fresh_split, write_split_new
from byu.labels.store import LabelStore
from byu.paths import DataRoot
from byu.plots import plot_label_diff
from byu.report import changes_without_decision, planted_errors_fixed, safe_ratio
from byu.review.cases import read_cases
from byu.review.decisions import read_decisions
from byu.review.load import review_load
from byu.review.paths import round_paths
from byu.review.settings import MiningSettings, WaitSettings
from flows.base import ReviewSettings
from flows.round1 import Round1Params, round1
from flows.train import TrainParams, train

DEMO_MODEL_RUN = "round1"
DEMO_FOLDS = 4  # the cohort's split (cv/v1): the fold models round 1 predicts out of fold with
DEMO_ROUND1_FOLDS = (4, 5)  # round 1's fresh splits of gt_v2 (cv/v2)


class DemoFolds(NamedTuple):
    """The demo's fold counts for a cohort size, and what was reduced (``None``: the defaults)."""

    first: int
    round1: list[int]
    note: str | None


def _fold_cap(n: int, classes: Sequence[str], world: str) -> int:
    """The most folds every split the demo makes of a cohort of ``n`` tomograms can be stratified into.

    Motor cohort: a split needs a motor-count stratum of at least K tomograms. The cohort has a fixed share of
    tomograms with at most one motor (:func:`byu.synth.placement.motor_counts`); a planted error (at most one per
    tomogram) and the review keep such a tomogram at 0 or 1 labeled motors, so in the noisy labels and in gt_v2 one
    of those two strata holds at least half of them. Other cohorts: a class must be in K tomograms; non-motor
    classes are in every tomogram, a motor in about two of three (half the cohort leaves a margin)."""
    from byu.synth import is_motor_cohort

    if is_motor_cohort(list(classes), world):
        import numpy as np

        from byu.synth.placement import motor_counts

        return (int((motor_counts(n, np.random.default_rng(0)) <= 1).sum()) + 1) // 2
    return n // 2 if "motor" in classes else n


def demo_config(classes: Sequence[str] = ("motor",), world: str = "default") -> str:
    """The model config a demo trains when none is given: ``tiny`` for motors, ``crowded`` in the crowded world
    (whose default classes stand in for the default ``("motor",)``), ``small`` for other classes."""
    from byu.synth import is_motor_cohort, resolve_classes

    names = [c.name for c in resolve_classes(list(classes), world)]
    if is_motor_cohort(names, world):
        return "tiny"
    return "crowded" if world == "crowded" else "small"


def demo_folds(n: int, *, classes: Sequence[str] = ("motor",), world: str = "default") -> DemoFolds:
    """The demo's fold counts for ``n`` tomograms (InputError when even 2 folds cannot be stratified); checked
    before any work, so a cohort too small is refused at once, not after training."""
    cap = _fold_cap(n, classes, world) if n >= 1 else 0
    if cap < 2:
        least = next(m for m in range(max(n, 1), 10_000) if _fold_cap(m, classes, world) >= 2)
        raise InputError(f"--n {n}: the demo needs at least {least} tomograms for this cohort (its CV splits are "
                         "stratified into at least 2 folds)", field="n")
    first, round1 = min(DEMO_FOLDS, cap), sorted({min(k, cap) for k in DEMO_ROUND1_FOLDS})
    if (first, tuple(round1)) == (DEMO_FOLDS, DEMO_ROUND1_FOLDS):
        return DemoFolds(first, round1, None)
    return DemoFolds(first, round1, f"{n} tomograms: the cohort's split has {first} folds (not {DEMO_FOLDS}) and "
                     f"round 1's splits {' and '.join(map(str, round1))} (not "
                     f"{' and '.join(map(str, DEMO_ROUND1_FOLDS))}): too few tomograms per motor count or class "
                     "for more")


def make_demo_cohort(root: DataRoot, *, classes: Sequence[str], n: int, seed: int, world: str = "default",
                     species: int | None = None, snr: float | None = None, crowding: float | None = None,
                     log=print) -> dict[str, Path]:
    """The synthetic cohort (once): paths of its truth, noisy labels (+ tomograms table) and planted errors. The
    truth is the canonical ``truth.csv`` for the motor cohort (what its scripted reviewer reads), else the picks."""
    from byu.labels.classes import ClassRegistry
    from byu.synth import cohort_paths, make_cohort

    paths = cohort_paths(root.root, classes=classes, world=world)
    files = {"truth": paths.truth_canonical or paths.truth, "noisy": paths.noisy, "tomograms": paths.tomograms,
             "errors": paths.errors}
    if files["truth"].exists():
        log(f"[1/5] synthetic cohort already in {root.root}")
        return files
    log(f"[1/5] synthetic cohort: {n} tomograms, {world} world, classes {', '.join(classes)} (seed {seed}) → "
        f"{root.root}")
    make_cohort(root.root, classes=ClassRegistry().resolve(list(classes)), n=n, seed=seed, world=world,
                species=species, snr=snr, crowding=crowding)
    return files


def _labels(files: dict[str, Path], key: str):
    """A cohort table as labels (the picks form takes its tomograms from ``synth/tomograms.csv``)."""
    return read_version_file(files[key], tomograms=files["tomograms"] if files["tomograms"].exists() else None)


def scripted_review(store: LabelStore, files: dict[str, Path], classes: Sequence[str],
                    **settings: Any) -> ReviewSettings:
    """Review settings for the scripted reviewer answering from the cohort's truth (``settings``: other fields of
    :class:`ReviewSettings`). A multi-class truth is read with its tomograms, so it is stored as the version
    ``synth_truth`` first."""
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
                    "fraction": safe_ratio(g["fixed"].sum(), len(g)),
                    "planted_by_kind": g["kind"].value_counts().to_dict(),
                    "fixed_by_kind": g.groupby("kind")["fixed"].sum().astype(int).to_dict()}
                for c, g in fixed.groupby("particle")}
    load = review_load(cases, changes)
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
        "review_images": load["total"]["images"],
        "review_image_files": len(list(paths.images.glob("*.jpg"))),
        "review_items": load["total"]["items"],
        "images_per_label_change": load["total"]["images_per_change"],
        "annotator_minutes": load["total"]["minutes"],
        "review_load": load,
        "changes_without_decision": changes_without_decision(changes),
        **review_trust(root, files, cases, store.get(version), round_name=round_name),
    }


def review_trust(root: DataRoot, files: dict[str, Path], cases: list, refined, *, round_name: str) -> dict:
    """What the round's trust measures said and what the synthetic truth says: each reviewer's accuracy estimated
    from the known-answer items beside its true accuracy (its item answers against an error-free reviewer's), how
    many of the first reviewer's wrong answers were on images sent to a second review, and the errors left per class
    (estimated, interval, true)."""
    import json

    from byu.report import errors_against_truth
    from byu.review.quality import item_answers
    from byu.review.round import ReviewRound
    from byu.review.scripted import scripted_decisions
    from byu.review.tags import split_tags

    paths = round_paths(root, round_name)
    if not paths.quality.exists():
        return {}
    quality = json.loads(paths.quality.read_text())
    rnd = ReviewRound(root, round_name)
    truth = _labels(files, "truth")
    gt = LabelStore(root.labels).get("gt")
    perfect = {d["case_id"]: split_tags(d["tags"]) for d in
               scripted_decisions(cases, truth, labeled=gt).to_dict("records")}
    by_id = {c.case_id: c for c in cases}
    first, second = rnd.reviews()
    sent = set(quality.get("second_review", {}))
    true_acc: dict[str, list[int]] = {}
    wrong_first, wrong_sent = 0, 0
    for table, is_first in ((first, True), (second, False), (rnd.resolution(), False)):
        if table is None:
            continue
        for d in table.to_dict("records"):
            case = by_id.get(str(d["case_id"]))
            if case is None:
                continue
            said = item_answers(case, split_tags(d["tags"]))
            right = item_answers(case, perfect[case.case_id])
            if said is None or right is None:
                continue
            tally = true_acc.setdefault(str(d["reviewer"]), [0, 0])
            for k, (real, _) in said.items():
                tally[0] += 1
                ok = real == right[k][0]
                tally[1] += int(ok)
                if is_first and not ok:
                    wrong_first += 1
                    wrong_sent += int(case.image in sent)
    predicted = json.loads(Path(json.loads(paths.mining.read_text())["predictions"]).with_suffix(".json")
                           .read_text()).get("tomo_ids")
    true_left = errors_against_truth(refined, truth, predicted)
    estimated = (quality.get("errors_left") or {}).get("classes", {})
    return {
        "reviewer_accuracy": {who: a["accuracy"] for who, a in quality.get("accuracy", {}).items()},
        "reviewer_accuracy_detail": quality.get("accuracy", {}),
        "reviewer_accuracy_true": {who: safe_ratio(ok, n) for who, (n, ok) in true_acc.items()},
        "first_review_wrong_answers": wrong_first,
        "first_review_wrong_answers_sent_to_second_review": wrong_sent,
        "second_review_images": len(sent),
        "agreement": quality.get("agreement", {}),
        "held_images": len(quality.get("held", [])),
        "errors_left": {c: {**v, "true": true_left.get(c)} for c, v in estimated.items()},
    }


def run_demo(data_dir: str | Path, *, reviewer: str = "scripted", n: int = 24, seed: int = 0,
             classes: Sequence[str] = ("motor",), config: str | None = None, train_overrides: dict | None = None,
             wait: Literal["auto", "poll", "pause", "suspend"] = "poll", mining: MiningSettings | None = None,
             world: str = "default", species: int | None = None, snr: float | None = None,
             crowding: float | None = None, reviewer_errors: float = 0.0, log=print) -> dict:
    """Run the whole loop on a synthetic cohort in ``data_dir``; return (and write) the report. ``world``,
    ``species``, ``snr`` and ``crowding`` choose the cohort (:func:`byu.synth.make_cohort`)."""
    from byu.synth import is_motor_cohort, resolve_classes

    t0 = time.monotonic()
    classes = list(dict.fromkeys(classes))
    if world != "default":  # the crowded world's default classes stand in for the default ("motor",)
        classes = [c.name for c in resolve_classes(classes, world)]
    motor_only = is_motor_cohort(classes, world)
    folds = demo_folds(n, classes=classes, world=world)  # before any work: a cohort too small is refused here
    if folds.note:
        log(folds.note)
    config = config or demo_config(classes, world)
    root = DataRoot(Path(data_dir).resolve())
    store = LabelStore(root.labels)
    files = make_demo_cohort(root, classes=classes, n=n, seed=seed, world=world, species=species, snr=snr,
                             crowding=crowding, log=log)
    noisy = _labels(files, "noisy")
    store.put("gt", noisy, producer="byu demo: synthetic cohort with planted errors",
              extra={"cohort": {"n": n, "seed": seed, "classes": classes, "world": world, "species": species,
                                "snr": snr, "crowding": crowding}})
    split_path = root.cv / "v1" / f"skf{folds.first}_rd42.json"
    write_split_new(fresh_split(noisy, folds=folds.first, seed=42), split_path)

    log(f"[2/5] training {config} fold models (Prefect flow 'train')")
    train(TrainParams(data_dir=str(root.root), labels="gt", split=str(split_path), folds="all", config=config,
                      run_name=DEMO_MODEL_RUN, seed=seed, overrides=train_overrides or {}))

    log(f"[3/5] round1 under Prefect: OOF predictions at 0.05 → cases → {reviewer} review → gt_v2")
    mining = mining or MiningSettings()
    review = scripted_review(store, files, classes, mining=mining, scripted_errors=reviewer_errors) \
        if reviewer == "scripted" else \
        ReviewSettings(reviewer="cvat", mining=mining, wait=WaitSettings(mode=wait, poll_interval_s=30))
    summary = round1(Round1Params(data_dir=str(root.root), model_dirs=[DEMO_MODEL_RUN], review=review,
                                  max_labeled_motors=1 if motor_only else None, split_folds=folds.round1))

    log("[4/5] scoring the refined labels against the synthetic truth")
    report = {**recovery_report(root, files),
              "classes": classes, "world": world, "config": config, "versions": store.names(),
              "splits": summary.get("splits", []), "predictions": summary.get("predictions"),
              "review_images_dir": str(round_paths(root, "round1").images),
              "wall_time_s": round(time.monotonic() - t0, 1)}
    log("[5/5] pictures and report")
    plot_label_diff(store.changes("gt_v2"), out=root.root / "demo_label_changes.png")
    write_json(root.root / "demo_report.json", report)
    log(json.dumps(report, indent=2))
    return report

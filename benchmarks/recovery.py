"""Label-error recovery of one review round, over several synthetic cohorts (never tune on one seed).

    python benchmarks/recovery.py                               # 3 motor cohorts of 40 tomograms, seeds 11, 12, 13
    python benchmarks/recovery.py --seeds 21 22 23 24 --n 48
    python benchmarks/recovery.py --classes motor,ribosome,apo-ferritin --n 24 --seeds 1 2 3
    python benchmarks/recovery.py --world crowded --n 8 --seeds 1 2 3 --snr 0.1   # the crowded world
    python benchmarks/recovery.py --json results.json           # also write every report
    python benchmarks/recovery.py --seeds 11 12 13 --work runs --keep
    python benchmarks/recovery.py --replay runs/seed11 runs/seed12 runs/seed13 --work replay \
        --mining '{"galleries": false}'                           # round 1 again, other mining settings

Each cohort runs the demo loop (synthetic cohort with planted errors → fold models → round1 under Prefect → the
scripted reviewer → gt_v2) in its own data root (``--work``, default a temporary folder) and is scored against
its truth. Prints, per seed, per class and overall: planted errors by kind (missed, false, shifted; and background
where a cohort has them: the crowded world), fixed by kind, review images (counted from the round's image files),
items shown (crops and candidates), label changes, images per change, the estimated annotator time
(:mod:`byu.review.load`), changes without a decision and wall time; and whether the targets hold: every cohort
≥ 95 % of its planted errors fixed and ≥ 85 % of each class's, ≤ 3 review images per label change, 0 changes without
a decision. ``--world crowded`` (with ``--species``, ``--snr``, ``--crowding``) runs the crowded world of
``byu.synth``; ``--mining`` changes the mining settings (:class:`byu.review.settings.MiningSettings`) as JSON.

``--replay`` reruns only the review round of kept cohorts (their labels and out-of-fold predictions as they are),
with the mining settings of today's code changed by ``--mining``: a change to mining is measured in minutes, on
the same fold models, without retraining them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

KINDS = ("missed", "false", "shifted", "background")
DEFAULT_KINDS = KINDS[:3]  # the default world's; a column for another kind only where some cohort planted it
TARGET_FIXED, TARGET_CLASS, TARGET_LOAD = 0.95, 0.85, 3.0


def _mining(overrides: dict | None):
    from byu.review.settings import MiningSettings

    return MiningSettings(**(overrides or {}))


def run_cohort(work: Path, *, seed: int, n: int, classes: list[str], config: str | None,
               mining: dict | None = None, cohort: dict | None = None, reviewer_errors: float = 0.0) -> dict:
    """One full demo loop; ``cohort``: the synthetic world's arguments (world, species, snr, crowding);
    ``mining``: mining settings to change; ``reviewer_errors``: the scripted reviewer's error rate."""
    from flows.demo import run_demo

    root = work / f"seed{seed}"
    t0 = time.monotonic()
    report = run_demo(root, n=n, seed=seed, classes=classes, config=config, mining=_mining(mining),
                      reviewer_errors=reviewer_errors, log=lambda *_: None, **(cohort or {}))
    report["seed"] = seed
    report["wall_time_s"] = round(time.monotonic() - t0, 1)
    return report


def replay_cohort(kept: Path, work: Path, *, mining: dict | None = None, reviewer_errors: float = 0.0) -> dict:
    """Rerun only round 1's review on a cohort that ``--keep`` left (same labels, same out-of-fold predictions),
    with today's mining settings: a copy of its labels, truth and predictions in ``work/<name>`` (tomograms linked,
    not copied) → mine → scripted review (erring at ``reviewer_errors``; then reviewer accuracy, second review
    and resolution as in the flows) → ``gt_v2``; scored like a full run. Measures a review change without
    retraining the fold models."""
    from byu.atomic import write_json
    from byu.labels.store import LabelStore
    from byu.paths import DataRoot
    from byu.review.round import ReviewRound
    from flows.base import make_reviewer
    from flows.common import assess_and_second_review, resolve_reviews, tomograms_to_review
    from flows.demo import make_demo_cohort, recovery_report, scripted_review

    t0 = time.monotonic()
    kept = kept.resolve()
    cohort = json.loads((kept / "labels" / "gt.manifest.json").read_text())["extra"]["cohort"]
    root = work / kept.name
    shutil.rmtree(root, ignore_errors=True)
    (root / "labels").mkdir(parents=True)
    (root / "tomograms").symlink_to(kept / "tomograms", target_is_directory=True)
    for folder in ("synth", "predictions"):
        shutil.copytree(kept / folder, root / folder)
    for f in (kept / "labels").glob("gt.*"):
        shutil.copy2(f, root / "labels" / f.name)
    verified = kept / "review" / "round1" / "verification.csv"
    if verified.exists():  # mining reuses it only if made from the same labels, predictions and verifier settings
        (root / "review" / "round1").mkdir(parents=True)
        for f in (verified, verified.with_suffix(".json")):
            if f.exists():
                shutil.copy2(f, root / "review" / "round1" / f.name)
    data = DataRoot(root)
    classes = cohort["classes"]
    files = make_demo_cohort(data, classes=classes, n=cohort["n"], seed=cohort["seed"],
                             **{k: cohort[k] for k in ("world", "species", "snr", "crowding") if k in cohort},
                             log=lambda *_: None)
    review = scripted_review(LabelStore(data.labels), files, classes, mining=_mining(mining),
                             scripted_errors=reviewer_errors)
    predictions = data.predictions / "round1_oof.csv"
    # the tomograms round1 reviews (a motor round: those with at most one labeled motor), as the flow lists them
    tomo_ids = tomograms_to_review.fn(str(root), "gt", 1 if classes == ["motor"] else None)
    rnd = ReviewRound(data, "round1")
    rnd.mine(labels_version="gt", predictions=predictions, settings=review.mining, tomo_ids=tomo_ids)
    rnd.render(settings=review.render)  # the images are what the load is counted from
    make_reviewer(str(root), "round1", review).collect(rnd)
    log = logging.getLogger("byu.benchmarks.recovery")
    assessed = assess_and_second_review(str(root), "round1", review, log)
    if assessed["second_review"] or any(a["n"] for a in assessed["accuracy"].values()):
        resolve_reviews(str(root), "round1", review, log)
    rnd.apply(from_version="gt", to_version="gt_v2", producer="benchmark replay")
    report = recovery_report(data, files)
    report["seed"] = cohort["seed"]
    report["wall_time_s"] = round(time.monotonic() - t0, 1)
    write_json(root / "demo_report.json", report)  # as a full run leaves it (recovery_misses.py reads it)
    return report


def _row(label: str, planted: dict, fixed: dict, kinds: list[str], load: dict, nodec: str, time_s: str,
         note: str = "") -> str:
    p, f = sum(planted.values()), sum(fixed.get(k, 0) for k in planted)
    cols = " ".join(f"{f'{int(fixed.get(k, 0))}/{int(planted.get(k, 0))}':>10}" for k in kinds)
    ipc = load.get("images_per_change")
    return (f"{label:<22} {p:>7} {cols} {(f / p if p else 1.0):>7.1%} {load.get('images', 0):>6} "
            f"{load.get('items', 0):>6} {load.get('label_changes', 0):>7} "
            f"{(ipc if ipc is not None else float('nan')):>7.2f} {load.get('minutes', 0.0):>6.0f} {nodec:>6} "
            f"{time_s:>7}{note}")


def trust_lines(reports: list[dict]) -> list[str]:
    """Per cohort, what the review's trust measures said against the truth: each reviewer's accuracy estimated
    from the known-answer items (with their count and 95 % interval) beside its true accuracy, the first review's
    wrong answers and how many were on images sent to a second review, and per class the errors left (estimate,
    90 % interval, true)."""
    lines = []
    for r in reports:
        detail = r.get("reviewer_accuracy_detail") or {}
        if not detail:
            continue
        true = r.get("reviewer_accuracy_true", {})
        parts = []
        for who, a in detail.items():
            lo, hi = a.get("interval_95") or (float("nan"), float("nan"))
            est = a.get("accuracy")
            parts.append(f"{who or '(unnamed)'} {'-' if est is None else f'{est:.2f}'} [{lo:.2f}, {hi:.2f}] on "
                         f"{a.get('n', 0)} known items, true {true.get(who, float('nan')):.2f}")
        lines.append(f"  trust (seed {r['seed']}): " + "; ".join(parts))
        lines.append(f"    first review wrong answers {r.get('first_review_wrong_answers', 0)}, on images sent to a "
                     f"second review {r.get('first_review_wrong_answers_sent_to_second_review', 0)} "
                     f"({r.get('second_review_images', 0)} images); held {r.get('held_images', 0)}")
        left = r.get("errors_left") or {}
        if left:
            lines.append("    errors left: " + ", ".join(
                f"{c} est {v.get('estimate', float('nan')):.1f} [{v['interval_90'][0]:.0f}, {v['interval_90'][1]:.0f}]"
                f" true {v.get('true')}" for c, v in left.items()))
    return lines


def summarize(reports: list[dict]) -> tuple[list[str], bool]:
    """The table: one row per cohort and, below it, one per class (planted and fixed by kind, review images,
    items shown, label changes, images per change, estimated minutes, changes without a decision, wall time)."""
    kinds = [k for k in KINDS if k in DEFAULT_KINDS or any(r["planted_errors_by_kind"].get(k) for r in reports)]
    lines = [f"{'cohort / class':<22} {'planted':>7} " + " ".join(f"{k:>10}" for k in kinds)
             + f" {'fixed':>7} {'images':>6} {'items':>6} {'changes':>7} {'img/chg':>7} {'min':>6} {'no-dec':>6}"
             f" {'time s':>7}"]
    ok = True
    totals: dict = {"planted": {}, "fixed": {}, "images": 0, "items": 0, "label_changes": 0, "minutes": 0.0,
                    "nodec": 0, "time": 0.0}
    for r in reports:
        load = r["review_load"]["total"]
        per_class = r.get("errors_by_class", {})
        class_ok = all((v["fraction"] or 0) >= TARGET_CLASS for v in per_class.values())
        ipc = load.get("images_per_change")
        good = (r["errors_fixed_fraction"] or 0) >= TARGET_FIXED and class_ok and ipc is not None \
            and ipc <= TARGET_LOAD and r["changes_without_decision"] == 0
        ok &= good
        lines.append(_row(f"seed {r['seed']}", r["planted_errors_by_kind"], r.get("errors_fixed_by_kind", {}), kinds,
                          load, str(r["changes_without_decision"]), f"{r['wall_time_s']:.0f}",
                          "" if good else "  <- below target"))
        if len(per_class) > 1:
            for name, v in per_class.items():
                lines.append(_row(f"  {name}", v.get("planted_by_kind", {}), v.get("fixed_by_kind", {}), kinds,
                                  r["review_load"]["by_class"].get(name, {}), "", ""))
        for k, v in r["planted_errors_by_kind"].items():
            totals["planted"][k] = totals["planted"].get(k, 0) + int(v)
        for k, v in r.get("errors_fixed_by_kind", {}).items():
            totals["fixed"][k] = totals["fixed"].get(k, 0) + int(v)
        for key in ("images", "items", "label_changes", "minutes"):
            totals[key] += load.get(key, 0)
        totals["nodec"] += r["changes_without_decision"]
        totals["time"] += r["wall_time_s"]
    all_load = {k: totals[k] for k in ("images", "items", "label_changes", "minutes")}
    all_load["images_per_change"] = round(totals["images"] / totals["label_changes"], 3) \
        if totals["label_changes"] else None
    lines.append(_row("all", totals["planted"], totals["fixed"], kinds, all_load, str(totals["nodec"]),
                      f"{totals['time']:.0f}"))
    for r in reports:
        for e in r.get("errors_not_fixed", []):
            lines.append(f"  not fixed (seed {r['seed']}): {e['tomo_id']} {e.get('particle', 'motor')} {e['kind']}")
    lines += trust_lines(reports)
    lines.append(f"targets (every cohort: ≥ {TARGET_FIXED:.0%} fixed and ≥ {TARGET_CLASS:.0%} of each class, "
                 f"≤ {TARGET_LOAD:g} review images per label change, 0 changes without a decision): "
                 f"{'met' if ok else 'NOT met'}")
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13], help="cohort seeds (not the demo's 0)")
    ap.add_argument("--n", type=int, default=40, help="tomograms per cohort")
    ap.add_argument("--classes", default="motor", help="particle classes of the cohorts (comma-separated)")
    ap.add_argument("--config", default=None, help="model config (default: tiny for motors, crowded for the "
                    "crowded world, small otherwise)")
    ap.add_argument("--world", default="default", choices=["default", "crowded"],
                    help="synthetic world: default (motor or multi-class cohorts) or crowded")
    ap.add_argument("--species", type=int, default=None, help="crowded world: number of species (default 12)")
    ap.add_argument("--snr", type=float, default=None, help="crowded world: target SNR (default 0.1)")
    ap.add_argument("--crowding", type=float, default=None, help="crowded world: volume fraction (default 0.30)")
    ap.add_argument("--mining", default="{}", help="mining settings to change, as JSON (e.g. "
                    "'{\"galleries\": false, \"budget\": 64}')")
    ap.add_argument("--reviewer-errors", type=float, default=0.0, metavar="RATE",
                    help="the scripted reviewer gets this share of its answers wrong (then the trust figures: "
                    "accuracy on known-answer items, second review, errors left against the truth)")
    ap.add_argument("--work", type=Path, default=None, help="where the cohorts' data roots go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the data roots")
    ap.add_argument("--json", type=Path, default=None, help="write every report to this JSON file")
    ap.add_argument("--replay", type=Path, nargs="+", default=None, metavar="KEPT",
                    help="instead: rerun only the review round on these kept cohorts (data roots of an earlier "
                    "--keep run), with today's review settings, in --work")
    args = ap.parse_args(argv)
    try:
        mining = json.loads(args.mining)
        _mining(mining)
    except (json.JSONDecodeError, ValueError) as exc:
        ap.error(f"--mining: {exc}")
    if args.replay:
        work = args.work or Path(tempfile.mkdtemp(prefix="byu-replay-"))
        return run_reports(args, work, [(f"replaying round 1 of {kept} …",
                                         lambda kept=kept: replay_cohort(kept, work, mining=mining,
                                                                         reviewer_errors=args.reviewer_errors))
                                        for kept in args.replay])
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    from byu.synth import resolve_classes

    try:  # the crowded world's default classes stand in for the default ("motor",): name them
        shown = ", ".join(c.name for c in resolve_classes(classes, args.world))
    except ValueError as exc:
        ap.error(str(exc))
    cohort = {"world": args.world, "species": args.species, "snr": args.snr, "crowding": args.crowding}
    if args.world == "default" and any(v is not None for v in (args.species, args.snr, args.crowding)):
        ap.error("--species, --snr and --crowding are options of the crowded world (--world crowded)")
    work = args.work or Path(tempfile.mkdtemp(prefix="byu-recovery-"))
    from flows.local_api import temporary_api

    with temporary_api():
        return run_reports(args, work, [
            (f"cohort seed {seed}: {args.n} tomograms, {args.world} world, {shown} …",
             lambda seed=seed: run_cohort(work, seed=seed, n=args.n, classes=classes, config=args.config,
                                          mining=mining, cohort=cohort, reviewer_errors=args.reviewer_errors))
            for seed in args.seeds])


def run_reports(args: argparse.Namespace, work: Path, jobs: list) -> int:
    """Run each ``(title, job)``, print its line and then the summary (and ``--json``); remove ``work`` unless
    asked to keep it. Exit status 0 when the targets hold."""
    reports = []
    try:
        for title, job in jobs:
            print(title, flush=True)
            r = job()
            reports.append(r)
            print(f"  {r['errors_fixed']}/{r['planted_errors']} fixed, {r['review_images']} images, "
                  f"{r['label_changes']} changes, {r['wall_time_s']:.0f} s", flush=True)
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    lines, ok = summarize(reports)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

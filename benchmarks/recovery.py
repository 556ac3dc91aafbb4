"""Label-error recovery of one review round, over several synthetic cohorts (never tune on one seed).

    python benchmarks/recovery.py                               # 3 motor cohorts of 40 tomograms, seeds 11, 12, 13
    python benchmarks/recovery.py --seeds 21 22 23 24 --n 48
    python benchmarks/recovery.py --classes motor,ribosome,apo-ferritin --n 24 --seeds 1 2 3
    python benchmarks/recovery.py --json results.json           # also write every report
    python benchmarks/recovery.py --seeds 11 12 13 --work runs --keep
    python benchmarks/recovery.py --replay runs/seed11 runs/seed12 runs/seed13 --work replay \
        --review '{"verify_labels": false}'                       # round 1 again, other review settings

Each cohort runs the demo loop (synthetic cohort with planted errors → fold models → round1 under Prefect → the
scripted reviewer → gt_v2) in its own data root (``--work``, default a temporary folder) and is scored against
its truth. Prints, per seed and overall: planted errors by kind (missed, false, shifted) and by class, fixed by
kind, cases reviewed, label changes, cases reviewed per label change, changes without a decision, wall time; and
whether the targets hold: every cohort ≥ 95 % of planted errors fixed, ≤ 3 cases reviewed per label change, 0
changes without a decision.

``--replay`` reruns only the review round of kept cohorts (their labels and out-of-fold predictions as they are),
with the review settings of today's code changed by ``--review``: a change to mining is measured in minutes, on
the same fold models, without retraining them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

KINDS = ("missed", "false", "shifted")
TARGET_FIXED, TARGET_LOAD = 0.95, 3.0


def run_cohort(work: Path, *, seed: int, n: int, classes: list[str], config: str | None,
               confirm: float | str | None = "auto") -> dict:
    from flows.demo import run_demo

    root = work / f"seed{seed}"
    t0 = time.monotonic()
    report = run_demo(root, n=n, seed=seed, classes=classes, config=config, confirm_threshold=confirm,
                      log=lambda *_: None)
    report["seed"] = seed
    report["wall_time_s"] = round(time.monotonic() - t0, 1)
    return report


def replay_cohort(kept: Path, work: Path, *, review_settings: dict | None = None) -> dict:
    """Rerun only round 1's review on a cohort that ``--keep`` left (same labels, same out-of-fold predictions),
    with today's mining settings: a copy of its labels, truth and predictions in ``work/<name>`` (tomograms linked,
    not copied) → mine → scripted review → ``gt_v2``; scored like a full run. Measures a review change without
    retraining the fold models."""
    from byu.atomic import write_json
    from byu.labels.store import LabelStore
    from byu.paths import DataRoot
    from byu.review.round import ReviewRound
    from flows.common import make_reviewer, tomograms_to_review
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
    files = make_demo_cohort(data, classes=classes, n=cohort["n"], seed=cohort["seed"], log=lambda *_: None)
    review = scripted_review(LabelStore(data.labels), files, classes, **(review_settings or {}))
    predictions = data.predictions / "round1_oof.csv"
    # the tomograms round1 reviews (a motor round: those with at most one labeled motor), as the flow lists them
    tomo_ids = tomograms_to_review.fn(str(root), "gt", 1 if classes == ["motor"] else None)
    rnd = ReviewRound(data, "round1")
    rnd.mine(labels_version="gt", predictions=predictions, threshold=0.05, tomo_ids=tomo_ids,
             **review.mining_kwargs())
    make_reviewer(str(root), "round1", review).collect(rnd)
    rnd.apply(from_version="gt", to_version="gt_v2", producer="benchmark replay")
    report = recovery_report(data, files)
    report["seed"] = cohort["seed"]
    report["wall_time_s"] = round(time.monotonic() - t0, 1)
    write_json(root / "demo_report.json", report)  # as a full run leaves it (recovery_misses.py reads it)
    return report


def summarize(reports: list[dict]) -> tuple[list[str], bool]:
    lines = []
    header = (f"{'seed':>5} {'planted':>7} {'missed':>9} {'false':>9} {'shifted':>9} {'fixed':>8} {'cases':>6} "
              f"{'changes':>7} {'cases/chg':>9} {'no-dec':>6} {'time s':>7}")
    lines.append(header)
    ok = True
    tot = {"planted": 0, "fixed": 0, "cases": 0, "changes": 0, "nodec": 0, "time": 0.0}
    by_kind_tot = {k: [0, 0] for k in KINDS}
    for r in reports:
        planted = r["planted_errors_by_kind"]
        fixed = r.get("errors_fixed_by_kind", {})
        cols = []
        for k in KINDS:
            p, f = int(planted.get(k, 0)), int(fixed.get(k, 0))
            by_kind_tot[k][0] += p
            by_kind_tot[k][1] += f
            cols.append(f"{f}/{p}")
        frac = r["errors_fixed_fraction"] or 0.0
        load = r["cases_reviewed_per_label_change"]
        good = frac >= TARGET_FIXED and load is not None and load <= TARGET_LOAD and r["changes_without_decision"] == 0
        ok &= good
        lines.append(f"{r['seed']:>5} {r['planted_errors']:>7} {cols[0]:>9} {cols[1]:>9} {cols[2]:>9} "
                     f"{frac:>8.1%} {r['cases_reviewed']:>6} {r['label_changes']:>7} "
                     f"{(load if load is not None else float('nan')):>9.2f} {r['changes_without_decision']:>6} "
                     f"{r['wall_time_s']:>7.0f}{'' if good else '  <- below target'}")
        for c, v in r.get("errors_by_class", {}).items():
            if len(r.get("errors_by_class", {})) > 1:
                lines.append(f"{'':>5}   {c}: {v['fixed']}/{v['planted']}")
        tot["planted"] += r["planted_errors"]
        tot["fixed"] += r["errors_fixed"]
        tot["cases"] += r["cases_reviewed"]
        tot["changes"] += r["label_changes"]
        tot["nodec"] += r["changes_without_decision"]
        tot["time"] += r["wall_time_s"]
    kinds = [f"{f}/{p}" for p, f in by_kind_tot.values()]
    lines.append(f"{'all':>5} {tot['planted']:>7} {kinds[0]:>9} {kinds[1]:>9} {kinds[2]:>9} "
                 f"{(tot['fixed'] / max(1, tot['planted'])):>8.1%} {tot['cases']:>6} {tot['changes']:>7} "
                 f"{(tot['cases'] / max(1, tot['changes'])):>9.2f} {tot['nodec']:>6} {tot['time']:>7.0f}")
    for r in reports:
        for e in r.get("errors_not_fixed", []):
            lines.append(f"  not fixed (seed {r['seed']}): {e['tomo_id']} {e.get('particle', 'motor')} {e['kind']}")
    lines.append(f"targets (every cohort: ≥ {TARGET_FIXED:.0%} fixed, ≤ {TARGET_LOAD:g} cases per change, 0 changes "
                 f"without a decision): {'met' if ok else 'NOT met'}")
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13], help="cohort seeds (not the demo's 0)")
    ap.add_argument("--n", type=int, default=40, help="tomograms per cohort")
    ap.add_argument("--classes", default="motor", help="particle classes of the cohorts (comma-separated)")
    ap.add_argument("--config", default=None, help="model config (default: tiny for motors, small otherwise)")
    ap.add_argument("--confirm", default="auto", help="confirm threshold of the review: auto (per class, calibrated) "
                    "or a number (0.6: the fixed threshold of earlier rounds)")
    ap.add_argument("--work", type=Path, default=None, help="where the cohorts' data roots go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the data roots")
    ap.add_argument("--json", type=Path, default=None, help="write every report to this JSON file")
    ap.add_argument("--replay", type=Path, nargs="+", default=None, metavar="KEPT",
                    help="instead: rerun only the review round on these kept cohorts (data roots of an earlier "
                    "--keep run), with today's review settings, in --work")
    ap.add_argument("--review", default="{}", help="with --replay: review settings to change, as JSON (e.g. "
                    "'{\"verify_labels\": false, \"fp_threshold\": null}')")
    args = ap.parse_args(argv)
    if args.replay:
        try:
            settings = json.loads(args.review)
        except json.JSONDecodeError as exc:
            ap.error(f"--review is not JSON: {exc}")
        work = args.work or Path(tempfile.mkdtemp(prefix="byu-replay-"))
        return run_reports(args, work, [(f"replaying round 1 of {kept} …",
                                         lambda kept=kept: replay_cohort(kept, work, review_settings=settings))
                                        for kept in args.replay])
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    work = args.work or Path(tempfile.mkdtemp(prefix="byu-recovery-"))
    confirm = args.confirm if args.confirm == "auto" else float(args.confirm)
    from flows.local_api import temporary_api

    with temporary_api():
        return run_reports(args, work, [
            (f"cohort seed {seed}: {args.n} tomograms, {', '.join(classes)} …",
             lambda seed=seed: run_cohort(work, seed=seed, n=args.n, classes=classes, config=args.config,
                                          confirm=confirm))
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
            print(f"  {r['errors_fixed']}/{r['planted_errors']} fixed, {r['cases_reviewed']} cases, "
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

"""Label-error recovery of one review round, over several synthetic cohorts (never tune on one seed).

    python benchmarks/recovery.py                               # 3 motor cohorts of 40 tomograms, seeds 11, 12, 13
    python benchmarks/recovery.py --seeds 21 22 23 24 --n 48
    python benchmarks/recovery.py --classes motor,ribosome,apo-ferritin --n 24 --seeds 1 2 3
    python benchmarks/recovery.py --json results.json           # also write every report

Each cohort runs the demo loop (synthetic cohort with planted errors → fold models → round1 under Prefect → the
scripted reviewer → gt_v2) in its own data root (``--work``, default a temporary folder) and is scored against
its truth. Prints, per seed and overall: planted errors by kind (missed, false, shifted) and by class, fixed by
kind, cases reviewed, label changes, cases reviewed per label change, changes without a decision, wall time; and
whether the targets hold: every cohort ≥ 95 % of planted errors fixed, ≤ 3 cases reviewed per label change, 0
changes without a decision.
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
    args = ap.parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    work = args.work or Path(tempfile.mkdtemp(prefix="byu-recovery-"))
    from flows.local_api import temporary_api

    reports = []
    try:
        with temporary_api():
            for seed in args.seeds:
                print(f"cohort seed {seed}: {args.n} tomograms, {', '.join(classes)} …", flush=True)
                confirm = args.confirm if args.confirm == "auto" else float(args.confirm)
                reports.append(run_cohort(work, seed=seed, n=args.n, classes=classes, config=args.config,
                                          confirm=confirm))
                print(f"  {reports[-1]['errors_fixed']}/{reports[-1]['planted_errors']} fixed, "
                      f"{reports[-1]['cases_reviewed']} cases, {reports[-1]['label_changes']} changes, "
                      f"{reports[-1]['wall_time_s']:.0f} s", flush=True)
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

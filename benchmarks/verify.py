"""What the label verifier costs, and how well it separates, for one, three and six classes (figures, never a
test's pass/fail).

    python benchmarks/verify.py                              # motor; motor,ribosome,apo-ferritin; six CZII classes
    python benchmarks/verify.py --n 24 --sets 3 --settings '{"seeds": 3}'   # other verifier settings (JSON)

Each set of classes gets a synthetic cohort (``byu.synth``, seed ``--seed``) in a temporary data root. Its noisy
labels (false labels on decoys, shifted and missed ones planted) are the labels to verify; the predictions are a
stand-in for a round's out-of-fold predictions: every true particle and every decoy of a verified class, with a
confidence drawn uniformly from [0.3, 1] (the verifier's cost depends on how many crops it learns from and scores,
not on where the predictions came from). Prints, per set: labels and predictions, wall time of
:func:`byu.review.verify.label_verification` with the given settings, each class's out-of-fold separation (ROC AUC
of labels against unlabeled predictions) and second-stage separation, and the percentile of each planted false or
shifted label among its class's labels (low: it is among those reviewed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETS = {1: ["motor"], 3: ["motor", "ribosome", "apo-ferritin"],
        6: ["apo-ferritin", "beta-amylase", "beta-galactosidase", "ribosome", "thyroglobulin",
            "virus-like-particle"]}


def stand_in_predictions(truth: pd.DataFrame, decoys: pd.DataFrame, classes: list[str], spacing: pd.Series,
                         rng: np.random.Generator) -> pd.DataFrame:
    """Every true particle and every decoy that mimics a class of ``classes``, confidence ~ U(0.3, 1);
    ``spacing``: each tomogram's voxel spacing (tomograms without a particle too)."""
    d = decoys[decoys["mimics"].isin(classes)].rename(columns={"mimics": "particle"})
    cols = ["tomo_id", "particle", "z", "y", "x"]
    out = pd.concat([truth[cols], d[cols]], ignore_index=True)
    out = out[np.isfinite(out[["z", "y", "x"]].to_numpy(float)).all(axis=1)]  # a particle-free tomogram's row
    out = out.assign(voxel_spacing=out["tomo_id"].map(spacing).to_numpy(float)).reset_index(drop=True)
    return out.assign(conf=rng.uniform(0.3, 1.0, len(out)))


def planted_percentiles(picks: pd.DataFrame, verification: pd.Series, errors: pd.DataFrame) -> list[str]:
    """Each planted false or shifted label's percentile among its class's verified labels."""
    scored = picks.assign(ver=verification.to_numpy())
    out = []
    for r in errors[errors["kind"].isin(["false", "shifted"])].itertuples():
        m = scored[(scored["tomo_id"] == r.tomo_id) & (scored["particle"] == r.particle)]
        if not len(m):
            continue
        d = np.abs(m[["z", "y", "x"]].to_numpy(float) - [r.label_z, r.label_y, r.label_x]).sum(axis=1)
        v = m["ver"].to_numpy()[int(d.argmin())]
        cls = scored.loc[scored["particle"] == r.particle, "ver"].dropna()
        out.append(f"{r.particle}:{r.kind}:{(cls < v).mean():.2f}" if np.isfinite(v) else f"{r.particle}:{r.kind}:-")
    return out


def run_set(classes: list[str], *, n: int, seed: int, settings_json: dict, tmp: Path) -> dict:
    from byu.labels.formats import read_version_file
    from byu.review.verify import VerifierSettings, label_verification
    from byu.synth import make_cohort

    root = tmp / f"c{len(classes)}"
    cohort = make_cohort(root, classes=classes, n=n, seed=seed)
    labels = read_version_file(cohort.noisy_path, tomograms=cohort.tomograms_path)
    truth = pd.read_csv(cohort.truth_path)
    decoys = pd.read_csv(cohort.decoys_path) if cohort.decoys_path else pd.DataFrame(
        columns=["tomo_id", "z", "y", "x", "kind", "mimics"])
    if "mimics" not in decoys:  # the motor world: every decoy is a motor look-alike
        decoys = decoys.assign(mimics=classes[0])
    spacing = pd.read_csv(cohort.tomograms_path).set_index("tomo_id")["voxel_spacing"]
    preds = stand_in_predictions(truth, decoys, classes, spacing, np.random.default_rng(seed))
    settings = VerifierSettings(**settings_json)
    t0 = time.perf_counter()
    v = label_verification(labels, preds, root / "tomograms", tomo_ids=cohort.tomo_ids, threshold=0.05,
                           settings=settings)
    wall = time.perf_counter() - t0
    errors = pd.read_csv(cohort.errors_path) if cohort.errors_path else pd.DataFrame(columns=["kind"])
    if "particle" not in errors:  # the motor world
        errors = errors.assign(particle=classes[0])
    return {"classes": classes, "tomograms": cohort.n_tomograms, "labels": len(labels.picks),
            "predictions": len(preds), "settings": settings.model_dump(exclude={"device"}),
            "wall_s": round(wall, 1), "separation": {k: round(x, 3) for k, x in v.separation.items()},
            "hard_separation": {k: round(x, 3) for k, x in v.hard_separation.items()},
            "planted_percentiles": planted_percentiles(labels.picks, v.labels, errors)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, nargs="+", choices=sorted(SETS), default=sorted(SETS),
                    help="numbers of classes to run (1: motor, 3: motor, ribosome, apo-ferritin, 6: CZII)")
    ap.add_argument("--n", type=int, default=24, help="tomograms per cohort")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--settings", default="{}", help="VerifierSettings fields as JSON (default: the defaults)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="byu-verify-") as tmp:
        for k in args.sets:
            r = run_set(SETS[k], n=args.n, seed=args.seed, settings_json=json.loads(args.settings), tmp=Path(tmp))
            results.append(r)
            print(f"{k} class(es), {r['tomograms']} tomograms, {r['labels']} labels, {r['predictions']} predictions: "
                  f"{r['wall_s']:.0f} s", flush=True)
            for c in r["classes"]:
                print(f"  {c:<20} separation {r['separation'].get(c, float('nan')):.3f}  second stage "
                      f"{r['hard_separation'].get(c, float('nan')):.3f}")
            print("  planted false/shifted labels, percentile in their class: "
                  + (", ".join(r["planted_percentiles"]) or "none"), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What mining a review round costs on kept cohorts: label verification, matching and rendering, each timed
(figures, never a test's pass/fail).

    python benchmarks/recovery.py --classes motor,ribosome,apo-ferritin --n 24 --seeds 8 --work runs --keep
    python benchmarks/mining.py runs/seed8                      # mine + render round 1 again, timed
    python benchmarks/mining.py runs/seed8 --mining '{"verifier": {"seeds": 1}}'

Each kept cohort (a data root written by ``recovery.py --keep`` or ``byu demo``) is mined again in a fresh data root
that links its labels, tomograms, predictions and models (nothing of the kept cohort is written): the labels
version ``--labels`` against the predictions run ``--predictions``, with today's mining settings changed by
``--mining`` (JSON, :class:`byu.review.settings.MiningSettings`). Prints, per cohort: tomograms, labels,
predictions at the threshold, classes; the wall time of label verification, of matching, choosing and writing
the cases (the round's own mining, reusing that verification) and of rendering their images as the flow does (one
task per ``BYU_RENDER_BATCH`` images, default 16, with the models' heatmaps); the cases and images, and each
class's verifier separation.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LINKED = ("labels", "tomograms", "predictions", "models")


def mine_once(kept: Path, work: Path, *, labels: str, predictions: str, mining: dict) -> dict:
    """Mine and render round ``bench`` of ``kept`` in the data root ``work`` (linked to ``kept``), timed."""
    from byu.paths import DataRoot
    from byu.predictions import read_predictions
    from byu.review.round import ReviewRound
    from byu.review.settings import MiningSettings
    from flows.common import render_task, tomograms_to_review
    from flows.task_runners import ENV_RENDER_BATCH, RENDER_BATCH, batch_size

    work.mkdir(parents=True)
    for name in LINKED:
        if (kept / name).exists():
            (work / name).symlink_to((kept / name).resolve(), target_is_directory=True)
    run = work / "predictions" / f"{predictions}.csv"
    settings = MiningSettings(**mining)
    rnd = ReviewRound(DataRoot.from_env(work), "bench")
    labelset = rnd.store.get(labels)
    preds = read_predictions(run)
    # the tomograms round 1 reviews, as the flow lists them (a motor round: those with at most one labeled motor)
    ids = tomograms_to_review.fn(str(work), labels, 1 if labelset.class_names == ["motor"] else None)
    t0 = time.perf_counter()
    verification = None
    if settings.verify:
        verification = rnd.verification(labels_version=labels, labels=labelset, predictions=run, preds=preds,
                                        tomo_ids=ids, threshold=settings.threshold, settings=settings.verifier)
    t1 = time.perf_counter()
    # the round's own mining: it reuses the verification just written, matches, chooses and writes the cases
    result = rnd.mine(labels_version=labels, predictions=run, settings=settings, tomo_ids=ids)
    t2 = time.perf_counter()
    # rendered as the flow renders: one task per batch of images, each reading the round afresh
    images = [c.image for c in rnd.cases()]
    size = batch_size(ENV_RENDER_BATCH, RENDER_BATCH)
    for i in range(0, len(images), size):
        render_task.fn(str(work), "bench", images[i:i + size])
    t3 = time.perf_counter()
    return {"cohort": str(kept), "tomograms": len(ids), "labels": len(labelset.picks),
            "predictions": int((preds["conf"] >= settings.threshold).sum()), "classes": labelset.class_names,
            "verification_s": round(t1 - t0, 1), "matching_s": round(t2 - t1, 1),
            "mine_with_verification_s": round(t2 - t0, 1), "render_s": round(t3 - t2, 1),
            "cases": len(result.cases), "images": len(list(rnd.paths.images.glob("*.jpg"))),
            "separation": {k: round(v, 3) for k, v in (verification.separation if verification else {}).items()},
            "hard_separation": {k: round(v, 3)
                                for k, v in (verification.hard_separation if verification else {}).items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kept", nargs="+", type=Path, help="kept cohorts (data roots)")
    ap.add_argument("--labels", default="gt", help="label version to mine against")
    ap.add_argument("--predictions", default="round1_oof", help="predictions run (data/predictions/NAME.csv)")
    ap.add_argument("--mining", default="{}", help="mining settings changed (JSON)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--work", type=Path, help="leave each cohort's mined root here (default: a temporary folder)")
    args = ap.parse_args(argv)
    mining = json.loads(args.mining)
    rows = []
    with tempfile.TemporaryDirectory(prefix="byu-mining-") as tmp:
        work = args.work or Path(tmp)
        for i, kept in enumerate(args.kept):
            row = mine_once(kept, work / f"c{i}", labels=args.labels, predictions=args.predictions,
                            mining=mining)
            rows.append(row)
            print(f"{kept}: {row['tomograms']} tomograms, {row['labels']} labels, {row['predictions']} predictions, "
                  f"classes {', '.join(row['classes'])}")
            print(f"  verification {row['verification_s']} s + matching {row['matching_s']} s = mining with "
                  f"verification {row['mine_with_verification_s']} s; rendering {row['render_s']} s "
                  f"({row['cases']} cases, {row['images']} images)")
            print(f"  separation {row['separation']}, second stage {row['hard_separation']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The tasks the flows share; each is thin and calls one ``byu`` function (the round-level composition of them is
:mod:`flows.rounds`). The byu functions are idempotent on disk, so a flow killed anywhere and rerun skips what is
finished and writes the same versions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task

from byu.errors import ByuError
from byu.labels.splits import carry_split, fresh_split, read_split, write_split_new
from byu.labels.store import LabelStore
from byu.review.settings import RenderSettings
from flows.base import (
    RETRY_DELAYS,
    ReviewSettings,
    cache_on,
    data_path,
    data_root,
    make_reviewer,
    required_path,
    tomogram_dirs,
    transient,
    version_files,
    version_tomograms,
)

# ------------------------------------------------------------------------------------------ what the tasks read


def _mine_reads(i: Mapping[str, Any]) -> list[Path | str]:
    """The version, the predictions (CSV + sidecar) and the tomograms the verifier reads."""
    predictions = Path(i["predictions"])
    tomograms = tomogram_dirs(i["data_dir"], i["tomo_ids"]) if i["tomo_ids"] is not None else \
        version_tomograms(i["data_dir"], i["labels_version"])
    return [*version_files(i["data_dir"], i["labels_version"]), predictions, predictions.with_suffix(".json"),
            *tomograms]


def _render_reads(i: Mapping[str, Any]) -> list[Path | str]:
    """The round's cases, the tomograms the batch's cases show and the version they were mined against (classes)."""
    from byu.review.round import ReviewRound

    rr = ReviewRound(data_root(i["data_dir"]), i["round_name"])
    wanted = None if i["images"] is None else set(i["images"])
    try:
        cases = [c for c in rr.cases() if wanted is None or c.image in wanted]
        version = rr.label_version()
    except ByuError:  # no cases (yet), or unreadable ones: the task fails on them, whatever the key
        return [rr.paths.cases]
    return [rr.paths.cases, *(version_files(i["data_dir"], version) if version else []),
            *tomogram_dirs(i["data_dir"], dict.fromkeys(t for c in cases for t in c.tomo_ids))]


# ------------------------------------------------------------------------------------------ tasks


@task(name="labels-snapshot", cache_policy=cache_on(lambda i: version_files(i["data_dir"], i["version"])),
      persist_result=True)
def tomograms_to_review(data_dir: str, version: str, max_labeled_motors: int | None) -> list[str]:
    """Tomograms of a version with at most ``max_labeled_motors`` labeled motors (None: all)."""
    labels = LabelStore(data_root(data_dir).labels).get(version)
    counts = labels.motor_counts()
    return sorted(t for t in labels.tomo_ids if max_labeled_motors is None or counts[t] <= max_labeled_motors)


@task(name="mine-cases", cache_policy=cache_on(_mine_reads), persist_result=True)
def mine_task(data_dir: str, round_name: str, labels_version: str, predictions: str, threshold: float,
              review: ReviewSettings, tomo_ids: list[str] | None) -> int:
    from byu.review.round import ReviewRound

    logger = get_run_logger()

    def progress(particle: str, done: int, total: int) -> None:
        logger.info("round %s: verifying %s labels, %d/%d fold models trained", round_name, particle, done, total)

    settings = review.mining.model_copy(update={"threshold": threshold})  # the round's prediction threshold
    result = ReviewRound(data_root(data_dir), round_name).mine(
        labels_version=labels_version, predictions=predictions, settings=settings, tomo_ids=tomo_ids,
        progress=progress)
    for name, info in result.summary().items():
        logger.info("round %s: %s: labels reviewed %s, predictions offered %d (beyond the budget %d), verifier "
                    "separation %s", round_name, name, info.get("labels_reviewed") or {}, info.get("offered", 0),
                    info.get("hidden", 0), info.get("verifier_auc"))
    logger.info("round %s: %d case(s) to review", round_name, len(result.cases))
    return len(result.cases)


@task(name="render-cases", cache_policy=cache_on(_render_reads), persist_result=True)
def render_task(data_dir: str, round_name: str, images: list[str] | None = None,
                settings: RenderSettings | None = None) -> int:
    """Render the cases whose image is in ``images`` (None: every case); the flow gives each batch its own task."""
    from byu.review.round import ReviewRound

    rr = ReviewRound(data_root(data_dir), round_name)
    wanted = None if images is None else set(images)
    return len(rr.render(cases=[c for c in rr.cases() if wanted is None or c.image in wanted], workers=1,
                         settings=settings))


@task(name="start-review", retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=transient)
def start_review_task(data_dir: str, round_name: str, review: ReviewSettings) -> str:
    from byu.review.round import ReviewRound

    message = ReviewRound(data_root(data_dir), round_name).start_review(make_reviewer(data_dir, round_name, review))
    get_run_logger().info("round %s: %s", round_name, message)
    return message


@task(name="review-finished", retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=transient)
def finished_task(data_dir: str, round_name: str, review: ReviewSettings) -> bool:
    from byu.review.round import ReviewRound

    return ReviewRound(data_root(data_dir), round_name).review_finished(make_reviewer(data_dir, round_name, review))


@task(name="collect-decisions", retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=transient)
def collect_task(data_dir: str, round_name: str, review: ReviewSettings) -> dict:
    from byu.review.round import ReviewRound

    result = ReviewRound(data_root(data_dir), round_name).collect_review(make_reviewer(data_dir, round_name, review))
    if result.left_out:
        get_run_logger().warning("round %s: %d case(s) tagged in CVAT jobs that are not completed were left out "
                                 "(set 'Take tags from unfinished CVAT jobs' to count them)", round_name,
                                 len(result.left_out))
    return {"decided": int(len(result.decisions)), "left_out": len(result.left_out)}


@task(name="review-quality", retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=transient)
def quality_task(data_dir: str, round_name: str, review: ReviewSettings) -> dict:
    """:func:`assess_and_second_review` as a flow task."""
    return assess_and_second_review(data_dir, round_name, review, get_run_logger())


def assess_and_second_review(data_dir: str, round_name: str, review: ReviewSettings, log: Any) -> dict:
    """Each reviewer's accuracy on the known-answer items, and the images a second reviewer sees (held, unsure,
    sampled) handed to them: a scripted one answers at once, an import one is read when its CSV is there, CVAT gets
    second-review tasks (the flow waits for them like for the first). Returns the assessment, with ``waiting``
    true when people still have to do the second review. ``log``: a logger (the flow run's, or any)."""
    from byu.review.decisions import import_decisions_csv
    from byu.review.round import CvatReviewer, ImportReviewer, ReviewRound, ScriptedReviewer

    rnd = ReviewRound(data_root(data_dir), round_name)
    report = rnd.assess(review.quality)
    for who, acc in report["accuracy"].items():
        log.info("round %s: reviewer %s: %s of %s known-answer items right (%s)", round_name, who or "(unnamed)",
                 acc["correct"], acc["n"], acc["accuracy"])
    images = list(report["second_review"])
    report["waiting"] = False
    if not images:
        return report
    log.info("round %s: %d image(s) for a second review (%s)", round_name, len(images),
             pd.Series(list(report["second_review"].values())).value_counts().to_dict())
    second = make_reviewer(data_dir, round_name, review, second=1)
    if isinstance(second, ScriptedReviewer):
        rnd.collect_second(second.decide(rnd, images))
    elif isinstance(second, ImportReviewer):
        if second.csv.is_file():
            rnd.collect_second(import_decisions_csv(second.csv, [c for c in rnd.cases() if c.image in set(images)]))
        else:
            log.warning("round %s: no second review yet: write %s (case_id or image, tags, reviewer) for the "
                        "images listed in %s, then rerun; until then held decisions are not applied", round_name,
                        second.csv, rnd.paths.quality)
    elif isinstance(second, CvatReviewer):
        from byu.review.cvat import push_second_review

        push_second_review(rnd.paths.dir, config=second.config, images=images, batch_size=second.batch_size)
        report["waiting"] = True
    return report


@task(name="resolve-reviews", retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=transient)
def resolve_task(data_dir: str, round_name: str, review: ReviewSettings) -> dict:
    """:func:`resolve_reviews` as a flow task."""
    return resolve_reviews(data_dir, round_name, review, get_run_logger())


def resolve_reviews(data_dir: str, round_name: str, review: ReviewSettings, log: Any) -> dict:
    """One decision per image from the reviews: where they disagree a scripted resolver (or a person's
    ``resolution.csv``) decides, else the more accurate reviewer; ``resolved_decisions.csv``."""
    from byu.review.quality import disputed_images
    from byu.review.round import ReviewRound, ScriptedReviewer, write_round_decisions

    rnd = ReviewRound(data_root(data_dir), round_name)
    first, other = rnd.reviews()
    disputed = disputed_images(rnd.cases(), first, other) if other is not None else []
    resolver = make_reviewer(data_dir, round_name, review, second=2)
    if disputed and isinstance(resolver, ScriptedReviewer):
        write_round_decisions(rnd.paths.resolution, resolver.decide(rnd, disputed), replace=True)
    out = rnd.resolve(review.quality)
    log.info("round %s: %d disputed image(s); decided %s; %d image(s) held (not applied)", round_name,
                          len(disputed), out.get("decided_by"), len(out.get("held", [])))
    return {k: out[k] for k in ("decided_by", "held", "agreement")}


@task(name="apply-decisions")
def apply_task(data_dir: str, round_name: str, from_version: str, to_version: str,
               overrides: str | None) -> dict:
    from byu.labels.diff import changes_by_class
    from byu.review.round import ReviewRound

    manifest, result = ReviewRound(data_root(data_dir), round_name).apply(
        from_version=from_version, to_version=to_version, producer=f"prefect flow {round_name}",
        overrides=data_path(data_dir, overrides, field="review.overrides_csv"))
    return {"version": manifest.name, "created": manifest.created, "label_changes": result.label_changes,
            "changes_by_class": changes_by_class(result.changes).to_dict("records"),
            "decided": len(result.applied_cases), "unsure": len(result.unsure_cases),
            "unreviewed": len(result.unreviewed_cases), "counts": manifest.counts,
            "class_counts": manifest.class_counts}


@task(name="cv-splits")
def splits_task(data_dir: str, version: str, out_dir: str, folds: list[int], seed: int,
                carry_from: str | None = None, max_val_motors: int = 1) -> dict[str, list[str]]:
    """The version's splits under ``cv/<out_dir>/``: ``splits`` (every path) and ``splits_written`` (those this run
    wrote; the others were already there, identical)."""
    root = data_root(data_dir)
    labels = LabelStore(root.labels).get(version)
    out: dict[str, list[str]] = {"splits": [], "splits_written": []}

    def store(split: dict, path) -> None:
        existed = path.exists()
        out["splits"].append(str(write_split_new(split, path)))  # an existing file with other content: refused
        if not existed:
            out["splits_written"].append(str(path))

    if carry_from:
        prev = required_path(data_dir, carry_from, field="carry_split")
        prev = prev if prev.exists() else root.cv / carry_from
        split = carry_split(labels, read_split(prev), max_val_motors=max_val_motors)
        store(split, root.cv / out_dir / f"skf{split['num_folds']}_rd{split['random_state']}.json")
    else:
        for k in folds:
            store(fresh_split(labels, folds=k, seed=seed, max_val_motors=max_val_motors),
                  root.cv / out_dir / f"skf{k}_rd{seed}.json")
    return out


@task(name="combine-versions")
def combine_task(data_dir: str, parts: list[str], to_version: str, round_name: str) -> dict:
    from byu.labels.combine import combine_labels

    store = LabelStore(data_root(data_dir).labels)
    labels = combine_labels([(p, store.get(p)) for p in parts])
    m = store.put(to_version, labels, parents=list(parts), producer=f"prefect flow {round_name}",
                  extra={"round": round_name, "combined": list(parts)})
    return {"version": m.name, "counts": m.counts, "class_counts": m.class_counts}

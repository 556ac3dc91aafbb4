"""The review step of every round, composed of the shared tasks: predictions → cases → images → the reviewer →
(waiting for people) → decisions → the new version."""

from __future__ import annotations

import itertools
import time

from prefect import get_run_logger
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.runtime import deployment, flow_run

from byu.labels.store import LabelStore
from byu.predictions import PredictMode
from byu.review.cases import read_cases
from byu.review.paths import round_paths
from flows.artifacts import handoff_artifact
from flows.base import (
    DAY_S,
    ReviewFinished,
    ReviewSettings,
    cached,
    data_root,
    make_reviewer,
    model_run_dirs,
    refuse_existing_version,
)
from flows.common import (
    apply_task,
    collect_task,
    combine_task,
    finished_task,
    mine_task,
    quality_task,
    render_task,
    resolve_task,
    start_review_task,
)
from flows.model_tasks import predict_with_fingerprint
from flows.task_runners import ENV_RENDER_BATCH, RENDER_BATCH, batch_size, map_batches

# ------------------------------------------------------------------------------------------ the review step


def _still_missing(data_dir: str, round_name: str, review: ReviewSettings) -> str | None:
    """Why a person's resume finds nothing to collect yet, or None. A CVAT round collects when resumed (whatever
    jobs are done, as ``byu review resume`` does); an import round needs its decisions CSV."""
    if review.reviewer != "import" or finished_task(data_dir, round_name, review):
        return None
    return (f"The run was resumed, but the decisions CSV `{make_reviewer(data_dir, round_name, review).csv}` is "
            "still missing: write it, then resume the run again.")


def _wait_key(attempt: int) -> str:
    """The pause key of this execution's ``attempt``-th wait. Prefect keeps each wait's input
    (``paused-<key>-schema``) for the life of the flow run and refuses a second one under the same key (409), so
    the key holds the run count this execution started with: a retried run (the count goes up, also with each
    resume of a blocking pause) gets new keys, while a suspended run that restarts after a resume keeps its count,
    meets the same keys and reads the answers it was given."""
    return f"review-r{flow_run.run_count}-w{attempt}"


def wait_for_review(data_dir: str, round_name: str, review: ReviewSettings) -> None:
    """Block until the round's review is done (see ``ReviewSettings.wait``); the hand-off is in the artifacts.
    Pause and suspend wait for a person's resume, and wait again when it finds nothing to collect."""
    log = get_run_logger()
    if finished_task(data_dir, round_name, review):
        return
    mode = review.wait.mode if review.wait.mode != "auto" else ("suspend" if deployment.id else "poll")
    shown = review.model_copy(update={"wait": review.wait.model_copy(update={"mode": mode})})
    handoff_artifact(data_dir, round_name, shown)
    if mode in ("pause", "suspend"):
        deadline = time.monotonic() + review.wait.timeout_days * DAY_S
        poll_s = int(min(10.0, max(1.0, review.wait.poll_interval_s)))  # how often a pause asks if it was resumed
        for attempt in itertools.count(1):
            timeout = max(1, int(deadline - time.monotonic()))
            if mode == "pause":
                answer = pause_flow_run(wait_for_input=ReviewFinished, timeout=timeout, poll_interval=poll_s,
                                        key=_wait_key(attempt))
            else:
                answer = suspend_flow_run(wait_for_input=ReviewFinished, timeout=timeout, key=_wait_key(attempt))
            log.info("review of round %s resumed by a person%s", round_name,
                     f": {answer.note}" if answer.note else "")
            missing = _still_missing(data_dir, round_name, review)
            if missing is None:
                return
            log.warning("round %s: %s Waiting again.", round_name, missing)
            handoff_artifact(data_dir, round_name, shown, note=missing)
    deadline = time.monotonic() + review.wait.timeout_days * DAY_S
    while not finished_task(data_dir, round_name, review):
        if time.monotonic() > deadline:
            log.warning("review wait timed out after %.1f days; collecting what is done", review.wait.timeout_days)
            return
        time.sleep(review.wait.poll_interval_s)


def review_round(data_dir: str, round_name: str, *, labels_version: str, predictions: str, threshold: float,
                 review: ReviewSettings, tomo_ids: list[str] | None) -> int:
    """Mine → render → hand to the reviewer → wait → collect ``decisions.csv``. Returns the number of cases."""

    paths = round_paths(data_root(data_dir), round_name)
    n_cases = cached(mine_task, [paths.cases])(data_dir, round_name, labels_version, predictions, threshold, review,
                                               tomo_ids)

    map_batches(render_task, [c.image for c in read_cases(paths.cases)], data_dir, round_name,
                size=batch_size(ENV_RENDER_BATCH, RENDER_BATCH),
                outputs=lambda batch: [paths.images / image for image in batch], settings=review.render)
    if n_cases:
        start_review_task(data_dir, round_name, review)
        if review.reviewer != "scripted":
            wait_for_review(data_dir, round_name, review)
    collect_task(data_dir, round_name, review)
    if n_cases:
        assessed = quality_task(data_dir, round_name, review)
        if assessed["waiting"]:  # second-review tasks in CVAT: wait for those people too, then pull again
            wait_for_review(data_dir, round_name, review)
            collect_task(data_dir, round_name, review)
        if assessed["second_review"] or any(a["n"] for a in assessed["accuracy"].values()):
            resolve_task(data_dir, round_name, review)
    return n_cases


def predict_review_apply(data_dir: str, *, round_name: str, model_dirs: list[str], mode: PredictMode, tta: str,
                         threshold: float, labels_version: str, to_version: str, review: ReviewSettings,
                         tomo_ids: list[str] | None, allow_seen: bool) -> dict:
    """The heart of every round: predictions → cases → review → ``to_version`` (parent ``labels_version``)."""

    suffix = "oof" if mode == "oof" else "ensemble"
    runs = [str(p) for p in model_run_dirs(data_dir, model_dirs)]
    predictions = predict_with_fingerprint(data_dir, runs, mode=mode, tta=tta, threshold=threshold,
                                           tomo_ids=tomo_ids, out_name=f"{round_name}_{suffix}",
                                           allow_seen=allow_seen)
    n_cases = review_round(data_dir, round_name, labels_version=labels_version, predictions=predictions,
                           threshold=threshold, review=review, tomo_ids=tomo_ids)
    applied = apply_task(data_dir, round_name, labels_version, to_version, review.overrides_csv)
    return {"round": round_name, "cases": n_cases, "predictions": predictions, **applied}


def combine_if_present(data_dir: str, parts: list[str], to_version: str, round_name: str) -> dict | None:
    """``to_version = parts[0] + parts[1] + ...`` when every part exists (e.g. all_gt = gt_v2 + external_gt)."""
    root = data_root(data_dir)
    store = LabelStore(root.labels)
    if not all(store.exists(p) for p in parts):
        return None
    refuse_existing_version(root, to_version, round_name)
    return combine_task(data_dir, parts, to_version, round_name)

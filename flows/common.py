"""Parameters and tasks shared by the flows. Tasks are thin: each calls one ``byu`` function.

Caching: tasks that do real work cache on their inputs + source (``INPUTS + TASK_SOURCE``), with content
fingerprints of the files they read among the inputs, and persist their results in Prefect's local storage
(``$PREFECT_HOME/storage``; ``make serve`` and ``byu demo`` keep ``PREFECT_HOME`` inside the data root). A cached
result whose output files are gone is recomputed (:func:`cached`). The byu functions the tasks call are themselves
idempotent on disk, so a flow killed anywhere and rerun skips what is finished and writes the same versions.
Retries (with backoff) are for transient failures only: a ``ByuError`` (bad input, a refused version) fails at once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Literal

from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field

from byu.atomic import sha256_file
from byu.errors import ByuError, VersionExistsError
from byu.labels.splits import carry_split, fresh_split, read_split, write_split
from byu.labels.store import LabelStore
from byu.paths import DataRoot

CACHE = INPUTS + TASK_SOURCE
RETRY_DELAYS = [5, 30, 120]  # backoff for portal and CVAT calls


# ------------------------------------------------------------------------------------------ parameters


class ReviewSettings(BaseModel):
    """Who reviews the cases and how the flow waits for them."""

    reviewer: Literal["cvat", "scripted", "import"] = Field(
        default="cvat", description="cvat: push tasks and wait for annotators; scripted: answer from a truth "
        "table (demo, tests); import: read a decisions CSV made outside CVAT")
    truth: str | None = Field(default=None, description="scripted: truth label table (version name or CSV path)")
    decisions_csv: str | None = Field(default=None, description="import: decisions CSV (case_id or image, tags)")
    wait: Literal["poll", "pause", "suspend"] = Field(
        default="poll", description="poll: check CVAT job states every poll_interval_s until all are completed "
        "(touch review/<round>/cvat/PULL_NOW to pull early); pause: wait for a 'review finished' input in the "
        "Prefect UI; suspend: like pause but frees the worker (deployments only; the flow reruns from cache)")
    poll_interval_s: float = Field(default=60.0, gt=0, description="seconds between CVAT status checks")
    timeout_s: float = Field(default=14 * 24 * 3600, gt=0, description="give up waiting after this long")
    max_candidates: int = Field(default=5, ge=1, le=20, description="candidates shown per case image")
    batch_size: int = Field(default=100, ge=1, description="images per CVAT task")
    radius_A: float = Field(default=1000.0, gt=0, description="match radius in Å")
    confirm_threshold: float | None = Field(
        default=0.6, ge=0, le=1, description="also review labeled motors whose matching prediction is weaker than "
        "this (likely false labels the model half-believes); empty: only unmatched labels")
    cvat_url: str | None = Field(default=None, description="CVAT URL (default: env BYU_CVAT_URL)")
    cvat_secret_block: str | None = Field(
        default=None, description="name of a Prefect Secret block holding the CVAT password or token "
        "(default: env BYU_CVAT_PASSWORD / BYU_CVAT_TOKEN)")
    overrides_csv: str | None = Field(default=None, description="manual overrides applied after the review")


class ReviewFinished(RunInput):
    """What a person answers in the Prefect UI when the flow pauses for review."""

    finished: bool = Field(default=True, description="the review is finished (or: pull what is done now)")
    note: str = Field(default="", description="optional note kept in the flow logs")


# ------------------------------------------------------------------------------------------ helpers


def data_root(data_dir: str | None) -> DataRoot:
    return DataRoot.from_env(data_dir)


def cached(task_fn, outputs: list[Path]):
    """``task_fn``, made to recompute when any of the files its cached result stands for is missing."""
    return task_fn.with_options(refresh_cache=not all(Path(p).exists() for p in outputs))


def transient(task, task_run, state) -> bool:
    """Retry condition: retry unless the failure is a byu error (bad input, refused version: retrying won't help)."""
    try:
        state.result()
    except ByuError:
        return False
    except Exception:
        return True
    return True


def refuse_existing_version(root: DataRoot, name: str, round_name: str) -> None:
    """A flow may complete its own version after a crash, but never overwrite another one."""
    store = LabelStore(root.labels)
    if store.exists(name):
        m = store.manifest(name)
        if m.extra.get("round") != round_name:
            raise VersionExistsError(
                f"label version {name!r} already exists (made by {m.producer!r}); versions are immutable — "
                "choose another target version name")


def fingerprint(paths: list[Path]) -> str:
    """Content fingerprint of input files, so caches refresh when a checkpoint or table changes."""
    return ";".join(f"{p.name}:{sha256_file(p)[:16]}" for p in sorted(paths))


def cvat_config(review: ReviewSettings):
    from byu.review.cvat import CvatConfig

    overrides: dict = {"url": review.cvat_url}
    if review.cvat_secret_block:
        from prefect.blocks.system import Secret

        secret = Secret.load(review.cvat_secret_block).get()
        key = "token" if os.environ.get("BYU_CVAT_USER") is None else "password"
        overrides[key] = secret
    return CvatConfig.from_env(**overrides)


# ------------------------------------------------------------------------------------------ tasks


@task(name="labels-snapshot", cache_policy=CACHE, persist_result=True)
def tomograms_to_review(data_dir: str, version: str, max_labeled_motors: int | None) -> list[str]:
    """Tomograms of a version with at most ``max_labeled_motors`` labels (None: all)."""
    table = LabelStore(data_root(data_dir).labels).get(version)
    if max_labeled_motors is not None:
        table = table[table["num_motors"] <= max_labeled_motors]
    return sorted(table["tomo_id"])


@task(name="mine-cases", cache_policy=CACHE, persist_result=True)
def mine_task(data_dir: str, round_name: str, labels_version: str, predictions: str, threshold: float,
              review: ReviewSettings, tomo_ids: list[str] | None, predictions_fingerprint: str = "") -> int:
    from byu.review.round import mine_round

    cases = mine_round(data_root(data_dir), round_name, labels_version=labels_version, predictions=predictions,
                       threshold=threshold, radius_A=review.radius_A, max_candidates=review.max_candidates,
                       tomo_ids=tomo_ids, confirm_threshold=review.confirm_threshold)
    get_run_logger().info("round %s: %d case(s) to review", round_name, len(cases))
    return len(cases)


@task(name="render-cases", cache_policy=CACHE, persist_result=True)
def render_task(data_dir: str, round_name: str, n_cases: int) -> int:
    from byu.review.match import read_cases
    from byu.review.render import render_cases
    from byu.review.round import round_paths

    root = data_root(data_dir)
    paths = round_paths(root, round_name)
    images = render_cases(read_cases(paths.cases), root.tomograms, paths.images)
    return len(images)


@task(name="push-to-cvat", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient)
def push_task(data_dir: str, round_name: str, review: ReviewSettings) -> list[str]:
    from byu.review.cvat import push_round
    from byu.review.round import round_paths

    entries = push_round(round_paths(data_root(data_dir), round_name).dir, config=cvat_config(review),
                         batch_size=review.batch_size)
    return [e["name"] for e in entries]


@task(name="review-status", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient)
def status_task(data_dir: str, round_name: str, review: ReviewSettings) -> dict:
    from byu.review.cvat import round_status
    from byu.review.round import round_paths

    status = round_status(round_paths(data_root(data_dir), round_name).dir, config=cvat_config(review))
    cols = [c for c in ("new", "in progress", "completed", "rejected") if c in status.columns]
    totals = {c: int(status[c].sum()) for c in cols}
    return totals


@task(name="pull-from-cvat", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient)
def pull_task(data_dir: str, round_name: str, review: ReviewSettings) -> int:
    from byu.review.cvat import pull_round
    from byu.review.decisions import decisions_from_round, write_decisions
    from byu.review.round import round_paths

    paths = round_paths(data_root(data_dir), round_name)
    pull_round(paths.dir, config=cvat_config(review))
    result = decisions_from_round(paths.dir)
    write_decisions(result, paths.decisions)
    return len(result.decisions)


@task(name="scripted-review", cache_policy=CACHE, persist_result=True)
def scripted_review_task(data_dir: str, round_name: str, truth: str, n_cases: int) -> int:
    from byu.review.match import read_cases
    from byu.review.round import round_paths
    from byu.review.scripted import scripted_decisions
    from byu.review.decisions import write_decisions

    root = data_root(data_dir)
    paths = round_paths(root, round_name)
    truth_table, _ = LabelStore(root.labels).resolve(truth)
    decisions = scripted_decisions(read_cases(paths.cases), truth_table)
    write_decisions(decisions, paths.decisions)
    return len(decisions)


@task(name="import-decisions")
def import_task(data_dir: str, round_name: str, decisions_csv: str) -> int:
    from byu.review.decisions import import_decisions_csv, write_decisions
    from byu.review.round import round_paths

    paths = round_paths(data_root(data_dir), round_name)
    result = import_decisions_csv(decisions_csv, paths.cases)
    write_decisions(result, paths.decisions)
    return len(result.decisions)


@task(name="apply-decisions")
def apply_task(data_dir: str, round_name: str, from_version: str, to_version: str,
               overrides: str | None) -> dict:
    from byu.review.round import apply_round

    manifest, result = apply_round(data_root(data_dir), round_name, from_version=from_version,
                                   to_version=to_version, overrides=overrides,
                                   producer=f"prefect flow {round_name}")
    return {"version": manifest.name, "label_changes": result.label_changes,
            "decided": len(result.applied_cases), "unsure": len(result.unsure_cases),
            "unreviewed": len(result.unreviewed_cases), "counts": manifest.counts}


@task(name="cv-splits")
def splits_task(data_dir: str, version: str, out_dir: str, folds: list[int], seed: int,
                carry_from: str | None = None, max_val_motors: int = 1) -> list[str]:
    root = data_root(data_dir)
    table = LabelStore(root.labels).get(version)
    written = []
    if carry_from:
        split = carry_split(table, read_split(root.cv / carry_from), max_val_motors=max_val_motors)
        k = split["num_folds"]
        written.append(str(write_split(split, root.cv / out_dir / f"skf{k}_rd{split['random_state']}.json")))
    else:
        for k in folds:
            split = fresh_split(table, folds=k, seed=seed, max_val_motors=max_val_motors)
            written.append(str(write_split(split, root.cv / out_dir / f"skf{k}_rd{seed}.json")))
    return written


@task(name="combine-versions")
def combine_task(data_dir: str, parts: list[str], to_version: str, round_name: str) -> dict:
    from byu.labels.combine import combine_tables

    store = LabelStore(data_root(data_dir).labels)
    table = combine_tables([(p, store.get(p)) for p in parts])
    m = store.put(to_version, table, parents=list(parts), producer=f"prefect flow {round_name}",
                  extra={"round": round_name, "combined": list(parts)})
    return {"version": m.name, "counts": m.counts}


# ------------------------------------------------------------------------------------------ the review step


def wait_for_review(data_dir: str, round_name: str, review: ReviewSettings) -> None:
    """Block until the round's review is done (see ``ReviewSettings.wait``)."""
    log = get_run_logger()
    if review.wait == "pause":
        answer = pause_flow_run(wait_for_input=ReviewFinished, timeout=int(review.timeout_s))
        log.info("review resumed by a person: %s", answer.note or "(no note)")
        return
    if review.wait == "suspend":
        answer = suspend_flow_run(wait_for_input=ReviewFinished, timeout=int(review.timeout_s))
        log.info("review resumed by a person: %s", answer.note or "(no note)")
        return
    flag = data_root(data_dir).review_round(round_name) / "cvat" / "PULL_NOW"
    deadline = time.monotonic() + review.timeout_s
    while True:
        totals = status_task(data_dir, round_name, review)
        open_jobs = sum(v for k, v in totals.items() if k != "completed")
        log.info("round %s jobs: %s", round_name, json.dumps(totals))
        if open_jobs == 0:
            return
        if flag.exists():
            log.info("pulling early: %s exists", flag)
            flag.unlink()
            return
        if time.monotonic() > deadline:
            log.warning("review wait timed out after %.0f s; pulling what is done", review.timeout_s)
            return
        time.sleep(review.poll_interval_s)


def review_round(data_dir: str, round_name: str, *, labels_version: str, predictions: str, threshold: float,
                 review: ReviewSettings, tomo_ids: list[str] | None) -> int:
    """Mine → render → review (CVAT, scripted or imported) → decisions.csv. Returns the number of cases."""
    from byu.review.round import round_paths

    paths = round_paths(data_root(data_dir), round_name)
    n_cases = cached(mine_task, [paths.cases])(data_dir, round_name, labels_version, predictions, threshold, review,
                                               tomo_ids, predictions_fingerprint=fingerprint([Path(predictions)]))
    cached(render_task, [paths.images])(data_dir, round_name, n_cases)
    if n_cases == 0:
        from byu.review.decisions import write_decisions
        from byu.review.round import round_paths
        import pandas as pd

        from byu.review.decisions import DECISION_COLUMNS

        write_decisions(pd.DataFrame(columns=DECISION_COLUMNS),
                        round_paths(data_root(data_dir), round_name).decisions)
        return 0
    if review.reviewer == "scripted":
        if not review.truth:
            raise ValueError("reviewer='scripted' needs review.truth (a truth table)")
        cached(scripted_review_task, [paths.decisions])(data_dir, round_name, review.truth, n_cases)
    elif review.reviewer == "import":
        if not review.decisions_csv:
            raise ValueError("reviewer='import' needs review.decisions_csv")
        import_task(data_dir, round_name, review.decisions_csv)
    else:
        push_task(data_dir, round_name, review)
        wait_for_review(data_dir, round_name, review)
        pull_task(data_dir, round_name, review)
    return n_cases


def predict_review_apply(data_dir: str, *, round_name: str, model_dirs: list[str], mode: str, tta: str,
                         threshold: float, labels_version: str, to_version: str, review: ReviewSettings,
                         tomo_ids: list[str] | None, allow_seen: bool) -> dict:
    """The heart of every round: predictions → cases → review → ``to_version`` (parent ``labels_version``)."""
    from flows.model_tasks import predict_with_fingerprint

    suffix = "oof" if mode == "oof" else "ensemble"
    predictions = predict_with_fingerprint(data_dir, model_dirs, mode=mode, tta=tta, threshold=threshold,
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

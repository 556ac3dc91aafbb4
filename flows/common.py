"""Parameters and tasks shared by the flows. Tasks are thin: each calls one ``byu`` function.

Paths given to a flow (model runs, truth tables, decisions CSVs, overrides, splits) are resolved against the data
root when relative (:func:`data_path`), so a deployment's defaults work wherever ``BYU_DATA`` points.

Caching: tasks that do real work cache on their inputs + source (``INPUTS + TASK_SOURCE``), with content
fingerprints of the files they read among the inputs, and persist their results in Prefect's local storage
(``$PREFECT_HOME/storage``). A cached result whose output files are gone is recomputed (:func:`cached`). The byu
functions the tasks call are themselves idempotent on disk, so a flow killed anywhere and rerun skips what is
finished and writes the same versions. Retries (with backoff) are for transient failures only: a ``ByuError``
(bad input, a refused version) fails at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field

from byu.atomic import sha256_file
from byu.errors import ByuError, InputError, VersionExistsError
from byu.labels.splits import carry_split, fresh_split, read_split, write_split_new
from byu.labels.store import LabelStore
from byu.paths import DataRoot
from byu.review.match import VERIFY_QUANTILE
from byu.review.verify import VerifierSettings

CACHE = INPUTS + TASK_SOURCE
RETRY_DELAYS = [5, 30, 120]  # backoff for portal and CVAT calls
DAY_S = 24 * 3600


# ------------------------------------------------------------------------------------------ parameters


class ReviewSettings(BaseModel):
    """Who reviews the cases and how the flow waits for them."""

    reviewer: Literal["cvat", "scripted", "import"] = Field(
        default="cvat", title="Reviewer",
        description="cvat: push tasks to CVAT and wait for annotators · scripted: answer from a truth table "
        "(demo, tests) · import: wait for a decisions CSV made outside CVAT")
    truth: str | None = Field(default=None, title="Truth labels (scripted)",
                              description="scripted reviewer: a label version name or a file (relative paths are "
                              "under the data root)")
    decisions_csv: str | None = Field(
        default=None, title="Decisions CSV (import)",
        description="import reviewer: the CSV people fill outside CVAT (case_id or image, tags, reviewer); "
        "relative paths are under the data root; default review/ROUND/outside_decisions.csv")
    wait: Literal["auto", "poll", "pause", "suspend"] = Field(
        default="auto", title="How to wait for people",
        description="auto: suspend when run from a deployment, else poll · poll: check every poll interval until "
        "the review is done (CVAT: all jobs completed; import: the CSV exists) · pause: wait for 'Resume' in the "
        "Prefect UI · suspend: like pause but frees the worker while people review (deployments only; the run "
        "restarts from its cached steps)")
    poll_interval_s: float = Field(default=60.0, gt=0, title="Poll interval (s)",
                                   description="seconds between checks when waiting by polling")
    timeout_days: float = Field(default=14.0, gt=0, title="Wait timeout (days)",
                                description="give up waiting after this long (polling: collect what is done)")
    max_candidates: int = Field(default=5, ge=1, le=20, title="Candidates per image",
                                description="predictions shown per case image")
    max_fp_cases: int | None = Field(default=1, ge=1, title="FP cases per tomogram and class",
                                     description="unmatched predictions shown per tomogram and class, in cases of "
                                     "'Candidates per image' each; empty: all of them (crowded classes)")
    batch_size: int = Field(default=100, ge=1, title="Images per CVAT task")
    radius_A: float | None = Field(default=None, gt=0, title="Match radius override (Å)",
                                   description="empty: each class's own match radius (motor 1000 Å)")
    confirm_threshold: float | Literal["auto"] | None = Field(
        default="auto", title="Confirm threshold",
        description="also review labels whose matching prediction is weaker than this (likely false labels the "
        "model half-believes): a number, 'auto' (per class, below 3/4 of the median of how strongly the models support "
        "that class's labels in this round), or empty: only unmatched labels")
    fp_threshold: float | Literal["auto"] | None = Field(
        default="auto", title="FP case threshold",
        description="show unlabeled predictions as FP cases only when at least this confident: a number, 'auto' "
        "(per class, half the confirm threshold) or empty: every one above the prediction threshold")
    verify_labels: bool = Field(
        default=True, title="Verify labels",
        description="train a small crop classifier on the round's labels against its unlabeled predictions (cross-"
        "fitted by tomogram) and also review the labels it believes least (false labels on look-alike decoys)")
    verify_quantile: float = Field(default=VERIFY_QUANTILE, ge=0, le=1, title="Verification quantile",
                                   description="review the labels verified below this quantile of their class")
    include_incomplete: bool = Field(default=False, title="Take tags from unfinished CVAT jobs",
                                     description="off: only jobs marked completed count")
    cvat_url: str | None = Field(default=None, title="CVAT URL", description="default: env BYU_CVAT_URL")
    cvat_secret_block: str | None = Field(
        default=None, title="CVAT secret block",
        description="name of a Prefect Secret block holding the CVAT password or token (default: env "
        "BYU_CVAT_PASSWORD / BYU_CVAT_TOKEN)")
    overrides_csv: str | None = Field(default=None, title="Manual overrides CSV",
                                      description="applied after the review (relative: under the data root)")

    def mining_kwargs(self) -> dict[str, Any]:
        """The :meth:`byu.review.round.ReviewRound.mine` settings these review settings ask for."""
        return {"radius_A": self.radius_A, "max_candidates": self.max_candidates,
                "confirm_threshold": self.confirm_threshold, "max_fp_cases": self.max_fp_cases,
                "fp_threshold": self.fp_threshold, "verify": VerifierSettings() if self.verify_labels else None,
                "verify_quantile": self.verify_quantile}


class ReviewFinished(RunInput):
    """What a person answers in the Prefect UI when the flow waits for review."""

    note: str = Field(default="", title="Note", description="optional note kept in the run's logs")


# ------------------------------------------------------------------------------------------ helpers


def data_root(data_dir: str | None) -> DataRoot:
    return DataRoot(DataRoot.from_env(data_dir).root.resolve())


def data_path(data_dir: str, value: str | os.PathLike | None, *, field: str) -> Path | None:
    """``value`` as a path: absolute as given, relative ones under the data root (``None`` stays None)."""
    if value is None or str(value) == "":
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else data_root(data_dir).root / p


def model_run_dirs(data_dir: str, model_dirs: list[str], *, field: str = "model_dirs") -> list[Path]:
    """Model run directories (a run name, or a path relative to the data root); errors name every place searched."""
    root = data_root(data_dir)
    out, missing = [], []
    for d in model_dirs:
        candidates = [data_path(data_dir, d, field=field)]
        if "/" not in str(d):
            candidates.append(root.models / str(d))
        found = next((c for c in candidates if c is not None and any(c.glob("fold*.pt"))), None)
        if found is None:
            missing.append(f"{d!r} (looked in {', '.join(str(c) for c in candidates if c is not None)})")
        else:
            out.append(found)
    if missing:
        raise InputError("no fold checkpoints (fold<k>.pt) for " + "; ".join(missing) + ": train a model run first "
                         "(the train flow) or fix the model run paths", field=field)
    return out


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
    from byu.review.cvat import ENV_URL, CvatConfig

    overrides: dict = {"url": review.cvat_url}
    if review.cvat_secret_block:
        from prefect.blocks.system import Secret

        secret = Secret.load(review.cvat_secret_block).get()
        key = "token" if os.environ.get("BYU_CVAT_USER") is None else "password"
        overrides[key] = secret
    if not (review.cvat_url or os.environ.get(ENV_URL)):
        raise InputError(f"no CVAT server: fill in 'CVAT URL' (review.cvat_url) or set {ENV_URL}",
                         field="review.cvat_url")
    try:
        return CvatConfig.from_env(**overrides)
    except ValueError as exc:
        raise InputError(f"CVAT settings: {exc}", field="review.cvat_secret_block") from None


def make_reviewer(data_dir: str, round_name: str, review: ReviewSettings):
    """The byu reviewer the settings describe (built inside tasks: CVAT secrets never become task inputs)."""
    from byu.review.round import CvatReviewer, ImportReviewer, ScriptedReviewer, round_paths

    root = data_root(data_dir)
    if review.reviewer == "scripted":
        if not review.truth:
            raise InputError("the scripted reviewer needs a truth table: fill in 'Truth labels' (review.truth)",
                             field="review.truth")
        store = LabelStore(root.labels)
        try:
            is_version = "/" not in review.truth and not review.truth.lower().endswith(".csv") \
                and store.exists(review.truth)
        except InputError:
            is_version = False
        ref = review.truth if is_version else data_path(data_dir, review.truth, field="review.truth")
        labels, _ = store.resolve(ref, data_root=root)
        return ScriptedReviewer(truth=labels)
    if review.reviewer == "import":
        csv = data_path(data_dir, review.decisions_csv, field="review.decisions_csv") or \
            round_paths(root, round_name).outside_decisions
        return ImportReviewer(csv=csv)
    return CvatReviewer(config=cvat_config(review), batch_size=review.batch_size,
                        include_incomplete=review.include_incomplete)


# ------------------------------------------------------------------------------------------ tasks


@task(name="labels-snapshot", cache_policy=CACHE, persist_result=True)
def tomograms_to_review(data_dir: str, version: str, max_labeled_motors: int | None,
                        version_fingerprint: str = "") -> list[str]:
    """Tomograms of a version with at most ``max_labeled_motors`` labeled motors (None: all)."""
    labels = LabelStore(data_root(data_dir).labels).get(version)
    counts = labels.motor_counts()
    return sorted(t for t in labels.tomo_ids if max_labeled_motors is None or counts[t] <= max_labeled_motors)


@task(name="mine-cases", cache_policy=CACHE, persist_result=True)
def mine_task(data_dir: str, round_name: str, labels_version: str, predictions: str, threshold: float,
              review: ReviewSettings, tomo_ids: list[str] | None, predictions_fingerprint: str = "") -> int:
    from byu.review.round import ReviewRound

    logger = get_run_logger()

    def progress(particle: str, done: int, total: int) -> None:
        logger.info("round %s: verifying %s labels, %d/%d fold models trained", round_name, particle, done, total)

    cases = ReviewRound(data_root(data_dir), round_name).mine(
        labels_version=labels_version, predictions=predictions, threshold=threshold,
        tomo_ids=tomo_ids, progress=progress, **review.mining_kwargs())
    logger.info("round %s: %d case(s) to review", round_name, len(cases))
    return len(cases)


@task(name="render-cases", cache_policy=CACHE, persist_result=True)
def render_task(data_dir: str, round_name: str, cases_fingerprint: str, images: list[str] | None = None) -> int:
    """Render the cases whose image is in ``images`` (None: every case); the flow gives each batch its own task."""
    from byu.review.round import ReviewRound

    rr = ReviewRound(data_root(data_dir), round_name)
    wanted = None if images is None else set(images)
    return len(rr.render(cases=[c for c in rr.cases() if wanted is None or c.image in wanted], workers=1))


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
                carry_from: str | None = None, max_val_motors: int = 1) -> list[str]:
    root = data_root(data_dir)
    labels = LabelStore(root.labels).get(version)
    written = []
    if carry_from:
        prev = data_path(data_dir, carry_from, field="carry_split")
        prev = prev if prev.exists() else root.cv / carry_from
        split = carry_split(labels, read_split(prev), max_val_motors=max_val_motors)
        k = split["num_folds"]
        written.append(str(write_split_new(split, root.cv / out_dir / f"skf{k}_rd{split['random_state']}.json")))
    else:
        for k in folds:
            split = fresh_split(labels, folds=k, seed=seed, max_val_motors=max_val_motors)
            written.append(str(write_split_new(split, root.cv / out_dir / f"skf{k}_rd{seed}.json")))
    return written


@task(name="combine-versions")
def combine_task(data_dir: str, parts: list[str], to_version: str, round_name: str) -> dict:
    from byu.labels.combine import combine_labels

    store = LabelStore(data_root(data_dir).labels)
    labels = combine_labels([(p, store.get(p)) for p in parts])
    m = store.put(to_version, labels, parents=list(parts), producer=f"prefect flow {round_name}",
                  extra={"round": round_name, "combined": list(parts)})
    return {"version": m.name, "counts": m.counts, "class_counts": m.class_counts}


# ------------------------------------------------------------------------------------------ the review step


def wait_for_review(data_dir: str, round_name: str, review: ReviewSettings) -> None:
    """Block until the round's review is done (see ``ReviewSettings.wait``); the hand-off is in the artifacts."""
    from flows.artifacts import handoff_artifact

    from prefect.runtime import deployment

    log = get_run_logger()
    if finished_task(data_dir, round_name, review):
        return
    mode = review.wait if review.wait != "auto" else ("suspend" if deployment.id else "poll")
    handoff_artifact(data_dir, round_name, review.model_copy(update={"wait": mode}))
    if mode in ("pause", "suspend"):
        wait = pause_flow_run if mode == "pause" else suspend_flow_run
        answer = wait(wait_for_input=ReviewFinished, timeout=int(review.timeout_days * DAY_S))
        log.info("review of round %s resumed by a person%s", round_name, f": {answer.note}" if answer.note else "")
        return
    deadline = time.monotonic() + review.timeout_days * DAY_S
    while not finished_task(data_dir, round_name, review):
        if time.monotonic() > deadline:
            log.warning("review wait timed out after %.1f days; collecting what is done", review.timeout_days)
            return
        time.sleep(review.poll_interval_s)


def review_round(data_dir: str, round_name: str, *, labels_version: str, predictions: str, threshold: float,
                 review: ReviewSettings, tomo_ids: list[str] | None) -> int:
    """Mine → render → hand to the reviewer → wait → collect ``decisions.csv``. Returns the number of cases."""
    from byu.review.round import round_paths

    paths = round_paths(data_root(data_dir), round_name)
    n_cases = cached(mine_task, [paths.cases])(data_dir, round_name, labels_version, predictions, threshold, review,
                                               tomo_ids, predictions_fingerprint=fingerprint([Path(predictions)]))
    from byu.review.cases import read_cases  # rendering: one task per batch of cases (flows/task_runners.py)
    from flows.task_runners import ENV_RENDER_BATCH, RENDER_BATCH, batch_size, map_batches

    map_batches(render_task, [c.image for c in read_cases(paths.cases)], data_dir, round_name,
                fingerprint([paths.cases]), size=batch_size(ENV_RENDER_BATCH, RENDER_BATCH),
                outputs=lambda batch: [paths.images / image for image in batch])
    if n_cases:
        start_review_task(data_dir, round_name, review)
        if review.reviewer != "scripted":
            wait_for_review(data_dir, round_name, review)
    collect_task(data_dir, round_name, review)
    return n_cases


def predict_review_apply(data_dir: str, *, round_name: str, model_dirs: list[str], mode: str, tta: str,
                         threshold: float, labels_version: str, to_version: str, review: ReviewSettings,
                         tomo_ids: list[str] | None, allow_seen: bool) -> dict:
    """The heart of every round: predictions → cases → review → ``to_version`` (parent ``labels_version``)."""
    from flows.model_tasks import predict_with_fingerprint

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

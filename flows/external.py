"""External: CryoET Data Portal ingest → ensemble predictions → review of disagreements → ``external_gt``.

Then ``all_gt = gt_v2 + external_gt`` when ``gt_v2`` exists. The ingest fans out one task per tomogram
(download → verify → preprocess → delete the raw file) through the flow's task runner, at most ``max_inflight``
at a time, so a portal-sized round streams with bounded disk; a killed run redoes only unfinished tomograms.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.futures import as_completed
from pydantic import Field

from flows.artifacts import result_artifacts
from flows.base import (
    RETRY_DELAYS,
    ReviewSettings,
    cache_on,
    data_path,
    data_root,
    transient,
)
from flows.checks import RoundForm, check_review_ready, target_versions
from flows.common import tomograms_to_review
from flows.rounds import combine_if_present, predict_review_apply
from flows.task_runners import task_runner_from_env


class ExternalParams(RoundForm):
    """What to take from the portal and how to review it."""

    data_dir: str | None = Field(default=None, title="Data root",
                                 description="default: env BYU_DATA, else ./data; relative paths below are under it")
    portal_url: str | None = Field(default=None, title="Portal GraphQL URL",
                                   description="default: env BYU_PORTAL_URL, else the public portal")
    dataset_ids: list[int] = Field(default_factory=list, title="Portal dataset ids",
                                   description="CryoET Data Portal dataset ids whose tomograms to ingest")
    run_names: list[str] = Field(default_factory=list, title="Portal run names",
                                 description="with dataset ids: only these runs of them; alone: runs of this name "
                                 "in any dataset")
    points_csv: str | None = Field(default=None, title="External points CSV",
                                   description="dataset_id,tomo_id (run name) + coordinates[, particle] selecting "
                                   "what to ingest (relative: under the data root)")
    objects: list[str] = Field(default_factory=lambda: ["motor"], title="Objects",
                               description="byu classes (motor, ribosome, ...), portal object names or GO ids")
    target_spacing: float = Field(default=16.0, gt=0, title="Working spacing (Å)",
                                  description="stored spacing is max(this, the tomogram's)")
    max_inflight: int = Field(default=4, ge=1, le=64, title="Tomograms at once",
                              description="downloaded and preprocessed at the same time (raw files on disk at most)")
    keep_raw: bool = Field(default=False, title="Keep raw downloads",
                           description="keep each downloaded raw tomogram after preprocessing (off: deleted, so "
                           "disk use stays bounded)")
    allow_partial: bool = Field(default=False, title="Store partial labels",
                                description="when some tomograms fail: store what is there as PORTAL_VERSION-partial "
                                "and review that")
    round_name: str = Field(default="external", title="Round name",
                            description="its files go to review/ROUND/ (letters, digits, '.', '_', '-'); the name "
                            "of an earlier round reuses that round's cases and review")
    portal_version: str = Field(default="external_gt_v0", title="Portal labels version",
                                description="the portal's own labels, as received")
    to_version: str = Field(default="external_gt", title="Reviewed version",
                            description="the reviewed portal labels; refused if it exists and was not made by this "
                            "round")
    model_dirs: list[str] = Field(default_factory=lambda: ["models/round2"], title="Model runs to ensemble",
                                  description="run names or paths (relative: under the data root)")
    threshold: float = Field(default=0.05, ge=0, le=1, title="Prediction threshold",
                             description="low, so every plausible miss shows up")
    tta: str = Field(default="flips", title="Test-time augmentation", description="none, flips or flips8")
    base_version: str = Field(default="gt_v2", title="Base version", description="combined with the reviewed "
                              "external labels when it exists")
    all_version: str = Field(default="all_gt", title="Combined version",
                             description="base + reviewed external labels, written when the base version exists; "
                             "refused if it exists and was not made by this round")
    review: ReviewSettings = Field(default_factory=ReviewSettings, title="Review settings",
                                   description="who reviews the cases, and how they are chosen, drawn and waited for")


@task(name="portal-find", retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=transient,
      cache_policy=cache_on(lambda i: [Path(i["points_csv"])] if i["points_csv"] else []), persist_result=True)
def find_task(data_dir: str, portal_url: str | None, dataset_ids: list[int], run_names: list[str],
              points_csv: str | None, objects: list[str], target_spacing: float) -> str:
    from byu.portal.ingest import find_step

    selection, path = find_step(portal_url or os.environ.get("BYU_PORTAL_URL"), data_root(data_dir),
                                dataset_ids=dataset_ids, run_names=run_names, points_csv=points_csv,
                                objects=objects, target_spacing=target_spacing)
    get_run_logger().info("portal selection: %d tomogram(s), %d point file(s) of %s, %d skipped",
                          len(selection.tomograms), len(selection.point_files),
                          ", ".join(c.name for c in selection.label_classes), len(selection.skipped))
    return str(path)


@task(name="portal-tomogram", retries=2, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=transient)
def tomogram_task(data_dir: str, selection_path: str, tomo_id: str, keep_raw: bool) -> dict:
    """One tomogram: download → verify → preprocess → delete the raw file (skipped when already stored)."""
    from byu.portal.ingest import ingest_tomogram
    from byu.portal.query import Selection

    selection = Selection.read(selection_path)
    t = selection.by_tomo_id()[tomo_id]
    r = ingest_tomogram(t, data_root(data_dir), fmt=selection.format, target_spacing=selection.target_spacing,
                        keep_raw=keep_raw)
    if r.status == "failed":
        get_run_logger().warning("tomogram %s failed: %s", tomo_id, r.error)
    return {"tomo_id": r.tomo_id, "status": r.status, "error": r.error, "download_s": round(r.download_s, 3),
            "preprocess_s": round(r.preprocess_s, 3), "raw_bytes": r.raw_bytes}


@task(name="portal-labels", retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=transient)
def labels_task(data_dir: str, selection_path: str, version: str, allow_partial: bool) -> dict:
    from byu.portal.ingest import labels_step
    from byu.portal.query import Selection

    report = labels_step(Selection.read(selection_path), data_root(data_dir), name=version, include_empty=True,
                         allow_partial=allow_partial, producer="prefect flow external")
    if report.withheld:
        from byu.errors import InputError

        raise InputError(f"{len(report.withheld)} selected tomogram(s) could not be ingested "
                         f"({', '.join(report.withheld[:10])}); rerun the flow (it resumes), or set 'Store partial "
                         "labels' to review the others", field="allow_partial")
    return {"version": report.stored_as, "tomograms": len(report.labels.tomograms),
            "class_counts": report.manifest.class_counts if report.manifest else {}}


def ingest_streamed(data_dir: str, selection_path: str, tomo_ids: list[str], *, max_inflight: int,
                    keep_raw: bool) -> list[dict]:
    """One task per tomogram through the flow's task runner, at most ``max_inflight`` running; results in order."""
    results: dict[str, dict] = {}
    pending = []
    for tid in tomo_ids:
        pending.append(tomogram_task.submit(data_dir, selection_path, tid, keep_raw))
        if len(pending) >= max_inflight:
            done = next(as_completed(pending))
            pending.remove(done)
            results[done.result()["tomo_id"]] = done.result()
    for fut in pending:
        results[fut.result()["tomo_id"]] = fut.result()
    return [results[t] for t in tomo_ids]


@flow(name="external", log_prints=True, task_runner=task_runner_from_env())
def external(params: ExternalParams = Field(default=ExternalParams(), description="every setting of the round",
                                           json_schema_extra={"title": "External round settings"})) -> dict:
    """Portal ingest (streamed, fanned out) → predictions → review → ``external_gt`` (+ ``all_gt``)."""
    from byu.portal.query import Selection

    p = params
    root = data_root(p.data_dir)
    data_dir = str(root.root)
    check_review_ready(data_dir, p.round_name, p.review, target_versions(p, "to_version") + target_versions(
        p, "all_version", made_of=[p.base_version]))  # before any download
    points = data_path(data_dir, p.points_csv, field="points_csv")
    selection = find_task(data_dir, p.portal_url, p.dataset_ids, p.run_names, str(points) if points else None,
                          p.objects, p.target_spacing)
    tomo_ids = [t.tomo_id for t in Selection.read(selection).tomograms]
    ingested = ingest_streamed(data_dir, selection, tomo_ids, max_inflight=p.max_inflight, keep_raw=p.keep_raw)
    portal_labels = labels_task(data_dir, selection, p.portal_version, p.allow_partial)
    labels_version = portal_labels["version"]
    review_ids = tomograms_to_review(data_dir, labels_version, None)
    result = predict_review_apply(data_dir, round_name=p.round_name, model_dirs=p.model_dirs, mode="all", tta=p.tta,
                                  threshold=p.threshold, labels_version=labels_version, to_version=p.to_version,
                                  review=p.review, tomo_ids=review_ids, allow_seen=True)
    result["combined"] = combine_if_present(data_dir, [p.base_version, p.to_version], p.all_version, p.round_name)
    result.update(ingest={s: sum(r["status"] == s for r in ingested) for s in ("stored", "skipped", "failed")},
                  portal_labels=portal_labels)
    result_artifacts(data_dir, p.round_name, result, title=f"External round {p.round_name}: {labels_version} → "
                     f"{p.to_version}")
    return result


if __name__ == "__main__":
    from flows.local_api import temporary_api

    with temporary_api():
        external()

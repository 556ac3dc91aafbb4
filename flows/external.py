"""External: CryoET Data Portal ingest → ensemble predictions → review of disagreements → ``external_gt``.

Then ``all_gt = gt_v2 + external_gt`` when ``gt_v2`` exists.
"""

from __future__ import annotations

import os

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, Field

from byu.portal.query import DEFAULT_OBJECT_NAME
from flows.artifacts import result_artifacts
from flows.common import (CACHE, RETRY_DELAYS, ReviewSettings, combine_if_present, data_path, data_root, fingerprint,
                          predict_review_apply, refuse_existing_version, tomograms_to_review, transient)
from flows.task_runners import task_runner_from_env


class ExternalParams(BaseModel):
    """What to take from the portal and how to review it."""

    data_dir: str | None = Field(default=None, description="data root (default: env BYU_DATA or ./data)")
    portal_url: str | None = Field(default=None, description="portal GraphQL URL (default: env BYU_PORTAL_URL or "
                                   "the public portal)")
    dataset_ids: list[int] = Field(default_factory=list, description="portal dataset ids to ingest")
    run_names: list[str] = Field(default_factory=list, description="portal run names to ingest")
    points_csv: str | None = Field(default=None, description="CSV of external point labels "
                                   "(dataset_id,tomo_id + coordinates) selecting what to ingest")
    object_name: str | None = Field(default=DEFAULT_OBJECT_NAME, description="portal annotation object name pattern "
                                    "(SQL ILIKE) to take point labels from")
    target_spacing: float = Field(default=16.0, gt=0, description="Å/voxel; stored spacing is max(this, original)")
    download_workers: int = Field(default=4, ge=1, le=32, description="concurrent downloads")
    round_name: str = Field(default="external", description="review round name")
    portal_version: str = Field(default="external_gt_v0", description="version holding the portal's own labels")
    to_version: str = Field(default="external_gt", description="reviewed external labels")
    model_dirs: list[str] = Field(default_factory=lambda: ["models/round2"], title="Model runs to ensemble",
                                  description="run names or paths (relative: under the data root)")
    threshold: float = Field(default=0.05, ge=0, le=1)
    tta: str = Field(default="flips")
    base_version: str = Field(default="gt_v2", description="combined with external when it exists")
    all_version: str = Field(default="all_gt", description="name of base + external")
    review: ReviewSettings = Field(default_factory=ReviewSettings)


@task(name="portal-find", retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=transient,
      cache_policy=CACHE, persist_result=True)
def find_task(data_dir: str, portal_url: str | None, dataset_ids: list[int], run_names: list[str],
              points_csv: str | None, object_name: str | None, target_spacing: float) -> str:
    from byu.portal.ingest import find_step

    selection, path = find_step(portal_url or os.environ.get("BYU_PORTAL_URL"), data_root(data_dir),
                                dataset_ids=dataset_ids, run_names=run_names, points_csv=points_csv,
                                object_name=object_name, target_spacing=target_spacing)
    get_run_logger().info("portal selection: %d tomogram(s), %d point file(s), %d skipped",
                          len(selection.tomograms), len(selection.point_files), len(selection.skipped))
    return str(path)


@task(name="portal-download", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient)
def download_task(data_dir: str, selection_path: str, workers: int) -> dict:
    from byu.portal.ingest import download_step
    from byu.portal.query import Selection

    report = download_step(Selection.read(selection_path), data_root(data_dir), workers=workers)
    failures = [f"{f.key}: {f.error}" for f in report.failures]
    if failures:
        get_run_logger().warning("downloads failed (skipped): %s", failures)
    return {"failures": failures}


@task(name="portal-preprocess")
def preprocess_task(data_dir: str, selection_path: str) -> dict:
    from byu.portal.ingest import preprocess_step
    from byu.portal.query import Selection

    report = preprocess_step(Selection.read(selection_path), data_root(data_dir))
    if report.failures:
        get_run_logger().warning("preprocessing failed (skipped): %s", report.failures)
    return {"done": len(report.done), "skipped": len(report.skipped), "missing": report.missing,
            "failures": [f"{t}: {e}" for t, e in report.failures]}


@task(name="portal-labels", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient)
def labels_task(data_dir: str, selection_path: str, version: str) -> dict:
    from byu.portal.ingest import labels_step
    from byu.portal.query import Selection

    report = labels_step(Selection.read(selection_path), data_root(data_dir), name=version, include_empty=True,
                         producer="prefect flow external")
    return {"version": version, "tomograms": int(len(report.table)),
            "without_tomogram": report.without_tomogram}


@flow(name="external", log_prints=True, task_runner=task_runner_from_env())
def external(params: ExternalParams = ExternalParams()) -> dict:
    """Portal ingest → predictions → review → ``external_gt`` (+ ``all_gt``)."""
    p = params
    root = data_root(p.data_dir)
    data_dir = str(root.root)
    refuse_existing_version(root, p.to_version, p.round_name)
    points = data_path(data_dir, p.points_csv, field="points_csv")
    selection = find_task(data_dir, p.portal_url, p.dataset_ids, p.run_names, str(points) if points else None,
                          p.object_name, p.target_spacing)
    downloads = download_task(data_dir, selection, p.download_workers)
    prep = preprocess_task(data_dir, selection)
    portal_labels = labels_task(data_dir, selection, p.portal_version)
    tomo_ids = tomograms_to_review(data_dir, p.portal_version, None,
                                   version_fingerprint=fingerprint([root.labels / f"{p.portal_version}.manifest.json"]))
    result = predict_review_apply(data_dir, round_name=p.round_name, model_dirs=p.model_dirs, mode="all", tta=p.tta,
                                  threshold=p.threshold, labels_version=p.portal_version, to_version=p.to_version,
                                  review=p.review, tomo_ids=tomo_ids, allow_seen=True)
    result["combined"] = combine_if_present(data_dir, [p.base_version, p.to_version], p.all_version, p.round_name)
    result.update(downloads=downloads, preprocess=prep, portal_labels=portal_labels)
    result_artifacts(data_dir, p.round_name, result, title=f"External round {p.round_name}: {p.portal_version} → "
                     f"{p.to_version}")
    return result


if __name__ == "__main__":
    external()

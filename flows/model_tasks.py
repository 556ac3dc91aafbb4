"""Tasks over the model library: train fold models (one task per fold), predict (OOF or all) with an ensemble
(one task per batch of tomograms, merged in the plan's order). See ``flows/task_runners.py`` for the fan-out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task

from byu.errors import ByuError
from byu.predictions import PredictMode
from flows.base import (
    cache_on,
    data_path,
    data_root,
    table_digest,
    tomogram_dirs,
    version_files,
    version_tomograms,
)
from flows.task_runners import (
    ENV_PREDICT_BATCH,
    PREDICT_BATCH,
    batch_size,
    batched,
    gpu_resources,
    refresh_unless,
    submit_in_order,
    torch_lock,
)


def _train_reads(i: Mapping[str, Any]) -> list[Path | str]:
    """The split, the labels (a stored version's files or a label file), a config file, and the labels' tomograms."""
    from byu.labels.formats import read_version_file

    data_dir, labels = i["data_dir"], str(i["labels"])
    out: list[Path | str] = [Path(i["split"])]
    config = data_path(data_dir, i["config"], field="config")
    if config is not None and config.is_file():
        out.append(config)
    file = Path(labels)
    if file.is_file():
        out.append(file)
        try:
            out.extend(tomogram_dirs(data_dir, read_version_file(file, data_root=data_root(data_dir)).tomo_ids))
        except (ByuError, ValueError, OSError):
            pass  # an unreadable file: training fails on it, whatever the key
    else:
        out.extend([*version_files(data_dir, labels), *version_tomograms(data_dir, labels)])
    return out


@task(name="train-folds", cache_policy=cache_on(_train_reads), persist_result=True)
def train_task(data_dir: str, labels: str, split: str, folds: str, config: str, run_name: str, seed: int,
               overrides: dict | None = None) -> list[str]:
    """``train_folds`` on ``folds`` (the train flow gives each fold its own task)."""
    from byu.model.train import fold_summary, train_folds
    from flows.artifacts import fold_line

    with torch_lock():
        paths = train_folds(data_root(data_dir), labels, split, folds=folds, config=config, run_name=run_name,
                            seed=seed, **(overrides or {}))
    for path in paths:  # fold k: trained N epochs, val score X (metric), checkpoint models/RUN/fold<k>.pt
        get_run_logger().info("%s", fold_line(fold_summary(path), data_root(data_dir).root))
    return [str(p) for p in paths]


@task(name="plan-predictions")
def plan_task(data_dir: str, model_dirs: list[str], mode: PredictMode, tta: str, threshold: float,
              tomo_ids: list[str] | None, out_name: str, allow_seen: bool = False,
              inference: dict | None = None) -> dict:
    """Check the models, tomograms and fold coverage; fix the tomograms' order and models (nothing computed).
    ``inference``: ``byu.model.infer.InferenceSettings`` fields (default: all ``auto``), recorded in the plan."""
    from byu.model.infer import plan_predictions

    plan = plan_predictions(data_root(data_dir), [Path(d) for d in model_dirs], mode=mode, tta=tta,
                            threshold=threshold, tomo_ids=tomo_ids, allow_seen=allow_seen, out_name=out_name,
                            inference=inference)
    return plan.as_dict()


@task(name="predict-batch", cache_policy=cache_on(
    lambda i: [*map(Path, i["checkpoints"]), *tomogram_dirs(i["data_dir"], i["tomo_ids"])]), persist_result=True)
def predict_shard_task(data_dir: str, checkpoints: list[str], tomo_ids: list[str], mode: PredictMode, tta: str,
                       threshold: float, allow_seen: bool = False, inference: dict | None = None) -> pd.DataFrame:
    """One batch of tomograms, every assigned model of every run: the batch's prediction rows. Keyed on the
    checkpoints' and the batch's tomograms' content and on the byu code (besides the inputs: the plan's inference
    settings too, as another precision is another prediction)."""
    from byu.model.infer import predict_shard

    with torch_lock():
        table = predict_shard(data_root(data_dir), checkpoints, tomo_ids, mode=mode, tta=tta, threshold=threshold,
                              allow_seen=allow_seen, inference=inference)
    get_run_logger().info("predicted %d tomogram(s): %d row(s)", len(tomo_ids), len(table))
    return table


@task(name="merge-predictions", cache_policy=cache_on(lambda i: [table_digest(t) for t in i["tables"]],
                                                     exclude=["tables"]), persist_result=True)
def merge_task(plan: dict, tables: list[pd.DataFrame]) -> str:
    """The batches' rows in the plan's order → ``predictions/<name>.csv`` + ``.json``. Keyed on the plan and the
    rows' content (:func:`flows.base.table_digest`), so a rerun with the same rows does not rewrite the files and
    other rows (a changed tomogram or checkpoint) do."""
    from byu.model.infer import merge_predictions

    out = merge_predictions(plan, tables)
    get_run_logger().info("predictions written to %s", out)
    return str(out)


def predict_with_fingerprint(data_dir: str, model_dirs: list[str], *, mode: PredictMode, tta: str, threshold: float,
                             tomo_ids: list[str] | None, out_name: str, allow_seen: bool = False,
                             batch: int | None = None, inference: dict | None = None) -> str:
    """Predict through the flow's task runner: plan (here) → one task per ``batch`` tomograms (default
    ``BYU_PREDICT_BATCH``, else 8; on ``GPU=1`` Dask workers when ``BYU_DASK_GPU_RESOURCE=1``) → merge (here).

    Batches are keyed on the checkpoints' and their tomograms' content and the byu code (a retrained model or a
    re-ingested tomogram is not a cache hit), the merge on the rows; the merge recomputes when its CSV or sidecar is
    gone. Returns the CSV path; the files equal those of one ``byu.model.predict`` call, whatever the batch size or
    the number of workers. ``inference``: ``InferenceSettings`` fields, in the plan and so in every task's key."""
    plan = plan_task(data_dir, model_dirs, mode, tta, threshold, tomo_ids, out_name, allow_seen, inference)
    size = batch or batch_size(ENV_PREDICT_BATCH, PREDICT_BATCH)
    resources = gpu_resources()
    shard_task = predict_shard_task.with_options(tags=["gpu"]) if resources else predict_shard_task
    calls = [(shard_task, (data_dir, plan["checkpoints"], shard, plan["mode"], plan["tta"], plan["threshold"],
                           plan["allow_seen"]), {"inference": plan["inference"]})
             for shard in batched(plan["tomo_ids"], size)]
    tables = submit_in_order(calls, resources=resources)
    root = data_root(data_dir).predictions
    merge = refresh_unless(merge_task, [root / f"{plan['name']}.csv", root / f"{plan['name']}.json"])
    return merge(plan, tables)

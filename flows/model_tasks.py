"""Tasks over the model library: train fold models (one task per fold), predict (OOF or all) with an ensemble
(one task per batch of tomograms, merged in the plan's order). See ``flows/task_runners.py`` for the fan-out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from byu.predictions import PredictMode
from flows.base import CACHE, data_root, fingerprint
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


def _checkpoints(model_dirs: list[str]) -> list[Path]:
    paths = sorted(p for d in model_dirs for p in Path(d).glob("fold*.pt") if not p.name.endswith(".last.pt"))
    if not paths:
        raise FileNotFoundError(f"no fold checkpoints (fold<k>.pt) in {model_dirs}")
    return paths


@task(name="train-folds", cache_policy=CACHE, persist_result=True)
def train_task(data_dir: str, labels: str, split: str, folds: str, config: str, run_name: str, seed: int,
               overrides: dict | None = None, inputs_fingerprint: str = "") -> list[str]:
    """``train_folds`` on ``folds`` (the train flow gives each fold its own task)."""
    from byu.model.train import train_folds

    with torch_lock():
        paths = train_folds(data_root(data_dir), labels, split, folds=folds, config=config, run_name=run_name,
                            seed=seed, **(overrides or {}))
    get_run_logger().info("trained %d fold model(s) in run %s", len(paths), run_name)
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


@task(name="predict-batch", cache_policy=CACHE, persist_result=True)
def predict_shard_task(data_dir: str, checkpoints: list[str], tomo_ids: list[str], mode: PredictMode, tta: str,
                       threshold: float, allow_seen: bool = False, models_fingerprint: str = "",
                       inference: dict | None = None) -> pd.DataFrame:
    """One batch of tomograms, every assigned model of every run: the batch's prediction rows (keyed also on the
    plan's inference settings: another precision is another prediction)."""
    from byu.model.infer import predict_shard

    with torch_lock():
        table = predict_shard(data_root(data_dir), checkpoints, tomo_ids, mode=mode, tta=tta, threshold=threshold,
                              allow_seen=allow_seen, inference=inference)
    get_run_logger().info("predicted %d tomogram(s): %d row(s)", len(tomo_ids), len(table))
    return table


@task(name="merge-predictions", cache_policy=(INPUTS - "tables") + TASK_SOURCE, persist_result=True)
def merge_task(plan: dict, tables: list[pd.DataFrame], models_fingerprint: str = "") -> str:
    """The batches' rows in the plan's order → ``predictions/<name>.csv`` + ``.json``. Keyed on the plan and the
    checkpoints' content (the rows follow from them), so a rerun does not rewrite the files."""
    from byu.model.infer import merge_predictions

    out = merge_predictions(plan, tables)
    get_run_logger().info("predictions written to %s", out)
    return str(out)


def predict_with_fingerprint(data_dir: str, model_dirs: list[str], *, mode: PredictMode, tta: str, threshold: float,
                             tomo_ids: list[str] | None, out_name: str, allow_seen: bool = False,
                             batch: int | None = None, inference: dict | None = None) -> str:
    """Predict through the flow's task runner: plan (here) → one task per ``batch`` tomograms (default
    ``BYU_PREDICT_BATCH``, else 8; on ``GPU=1`` Dask workers when ``BYU_DASK_GPU_RESOURCE=1``) → merge (here).

    Tasks are keyed also on the checkpoints' content (a retrained model is not a cache hit); the merge recomputes
    when its CSV or sidecar is gone. Returns the CSV path; the files equal those of one ``byu.model.predict``
    call, whatever the batch size or the number of workers. ``inference``: ``InferenceSettings`` fields, in the
    plan and so in every task's key."""
    models_fp = fingerprint(_checkpoints(model_dirs))
    plan = plan_task(data_dir, model_dirs, mode, tta, threshold, tomo_ids, out_name, allow_seen, inference)
    size = batch or batch_size(ENV_PREDICT_BATCH, PREDICT_BATCH)
    resources = gpu_resources()
    shard_task = predict_shard_task.with_options(tags=["gpu"]) if resources else predict_shard_task
    calls = [(shard_task, (data_dir, plan["checkpoints"], shard, plan["mode"], plan["tta"], plan["threshold"],
                           plan["allow_seen"]), {"models_fingerprint": models_fp, "inference": plan["inference"]})
             for shard in batched(plan["tomo_ids"], size)]
    tables = submit_in_order(calls, resources=resources)
    root = data_root(data_dir).predictions
    merge = refresh_unless(merge_task, [root / f"{plan['name']}.csv", root / f"{plan['name']}.json"])
    return merge(plan, tables, models_fingerprint=models_fp)

"""The flows' fan-out on a real Dask cluster (``BYU_TASK_RUNNER=dask``): a ``distributed.LocalCluster`` on loopback
(2 single-threaded worker processes) that the flows reach by address, as they would a remote scheduler. Fold
training, prediction batches and rendering batches run on more than one worker and write the same bytes as the
thread runner; with ``BYU_DASK_GPU_RESOURCE=1`` inference goes only to a worker started with
``dask worker ADDRESS --resources GPU=1``. Sharded prediction in the library equals one ``predict()`` call."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from prefect import flow

from byu.errors import InputError
from byu.model.infer import merge_predictions, plan_predictions, predict, predict_shard
from byu.paths import DataRoot
from byu.review.settings import MiningSettings
from flows.base import ReviewSettings
from flows.model_tasks import predict_with_fingerprint
from flows.task_runners import ENV_DASK_ADDRESS, ENV_GPU_RESOURCE, ENV_RUNNER, task_runner_from_env
from tests.flow_support import SPLIT, copy_root

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.usefixtures("prefect_harness")]

CLUSTER_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, object]]:
    """A loopback LocalCluster (2 worker processes, 1 thread each) and a client; stopped after the module."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      silence_logs=logging.ERROR, timeout=CLUSTER_TIMEOUT_S) as cl, Client(cl) as client:
        client.wait_for_workers(2, timeout=CLUSTER_TIMEOUT_S)
        yield cl.scheduler_address, client


def dask_runner(address: str):
    """What ``BYU_TASK_RUNNER=dask BYU_DASK_ADDRESS=...`` gives a flow (the flows read it when imported)."""
    return task_runner_from_env({ENV_RUNNER: "dask", ENV_DASK_ADDRESS: address})


def executed(client) -> dict[str, int]:
    """Tasks each worker has executed so far (by worker address)."""
    return client.run(lambda dask_worker: dask_worker.state.executed_count)


def ran_on(client, before: dict[str, int]) -> dict[str, int]:
    after = executed(client)
    return {w: n - before.get(w, 0) for w, n in after.items() if n - before.get(w, 0) > 0}


def prefixes(client) -> set[str]:
    """Names of the task kinds the scheduler has seen (Prefect task function names)."""
    return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes)))


def weights(path: Path) -> dict[str, bytes]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.numpy().tobytes() for k, v in ckpt["state_dict"].items()}


def history(path: Path) -> list[dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return [{k: v for k, v in h.items() if k != "seconds"} for h in ckpt["metrics"]["history"]]


def sidecar(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("created_at", "name")}


# ---------------------------------------------------------------------------------------------- library


def test_sharded_prediction_equals_one_predict_call(micro_root: Path):
    root = DataRoot(micro_root)
    run = root.models / "round1"
    ref = predict(root, [run], mode="oof", tta="flips", threshold=0.05, out_name="ref", device="cpu")
    plan = plan_predictions(root, [run], mode="oof", tta="flips", threshold=0.05, out_name="sharded")
    assert plan.tomo_ids == json.loads(ref.with_suffix(".json").read_text())["tomo_ids"]
    shards = plan.shards(2)
    assert [t for s in shards for t in s] == plan.tomo_ids and len(shards) > 1
    tables = [predict_shard(root, plan.checkpoints, s, mode="oof", tta="flips", threshold=0.05, device="cpu")
              for s in shards]
    out = merge_predictions(plan.as_dict(), tables[::-1])  # any order of shards: rows go in the plan's order
    assert out.read_bytes() == ref.read_bytes()
    assert sidecar(out.with_suffix(".json")) == sidecar(ref.with_suffix(".json"))
    stray = tables[0].assign(tomo_id="not_planned")
    with pytest.raises(InputError, match="outside the plan"):
        merge_predictions(plan, [stray])


# ---------------------------------------------------------------------------------------------- flows on a cluster


def test_train_flow_fans_out_folds_over_the_cluster(micro_root: Path, tmp_path: Path, cluster):
    from flows.train import TrainParams, train

    address, client = cluster
    other = copy_root(micro_root, tmp_path / "threads")

    def params(root: Path) -> TrainParams:
        return TrainParams(data_dir=str(root), labels="gt", split=SPLIT, config="micro", run_name="fanout", seed=3,
                           overrides={"epochs": 1, "steps_per_epoch": 2})

    before = executed(client)
    on_dask = train.with_options(task_runner=dask_runner(address))(params(micro_root))
    workers = ran_on(client, before)
    assert len(workers) == 2 and sum(workers.values()) == 2, workers  # one fold task on each worker
    assert "train_task" in prefixes(client)
    on_threads = train(params(other))
    assert [Path(p).name for p in on_dask] == [Path(p).name for p in on_threads] == ["fold0.pt", "fold1.pt"]
    for a, b in zip(on_dask, on_threads, strict=True):
        assert weights(Path(a)) == weights(Path(b)), f"{Path(a).name}: weights differ between dask and threads"
        assert history(Path(a)) == history(Path(b))
    # a cached fold whose checkpoint is gone is trained again (and only that fold)
    Path(on_dask[1]).unlink()
    again = train.with_options(task_runner=dask_runner(address))(params(micro_root))
    assert again == on_dask and Path(on_dask[1]).exists()
    assert weights(Path(on_dask[1])) == weights(Path(on_threads[1]))


def test_round1_on_the_cluster_writes_what_threads_write(micro_root: Path, tmp_path: Path, cluster, monkeypatch):
    """Prediction batches and render batches spread over the workers; predictions, images and gt_v2 are
    byte-identical to a thread run (batches of 1-2 there, of 3 here)."""
    from flows.round1 import Round1Params, round1

    address, client = cluster
    other = copy_root(micro_root, tmp_path / "threads")

    def params(root: Path) -> Round1Params:
        return Round1Params(data_dir=str(root), model_dirs=[str(root / "models" / "round1")], split_folds=[2],
                            review=ReviewSettings(reviewer="scripted", truth=str(root / "synth" / "truth.csv"),
                                                  mining=MiningSettings(fp_threshold=None)))  # the faint micro model

    monkeypatch.setenv("BYU_PREDICT_BATCH", "2")
    monkeypatch.setenv("BYU_RENDER_BATCH", "2")
    before = executed(client)
    summary = round1.with_options(task_runner=dask_runner(address))(params(micro_root))
    workers = ran_on(client, before)
    assert len(workers) == 2, workers
    assert {"predict_shard_task", "render_task"} <= prefixes(client)
    monkeypatch.setenv("BYU_PREDICT_BATCH", "1")
    monkeypatch.setenv("BYU_RENDER_BATCH", "3")
    round1(params(other))
    a, b = DataRoot(micro_root), DataRoot(other)
    assert (a.predictions / "round1_oof.csv").read_bytes() == (b.predictions / "round1_oof.csv").read_bytes()
    side_a, side_b = sidecar(a.predictions / "round1_oof.json"), sidecar(b.predictions / "round1_oof.json")
    for side in (side_a, side_b):
        side.pop("models")  # checkpoint paths name the data root
    assert side_a == side_b
    images_a = {p.name: p.read_bytes() for p in (a.review / "round1" / "images").glob("*.jpg")}
    images_b = {p.name: p.read_bytes() for p in (b.review / "round1" / "images").glob("*.jpg")}
    assert images_a == images_b and len(images_a) == summary["cases"] > 0
    assert (a.labels / "gt_v2.csv").read_bytes() == (b.labels / "gt_v2.csv").read_bytes()


@flow(name="predict-only")
def predict_only(data_dir: str, out_name: str, batch: int) -> str:
    """The flows' prediction step alone (what round1/round2/external call)."""
    return predict_with_fingerprint(data_dir, [str(Path(data_dir) / "models" / "round1")], mode="oof", tta="none",
                                    threshold=0.05, tomo_ids=None, out_name=out_name, batch=batch)


@pytest.fixture
def gpu_worker(cluster) -> Iterator[str]:
    """A third worker, started as the docs say (``dask worker ADDRESS --resources GPU=1``); stopped afterwards."""
    address, client = cluster
    known = set(executed(client))
    proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                             "--nworkers", "1", "--resources", "GPU=1", "--host", "127.0.0.1", "--no-dashboard",
                             "--name", "gpu-worker"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        client.wait_for_workers(len(known) + 1, timeout=CLUSTER_TIMEOUT_S)
        (new,) = set(executed(client)) - known
        yield new
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while len(client.scheduler_info()["workers"]) > len(known) and time.monotonic() < deadline:
            time.sleep(0.2)


def test_inference_goes_to_gpu_workers_when_switched_on(micro_root: Path, cluster, gpu_worker, monkeypatch):
    address, client = cluster
    runner = dask_runner(address)
    root = DataRoot(micro_root)
    ref = predict(root, [root.models / "round1"], mode="oof", tta="none", threshold=0.05, out_name="ref",
                  device="cpu")
    monkeypatch.setenv(ENV_GPU_RESOURCE, "1")
    before = executed(client)
    out = predict_only.with_options(task_runner=runner)(str(micro_root), "gpu", 2)
    n = len(json.loads(ref.with_suffix(".json").read_text())["tomo_ids"])
    assert n >= 3
    assert ran_on(client, before) == {gpu_worker: -(-n // 2)}  # every batch of 2 on the GPU worker
    assert Path(out).read_bytes() == ref.read_bytes()
    monkeypatch.setenv(ENV_GPU_RESOURCE, "0")
    before = executed(client)
    out = predict_only.with_options(task_runner=runner)(str(micro_root), "any", 1)
    assert sum(ran_on(client, before).values()) == n
    assert Path(out).read_bytes() == ref.read_bytes()
    assert pd.read_csv(out).shape[0] == json.loads(Path(out).with_suffix(".json").read_text())["rows"]

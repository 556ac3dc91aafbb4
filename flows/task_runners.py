"""Which Prefect task runner the flows use for their fan-out (per-tomogram inference, portal ingest).

The choice comes from the environment, so that the same flow code runs with threads on a laptop and on a Dask
cluster in production, and so that a served deployment (whose flow runs are re-imported from the entrypoint in
a fresh process, see ``flows/serve.py``) picks it up:

- ``BYU_TASK_RUNNER``: ``thread`` (default: Prefect's ``ThreadPoolTaskRunner``) or ``dask``
  (``prefect_dask.DaskTaskRunner``; install ``prefect-dask``, an optional dependency);
- ``BYU_TASK_WORKERS``: threads (thread) or local Dask workers (dask, without an address); default: Prefect's;
- ``BYU_DASK_ADDRESS``: a running Dask scheduler (``tcp://host:8786``); unset: a temporary local cluster per
  flow run (``distributed.LocalCluster`` with ``BYU_TASK_WORKERS`` single-threaded worker processes).

A flow opts in with ``@flow(task_runner=task_runner_from_env())``; ``python -m flows.serve --task-runner dask``
sets these variables for the flow runs it starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

ENV_RUNNER = "BYU_TASK_RUNNER"
ENV_WORKERS = "BYU_TASK_WORKERS"
ENV_DASK_ADDRESS = "BYU_DASK_ADDRESS"
RUNNERS = ("thread", "dask")


def dask_task_runner(*, address: str | None = None, n_workers: int | None = None) -> TaskRunner:
    """A ``prefect_dask.DaskTaskRunner`` on ``address`` or on a temporary local cluster of ``n_workers``
    processes. Raises ``RuntimeError`` naming the package when ``prefect-dask`` is not installed."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise RuntimeError(
            "the dask task runner needs the optional package prefect-dask: pip install prefect-dask "
            f"(or set {ENV_RUNNER}=thread)") from exc
    if address:
        return DaskTaskRunner(address=address)
    kwargs: dict = {"processes": True, "threads_per_worker": 1}
    if n_workers:
        kwargs["n_workers"] = n_workers
    return DaskTaskRunner(cluster_kwargs=kwargs)


def task_runner_from_env(env: Mapping[str, str] | None = None) -> TaskRunner:
    """The task runner ``BYU_TASK_RUNNER`` / ``BYU_TASK_WORKERS`` / ``BYU_DASK_ADDRESS`` describe."""
    env = os.environ if env is None else env
    kind = (env.get(ENV_RUNNER) or "thread").strip().lower()
    if kind not in RUNNERS:
        raise ValueError(f"{ENV_RUNNER}={kind!r} is not one of {', '.join(RUNNERS)}")
    raw_workers = (env.get(ENV_WORKERS) or "").strip()
    try:
        workers = int(raw_workers) if raw_workers else None
    except ValueError:
        raise ValueError(f"{ENV_WORKERS}={raw_workers!r} is not a whole number") from None
    if workers is not None and workers < 1:
        raise ValueError(f"{ENV_WORKERS} must be at least 1, got {workers}")
    if kind == "dask":
        return dask_task_runner(address=(env.get(ENV_DASK_ADDRESS) or "").strip() or None, n_workers=workers)
    return ThreadPoolTaskRunner(max_workers=workers)

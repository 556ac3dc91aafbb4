"""Which Prefect task runner the flows use for their fan-out, and the fan-out itself.

The flows fan out through their task runner: the ``train`` flow one task per fold, prediction one task per batch
of tomograms (all model runs in each: an ensemble averages heatmaps), rendering one task per batch of review
cases, the portal ingest per tomogram. Results are gathered in a fixed order (:func:`submit_in_order`), so the
files written are the same with one worker or many.

The runner comes from the environment, so that the same flow code runs with threads on a laptop and on a Dask
cluster in production, and so that a served deployment (whose flow runs are re-imported from the entrypoint in
a fresh process, see ``flows/serve.py``) picks it up:

- ``BYU_TASK_RUNNER``: ``thread`` (default: Prefect's ``ThreadPoolTaskRunner``) or ``dask``
  (``prefect_dask.DaskTaskRunner``);
- ``BYU_TASK_WORKERS``: threads (thread; default: the number of CPUs, at least 4) or local Dask worker processes
  (dask, without an address; default: distributed's choice for this machine);
- ``BYU_DASK_ADDRESS``: a running Dask scheduler (``tcp://host:8786``); unset: a temporary local cluster per
  flow run (``distributed.LocalCluster`` with single-threaded worker processes);
- ``BYU_DASK_GPU_RESOURCE``: ``1`` makes every inference task need the Dask worker resource ``GPU=1``, so only
  workers started with ``dask worker tcp://host:8786 --resources GPU=1`` take inference, and the others train,
  render and ingest. Set it only when such a worker is up: a task that needs ``GPU`` waits until one joins.
  Ignored by the thread runner.

Torch work (training a fold, predicting a batch) holds a per-process lock (:func:`torch_lock`): torch's thread
count (``torch.set_num_threads``, set from the model config) and its random seed are process-wide, so two folds
in one process would change each other's threads and weights. Threads therefore parallelise rendering and I/O
only; torch work scales out over processes (Dask workers, best started with ``--nthreads 1``).

Batch sizes: ``BYU_PREDICT_BATCH`` tomograms per inference task (default 8), ``BYU_RENDER_BATCH`` review cases per
render task (default 16).

A flow opts in with ``@flow(task_runner=task_runner_from_env())``; ``python -m flows.serve --task-runner dask``
sets these variables for the flow runs it starts.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

ENV_RUNNER = "BYU_TASK_RUNNER"
ENV_WORKERS = "BYU_TASK_WORKERS"
ENV_DASK_ADDRESS = "BYU_DASK_ADDRESS"
ENV_GPU_RESOURCE = "BYU_DASK_GPU_RESOURCE"
ENV_PREDICT_BATCH = "BYU_PREDICT_BATCH"
ENV_RENDER_BATCH = "BYU_RENDER_BATCH"
RUNNERS = ("thread", "dask")
GPU_RESOURCE = {"GPU": 1}
PREDICT_BATCH = 8
RENDER_BATCH = 16

_TORCH_LOCK = threading.Lock()

T = TypeVar("T")


def dask_task_runner(*, address: str | None = None, n_workers: int | None = None) -> TaskRunner:
    """A ``prefect_dask.DaskTaskRunner`` on ``address`` or on a temporary local cluster of ``n_workers``
    processes. Raises ``RuntimeError`` naming the package when ``prefect-dask`` is not installed."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise RuntimeError(
            "the dask task runner needs the package prefect-dask: pip install prefect-dask "
            f"(or set {ENV_RUNNER}=thread)") from exc
    if address:
        return DaskTaskRunner(address=address)
    kwargs: dict = {"processes": True, "threads_per_worker": 1}
    if n_workers:
        kwargs["n_workers"] = n_workers
    return DaskTaskRunner(cluster_kwargs=kwargs)


def torch_lock() -> threading.Lock:
    """The per-process lock every task that runs torch holds (see the module docstring). A function, not a module
    global in the tasks' code: Dask ships a Prefect task's function by value, and a lock cannot be pickled."""
    return _TORCH_LOCK


def _whole(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def default_threads() -> int:
    """The thread runner's default size: the CPUs, at least 4 (Prefect's own default is unbounded). Torch tasks
    run one at a time per process anyway (:func:`torch_lock`); the threads overlap rendering and downloads, and the
    bound keeps a round with many render batches from holding all their slice caches at once."""
    return max(4, os.cpu_count() or 1)


def task_runner_from_env(env: Mapping[str, str] | None = None) -> Any:
    """The task runner ``BYU_TASK_RUNNER`` / ``BYU_TASK_WORKERS`` / ``BYU_DASK_ADDRESS`` describe."""
    env = os.environ if env is None else env
    kind = (env.get(ENV_RUNNER) or "thread").strip().lower()
    if kind not in RUNNERS:
        raise ValueError(f"{ENV_RUNNER}={kind!r} is not one of {', '.join(RUNNERS)}")
    workers = _whole(env, ENV_WORKERS, None)
    if kind == "dask":
        return dask_task_runner(address=(env.get(ENV_DASK_ADDRESS) or "").strip() or None, n_workers=workers)
    return ThreadPoolTaskRunner(max_workers=workers or default_threads())


def gpu_resources(env: Mapping[str, str] | None = None) -> dict[str, int] | None:
    """``{"GPU": 1}`` when ``BYU_DASK_GPU_RESOURCE`` is switched on (1/true/yes/on), else None."""
    env = os.environ if env is None else env
    raw = (env.get(ENV_GPU_RESOURCE) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return None
    if raw in ("1", "true", "yes", "on"):
        return dict(GPU_RESOURCE)
    raise ValueError(f"{ENV_GPU_RESOURCE}={raw!r}: use 1 (inference needs a worker with --resources GPU=1) or 0")


def batch_size(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    """A batch size from the environment variable ``name`` (a whole number >= 1), else ``default``."""
    return _whole(os.environ if env is None else env, name, default) or default


def batched(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in consecutive batches of at most ``size``, in order."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def refresh_unless(task: Any, outputs: Iterable[str | os.PathLike]) -> Any:
    """``task``, made to recompute when any of ``outputs`` is missing (a cached result stands for those files)."""
    return task.with_options(refresh_cache=not all(Path(p).exists() for p in outputs))


def _current_runner() -> TaskRunner | None:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx.task_runner if ctx is not None else None


@contextlib.contextmanager
def _dask_resources(resources: Mapping[str, float] | None) -> Iterator[None]:
    """Tasks submitted inside need ``resources`` on a Dask worker (only under the Dask task runner)."""
    runner = _current_runner()
    if not resources or runner is None or type(runner).__name__ != "DaskTaskRunner":
        yield
        return
    import dask

    with dask.annotate(resources=dict(resources)):
        yield


def submit_in_order(calls: Iterable[tuple[Any, Sequence[Any], Mapping[str, Any]]], *,
                    resources: Mapping[str, float] | None = None) -> list[Any]:
    """Submit ``task(*args, **kwargs)`` for each ``(task, args, kwargs)`` through the flow's task runner (all
    at once), wait for all of them, and return their results in the order given.

    A failure is raised after every task has finished (none is left running behind a failed flow); the first
    failing call in order raises. ``resources`` (e.g. ``{"GPU": 1}``): Dask worker resources the tasks need
    (ignored by other runners)."""
    from prefect.futures import wait

    with _dask_resources(resources):
        futures = [task.submit(*args, **dict(kwargs)) for task, args, kwargs in calls]
    wait(futures)
    return [f.result() for f in futures]


def map_batches(task: Any, items: Sequence[T], *args: Any, size: int,
                outputs: Callable[[list[T]], Iterable[str | os.PathLike]] | None = None,
                resources: Mapping[str, float] | None = None, **kwargs: Any) -> list[Any]:
    """``task(*args, batch, **kwargs)`` for each consecutive batch of ``items`` (see :func:`submit_in_order`);
    ``outputs(batch)``: the files a batch's cached result stands for (any missing: that batch recomputes)."""
    calls = [(refresh_unless(task, outputs(b)) if outputs else task, (*args, b), kwargs)
             for b in batched(items, size)]
    return submit_in_order(calls, resources=resources)

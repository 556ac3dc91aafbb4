"""Serve the byu flows as Prefect deployments: ``round1``, ``round2``, ``external`` and ``train``.

Usage::

    python -m flows.serve                  # against the configured PREFECT_API_URL (a running Prefect server)
    python -m flows.serve --with-server    # start a local server first (SQLite), serve, stop it on exit
    make serve                             # the same as --with-server

Each deployment is named like its flow, so a run is started with ``prefect deployment run round1/round1``
(``--param``/``--params`` for its one ``params`` parameter), from the Prefect UI (http://127.0.0.1:4200), or from
Python with ``prefect.deployments.run_deployment("round1/round1", parameters={"params": {...}})``. The serving
process polls the API and runs each flow run in a subprocess on this machine, in this environment.

``--with-server`` runs ``prefect server start --host 127.0.0.1 --port 4200`` with its state (SQLite database,
logs in ``server.log``) under ``--home``, else ``$PREFECT_HOME``, else Prefect's own default (``~/.prefect``) —
never inside the data root: Prefect's home holds Secret blocks (the CVAT password) and a data root is copied and
shared with collaborators,
waits for ``/api/health``, points this process and its flow runs at it, and stops it when serving ends (Ctrl-C or
SIGTERM). For production, run the server on Postgres instead (``docker-compose.yml``).

Scaling out
-----------
One serving process runs flow runs on one machine (``--limit N`` caps how many at once). To spread flow runs
over machines, use a work pool with workers instead of ``serve``::

    prefect work-pool create byu --type process          # once, against the shared server
    python -m flows.serve --work-pool byu                # register the four deployments in the pool, then exit
    prefect worker start --pool byu                      # on every machine with byu installed (and the data root)

Workers poll the pool and start each flow run as a local process (entrypoints are module paths such as
``flows.round1.round1``, so any machine with the package installed can run them). ``docker-compose.yml`` runs the
serving process in a container; scale the same way by running workers there instead.

Inside a flow run, fan-out work (per-tomogram inference, portal downloads and preprocessing) goes through the
flow's task runner, chosen from the environment (``flows/task_runners.py``): threads by default, or Dask with
``--task-runner dask`` or ``BYU_TASK_RUNNER=dask`` (a temporary local cluster of ``--task-workers`` processes, or an
existing scheduler with ``--dask-address tcp://host:8786``); see ``flows/task_runners.py``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.task_runners import ENV_DASK_ADDRESS, ENV_RUNNER, ENV_WORKERS, RUNNERS, dask_task_runner

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

# deployment name -> "module:flow object"; each deployment has its flow's name
FLOW_REFS: dict[str, str] = {
    "round1": "flows.round1:round1",
    "round2": "flows.round2:round2",
    "external": "flows.external:external",
    "train": "flows.train:train",
}
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
DEFAULT_TAGS = ("byu",)


# ------------------------------------------------------------------------------------------ deployments


def load_flow(ref: str) -> Any:
    """The flow object named by ``"module:attribute"``."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_deployments(names: Sequence[str] | None = None, *,
                      tags: Sequence[str] = DEFAULT_TAGS) -> list[RunnerDeployment]:
    """One ``RunnerDeployment`` per flow (default: all four), named like the flow, with a module-path
    entrypoint (``flows.round1.round1``) so that any process with byu installed can load it."""
    from prefect.types.entrypoint import EntrypointType

    chosen = list(names) if names else list(FLOW_REFS)
    unknown = [n for n in chosen if n not in FLOW_REFS]
    if unknown:
        raise ValueError(f"unknown deployment(s) {unknown}; choose from {', '.join(FLOW_REFS)}")
    deployments = []
    for name in chosen:
        flow = load_flow(FLOW_REFS[name])
        deployments.append(flow.to_deployment(name=name, tags=list(tags), entrypoint_type=EntrypointType.MODULE_PATH))
    return deployments


def register_deployments(deployments: Sequence[RunnerDeployment], *, work_pool: str) -> list[str]:
    """Register deployments in a work pool (for ``prefect worker start --pool``); returns their ids."""
    return [str(d.apply(work_pool_name=work_pool)) for d in deployments]


def serve_deployments(deployments: Sequence[RunnerDeployment], *, limit: int | None = None) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM): poll the API, run each flow run in a local subprocess."""
    from prefect import serve

    serve(*deployments, limit=limit)


# ------------------------------------------------------------------------------------------ local server


def default_prefect_home(home: str | Path | None = None) -> Path:
    """``home``, else ``$PREFECT_HOME``, else Prefect's default (``~/.prefect``): never inside the data root, which
    gets copied and shared while Prefect's home holds secrets."""
    if home is not None:
        return Path(home).expanduser().resolve()
    if os.environ.get("PREFECT_HOME"):
        return Path(os.environ["PREFECT_HOME"]).expanduser().resolve()
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home).expanduser().resolve()


def api_healthy(api_url: str, *, timeout: float = 2.0) -> bool:
    """Whether ``<api_url>/health`` answers 200."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_for_api(api_url: str, *, timeout: float = 90.0, process: subprocess.Popen | None = None,
                 log: Path | None = None) -> None:
    """Block until ``<api_url>/health`` answers, ``process`` (if given) exits, or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api_healthy(api_url):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with status {process.returncode} before answering "
                               f"{api_url}/health{_log_tail(log)}")
        time.sleep(0.5)
    raise TimeoutError(f"no answer from {api_url}/health after {timeout:.0f} s{_log_tail(log)}")


def _log_tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log}:\n" + "\n".join(tail)


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _prefect_command() -> list[str]:
    exe = Path(sys.executable).with_name("prefect")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("prefect")
    return [found] if found else [sys.executable, "-m", "prefect"]


def stop_process(process: subprocess.Popen, *, timeout: float = 20.0) -> None:
    """SIGTERM the process group ``process`` leads (started with ``start_new_session``), then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


@contextlib.contextmanager
def local_server(*, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, home: str | Path | None = None,
                 timeout: float = 90.0) -> Iterator[str]:
    """Run ``prefect server start`` (SQLite under the Prefect home) for the duration of the block; yields the
    API URL once ``/api/health`` answers, and stops the server (its whole process group) on exit."""
    home_dir = default_prefect_home(home)
    home_dir.mkdir(parents=True, exist_ok=True)
    api_url = f"http://{host}:{port}/api"
    if _port_open(host, port):
        hint = (" (a Prefect server answers there: run without --with-server and "
                f"PREFECT_API_URL={api_url})") if api_healthy(api_url) else ""
        raise RuntimeError(f"port {port} on {host} is already in use{hint}")
    env = {
        **os.environ,
        "PREFECT_HOME": str(home_dir),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home_dir / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": api_url,
    }
    env.pop("PREFECT_API_URL", None)
    log = home_dir / "server.log"
    with open(log, "ab") as log_fh:
        process = subprocess.Popen([*_prefect_command(), "server", "start", "--host", host, "--port", str(port)],
                                   env=env, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    try:
        wait_for_api(api_url, timeout=timeout, process=process, log=log)
        yield api_url
    finally:
        stop_process(process)


@contextlib.contextmanager
def api_url_setting(api_url: str) -> Iterator[None]:
    """Point this process (Prefect settings) and the processes it starts (environment) at ``api_url``."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield
    finally:
        if old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = old


def configured_api_url() -> str | None:
    """The PREFECT_API_URL this process would use (environment or Prefect profile), or None."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


# ------------------------------------------------------------------------------------------ command line

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    with_server: Annotated[bool, typer.Option("--with-server", help="start a local Prefect server (SQLite) "
                                              "first and stop it on exit")] = False,
    host: Annotated[str, typer.Option(help="--with-server: address to listen on")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="--with-server: port to listen on")] = DEFAULT_PORT,
    home: Annotated[Path | None, typer.Option(help="--with-server: Prefect home (database, logs); default "
                                              "$PREFECT_HOME or ~/.prefect (never the data root)")] = None,
    server_timeout: Annotated[float, typer.Option(help="--with-server: seconds to wait for the API")] = 90.0,
    only: Annotated[list[str] | None, typer.Option("--only", help="serve only this deployment (repeatable): "
                                                   + ", ".join(FLOW_REFS))] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many flow runs at once")] = None,
    work_pool: Annotated[str | None, typer.Option(help="register the deployments in this work pool and exit "
                                                  "(run them with `prefect worker start --pool NAME`)")] = None,
    task_runner: Annotated[str | None, typer.Option(help="task runner for the flows' fan-out: "
                                                    + " or ".join(RUNNERS) + " (default: $BYU_TASK_RUNNER, else "
                                                    "thread)")] = None,
    task_workers: Annotated[int | None, typer.Option(help="threads or local Dask worker processes")] = None,
    dask_address: Annotated[str | None, typer.Option(help="--task-runner dask: an existing scheduler "
                                                     "(tcp://host:8786); default a local cluster")] = None,
) -> None:
    """Serve the round1, round2, external and train deployments (see the module docstring)."""
    task_runner = task_runner or os.environ.get(ENV_RUNNER) or "thread"
    if task_runner not in RUNNERS:
        raise typer.BadParameter(f"choose one of {', '.join(RUNNERS)}", param_hint="--task-runner")
    if task_runner == "dask":
        try:
            dask_task_runner(address=dask_address, n_workers=task_workers)  # fail now, not in the first run
        except RuntimeError as exc:
            raise typer.BadParameter(str(exc), param_hint="--task-runner") from None
    os.environ[ENV_RUNNER] = task_runner
    if task_workers is not None:
        os.environ[ENV_WORKERS] = str(task_workers)
    if dask_address:
        os.environ[ENV_DASK_ADDRESS] = dask_address
    if with_server and work_pool:
        raise typer.BadParameter("a work pool needs a server that outlives this command; start one "
                                 "(`prefect server start`) and set PREFECT_API_URL", param_hint="--work-pool")

    def run(api_url: str) -> None:
        with api_url_setting(api_url):
            deployments = build_deployments(only)
            if work_pool:
                from prefect.deployments.runner import DeploymentApplyError

                try:
                    ids = register_deployments(deployments, work_pool=work_pool)
                except DeploymentApplyError as exc:
                    raise typer.BadParameter(f"{exc} (create it first: prefect work-pool create {work_pool} "
                                             "--type process)", param_hint="--work-pool") from None
                for d, i in zip(deployments, ids, strict=True):
                    typer.echo(f"registered {d.flow_name}/{d.name} in work pool {work_pool!r} ({i})")
                typer.echo(f"start workers with: prefect worker start --pool {work_pool}")
                return
            typer.echo(f"serving {', '.join(d.name for d in deployments)} against {api_url}")
            serve_deployments(deployments, limit=limit)

    if with_server:
        typer.echo(f"starting a Prefect server on http://{host}:{port} (home {default_prefect_home(home)})")
        # SIGTERM (docker stop, kill) should unwind like Ctrl-C so that the server is stopped too
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            with local_server(host=host, port=port, home=home, timeout=server_timeout) as api_url:
                typer.echo(f"Prefect UI: http://{host}:{port}")
                try:
                    run(api_url)
                except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or Prefect's runner exiting on SIGTERM
                    typer.echo("stopping the Prefect server")
        finally:
            signal.signal(signal.SIGTERM, previous)
        typer.echo("Prefect server stopped")
        return
    configured = configured_api_url()
    if not configured:
        raise typer.BadParameter("no PREFECT_API_URL configured: point it at a Prefect server "
                                 "(http://HOST:4200/api) or use --with-server", param_hint="PREFECT_API_URL")
    run(configured)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    app()

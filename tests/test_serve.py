"""flows/serve.py: the four deployments served against a real Prefect server, round1 run by deployment; the
--with-server mode; the task-runner option. Every subprocess is stopped in a finally, every wait is bounded."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows import serve as serve_mod
from flows.task_runners import ENV_DASK_ADDRESS, ENV_RUNNER, ENV_WORKERS, task_runner_from_env

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = {"round1/round1", "round2/round2", "external/external", "train/train"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_env(home: Path) -> dict[str, str]:
    """This environment without any Prefect setting of the test session, Prefect state under ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BYU_"))}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
    return env


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""


def _deployment_names(api_url: str) -> set[str]:
    """``flow/deployment`` names registered on the server (empty while it does not answer)."""
    import httpx
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if not serve_mod.api_healthy(api_url):
        return set()
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            with get_client(sync_client=True) as client:
                flows = {f.id: f.name for f in client.read_flows()}
                return {f"{flows.get(d.flow_id, '?')}/{d.name}" for d in client.read_deployments()}
    except (httpx.HTTPError, OSError):
        return set()


def _wait_for(predicate, *, timeout: float, what: str, logs: list[Path], procs: list[subprocess.Popen]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{p.args} exited ({p.returncode}) while waiting for {what}\n"
                                     + "\n".join(_tail(log) for log in logs))
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                         + "\n".join(_tail(log) for log in logs))


@pytest.fixture
def round1_root(micro_root: Path) -> Path:
    """A tiny synthetic cohort with ``gt``, a 2-fold split and 2 micro fold models."""
    return micro_root


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_served_round1_runs_by_deployment(round1_root: Path, tmp_path: Path):
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from byu.labels.store import LabelStore
    from byu.paths import DataRoot

    home = tmp_path / "prefect-home"
    home.mkdir()
    port, runner_port = _free_port(), _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = _base_env(home)
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    procs: list[subprocess.Popen] = []
    try:
        server = _start([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1",
                         "--port", str(port)], env, server_log)
        procs.append(server)
        _wait_for(lambda: serve_mod.api_healthy(api_url), timeout=120, what="the Prefect server",
                  logs=[server_log], procs=[server])

        serve_env = {**env, "PREFECT_API_URL": api_url, "PREFECT_RUNNER_SERVER_ENABLE": "true",
                     "PREFECT_RUNNER_SERVER_HOST": "127.0.0.1", "PREFECT_RUNNER_SERVER_PORT": str(runner_port),
                     "BYU_DATA": str(round1_root)}  # the data root is only known to the serving process
        serve_env.pop("PREFECT_API_DATABASE_CONNECTION_URL")
        serving = _start([sys.executable, "-m", "flows.serve", "--limit", "2"], serve_env, serve_log)
        procs.append(serving)
        _wait_for(lambda: DEPLOYMENTS <= _deployment_names(api_url), timeout=120, what="the four deployments",
                  logs=[serve_log], procs=procs)
        # what the compose healthcheck asks: the runner webserver answers while serving
        _wait_for(lambda: serve_mod.api_healthy(f"http://127.0.0.1:{runner_port}"), timeout=60,
                  what="the runner's /health", logs=[serve_log], procs=procs)

        # as from the UI: the deployment's defaults (model runs, data root from BYU_DATA), only the reviewer and
        # the fold count of a 6-tomogram cohort changed; paths typed relative to the data root. The form asks for
        # the round name (the UI drops an emptied field, which must not silently become the default round)
        params = {"round_name": "round1", "tta": "none", "split_folds": [2],
                  "review": {"reviewer": "scripted", "truth": "synth/truth.csv"}}
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            flow_run = run_deployment("round1/round1", parameters={"params": params}, timeout=420,
                                      poll_interval=2)
        assert flow_run.state is not None and flow_run.state.type == StateType.COMPLETED, (
            f"round1 ended {flow_run.state}\n{_tail(serve_log, 80)}")
        from prefect import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            with get_client(sync_client=True) as client:
                artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
        by_key = {a.key: a for a in artifacts}
        assert {"result-round1", "changes-gt-v2"} <= set(by_key), sorted(by_key)
        summary = by_key["result-round1"].data
        assert "New label version `gt_v2`" in summary and "label change" in summary
        assert "data:image/png;base64," in summary  # the label-change and split pictures travel with it
        assert "`cv/v2/skf2_rd42.json`" in summary  # splits named as a person finds them under the data root

        root = DataRoot(round1_root)
        store = LabelStore(root.labels)
        assert store.exists("gt_v2")
        manifest = store.manifest("gt_v2")
        assert manifest.parents == ["gt"] and manifest.producer == "prefect flow round1"
        assert (root.review / "round1" / "cases.csv").exists()
        assert (root.review / "round1" / "decisions.csv").exists()
        assert (root.cv / "v2" / "skf2_rd42.json").exists()
        assert (root.predictions / "round1_oof.csv").exists()

        # scale-out path: register the deployments in a process work pool (what `--work-pool byu` does)
        from prefect import get_client
        from prefect.client.schemas.actions import WorkPoolCreate

        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            with get_client(sync_client=True) as client:
                client.create_work_pool(WorkPoolCreate(name="byu", type="process"))
            ids = serve_mod.register_deployments(serve_mod.build_deployments(["train"]), work_pool="byu")
            with get_client(sync_client=True) as client:
                assert client.read_deployment(ids[0]).work_pool_name == "byu"
    finally:
        for p in reversed(procs):
            serve_mod.stop_process(p)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_with_server_starts_and_stops_its_server(tmp_path: Path):
    home = tmp_path / "home"
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log = tmp_path / "serve.log"
    env = _base_env(tmp_path / "unused-home")
    proc = _start([sys.executable, "-m", "flows.serve", "--with-server", "--port", str(port), "--home", str(home),
                   "--only", "train"], env, log)
    try:
        _wait_for(lambda: "train/train" in _deployment_names(api_url), timeout=150,
                  what="the served train deployment", logs=[log, home / "server.log"], procs=[proc])
        assert _deployment_names(api_url) == {"train/train"}
        assert (home / "prefect.db").exists(), "the server's SQLite database lives under --home"
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        _wait_for(lambda: not serve_mod.api_healthy(api_url), timeout=30,
                  what="the server to stop with the serving process", logs=[log], procs=[])
        assert not serve_mod._port_open("127.0.0.1", port)
    finally:
        serve_mod.stop_process(proc)


@pytest.mark.slow
def test_with_server_refuses_a_busy_port(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} on 127.0.0.1 is already in use"):
            with serve_mod.local_server(port=port, home=tmp_path / "home", timeout=5):
                pass


def test_build_deployments_names_and_entrypoints():
    deployments = serve_mod.build_deployments(["train", "round1"])
    assert [d.name for d in deployments] == ["train", "round1"]
    assert [d.entrypoint for d in deployments] == ["flows.train.train", "flows.round1.round1"]
    assert all("byu" in d.tags for d in deployments)
    with pytest.raises(ValueError, match="unknown deployment"):
        serve_mod.build_deployments(["nope"])


def test_default_prefect_home_is_never_the_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    monkeypatch.setenv("BYU_DATA", str(tmp_path / "d"))
    home = serve_mod.default_prefect_home()
    assert (tmp_path / "d").resolve() not in home.parents and home != (tmp_path / "d").resolve()
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "ph"))
    assert serve_mod.default_prefect_home() == (tmp_path / "ph").resolve()
    assert serve_mod.default_prefect_home(tmp_path / "x") == (tmp_path / "x").resolve()


# ---------------------------------------------------------------------------------------------- task runners


def test_task_runner_from_env():
    from prefect.task_runners import ThreadPoolTaskRunner

    runner = task_runner_from_env({})
    assert isinstance(runner, ThreadPoolTaskRunner)
    assert task_runner_from_env({ENV_RUNNER: "thread", ENV_WORKERS: "3"})._max_workers == 3
    with pytest.raises(ValueError, match=ENV_RUNNER):
        task_runner_from_env({ENV_RUNNER: "ray"})
    with pytest.raises(ValueError, match=ENV_WORKERS):
        task_runner_from_env({ENV_WORKERS: "many"})
    with pytest.raises(ValueError, match=ENV_WORKERS):
        task_runner_from_env({ENV_WORKERS: "0"})


def test_dask_runner_is_optional():
    try:
        import prefect_dask  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="pip install prefect-dask"):
            task_runner_from_env({ENV_RUNNER: "dask"})
    else:
        runner = task_runner_from_env({ENV_RUNNER: "dask", ENV_DASK_ADDRESS: "tcp://127.0.0.1:8786"})
        assert type(runner).__name__ == "DaskTaskRunner"


def test_cli_refuses_without_api_url_or_dask(monkeypatch):
    for var in (ENV_RUNNER, ENV_WORKERS, ENV_DASK_ADDRESS):  # the command sets these; restore after
        monkeypatch.setenv(var, "")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    runner = CliRunner()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = runner.invoke(serve_mod.app, ["--only", "train"])
    assert result.exit_code == 2 and "PREFECT_API_URL" in result.output
    result = runner.invoke(serve_mod.app, ["--task-runner", "spark"])
    assert result.exit_code == 2 and "--task-runner" in result.output
    try:
        import prefect_dask  # noqa: F401
    except ImportError:
        result = runner.invoke(serve_mod.app, ["--task-runner", "dask"])
        assert result.exit_code == 2 and "prefect-dask" in result.output


KILLED = """
import sys, time
from flows.local_api import temporary_api
with temporary_api() as url:
    print(url, flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_killed_run_leaves_no_prefect_server_behind(tmp_path: Path):
    env = _base_env(tmp_path / "home")
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"
    proc = subprocess.Popen([sys.executable, "-c", KILLED], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and serve_mod.api_healthy(url)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _wait_for(lambda: not serve_mod.api_healthy(url), timeout=30,
                  what="the temporary server to die with the killed run", logs=[], procs=[])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

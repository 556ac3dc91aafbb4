"""docker-compose.yml, Dockerfile and .env.example: services, ports, volumes, healthchecks, profiles, env wiring and
pinned images, checked on the YAML; and by `docker compose config` when a Compose v2 binary is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"

PREFECT_SERVICES = {"prefect-db", "prefect-server", "byu-flows"}
DASK_SERVICES = {"dask-scheduler", "dask-worker"}
GPU_SERVICES = {"dask-worker-gpu"}
CVAT_SERVICES = {
    "cvat_db", "cvat_redis_inmem", "cvat_redis_ondisk", "cvat_opa", "cvat_server", "cvat_ui", "traefik",
    "cvat_worker_utils", "cvat_worker_import", "cvat_worker_export", "cvat_worker_annotation",
    "cvat_worker_webhooks", "cvat_worker_quality_reports", "cvat_worker_chunks", "cvat_worker_consensus",
}
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _resolve(text: str, env: dict[str, str] | None = None) -> str:
    """Compose-style ``${VAR}``, ``${VAR:-default}``, ``${VAR:?msg}`` with only ``env`` set ($$ is a literal $)."""
    env = env or {}

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op in (":-", "-"):
            return arg
        return ""

    return VAR.sub(sub, text.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


def _published(service: dict) -> dict[int, str]:
    """container port -> the published spec (after resolving defaults)."""
    out = {}
    for p in service.get("ports", []):
        spec = _resolve(str(p))
        parts = spec.split(":")
        out[int(parts[-1].split("/")[0])] = spec
    return out


def test_services_and_profiles(services):
    assert PREFECT_SERVICES | DASK_SERVICES | CVAT_SERVICES | GPU_SERVICES <= set(services)
    for name in PREFECT_SERVICES | DASK_SERVICES:
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"
    for name in CVAT_SERVICES:
        assert services[name].get("profiles") == ["cvat"], f"{name} belongs to the cvat profile"
    for name in GPU_SERVICES:
        assert services[name].get("profiles") == ["gpu"], f"{name} belongs to the gpu profile"


def test_images_are_pinned(services):
    import cvat_sdk
    import prefect

    for name, svc in services.items():
        if "build" in svc:
            continue
        image = _resolve(svc["image"])
        repo, _, tag = image.rpartition(":")
        assert repo and tag and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and "latest" not in tag, f"{name}: image {image!r} is not pinned"
    sdk_line = ".".join(cvat_sdk.__version__.split(".")[:2])          # cvat-sdk 2.80.x targets CVAT 2.80.x
    for name in ("cvat_server", "cvat_ui", *[s for s in CVAT_SERVICES if s.startswith("cvat_worker_")]):
        image = _resolve(services[name]["image"])
        assert re.fullmatch(rf"cvat/(server|ui):v{re.escape(sdk_line)}\.\d+", image), image
    prefect_line = ".".join(prefect.__version__.split(".")[:2])
    assert re.fullmatch(rf"prefecthq/prefect:{re.escape(prefect_line)}(\.\d+)?-python3\.11",
                        _resolve(services["prefect-server"]["image"]))
    assert _resolve(services["prefect-db"]["image"]).startswith("postgres:16")
    assert _resolve(services["cvat_redis_ondisk"]["image"]).startswith("apache/kvrocks:")


def test_ports(services):
    assert 4200 in _published(services["prefect-server"])
    assert _published(services["prefect-server"])[4200].startswith("127.0.0.1:"), \
        "the Prefect API has no login: published on localhost by default"
    assert 8080 in _published(services["traefik"])
    assert _published(services["traefik"])[8080].split(":")[0] == "8080"
    # nothing else is published: databases and caches stay on the internal networks
    for name, svc in services.items():
        if name not in ("prefect-server", "traefik"):
            assert not svc.get("ports"), f"{name} should not publish ports"


def test_named_volumes(compose, services):
    declared = set(compose["volumes"])
    used = set()
    for svc in services.values():
        for v in svc.get("volumes", []):
            source = _resolve(str(v)).split(":")[0]
            if not source.startswith(("/", ".")):
                used.add(source)
    assert used <= declared, f"undeclared volumes {used - declared}"
    mounts = {name: [_resolve(str(v)) for v in svc.get("volumes", [])] for name, svc in services.items()}
    assert "prefect_db:/var/lib/postgresql/data" in mounts["prefect-db"]
    assert "cvat_db:/var/lib/postgresql/data" in mounts["cvat_db"]
    assert "byu_data:/data" in mounts["byu-flows"]
    for w in ("dask-worker", "dask-worker-gpu"):  # tasks get the flows' absolute paths: same data root, same place
        assert mounts[w] == mounts["byu-flows"], f"{w} must see the data root where the flows do"
    assert any(m.startswith("cvat_data:/home/django/data") for m in mounts["cvat_server"])
    for w in (s for s in CVAT_SERVICES if s.startswith("cvat_worker_")):
        assert mounts[w] == mounts["cvat_server"], f"{w} must share the server's data, keys and logs"


def test_healthchecks_and_startup_order(services):
    for name in ("prefect-db", "prefect-server", "byu-flows", "dask-scheduler", "cvat_db", "cvat_redis_inmem",
                 "cvat_server", "traefik"):
        hc = services[name].get("healthcheck")
        assert hc and hc.get("test") and hc["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
        assert "interval" in hc and "retries" in hc
    assert services["prefect-server"]["depends_on"]["prefect-db"]["condition"] == "service_healthy"
    assert services["byu-flows"]["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    for name in ("byu-flows", "dask-worker", "dask-worker-gpu"):
        assert services[name]["depends_on"]["dask-scheduler"]["condition"] == "service_healthy"
    assert "8786" in " ".join(services["dask-scheduler"]["healthcheck"]["test"])  # the scheduler port answers
    assert services["cvat_server"]["depends_on"]["cvat_db"]["condition"] == "service_healthy"
    assert "/api/health" in " ".join(services["prefect-server"]["healthcheck"]["test"])
    # the worker's healthcheck asks Prefect's runner webserver, which the environment switches on
    env = _env(services["byu-flows"])
    assert env["PREFECT_RUNNER_SERVER_ENABLE"] == "true"
    assert f":{env['PREFECT_RUNNER_SERVER_PORT']}/health" in " ".join(services["byu-flows"]["healthcheck"]["test"])


def test_env_wiring(services):
    flows = _env(services["byu-flows"])
    assert _resolve(flows["PREFECT_API_URL"]) == "http://prefect-server:4200/api"
    assert flows["BYU_DATA"] == "/data"
    assert any(_resolve(str(v)).endswith(":/data") for v in services["byu-flows"]["volumes"])
    cvat_url = _resolve(flows["BYU_CVAT_URL"])
    host = re.match(r"https?://([^:/]+)", cvat_url).group(1)
    aliases = services["cvat_server"]["networks"]["cvat"]["aliases"]
    assert host in aliases, "the default BYU_CVAT_URL must reach the bundled CVAT server"
    assert "cvat" in services["byu-flows"]["networks"] and "default" in services["byu-flows"]["networks"]
    for key in ("BYU_CVAT_USER", "BYU_CVAT_PASSWORD", "BYU_CVAT_TOKEN"):
        assert VAR.fullmatch(flows[key]), f"{key} must come from .env"
    server = _env(services["prefect-server"])
    db_url = _resolve(server["PREFECT_API_DATABASE_CONNECTION_URL"], {"PREFECT_POSTGRES_PASSWORD": "pw"})
    assert re.fullmatch(r"postgresql\+asyncpg://prefect:pw@prefect-db:5432/prefect", db_url)
    assert server["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    cvat_env = _env(services["cvat_server"])
    assert cvat_env["CVAT_POSTGRES_HOST"] == "cvat_db"
    assert cvat_env["CVAT_REDIS_ONDISK_HOST"] == "cvat_redis_ondisk"
    assert _env(services["cvat_db"])["POSTGRES_PASSWORD"].startswith("${CVAT_POSTGRES_PASSWORD")


def test_dask_cluster_for_the_fan_out(services):
    """The flows' task runner is Dask on the bundled scheduler; CPU workers (and a GPU worker under profile gpu)
    run the byu image with single-threaded worker processes."""
    from flows.task_runners import ENV_DASK_ADDRESS, ENV_GPU_RESOURCE, ENV_RUNNER, GPU_RESOURCE

    flows = services["byu-flows"]
    env = _env(flows)
    assert env[ENV_RUNNER] == "dask"
    command = [_resolve(str(c)) for c in flows["command"]]
    assert command[:3] == ["python", "-m", "flows.serve"]
    assert command[command.index("--task-runner") + 1] == "dask", "serve sets BYU_TASK_RUNNER from --task-runner"
    address = _resolve(env[ENV_DASK_ADDRESS])
    assert address == command[command.index("--dask-address") + 1] == "tcp://dask-scheduler:8786"
    assert _resolve(env[ENV_DASK_ADDRESS], {ENV_DASK_ADDRESS: "tcp://elsewhere:8786"}) == "tcp://elsewhere:8786"
    assert ENV_GPU_RESOURCE in flows["environment"] and flows["environment"][ENV_GPU_RESOURCE] is None, \
        "BYU_DASK_GPU_RESOURCE passes through from the shell/.env (off unless set)"

    scheduler = services["dask-scheduler"]
    assert scheduler["command"][:2] == ["dask", "scheduler"]
    port = scheduler["command"][scheduler["command"].index("--port") + 1]
    assert address.endswith(f"dask-scheduler:{port}")
    assert "default" in scheduler["networks"]

    resources = " ".join(f"{k}={v}" for k, v in GPU_RESOURCE.items())
    for name in ("dask-worker", "dask-worker-gpu"):
        w = services[name]
        assert w["command"][:3] == ["dask", "worker", address], name
        assert w["command"][w["command"].index("--nthreads") + 1] == "1", f"{name}: one task per worker process"
        assert w["image"] == flows["image"] and w["build"] == flows["build"], f"{name}: the flows' image"
        wenv = _env(w)
        assert wenv["PREFECT_API_URL"] == env["PREFECT_API_URL"] and wenv["BYU_DATA"] == env["BYU_DATA"]
        storage = wenv["PREFECT_LOCAL_STORAGE_PATH"]
        assert storage == env["PREFECT_LOCAL_STORAGE_PATH"], "task results (caches) shared with the flows"
        assert not storage.startswith(env["BYU_DATA"] + "/"), "Prefect's results never live in the data root"
        assert "default" in w["networks"]
    cpu, gpu = services["dask-worker"]["command"], services["dask-worker-gpu"]["command"]
    assert "--resources" not in cpu, "CPU workers must not offer the GPU resource"
    assert gpu[gpu.index("--resources") + 1] == resources
    devices = services["dask-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_no_secrets_in_compose_and_env_example_covers_every_variable(compose):
    text = COMPOSE.read_text()
    for m in re.finditer(r"^\s*([A-Z_]*(?:PASSWORD|TOKEN|SECRET)[A-Z_]*):[ \t]*(\S.*)$", text, re.MULTILINE):
        value = m.group(2).split(" #")[0].strip()
        assert value.startswith("${"), f"literal secret in docker-compose.yml: {m.group(0).strip()}"
    used = {m.group(1) for m in VAR.finditer(text.replace("$$", ""))} - {"no_proxy"}  # $$: a literal $
    example = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                   if line.strip() and not line.lstrip().startswith("#"))
    assert used <= set(example), f".env.example misses {sorted(used - set(example))}"
    for key, value in example.items():
        if re.search("PASSWORD|TOKEN|SECRET", key) and value:
            assert value.startswith("change-me"), f".env.example must hold placeholders only ({key})"
    # Prefect's database password is required (compose refuses to start without it)
    assert "${PREFECT_POSTGRES_PASSWORD:?" in text


def test_env_file_stays_private():
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
    gitignore = (ROOT / ".gitignore").read_text().split()
    assert ".env" in gitignore, ".env (real secrets) must be git-ignored"


def test_dockerfile():
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    torch_at = next(i for i, line in enumerate(lines) if "torch==2.13.0" in line)
    assert "--index-url https://download.pytorch.org/whl/cpu" in lines[torch_at]
    install_at = next(i for i, line in enumerate(lines) if re.search(r"pip install \.(\s|$)", line))
    assert torch_at < install_at, "torch (CPU build) must be installed before the package"
    assert lines[-1] == 'CMD ["python", "-m", "flows.serve"]'
    assert any(line.startswith("USER ") and "root" not in line for line in lines)


# ---------------------------------------------------------------------------------------------- docker compose


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        probe = subprocess.run([standalone, "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0 and re.search(r"v?2\.\d+", probe.stdout):
            return [standalone]
    return None


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not (k.startswith(("PREFECT_", "CVAT_", "BYU_"))
                                                      or k.startswith("COMPOSE_"))}
    env["COMPOSE_PROJECT_NAME"] = "byu"
    return env


@pytest.fixture(scope="module")
def compose_cmd():
    cmd = _compose_command()
    if cmd is None:
        pytest.skip("no Docker Compose v2 (`docker compose` or a v2 `docker-compose`) installed")
    return cmd


def test_docker_compose_config(compose_cmd, tmp_path):
    base = [*compose_cmd, "--project-directory", str(ROOT), "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE)]
    for extra in ([], ["--profile", "cvat"]):
        run = subprocess.run([*base, *extra, "config", "--format", "json"], capture_output=True, text=True,
                             timeout=60, env=_clean_env())
        assert run.returncode == 0, run.stderr
        model = json.loads(run.stdout)
        names = set(model["services"])
        assert PREFECT_SERVICES | DASK_SERVICES <= names and not GPU_SERVICES & names
        assert (CVAT_SERVICES <= names) == bool(extra) and (not (CVAT_SERVICES & names)) == (not extra)
        for name, svc in model["services"].items():
            if "build" not in svc:
                assert not svc["image"].endswith(":latest") and ":" in svc["image"], (name, svc["image"])
        flows_env = model["services"]["byu-flows"]["environment"]
        assert flows_env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert {p["target"] for p in model["services"]["prefect-server"]["ports"]} == {4200}
    # without the secrets, compose refuses (no model comes out) and names the missing variable
    empty = tmp_path / "empty.env"
    empty.write_text("")
    run = subprocess.run([*compose_cmd, "--project-directory", str(ROOT), "-f", str(COMPOSE), "--env-file",
                          str(empty), "config"], capture_output=True, text=True, timeout=60, env=_clean_env())
    assert "PREFECT_POSTGRES_PASSWORD" in run.stderr and not run.stdout.strip()

"""A temporary Prefect API for runs without a server (``byu demo``, ``python -m flows.round1``) that dies with them.

Without ``PREFECT_API_URL`` Prefect starts its own temporary server in a child process and stops it at exit; a
process killed with SIGKILL never gets to, and every killed run leaves a server behind. :func:`temporary_api`
starts that server itself instead (the same ``uvicorn`` app Prefect would start), asks the kernel to SIGTERM it
when its parent dies (Linux ``PR_SET_PDEATHSIG``), points this process at it and stops it on exit. With an API
already configured it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:  # not Linux: the atexit stop still applies
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configured_api_url() -> str | None:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


@contextlib.contextmanager
def temporary_api(*, timeout: float = 120.0) -> Iterator[str | None]:
    """Yield the API URL of a temporary Prefect server that cannot outlive this process (None: one was set)."""
    if configured_api_url():
        yield None
        return
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    from flows.serve import stop_process, wait_for_api

    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True),
           "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    env.pop("PREFECT_API_URL", None)
    import prefect

    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
         "--lifespan", "on"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent, start_new_session=True)
    old = os.environ.get("PREFECT_API_URL")
    try:
        deadline = time.monotonic() + timeout
        wait_for_api(api_url, timeout=max(1.0, deadline - time.monotonic()), process=process)
        os.environ["PREFECT_API_URL"] = api_url
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield api_url
    finally:
        if old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = old
        stop_process(process, timeout=20)


__all__ = ["configured_api_url", "temporary_api"]

"""Shared fixtures. Prefect runs against a temporary PREFECT_HOME with analytics off (set before any import)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="byu-prefect-home-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)  # each session's own home, gone when it ends
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_API_DATABASE_CONNECTION_URL",
                      f"sqlite+aiosqlite:///{Path(_PREFECT_HOME) / 'prefect.db'}")

import pytest  # noqa: E402

pytest_plugins = ("tests.portal_support",)

from byu.labels.table import make_table  # noqa: E402


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def small_table():
    """Three tomograms: one motor, none, two motors (different spacings)."""
    return make_table([
        ("tomo_a", (100, 200, 200), 10.0, [[10.0, 20.0, 30.0]]),
        ("tomo_b", (100, 200, 200), 10.0, []),
        ("tomo_c", (50, 60, 70), 6.5, [[1.0, 2.0, 3.0], [40.0, 50.0, 60.0]]),
    ])


@pytest.fixture(scope="session")
def micro_root_template(tmp_path_factory) -> Path:
    """A built-once tiny cohort with ``gt``, a 2-fold split and micro fold models (see tests/flow_support.py)."""
    from tests.flow_support import build_micro_root

    return build_micro_root(tmp_path_factory.mktemp("micro") / "data")


@pytest.fixture
def micro_root(micro_root_template, tmp_path) -> Path:
    """A private copy of the tiny trained data root."""
    from tests.flow_support import copy_root

    return copy_root(micro_root_template, tmp_path / "data")


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the session (starting one takes ~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield

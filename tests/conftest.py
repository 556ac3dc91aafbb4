"""Shared fixtures. Prefect runs against a temporary PREFECT_HOME with analytics off (set before any import)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="byu-prefect-home-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
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

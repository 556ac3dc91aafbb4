"""Fixtures shared by the portal tests (import them into a test module to use them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from byu.paths import DataRoot
from tests.fakes.portal import FakePortal, PortalSeed, default_seed, start_fake_portal


@pytest.fixture(scope="module")
def portal_seed(tmp_path_factory: pytest.TempPathFactory) -> PortalSeed:
    """The default seed: 4 runs in 2 datasets (see ``tests.fakes.portal.default_seed``)."""
    return default_seed(tmp_path_factory.mktemp("portal-files"))


@pytest.fixture(scope="module")
def fake_portal(portal_seed: PortalSeed) -> Iterator[FakePortal]:
    with start_fake_portal(portal_seed) as portal:
        yield portal


@pytest.fixture
def portal(fake_portal: FakePortal) -> Iterator[FakePortal]:
    """The module's fake portal with a clean fault queue and request log for each test."""
    fake_portal.faults.clear()
    with fake_portal._lock:
        fake_portal.requests.clear()
    yield fake_portal
    fake_portal.faults.clear()


@pytest.fixture
def portal_data(tmp_path: Path) -> DataRoot:
    return DataRoot(tmp_path / "data")

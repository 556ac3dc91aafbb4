"""Issue #27, item 5: what byu stores follows the umask (folders 0777 & ~umask, files 0666 & ~umask), so a lab's
other users, workers and containers under another uid in the group can read a shared data root."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from byu.labels.store import LabelStore
from byu.synth import make_cohort
from byu.tomo.io import TomoMeta, write_tomogram


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _wrong_modes(root: Path, umask: int) -> list[str]:
    """Every folder and file under ``root`` (``root`` included) whose mode is not what the umask gives."""
    bad = []
    for p in [root, *sorted(root.rglob("*"))]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        want = (0o777 if p.is_dir() else 0o666) & ~umask
        if mode != want:
            bad.append(f"{p.relative_to(root.parent)}: {mode:04o}, want {want:04o}")
    return bad


def _group_readable(path: Path) -> bool:
    mode = path.stat().st_mode
    return bool(mode & stat.S_IRGRP) and (not path.is_dir() or bool(mode & stat.S_IXGRP))


def test_a_stored_tomogram_follows_the_umask(tmp_path, umask):
    root = tmp_path / "data"
    meta = TomoMeta(tomo_id="t1", shape=(2, 8, 8), voxel_spacing=16.0, original_shape=(2, 8, 8),
                    original_spacing=16.0)
    d = write_tomogram(root / "tomograms" / "t1", np.zeros((2, 8, 8), dtype=np.uint8), meta)
    write_tomogram(d, np.ones((2, 8, 8), dtype=np.uint8), meta)  # replacing a stored one, too
    assert _group_readable(d) and all(_group_readable(p) for p in d.iterdir())
    assert _wrong_modes(root, umask) == []


def test_a_stored_version_follows_the_umask(tmp_path, umask, small_table):
    store = LabelStore(tmp_path / "data" / "labels")
    store.put("gt", small_table)
    assert all(_group_readable(p) for p in store.files("gt"))
    assert _wrong_modes(tmp_path / "data", umask) == []


def test_a_synth_cohort_follows_the_umask(tmp_path, umask):
    root = tmp_path / "data"
    make_cohort(root, n=1, seed=0, z_range=(64, 80), yx_range=(128, 160))
    assert _group_readable(root / "synth") and _group_readable(root / "tomograms" / "synth_000")
    assert _wrong_modes(root, umask) == []

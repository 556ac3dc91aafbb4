"""Atomic writes: the final name only ever holds a whole file; temp files of killed writers are cleaned up."""

from __future__ import annotations

import os
import time

from byu.atomic import STALE_TEMP_S, atomic_open, write_text


def test_stale_temp_files_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "cases.csv"
    old = tmp_path / ".cases.csv.abc123.tmp"  # left by a writer killed an hour ago
    fresh = tmp_path / ".cases.csv.def456.tmp"  # a writer still at work
    other = tmp_path / ".other.csv.xyz.tmp"
    for p in (old, fresh, other):
        p.write_text("half")
    past = time.time() - STALE_TEMP_S - 10
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    write_text(target, "whole\n")
    assert target.read_text() == "whole\n"
    assert not old.exists() and fresh.exists() and other.exists()


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "x.txt"
    write_text(target, "old")
    try:
        with atomic_open(target, "w") as fh:
            fh.write("new, half")
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]

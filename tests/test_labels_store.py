"""Versioned store: immutability, manifests, change logs, atomicity under a crash."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from byu.errors import NotFoundError, VersionExistsError, InputError
from byu.labels.store import LabelStore
from byu.labels.table import make_table, with_motors


def test_put_get_manifest_and_changes(tmp_path, small_table):
    store = LabelStore(tmp_path / "labels")
    m = store.put("gt", small_table, producer="test")
    assert m.counts == {"tomograms": 3, "motors": 3, "tomograms_with_motors": 2}
    assert store.names() == ["gt"]
    assert store.get("gt")["motor_zyx"].tolist() == small_table["motor_zyx"].tolist()
    v2 = with_motors(small_table, "tomo_b", [[50.0, 60.0, 70.0]])
    v2 = with_motors(v2, "tomo_a", [[12.0, 20.0, 30.0]])
    store.put("gt_v2", v2, parents=["gt"], producer="round1")
    ch = store.changes("gt_v2")
    assert sorted(ch["action"]) == ["add", "move"]
    moved = ch[ch.action == "move"].iloc[0]
    assert (moved.old_z, moved.new_z) == (10.0, 12.0)
    assert store.manifest("gt_v2").parents == ["gt"]


def test_versions_are_immutable(tmp_path, small_table):
    store = LabelStore(tmp_path / "labels")
    store.put("gt", small_table)
    before = store.path("gt").read_bytes()
    assert store.put("gt", small_table).sha256 == store.manifest("gt").sha256  # identical: no-op
    changed = with_motors(small_table, "tomo_b", [[1.0, 1.0, 1.0]])
    with pytest.raises(VersionExistsError):
        store.put("gt", changed)
    assert store.path("gt").read_bytes() == before


def test_unknown_parent_and_version(tmp_path, small_table):
    store = LabelStore(tmp_path / "labels")
    with pytest.raises(NotFoundError):
        store.put("gt_v2", small_table, parents=["gt"])
    assert store.names() == []
    with pytest.raises(NotFoundError, match="not found"):
        store.get("nope")
    with pytest.raises(InputError):
        store.put("../evil", small_table)


def test_tampered_version_is_detected(tmp_path, small_table):
    store = LabelStore(tmp_path / "labels")
    store.put("gt", small_table)
    p = store.path("gt")
    p.write_text(p.read_text().replace("10.0,20.0,30.0", "11.0,20.0,30.0"))
    with pytest.raises(InputError, match="sha256"):
        store.get("gt")


CRASH = textwrap.dedent("""
    import os, signal, sys
    import byu.atomic as atomic
    from byu.labels.store import LabelStore
    from byu.labels.table import make_table
    calls = {"n": 0}
    real = os.replace
    def dying_replace(a, b):
        calls["n"] += 1
        if calls["n"] == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(a, b)
    atomic.os.replace = dying_replace
    t = make_table([("tomo_a", (100, 200, 200), 10.0, [[99.0, 20.0, 30.0]])])
    LabelStore(sys.argv[1]).put(sys.argv[3], t, parents=["gt"] if sys.argv[3] != "gt" else [])
""")


@pytest.mark.parametrize("die_at", [1, 2, 3])
def test_killed_write_leaves_previous_state_and_rerun_completes(tmp_path, small_table, die_at):
    labels = tmp_path / "labels"
    store = LabelStore(labels)
    store.put("gt", small_table)
    before = {p.name: p.read_bytes() for p in labels.iterdir()}
    proc = subprocess.run([sys.executable, "-c", CRASH, str(labels), str(die_at), "gt_v2"], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    # the previous version is untouched and readable; the new one is not committed
    assert store.names() == ["gt"]
    assert {p.name: p.read_bytes() for p in labels.iterdir() if p.name in before} == before
    assert store.get("gt")["motor_zyx"].tolist() == small_table["motor_zyx"].tolist()
    # no half file under a final name: every visible file parses, temp files are hidden dot files
    for p in labels.iterdir():
        if p.name.endswith(".json") and not p.name.startswith("."):
            json.loads(p.read_text())
    # a rerun completes the version
    proc = subprocess.run([sys.executable, "-c", CRASH, str(labels), "999", "gt_v2"], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    assert store.names() == ["gt", "gt_v2"]
    assert store.get("gt_v2").loc[0, "motor_zyx"] == [[99.0, 20.0, 30.0]]


def test_combine_and_resolve(tmp_path, small_table):
    from byu.labels.combine import combine_tables

    store = LabelStore(tmp_path / "labels")
    store.put("gt", small_table)
    ext = make_table([("ext_1", (10, 10, 10), 16.0, [[1.0, 1.0, 1.0]])])
    both = combine_tables([("gt", store.get("gt")), ("ext", ext)])
    assert both["tomo_id"].tolist() == ["tomo_a", "tomo_b", "tomo_c", "ext_1"]
    with pytest.raises(InputError) as info:
        combine_tables([("a.csv", small_table), ("b.csv", small_table)])
    assert "already in a.csv" in str(info.value) and info.value.file == "b.csv"
    df, name = store.resolve("gt")
    assert name == "gt" and len(df) == 3

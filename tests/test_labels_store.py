"""Versioned store: immutability, manifests, change logs, atomicity under a crash, racing writers, legacy roots."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from byu.errors import InputError, NotFoundError, VersionExistsError
from byu.labels.formats import to_canonical, to_csv_bytes
from byu.labels.model import LabelSet
from byu.labels.store import LabelStore
from byu.labels.table import make_table, with_motors


def test_put_get_manifest_and_changes(tmp_path, small_table):
    store = LabelStore(tmp_path / "labels")
    m = store.put("gt", small_table, producer="test")
    assert m.created
    assert m.counts == {"tomograms": 3, "picks": 3, "motors": 3, "tomograms_with_motors": 2}
    assert m.class_counts == {"motor": 3} and [c.name for c in m.classes] == ["motor"] and m.form == "canonical"
    assert store.names() == ["gt"]
    labels = store.get("gt")
    assert isinstance(labels, LabelSet) and labels.is_motor_only
    assert to_canonical(labels)["motor_zyx"].tolist() == small_table["motor_zyx"].tolist()
    # the downstream view is the canonical form, byte for byte
    assert store.path("gt").read_bytes() == to_csv_bytes(small_table)
    v2 = with_motors(small_table, "tomo_b", [[50.0, 60.0, 70.0]])
    v2 = with_motors(v2, "tomo_a", [[12.0, 20.0, 30.0]])
    store.put("gt_v2", v2, parents=["gt"], producer="round1")
    ch = store.changes("gt_v2")
    assert sorted(ch["action"]) == ["add", "move"] and set(ch["particle"]) == {"motor"}
    moved = ch[ch.action == "move"].iloc[0]
    assert (moved.old_z, moved.new_z) == (10.0, 12.0)
    assert store.manifest("gt_v2").parents == ["gt"]


def test_versions_are_immutable_and_reputs_are_honest(tmp_path, small_table):
    store = LabelStore(tmp_path / "labels")
    store.put("gt", small_table)
    before = {p.name: p.read_bytes() for p in store.dir.iterdir() if not p.name.startswith(".")}
    again = store.put("gt", small_table)
    assert not again.created and again.sha256 == store.manifest("gt").sha256  # identical: no-op
    changed = with_motors(small_table, "tomo_b", [[1.0, 1.0, 1.0]])
    with pytest.raises(VersionExistsError, match="labels"):
        store.put("gt", changed)
    with pytest.raises(VersionExistsError, match="producer"):
        store.put("gt", small_table, producer="someone else")
    assert {p.name: p.read_bytes() for p in store.dir.iterdir() if not p.name.startswith(".")} == before


def test_same_table_with_other_changes_is_refused(tmp_path, small_table):
    """Re-applying a round with other decisions: same name, other audit trail -> refused, nothing changed."""
    from byu.labels.diff import change_row, changes_frame

    store = LabelStore(tmp_path / "labels")
    store.put("gt", small_table)
    v2 = with_motors(small_table, "tomo_b", [[50.0, 60.0, 70.0]])
    a = changes_frame([change_row("tomo_b", "add", new=[50, 60, 70], reviewer="ann", case_id="FP-0001")])
    b = changes_frame([change_row("tomo_b", "add", new=[50, 60, 70], reviewer="bob", case_id="FP-0001")])
    store.put("gt_v2", v2, parents=["gt"], changes=a)
    with pytest.raises(VersionExistsError, match="changes"):
        store.put("gt_v2", v2, parents=["gt"], changes=b)
    assert set(store.changes("gt_v2")["reviewer"]) == {"ann"}


def test_names_cannot_collide(tmp_path, small_table):
    store = LabelStore(tmp_path / "labels")
    store.put("gt_v2", small_table)
    for bad in ("gt_v2.changes", "gt_v2.picks", "a" * 300, "../evil", ".hidden", "x y"):
        with pytest.raises(InputError, match="not allowed"):
            store.put(bad, small_table)
    assert store.names() == ["gt_v2"]
    store.changes("gt_v2")


def test_changes_are_verified(tmp_path, small_table):
    store = LabelStore(tmp_path / "labels")
    store.put("gt", small_table)
    store.put("gt_v2", with_motors(small_table, "tomo_b", [[5.0, 5.0, 5.0]]), parents=["gt"])
    store.changes_path("gt_v2").write_text("tomo_id\nx\n")
    with pytest.raises(InputError, match="sha256"):
        store.changes("gt_v2")


def test_unknown_parent_and_version(tmp_path, small_table):
    store = LabelStore(tmp_path / "labels")
    with pytest.raises(NotFoundError):
        store.put("gt_v2", small_table, parents=["gt"])
    assert store.names() == []
    with pytest.raises(NotFoundError, match="not found"):
        store.get("nope")


def test_tampered_version_is_detected(tmp_path, small_table):
    store = LabelStore(tmp_path / "labels")
    store.put("gt", small_table)
    p = store.picks_path("gt")
    p.write_text(p.read_text().replace("10.0,20.0,30.0", "11.0,20.0,30.0"))
    with pytest.raises(InputError, match="sha256"):
        store.get("gt")


def test_outputs_inside_the_store_are_refused(tmp_path, small_table):
    store = LabelStore(tmp_path / "labels")
    store.put("gt", small_table)
    with pytest.raises(InputError, match="inside the label store"):
        store.check_output(tmp_path / "labels" / "gt.csv")
    with pytest.raises(InputError, match="is a directory"):
        store.check_output(tmp_path, option="--plot")
    store.check_output(tmp_path / "elsewhere.csv")


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


@pytest.mark.slow
@pytest.mark.parametrize("die_at", [1, 2, 3, 4])
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
    assert to_canonical(store.get("gt"))["motor_zyx"].tolist() == small_table["motor_zyx"].tolist()
    for p in labels.iterdir():
        if p.name.endswith(".json") and not p.name.startswith("."):
            json.loads(p.read_text())
    assert [p for p in labels.iterdir() if p.name.endswith(".tmp")]  # the killed writer's temp file
    # a rerun completes the version (the killed writer's lock died with it) and removes its leftovers
    proc = subprocess.run([sys.executable, "-c", CRASH, str(labels), "999", "gt_v2"], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    assert store.names() == ["gt", "gt_v2"]
    assert not [p for p in labels.iterdir() if p.name.endswith(".tmp")]
    assert to_canonical(store.get("gt_v2")).loc[0, "motor_zyx"] == [[99.0, 20.0, 30.0]]


def _racer(args):
    directory, z, barrier = args
    barrier.wait()
    table = make_table([("t", (100, 100, 100), 10.0, [[float(z), 1.0, 1.0]])])
    try:
        m = LabelStore(directory).put("race", table, producer="racer")
        return "stored" if m.created else "same"
    except VersionExistsError:
        return "refused"


@pytest.mark.slow
def test_racing_writers_exactly_one_wins(tmp_path):
    """Writers released together on one new name: one stores, the others are refused, the version reads back."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(8):
        directory = tmp_path / f"labels{round_}"
        with ctx.Manager() as manager:
            barrier = manager.Barrier(4)
            with ctx.Pool(4) as pool:
                results = pool.map(_racer, [(directory, 10 + i, barrier) for i in range(4)])
        assert sorted(results) == ["refused", "refused", "refused", "stored"], results
        labels = LabelStore(directory).get("race")
        assert len(labels.picks) == 1


def test_legacy_version_reads_as_motor_version(tmp_path, small_table):
    """A data root from before the picks model: NAME.csv + a manifest without file hashes."""
    from byu.atomic import sha256_bytes

    d = tmp_path / "labels"
    d.mkdir()
    data = to_csv_bytes(small_table)
    (d / "gt.csv").write_bytes(data)
    (d / "gt.manifest.json").write_text(json.dumps({
        "name": "gt", "parents": [], "created_at": "2026-01-01T00:00:00+00:00", "producer": "byu",
        "counts": {"tomograms": 3, "motors": 3, "tomograms_with_motors": 2}, "sha256": sha256_bytes(data),
        "changes_sha256": None, "byu_version": "0.1.0", "extra": {}}))
    store = LabelStore(d)
    labels = store.get("gt")
    assert labels.is_motor_only and len(labels.picks) == 3
    assert store.changes("gt").empty
    assert not store.put("gt", small_table).created  # identical table: accepted as the same version
    store.put("gt_v2", with_motors(small_table, "tomo_b", [[1.0, 2.0, 3.0]]), parents=["gt"])
    assert list(store.changes("gt_v2")["action"]) == ["add"]


def test_multiclass_version_files_and_views(tmp_path):
    tomos = pd.DataFrame({"tomo_id": ["a", "b"], "Z": [10, 20], "Y": [30, 40], "X": [50, 60],
                          "voxel_spacing": [10.0, 12.0]})
    picks = pd.DataFrame({"tomo_id": ["a", "a", "b"], "particle": ["ribosome", "apo-ferritin", "ribosome"],
                          "z": [1.0, 2.0, 3.0], "y": [4.0, 5.0, 6.0], "x": [7.0, 8.0, 9.0],
                          "user_id": ["alice", "", "bob"], "session_id": ["1", "", "2"]})
    labels = LabelSet.build(tomos, picks)
    store = LabelStore(tmp_path / "labels")
    m = store.put("multi", labels)
    assert m.form == "picks" and m.class_counts == {"ribosome": 2, "apo-ferritin": 1}
    assert store.path("multi").read_text().splitlines()[0] == "tomo_id,particle,z,y,x,voxel_spacing"
    back = store.get("multi")
    assert back.equals(labels) and back.picks["user_id"].tolist() == ["alice", "", "bob"]
    with pytest.raises(InputError, match="only motors"):
        store.get_table("multi")


def test_combine_and_resolve(tmp_path, small_table):
    from byu.labels.combine import combine_labels

    store = LabelStore(tmp_path / "labels")
    store.put("gt", small_table)
    ext = LabelSet.from_canonical(make_table([("ext_1", (10, 10, 10), 16.0, [[1.0, 1.0, 1.0]])]))
    both = combine_labels([("gt", store.get("gt")), ("ext", ext)])
    assert both.tomo_ids == ["tomo_a", "tomo_b", "tomo_c", "ext_1"]
    with pytest.raises(InputError) as info:
        combine_labels([("a.csv", ext), ("b.csv", ext)])
    assert "already in a.csv" in str(info.value) and info.value.file == "b.csv"
    labels, name = store.resolve("gt")
    assert name == "gt" and len(labels.tomograms) == 3

"""``byu portal ...`` end to end against the loopback fake portal (real client, real downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from byu.cli.portal import app
from byu.labels.formats import to_canonical
from byu.labels.store import LabelStore
from byu.paths import DataRoot
from byu.portal.ingest import ingest
from byu.tomo.io import iter_tomograms, read_meta
from tests.fakes.portal import SeedRun, SeedTomogram, build_seed, start_fake_portal

runner = CliRunner()



def invoke(*args: str, env: dict[str, str] | None = None):
    result = runner.invoke(app, list(args), env=env, catch_exceptions=False)
    return result


@pytest.mark.slow
def test_ingest_all_then_rerun_is_a_no_op(portal, tmp_path):
    env = {"BYU_DATA": str(tmp_path / "data"), "BYU_PORTAL_URL": portal.graphql_url}
    r = invoke("ingest", "--dataset", "10001", "--dataset", "10002", "--retries", "1", env=env)
    assert r.exit_code == 0, r.output
    data = DataRoot(tmp_path / "data")
    stored = dict(iter_tomograms(data.tomograms))
    assert sorted(stored) == ["10001_TS_001", "10001_TS_002", "10001_TS_003", "10002_cell_4"]
    meta = read_meta(stored["10001_TS_001"])
    assert meta.source["portal"]["tomogram_id"] == 500 and meta.voxel_spacing == 16.0 and meta.sha256
    assert not list(data.raw.glob("*.mrc")) and not list(data.raw.glob("*.part"))  # raw files deleted when stored
    store = LabelStore(data.labels)
    table = to_canonical(store.get("external_gt_v0")).set_index("tomo_id")
    assert table.index.tolist() == ["10001_TS_001", "10001_TS_002", "10001_TS_003"]  # cell 4: no annotation
    assert table["num_motors"].tolist() == [1, 2, 0]
    assert table.loc["10001_TS_001", "motor_zyx"] == [[20.0, 40.0, 50.0]]  # (200, 400, 500) Å at 10 Å
    meta = read_meta(stored["10001_TS_002"])
    assert tuple(table.loc["10001_TS_002", ["Z", "Y", "X"]]) == meta.original_shape  # the tomogram's own frame
    assert table.loc["10001_TS_002", "voxel_spacing"] == meta.original_spacing == 16.0  # its 16 Å tomogram
    manifest = store.manifest("external_gt_v0")
    assert manifest.extra["tomograms"]["10001_TS_002"]["tomogram_id"] == 503
    assert "selected" in r.output and "labels: version 'external_gt_v0' stored" in r.output

    portal.requests.clear()
    again = invoke("ingest", "--dataset", "10001", "--dataset", "10002", env=env)
    assert again.exit_code == 0, again.output
    assert "0 stored, 4 up to date" in again.output and "already stored (identical)" in again.output
    assert not [r for r in portal.requests if r.path.endswith(".mrc")]  # nothing downloaded again


def test_two_objects_make_a_two_class_version(portal, tmp_path):
    env = {"BYU_DATA": str(tmp_path / "data"), "BYU_PORTAL_URL": portal.graphql_url}
    r = invoke("ingest", "--dataset", "10001", "--objects", "motor,cytosolic ribosome", "--label-version", "two",
               env=env)
    assert r.exit_code == 0, r.output
    labels = LabelStore(tmp_path / "data" / "labels").get("two")
    assert labels.class_names == ["motor", "ribosome"]
    assert labels.class_counts() == {"motor": 3, "ribosome": 1}
    rib = labels.picks[labels.picks.particle == "ribosome"].iloc[0]
    assert (rib.tomo_id, rib.z, rib.y, rib.x) == ("10001_TS_002", 6.25, 6.25, 6.25)  # (100, 100, 100) Å at 16 Å
    assert rib.source.startswith("portal:annotation ")
    bad = invoke("find", "--dataset", "10001", "--objects", "unicorn", env=env)
    assert bad.exit_code == 2 and "no byu class for portal object" in bad.output


def test_steps_one_by_one_with_an_external_csv(portal, tmp_path):
    d = str(tmp_path / "data")
    csv = tmp_path / "points.csv"
    csv.write_text("dataset_id,tomo_id,z,y,x,voxel_spacing\n10001,TS_003,10,20,30,12\n10002,cell 4,-1,-1,-1,\n")
    common = ["--data-dir", d]
    r = invoke("find", "--points", str(csv), "--object", "", "--url", portal.graphql_url, *common)
    assert r.exit_code == 0, r.output
    sel = json.loads((tmp_path / "data" / "raw" / "selection.json").read_text())
    assert [t["tomo_id"] for t in sel["tomograms"]] == ["10001_TS_003", "10002_cell_4"]
    assert invoke("download", "--workers", "2", *common).exit_code == 0
    assert invoke("preprocess", *common).exit_code == 0
    r = invoke("labels", "--label-version", "ext_csv", *common)
    assert r.exit_code == 0, r.output
    table = to_canonical(LabelStore(tmp_path / "data" / "labels").get("ext_csv")).set_index("tomo_id")
    assert table["num_motors"].to_dict() == {"10001_TS_003": 1, "10002_cell_4": 0}
    assert table.loc["10001_TS_003", "motor_zyx"] == [[10.0, 20.0, 30.0]]  # given at 12 Å, the tomogram's own


@pytest.mark.slow
def test_failures_are_reported_skipped_and_resumed(tmp_path):
    seed = build_seed(tmp_path / "files", [
        SeedRun(dataset_id=1, run_name="good", motors_A=[(100.0, 200.0, 300.0)],
                tomograms=[SeedTomogram(voxel_spacing=10.0, shape=(24, 48, 48))]),
        SeedRun(dataset_id=1, run_name="flaky", motors_A=[(150.0, 150.0, 150.0)],
                tomograms=[SeedTomogram(voxel_spacing=10.0, shape=(24, 48, 48))]),
        SeedRun(dataset_id=1, run_name="broken", motors_A=[(100.0, 100.0, 100.0)],
                tomograms=[SeedTomogram(voxel_spacing=10.0, shape=(24, 48, 48), corrupt="header")]),
    ])
    with start_fake_portal(seed) as portal:
        portal.fault("flaky.mrc", *["500"] * 3)
        env = {"BYU_DATA": str(tmp_path / "data"), "BYU_PORTAL_URL": portal.graphql_url}
        r = invoke("ingest", "--dataset", "1", "--retries", "1", env=env)
        assert r.exit_code == 1
        out = " ".join(r.output.split())
        assert "failed 1_flaky" in out and "HTTP 500" in out
        assert "failed 1_broken" in out and "1_broken.mrc" in out and "corrupt header" in out
        assert "not stored" in out  # no partial label version
        data = DataRoot(tmp_path / "data")
        assert [t for t, _ in iter_tomograms(data.tomograms)] == ["1_good"]
        assert sorted(p.name for p in data.tomograms.iterdir()) == ["1_good"]  # nothing half-written
        assert not LabelStore(data.labels).names()

        r = invoke("ingest", "--dataset", "1", "--retries", "1", env=env)  # flaky recovers; broken stays broken
        assert r.exit_code == 1 and "0 stored" not in r.output
        assert [t for t, _ in iter_tomograms(data.tomograms)] == ["1_flaky", "1_good"]
        r = invoke("labels", "--data-dir", str(data.root), env=env)  # the labels verb has the same gate
        assert r.exit_code == 1 and "not stored" in r.output and not LabelStore(data.labels).names()
        r = invoke("ingest", "--dataset", "1", "--allow-partial", env=env)
        assert r.exit_code == 1  # still reports the broken one
        store = LabelStore(data.labels)
        assert store.names() == ["external_gt_v0-partial"]
        assert store.get("external_gt_v0-partial").tomo_ids == ["1_flaky", "1_good"]
        assert store.manifest("external_gt_v0-partial").extra["missing"] == ["1_broken"]

        # the portal fixes the file: a rerun completes the version, the partial one is its parent
        from tests.fakes.portal import synthetic_volume, write_mrc

        broken = next(portal.seed.files_dir.rglob("broken.mrc"))
        write_mrc(broken, synthetic_volume((24, 48, 48), 10.0, [(100.0, 100.0, 100.0)]), 10.0)
        r = invoke("ingest", "--dataset", "1", env=env)
        assert r.exit_code == 0, r.output
        assert store.get("external_gt_v0").tomo_ids == ["1_broken", "1_flaky", "1_good"]
        assert store.manifest("external_gt_v0").parents == ["external_gt_v0-partial"]
        assert list(store.changes("external_gt_v0").action) == ["add_tomo", "add"]


def test_library_ingest_matches_the_cli(portal, portal_data):
    report = ingest(portal.graphql_url, portal_data, run_names=["TS_002"], label_version="one", backoff=0.01)
    assert report.ok and [t.tomo_id for t in report.selection.tomograms] == ["10001_TS_002"]
    assert report.labels is not None and report.labels.manifest.counts == {
        "tomograms": 1, "picks": 2, "motors": 2, "tomograms_with_motors": 1}


@pytest.mark.parametrize("args, message", [(["find"], "nothing to select"), (["download"], "no selection file")])
def test_usage_errors_are_clear(tmp_path, args, message, portal):
    r = runner.invoke(app, [*args, "--data-dir", str(tmp_path)], env={"BYU_PORTAL_URL": portal.graphql_url})
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_help_lists_the_verbs():
    r = invoke("--help")
    for verb in ("find", "download", "preprocess", "labels", "ingest"):
        assert verb in r.output
    assert Path(__file__).exists()


def test_merged_points_are_per_class_and_reported(tmp_path):
    seed = build_seed(tmp_path / "files", [
        SeedRun(dataset_id=3, run_name="close", motors_A=[(200.0, 300.0, 300.0), (200.0, 300.0, 340.0)],
                other_objects={"ferritin complex": [(100.0, 100.0, 100.0), (100.0, 100.0, 140.0)]},
                tomograms=[SeedTomogram(voxel_spacing=10.0, shape=(24, 48, 48))])])
    with start_fake_portal(seed) as portal:
        env = {"BYU_DATA": str(tmp_path / "data"), "BYU_PORTAL_URL": portal.graphql_url}
        r = invoke("ingest", "--dataset", "3", "--objects", "motor,apo-ferritin", "--label-version", "v", env=env)
        assert r.exit_code == 0, r.output
        store = LabelStore(tmp_path / "data" / "labels")
        assert store.get("v").class_counts() == {"motor": 1, "apo-ferritin": 2}
        out = " ".join(r.output.split())
        assert "merged 1 motor point(s) in 3_close (closer than 125 Å to another)" in out, out
        assert "apo-ferritin point(s)" not in out
        assert store.manifest("v").extra["merged_points"] == [
            {"tomo_id": "3_close", "particle": "motor", "merged": 1, "distance_A": 125.0}]
        r = invoke("labels", "--label-version", "v20", "--merge-distance", "20", env=env)
        assert r.exit_code == 0, r.output
        assert store.get("v20").class_counts() == {"motor": 2, "apo-ferritin": 2} and "closer than" not in r.output
        r = invoke("labels", "--label-version", "vf", "--merge-fraction", "0.8", env=env)
        assert r.exit_code == 0 and store.get("vf").class_counts() == {"motor": 1, "apo-ferritin": 1}, r.output
        assert "merged 1 apo-ferritin point(s) in 3_close (closer than 48 Å to another)" in " ".join(r.output.split())
        r = runner.invoke(app, ["labels", "--merge-fraction", "-1"], env=env)
        assert r.exit_code == 2 and "--merge-fraction" in r.output and "Traceback" not in r.output
        r = runner.invoke(app, ["labels", "--merge-distance", "5", "--merge-fraction", "0.2"], env=env)
        assert r.exit_code == 2 and "--merge-distance" in r.output

"""Selection against the loopback fake portal, through the real ``cryoet_data_portal`` client."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
import requests
from cryoet_data_portal import Client, Run

from byu.errors import InputError
from byu.labels.classes import BUILTIN_CLASSES, ParticleClass
from byu.paths import check_id
from byu.portal.query import PortalError, Selection, choose_tomogram, find_point_files, find_runs, make_tomo_id, select
from tests.fakes.portal import start_fake_portal


def tomo(id: int, spacing: float, processing: str = "raw", canonical: bool = True, mrc: bool = True,
         zarr: bool = False) -> SimpleNamespace:
    return SimpleNamespace(id=id, voxel_spacing=spacing, processing=processing, is_portal_standard=canonical,
                           is_author_submitted=not canonical, is_visualization_default=False,
                           https_mrc_file="https://x/a.mrc" if mrc else None,
                           s3_omezarr_dir="s3://b/a.zarr" if zarr else None)


def test_tomo_id_is_dataset_and_safe_run_name():
    assert make_tomo_id(10001, "TS_001") == "10001_TS_001"
    assert make_tomo_id("10002", "cell 4/a b") == "10002_cell_4_a_b"
    assert make_tomo_id(7, "..") == "7_run"
    for name in ["a:b", "x y", "ü", "../../etc"]:
        check_id(make_tomo_id(1, name))


def test_choose_closest_spacing_not_coarser_than_target_by_default():
    ts = [tomo(1, 4.0), tomo(2, 10.0), tomo(3, 20.0), tomo(4, 13.48)]
    assert choose_tomogram(ts, target_spacing=16.0).id == 4  # largest spacing <= 16
    assert choose_tomogram(ts, target_spacing=16.0, side="above").id == 3  # smallest spacing >= 16
    assert choose_tomogram([tomo(5, 20.0), tomo(6, 32.0)], target_spacing=16.0).id == 5  # fallback: closest above
    assert choose_tomogram([tomo(7, 4.0), tomo(8, 8.0)], target_spacing=16.0, side="above").id == 8  # fallback below
    assert choose_tomogram([tomo(9, 16.0), tomo(10, 10.0)], target_spacing=16.0).id == 9  # exactly the target


def test_choose_prefers_canonical_then_processing_and_needs_the_format():
    same = [tomo(1, 10.0, "denoised", canonical=False), tomo(2, 10.0, "raw", canonical=True),
            tomo(3, 10.0, "filtered", canonical=False)]
    assert choose_tomogram(same).id == 2
    assert choose_tomogram(same, prefer=("denoised", "canonical")).id == 1
    assert choose_tomogram([tomo(4, 10.0, "filtered", False), tomo(5, 10.0, "raw", False)]).id == 5
    only_zarr = [tomo(6, 10.0, mrc=False, zarr=True), tomo(7, 14.0, mrc=False, zarr=False)]
    assert choose_tomogram(only_zarr, fmt="mrc") is None
    assert choose_tomogram(only_zarr, fmt="auto").id == 6
    assert choose_tomogram([]) is None


def test_find_runs_by_dataset_name_and_pair(portal):
    client = Client(url=portal.graphql_url)
    runs, missing = find_runs(client, dataset_ids=[10001])
    assert [r.name for r in runs] == ["TS_001", "TS_002", "TS_003"]
    assert missing == []
    runs, missing = find_runs(client, run_names=["TS_002", "nope"])
    assert [r.name for r in runs] == ["TS_002"]
    assert [m.run_name for m in missing] == ["nope"]
    runs, missing = find_runs(client, pairs=[(10002, "cell 4"), (10002, "TS_001")])
    assert [(r.dataset_id, r.name) for r in runs] == [(10002, "cell 4")]
    assert [(m.dataset_id, m.run_name) for m in missing] == [(10002, "TS_001")]
    runs, missing = find_runs(client, dataset_ids=[99999])
    assert runs == [] and missing[0].dataset_id == 99999
    with pytest.raises(InputError, match="nothing to select"):
        find_runs(client)


def test_point_files_match_motors_only(portal):
    client = Client(url=portal.graphql_url)
    runs, _ = find_runs(client, dataset_ids=[10001, 10002])
    files = find_point_files(client, runs)
    assert sorted(f.tomo_id for f in files) == ["10001_TS_001", "10001_TS_002", "10001_TS_003"]
    assert {f.object_name for f in files} == {"bacterial-type flagellum motor"}
    ts2 = next(f for f in files if f.tomo_id == "10001_TS_002")
    assert ts2.voxel_spacing == 8.0 and ts2.https_path.endswith(".ndjson") and ts2.shape_type == "Point"
    assert {f.particle for f in files} == {"motor"}
    ribosomes = find_point_files(client, runs, classes=[BUILTIN_CLASSES["ribosome"]])
    assert [(f.tomo_id, f.particle) for f in ribosomes] == [("10001_TS_002", "ribosome")]
    nothing = ParticleClass(name="nothing", radius=10.0, portal_object="%nothing like this%")
    assert find_point_files(client, runs, classes=[nothing]) == []
    both = find_point_files(client, runs, classes=[BUILTIN_CLASSES["motor"], BUILTIN_CLASSES["ribosome"]])
    assert sorted(f.particle for f in both) == ["motor", "motor", "motor", "ribosome"]


def test_objects_resolve_to_classes():
    from byu.portal.query import resolve_objects

    assert [c.name for c in resolve_objects(None)] == ["motor"]
    assert [c.name for c in resolve_objects(["ribosome", "GO:0070288", "bacterial-type flagellum motor"])] == [
        "ribosome", "apo-ferritin", "motor"]
    with pytest.raises(InputError, match="no byu class"):
        resolve_objects(["unicorn"])


def test_select_writes_a_selection_that_round_trips(portal, tmp_path):
    sel = select(portal.graphql_url, dataset_ids=[10001, 10002])
    got = {t.tomo_id: (t.tomogram_id, t.voxel_spacing, t.processing) for t in sel.tomograms}
    assert got["10001_TS_001"][2] == "raw"  # canonical raw beats the denoised copy
    assert got["10001_TS_002"][1] == 16.0  # 16 Å offered: closest to the target
    assert got["10002_cell_4"][1] == 20.0  # only a coarser one: taken
    assert set(got) == {"10001_TS_001", "10001_TS_002", "10001_TS_003", "10002_cell_4"}
    t = sel.by_tomo_id()["10001_TS_002"]
    assert t.shape == (24, 48, 56) and t.file_size_mrc and t.https_mrc_file.startswith(portal.files_base_url)
    path = sel.write(tmp_path / "sel.json")
    again = Selection.read(path)
    assert again == sel


def test_select_from_external_csv_reports_unknown_runs(portal, tmp_path):
    csv = tmp_path / "points.csv"
    csv.write_text("dataset_id,tomo_id,z,y,x\n10001,TS_003,5,6,7\n10001,TS_404,1,1,1\n10002,cell 4,-1,-1,-1\n")
    sel = select(portal.graphql_url, points_csv=csv, object_name=None)
    assert [t.tomo_id for t in sel.tomograms] == ["10001_TS_003", "10002_cell_4"]
    assert [(s.dataset_id, s.run_name) for s in sel.skipped] == [(10001, "TS_404")]
    assert sel.point_files == [] and sel.points_csv == str(csv)


def test_selection_read_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        Selection.read(bad)


def test_unreachable_portal_is_a_clear_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/graphql"
    with pytest.raises(PortalError, match=f"portal {url}: Run query failed"):
        select(url, dataset_ids=[1])


@pytest.mark.slow
def test_fake_portal_unpacks_as_a_triple(portal_seed):
    graphql_url, files_base_url, stop = start_fake_portal(portal_seed)
    try:
        assert [r.name for r in Run.find(Client(url=graphql_url), [Run.dataset_id == 10002])] == ["cell 4"]
        rel = portal_seed.rows("AnnotationFile")[0]["httpsPath"].replace("{FILES}/", "")
        assert requests.get(f"{files_base_url}/{rel}", timeout=5).status_code == 200
    finally:
        stop()
    stop()  # idempotent

"""Points (portal ndjson, external CSV) -> label versions of any class in the portal tomograms' own frames."""

from __future__ import annotations

import numpy as np
import pytest

from byu.errors import InputError, InputErrors
from byu.labels.classes import BUILTIN_CLASSES
from byu.labels.formats import to_canonical
from byu.labels.store import LabelStore
from byu.portal.convert import (
    ConversionNotes,
    TomoFrame,
    dedupe_points,
    external_points_A,
    labels_from_points,
    portal_labels,
    store_portal_labels,
)
from byu.portal.points import read_external_points, read_ndjson_points
from byu.portal.query import PointFile, PortalTomogram, Selection


def test_ndjson_points_point_and_oriented(tmp_path):
    p = tmp_path / "a.ndjson"
    p.write_text('{"type": "point", "location": {"x": 1.5, "y": 2, "z": 3}}\n\n'
                 '{"type": "orientedPoint", "location": {"x": 4, "y": 5, "z": 6}, "xyz_rotation_matrix": '
                 '[[1,0,0],[0,1,0],[0,0,1]]}\n')
    np.testing.assert_array_equal(read_ndjson_points(p), [[3, 2, 1.5], [6, 5, 4]])
    (tmp_path / "empty.ndjson").write_text("")
    assert read_ndjson_points(tmp_path / "empty.ndjson").shape == (0, 3)
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"location": {"x": 1, "y": 2, "z": 3}}\n{"location": {"x": 1}}\nnot json\n')
    with pytest.raises(InputErrors) as err:
        read_ndjson_points(bad)
    where = [(e.file, e.row, e.field) for e in err.value.errors]
    assert where == [(str(bad), 2, "location"), (str(bad), 3, "location")]


def test_external_csv_forms_and_errors(tmp_path):
    p = tmp_path / "pts.csv"
    p.write_text("dataset_id,tomo_id,Motor axis 0,Motor axis 1,Motor axis 2,Voxel spacing\n"
                 "10001,TS_1,10,20,30,13.48\n10001,TS_1,1,2,3,\n10002,TS 2,-1,-1,-1,\n")
    df = read_external_points(p)
    assert df["run_name"].tolist() == ["TS_1", "TS_1", "TS 2"]
    assert df["z"].iloc[0] == 10 and df["voxel_spacing"].iloc[0] == 13.48 and np.isnan(df["voxel_spacing"].iloc[1])
    assert np.isnan(df["z"].iloc[2])  # no motor, but the run is listed
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset_id,tomo_id,z,y,x,voxel_spacing\nabc,TS_1,1,2,3,10\n1,TS_1,x,2,3,10\n1,TS_1,1,2,3,-4\n"
                   "1,,1,2,3,10\n1,TS_1,-5,2,3,10\n")
    with pytest.raises(InputErrors) as err:
        read_external_points(bad)
    assert [(e.row, e.field) for e in err.value.errors] == [
        (2, "dataset_id"), (3, "z"), (4, "voxel_spacing"), (5, "tomo_id"), (6, "z")]
    missing = tmp_path / "missing.csv"
    missing.write_text("tomo_id,z,y\nTS_1,1,2\n")
    with pytest.raises(InputError, match="missing column.*dataset_id.*z,y,x") as one:
        read_external_points(missing)
    assert one.value.file == str(missing)


MOTOR, RIBOSOME = BUILTIN_CLASSES["motor"], BUILTIN_CLASSES["ribosome"]


def test_scaling_dedupe_clamp_and_drop():
    frames = {"a": TomoFrame("a", (20, 30, 40), 16.0), "b": TomoFrame("b", (10, 10, 10), 20.0),
              "c": TomoFrame("c", (5, 5, 5), 16.0)}
    pts = {
        "a": [("motor", np.array([[160.0, 320.0, 480.0], [170.0, 330.0, 480.0], [16 * 20.5, 0, 0],
                                  [16 * 25.0, 16 * 5.0, 0]]), "portal:annotation 1")],
        "b": [("motor", np.zeros((0, 3)), "portal:annotation 2")],
    }
    notes = ConversionNotes()
    # 100 Å (the old fixed distance): the last two points, 108 Å apart, stay two (a motor's own, 125 Å, merges them)
    labels = labels_from_points(frames, pts, [MOTOR], notes=notes, merge_distance_A=100.0)
    assert labels.tomo_ids == ["a", "b"]  # c has no annotation: no row
    table = to_canonical(labels)
    a = table.iloc[0]
    assert a.num_motors == 2 and a.motor_zyx[0] == [10.0, 20.0, 30.0]
    assert a.motor_zyx[1][0] == pytest.approx(20 - 1e-3)  # 0.5 voxel outside: clamped in
    assert notes.merged == {"a": 1} and notes.dropped == {"a": [[400.0, 80.0, 0.0]]}
    assert table.iloc[1].num_motors == 0 and table.iloc[1].voxel_spacing == 20.0
    assert set(labels.picks["source"]) == {"portal:annotation 1"}
    with_empty = labels_from_points(frames, pts, [MOTOR], include_empty=True)
    assert with_empty.tomo_ids == ["a", "b", "c"] and with_empty.motor_counts()["c"] == 0
    kept = dedupe_points(np.array([[0, 0, 0], [0, 0, 50.0], [0, 0, 150.0]]), 100.0)
    assert kept.tolist() == [[0, 0, 0], [0, 0, 150.0]]


def selection() -> Selection:
    t1 = PortalTomogram(tomo_id="5_r1", dataset_id=5, run_id=1, run_name="r1", tomogram_id=11, voxel_spacing=10.0,
                        shape=(40, 64, 64))
    t2 = PortalTomogram(tomo_id="5_r2", dataset_id=5, run_id=2, run_name="r2", tomogram_id=12, voxel_spacing=20.0,
                        shape=(20, 30, 30))
    pf = PointFile(tomo_id="5_r1", run_id=1, annotation_id=100, annotation_file_id=1000, object_name="motor",
                   shape_type="Point", format="ndjson", voxel_spacing=8.0)
    rb = PointFile(tomo_id="5_r1", run_id=1, annotation_id=101, annotation_file_id=1001,
                   object_name="cytosolic ribosome", shape_type="OrientedPoint", format="ndjson", voxel_spacing=8.0,
                   particle="ribosome")
    return Selection(portal_url="http://x", target_spacing=16.0, tomograms=[t1, t2], point_files=[pf, rb],
                     classes=[MOTOR, RIBOSOME])


def test_external_points_use_the_row_spacing_or_the_tomogram_spacing(tmp_path):
    p = tmp_path / "pts.csv"
    p.write_text("dataset_id,tomo_id,z,y,x,voxel_spacing,particle\n5,r1,10,20,30,,\n5,r1,10,20,30,16,ribosome\n"
                 "5,r2,-1,-1,-1,,\n6,r1,1,1,1,,\n")
    notes = ConversionNotes()
    pts = external_points_A(read_external_points(p), selection(), source=str(p), notes=notes)
    by = {(t, c): a for t, items in pts.items() for c, a, _ in items}
    np.testing.assert_allclose(by[("5_r1", "motor")], [[100, 200, 300]])  # default class: the selection's first
    np.testing.assert_allclose(by[("5_r1", "ribosome")], [[160, 320, 480]])
    assert by[("5_r2", "motor")].shape == (0, 3) and notes.unmatched_rows == [5]
    p.write_text("dataset_id,tomo_id,z,y,x,particle\n5,r1,1,2,3,virus\n")
    with pytest.raises(InputError) as err:
        external_points_A(read_external_points(p), selection(), source=str(p))
    assert err.value.row == 2 and err.value.field == "particle"


def test_portal_labels_and_store_manifest(tmp_path):
    sel = selection()
    ndjson = tmp_path / "1000.ndjson"
    ndjson.write_text('{"type": "point", "location": {"x": 60, "y": 40, "z": 20}}\n')  # 8 Å voxels
    rib = tmp_path / "1001.ndjson"
    rib.write_text('{"type": "orientedPoint", "location": {"x": 10, "y": 20, "z": 30}, '
                   '"xyz_rotation_matrix": [[1,0,0],[0,1,0],[0,0,1]]}\n')
    labels, notes = portal_labels(sel, tmp_path / "tomograms", point_paths={1000: ndjson, 1001: rib},
                                  require_stored=False, include_empty=True)
    assert labels.class_names == ["motor", "ribosome"]
    frames = labels.tomograms.set_index("tomo_id")
    assert tuple(frames.loc["5_r1"]) == (40, 64, 64, 10.0)  # the portal tomogram's own frame
    picks = {(r.tomo_id, r.particle): (r.z, r.y, r.x, r.source) for r in labels.picks.itertuples()}
    assert picks[("5_r1", "motor")] == (16.0, 32.0, 48.0, "portal:annotation 100")  # (160, 320, 480) Å at 10 Å
    assert picks[("5_r1", "ribosome")] == (24.0, 16.0, 8.0, "portal:annotation 101")
    assert labels.motor_counts()["5_r2"] == 0
    stored_only, _ = portal_labels(sel, tmp_path / "tomograms", point_paths={1000: ndjson})
    assert len(stored_only.tomograms) == 0  # nothing preprocessed yet
    store = LabelStore(tmp_path / "labels")
    m = store_portal_labels(store, "external_gt_v0", labels, selection=sel, notes=notes)
    assert m.extra["tomograms"]["5_r1"] == {"dataset_id": 5, "run_id": 1, "run_name": "r1", "tomogram_id": 11,
                                            "voxel_spacing": 10.0}
    assert m.extra["annotation_files"] == [1000, 1001] and m.class_counts == {"motor": 1, "ribosome": 1}
    assert store.get("external_gt_v0").equals(labels)


APO = BUILTIN_CLASSES["apo-ferritin"]


def test_merge_distance_is_half_of_each_class_radius_and_reported(tmp_path):
    frames = {"t": TomoFrame("t", (60, 60, 60), 10.0)}
    pts = {"t": [("apo-ferritin", np.array([[100.0, 100.0, 100.0], [100.0, 100.0, 140.0]]), "portal:annotation 1"),
                 ("motor", np.array([[300.0, 300.0, 300.0], [300.0, 300.0, 340.0]]), "portal:annotation 2")]}
    notes = ConversionNotes()
    labels = labels_from_points(frames, pts, [APO, MOTOR], notes=notes)
    # apo-ferritin: radius 60 Å → merged within 30 Å: 40 Å apart are two particles; motor: 250 Å → 125 Å
    assert labels.class_counts() == {"apo-ferritin": 2, "motor": 1}
    assert [(m.tomo_id, m.particle, m.merged, m.distance_A) for m in notes.merges] == [("t", "motor", 1, 125.0)]
    assert notes.merged == {"t": 1}
    # one distance for every class, or another fraction of each radius
    same = labels_from_points(frames, pts, [APO, MOTOR], merge_distance_A=50.0)
    assert same.class_counts() == {"apo-ferritin": 1, "motor": 1}
    tight = ConversionNotes()
    assert labels_from_points(frames, pts, [APO, MOTOR], merge_fraction=0.1, notes=tight).class_counts() == \
        {"apo-ferritin": 2, "motor": 2} and tight.merges == []
    with pytest.raises(InputError, match="merge"):
        labels_from_points(frames, pts, [APO, MOTOR], merge_fraction=-1.0)
    with pytest.raises(InputError, match="merge"):
        labels_from_points(frames, pts, [APO, MOTOR], merge_distance_A=float("nan"))
    sel = Selection(portal_url="http://x", target_spacing=16.0, classes=[APO, MOTOR], tomograms=[
        PortalTomogram(tomo_id="t", dataset_id=1, run_id=1, run_name="t", tomogram_id=1, voxel_spacing=10.0,
                       shape=(60, 60, 60))])
    m = store_portal_labels(LabelStore(tmp_path / "labels"), "v", labels, selection=sel, notes=notes)
    assert m.extra["merged_points"] == [{"tomo_id": "t", "particle": "motor", "merged": 1, "distance_A": 125.0}]


def test_dedupe_keeps_the_first_of_close_points_at_scale():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 20000, (3000, 3))
    pts = np.concatenate([pts, pts[:500] + 1.0])  # 500 repeats, 1.7 Å off
    kept = dedupe_points(pts, 30.0)
    assert len(kept) <= 3000 and len(kept) >= 2990
    np.testing.assert_array_equal(kept[:10], pts[:10])

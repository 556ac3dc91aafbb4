"""Issue #27 (held-out testing): the reference's own tables convert, class values are finite and positive, an
unreadable version does not hide the others, and names never end in a newline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from byu.errors import InputError
from byu.labels.classes import ParticleClass, parse_classes, read_classes_file
from byu.labels.formats import export_bytes, read_labels, read_version_file, to_csv_bytes
from byu.labels.store import LabelStore, check_version_name
from byu.paths import check_id
from tests.test_cli_labels import byu

HEAD = ("row_id,tomo_id,Motor axis 0,Motor axis 1,Motor axis 2,Array shape (axis 0),Array shape (axis 1),"
        "Array shape (axis 2),Voxel spacing,Number of motors\n")
# shaped like the reference pipeline's train_labels_v2.csv: its pseudo-label rows carry 'Number of motors' 0
# beside the tomogram's original motor row (line 4 here; line 17 of the reference's file, tomo_040b80)
V2 = (HEAD
      + "0,tomo_003acc,-1,-1,-1,500,1912,1847,6.5,0\n"
      + "1,tomo_040b80,120,480,560,300,959,928,15.6,1\n"
      + "2,tomo_040b80,150,400,300,300,959,928,15.6,0\n"
      + "3,tomo_00e047,169,546,603,300,959,928,15.6,1\n")


def test_train_labels_v2_converts_with_a_warning_naming_the_tomogram(tmp_path):
    p = tmp_path / "train_labels_v2.csv"
    p.write_text(V2)
    notes: list[str] = []
    df = read_labels(p, notes=notes)
    assert df["tomo_id"].tolist() == ["tomo_003acc", "tomo_040b80", "tomo_00e047"]
    assert df.loc[1, "motor_zyx"] == [[120.0, 480.0, 560.0], [150.0, 400.0, 300.0]]  # the rows are the truth
    assert df["num_motors"].tolist() == [0, 2, 1]
    assert len(notes) == 1 and "tomo_040b80" in notes[0] and "Number of motors" in notes[0]
    assert "train_labels_v2.csv" in notes[0]
    # the canonical table of it rebuilds byte for byte
    assert to_csv_bytes(read_labels(_write(tmp_path / "gt.csv", to_csv_bytes(df)))) == to_csv_bytes(df)
    labels = read_version_file(p)  # the path byu labels convert takes
    assert labels.counts()["motors"] == 3


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_train_labels_v2_strict_counts_refuses_naming_file_line_field(tmp_path):
    p = tmp_path / "train_labels_v2.csv"
    p.write_text(V2)
    with pytest.raises(InputError) as info:
        read_labels(p, strict_counts=True)
    err = info.value
    assert err.file.endswith("train_labels_v2.csv") and err.row == 4 and err.field == "Number of motors"
    assert "tomo_040b80" in str(err)


def test_agreeing_counts_give_no_notes_and_the_competition_form_round_trips(tmp_path):
    table = HEAD + "0,tomo_x,-1,-1,-1,300,959,928,15.6,0\n1,tomo_y,235,403,137,500,924,956,13.1,1\n"
    p = tmp_path / "a.csv"
    p.write_text(table)
    notes: list[str] = []
    labels = read_version_file(p, notes=notes)
    assert notes == []
    assert export_bytes(labels, "competition").decode() == table


@pytest.mark.slow
def test_cli_convert_of_train_labels_v2_warns_and_strict_refuses(tmp_path):
    data = tmp_path / "data"
    p = tmp_path / "train_labels_v2.csv"
    p.write_text(V2)
    proc = byu("labels", "convert", str(p), "--version", "gt", "--out", str(tmp_path / "gt.csv"), data=data)
    assert "warning" in proc.stderr and "tomo_040b80" in proc.stderr and "Traceback" not in proc.stderr
    assert LabelStore(data / "labels").get("gt").counts()["motors"] == 3
    proc = byu("labels", "convert", str(p), "--version", "gt_strict", "--strict-counts", data=data, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "train_labels_v2.csv, line 4, field 'Number of motors'" in proc.stderr
    assert LabelStore(data / "labels").names() == ["gt"]


# ---------------------------------------------------------------------------------------------- item 12
@pytest.mark.parametrize("field, value", [
    ("radius", ".inf"), ("radius", ".nan"), ("radius", "-5"), ("radius", "0"),
    ("weight", ".inf"), ("weight", ".nan"), ("weight", "-1"),
    ("match_radius", "nan"), ("match_radius", ".inf"), ("match_radius", "0"), ("match_radius", "-3"),
])
def test_non_finite_or_non_positive_class_values_are_refused(tmp_path, field, value):
    p = tmp_path / "classes.yaml"
    entry = {"name": "ribo", "radius": "150", field: value}
    p.write_text("- {" + ", ".join(f"{k}: {v}" for k, v in entry.items()) + "}\n")
    with pytest.raises(InputError) as info:
        read_classes_file(p)
    text = str(info.value)
    assert "classes.yaml" in text and "'ribo'" in text and field in (info.value.field or "")


def test_zero_weight_is_allowed():
    assert parse_classes([{"name": "b", "radius": 65, "weight": 0}])[0].weight == 0


@pytest.mark.slow
def test_an_unreadable_version_is_listed_as_such_and_the_others_still_are(tmp_path, small_table):
    store = LabelStore(tmp_path / "data" / "labels")
    store.put("gt", small_table)
    store.put("zz", small_table)
    bad = store.manifest_path("zz")
    m = json.loads(bad.read_text())
    m["classes"][0]["radius"] = None  # what a version stored with radius .inf held before the fix
    bad.write_text(json.dumps(m))
    assert store.names() == ["gt", "zz"]
    listing = {v.name: v for v in store.versions()}
    assert listing["gt"].manifest is not None and listing["gt"].problem is None
    assert listing["zz"].manifest is None and "radius" in listing["zz"].problem
    proc = byu("labels", "list", data=tmp_path / "data")
    assert "gt" in proc.stdout and "Traceback" not in proc.stderr
    assert "zz" in proc.stdout + proc.stderr and "unreadable" in proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------- item 13
def test_names_with_a_trailing_newline_are_refused():
    with pytest.raises(InputError, match="not allowed"):
        check_version_name("gt\n")
    with pytest.raises(InputError, match="not allowed"):
        check_id("t1\n")
    with pytest.raises(InputError, match="not allowed"):
        check_id("gt\n", what="version")
    with pytest.raises(InputError, match="class name"):
        parse_classes([{"name": "ribo\n", "radius": 150}])
    with pytest.raises(ValueError, match="class name"):
        ParticleClass(name="ribo\n", radius=150)


def test_a_version_named_with_a_newline_is_not_stored(tmp_path, small_table):
    store = LabelStore(tmp_path / "labels")
    with pytest.raises(InputError, match="not allowed"):
        store.put("gt\n", small_table)
    assert store.names() == []


def test_a_tomo_id_with_a_newline_in_a_table_is_refused(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text(HEAD + '0,"t1\n",-1,-1,-1,300,959,928,15.6,0\n')
    with pytest.raises(InputError, match="not allowed"):
        read_labels(p)
    p.write_text("tomo_id,Z,Y,X,voxel_spacing,num_motors,motor_z,motor_y,motor_x,motor_zyx\n"
                 '"t1\n",10,10,10,10,0,-1,-1,-1,[]\n')
    with pytest.raises(InputError, match="not allowed"):
        read_labels(p)


@pytest.mark.slow
def test_cli_convert_with_an_infinite_radius_stores_nothing_and_list_still_works(tmp_path):
    data = tmp_path / "data"
    classes = tmp_path / "classes.yaml"
    classes.write_text("- {name: ribo, radius: .inf}\n")
    picks = tmp_path / "picks.csv"
    picks.write_text("tomo_id,particle,z,y,x,voxel_spacing\nt1,ribo,1,2,3,10\n")
    tomos = tmp_path / "tomograms.csv"
    tomos.write_text("tomo_id,Z,Y,X,voxel_spacing\nt1,10,10,10,10\n")
    proc = byu("labels", "convert", str(picks), "--tomograms", str(tomos), "--classes-file", str(classes),
               "--version", "v1", data=data, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "classes.yaml" in proc.stderr and "'ribo'" in proc.stderr and "radius" in proc.stderr
    assert LabelStore(data / "labels").names() == []
    assert byu("labels", "list", data=data).returncode == 0

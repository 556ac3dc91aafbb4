"""Label forms: read canonical/wide/competition, write canonical, validation errors name file, line, field."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from byu.errors import InputError
from byu.labels.formats import read_labels, read_picks, to_csv_bytes, write_labels, write_picks
from byu.labels.table import CANONICAL_COLUMNS, make_table, motor_points

HEADER = ",".join(CANONICAL_COLUMNS)


def write(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_canonical_round_trip_is_byte_identical(tmp_path, small_table):
    p = write_labels(small_table, tmp_path / "a.csv")
    text = p.read_text()
    assert text.splitlines()[0] == HEADER
    assert text.splitlines()[1] == 'tomo_a,100,200,200,10.0,1,10.0,20.0,30.0,"[[10.0, 20.0, 30.0]]"'
    assert text.splitlines()[2] == "tomo_b,100,200,200,10.0,0,-1.0,-1.0,-1.0,[]"
    again = read_labels(p)
    assert again["motor_zyx"].tolist() == small_table["motor_zyx"].tolist()
    assert to_csv_bytes(again) == p.read_bytes()


def test_wide_form_ignores_angstrom_copies(tmp_path):
    text = (HEADER + ",ori_num_motors,ZA,YA,XA,V,VA,motor_zA,motor_yA,motor_xA,motor_zyxA\n"
            't1,10,20,30,15.6,1,1.0,2.0,3.0,"[[1.0, 2.0, 3.0]]",1,156,312,468,1,1,15.6,31.2,46.8,"[[15.6, 31.2, 46.8]]"\n')
    df = read_labels(write(tmp_path, text))
    assert list(df.columns) == CANONICAL_COLUMNS
    assert df.loc[0, "motor_zyx"] == [[1.0, 2.0, 3.0]]


def test_competition_form_groups_motors_in_input_order(tmp_path):
    text = ("row_id,tomo_id,Motor axis 0,Motor axis 1,Motor axis 2,Array shape (axis 0),Array shape (axis 1),"
            "Array shape (axis 2),Voxel spacing,Number of motors\n"
            "0,tomo_x,-1,-1,-1,300,959,928,15.6,0\n"
            "1,tomo_y,235,403,137,500,924,956,13.1,2\n"
            "2,tomo_y,10,20,30,500,924,956,13.1,2\n")
    df = read_labels(write(tmp_path, text))
    assert df["tomo_id"].tolist() == ["tomo_x", "tomo_y"]
    assert df.loc[0, "num_motors"] == 0 and df.loc[0, "motor_z"] == -1.0
    assert df.loc[1, "motor_zyx"] == [[235.0, 403.0, 137.0], [10.0, 20.0, 30.0]]
    assert (df.loc[1, "Z"], df.loc[1, "voxel_spacing"]) == (500, 13.1)


def bad_row(tmp_path, row: str) -> InputError:
    p = write(tmp_path, HEADER + "\n" + 't_ok,10,20,30,15.0,0,-1.0,-1.0,-1.0,[]\n' + row + "\n")
    with pytest.raises(InputError) as info:
        read_labels(p)
    return info.value


@pytest.mark.parametrize("row, field, words", [
    ("t_ok,10,20,30,15.0,0,-1.0,-1.0,-1.0,[]", "tomo_id", "duplicate"),
    ("../etc,10,20,30,15.0,0,-1.0,-1.0,-1.0,[]", "tomo_id", "not allowed"),
    ("a/b,10,20,30,15.0,0,-1.0,-1.0,-1.0,[]", "tomo_id", "not allowed"),
    ("..,10,20,30,15.0,0,-1.0,-1.0,-1.0,[]", "tomo_id", "not allowed"),
    ("t2,0,20,30,15.0,0,-1.0,-1.0,-1.0,[]", "Z", "positive"),
    ("t2,10,-20,30,15.0,0,-1.0,-1.0,-1.0,[]", "Y", "positive"),
    ("t2,10,20,30,0,0,-1.0,-1.0,-1.0,[]", "voxel_spacing", "positive"),
    ("t2,10,20,30,-3,0,-1.0,-1.0,-1.0,[]", "voxel_spacing", "positive"),
    ('t2,10,20,30,15.0,2,1.0,2.0,3.0,"[[1.0, 2.0, 3.0]]"', "num_motors", "says 2"),
    ('t2,10,20,30,15.0,1,nan,2.0,3.0,"[[NaN, 2.0, 3.0]]"', "motor_z", "finite"),
    ('t2,10,20,30,15.0,1,1.0,2.0,30.0,"[[1.0, 2.0, 30.0]]"', "motor_zyx", "outside"),
    ('t2,10,20,30,15.0,1,-1.0,2.0,3.0,"[[-1.0, 2.0, 3.0]]"', "motor_zyx", "outside"),
    ('t2,10,20,30,15.0,1,1.0,2.0,3.0,"[[1.0, 2.0]]"', "motor_zyx", "malformed"),
    ('t2,10,20,30,15.0,1,1.0,2.0,3.0,"[[1.0, 2.0, 3.0]"', "motor_zyx", "malformed"),
    ('t2,10,20,30,15.0,1,1.0,2.0,3.0,"[[\'a\', 2.0, 3.0]]"', "motor_zyx", "malformed"),
    ("t2,10,20,30,15.0,0,5.0,-1.0,-1.0,[]", "motor_z", "no motors"),
    ("t2,ten,20,30,15.0,0,-1.0,-1.0,-1.0,[]", "Z", "not a number"),
])
def test_every_validation_rule_names_file_line_and_field(tmp_path, row, field, words):
    err = bad_row(tmp_path, row)
    assert err.file and err.file.endswith("labels.csv")
    assert err.row == 3
    assert err.field == field
    assert words in str(err)
    assert "labels.csv" in str(err) and "line 3" in str(err)


def test_all_problems_are_listed_at_once(tmp_path):
    p = write(tmp_path, HEADER + "\nt1,0,20,30,15.0,0,-1.0,-1.0,-1.0,[]\nt/2,10,20,30,-1,0,-1.0,-1.0,-1.0,[]\n")
    with pytest.raises(InputError) as info:
        read_labels(p)
    fields = {(e.row, e.field) for e in info.value.errors}
    assert {(2, "Z"), (3, "tomo_id"), (3, "voxel_spacing")} <= fields


def test_unknown_columns_and_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="unrecognised label columns"):
        read_labels(write(tmp_path, "a,b\n1,2\n"))
    with pytest.raises(InputError, match="not found"):
        read_labels(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="readable CSV"):
        read_labels(write(tmp_path, ""))
    with pytest.raises(InputError, match="picks table"):
        read_labels(write(tmp_path, "tomo_id,particle,z,y,x\nt,ribosome,1,2,3\n"))


def test_competition_partial_marker_is_rejected(tmp_path):
    text = ("row_id,tomo_id,Motor axis 0,Motor axis 1,Motor axis 2,Array shape (axis 0),Array shape (axis 1),"
            "Array shape (axis 2),Voxel spacing,Number of motors\n0,t,-1,5,-1,300,959,928,15.6,0\n")
    with pytest.raises(InputError) as info:
        read_labels(write(tmp_path, text))
    assert info.value.row == 2 and "partial no-motor marker" in str(info.value)


def test_write_refuses_invalid_table(tmp_path):
    df = make_table([("t", (10, 10, 10), 10.0, [[1, 2, 3]])])
    df.loc[0, "num_motors"] = 3
    with pytest.raises(InputError, match="num_motors"):
        write_labels(df, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_multiclass_picks(tmp_path):
    p = write(tmp_path, "tomo_id,particle,z,y,x,conf\nTS_5_4,ribosome,10,20,30,0.9\nTS_5_4,apo-ferritin,1,2,3,0.2\n")
    df = read_picks(p)
    assert df["particle"].tolist() == ["ribosome", "apo-ferritin"]
    out = write_picks(df, tmp_path / "o.csv")
    assert read_picks(out).equals(df)
    bad = write(tmp_path, "tomo_id,particle,z,y,x,conf\nTS/1,ribosome,nan,20,30,1.5\n", "bad.csv")
    with pytest.raises(InputError) as info:
        read_picks(bad)
    assert {e.field for e in info.value.errors} == {"tomo_id", "z", "conf"}


def test_motor_points_long_form(small_table):
    pts = motor_points(small_table)
    assert len(pts) == 3
    assert pts[pts.tomo_id == "tomo_c"][["z", "y", "x"]].to_numpy().tolist() == [[1, 2, 3], [40, 50, 60]]
    assert isinstance(pts, pd.DataFrame)


def test_oversized_label_files_are_refused_before_reading(tmp_path):
    from byu.labels.formats import MAX_TABLE_BYTES, read_version_file

    big = tmp_path / "gt.csv"
    with open(big, "wb") as fh:  # sparse: claims more than the bound, uses no disk
        fh.write((HEADER + "\n").encode())
        fh.truncate(MAX_TABLE_BYTES + 1)
    with pytest.raises(InputError, match="larger than the 32 MiB") as info:
        read_labels(big)
    assert info.value.file == str(big)
    with pytest.raises(InputError, match="split it"):
        read_version_file(big)


def test_blank_lines_do_not_shift_line_numbers(tmp_path):
    p = write(tmp_path, HEADER + "\n\nt_ok,10,20,30,15.0,0,-1.0,-1.0,-1.0,[]\n\n\nt2,0,20,30,15.0,0,-1.0,-1.0,-1.0,[]\n")
    with pytest.raises(InputError) as info:
        read_labels(p)
    assert info.value.row == 6 and info.value.field == "Z"


@pytest.mark.parametrize("rows, words", [
    ("0,t,1,2,3,300,959,928,15.6,2\n", "says '2' (line 2) but the file lists 1"),  # with strict_counts only
    ("0,t,1,2,3,300.5,959,928,15.6,1\n", "whole number"),
    ("0,t,1,2,3,300,959,928,15.6,2\n1,t,1,2,3,300,959,928,15.6,2\n", "duplicate motor"),
    ("0,t,-1,-1,-1,300,959,928,15.6,1\n1,t,1,2,3,300,959,928,15.6,1\n", "no motor"),
    ("0,t,1e308,2,3,1e308,959,928,15.6,1\n", "whole number"),
])
def test_competition_rows_that_disagree_are_refused(tmp_path, rows, words):
    head = ("row_id,tomo_id,Motor axis 0,Motor axis 1,Motor axis 2,Array shape (axis 0),Array shape (axis 1),"
            "Array shape (axis 2),Voxel spacing,Number of motors\n")
    with pytest.raises(InputError, match=re.escape(words)) as info:
        read_labels(write(tmp_path, head + rows), strict_counts=words.startswith("says"))
    assert info.value.file.endswith("labels.csv") and info.value.row is not None


def test_huge_shapes_are_refused_with_file_line_and_field(tmp_path):
    err = bad_row(tmp_path, "t2,1e308,20,30,15.0,0,-1.0,-1.0,-1.0,[]")
    assert err.row == 3 and err.field == "Z" and "at most" in str(err) and "labels.csv" in str(err)

"""`byu labels ...` end to end through the console entry point (subprocess: real argv, real exit codes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from byu.labels.formats import read_labels, write_labels
from byu.labels.store import LabelStore
from byu.labels.table import make_table


def byu(*args: str, data: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "BYU_DATA": str(data), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-c", "from byu.cli import main; main()", *args],
                          capture_output=True, text=True, env=env)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


COMPETITION = ("row_id,tomo_id,Motor axis 0,Motor axis 1,Motor axis 2,Array shape (axis 0),Array shape (axis 1),"
               "Array shape (axis 2),Voxel spacing,Number of motors\n"
               "0,tomo_x,-1,-1,-1,300,959,928,15.6,0\n"
               "1,tomo_y,235,403,137,500,924,956,13.1,1\n"
               "2,tomo_z,10,20,30,500,924,956,13.1,1\n")


@pytest.mark.slow
def test_convert_combine_diff_split_list_show(tmp_path):
    data = tmp_path / "data"
    comp = tmp_path / "train_labels.csv"
    comp.write_text(COMPETITION)
    byu("labels", "convert", str(comp), "--out", str(tmp_path / "gt.csv"), "--version", "gt", data=data)
    gt = read_labels(tmp_path / "gt.csv")
    assert gt["tomo_id"].tolist() == ["tomo_x", "tomo_y", "tomo_z"]
    assert LabelStore(data / "labels").names() == ["gt"]

    ext = make_table([("ext_1", (100, 100, 100), 16.0, [[1.0, 2.0, 3.0]])])
    write_labels(ext, tmp_path / "ext.csv")
    byu("labels", "combine", "gt", str(tmp_path / "ext.csv"), "--version", "all_gt", data=data)
    store = LabelStore(data / "labels")
    assert store.manifest("all_gt").parents == ["gt"]
    assert store.get("all_gt").tomo_ids == ["tomo_x", "tomo_y", "tomo_z", "ext_1"]

    dup = byu("labels", "combine", "gt", "gt", "--out", str(tmp_path / "x.csv"), data=data, check=False)
    assert dup.returncode == 2 and "already in gt" in dup.stderr
    assert not (tmp_path / "x.csv").exists()

    moved = make_table([("tomo_x", (300, 959, 928), 15.6, [[5.0, 5.0, 5.0]]),
                        ("tomo_y", (500, 924, 956), 13.1, [[240.0, 403.0, 137.0]])])
    write_labels(moved, tmp_path / "v2.csv")
    out = byu("labels", "diff", "gt", str(tmp_path / "v2.csv"), "--csv", data=data).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("tomo_id,particle,action")
    actions = sorted(line.split(",")[2] for line in lines[1:])
    assert actions == ["add", "move", "remove", "remove_tomo"]
    table = byu("labels", "diff", "gt", str(tmp_path / "v2.csv"), "--plot", str(tmp_path / "diff.png"),
                data=data).stdout
    assert (tmp_path / "diff.png").read_bytes()[:4] == b"\x89PNG"
    assert "tomo_x" in table and "moved" in table

    split_path = tmp_path / "skf2_rd42.json"
    byu("labels", "split", "gt", "--folds", "2", "--seed", "42", "--out", str(split_path),
        "--plot", str(tmp_path / "split.png"), data=data)
    assert (tmp_path / "split.png").read_bytes()[:4] == b"\x89PNG"
    split = json.loads(split_path.read_text())
    assert split["num_folds"] == 2
    carried = tmp_path / "carry.json"
    byu("labels", "split", "all_gt", "--carry", str(split_path), "--out", str(carried), data=data)
    assert all("ext_1" in f["train"] for f in json.loads(carried.read_text())["folds"])

    listing = byu("labels", "list", data=data).stdout
    assert "all_gt" in listing and "gt" in listing
    assert '"parents"' in byu("labels", "show", "all_gt", data=data).stdout


@pytest.mark.slow
def test_bad_input_is_one_clear_line_and_changes_nothing(tmp_path):
    data = tmp_path / "data"
    bad = tmp_path / "bad.csv"
    bad.write_text(COMPETITION.replace("tomo_z", "../tomo_z"))
    proc = byu("labels", "convert", str(bad), "--version", "gt", data=data, check=False)
    assert proc.returncode == 2
    assert "bad.csv, line 4, field 'tomo_id'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (data / "labels").exists() or LabelStore(data / "labels").names() == []
    proc = byu("labels", "show", "nope", data=data, check=False)
    assert proc.returncode == 2 and "not found" in proc.stderr


@pytest.mark.slow
def test_export_forms_and_outputs_inside_the_store(tmp_path):
    data = tmp_path / "data"
    comp = tmp_path / "train_labels.csv"
    comp.write_text(COMPETITION)
    byu("labels", "convert", str(comp), "--version", "gt", data=data)
    before = {p.name: p.read_bytes() for p in (data / "labels").iterdir()}
    picks = tmp_path / "picks.csv"
    byu("labels", "export", "gt", "--form", "picks", "--out", str(picks), data=data)
    assert picks.read_text().splitlines()[0] == "tomo_id,particle,z,y,x,voxel_spacing"
    assert len(picks.read_text().splitlines()) == 3  # two motors
    back = tmp_path / "comp.csv"
    byu("labels", "export", "gt", "--form", "competition", "--out", str(back), data=data)
    assert back.read_text() == COMPETITION  # the competition form round-trips exactly
    for args in (("labels", "combine", "gt", "--out", str(data / "labels" / "gt.csv")),
                 ("labels", "split", "gt", "--folds", "2", "--out", str(data / "labels" / "gt_v2.csv")),
                 ("labels", "export", "gt", "--out", str(data / "labels" / "x.csv"))):
        proc = byu(*args, data=data, check=False)
        assert proc.returncode == 2 and "inside the label store" in proc.stderr, proc.stderr
    assert {p.name: p.read_bytes() for p in (data / "labels").iterdir()} == before
    proc = byu("labels", "export", "gt", "--out", str(tmp_path), data=data, check=False)
    assert proc.returncode == 2 and "directory" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_user_data_in_errors_is_printed_literally(tmp_path):
    data = tmp_path / "data"
    bad = tmp_path / "bad.csv"
    header = "tomo_id,Z,Y,X,voxel_spacing,num_motors,motor_z,motor_y,motor_x,motor_zyx\n"
    bad.write_text(header + 't1,10,10,10,10,1,1,1,1,"[[true, 113.1, 35.5]]"\n'
                   + 't2,10,10,10,10,0,-1,-1,-1,"[/bold]"\n' + 't3,[link=http://x]a[/link],10,10,10,0,-1,-1,-1,[]\n')
    proc = byu("labels", "convert", str(bad), "--version", "gt", data=data, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "[[true, 113.1, 35.5]]" in proc.stderr and "[/bold]" in proc.stderr
    assert "[link=http://x]a[/link]" in proc.stderr and "expected [[z, y, x], ...]" in proc.stderr


@pytest.mark.slow
def test_bad_options_are_clear_errors(tmp_path):
    data = tmp_path / "data"
    comp = tmp_path / "train_labels.csv"
    comp.write_text(COMPETITION)
    byu("labels", "convert", str(comp), "--version", "gt", data=data)
    proc = byu("labels", "split", "gt", "--folds", "2", "--seed", "-1", "--out", str(tmp_path / "s.json"),
               data=data, check=False)
    assert proc.returncode == 2 and "--seed" in proc.stderr and "Traceback" not in proc.stderr
    proc = byu("labels", "convert", str(comp), "--version", "v" * 300, data=data, check=False)
    assert proc.returncode == 2 and "not allowed" in proc.stderr and "Traceback" not in proc.stderr
    again = byu("labels", "convert", str(comp), "--version", "gt", data=data).stdout
    assert "already stored with identical content" in again

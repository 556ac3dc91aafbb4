"""Issue #27, item 4: no output option of the CLI replaces a file byu stored under the data root (one guard:
:func:`byu.paths.guard_output`); a NEW split into ``cv/`` stays allowed, replacing one never is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from byu.cli import app
from byu.errors import InputError
from byu.labels.splits import fresh_split, write_split
from byu.labels.store import LabelStore
from byu.labels.table import make_table
from byu.paths import guard_output


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root with a version, a stored split, a round's decisions and a predictions file."""
    data = tmp_path / "data"
    table = make_table([(f"t{i}", (100, 200, 200), 10.0, [[10.0, 20.0, 30.0]] if i % 2 else []) for i in range(4)])
    LabelStore(data / "labels").put("gt", table)
    write_split(fresh_split(table, folds=2, seed=42), data / "cv" / "v1" / "skf2_rd42.json")
    (data / "review" / "round1").mkdir(parents=True)
    (data / "review" / "round1" / "decisions.csv").write_text("case_id,tags\n1,1\n")
    (data / "predictions").mkdir()
    (data / "predictions" / "p.csv").write_text("tomo_id,particle,z,y,x,conf\n")
    (tmp_path / "other.csv").write_text("tomo_id,Z,Y,X,voxel_spacing,num_motors,motor_z,motor_y,motor_x,motor_zyx\n"
                                        "t9,10,10,10,10,0,-1,-1,-1,[]\n")
    return data


def _snapshot(data: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}


def run(data: Path, *args: str):
    return CliRunner().invoke(app, [*args, "--data-dir", str(data)])


SPLIT = "cv/v1/skf2_rd42.json"
DECISIONS = "review/round1/decisions.csv"


def cases(data: Path, tmp: Path) -> list[tuple[str, list[str]]]:
    """(the stored file, a command writing it) for every output option."""
    other = str(tmp / "other.csv")
    return [
        (SPLIT, ["labels", "export", "gt", "--out", str(data / SPLIT)]),
        (DECISIONS, ["labels", "export", "gt", "--form", "canonical", "--out", str(data / DECISIONS)]),
        (DECISIONS, ["labels", "convert", other, "--out", str(data / DECISIONS)]),
        (SPLIT, ["labels", "combine", "gt", other, "--out", str(data / SPLIT)]),
        (DECISIONS, ["labels", "split", "gt", "--folds", "2", "--out", str(data / DECISIONS)]),
        (SPLIT, ["labels", "split", "gt", "--folds", "2", "--seed", "7", "--replace", "--out", str(data / SPLIT)]),
        (DECISIONS, ["labels", "split", "gt", "--folds", "2", "--out", str(tmp / "s.json"),
                     "--plot", str(data / DECISIONS)]),
        (DECISIONS, ["labels", "diff", "gt", other, "--plot", str(data / DECISIONS)]),
        (DECISIONS, ["labels", "compare", "gt", "gt", "--plot", str(data / DECISIONS)]),
        ("predictions/p.csv", ["score", str(data / "predictions" / "p.csv"), "gt", "--plot",
                               str(data / "predictions" / "p.csv")]),
        (DECISIONS, ["portal", "find", "--run", "TS_1", "--out", str(data / DECISIONS)]),
    ]


def test_no_output_option_replaces_a_stored_file(root, tmp_path):
    before = _snapshot(root)
    for target, args in cases(root, tmp_path):
        result = run(root, *args)
        assert result.exit_code == 2, (args, result.output, result.stderr)
        assert isinstance(result.exception, SystemExit), (args, result.exception)  # a clear exit, no traceback
        assert target in result.stderr and "choose another path" in result.stderr, (args, result.stderr)
    assert _snapshot(root) == before


def test_a_relative_or_linked_path_into_the_data_root_is_refused_too(root, tmp_path, monkeypatch):
    monkeypatch.chdir(root / "review")
    with pytest.raises(InputError, match="choose another path"):
        guard_output(Path("round1") / ".." / "round1" / "decisions.csv", root)
    link = tmp_path / "innocent.csv"
    link.symlink_to(root / DECISIONS)
    with pytest.raises(InputError, match="review/"):
        guard_output(link, root)
    with pytest.raises(InputError, match="inside the label store"):
        guard_output(root / "labels" / "new.csv", root)  # never, even a new file
    with pytest.raises(InputError, match="directory"):
        guard_output(tmp_path, root)
    assert guard_output(root / "review" / "round1" / "new.png", root) == root / "review" / "round1" / "new.png"
    assert guard_output(tmp_path / "elsewhere.csv", root) == tmp_path / "elsewhere.csv"
    assert guard_output(root / SPLIT, root, exclusive=True) == root / SPLIT  # its writer refuses a different one


def test_split_writes_a_new_split_into_cv_and_never_replaces_a_different_one(root):
    new = root / "cv" / "v2" / "skf2_rd42.json"
    result = run(root, "labels", "split", "gt", "--folds", "2", "--out", str(new))
    assert result.exit_code == 0, result.stderr
    assert json.loads(new.read_text())["num_folds"] == 2
    stored = (root / SPLIT).read_bytes()
    again = run(root, "labels", "split", "gt", "--folds", "2", "--out", str(root / SPLIT))  # the same split: no-op
    assert again.exit_code == 0, again.stderr
    other = run(root, "labels", "split", "gt", "--folds", "2", "--seed", "7", "--out", str(root / SPLIT))
    assert other.exit_code == 2 and "already stored" in other.stderr
    assert (root / SPLIT).read_bytes() == stored


def test_outputs_outside_the_data_root_are_written(root, tmp_path):
    out = tmp_path / "gt_picks.csv"
    assert run(root, "labels", "export", "gt", "--out", str(out)).exit_code == 0
    assert out.read_text().startswith("tomo_id,particle")
    out.write_text("old")
    assert run(root, "labels", "export", "gt", "--out", str(out)).exit_code == 0  # not byu's: replaced as asked
    assert out.read_text().startswith("tomo_id,particle")

"""copick in and out with the real ``copick`` library (filesystem backend, projects built in a temp dir)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

copick = pytest.importorskip("copick")
from copick.models import PickableObject  # noqa: E402

from byu.cli.copick import app  # noqa: E402
from byu.copick import choose_tomogram, copick_tomo_id, export_copick, ingest_copick  # noqa: E402
from byu.errors import InputError, VersionExistsError  # noqa: E402
from byu.labels.classes import BUILTIN_CLASSES  # noqa: E402
from byu.labels.store import LabelStore  # noqa: E402
from byu.paths import DataRoot  # noqa: E402
from byu.review.settings import MiningSettings  # noqa: E402
from byu.tomo.io import read_meta, read_volume  # noqa: E402

runner = CliRunner()

# non-cubic volumes (Z, Y, X) at different spacings, so a swapped axis or a wrong spacing cannot pass
RUNS = {
    "TS_1": {"shape": (24, 40, 56), "spacing": 10.0},
    "TS_2": {"shape": (36, 28, 44), "spacing": 12.5},
}
OBJECTS = [
    PickableObject(name="ribosome", is_particle=True, radius=150.0, label=1),
    PickableObject(name="my-complex", is_particle=True, radius=45.0, label=2, identifier="GO:0000001"),
    PickableObject(name="membrane", is_particle=False, label=3),
]


def _volume(shape, seed):
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    return (np.sin(7 * z) + np.cos(5 * y) * x + 0.2 * rng.standard_normal(shape)).astype(np.float32)


def _points(shape, spacing, n, seed):
    """n picks in Å (x, y, z) inside a (Z, Y, X) volume, some near the far X/Y/Z faces."""
    rng = np.random.default_rng(seed)
    extent_xyz = np.array(shape[::-1], dtype=float) * spacing
    pts = rng.uniform(0.05, 0.95, (n, 3)) * extent_xyz
    pts[0] = extent_xyz * np.array([0.97, 0.5, 0.1])  # large x, small z: a swapped axis lands outside
    return pts


def build_project(root_dir: Path) -> tuple[Path, dict]:
    """A copick project: two runs, three pick sets per run (two users, two objects), plus one extra run."""
    cfg = root_dir / "cfg.json"
    root = copick.new_config(str(cfg), overlay_root=str(root_dir / "overlay"), pickable_objects=OBJECTS)
    truth: dict = {}
    for i, (name, spec) in enumerate(RUNS.items()):
        run = root.new_run(name)
        vs = run.new_voxel_spacing(spec["spacing"])
        vs.new_tomogram("wbp").from_numpy(_volume(spec["shape"], i), levels=1)
        alice = _points(spec["shape"], spec["spacing"], 6, 10 + i)
        bob = _points(spec["shape"], spec["spacing"], 3, 20 + i)
        cplx = _points(spec["shape"], spec["spacing"], 4, 30 + i)
        run.new_picks("ribosome", session_id="manual-1", user_id="alice").from_numpy(alice)
        run.new_picks("ribosome", session_id="7", user_id="bob").from_numpy(bob)
        run.new_picks("my-complex", session_id="manual-1", user_id="alice").from_numpy(cplx)
        truth[name] = {("ribosome", "alice", "manual-1"): alice, ("ribosome", "bob", "7"): bob,
                       ("my-complex", "alice", "manual-1"): cplx}
    root.new_run("TS_empty")  # no tomogram, no picks: left out
    return cfg, truth


def copy_project(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    cfg = dest / "cfg.json"
    data = json.loads(cfg.read_text())
    data["overlay_root"] = "local://" + str(dest / "overlay")
    cfg.write_text(json.dumps(data))
    return cfg


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    d = tmp_path_factory.mktemp("copick-template")
    _, truth = build_project(d)
    return d, truth


@pytest.fixture
def project(template, tmp_path):
    d, truth = template
    return copy_project(d, tmp_path / "project"), truth


def read_back(cfg: Path, run: str, obj: str, user: str, session: str) -> np.ndarray:
    sets = copick.from_file(str(cfg)).get_run(run).get_picks(object_name=obj, user_id=user, session_id=session)
    assert len(sets) == 1, (run, obj, user, session, sets)
    return sets[0].full_positions()


# ------------------------------------------------------------------------------------------------ ingest
def test_round_trip_is_exact_on_non_cubic_volumes(project, tmp_path, capsys):
    cfg, truth = project
    data = DataRoot(tmp_path / "data")
    report = ingest_copick(cfg, data, version="cp_v1")
    assert report.ok and report.manifest is not None and report.manifest.created
    for t in report.tomograms:
        print(f"ingest {t.tomo_id} {'x'.join(map(str, t.shape))} @ {t.voxel_spacing:g} Å: {t.status} in "
              f"{t.seconds:.2f} s")
    print(f"ingest: {report.seconds_per_tomogram:.2f} s per tomogram")
    labels = LabelStore(data.labels).get("cp_v1")

    # frames: the copick tomogram's own grid, stored tomograms resampled from it
    frames = labels.tomograms.set_index("tomo_id")
    for name, spec in RUNS.items():
        assert tuple(frames.loc[name, ["Z", "Y", "X"]]) == spec["shape"]
        assert frames.loc[name, "voxel_spacing"] == spec["spacing"]
        meta = read_meta(data.tomograms / name)
        assert meta.original_shape == spec["shape"] and meta.original_spacing == spec["spacing"]
        assert meta.voxel_spacing == 16.0 and read_volume(data.tomograms / name).shape == meta.shape
        assert meta.source["copick"]["run"] == name and meta.source["copick"]["tomo_type"] == "wbp"
    assert "TS_empty" in report.without_picks and not report.dropped

    # picks: voxel (z, y, x) = Å (z, y, x) / spacing, exactly
    for name, spec in RUNS.items():
        got = labels.picks[labels.picks["tomo_id"] == name]
        want = np.concatenate([truth[name][k] for k in sorted(truth[name], key=lambda k: (k[0] != "ribosome",
                                                                                          k[1], k[2]))])
        np.testing.assert_allclose(got[["z", "y", "x"]].to_numpy() * spec["spacing"], want[:, ::-1], atol=1e-9)

    # out: one pick set per run and object, Å x/y/z, as copick reads them back
    out = export_copick(labels, cfg, version_name="cp_v1", data_root=data)
    assert out.session_id == "cp-v1" and out.user_id == "byu"
    assert sorted((w.run, w.object, w.n) for w in out.written) == [
        ("TS_1", "my-complex", 4), ("TS_1", "ribosome", 9), ("TS_2", "my-complex", 4), ("TS_2", "ribosome", 9)]
    for name in RUNS:
        for obj in ("ribosome", "my-complex"):
            want = np.concatenate([v for k, v in sorted(truth[name].items()) if k[0] == obj])
            got = read_back(cfg, name, obj, "byu", "cp-v1")
            assert np.abs(np.sort(got, axis=0) - np.sort(want, axis=0)).max() < 1e-3
            # the lab's own pick sets are untouched
            np.testing.assert_array_equal(read_back(cfg, name, obj, "alice", "manual-1"),
                                          truth[name][(obj, "alice", "manual-1")])
    assert (cfg.parent / "overlay/ExperimentRuns/TS_1/Picks/byu_cp-v1_ribosome.json").is_file()

    # exporting again changes nothing; ingesting the exported session gives the same positions back
    again = export_copick(labels, cfg, version_name="cp_v1", data_root=data)
    assert {w.status for w in again.written} == {"unchanged"}
    back = ingest_copick(cfg, data, version="cp_back", user_id="byu", session_id="cp-v1")
    assert {t.status for t in back.tomograms} == {"skipped"}
    assert np.abs(np.sort(back.labels.picks_angstrom(), axis=0) - np.sort(labels.picks_angstrom(), axis=0)).max() \
        < 1e-3


def test_provenance_and_classes(project, tmp_path):
    cfg, _ = project
    report = ingest_copick(cfg, tmp_path / "data", version="cp_v1")
    labels = report.labels
    assert labels.class_names == ["ribosome", "my-complex"]  # particles only, config order
    assert labels.cls("ribosome") == BUILTIN_CLASSES["ribosome"]  # a built-in name: the built-in class
    mine = labels.cls("my-complex")
    assert (mine.radius, mine.go_id, mine.match_radius_A) == (45.0, "GO:0000001", 45.0)
    assert labels.class_counts() == {"ribosome": 18, "my-complex": 8}
    prov = labels.picks.groupby(["particle", "user_id", "session_id"]).size().to_dict()
    assert prov == {("my-complex", "alice", "manual-1"): 8, ("ribosome", "alice", "manual-1"): 12,
                    ("ribosome", "bob", "7"): 6}
    assert set(labels.picks["source"]) == {"copick:cfg.json"}
    m = report.manifest
    assert m.producer == "byu copick ingest" and m.extra["copick"]["objects"] == ["ribosome", "my-complex"]
    assert m.extra["copick"]["runs"]["TS_2"] == {"run": "TS_2", "voxel_spacing": 12.5, "tomo_type": "wbp"}


def test_filters_by_user_session_and_object(project, tmp_path):
    cfg, truth = project
    data = tmp_path / "data"
    by_user = ingest_copick(cfg, data, version="alice", user_id="alice").labels
    assert set(by_user.picks["user_id"]) == {"alice"} and len(by_user.picks) == 20
    # copick's own id form: manual_1 is stored as manual-1
    by_session = ingest_copick(cfg, data, version="s1", session_id="manual_1").labels
    assert set(by_session.picks["session_id"]) == {"manual-1"} and len(by_session.picks) == 20
    bob = ingest_copick(cfg, data, version="bob", user_id=["bob"], objects="ribosome")
    assert bob.labels.class_names == ["ribosome"] and len(bob.labels.picks) == 6
    assert bob.manifest.extra["copick"]["user_id"] == ["bob"]
    only_complex = ingest_copick(cfg, data, version="cplx", objects=["my-complex"]).labels
    assert only_complex.class_counts() == {"my-complex": 8}
    # a filter nobody matches: an error listing what there is (not an empty version)
    with pytest.raises(InputError, match="no picks of .* match user_id=\\['carol'\\]") as e:
        ingest_copick(cfg, data, version="nobody", user_id="carol")
    assert "alice/manual-1, bob/7" in str(e.value) and not LabelStore(DataRoot(data).labels).exists("nobody")
    with_empty = ingest_copick(cfg, data, version="nobody_all", user_id="carol", include_empty=True)
    assert sorted(with_empty.labels.tomo_ids) == ["TS_1", "TS_2"] and len(with_empty.labels.picks) == 0
    assert with_empty.without_tomogram == ["TS_empty"]


def test_rerun_skips_stored_tomograms_and_versions_are_immutable(project, tmp_path):
    cfg, _ = project
    data = tmp_path / "data"
    first = ingest_copick(cfg, data, version="cp_v1")
    assert [t.status for t in first.tomograms] == ["stored", "stored"]
    calls = []
    again = ingest_copick(cfg, data, version="cp_v1", progress=lambda *a: calls.append(a))
    assert [t.status for t in again.tomograms] == ["skipped", "skipped"] and not again.manifest.created
    assert calls == [("TS_1", 1, 2, "skipped"), ("TS_2", 2, 2, "skipped")]
    before = (data / "tomograms/TS_1/meta.json").stat().st_mtime_ns
    with pytest.raises(VersionExistsError, match="already exists"):
        ingest_copick(cfg, data, version="cp_v1", user_id="bob")
    assert (data / "tomograms/TS_1/meta.json").stat().st_mtime_ns == before
    # another target spacing is other content for the same tomo ids, which cp_v1 pins: refused before any work ...
    with pytest.raises(InputError, match="'cp_v1'.*--replace-pinned"):
        ingest_copick(cfg, data, version="cp_v1_20", target_spacing=20.0)
    assert (data / "tomograms/TS_1/meta.json").stat().st_mtime_ns == before
    assert not LabelStore(data / "labels").exists("cp_v1_20")
    # ... unless asked to replace it
    other = ingest_copick(cfg, data, version="cp_v1_20", target_spacing=20.0, replace_pinned=True)
    assert [t.status for t in other.tomograms] == ["stored", "stored"]
    assert read_meta(data / "tomograms/TS_1").voxel_spacing == 20.0


def test_staged_copy_gives_the_same_stack(project, tmp_path):
    cfg, _ = project
    a = ingest_copick(cfg, tmp_path / "a", version="v", runs=["TS_1"], stage=False)
    b = ingest_copick(cfg, tmp_path / "b", version="v", runs=["TS_1"], stage=True)
    assert not a.tomograms[0].staged and b.tomograms[0].staged
    assert not list((tmp_path / "b/raw").iterdir())  # the raw copy is removed after preprocessing
    np.testing.assert_array_equal(read_volume(tmp_path / "a/tomograms/TS_1"),
                                  read_volume(tmp_path / "b/tomograms/TS_1"))
    assert a.labels.equals(b.labels)


def test_tomogram_choice(tmp_path):
    root = copick.new_config(str(tmp_path / "cfg.json"), overlay_root=str(tmp_path / "o"), pickable_objects=OBJECTS)
    run = root.new_run("R")
    for spacing, types in [(5.0, ["wbp"]), (10.0, ["denoised", "wbp", "ctfdeconvolved"]), (20.0, ["denoised"])]:
        vs = run.new_voxel_spacing(spacing)
        for t in types:
            vs.new_tomogram(t).from_numpy(np.zeros((4, 6, 8), np.float32), levels=1)
    pick = lambda **kw: (lambda c: (c[0], c[1].tomo_type))(choose_tomogram(run, **kw))  # noqa: E731
    assert pick() == (10.0, "wbp")  # the largest spacing <= 16 Å, wbp first
    assert pick(target_spacing=25.0) == (20.0, "denoised")
    assert pick(target_spacing=4.0) == (5.0, "wbp")  # none below: the smallest above
    assert pick(tomo_type="denoised") == (10.0, "denoised")
    assert pick(voxel_spacing=20.0) == (20.0, "denoised")
    assert pick(voxel_spacing=5.0) == (5.0, "wbp")
    assert choose_tomogram(run, voxel_spacing=7.0) is None
    assert choose_tomogram(run, tomo_type="isonetcorrected") is None
    assert copick_tomo_id("TS 5/4") == "TS_5_4" and copick_tomo_id("Position_12") == "Position_12"


def test_picks_outside_the_tomogram_are_dropped_and_reported(project, tmp_path):
    cfg, _ = project
    run = copick.from_file(str(cfg)).get_run("TS_1")
    run.new_picks("ribosome", session_id="9", user_id="carol").from_numpy(
        np.array([[100.0, 100.0, 100.0], [-20.0, 50.0, 50.0], [100.0, 100.0, 240.0]]))  # z = 24 voxels: outside
    report = ingest_copick(cfg, tmp_path / "data", version="c", user_id="carol")
    assert len(report.labels.picks) == 1
    assert [p[0] for p in report.dropped["TS_1"]] == ["ribosome", "ribosome"]


# ------------------------------------------------------------------------------------------------ bad inputs
def test_bad_inputs_are_clear_input_errors(project, tmp_path):
    cfg, _ = project
    data = tmp_path / "data"
    with pytest.raises(InputError, match="copick config not found") as e:
        ingest_copick(tmp_path / "nope.json", data, version="v")
    assert "nope.json" in str(e.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(InputError, match="not a readable copick config") as e:
        ingest_copick(bad, data, version="v")
    assert "bad.json" in str(e.value) and e.value.row == 1
    with pytest.raises(InputError, match=r"object\(s\) \['ribosom'\] are not among") as e:
        ingest_copick(cfg, data, version="v", objects="ribosom")
    assert "cfg.json" in str(e.value)
    with pytest.raises(InputError, match="not particles"):
        ingest_copick(cfg, data, version="v", objects="membrane")
    with pytest.raises(InputError, match="version .bad name. is not allowed"):
        ingest_copick(cfg, data, version="bad name")

    # a run with picks but no tomogram (at the asked spacing): named, with what it has
    run = copick.from_file(str(cfg)).get_run("TS_empty")
    run.new_picks("ribosome", session_id="1", user_id="alice").from_numpy(np.array([[1.0, 2.0, 3.0]]))
    with pytest.raises(InputError, match="run 'TS_empty' has 1 pick\\(s\\) but no tomogram") as e:
        ingest_copick(cfg, data, version="v")
    assert "no voxel spacings" in str(e.value)
    with pytest.raises(InputError, match="2 problem") as e:  # every run's problem at once
        ingest_copick(cfg, data, version="v", voxel_spacing=12.5, runs=["TS_1", "TS_empty"])
    assert "run 'TS_1' has 13 pick(s) but no tomogram at 12.5 Å" in str(e.value)
    assert not (data / "tomograms").exists()  # nothing was preprocessed
    with pytest.raises(InputError, match=r"run\(s\) \['TS_9'\] are not in the project"):
        ingest_copick(cfg, data, version="v", runs=["TS_9"])

    # an object byu does not know and whose radius the config does not give
    conf = json.loads(cfg.read_text())
    conf["pickable_objects"].append({"name": "blob", "is_particle": True, "label": 4})
    cfg.write_text(json.dumps(conf))
    with pytest.raises(InputError, match="object 'blob' has no radius") as e:
        ingest_copick(cfg, data, version="v", objects="blob")
    assert e.value.field == "pickable_objects[3].radius"


def test_export_errors_and_options(project, tmp_path):
    cfg, _ = project
    data = DataRoot(tmp_path / "data")
    labels = ingest_copick(cfg, data, version="cp_v1").labels

    # a class the project lacks: error naming it, or added with --add-objects
    renamed = labels.replace(picks=labels.picks.assign(particle=labels.picks["particle"].replace(
        {"my-complex": "apo-ferritin"})), classes=[BUILTIN_CLASSES["ribosome"], BUILTIN_CLASSES["apo-ferritin"]])
    with pytest.raises(InputError, match=r"class\(es\) \['apo-ferritin'\] of the version are not among"):
        export_copick(renamed, cfg, version_name="x", data_root=data)
    assert not list((cfg.parent / "overlay/ExperimentRuns/TS_1/Picks").glob("byu_*"))  # nothing written
    added = export_copick(renamed, cfg, version_name="x", data_root=data, add_objects=True)
    assert added.added_objects == ["apo-ferritin"]
    obj = copick.from_file(str(cfg)).get_object("apo-ferritin")
    assert obj.radius == 60.0 and obj.identifier == "GO:0070288" and obj.label == 4
    assert len(read_back(cfg, "TS_1", "apo-ferritin", "byu", "x")) == 4

    # a class matched by identifier when the names differ
    alias = labels.replace(picks=labels.picks.assign(particle=labels.picks["particle"].replace(
        {"my-complex": "complex"})), classes=[labels.cls("ribosome"), labels.cls("my-complex").model_copy(
            update={"name": "complex"})])
    by_id = export_copick(alias, cfg, session_id="by_id", data_root=data)
    assert {w.object for w in by_id.written} == {"ribosome", "my-complex"} and by_id.session_id == "by-id"

    # runs the project does not have
    moved = labels.replace(
        tomograms=labels.tomograms.assign(tomo_id=labels.tomograms["tomo_id"].replace({"TS_2": "TS_3"})),
        picks=labels.picks.assign(tomo_id=labels.picks["tomo_id"].replace({"TS_2": "TS_3"})))
    with pytest.raises(InputError, match="1 run\\(s\\) of the version are not in the project: 'TS_3'"):
        export_copick(moved, cfg, version_name="m")
    skipped = export_copick(moved, cfg, version_name="m", runs_missing="skip")
    assert skipped.skipped_runs == ["TS_3"] and {w.run for w in skipped.written} == {"TS_1"}
    created = export_copick(moved, cfg, version_name="m2", runs_missing="create")
    assert created.created_runs == ["TS_3"] and len(read_back(cfg, "TS_3", "ribosome", "byu", "m2")) == 9
    # the run name recorded at ingest wins over the tomo_id (data root given)
    (data.tomograms / "TS_3").symlink_to(data.tomograms / "TS_2")
    via_meta = export_copick(moved, cfg, version_name="m3", data_root=data)
    assert {w.run for w in via_meta.written} == {"TS_1", "TS_2"}

    # an existing, different pick set of the same user/session/object: refused unless --overwrite
    fewer = labels.replace(picks=labels.picks.iloc[1:])
    export_copick(labels, cfg, version_name="cp_v1")
    with pytest.raises(InputError, match="already has a different pick set byu_cp-v1_ribosome"):
        export_copick(fewer, cfg, version_name="cp_v1")
    replaced = export_copick(fewer, cfg, version_name="cp_v1", overwrite=True)
    assert {(w.run, w.object): w.status for w in replaced.written}[("TS_1", "ribosome")] == "replaced"
    assert len(read_back(cfg, "TS_1", "ribosome", "byu", "cp-v1")) == 8
    with pytest.raises(InputError, match="give a session id"):
        export_copick(labels, cfg)
    with pytest.raises(InputError, match="tomograms 'TS_1' and 'TS_2' of the version both go to run 'TS_1'"):
        export_copick(labels, cfg, version_name="dup", run_names={"TS_2": "TS_1"})
    snake = labels.replace(picks=labels.picks.assign(particle=labels.picks["particle"].replace(
        {"my-complex": "my_complex"})), classes=[labels.cls("ribosome"), BUILTIN_CLASSES["motor"].model_copy(
            update={"name": "my_complex", "go_id": None})])
    with pytest.raises(InputError, match=r"\['my_complex'\] cannot be copick objects"):
        export_copick(snake, cfg, version_name="snake", add_objects=True)


def test_export_by_reviewer(project, tmp_path):
    cfg, _ = project
    labels = ingest_copick(cfg, tmp_path / "data", version="cp_v1").labels
    picks = labels.picks.copy()
    # a review moved two picks (reviewer rev_1) and added one without a user
    picks.loc[0, ["z", "user_id", "session_id", "source"]] = [picks.loc[0, "z"] + 1.0, "rev_1", "round1",
                                                              "review:round1"]
    picks.loc[1, ["user_id", "session_id", "source"]] = ["rev_1", "round1", "review:round1"]
    added = {"tomo_id": "TS_2", "particle": "ribosome", "z": 5.0, "y": 6.0, "x": 7.0, "source": "manual",
             "user_id": "", "session_id": ""}
    reviewed = labels.replace(picks=pd.concat([picks, pd.DataFrame([added])], ignore_index=True))
    out = export_copick(reviewed, cfg, version_name="gt_v2", by_reviewer=True, user_id="lab")
    got = {(w.run, w.object, w.user_id): w.n for w in out.written}
    assert got == {("TS_1", "ribosome", "rev-1"): 2, ("TS_1", "ribosome", "alice"): 4,
                   ("TS_1", "ribosome", "bob"): 3, ("TS_1", "my-complex", "alice"): 4,
                   ("TS_2", "ribosome", "alice"): 6, ("TS_2", "ribosome", "bob"): 3,
                   ("TS_2", "ribosome", "lab"): 1, ("TS_2", "my-complex", "alice"): 4}
    moved = read_back(cfg, "TS_1", "ribosome", "rev-1", "gt-v2")
    np.testing.assert_allclose(moved[0], reviewed.picks_angstrom()[0][::-1], atol=1e-9)
    np.testing.assert_allclose(read_back(cfg, "TS_2", "ribosome", "lab", "gt-v2"), [[7 * 12.5, 6 * 12.5, 5 * 12.5]])


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_ingest_and_export(project, tmp_path):
    cfg, truth = project
    data = tmp_path / "data"
    r = runner.invoke(app, ["ingest", str(cfg), "--version", "cp_v1", "--objects", "ribosome", "--user-id",
                            "alice,bob", "--data-dir", str(data)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "tomograms: 2 stored, 0 up to date, 0 failed" in r.output and "s per tomogram" in r.output
    assert re.search(r"\[1/2\] TS_1: stored in \d+\.\d s", r.output), r.output
    assert "labels: version 'cp_v1' stored: 2 tomogram(s), 18 ribosome" in r.output
    assert "runs without picks (left out): TS_empty" in r.output
    r = runner.invoke(app, ["ingest", str(cfg), "--version", "cp_v1", "--objects", "ribosome", "--user-id",
                            "alice,bob", "--data-dir", str(data)], catch_exceptions=False)
    assert r.exit_code == 0 and "0 stored, 2 up to date" in r.output and "already stored (identical)" in r.output

    r = runner.invoke(app, ["export", "cp_v1", str(cfg), "--data-dir", str(data)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "written: 2 pick set(s), 18 picks (users byu, session cp-v1)" in r.output
    want = np.concatenate([truth["TS_2"][("ribosome", "alice", "manual-1")], truth["TS_2"][("ribosome", "bob", "7")]])
    np.testing.assert_allclose(read_back(cfg, "TS_2", "ribosome", "byu", "cp-v1"), want, atol=1e-3)
    r = runner.invoke(app, ["export", "cp_v1", str(cfg), "--by-reviewer", "--session-id", "rev_a", "--data-dir",
                            str(data)], catch_exceptions=False)
    assert r.exit_code == 0 and "users alice, bob, session rev-a" in r.output

    # errors: one clear line, exit 2
    r = runner.invoke(app, ["ingest", str(tmp_path / "missing.json"), "--version", "v", "--data-dir", str(data)])
    assert r.exit_code == 2 and "copick config not found" in r.output and "missing.json" in r.output
    r = runner.invoke(app, ["ingest", str(cfg), "--version", "v", "--objects", "[bold]x", "--data-dir", str(data)])
    assert r.exit_code == 2 and "['[bold]x']" in r.output  # user data printed literally
    r = runner.invoke(app, ["export", "nope", str(cfg), "--data-dir", str(data)])
    assert r.exit_code == 2 and "label version 'nope' not found" in r.output
    r = runner.invoke(app, ["export", "cp_v1", str(cfg), "--runs-missing", "maybe", "--data-dir", str(data)])
    assert r.exit_code == 2


def test_a_copick_project_goes_through_a_review_round_and_back(project, tmp_path):
    """copick picks in → a noisy version (one complex missed, one false) → cases mined against predictions → the
    scripted reviewer → the applied version → copick picks that copick reads back exactly as the truth."""
    from byu.review.decisions import write_decisions
    from byu.review.round import ReviewRound
    from byu.review.scripted import scripted_decisions

    cfg, truth = project
    data = DataRoot(tmp_path / "data")
    store = LabelStore(data.labels)
    ingested = ingest_copick(cfg, data, version="cp_v1", user_id="alice")  # alice's picks: the lab's truth here
    assert ingested.ok
    good = store.get("cp_v1")
    picks = good.picks.reset_index(drop=True)
    spacing = good.spacing_of()

    # noisy labels: the complex of TS_1 farthest from every other pick missed, a false complex in empty space of TS_2
    cx = picks[picks["particle"] == "my-complex"]
    a = cx[cx["tomo_id"] == "TS_1"]
    everything = picks[picks["tomo_id"] == "TS_1"][["z", "y", "x"]].to_numpy() * spacing["TS_1"]
    pos = a[["z", "y", "x"]].to_numpy() * spacing["TS_1"]
    nearest = [np.sort(np.linalg.norm(everything - p, axis=1))[1] for p in pos]
    missed = a.index[int(np.argmax(nearest))]
    assert max(nearest) > 2 * 45.0
    b = cx[cx["tomo_id"] == "TS_2"][["z", "y", "x"]].to_numpy() * spacing["TS_2"]
    shape = RUNS["TS_2"]["shape"]
    grid = np.stack(np.meshgrid(*[np.linspace(2, n - 3, 6) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    far = grid[int(np.argmax([np.linalg.norm(b - g * spacing["TS_2"], axis=1).min() for g in grid]))]
    false = {"tomo_id": "TS_2", "particle": "my-complex", "z": far[0], "y": far[1], "x": far[2]}
    noisy = good.replace(picks=pd.concat([picks.drop(index=missed), pd.DataFrame([false])], ignore_index=True))
    store.put("cp_noisy", noisy, parents=["cp_v1"], producer="test: planted errors")

    # the models' predictions: every true pick, in the tomograms' own frames
    preds = good.picks[["tomo_id", "particle", "z", "y", "x"]].assign(
        conf=0.9, models="run/fold0", voxel_spacing=good.picks["tomo_id"].map(spacing))
    data.predictions.mkdir(parents=True, exist_ok=True)
    preds.to_csv(data.predictions / "oof.csv", index=False)

    rnd = ReviewRound(data, "round1")
    cases = rnd.mine(labels_version="cp_noisy", predictions=data.predictions / "oof.csv",
                     settings=MiningSettings(galleries=False, verify=False, fp_threshold=None)).cases
    assert sorted((c.tomo_id, c.kind, c.particle) for c in cases) == [("TS_1", "FP", "my-complex"),
                                                                     ("TS_2", "FN", "my-complex")]
    assert len(rnd.render()) == 2  # the review images, rendered from the ingested tomograms
    write_decisions(scripted_decisions(cases, good), rnd.paths.decisions)
    manifest, result = rnd.apply(from_version="cp_noisy", to_version="cp_v2")
    assert sorted(result.changes[result.changes.action != "keep"].action) == ["add", "remove"]
    assert manifest.parents == ["cp_noisy"]

    out = export_copick(store.get("cp_v2"), cfg, version_name="cp_v2", data_root=data)
    assert out.session_id == "cp-v2"
    for name in RUNS:
        for obj in ("ribosome", "my-complex"):
            got = read_back(cfg, name, obj, "byu", "cp-v2")
            want = truth[name][(obj, "alice", "manual-1")]
            assert got.shape == want.shape
            err = np.array([np.linalg.norm(got - w, axis=1).min() for w in want])  # Å, x/y/z as copick has them
            # picks the round left alone come back exactly; the one it added sits where its prediction was (cases
            # carry candidate positions to 0.01 voxel)
            added = 1 if (name, obj) == ("TS_1", "my-complex") else 0
            assert (err < 1e-3).sum() == len(want) - added and err.max() < 0.01 * RUNS[name]["spacing"]


# ------------------------------------------------------------------------------------------------ issue #27
def _transform(deg: float, axis: str = "z", shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A copick 4x4 transform (x, y, z order): a rotation about one axis and a shift in Å."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    t = np.eye(4)
    t[i, i], t[i, j], t[j, i], t[j, j] = c, -s, s, c
    t[:3, 3] = shift
    return t


def _pick_file(cfg: Path, run: str, name: str) -> dict:
    return json.loads((cfg.parent / "overlay/ExperimentRuns" / run / "Picks" / f"{name}.json").read_text())


def test_orientations_go_through_ingest_the_version_and_export(project, tmp_path):
    cfg, _ = project
    loc = np.array([[100.0, 150.0, 80.0], [300.0, 200.0, 120.0], [400.0, 100.0, 60.0]])
    rot = np.stack([_transform(30, "z", shift=(5.0, -3.0, 2.0)), _transform(90, "x"), _transform(-45, "y")])
    copick.from_file(str(cfg)).get_run("TS_1").new_picks("ribosome", session_id="rot", user_id="carol") \
        .from_numpy(loc, rot)
    data = DataRoot(tmp_path / "data")
    store = LabelStore(data.labels)
    ingest_copick(cfg, data, version="rot", user_id="carol")
    labels = store.get("rot")  # read back from the stored files
    assert store.picks_path("rot").read_text().splitlines()[0] == \
        "tomo_id,particle,z,y,x,source,user_id,session_id,transform"
    np.testing.assert_allclose(labels.picks_angstrom()[:, ::-1], loc + rot[:, :3, 3], atol=1e-9)

    out = export_copick(labels, cfg, version_name="rot", data_root=data)
    assert [w.status for w in out.written] == ["written"]
    back = copick.from_file(str(cfg)).get_run("TS_1").get_picks(object_name="ribosome", user_id="byu",
                                                                 session_id="rot")[0]
    pts, transforms = back.numpy()
    np.testing.assert_allclose(transforms, rot, atol=1e-12)  # the rotations and shifts copick had
    np.testing.assert_allclose(pts, loc, atol=1e-9)
    assert back.trust_orientation is True
    assert {w.status for w in export_copick(labels, cfg, version_name="rot", data_root=data).written} == \
        {"unchanged"}

    # a review moved pick 0 (no transform: a new pick) and relabelled pick 1 (provenance review:): neither has
    # a known orientation, so the set says so; pick 2 keeps its rotation
    picks = labels.picks.copy()
    picks.loc[0, ["z", "source", "user_id", "session_id", "transform"]] = [picks.loc[0, "z"] + 1.0,
                                                                           "review:round1", "rev", "round1", ""]
    picks.loc[1, ["source", "user_id", "session_id"]] = ["review:round1", "rev", "round1"]
    reviewed = labels.replace(picks=picks)
    export_copick(reviewed, cfg, version_name="rot_r", data_root=data)
    meta = _pick_file(cfg, "TS_1", "byu_rot-r_ribosome")
    assert meta["trust_orientation"] is False
    got = np.array([p["transformation_"] for p in meta["points"]])
    np.testing.assert_allclose(got[:2], np.stack([np.eye(4)] * 2))
    np.testing.assert_allclose(got[2], rot[2], atol=1e-12)
    full = np.array([[p["location"][a] for a in "xyz"] for p in meta["points"]]) + got[:, :3, 3]
    np.testing.assert_allclose(full, reviewed.picks_angstrom()[:, ::-1], atol=1e-9)


def test_picks_without_orientation_are_exported_as_untrusted_and_stored_as_before(project, tmp_path):
    cfg, _ = project
    data = DataRoot(tmp_path / "data")
    store = LabelStore(data.labels)
    ingest_copick(cfg, data, version="plain", user_id="alice")  # copick's identity transforms: nothing known
    assert store.picks_path("plain").read_text().splitlines()[0] == "tomo_id,particle,z,y,x,source,user_id,session_id"
    export_copick(store.get("plain"), cfg, version_name="plain", data_root=data)
    meta = _pick_file(cfg, "TS_1", "byu_plain_ribosome")
    assert meta["trust_orientation"] is False and len(meta["points"]) == 6
    assert all(p["transformation_"] == np.eye(4).tolist() for p in meta["points"])


def test_the_projects_object_radius_wins_and_is_reported(project, tmp_path):
    cfg, _ = project
    conf = json.loads(cfg.read_text())
    conf["pickable_objects"][0]["radius"] = 120.0  # ribosome: byu's built-in says 150 Å
    cfg.write_text(json.dumps(conf))
    data = DataRoot(tmp_path / "data")
    report = ingest_copick(cfg, data, version="r120")
    rib = report.labels.cls("ribosome")
    builtin = BUILTIN_CLASSES["ribosome"]
    assert (rib.radius, rib.match_radius_A) == (120.0, 120.0)
    assert (rib.go_id, rib.weight, rib.portal_object) == (builtin.go_id, builtin.weight, builtin.portal_object)
    assert LabelStore(data.labels).manifest("r120").classes[0].radius == 120.0
    assert [(n.object, n.project_radius, n.byu_radius) for n in report.radii] == [("ribosome", 120.0, 150.0)]
    r = runner.invoke(app, ["ingest", str(cfg), "--version", "r120b", "--data-dir", str(data.root)],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "ribosome: radius 120 Å from the project (byu's built-in: 150 Å)" in r.output


def test_a_by_reviewer_export_ingested_again_gives_the_same_picks(project, tmp_path):
    cfg, _ = project
    spec = RUNS["TS_1"]
    curator = _points(spec["shape"], spec["spacing"], 25, 40)
    copick.from_file(str(cfg)).get_run("TS_1").new_picks("ribosome", session_id="manual-1", user_id="curator") \
        .from_numpy(curator)
    data = tmp_path / "data"

    def ingest(version, *args):
        r = runner.invoke(app, ["ingest", str(cfg), "--version", version, "--data-dir", str(data), *args],
                          catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return LabelStore(DataRoot(data).labels).get(version), r.output

    first, _ = ingest("cp_v1", "--user-id", "curator")
    assert len(first.picks) == 25
    r = runner.invoke(app, ["export", "cp_v1", str(cfg), "--by-reviewer", "--data-dir", str(data)],
                      catch_exceptions=False)
    assert r.exit_code == 0 and "users curator, session cp-v1" in r.output, r.output
    back, out = ingest("cp_back", "--user-id", "curator")
    assert len(back.picks) == 25  # not 50: the exported set carries curator/manual-1's picks
    np.testing.assert_allclose(np.sort(back.picks_angstrom(), axis=0), np.sort(first.picks_angstrom(), axis=0),
                               atol=1e-9)
    assert set(back.picks["session_id"]) == {"cp-v1"}
    assert "curator/manual-1" in out and "curator/cp-v1" in out  # said what was left out, and why

    # a review removed two of the curator's picks: the export carries the version's 23
    fewer = first.replace(picks=first.picks.iloc[2:])
    export_copick(fewer, cfg, version_name="cp_v2", by_reviewer=True, data_root=DataRoot(data))
    again, _ = ingest("cp_back2", "--user-id", "curator", "--session-id", "manual-1,cp-v2")
    assert len(again.picks) == 23
    # two exports both carrying curator/manual-1: which one is meant is not known, so it is asked
    r = runner.invoke(app, ["ingest", str(cfg), "--version", "x", "--user-id", "curator", "--data-dir", str(data)])
    assert r.exit_code == 2 and "curator/cp-v1" in r.output and "curator/cp-v2" in r.output, r.output
    assert "--session-id" in r.output and "Traceback" not in r.output


def _export_in_child(args):
    """One exporter process: opens the project itself; the listing of existing pick sets is slowed so that both
    processes look before either writes (the window the race needs)."""
    import time as _time

    from copick.impl.filesystem import CopickRunFSSpec

    cfg, labels, version, queue = args
    listing = CopickRunFSSpec.get_picks

    def slow(self, *a, **kw):
        out = listing(self, *a, **kw)
        _time.sleep(0.4)
        return out

    CopickRunFSSpec.get_picks = slow
    try:
        rep = export_copick(labels, cfg, user_id="lab", session_id="shared", version_name=version)
        queue.put((version, "ok", [w.status for w in rep.written]))
    except InputError as exc:
        queue.put((version, "refused", str(exc)))
    except Exception as exc:  # noqa: BLE001 - the parent reports what went wrong
        queue.put((version, "crashed", f"{type(exc).__name__}: {exc}"))


@pytest.mark.slow
def test_parallel_exports_into_one_session_one_wins_the_other_is_refused(project, tmp_path):
    import multiprocessing as mp

    cfg, _ = project
    labels = ingest_copick(cfg, tmp_path / "data", version="cp_v1", objects="ribosome").labels
    other = labels.replace(picks=labels.picks.iloc[1:])
    ctx = mp.get_context("fork")
    picks_file = cfg.parent / "overlay/ExperimentRuns/TS_1/Picks/lab_shared_ribosome.json"
    for trial in range(3):
        for f in picks_file.parent.parent.parent.glob("*/Picks/lab_shared_*.json"):
            f.unlink()
        queue = ctx.Queue()
        procs = [ctx.Process(target=_export_in_child, args=((cfg, lb, name, queue),))
                 for lb, name in ((labels, "a"), (other, "b"))]
        for p in procs:
            p.start()
        results = {}
        for _ in procs:
            version, outcome, detail = queue.get(timeout=120)
            results[version] = (outcome, detail)
        for p in procs:
            p.join(timeout=60)
        outcomes = sorted(o for o, _ in results.values())
        assert outcomes == ["ok", "refused"], (trial, results)
        winner = next(v for v, (o, _) in results.items() if o == "ok")
        loser = next(v for v, (o, _) in results.items() if o == "refused")
        assert "lab_shared_ribosome" in results[loser][1] and "Traceback" not in results[loser][1]
        want = (labels if winner == "a" else other).select(["TS_1"])
        got = read_back(cfg, "TS_1", "ribosome", "lab", "shared")  # whole, valid JSON
        assert len(got) == len(want.picks[want.picks["particle"] == "ribosome"])


def test_an_unreadable_existing_pick_set_is_a_clear_error_on_export(project, tmp_path):
    cfg, _ = project
    data = DataRoot(tmp_path / "data")
    labels = ingest_copick(cfg, data, version="cp_v1").labels
    export_copick(labels, cfg, version_name="cp_v1", data_root=data)
    half = cfg.parent / "overlay/ExperimentRuns/TS_1/Picks/byu_cp-v1_ribosome.json"
    half.write_text(half.read_text()[:100])  # a half-written file
    with pytest.raises(InputError, match="not valid JSON") as e:
        export_copick(labels, cfg, version_name="cp_v1", data_root=data)
    assert e.value.file == str(half)
    fixed = export_copick(labels, cfg, version_name="cp_v1", data_root=data, overwrite=True)
    assert {(w.run, w.object): w.status for w in fixed.written}[("TS_1", "ribosome")] == "replaced"
    assert len(read_back(cfg, "TS_1", "ribosome", "byu", "cp-v1")) == 9


def test_a_symlinked_run_folder_leading_outside_the_overlay_is_refused(project, tmp_path):
    cfg, _ = project
    data = DataRoot(tmp_path / "data")
    labels = ingest_copick(cfg, data, version="cp_v1").labels
    runs = cfg.parent / "overlay/ExperimentRuns"
    outside = tmp_path / "elsewhere" / "TS_2"
    outside.parent.mkdir()
    shutil.move(str(runs / "TS_2"), str(outside))
    (runs / "TS_2").symlink_to(outside, target_is_directory=True)
    before = sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))
    with pytest.raises(InputError, match="symlink") as e:
        export_copick(labels, cfg, version_name="cp_v1", data_root=data)
    assert str(runs / "TS_2") in str(e.value) and str(outside) in str(e.value)
    assert sorted(str(p.relative_to(outside)) for p in outside.rglob("*")) == before  # nothing written there
    assert not list(runs.glob("TS_1/Picks/byu_*"))  # nor anywhere else: all or nothing
    r = runner.invoke(app, ["export", "cp_v1", str(cfg), "--data-dir", str(data.root)])
    assert r.exit_code == 2 and "symlink" in r.output and "Traceback" not in r.output
    # a link that stays inside the overlay is followed as before
    (runs / "TS_2").unlink()
    shutil.move(str(outside), str(runs / "real_TS_2"))
    (runs / "TS_2").symlink_to(runs / "real_TS_2", target_is_directory=True)
    ok = export_copick(labels, cfg, version_name="cp_v1", data_root=data)
    assert {w.run for w in ok.written} == {"TS_1", "TS_2"}
    assert (runs / "real_TS_2/Picks/byu_cp-v1_ribosome.json").is_file()


def test_unreadable_pick_files_are_clear_errors_naming_file_and_point(project, tmp_path):
    cfg, _ = project
    data = tmp_path / "data"
    picks = cfg.parent / "overlay/ExperimentRuns/TS_1/Picks"
    nulled = picks / "alice_manual-1_ribosome.json"
    d = json.loads(nulled.read_text())
    d["points"][2]["location"]["y"] = None
    nulled.write_text(json.dumps(d))
    broken = picks / "bob_7_ribosome.json"
    broken.write_text('{"pickable_object_name": "ribosome",\n "points": [')
    with pytest.raises(InputError) as e:
        ingest_copick(cfg, data, version="v")
    errors = {(x.file, x.field) for x in getattr(e.value, "errors", [e.value])}
    assert (str(nulled), "points[2].location.y") in errors and str(broken) in {f for f, _ in errors}
    assert "not a number: None" in str(e.value) and "not valid JSON" in str(e.value)
    r = runner.invoke(app, ["ingest", str(cfg), "--version", "v", "--data-dir", str(data)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "alice_manual-1_ribosome.json" in r.output and "points[2].location.y" in r.output
    assert not (data / "tomograms").exists() and not (data / "labels").exists()  # nothing stored
    d["points"][2]["location"]["y"] = float("nan")  # JSON NaN: read, but not a position
    nulled.write_text(json.dumps(d))
    broken.unlink()
    with pytest.raises(InputError, match="not a finite number") as e:
        ingest_copick(cfg, data, version="v")
    assert e.value.file == str(nulled) and e.value.field == "points[2].location"


@pytest.mark.parametrize("option", ["--spacing", "--voxel-spacing"])
@pytest.mark.parametrize("value", ["nan", "inf", "0", "-16", "1e-9"])
def test_spacing_options_must_be_finite_and_at_least_a_tenth_of_an_angstrom(project, tmp_path, option, value):
    cfg, _ = project
    data = tmp_path / "data"
    r = runner.invoke(app, ["ingest", str(cfg), "--version", "v", option, value, "--data-dir", str(data)])
    assert r.exit_code == 2 and option in r.output and "0.1 Å" in r.output and "Traceback" not in r.output, r.output
    assert not (data / "tomograms").exists() and not (data / "labels").exists()
    if option == "--spacing" and value == "0":  # a valid spacing finer than the tomograms': kept, and said
        r = runner.invoke(app, ["ingest", str(cfg), "--version", "v", option, "5", "--data-dir", str(data)])
        assert r.exit_code == 0 and "kept at their own spacing (coarser than --spacing 5 Å" in r.output, r.output
        assert "TS_1 (10 Å), TS_2 (12.5 Å)" in r.output and read_meta(data / "tomograms/TS_1").voxel_spacing == 10.0
    with pytest.raises(InputError, match="0.1 Å"):
        if option == "--spacing":
            ingest_copick(cfg, data, version="v", target_spacing=float(value))
        else:
            ingest_copick(cfg, data, version="v", voxel_spacing=float(value))

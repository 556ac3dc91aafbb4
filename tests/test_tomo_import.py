"""``byu tomo import``: a folder of real MRC / OME-Zarr files plus CSV / RELION STAR picks, into a data root."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from typer.testing import CliRunner

from byu.atomic import sha256_file
from byu.cli import app
from byu.errors import InputError, InputErrors, PinnedTomogramError, TomogramChangedError, VersionExistsError
from byu.importer import import_tomograms, read_pick_rows
from byu.importer.ingest import source_digest
from byu.labels.store import LabelStore
from byu.paths import DataRoot
from byu.tomo.grid import original_to_stored
from byu.tomo.io import read_meta, read_volume
from tests.fakes.portal import write_mrc, write_omezarr

runner = CliRunner()

# non-cubic volumes (Z, Y, X) at different spacings, so a swapped axis or a wrong spacing cannot pass
A = {"file": "TS_01.mrc", "id": "TS_01", "shape": (40, 48, 64), "spacing": 10.0, "blob": (20, 24, 32)}  # centre
B = {"file": "TS 02.rec", "id": "TS_02", "shape": (30, 36, 28), "spacing": None, "blob": (10, 20, 9)}  # no header
C = {"file": "TS_03.zarr", "id": "TS_03", "shape": (24, 32, 40), "spacing": 20.0, "blob": (8, 20, 12)}  # OME-Zarr
B_SPACING = 12.0


def _volume(shape, blob, seed, dtype=np.float32):
    """Faint noise and one bright Gaussian blob at voxel ``blob`` (z, y, x) of the original grid."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    d2 = (zz - blob[0]) ** 2 + (yy - blob[1]) ** 2 + (xx - blob[2]) ** 2
    vol = 0.05 * rng.standard_normal(shape).astype(np.float32) + 10.0 * np.exp(-d2 / (2 * 3.0 ** 2))
    return (vol * 100).astype(dtype) if np.dtype(dtype).kind == "i" else vol.astype(dtype)


def _write_mrc(path: Path, vol: np.ndarray, spacing: float | None) -> None:
    with mrcfile.new(path, data=vol, overwrite=True) as mrc:
        if spacing is not None:
            mrc.voxel_size = spacing


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "tomos"
    d.mkdir()
    _write_mrc(d / A["file"], _volume(A["shape"], A["blob"], 1), A["spacing"])
    _write_mrc(d / B["file"], _volume(B["shape"], B["blob"], 2, dtype=np.int16), None)
    write_omezarr(d / C["file"], _volume(C["shape"], C["blob"], 3), C["spacing"], (8, 16, 16))
    (d / "notes.txt").write_text("not a tomogram\n")
    return d


def _centred_A(t, zyx):
    """RELION 5 centred Å (x, y, z) of original voxel (z, y, x): (voxel - N/2) * spacing."""
    return [(zyx[a] - t["shape"][a] / 2) * t["spacing"] for a in (2, 1, 0)]


def _relion5_star(path: Path) -> Path:
    cx = _centred_A(C, C["blob"])
    path.write_text(f"""
# version 50001

data_general

_rlnTomoSubTomosAre2DStacks                       1


# version 50001

data_optics

loop_
_rlnOpticsGroup #1
_rlnOpticsGroupName #2
_rlnTomoTiltSeriesPixelSize #3
           1      optics1     2.500000


# version 50001

data_particles

loop_
_rlnTomoName #1
_rlnCenteredCoordinateXAngst #2
_rlnCenteredCoordinateYAngst #3
_rlnCenteredCoordinateZAngst #4
_rlnClassNumber #5
_rlnOpticsGroup #6
     TS_01     0.000000     0.000000     0.000000     1     1
     TS_01   -50.000000   100.000000    30.000000     2     1
TS_03.tomostar {cx[0]:.6f} {cx[1]:.6f} {cx[2]:.6f}     1     1

""")
    return path


def _blob_centre(stack: np.ndarray) -> np.ndarray:
    """Centroid (z, y, x) of the saturated core of the bright blob in a stored stack."""
    core = np.argwhere(stack >= stack.max() - 3)
    return core.mean(axis=0)


# ------------------------------------------------------------------------------------------------ library
def test_folder_of_mrc_and_zarr_with_a_relion5_star(folder, tmp_path):
    data = DataRoot(tmp_path / "data")
    star = _relion5_star(tmp_path / "particles.star")
    seen: list[tuple[str, str]] = []
    report = import_tomograms(data, folder, picks=star, version="own_v1", class_map="1=ribosome,2=apo-ferritin",
                              voxel_spacing=B_SPACING, progress=lambda t, d, n, s: seen.append((t, s)))
    assert report.ok and report.manifest is not None and report.manifest.created
    assert [t.tomo_id for t in report.tomograms] == ["TS_01", "TS_02", "TS_03"]
    assert {t.status for t in report.tomograms} == {"stored"} and report.convention == "relion5"
    assert ("TS_02", "preprocessing") in seen and ("TS_02", "stored") in seen
    assert len(report.warnings) == 1 and "TS_01.mrc 10 Å, TS_03.zarr 20 Å" in report.warnings[0]

    # stored tomograms: max(16 Å, spacing), shape floor(n * s); the frame is the file's own grid
    spacings = {"TS_01": 10.0, "TS_02": B_SPACING, "TS_03": 20.0}
    for t in (A, B, C):
        meta = read_meta(data.tomograms / t["id"])
        s = spacings[t["id"]] / max(16.0, spacings[t["id"]])
        assert meta.original_shape == t["shape"] and meta.original_spacing == spacings[t["id"]]
        assert meta.voxel_spacing == max(16.0, spacings[t["id"]])
        assert meta.shape == tuple(int(n * s) for n in t["shape"]) == read_volume(data.tomograms / t["id"]).shape
        assert meta.sha256 == source_digest(folder / t["file"]) and meta.source["import"]["path"].endswith(t["file"])
    assert read_meta(data.tomograms / "TS_01").sha256 == sha256_file(folder / A["file"])
    assert read_meta(data.tomograms / "TS_02").source["import"]["spacing_from"] == "option"

    labels = LabelStore(data.labels).get("own_v1")
    frames = labels.tomograms.set_index("tomo_id")
    for t in (A, B, C):
        assert tuple(frames.loc[t["id"], ["Z", "Y", "X"]]) == t["shape"]
        assert frames.loc[t["id"], "voxel_spacing"] == spacings[t["id"]]
    assert labels.class_names == ["ribosome", "apo-ferritin"]
    assert labels.per_tomogram_counts().loc["TS_02"].sum() == 0  # no picks: in the version, known empty
    assert set(labels.picks["source"]) == {"import:particles.star"}

    # RELION 5: the tomogram centre (0, 0, 0 Å) is voxel N / 2; x/y/z Å from it are voxel + Å / spacing
    ts1 = labels.picks[labels.picks["tomo_id"] == "TS_01"]
    np.testing.assert_allclose(ts1[["z", "y", "x"]].to_numpy(), [[20, 24, 32], [23, 34, 27]], atol=1e-9)
    assert list(ts1["particle"]) == ["ribosome", "apo-ferritin"]
    ts3 = labels.picks[labels.picks["tomo_id"] == "TS_03"]
    np.testing.assert_allclose(ts3[["z", "y", "x"]].to_numpy()[0], C["blob"], atol=1e-5)

    # the blob planted at the pick's original voxel is at original_to_stored of it in the stored slices
    for t, pick in ((A, ts1.iloc[0]), (C, ts3.iloc[0])):
        meta = read_meta(data.tomograms / t["id"])
        want = original_to_stored([pick.z, pick.y, pick.x], meta.original_spacing, meta.voxel_spacing)
        got = _blob_centre(read_volume(data.tomograms / t["id"]))
        assert np.abs(got - want).max() < 0.25, (t["id"], got, want)  # half an original voxel would not pass

    # the version pins each tomogram's file and content
    pins = report.manifest.extra["import"]["tomograms"]
    assert pins["TS_02"] == {"file": "TS 02.rec", "sha256": sha256_file(folder / B["file"]),
                             "voxel_spacing": B_SPACING, "spacing_from": "option"}
    assert report.manifest.extra["import"]["picks"] == "particles.star"

    # a rerun is a no-op: every tomogram skipped (its digest from meta.json: the file is not hashed again), the
    # version already stored
    again = import_tomograms(data, folder, picks=star, version="own_v1", class_map="1=ribosome,2=apo-ferritin",
                             voxel_spacing=B_SPACING)
    assert {t.status for t in again.tomograms} == {"skipped"} and again.manifest is not None
    assert not again.manifest.created
    # ... also when the files moved (same content: the digest says so); --force redoes them
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    again = import_tomograms(data, moved, voxel_spacing=B_SPACING)
    assert {t.status for t in again.tomograms} == {"skipped"} and again.version is None
    forced = import_tomograms(data, moved, voxel_spacing=B_SPACING, force=True, pattern="TS_01*")
    assert [(t.tomo_id, t.status) for t in forced.tomograms] == [("TS_01", "stored")]

    # the same name with other content is refused before any work: other classes, or a tomogram file changed
    with pytest.raises(VersionExistsError, match="own_v1"):
        import_tomograms(data, folder, picks=star, version="own_v1", particle="ribosome", voxel_spacing=B_SPACING)
    before = read_meta(data.tomograms / "TS_02").sha256
    _write_mrc(folder / B["file"], _volume(B["shape"], B["blob"], 99, dtype=np.int16), None)
    with pytest.raises(VersionExistsError, match="tomogram contents"):
        import_tomograms(data, folder, picks=star, version="own_v1", class_map="1=ribosome,2=apo-ferritin",
                         voxel_spacing=B_SPACING)
    assert read_meta(data.tomograms / "TS_02").sha256 == before
    # another version of the changed file would replace what own_v1 was stored with: refused, unless asked to
    stored = (data.tomograms / "TS_02" / "slice_0000.jpg").read_bytes()
    with pytest.raises(PinnedTomogramError, match="TS_02.*'own_v1'.*--replace-pinned"):
        import_tomograms(data, folder, picks=star, version="own_v2", class_map="1=ribosome,2=apo-ferritin",
                         voxel_spacing=B_SPACING)
    assert (data.tomograms / "TS_02" / "slice_0000.jpg").read_bytes() == stored
    assert not LabelStore(data.labels).exists("own_v2")
    again = import_tomograms(data, folder, picks=star, version="own_v2", class_map="1=ribosome,2=apo-ferritin",
                             voxel_spacing=B_SPACING, replace_pinned=True)
    assert [t.status for t in again.tomograms] == ["skipped", "stored", "skipped"]
    with pytest.raises(TomogramChangedError, match="'TS_02'.*'own_v1'"):  # own_v1 now says so where it is used
        LabelStore(data.labels).check_tomograms("own_v1")
    LabelStore(data.labels).check_tomograms("own_v2")
    assert again.manifest.extra["import"]["tomograms"]["TS_02"]["sha256"] == sha256_file(folder / B["file"]) != before


def test_csv_in_voxels_or_angstrom_lands_on_the_same_voxels(folder, tmp_path):
    data = DataRoot(tmp_path / "data")
    vox = tmp_path / "picks.csv"
    # z, y, x in any column order, "tomogram" for the tomogram, the file name as written (space included)
    vox.write_text("z,tomogram,Y,x,particle\n"
                   "20,TS_01,24,32,ribosome\n"
                   "\n"
                   "10,TS 02,20,9,apo-ferritin\n"
                   "8.5,TS_03.zarr,20.25,12,ribosome\n")
    report = import_tomograms(data, folder, picks=vox, version="csv_vox", voxel_spacing=B_SPACING)
    assert report.ok and report.convention == "voxel"
    labels = LabelStore(data.labels).get("csv_vox")
    got = labels.picks.set_index("tomo_id")
    np.testing.assert_array_equal(got.loc["TS_01", ["z", "y", "x"]].to_numpy(dtype=float), [20, 24, 32])
    np.testing.assert_array_equal(got.loc["TS_02", ["z", "y", "x"]].to_numpy(dtype=float), [10, 20, 9])
    np.testing.assert_array_equal(got.loc["TS_03", ["z", "y", "x"]].to_numpy(dtype=float), [8.5, 20.25, 12])
    assert labels.class_names == ["ribosome", "apo-ferritin"]
    meta = read_meta(data.tomograms / "TS_02")  # the int16 MRC without a header spacing
    want = original_to_stored(B["blob"], meta.original_spacing, meta.voxel_spacing)
    assert np.abs(_blob_centre(read_volume(data.tomograms / "TS_02")) - want).max() < 0.25

    ang = tmp_path / "picks_A.csv"
    ang.write_text("tomo_id,x,y,z\n"
                   f"TS_01,{32 * 10.0},{24 * 10.0},{20 * 10.0}\n"
                   f"TS_02,{9 * B_SPACING},{20 * B_SPACING},{10 * B_SPACING}\n")
    report = import_tomograms(data, folder, picks=ang, version="csv_ang", coordinates="angstrom",
                              particle="ribosome", voxel_spacing=B_SPACING)
    assert {t.status for t in report.tomograms} == {"skipped"} and report.convention == "angstrom"
    labels = LabelStore(data.labels).get("csv_ang")
    np.testing.assert_allclose(labels.picks[["z", "y", "x"]].to_numpy(), [[20, 24, 32], [10, 20, 9]], atol=1e-9)
    assert labels.class_names == ["ribosome"] and labels.per_tomogram_counts().loc["TS_03"].sum() == 0

    # no class column and no --particle: the classes file's only class, else an error
    classes = tmp_path / "classes.yaml"
    classes.write_text("- {name: my-complex, radius: 45}\n")
    report = import_tomograms(data, folder, picks=ang, version="csv_own", coordinates="angstrom",
                              classes_file=classes, voxel_spacing=B_SPACING)
    assert report.labels is not None and report.labels.class_names == ["my-complex"]
    with pytest.raises(InputError, match="--particle NAME"):
        import_tomograms(data, folder, picks=ang, version="csv_x", voxel_spacing=B_SPACING)


def test_relion4_star_pixels(folder, tmp_path):
    data = DataRoot(tmp_path / "data")
    rows = "TS_01  32.0  24.0  20.0  1\nTS_01  4.0  8.0  12.0  1\n"
    plain = tmp_path / "r4.star"
    plain.write_text("data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
                     "_rlnCoordinateZ #4\n_rlnClassNumber #5\n" + rows)
    report = import_tomograms(data, folder, picks=plain, version="r4", particle="ribosome", voxel_spacing=B_SPACING)
    assert report.convention == "relion4"  # no pixel size stated: voxels of the tomogram file
    np.testing.assert_array_equal(report.labels.picks[["z", "y", "x"]].to_numpy(), [[20, 24, 32], [12, 8, 4]])

    # a stated tilt-series pixel size (2.5 Å; the tomogram is at 10 Å): pixels of that size, as RELION means them
    stated = tmp_path / "r4_optics.star"
    stated.write_text("data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnTomoTiltSeriesPixelSize #2\n"
                      "_rlnDetectorPixelSize #3\n1 2.5 5.0\n\n"
                      "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n"
                      "_rlnCoordinateZ #4\n_rlnClassNumber #5\n_rlnOpticsGroup #6\n"
                      "TS_01  128.0  96.0  80.0  1  1\n")
    r = read_pick_rows(stated)
    assert r.convention == "relion4-tilt-series"
    np.testing.assert_allclose(r.to_voxels(np.array([0]), A["shape"], 10.0), [[20, 24, 32]])
    # --coordinates voxel: the same columns as voxels of the tomogram file (here outside it: one clear error)
    with pytest.raises(InputErrors) as exc:
        import_tomograms(data, folder, picks=stated, version="r4v", particle="ribosome", coordinates="voxel",
                         voxel_spacing=B_SPACING)
    assert sorted((e.row, e.field) for e in exc.value.errors) == [(18, f"rlnCoordinate{a}") for a in "XYZ"]
    assert "'128.0' is voxel 128 of TS_01, outside [0, 64)" in str(exc.value)

    # rlnOriginX/Y/ZAngst are subtracted (RELION's convention); the centre of an odd axis is N / 2
    centred = tmp_path / "r5_odd.star"
    centred.write_text("data_particles\nloop_\n_rlnTomoName\n_rlnCenteredCoordinateXAngst\n"
                       "_rlnCenteredCoordinateYAngst\n_rlnCenteredCoordinateZAngst\n_rlnOriginXAngst\n"
                       "_rlnOriginYAngst\n_rlnOriginZAngst\nTS_x 0 0 0 10 0 -5\n")
    r = read_pick_rows(centred)
    np.testing.assert_allclose(r.to_voxels(np.array([0]), (11, 20, 31), 5.0), [[5.5 + 1.0, 10.0, 15.5 - 2.0]])


def test_bad_rows_are_all_reported_and_nothing_is_stored(folder, tmp_path):
    data = DataRoot(tmp_path / "data")
    bad = tmp_path / "bad.csv"
    bad.write_text("tomo_id,x,y,z,particle\n"
                   "TS_01,1,2,3,ribosome\n"
                   "TS_01,nan,2,3,ribosome\n"
                   "TS_01,1,2,3,[bold]unicorn\n"
                   "TS_09,1,2,3,ribosome\n"
                   "TS_01,1,2,40,ribosome\n"
                   "TS_01,1,inf,3,apo-ferritin\n")
    with pytest.raises(InputErrors) as exc:
        import_tomograms(data, folder, picks=bad, version="bad_v1", voxel_spacing=B_SPACING)
    got = sorted((e.row, e.field) for e in exc.value.errors)
    assert got == [(3, "x"), (4, "particle"), (5, "tomo_id"), (6, "z"), (7, "y")]
    assert all(e.file == str(bad) for e in exc.value.errors)
    text = str(exc.value)
    assert "'[bold]unicorn'" in text and "'TS_09' (1 pick(s)) is not in" in text and "'nan'" in text
    assert "outside [0, 40)" in text and "--coordinates angstrom" in text
    assert not data.tomograms.exists() and LabelStore(data.labels).names() == []

    # STAR: the file line of the row, the field, the user's text
    star = tmp_path / "bad.star"
    star.write_text("# version 50001\n\ndata_particles\n\nloop_\n_rlnTomoName #1\n_rlnCenteredCoordinateXAngst #2\n"
                    "_rlnCenteredCoordinateYAngst #3\n_rlnCenteredCoordinateZAngst #4\n_rlnClassNumber #5\n"
                    "TS_01 0 0 0 1\n# a comment\nTS_01 0 zero 0 1\nTS_01 0 0 0 7\n")
    with pytest.raises(InputErrors) as exc:
        import_tomograms(data, folder, picks=star, version="bad_v2", class_map="1=ribosome", voxel_spacing=B_SPACING)
    assert sorted((e.row, e.field) for e in exc.value.errors) == [(13, "rlnCenteredCoordinateYAngst"),
                                                                   (14, "rlnClassNumber")]
    assert "'zero'" in str(exc.value) and "class '7' is not in --class-map (1=ribosome)" in str(exc.value)
    assert not data.tomograms.exists()


def test_tomogram_problems(folder, tmp_path):
    data = DataRoot(tmp_path / "data")
    with pytest.raises(InputError, match="no voxel spacing: pass --voxel-spacing") as exc:
        import_tomograms(data, folder)
    assert exc.value.file == str(folder / B["file"])
    shutil.copy(folder / A["file"], folder / "TS_01.map")
    with pytest.raises(InputError, match="both become tomo_id 'TS_01'"):
        import_tomograms(data, folder, voxel_spacing=B_SPACING)
    (folder / "TS_01.map").unlink()
    # a corrupt file is named once; its picks are not also "missing"
    write_mrc(folder / "TS_04.mrc", _volume((8, 8, 8), (4, 4, 4), 4), 10.0, corrupt="header")
    picks = tmp_path / "p4.csv"
    picks.write_text("tomo_id,x,y,z\nTS_04,1,1,1\nTS_01,1,1,1\n")
    with pytest.raises(InputError) as exc:
        import_tomograms(data, folder, picks=picks, version="v4", particle="ribosome", voxel_spacing=B_SPACING)
    assert not isinstance(exc.value, InputErrors) and exc.value.file == str(folder / "TS_04.mrc")
    assert "not a valid MRC" in str(exc.value)
    (folder / "TS_04.mrc").unlink()
    with pytest.raises(InputError, match="--version"):
        import_tomograms(data, folder, picks=tmp_path / "p.csv", voxel_spacing=B_SPACING)
    star = _relion5_star(tmp_path / "p.star")
    with pytest.raises(InputError, match="--class-map"):
        import_tomograms(data, folder, picks=star, version="v", voxel_spacing=B_SPACING)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no tomograms matching"):
        import_tomograms(data, empty)
    # the header's spacing wins over --voxel-spacing (a note says so); a tomogram stored from elsewhere stays
    report = import_tomograms(data, folder, pattern="TS_0[13]*")
    assert report.ok and report.warnings == [] and {t.spacing_from for t in report.tomograms} == {"header"}
    report = import_tomograms(data, folder, voxel_spacing=7.0, pattern="TS_01*")
    assert report.warnings == ["--voxel-spacing 7 Å is for files whose header gives none; these have their own, "
                               "which is used: TS_01.mrc 10 Å"]
    assert read_meta(data.tomograms / "TS_01").original_spacing == 10.0
    meta_path = data.tomograms / "TS_01" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["source"] = {"file": "x.mrc", "format": "mrc", "portal": {"run_id": 1}}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="already stored from another source \\(portal"):
        import_tomograms(data, folder, pattern="TS_01*")


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_import(folder, tmp_path):
    data = tmp_path / "data"
    star = _relion5_star(tmp_path / "particles.star")
    args = ["tomo", "import", str(folder), "--picks", str(star), "--version", "cli_v1", "--class-map",
            "1=ribosome,2=apo-ferritin", "--voxel-spacing", str(B_SPACING), "--data-dir", str(data)]
    r = runner.invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "tomograms: 3 stored, 0 up to date, 0 failed" in r.output
    assert "labels: version 'cli_v1' stored: 3 tomogram(s) (1 without picks), 2 ribosome, 1 apo-ferritin" in r.output
    r = runner.invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0 and "0 stored, 3 up to date" in r.output and "already stored (identical)" in r.output

    bad = tmp_path / "bad.csv"
    bad.write_text("tomo_id,x,y,z\nTS_01,1,2,3\n")
    r = runner.invoke(app, ["tomo", "import", str(folder), "--picks", str(bad), "--version", "cli_v2",
                            "--particle", "[red]nope", "--data-dir", str(data)])
    assert r.exit_code == 2 and "unknown particle class '[red]nope'" in r.output
    r = runner.invoke(app, ["tomo", "import", str(folder), "--coordinates", "pixels", "--data-dir", str(data)])
    assert r.exit_code == 2
    assert not LabelStore(data / "labels").exists("cli_v2")

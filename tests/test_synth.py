"""The motor cohort (``make_cohort`` with classes ``["motor"]``): on-disk form, label frames, planted errors,
determinism, visibility, the uniform result, CLI."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

import byu.synth.placement
from byu.labels.formats import read_labels, read_picks, read_version_file
from byu.labels.table import motors_angstrom
from byu.matching import match_points
from byu.synth import Cohort, make_cohort
from byu.tomo import grid
from byu.tomo.io import iter_tomograms, read_meta, read_volume
from byu.tomo.preprocess import resampled_shape

SMALL = {"z_range": (64, 96), "yx_range": (160, 192)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    """12 small tomograms (every error kind is planted at n >= 12)."""
    return make_cohort(tmp_path_factory.mktemp("synth") / "data", n=12, seed=5, **SMALL)


@pytest.fixture(scope="module")
def tables(cohort: Cohort) -> dict[str, pd.DataFrame]:
    return {
        "truth": read_labels(cohort.truth_canonical_path),
        "noisy": read_labels(cohort.noisy_path),
        "errors": pd.read_csv(cohort.errors_path),
        "decoys": pd.read_csv(cohort.decoys_path),
    }


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _extent_a(meta) -> np.ndarray:
    return (np.asarray(meta.shape, dtype=float) - 1.0) * meta.voxel_spacing


@pytest.mark.slow
def test_tomograms_on_disk(cohort: Cohort) -> None:
    found = list(iter_tomograms(cohort.root / "tomograms"))
    assert [t for t, _ in found] == [f"synth_{i:03d}" for i in range(12)] == cohort.tomo_ids
    for i, (tomo_id, d) in enumerate(found):
        meta = read_meta(d)
        assert meta.tomo_id == tomo_id
        assert meta.source == {"synth": {"seed": 5, "index": i}}
        assert 8.0 <= meta.original_spacing <= 20.0
        assert meta.voxel_spacing == max(16.0, meta.original_spacing)
        assert 64 <= meta.shape[0] <= 96 and all(160 <= s <= 192 for s in meta.shape[1:])
        s = grid.scale_factor(meta.original_spacing, meta.voxel_spacing)
        # the real preprocess would store the original volume at this very shape (floor(n * s)) ...
        assert resampled_shape(meta.original_shape, meta.original_spacing, 16.0) == meta.shape
        # ... and it is the smallest such shape, within a voxel of the stored extent
        assert all(grid.resampled_length(m - 1, s) == n - 1 for m, n in zip(meta.original_shape, meta.shape, strict=True))
        assert all(abs(m - n / s) < 1.0 for m, n in zip(meta.original_shape, meta.shape, strict=True))
        assert meta.clip_percentiles == (0.879, 99.06) and meta.clip[0] < meta.clip[1]
        assert len(list(d.glob("slice_*.jpg"))) == meta.shape[0]
        z = meta.shape[0] // 2
        sl = read_volume(d, z_range=(z, z + 1))[0]
        assert sl.shape == meta.shape[1:]
        # percentile clipping: ~0.9% of voxels at 0 and ~0.9% at 255, the rest spread out (JPEG blurs the ends)
        assert 50 < float(sl.mean()) < 200 and float(sl.std()) > 20


def test_labels_are_valid_in_the_original_frame(cohort: Cohort, tables: dict[str, pd.DataFrame]) -> None:
    for name in ("truth", "noisy"):
        df = tables[name]
        assert list(df.tomo_id) == cohort.tomo_ids
        for r in df.itertuples(index=False):
            meta = read_meta(cohort.root / "tomograms" / r.tomo_id)
            assert (r.Z, r.Y, r.X) == meta.original_shape and r.voxel_spacing == meta.original_spacing
            extent = _extent_a(meta)
            zyx = np.asarray(r.motor_zyx, dtype=float).reshape(-1, 3)
            stored = grid.frame_to_stored(zyx, r.voxel_spacing, meta.original_spacing, meta.voxel_spacing)
            assert len(motors_angstrom(r)) == len(stored)
            for p in stored * meta.voxel_spacing:  # within the stored volume, >= ~300 Å from its faces
                assert np.all(p >= 300.0 - 1e-6) and np.all(p <= extent - 300.0 + 1e-6), (name, r.tomo_id, p)
    counts = tables["truth"].num_motors.to_numpy()
    assert cohort.particles_by_class == {"motor": counts.sum()} and cohort.n_particles == counts.sum()
    assert {0, 1} <= set(counts) and counts.max() in (2, 3) and counts.max() <= 3
    assert (counts == 1).sum() >= (counts == 0).sum()


def test_motors_far_apart_and_decoys_far_from_motors(tables: dict[str, pd.DataFrame]) -> None:
    decoys = tables["decoys"]
    assert len(decoys) >= len(tables["truth"]) // 2
    assert set(decoys.kind) <= {"blob", "ring", "vesicle"}
    for r in tables["truth"].itertuples(index=False):
        pts = motors_angstrom(r)
        for i in range(len(pts)):
            for j in range(i + 1, len(pts)):
                assert np.linalg.norm(pts[i] - pts[j]) >= 2000.0
        d = decoys[decoys.tomo_id == r.tomo_id][["z", "y", "x"]].to_numpy() * r.voxel_spacing
        if not len(pts):
            assert len(d) >= 1  # something to put a false label on
        elif len(d):
            assert np.min(np.linalg.norm(d[:, None] - pts[None], axis=-1)) >= 1500.0


def test_noisy_differs_from_truth_exactly_by_the_planted_errors(cohort: Cohort,
                                                                tables: dict[str, pd.DataFrame]) -> None:
    truth = tables["truth"].set_index("tomo_id")
    noisy = tables["noisy"].set_index("tomo_id")
    errors = tables["errors"]
    decoys = tables["decoys"]
    assert list(errors.columns) == ["tomo_id", "kind", "true_z", "true_y", "true_x", "label_z", "label_y", "label_x"]
    assert errors.tomo_id.is_unique
    assert set(errors.kind) == {"missed", "false", "shifted"}  # all kinds at n >= 12
    assert 3 <= len(errors) <= 5  # ~30% of 12
    assert cohort.errors_by_kind == errors.kind.value_counts().to_dict()
    assert cohort.errors_by_class == {"motor": cohort.errors_by_kind} and cohort.n_errors == len(errors)

    for tomo_id in cohort.tomo_ids:
        t, nz = truth.loc[tomo_id], noisy.loc[tomo_id]
        e = errors[errors.tomo_id == tomo_id]
        if e.empty:
            assert nz.motor_zyx == t.motor_zyx
            continue
        e = e.iloc[0]
        sp = float(t.voxel_spacing)
        true_pt = [e.true_z, e.true_y, e.true_x]
        label_pt = [e.label_z, e.label_y, e.label_x]
        assert nz.num_motors <= 1  # errors only where the round-1 review looks
        if e.kind == "missed":
            assert not any(map(math.isnan, true_pt)) and all(map(math.isnan, label_pt))
            assert true_pt in t.motor_zyx and true_pt not in nz.motor_zyx
            assert sorted(nz.motor_zyx + [true_pt]) == sorted(t.motor_zyx)
        elif e.kind == "false":
            assert all(map(math.isnan, true_pt)) and t.num_motors == 0
            assert nz.motor_zyx == [label_pt]
            d = decoys[decoys.tomo_id == tomo_id][["z", "y", "x"]].to_numpy()
            assert np.min(np.linalg.norm(d - np.asarray(label_pt), axis=1)) < 1e-6  # placed on a decoy
        else:
            assert t.motor_zyx == [true_pt] and nz.motor_zyx == [label_pt]
            shift = np.linalg.norm((np.asarray(label_pt) - np.asarray(true_pt)) * sp)
            assert 1300.0 - 1.0 <= shift <= 2000.0 + 1.0
            # a 1000 Å matcher must not pair the shifted label with the true motor
            m = match_points(np.asarray([true_pt]) * sp, np.asarray([label_pt]) * sp, 1000.0)
            assert not m.pairs


def test_motor_is_bright_where_the_truth_says(cohort: Cohort, tables: dict[str, pd.DataFrame]) -> None:
    """Truth (original frame) mapped through the resampling grid lands on a dense structure in the stored stack.

    At the scale of a motor body (Gaussian σ = 2.5 voxels ≈ 40 Å) every motor centre is among the brightest 3%
    of the stack; skipping the frame conversion (where the spacings differ) misses it.
    """
    ranks, wrong = [], []
    for r in tables["truth"].itertuples(index=False):
        if not r.num_motors:
            continue
        d = cohort.root / "tomograms" / r.tomo_id
        meta = read_meta(d)
        smooth = gaussian_filter(read_volume(d).astype(np.float32), 2.5)
        flat = np.sort(smooth, axis=None)
        for p in r.motor_zyx:
            right = grid.frame_to_stored(p, r.voxel_spacing, meta.original_spacing, meta.voxel_spacing)
            for at, out in ((right, ranks), (np.asarray(p, dtype=float), wrong)):  # wrong: original as stored
                c = np.clip(np.rint(at).astype(int), 0, np.asarray(smooth.shape) - 1)
                out.append(np.searchsorted(flat, smooth[tuple(c)]) / flat.size)
            if meta.voxel_spacing / meta.original_spacing < 1.25:  # too close to tell the frames apart
                wrong.pop()
    assert min(ranks) > 0.97, ranks
    assert len(wrong) >= 1 and max(wrong) < 0.97, wrong


def test_written_coordinates_map_exactly_onto_the_rendered_centres(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``original_to_stored`` of every written coordinate (truth, decoys) is the stored voxel where the particle
    was rendered (``Å / stored spacing``), up to the 3-decimal rounding of the tables."""
    planned = []
    plan = byu.synth.placement.plan_motor

    def spy(*args, **kwargs):
        planned.append(plan(*args, **kwargs))
        return planned[-1]

    monkeypatch.setattr(byu.synth.placement, "plan_motor", spy)
    res = make_cohort(tmp_path / "x", n=4, seed=2, spacing_range=(6.0, 12.0), **SMALL)
    truth = read_labels(res.truth_canonical_path).set_index("tomo_id")
    decoys = pd.read_csv(res.decoys_path)
    assert [t.tomo_id for t in planned] == res.tomo_ids and sum(len(t.of("particle")) for t in planned) >= 2
    for t in planned:
        meta = read_meta(res.root / "tomograms" / t.tomo_id)
        assert meta.shape == t.shape and meta.original_shape == t.original_shape
        s = grid.scale_factor(meta.original_spacing, meta.voxel_spacing)
        atol = 0.0005 * s + 1e-9
        rendered = np.array([m.pos for m in t.of("particle")]).reshape(-1, 3) / meta.voxel_spacing
        written = np.asarray(truth.loc[t.tomo_id].motor_zyx, dtype=float).reshape(-1, 3)
        np.testing.assert_allclose(grid.original_to_stored(written, meta.original_spacing, meta.voxel_spacing),
                                   rendered, atol=atol)
        if len(rendered) and s < 0.9:  # the spacing ratio alone (the old convention) is off by (1 - s) / 2
            assert np.all(np.abs(written * s - rendered) > 0.04)
        rendered = np.array([d.pos for d in t.of("decoy")]).reshape(-1, 3) / meta.voxel_spacing
        written = decoys[decoys.tomo_id == t.tomo_id][["z", "y", "x"]].to_numpy(dtype=float)
        np.testing.assert_allclose(grid.original_to_stored(written, meta.original_spacing, meta.voxel_spacing),
                                   rendered, atol=atol)


@pytest.mark.slow
def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path) -> None:
    a = make_cohort(tmp_path / "a", n=3, seed=11, **SMALL)
    b = make_cohort(tmp_path / "b", n=3, seed=11, **SMALL)
    c = make_cohort(tmp_path / "c", n=3, seed=12, **SMALL)
    da, db, dc = _tree_digest(a.root), _tree_digest(b.root), _tree_digest(c.root)
    assert da == db
    assert any(k.endswith(".jpg") for k in da)
    jpgs = [k for k in da if k.endswith(".jpg") and k in dc]
    assert sum(da[k] != dc[k] for k in jpgs) > 0.9 * len(jpgs)
    assert da["synth/truth.csv"] != dc["synth/truth.csv"]


@pytest.mark.slow
def test_default_shapes(tmp_path: Path) -> None:
    res = make_cohort(tmp_path / "d", n=2, seed=0)  # its generation time: benchmarks/synth.py
    for tomo_id in res.tomo_ids:
        meta = read_meta(res.root / "tomograms" / tomo_id)
        assert 96 <= meta.shape[0] <= 160 and all(160 <= s <= 256 for s in meta.shape[1:])
        # several 1000 Å match radii fit across the volume
        assert min(meta.shape[1:]) * meta.voxel_spacing >= 2.5 * 1000.0
    assert res.n_tomograms == 2


def test_one_result_for_every_world(cohort: Cohort, tables: dict[str, pd.DataFrame]) -> None:
    """The motor cohort's result has the fields of every world's: the truth in the picks form (the same labels as
    the canonical truth.csv), the noisy labels and tomograms table readable as a label version, no classes file."""
    synth = cohort.root / "synth"
    assert cohort.world == "default" and cohort.class_names == ["motor"] and cohort.n_tomograms == 12
    assert cohort.truth_path == synth / "truth_picks.csv" and cohort.truth_canonical_path == synth / "truth.csv"
    assert cohort.noisy_path == synth / "labels_noisy.csv" and cohort.tomograms_path == synth / "tomograms.csv"
    assert cohort.errors_path == synth / "planted_errors.csv" and cohort.decoys_path == synth / "decoys.csv"
    assert cohort.classes_path is None and not (synth / "classes.json").exists()
    assert sorted(p.name for p in synth.iterdir()) == sorted([  # the files of today's motor cohort, no more
        "truth.csv", "labels_noisy.csv", "truth_picks.csv", "tomograms.csv", "planted_errors.csv", "decoys.csv"])
    picks = read_picks(cohort.truth_path)
    assert len(picks) == cohort.particles_by_class["motor"] and set(picks["particle"]) == {"motor"}
    from_picks = read_version_file(cohort.truth_path, tomograms=cohort.tomograms_path)
    from_canonical = read_version_file(cohort.truth_canonical_path)
    assert from_picks.tomo_ids == from_canonical.tomo_ids
    pd.testing.assert_frame_equal(from_picks.picks.reset_index(drop=True)[["tomo_id", "particle", "z", "y", "x"]],
                                  from_canonical.picks.reset_index(drop=True)[["tomo_id", "particle", "z", "y", "x"]],
                                  check_dtype=False)
    noisy = read_version_file(cohort.noisy_path, tomograms=cohort.tomograms_path)
    assert len(noisy.picks) == tables["noisy"].num_motors.sum()
    assert cohort.decoys_by_class == {"motor": len(tables["decoys"])}
    assert cohort.error_kinds == ("missed", "false", "shifted") and cohort.seconds > 0


def test_options_of_other_worlds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="count_range"):  # a multi-class option
        make_cohort(tmp_path / "a", n=1, count_range=(1, 2))
    for kw in ({"species": 10}, {"snr": 0.1}, {"crowding": 0.2}):
        with pytest.raises(ValueError, match="crowded world"):
            make_cohort(tmp_path / "b", n=1, **kw)
    with pytest.raises(ValueError, match="world"):
        make_cohort(tmp_path / "c", n=1, world="dense")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_shape_ranges_too_small_for_the_motors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="widen the shape ranges"):
        make_cohort(tmp_path / "e", n=4, seed=0, z_range=(32, 40), yx_range=(64, 72))
    assert not (tmp_path / "e" / "tomograms").exists()  # fails while planning, before writing anything


def test_cli(tmp_path: Path) -> None:
    from byu.cli.synth import synth_command

    app = typer.Typer()
    app.command("synth")(synth_command)
    app.command("noop")(lambda: None)  # two commands, so "synth" is addressed by name as under `byu`
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["synth", "--n", "1", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 1 tomograms" in result.output
    assert read_labels(out / "synth" / "truth.csv").tomo_id.tolist() == ["synth_000"]
    assert read_meta(out / "tomograms" / "synth_000").source == {"synth": {"seed": 3, "index": 0}}
    bad = CliRunner().invoke(app, ["synth", "--n", "0", "--out", str(out)])
    assert bad.exit_code != 0

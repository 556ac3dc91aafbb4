"""The synthetic multi-class cohort (``make_cohort`` with classes other than ``["motor"]``): files and columns,
determinism, planted errors per class, the frame mapping, and that every class looks like itself (and not like its
decoys)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter, map_coordinates

from byu.labels.classes import BUILTIN_CLASSES, ParticleClass
from byu.labels.formats import read_picks
from byu.synth import Cohort, error_kinds, make_cohort, render_template
from byu.synth.shapes import CLASS_SHAPES, DECOY_SHAPES
from byu.synth.writers import DECOY_COLUMNS, ERROR_COLUMNS, PICK_COLUMNS, TOMOGRAM_COLUMNS
from byu.tomo import grid
from byu.tomo.io import iter_tomograms, read_meta, read_volume

LUMP = ParticleClass(name="lump", radius=90.0)  # a user class: a solid ellipsoid
CLASSES = [BUILTIN_CLASSES["motor"], BUILTIN_CLASSES["ribosome"], BUILTIN_CLASSES["apo-ferritin"], LUMP]
N = 12
ERROR_KINDS = error_kinds("default")  # missed, false, shifted
TINY = {"z_range": (40, 48), "yx_range": (64, 80), "count_range": (1, 2), "n_beads": (1, 2)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    """12 tomograms at the default sizes (every error kind of every class is planted at n >= 12)."""
    return make_cohort(tmp_path_factory.mktemp("synth_multi") / "data", classes=CLASSES, n=N, seed=3)


@pytest.fixture(scope="module")
def tables(cohort: Cohort) -> dict[str, pd.DataFrame]:
    return {
        "truth": pd.read_csv(cohort.truth_path),
        "noisy": pd.read_csv(cohort.noisy_path),
        "tomograms": pd.read_csv(cohort.tomograms_path),
        "errors": pd.read_csv(cohort.errors_path),
        "decoys": pd.read_csv(cohort.decoys_path),
    }


@pytest.fixture(scope="module")
def volumes(cohort: Cohort) -> dict[str, tuple[np.ndarray, object]]:
    return {t: (read_volume(d).astype(np.float32), read_meta(d)) for t, d in iter_tomograms(cohort.root / "tomograms")}


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _angstrom(df: pd.DataFrame, cols=("z", "y", "x")) -> np.ndarray:
    return df.loc[:, list(cols)].to_numpy(float) * df["voxel_spacing"].to_numpy(float)[:, None]


def _with_spacing(df: pd.DataFrame, tomograms: pd.DataFrame) -> pd.DataFrame:
    if "voxel_spacing" in df.columns:
        return df
    return df.merge(tomograms[["tomo_id", "voxel_spacing"]], on="tomo_id", how="left", validate="many_to_one")


# ----------------------------------------------------------------------------------------------------------------
# files


@pytest.mark.slow
def test_files_and_columns(cohort: Cohort, tables: dict[str, pd.DataFrame]) -> None:
    synth = cohort.root / "synth"
    assert sorted(p.name for p in synth.iterdir()) == sorted([
        "truth_picks.csv", "labels_noisy_picks.csv", "tomograms.csv", "planted_errors.csv", "decoys.csv",
        "classes.json"])
    assert list(tables["truth"].columns) == list(tables["noisy"].columns) == PICK_COLUMNS
    assert PICK_COLUMNS == ["tomo_id", "particle", "z", "y", "x", "voxel_spacing"]
    assert list(tables["tomograms"].columns) == TOMOGRAM_COLUMNS == ["tomo_id", "Z", "Y", "X", "voxel_spacing"]
    assert list(tables["errors"].columns) == ERROR_COLUMNS == [
        "tomo_id", "particle", "kind", "true_z", "true_y", "true_x", "label_z", "label_y", "label_x"]
    assert list(tables["decoys"].columns) == DECOY_COLUMNS == ["tomo_id", "z", "y", "x", "kind", "mimics"]
    assert json.loads(cohort.classes_path.read_text()) == [c.model_dump(mode="json") for c in CLASSES]
    for path in (cohort.truth_path, cohort.noisy_path):  # the project's picks reader takes them
        assert len(read_picks(path)) == len(pd.read_csv(path))

    ids = [f"synth_{i:03d}" for i in range(N)]
    assert tables["tomograms"]["tomo_id"].tolist() == ids == cohort.tomo_ids
    assert [t for t, _ in iter_tomograms(cohort.root / "tomograms")] == ids
    tomos = tables["tomograms"].set_index("tomo_id")
    metas = {tomo_id: read_meta(d) for tomo_id, d in iter_tomograms(cohort.root / "tomograms")}
    for tomo_id, d in iter_tomograms(cohort.root / "tomograms"):
        meta = metas[tomo_id]
        row = tomos.loc[tomo_id]
        assert meta.original_shape == (row.Z, row.Y, row.X) and meta.original_spacing == row.voxel_spacing
        assert 8.0 <= meta.original_spacing <= 14.0
        assert meta.voxel_spacing == max(16.0, meta.original_spacing)
        assert grid.resampled_shape(meta.original_shape, meta.original_spacing, 16.0) == meta.shape
        assert 64 <= meta.shape[0] <= 112 and all(128 <= s <= 224 for s in meta.shape[1:])
        assert len(list(d.glob("slice_*.jpg"))) == meta.shape[0]
    assert any(m.shape[1] != m.shape[2] for m in metas.values()), "no non-cubic volume to catch swapped axes"

    for name in ("truth", "noisy"):
        df = tables[name]
        key = list(zip(df["tomo_id"], df["particle"], strict=True))
        assert key == sorted(key), f"{name} is not sorted by tomo_id, particle"
        assert set(df["particle"]) <= {c.name for c in CLASSES}
        merged = df.merge(tables["tomograms"], on="tomo_id", suffixes=("", "_t"))
        assert len(merged) == len(df)
        assert (merged["voxel_spacing"] == merged["voxel_spacing_t"]).all()
        for ax, dim in (("z", "Z"), ("y", "Y"), ("x", "X")):  # inside the original volume
            assert ((merged[ax] >= 0) & (merged[ax] <= merged[dim] - 1)).all()
    assert set(tables["truth"]["particle"]) == {c.name for c in CLASSES}
    assert set(tables["errors"]["kind"]) <= set(ERROR_KINDS)
    kinds = {k for shape in {CLASS_SHAPES.get(c.name, "ellipsoid") for c in CLASSES} for k in DECOY_SHAPES[shape]}
    assert set(tables["decoys"]["kind"]) <= kinds | {"gold"}
    gold = tables["decoys"]["kind"] == "gold"
    assert gold.any() and tables["decoys"].loc[gold, "mimics"].isna().all()
    assert set(tables["decoys"].loc[~gold, "mimics"]) <= {c.name for c in CLASSES}


def test_counts_in_result(cohort: Cohort, tables: dict[str, pd.DataFrame]) -> None:
    truth, errors = tables["truth"], tables["errors"]
    assert cohort.n_tomograms == N and cohort.class_names == [c.name for c in CLASSES]
    assert cohort.particles_by_class == truth["particle"].value_counts().reindex(cohort.class_names,
                                                                                 fill_value=0).to_dict()
    for c in cohort.class_names:
        assert cohort.errors_by_class[c] == {k: int(((errors.particle == c) & (errors.kind == k)).sum())
                                             for k in ERROR_KINDS}
        assert cohort.decoys_by_class[c] == int((tables["decoys"]["mimics"] == c).sum())
    assert cohort.n_errors == len(errors) and cohort.seconds > 0
    assert cohort.world == "default" and cohort.truth_canonical_path is None  # the picks form only
    assert cohort.errors_by_kind == {k: int((errors.kind == k).sum()) for k in ERROR_KINDS}
    assert cohort.extra["n_beads"] == int((tables["decoys"]["kind"] == "gold").sum())
    assert set(cohort.extra["unplaced_by_class"]) == set(cohort.class_names)


def test_deterministic(tmp_path: Path) -> None:
    args = dict(classes=[BUILTIN_CLASSES["apo-ferritin"], BUILTIN_CLASSES["ribosome"]], n=2, seed=11, **TINY)
    a = make_cohort(tmp_path / "a", **args)
    b = make_cohort(tmp_path / "b", **args)
    da, db = _tree_digest(a.root), _tree_digest(b.root)
    assert da == db and len(da) > 10
    c = make_cohort(tmp_path / "c", **{**args, "seed": 12})
    assert _tree_digest(c.root)["synth/truth_picks.csv"] != da["synth/truth_picks.csv"]


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_cohort(tmp_path / "a", classes=[], n=1)
    with pytest.raises(ValueError):
        make_cohort(tmp_path / "b", classes=[LUMP, LUMP], n=1)
    with pytest.raises(ValueError):
        make_cohort(tmp_path / "c", classes=[LUMP], n=0)


# ----------------------------------------------------------------------------------------------------------------
# planted errors


def _rows(df: pd.DataFrame, cols) -> list[tuple]:
    return sorted(tuple(r) for r in df.loc[:, list(cols)].itertuples(index=False))


def test_noisy_labels_are_truth_plus_planted_errors(tables: dict[str, pd.DataFrame]) -> None:
    truth, noisy, errors = tables["truth"], tables["noisy"], tables["errors"]
    cols = ["tomo_id", "particle", "z", "y", "x"]
    expect = Counter(_rows(truth, cols))
    for e in errors.itertuples(index=False):
        true, label = (e.tomo_id, e.particle, e.true_z, e.true_y, e.true_x), (e.tomo_id, e.particle, e.label_z,
                                                                               e.label_y, e.label_x)
        if e.kind in ("missed", "shifted"):
            assert expect.get(true, 0) >= 1, f"{e.kind} error of a particle that is not in the truth: {true}"
            expect[true] -= 1
        if e.kind in ("false", "shifted"):
            expect[label] = expect.get(label, 0) + 1
    assert Counter(_rows(noisy, cols)) == +expect
    assert not errors.duplicated(["tomo_id", "particle"]).any(), "more than one error per (tomogram, class)"


def test_every_class_gets_every_error_kind(cohort: Cohort, tables: dict[str, pd.DataFrame]) -> None:
    errors = tables["errors"]
    for c in CLASSES:
        got = errors[errors.particle == c.name]
        assert set(got["kind"]) == set(ERROR_KINDS), c.name
        assert len(got) == round(0.3 * N), c.name


def test_planted_errors_are_what_they_say(tables: dict[str, pd.DataFrame]) -> None:
    tomos = tables["tomograms"].set_index("tomo_id")
    truth = _with_spacing(tables["truth"], tables["tomograms"])
    noisy = _with_spacing(tables["noisy"], tables["tomograms"])
    decoys = _with_spacing(tables["decoys"], tables["tomograms"])
    errors = _with_spacing(tables["errors"], tables["tomograms"])
    for e in errors.itertuples(index=False):
        c = next(c for c in CLASSES if c.name == e.particle)
        m = c.match_radius_A
        def sel(df: pd.DataFrame, e=e) -> pd.DataFrame:
            return df[(df.tomo_id == e.tomo_id) & (df.particle == e.particle)]

        t_a, n_a = _angstrom(sel(truth)), _angstrom(sel(noisy))
        true_a = np.array([e.true_z, e.true_y, e.true_x]) * e.voxel_spacing
        label_a = np.array([e.label_z, e.label_y, e.label_x]) * e.voxel_spacing
        if e.kind == "missed":
            assert np.isnan(label_a).all()
            assert np.min(np.linalg.norm(t_a - true_a, axis=1)) < 1e-6
            assert len(n_a) == 0 or np.min(np.linalg.norm(n_a - true_a, axis=1)) > m, "a missed particle is labelled"
        elif e.kind == "false":
            assert np.isnan(true_a).all()
            d = decoys[(decoys.tomo_id == e.tomo_id) & (decoys.mimics == e.particle)]
            assert len(d) and np.min(np.linalg.norm(_angstrom(d) - label_a, axis=1)) < 1e-6, \
                "a false label not on a decoy that mimics its class"
            assert np.min(np.linalg.norm(n_a - label_a, axis=1)) < 1e-6
            assert len(t_a) == 0 or np.min(np.linalg.norm(t_a - label_a, axis=1)) >= 1.5 * m - 0.1
        else:
            dist = np.linalg.norm(label_a - true_a)
            assert 2 * m <= dist <= 2 * m + c.radius + 0.1, (e.particle, dist)
            others = t_a[np.linalg.norm(t_a - true_a, axis=1) > 1e-6]
            assert len(others) == 0 or np.min(np.linalg.norm(others - label_a, axis=1)) >= 2 * m
            assert np.min(np.linalg.norm(n_a - label_a, axis=1)) < 1e-6
            assert np.min(np.linalg.norm(n_a - true_a, axis=1)) > m, "a shifted particle is still labelled"
            shape = tomos.loc[e.tomo_id, ["Z", "Y", "X"]].to_numpy(float)
            label = np.array([e.label_z, e.label_y, e.label_x])
            assert np.all(label >= 0) and np.all(label <= shape - 1)


def test_particles_do_not_overlap(tables: dict[str, pd.DataFrame]) -> None:
    truth = _with_spacing(tables["truth"], tables["tomograms"])
    radius = {c.name: c.radius for c in CLASSES}
    for _, g in truth.groupby("tomo_id"):
        pos, names = _angstrom(g), g["particle"].tolist()
        for i in range(len(g)):
            for j in range(i + 1, len(g)):
                need = 2000.0 if names[i] == names[j] == "motor" else 2 * max(radius[names[i]], radius[names[j]])
                assert np.linalg.norm(pos[i] - pos[j]) >= need - 0.1


# ----------------------------------------------------------------------------------------------------------------
# the frame mapping


def _stored(row, meta) -> np.ndarray:
    return grid.original_to_stored([row.z, row.y, row.x], meta.original_spacing, meta.voxel_spacing)


@pytest.mark.slow
def test_truth_lands_on_a_density_maximum(tables: dict[str, pd.DataFrame], volumes) -> None:
    """The ellipsoids of the user class: the volume smoothed to their size peaks near original_to_stored(label);
    with Y and X swapped (the volumes are not cubic) the same positions land on background."""
    truth = tables["truth"]
    lumps = truth[truth.particle == LUMP.name]
    assert len(lumps) >= 12
    smooth = {t: gaussian_filter(v, 0.5 * LUMP.radius / m.voxel_spacing) for t, (v, m) in volumes.items()
              if t in set(lumps.tomo_id)}
    at_label, swapped, n_near = [], [], 0
    for row in lumps.itertuples(index=False):
        v, meta = smooth[row.tomo_id], volumes[row.tomo_id][1]
        q = _stored(row, meta)
        h = int(np.ceil(0.6 * LUMP.radius / meta.voxel_spacing)) + 1
        c = np.rint(q).astype(int)
        lo, hi = np.maximum(c - h, 0), np.minimum(c + h + 1, v.shape)
        box = v[tuple(slice(lo[k], hi[k]) for k in range(3))]
        if box.size == 0:  # the label is outside the volume
            continue
        peak = lo + np.array(np.unravel_index(np.argmax(box), box.shape))
        n_near += np.linalg.norm(peak - q) <= 2.0
        at_label.append(map_coordinates(v, q[:, None], order=1)[0] - np.median(v))
        qs = q[[0, 2, 1]]
        if np.all(qs >= 0) and np.all(qs <= np.asarray(v.shape) - 1):
            swapped.append(map_coordinates(v, qs[:, None], order=1)[0] - np.median(v))
    assert n_near >= 0.9 * len(lumps), f"only {n_near}/{len(lumps)} labels sit on a density peak"
    assert np.median(at_label) > 40
    assert len(swapped) >= 5 and np.median(swapped) < 0.25 * np.median(at_label)


def test_frame_mapping_is_subvoxel_exact(tmp_path: Path) -> None:
    """Noise-free solid ellipsoids (centrally symmetric, so wedge and blur keep their centre): the density centroid
    sits on original_to_stored(label) to a few hundredths of a voxel. At 8-9 Å original spacing the 'Å / spacing'
    shortcut (no half-voxel terms) would be off by about 0.23 stored voxels on every axis."""
    res = make_cohort(tmp_path / "d", classes=[ParticleClass(name="ball", radius=70.0)], n=4, seed=1,
                                 noise=0.0, spacing_range=(8.0, 9.0), z_range=(48, 64), yx_range=(96, 128),
                                 count_range=(6, 8), decoy_range=(0, 0), n_beads=(0, 0))
    truth = pd.read_csv(res.truth_path)
    errs = []
    for tomo_id, g in truth.groupby("tomo_id"):
        d = res.root / "tomograms" / tomo_id
        meta, v = read_meta(d), read_volume(d).astype(float)
        rad = 70.0 / meta.voxel_spacing + 1
        h = int(np.ceil(rad)) + 1
        for row in g.itertuples(index=False):
            q = _stored(row, meta)
            lo = np.rint(q).astype(int) - h
            hi = lo + 2 * h + 1
            if np.any(lo < 0) or np.any(hi > v.shape):
                continue
            idx = np.stack(np.meshgrid(*[np.arange(lo[k], hi[k]) for k in range(3)], indexing="ij"), -1)
            p = v[tuple(slice(lo[k], hi[k]) for k in range(3))]
            r = np.linalg.norm(idx - q, axis=-1)
            w = np.clip(p - np.median(p[r > rad]), 0, None) * (r <= rad)
            errs.append((w[..., None] * idx).sum((0, 1, 2)) / w.sum() - q)
    errs = np.array(errs)
    assert len(errs) >= 10
    assert np.all(np.abs(errs.mean(axis=0)) < 0.06), errs.mean(axis=0)
    assert np.abs(errs).max() < 0.3


# ----------------------------------------------------------------------------------------------------------------
# what the classes look like


def test_apo_ferritin_centre_darker_than_rim_in_the_cohort(tables: dict[str, pd.DataFrame], volumes) -> None:
    def profile(df: pd.DataFrame, radius: float) -> tuple[float, float]:
        centre, rim = [], []
        for row in df.itertuples(index=False):
            v, meta = volumes[row.tomo_id]
            q = _stored(row, meta)
            dirs = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=float)
            pts = q + dirs * 0.8 * radius / meta.voxel_spacing
            centre.append(map_coordinates(v, q[:, None], order=1)[0])
            rim.append(map_coordinates(v, pts.T, order=1).mean())
        return float(np.mean(centre)), float(np.mean(rim))

    apo = tables["truth"][tables["truth"].particle == "apo-ferritin"]
    c, r = profile(apo, 60.0)
    assert len(apo) >= 12 and c < r - 15, (c, r)
    dec = tables["decoys"][tables["decoys"].mimics == "apo-ferritin"]
    c, r = profile(dec, 60.0)  # its decoys are solid spheres
    assert len(dec) >= 2 and c > r, (c, r)


def _blurred(name, seed=0, decoy=None, cls=None) -> np.ndarray:
    return gaussian_filter(render_template(cls or name, 16.0, seed=seed, decoy=decoy), 0.7)


def _features(v: np.ndarray, radius_vox: float) -> dict[str, float]:
    """Crude shape features of a template centred on its middle voxel."""
    c = v.shape[0] // 2
    idx = np.stack(np.meshgrid(*[np.arange(s) - c for s in v.shape], indexing="ij"), -1).astype(float)
    r = np.linalg.norm(idx, axis=-1)
    w = np.clip(v, 0, None)
    mass = w.sum()
    flat = idx.reshape(-1, 3)
    cov = (flat * w.reshape(-1, 1)).T @ flat / mass
    ev, evec = np.linalg.eigh(cov)
    # density along the longest axis at 0.45 radius on either side, and around the in-plane circle at 0.54 radius
    ax = evec[:, 2]
    lobes = map_coordinates(v, np.stack([c + s * 0.45 * radius_vox * ax for s in (-1, 1)], 1), order=1)
    u, w2 = evec[:, 2], evec[:, 1]
    ang = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    circle = c + 0.54 * radius_vox * (np.cos(ang)[:, None] * u + np.sin(ang)[:, None] * w2)
    ring = map_coordinates(v, circle.T, order=1)
    return {
        "centre_rel": float(v[c, c, c] / v.max()),
        "asym": float(np.linalg.norm(v - v[::-1, ::-1, ::-1]) / np.linalg.norm(v)),
        "elong": float(ev[2] / ev[1]),
        "flat": float(ev[0] / ev[2]),
        "waist": float(v[c, c, c] / lobes.min()),
        "ring_mod": float((ring.max() - ring.min()) / ring.max()),
        "peak_r": float(r.flat[np.argmax(v)]) * 16.0,
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_every_class_looks_like_itself_and_not_like_its_decoys(seed: int) -> None:
    f = {name: _features(_blurred(name, seed), BUILTIN_CLASSES[name].radius / 16.0) for name in CLASS_SHAPES}
    f["lump"] = _features(_blurred(None, seed, cls=LUMP), LUMP.radius / 16.0)
    decoy = {(name, k): _features(_blurred(name, seed, decoy=k), BUILTIN_CLASSES[name].radius / 16.0)
             for name, shape in CLASS_SHAPES.items() for k in DECOY_SHAPES[shape]}

    # apo-ferritin: a hollow shell (its decoy is a solid sphere)
    assert f["apo-ferritin"]["centre_rel"] < 0.5 < decoy["apo-ferritin", "sphere"]["centre_rel"]
    # virus-like particle: a hollow shell too, more than twice apo-ferritin's size
    assert f["virus-like-particle"]["centre_rel"] < 0.5 < decoy["virus-like-particle", "sphere"]["centre_rel"]
    assert f["virus-like-particle"]["peak_r"] > 2 * f["apo-ferritin"]["peak_r"]
    # ribosome: two unequal lobes, not centrally (let alone radially) symmetric; its decoy blob is
    assert f["ribosome"]["asym"] > 0.3 and decoy["ribosome", "blob"]["asym"] < 0.05
    # beta-galactosidase: four blobs in a flat square, hollow in the middle; its ring decoy is flat and hollow too
    # but the same all the way round
    bg = f["beta-galactosidase"]
    assert bg["flat"] < 0.5 and bg["centre_rel"] < 0.5 and bg["ring_mod"] > 0.3
    assert decoy["beta-galactosidase", "ring"]["ring_mod"] < 0.1
    # thyroglobulin: elongated with a waist; its decoy rod is elongated without one
    assert f["thyroglobulin"]["elong"] > 2 and f["thyroglobulin"]["waist"] < 0.85
    assert decoy["thyroglobulin", "rod"]["elong"] > 2 and decoy["thyroglobulin", "rod"]["waist"] > 0.95
    # beta-amylase: a compact solid blob with a groove on one side; its decoy is two beads in a row, symmetric
    ba, db = f["beta-amylase"], decoy["beta-amylase", "dumbbell"]
    assert ba["centre_rel"] > 0.7 and ba["asym"] > 0.2 and ba["elong"] < 2
    assert db["centre_rel"] < 0.65 and db["asym"] < 0.05 and db["elong"] > 2.5
    # motor: body + rod + hook, asymmetric; its decoys are symmetric
    assert f["motor"]["asym"] > 0.3
    assert all(decoy["motor", k]["asym"] < 0.05 for k in DECOY_SHAPES["motor"])
    # a user class: a solid ellipsoid (its decoy is a hollow vesicle)
    assert f["lump"]["centre_rel"] > 0.95 and f["lump"]["asym"] < 0.05
    vesicle = _features(gaussian_filter(render_template(LUMP, 16.0, seed=seed, decoy="vesicle"), 0.7), 90 / 16)
    assert vesicle["centre_rel"] < 0.3

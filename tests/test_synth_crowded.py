"""The crowded world (``make_cohort(..., world="crowded")``): files and columns, determinism, species and their
look-alikes, no overlaps, planted errors of every kind where their kind says, the SNR option, refusals, the CLI."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from scipy.spatial import cKDTree
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from byu.labels.classes import BUILTIN_CLASSES
from byu.labels.formats import read_picks, read_version_file
from byu.report import planted_errors_fixed
from byu.synth import CROWDED_CLASSES, ERROR_KINDS, Cohort, make_cohort, render_template
from byu.synth.geometry import rotations
from byu.synth.imaging import Optics, filtered_signal, image_snr
from byu.synth.species import catalogue
from byu.synth.writers import CROWDED_DECOY_COLUMNS, CROWDED_ERROR_COLUMNS, PICK_COLUMNS, TOMOGRAM_COLUMNS
from byu.tomo import grid
from byu.tomo.io import iter_tomograms, read_meta, read_volume

N = 2
SEED = 3
MID = {"z_range": (64, 64), "yx_range": (128, 128), "error_fraction": 0.5}  # ~10 ribosomes per tomogram
TINY = {"z_range": (32, 32), "yx_range": (64, 64), "void_count": (1, 1), "void_radius": (250.0, 280.0)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    return make_cohort(tmp_path_factory.mktemp("crowded") / "data", world="crowded", n=N, seed=SEED, **MID)


@pytest.fixture(scope="module")
def tables(cohort: Cohort) -> dict[str, pd.DataFrame]:
    assert cohort.tomograms_path is not None and cohort.errors_path is not None and cohort.decoys_path is not None
    return {
        "truth": pd.read_csv(cohort.truth_path),
        "noisy": pd.read_csv(cohort.noisy_path),
        "tomograms": pd.read_csv(cohort.tomograms_path),
        "errors": pd.read_csv(cohort.errors_path, keep_default_na=False, na_values={
            c: [""] for c in CROWDED_ERROR_COLUMNS if c.startswith(("true_", "label_"))}),
        "decoys": pd.read_csv(cohort.decoys_path),
        "species": pd.DataFrame(json.loads((cohort.root / "synth" / "species.json").read_text())),
    }


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _angstrom(df: pd.DataFrame, tomograms: pd.DataFrame, cols=("z", "y", "x")) -> np.ndarray:
    spacing = df["tomo_id"].map(tomograms.set_index("tomo_id")["voxel_spacing"]).to_numpy(float)
    return df.loc[:, list(cols)].to_numpy(float) * spacing[:, None]


def _objects(tables: dict[str, pd.DataFrame], tomo_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions (Å) and radii of every particle (labeled or not) and bead of a tomogram."""
    t, d, tomos = tables["truth"], tables["decoys"], tables["tomograms"]
    radius = dict(zip(tables["species"]["name"], tables["species"]["radius"], strict=True))
    t, d = t[t.tomo_id == tomo_id], d[d.tomo_id == tomo_id]
    r_t = t["particle"].map({c: BUILTIN_CLASSES[c].radius for c in CROWDED_CLASSES}).to_numpy(float)
    beads = d["kind"] == "gold"
    r_d = np.where(beads, 45.0, d["species"].map(radius).fillna(0.0).to_numpy(float))  # beads: 45-60 Å
    return np.vstack([_angstrom(t, tomos), _angstrom(d, tomos)]), np.concatenate([r_t, r_d])


# ----------------------------------------------------------------------------------------------------------------
# files, determinism


def test_files_and_columns(cohort: Cohort, tables: dict[str, pd.DataFrame]) -> None:
    synth = cohort.root / "synth"
    assert sorted(p.name for p in synth.iterdir()) == sorted([
        "truth_picks.csv", "labels_noisy_picks.csv", "tomograms.csv", "planted_errors.csv", "decoys.csv",
        "classes.json", "species.json"])
    assert cohort.world == "crowded" and cohort.class_names == list(CROWDED_CLASSES)  # the default classes
    assert cohort.truth_path == synth / "truth_picks.csv" and cohort.noisy_path == synth / "labels_noisy_picks.csv"
    assert cohort.classes_path == synth / "classes.json" and cohort.truth_canonical_path is None
    assert list(tables["truth"].columns) == list(tables["noisy"].columns) == PICK_COLUMNS
    assert list(tables["tomograms"].columns) == TOMOGRAM_COLUMNS
    assert list(tables["errors"].columns) == CROWDED_ERROR_COLUMNS
    assert list(tables["decoys"].columns) == CROWDED_DECOY_COLUMNS
    assert json.loads(cohort.classes_path.read_text()) == [BUILTIN_CLASSES[c].model_dump(mode="json")
                                                           for c in CROWDED_CLASSES]
    for path in (cohort.truth_path, cohort.noisy_path):
        assert len(read_picks(path)) == len(pd.read_csv(path))
    assert [t for t, _ in iter_tomograms(cohort.root / "tomograms")] == cohort.tomo_ids == [
        f"synth_{i:03d}" for i in range(N)]
    for _, d in iter_tomograms(cohort.root / "tomograms"):
        meta = read_meta(d)
        assert meta.shape == (64, 128, 128) and meta.original_spacing == 10.0 and meta.voxel_spacing == 16.0
        assert grid.resampled_shape(meta.original_shape, meta.original_spacing, 16.0) == meta.shape
        src = meta.source["synth_crowded"]
        assert src["seed"] == SEED and src["classes"] == list(CROWDED_CLASSES) and src["species"] == 12
        assert src["snr"] == 0.1 and abs(src["snr_measured"] - 0.1) < 1e-4
        assert 57.0 <= src["tilt_deg"] <= 63.0 and 35000.0 <= src["defocus_A"] <= 55000.0
        assert len(list(d.glob("slice_*.jpg"))) == 64
    truth = tables["truth"].merge(tables["tomograms"], on="tomo_id", suffixes=("", "_t"))
    for ax, dim in (("z", "Z"), ("y", "Y"), ("x", "X")):
        assert ((truth[ax] >= 0) & (truth[ax] <= truth[dim] - 1)).all()
    key = list(zip(tables["truth"]["tomo_id"], tables["truth"]["particle"], strict=True))
    assert key == sorted(key)


def test_counts_and_crowding(cohort: Cohort, tables: dict[str, pd.DataFrame]) -> None:
    truth, decoys = tables["truth"], tables["decoys"]
    assert cohort.particles_by_class == truth["particle"].value_counts().reindex(CROWDED_CLASSES).to_dict()
    per_tomo = truth.groupby(["tomo_id", "particle"]).size()
    assert per_tomo.min() >= 5 and per_tomo.xs("apo-ferritin", level="particle").min() >= 50  # crowded
    looks = decoys[decoys["kind"] == "lookalike"]
    assert cohort.decoys_by_class == {c: int((looks["mimics"] == c).sum()) for c in CROWDED_CLASSES}
    assert cohort.extra["n_beads"] == int((decoys["kind"] == "gold").sum()) > 0
    assert all(0.15 < f <= 0.4 for f in cohort.extra["sphere_fraction"])  # 0.30 of the cytosol (less voids)
    assert sum(cohort.extra["unplaced_by_species"].values()) == 0  # every drawn particle fits
    assert cohort.extra["snr_measured"] == pytest.approx([0.1] * N, rel=1e-4)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    args = dict(world="crowded", n=2, seed=7, **TINY)
    a, b = make_cohort(tmp_path / "a", **args), make_cohort(tmp_path / "b", **args)
    da, db = _tree_digest(a.root), _tree_digest(b.root)
    assert da == db and sum(k.endswith(".jpg") for k in da) == 64
    c = make_cohort(tmp_path / "c", **{**args, "seed": 8})
    dc = _tree_digest(c.root)
    assert dc["synth/truth_picks.csv"] != da["synth/truth_picks.csv"]

    def species(c: Cohort) -> list[dict]:  # without the counts per tomogram
        return [{k: v for k, v in s.items() if k != "per_tomogram"}
                for s in json.loads((c.root / "synth" / "species.json").read_text())]

    assert species(c) == species(a)  # the species come from species_seed, not the cohort's seed
    assert species(make_cohort(tmp_path / "d", **{**args, "species_seed": 1})) != species(a)


# ----------------------------------------------------------------------------------------------------------------
# species


def test_species_and_lookalikes(cohort: Cohort, tables: dict[str, pd.DataFrame]) -> None:
    sp, truth, noisy, decoys = tables["species"], tables["truth"], tables["noisy"], tables["decoys"]
    assert len(sp) == 12 and sp["name"].is_unique and len(cohort.extra["species"]) == 12
    labeled = sp[sp["label"].notna()]
    assert labeled["name"].tolist() == labeled["label"].tolist() == list(CROWDED_CLASSES)
    assert labeled["radius"].tolist() == [BUILTIN_CLASSES[c].radius for c in CROWDED_CLASSES]
    unlabeled = sp[sp["label"].isna()]
    for c in CROWDED_CLASSES:  # at least two unlabeled species of similar size per class
        r = BUILTIN_CLASSES[c].radius
        like = unlabeled[(unlabeled["mimics"] == c)]
        assert len(like) >= 2 and ((like["radius"] - r).abs() <= 0.2 * r).all(), c
    assert set(sp["shape"]) <= {"c2", "c3", "c4", "c5", "c6", "c7", "d2", "d3", "d4", "tetrahedral", "octahedral",
                                "icosahedral", "filament", "multidomain"}
    assert ((unlabeled["radius"] >= 48.0) & (unlabeled["radius"] <= 180.0)).all()
    # unlabeled species are never in the truth or labels: look-alike rows carry their species; the truth and the
    # noisy labels name only the labeled classes, and the only labels on a look-alike are planted false ones
    looks = decoys[decoys["kind"] == "lookalike"]
    assert set(looks["species"]) == set(unlabeled["name"])
    assert {s: int(v) for s, v in looks["species"].value_counts().items()} == {
        r["name"]: sum(r["per_tomogram"]) for _, r in unlabeled.iterrows() if sum(r["per_tomogram"])}
    assert set(truth["particle"]) == set(noisy["particle"]) == set(CROWDED_CLASSES)
    tomos = tables["tomograms"]
    false = tables["errors"][tables["errors"]["kind"] == "false"]
    for tomo_id in cohort.tomo_ids:
        lk = _angstrom(looks[looks.tomo_id == tomo_id], tomos)
        t = _angstrom(truth[truth.tomo_id == tomo_id], tomos)
        assert cKDTree(lk).query(t)[0].min() > 1.0
        n = _angstrom(noisy[noisy.tomo_id == tomo_id], tomos)
        on_look = int((cKDTree(lk).query(n)[0] < 1e-3).sum())
        assert on_look == int((false.tomo_id == tomo_id).sum()) > 0


def test_every_copy_of_a_species_looks_alike() -> None:
    """A species' identity is fixed (the same layout whatever the cohort seed or class order); its copies differ
    by orientation only (the same radial mass profile); apo-ferritin's 24-mer cage is hollow."""
    classes = [BUILTIN_CLASSES[c] for c in CROWDED_CLASSES]
    a, b = catalogue(classes, 12, 0), catalogue(classes[::-1], 12, 0)
    for s in a[:3]:
        t = next(x for x in b if x.name == s.name)
        assert np.array_equal(s.params["centres"], t.params["centres"]) and s.shape == t.shape
    apo = a[1]
    assert apo.name == "apo-ferritin" and apo.shape == "octahedral" and len(apo.params["sigmas"]) >= 24
    profiles = []
    for rot in rotations(np.random.default_rng(0), 3):
        v = render_template("apo-ferritin", 4.0, species=apo, rotation=rot, box=41)
        c = np.stack(np.meshgrid(*[np.arange(41) - 20] * 3, indexing="ij"), -1)
        r = np.linalg.norm(c, axis=-1) * 4.0
        profiles.append([float(v[(r >= lo) & (r < lo + 10)].mean()) for lo in range(0, 80, 10)])
        assert v[20, 20, 20] < 0.3 * v.max()  # hollow
    p = np.array(profiles)
    assert np.abs(p - p[0]).max() < 0.05 * p.max()


def test_particles_never_overlap(cohort: Cohort, tables: dict[str, pd.DataFrame]) -> None:
    for tomo_id in cohort.tomo_ids:
        pos, radii = _objects(tables, tomo_id)
        pairs = cKDTree(pos).query_pairs(2 * radii.max(), output_type="ndarray")
        d = np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1)
        assert np.all(d >= radii[pairs[:, 0]] + radii[pairs[:, 1]] - 0.05), tomo_id


# ----------------------------------------------------------------------------------------------------------------
# planted errors


def _rows(df: pd.DataFrame, cols) -> list[tuple]:
    return sorted(tuple(r) for r in df.loc[:, list(cols)].itertuples(index=False))


def test_noisy_labels_are_truth_plus_planted_errors(cohort: Cohort, tables: dict[str, pd.DataFrame]) -> None:
    truth, noisy, errors = tables["truth"], tables["noisy"], tables["errors"]
    cols = ["tomo_id", "particle", "z", "y", "x"]
    expect = Counter(_rows(truth, cols))
    for e in errors.itertuples(index=False):
        true = (e.tomo_id, e.particle, e.true_z, e.true_y, e.true_x)
        label = (e.tomo_id, e.particle, e.label_z, e.label_y, e.label_x)
        if e.kind in ("missed", "shifted"):
            assert expect.get(true, 0) >= 1, f"{e.kind} error of a particle that is not in the truth: {true}"
            expect[true] -= 1
        if e.kind in ("false", "shifted", "background"):
            expect[label] = expect.get(label, 0) + 1
    assert Counter(_rows(noisy, cols)) == +expect
    # about error_fraction of each tomogram's labels of each class, of every kind, as the result counts them
    per = truth.groupby(["tomo_id", "particle"]).size()
    got = errors.groupby(["tomo_id", "particle"]).size()
    assert all(got.get(k, 0) == round(0.5 * v) for k, v in per.items())
    for c in CROWDED_CLASSES:
        assert set(errors.loc[errors.particle == c, "kind"]) == set(ERROR_KINDS), c
        assert cohort.errors_by_class[c] == {k: int(((errors.particle == c) & (errors.kind == k)).sum())
                                             for k in ERROR_KINDS}
    assert cohort.error_kinds == ERROR_KINDS and cohort.n_errors == len(errors)
    assert (errors.loc[errors.kind != "false", "on"] == "").all()


@pytest.mark.slow
def test_planted_errors_are_where_their_kind_says(tables: dict[str, pd.DataFrame]) -> None:
    tomos, truth, noisy, decoys = tables["tomograms"], tables["truth"], tables["noisy"], tables["decoys"]
    species = tables["species"].set_index("name")
    errors = tables["errors"]
    for e in errors.itertuples(index=False):
        c = BUILTIN_CLASSES[e.particle]
        m = c.match_radius_A
        s = float(tomos.set_index("tomo_id").loc[e.tomo_id, "voxel_spacing"])
        def sel(df: pd.DataFrame, e=e) -> pd.DataFrame:
            return df[(df.tomo_id == e.tomo_id) & (df.particle == e.particle)]

        t_a, n_a = _angstrom(sel(truth), tomos), _angstrom(sel(noisy), tomos)
        true_a = np.array([e.true_z, e.true_y, e.true_x]) * s
        label_a = np.array([e.label_z, e.label_y, e.label_x]) * s
        if e.kind == "missed":
            assert np.isnan(label_a).all() and np.min(np.linalg.norm(t_a - true_a, axis=1)) < 1e-6
            assert np.min(np.linalg.norm(n_a - true_a, axis=1)) > m, "a missed particle is labelled"
            continue
        assert np.min(np.linalg.norm(n_a - label_a, axis=1)) < 1e-6, "a planted label is not in the labels"
        others = n_a[np.linalg.norm(n_a - label_a, axis=1) > 1e-6]
        assert np.min(np.linalg.norm(others - label_a, axis=1)) >= m, "two labels of the class within a match radius"
        if e.kind == "false":  # on the centre of a look-alike of similar size, away from the class's particles
            assert np.isnan(true_a).all()
            d = decoys[(decoys.tomo_id == e.tomo_id) & (decoys.species == e.on)]
            assert len(d) and np.min(np.linalg.norm(_angstrom(d, tomos) - label_a, axis=1)) < 1e-6
            assert species.loc[e.on, "mimics"] == e.particle and pd.isna(species.loc[e.on, "label"])
            assert abs(species.loc[e.on, "radius"] / c.radius - 1) <= 0.2
            assert np.min(np.linalg.norm(t_a - label_a, axis=1)) >= 1.5 * m
        elif e.kind == "background":  # far from every particle of any species and every bead
            assert np.isnan(true_a).all()
            pos, radii = _objects(tables, e.tomo_id)
            assert np.min(np.linalg.norm(pos - label_a, axis=1)) >= 2 * m - 0.1
            shape = tomos.set_index("tomo_id").loc[e.tomo_id, ["Z", "Y", "X"]].to_numpy(float)
            assert np.all(label_a >= 0) and np.all(label_a <= (shape - 1) * s)
        else:  # shifted far from its particle, where no particle of the class is
            dist = np.linalg.norm(label_a - true_a)
            assert 2 * m <= dist <= 2 * m + c.radius + 0.1, (e.particle, dist)
            rest = t_a[np.linalg.norm(t_a - true_a, axis=1) > 1e-6]
            assert len(rest) == 0 or np.min(np.linalg.norm(rest - label_a, axis=1)) >= 2 * m
            assert np.min(np.linalg.norm(n_a - true_a, axis=1)) > m, "a shifted particle is still labelled"


def test_report_scores_background_like_false(cohort: Cohort) -> None:
    """``planted_errors_fixed``: the truth fixes every planted error (background labels included), the noisy
    labels none."""
    errors = pd.read_csv(cohort.errors_path)  # type: ignore[arg-type]
    truth = read_version_file(cohort.truth_path, tomograms=cohort.tomograms_path)
    noisy = read_version_file(cohort.noisy_path, tomograms=cohort.tomograms_path)
    assert planted_errors_fixed(errors, truth)["fixed"].all()
    assert not planted_errors_fixed(errors, noisy)["fixed"].any()
    assert (errors["kind"] == "background").any()


# ----------------------------------------------------------------------------------------------------------------
# imaging: SNR, visibility


def test_image_snr_sets_the_noise_from_the_signal() -> None:
    """SNR = var(filtered signal) / var(noise) over the volume, exactly as asked, whatever the signal's scale."""
    rng = np.random.default_rng(0)
    vol = np.zeros((32, 48, 40), np.float32)
    vol[8:20, 10:30, 12:22] = 1.0
    optics = Optics(defocus_a=40000.0)
    clean = filtered_signal(vol, spacing=16.0, tilt_deg=60.0, optics=optics)
    for snr in (0.05, 0.1, 1.0):
        for scale in (1.0, 7.0):
            im = image_snr(vol * scale, np.random.default_rng(1), spacing=16.0, tilt_deg=60.0, optics=optics, snr=snr)
            assert im.snr == pytest.approx(snr, rel=1e-4)
            assert im.signal_var == pytest.approx(float(np.var(clean * scale)), rel=1e-3)
            assert im.volume.dtype == np.uint8 and im.volume.shape == vol.shape
    mask = np.zeros(vol.shape, dtype=bool)
    mask[:, :24] = True  # only these voxels' signal counts (the crowded world leaves out the gold beads)
    im = image_snr(vol, rng, spacing=16.0, tilt_deg=60.0, optics=optics, snr=0.5, signal_mask=mask)
    assert im.signal_var == pytest.approx(float(np.var(clean[mask])), rel=1e-3) and im.snr == pytest.approx(0.5)
    with pytest.raises(ValueError):
        image_snr(vol, rng, spacing=16.0, tilt_deg=60.0, optics=optics, snr=0.0)


def test_snr_option_sets_the_noise_level(tmp_path: Path) -> None:
    """Through the cohort: the same tomogram at three SNRs; its correlation with the noise-free one (SNR 1e6) is
    about sqrt(SNR / (1 + SNR)), as documented (clipping to uint8 and JPEG move it a little)."""
    vols = {}
    for snr in (1e6, 1.0, 0.1):
        c = make_cohort(tmp_path / f"s{snr}", world="crowded", n=1, seed=4, snr=snr, **TINY)
        vols[snr] = read_volume(c.root / "tomograms" / c.tomo_ids[0]).astype(float).ravel()
        assert read_meta(c.root / "tomograms" / c.tomo_ids[0]).source["synth_crowded"]["snr_measured"] == \
            pytest.approx(snr, rel=1e-4)
    for snr in (1.0, 0.1):
        r = np.corrcoef(vols[snr], vols[1e6])[0, 1]
        assert abs(r - np.sqrt(snr / (1 + snr))) < 0.06, (snr, r)


def test_particles_visible_but_lookalikes_confusable(cohort: Cohort, tables: dict[str, pd.DataFrame]) -> None:
    """At the default SNR (0.1), apo-ferritin's filtered template (best of 12 orientations) correlates with the
    noisy volume better at its particles than at empty background, and less clearly so against its look-alikes."""
    apo = next(s for s in catalogue([BUILTIN_CLASSES[c] for c in CROWDED_CLASSES], 12, 0) if s.name == "apo-ferritin")
    tomo_id = cohort.tomo_ids[0]
    d = cohort.root / "tomograms" / tomo_id
    meta, vol = read_meta(d), read_volume(d).astype(np.float32)
    src = meta.source["synth_crowded"]
    optics = Optics(defocus_a=src["defocus_A"])
    h, sp = 4, meta.voxel_spacing
    bank = []
    for rot in rotations(np.random.default_rng(2), 12):
        t = render_template("apo-ferritin", sp, species=apo, rotation=rot, box=2 * h + 9)
        t = filtered_signal(t, spacing=sp, tilt_deg=src["tilt_deg"], optics=optics)[4:-4, 4:-4, 4:-4]
        bank.append((t - t.mean()) / np.linalg.norm(t - t.mean()))

    def score(points_a: np.ndarray) -> np.ndarray:
        out = []
        for p in points_a:
            c = np.rint(p / sp).astype(int)
            if np.any(c - h < 0) or np.any(c + h + 1 > vol.shape):
                continue
            q = vol[c[0] - h:c[0] + h + 1, c[1] - h:c[1] + h + 1, c[2] - h:c[2] + h + 1]
            q = (q - q.mean()) / (np.linalg.norm(q - q.mean()) + 1e-9)
            out.append(max(float((t * q).sum()) for t in bank))
        return np.asarray(out)

    tomos = tables["tomograms"]
    truth, decoys = tables["truth"], tables["decoys"]
    true = score(_angstrom(truth[(truth.tomo_id == tomo_id) & (truth.particle == "apo-ferritin")], tomos))
    looks = score(_angstrom(decoys[(decoys.tomo_id == tomo_id) & (decoys.mimics == "apo-ferritin")], tomos))
    pos, radii = _objects(tables, tomo_id)
    cand = np.random.default_rng(3).random((4000, 3)) * (np.asarray(meta.shape) - 1) * sp
    far = cKDTree(pos).query(cand)[0] >= 2 * 60.0 + 60.0
    background = score(cand[far][:150])

    def auc(a, b):
        return roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b])

    assert len(true) >= 50 and len(looks) >= 50 and len(background) >= 20
    assert auc(true, background) > 0.8
    assert 0.5 < auc(true, looks) < auc(true, background)


# ----------------------------------------------------------------------------------------------------------------
# arguments, CLI


def test_motor_is_refused_in_the_crowded_world(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="motor is not a class of the crowded world"):
        make_cohort(tmp_path / "a", world="crowded", classes=["motor", "ribosome"], n=1, **TINY)
    assert not (tmp_path / "a").exists()


def test_bad_arguments(tmp_path: Path) -> None:
    for kw, match in (({"species": 3}, "species"), ({"snr": 0.0}, "snr"), ({"snr": float("nan")}, "snr"),
                      ({"crowding": 0.6}, "crowding"), ({"crowding": 0.0}, "crowding"),
                      ({"error_fraction": 1.5}, "error_fraction"), ({"classes": ["nonesuch"]}, "nonesuch")):
        with pytest.raises(ValueError, match=match):
            make_cohort(tmp_path / "a", world="crowded", n=1, **{**TINY, **kw})
    with pytest.raises(TypeError, match="noise"):  # the default world's noise level; this world takes snr
        make_cohort(tmp_path / "a", world="crowded", n=1, noise=0.3)
    assert not (tmp_path / "a").exists()


def _app() -> typer.Typer:
    from byu.cli.synth import synth_command

    app = typer.Typer()
    app.command("synth")(synth_command)
    app.command("noop")(lambda: None)  # two commands, so "synth" is addressed by name as under `byu`
    return app


def test_cli_crowded(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(_app(), ["synth", "--world", "crowded", "--n", "1", "--seed", "2", "--species", "9",
                                         "--snr", "0.2", "--crowding", "0.25", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 1 tomograms (crowded world" in result.output
    assert set(pd.read_csv(out / "synth" / "truth_picks.csv")["particle"]) == set(CROWDED_CLASSES)
    assert len(json.loads((out / "synth" / "species.json").read_text())) == 9
    src = read_meta(out / "tomograms" / "synth_000").source["synth_crowded"]
    assert (src["seed"], src["species"], src["snr"], src["crowding"]) == (2, 9, 0.2, 0.25)
    for args, hint in ((["--world", "dense"], "--world"), (["--world", "crowded", "--snr", "0"], "--snr"),
                       (["--world", "crowded", "--crowding", "0.9"], "--crowding"),
                       (["--world", "crowded", "--species", "3"], "--species"),
                       (["--species", "12"], "--species"), (["--snr", "0.1"], "--snr"),
                       (["--world", "crowded", "--noise", "0.2"], "--noise"),
                       (["--world", "crowded", "--classes", "motor,ribosome"], "--classes")):
        bad = CliRunner().invoke(_app(), ["synth", "--n", "1", "--out", str(tmp_path / "bad"), *args])
        assert bad.exit_code != 0 and hint in bad.output, (args, bad.output)
    assert not (tmp_path / "bad").exists()

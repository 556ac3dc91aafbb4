"""The label verifier: a crop classifier cross-fitted by tomogram finds a false label on a look-alike decoy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from byu.labels.classes import ParticleClass
from byu.labels.model import LabelSet
from byu.labels.store import LabelStore
from byu.paths import DataRoot
from byu.review.round import ReviewRound
from byu.review.settings import MiningSettings
from byu.review.verify import (
    Examples,
    VerifierSettings,
    _batch_size,
    collect_examples,
    cross_fitted_scores,
    hard_negatives,
    label_verification,
    merge_examples,
    second_stage,
)
from byu.tomo.io import TomoMeta, tomo_dir, write_tomogram

N, SPACING, R_VOX = 40, 16.0, 4
BLOB = ParticleClass(name="blob", radius=R_VOX * SPACING)
# the cohort's negatives are all decoys: the second stage learns from every one of them
# three runs as the product averages (one run's outcome varies with its initialisation); fewer, shorter steps
FAST = VerifierSettings(crop=16, steps=100, seeds=3, folds=4, min_examples=4, hard_negatives=1.0, device="cpu")


def _ball(vol: np.ndarray, c, r: float, value: float, shell: bool) -> None:
    z, y, x = np.ogrid[:N, :N, :N]
    d = np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
    vol[(d <= r) & ((d >= r - 1.5) if shell else True)] += value


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Eight tomograms, each with two solid particles (labeled) and two hollow decoys (predicted, unlabeled); in
    t0 one decoy is labeled by mistake. Labels in a 2x finer frame than the stored tomograms."""
    root = DataRoot(tmp_path_factory.mktemp("verify"))
    rng = np.random.default_rng(0)
    tomos, picks, preds = [], [], []
    for t in range(8):
        tid = f"t{t}"
        vol = rng.normal(0, 20, (N, N, N))
        spots = [(10, 10, 10), (10, 28, 28), (28, 10, 28), (28, 28, 10)]
        for k, c in enumerate(spots):
            _ball(vol, c, R_VOX, 90, shell=k >= 2)
            labeled = k < 2 or (t == 0 and k == 2)
            if labeled:
                picks.append({"tomo_id": tid, "particle": "blob", "z": 2 * c[0], "y": 2 * c[1], "x": 2 * c[2]})
            preds.append({"tomo_id": tid, "particle": "blob", "z": c[0], "y": c[1], "x": c[2], "conf": 0.8,
                          "models": "m/fold0", "voxel_spacing": SPACING})
        write_tomogram(tomo_dir(root.tomograms, tid), np.clip(vol + 128, 0, 255).astype(np.uint8),
                       TomoMeta(tomo_id=tid, shape=(N, N, N), voxel_spacing=SPACING, original_shape=(2 * N,) * 3,
                                original_spacing=SPACING / 2))
        tomos.append({"tomo_id": tid, "Z": 2 * N, "Y": 2 * N, "X": 2 * N, "voxel_spacing": SPACING / 2})
    labels = LabelSet.build(pd.DataFrame(tomos), pd.DataFrame(picks), (BLOB,))
    return root, labels, pd.DataFrame(preds)


def test_examples_are_labels_and_far_unlabeled_predictions(cohort):
    root, labels, preds = cohort
    ex = collect_examples(labels, preds, root.tomograms, particle="blob", tomo_ids=labels.tomo_ids, threshold=0.05,
                          settings=FAST)
    # trained on: 17 labels and 15 unlabeled decoys (t0's labeled decoy is no negative); scored only: the 17
    # predictions on labels
    assert ex.crops.shape == (len(labels.picks) + 15 + 17, 16, 16, 16)
    assert int(ex.train.sum()) == len(labels.picks) + 15 and not ex.target[~ex.train].any()
    assert int(ex.target.sum()) == len(labels.picks) and (ex.pick[ex.target == 0] == -1).all()
    assert ((ex.pick >= 0) == (ex.prediction < 0)).all()
    assert sorted(ex.prediction[ex.prediction >= 0]) == list(preds.index)  # every prediction once
    assert np.allclose(ex.position_A[ex.pick == 0], labels.picks_angstrom()[0])
    false_row = labels.picks.index[(labels.picks.tomo_id == "t0") & (labels.picks.z == 56)][0]
    assert ex.crops[ex.pick == false_row][0, 8, 8, 8] < ex.crops[ex.pick == 0][0, 8, 8, 8]  # hollow vs solid centre


@pytest.mark.slow
def test_the_false_label_on_a_decoy_is_the_least_verified(cohort):
    root, labels, preds = cohort
    steps: list = []
    both = label_verification(labels, preds, root.tomograms, tomo_ids=labels.tomo_ids, settings=FAST,
                              progress=lambda *a: steps.append(a))
    v = both.labels
    false_row = labels.picks.index[(labels.picks.tomo_id == "t0") & (labels.picks.z == 56)][0]
    assert v.notna().all() and v.idxmin() == false_row
    assert v.drop(false_row).min() > v[false_row] + 0.2
    # predictions too: those on solid particles look like the labels, those on hollow decoys do not
    solid = preds.index % 4 < 2
    assert both.predictions.notna().all() and both.predictions[solid].min() > both.predictions[~solid].max()
    assert steps[-1] == ("blob", 2 * FAST.folds * FAST.seeds, 2 * FAST.folds * FAST.seeds)  # two stages
    with pytest.raises(ValueError, match="multiple of 8"):
        VerifierSettings(crop=20)
    with pytest.raises(ValueError, match="at most crop"):
        VerifierSettings(crop=16, hard_crop=24)
    sparse = label_verification(labels, preds[preds.tomo_id == "t0"], root.tomograms, tomo_ids=labels.tomo_ids,
                                settings=FAST)
    assert sparse.labels.isna().all() and sparse.predictions.isna().all()  # one negative: too few to verify


def test_the_second_stage_learns_from_the_negatives_both_the_models_and_the_first_stage_believe(cohort):
    root, labels, preds = cohort
    settings = VerifierSettings(crop=16, hard_crop=8, min_examples=2, hard_negatives=0.25)
    ex = collect_examples(labels, preds.assign(conf=np.linspace(0.1, 0.9, len(preds))), root.tomograms,
                          particle="blob", tomo_ids=labels.tomo_ids, threshold=0.05, settings=settings)
    assert np.isnan(ex.confidence[ex.pick >= 0]).all() and (ex.confidence[ex.pick < 0] >= 0.1).all()
    first = np.full(len(ex.target), 0.5)
    negatives = np.flatnonzero(ex.train & (ex.target == 0))
    first[negatives[:3]] = 0.99  # believed by the first stage, but weakly by the fold models (low rows)
    hard = hard_negatives(ex, first, settings)
    belief = first * np.nan_to_num(ex.confidence)
    # round(0.25 x 17 labels) = 4 of the trained-on negatives, the most believed by both; never a label, never a
    # prediction near a label (scored only)
    assert len(hard) == 4 and set(hard) <= set(negatives)
    assert belief[hard].min() >= belief[np.setdiff1d(negatives, hard)].max()
    second = second_stage(ex, hard, settings)
    assert second.crops.shape[1:] == (8, 8, 8) and np.array_equal(second.crops[0], ex.crops[0, 4:12, 4:12, 4:12])
    assert set(np.flatnonzero(second.train)) == set(np.flatnonzero(ex.target == 1)) | set(hard)
    assert len(hard_negatives(ex, first, settings.model_copy(update={"hard_negatives": 0.0}))) == 0  # stage off
    few = ex.train & (ex.target == 0)
    few[negatives[1:]] = False  # one trained-on negative left: fewer than min_examples, no second stage
    assert len(hard_negatives(Examples(**{**ex.__dict__, "train": (ex.target == 1) | few}), first, settings)) == 0


def _data_root(cohort, path: Path, preds: pd.DataFrame | None = None) -> tuple[DataRoot, Path]:
    """A data root holding the cohort's labels as ``gt`` (tomograms linked) and its predictions as ``run.csv``."""
    root, labels, all_preds = cohort
    data = DataRoot(path)
    data.tomograms.parent.mkdir(parents=True, exist_ok=True)
    data.tomograms.symlink_to(root.tomograms, target_is_directory=True)
    LabelStore(data.labels).put("gt", labels, producer="test")
    data.predictions.mkdir(parents=True, exist_ok=True)
    csv = data.predictions / "run.csv"
    (all_preds if preds is None else preds).to_csv(csv, index=False)
    return data, csv


@pytest.mark.slow
def test_a_round_reviews_the_least_verified_label_and_reuses_its_verification(cohort, tmp_path):
    data, csv = _data_root(cohort, tmp_path / "data")
    rnd = ReviewRound(data, "r1")
    settings = MiningSettings(verifier=FAST, verify_quantile=0.05, galleries=False, confirm_threshold=None,
                              fp_threshold=None)
    result = rnd.mine(labels_version="gt", predictions=csv, settings=settings)
    cases = result.cases
    assert result.scores.classes["blob"].verifier_auc > 0.9  # it separates its labels: it is given its quantile
    unverified = [c for c in cases if c.reason == "unverified"]
    assert [(c.tomo_id, c.candidates[0].z) for c in unverified] == [("t0", 56.0)]
    table = pd.read_csv(rnd.paths.verification)
    assert list(table.columns) == ["source", "row", "tomo_id", "particle", "z", "y", "x", "verification"]
    assert table["source"].tolist() == ["label"] * 17 + ["prediction"] * 32  # every prediction was verified
    assert table[table.source == "label"]["row"].tolist() == list(range(17))
    stamp = rnd.paths.verification.stat().st_mtime_ns
    again = rnd.mine(labels_version="gt", predictions=csv, settings=settings)
    assert again.cases == cases and again.scores.classes == result.scores.classes  # the separation is kept too
    assert rnd.paths.verification.stat().st_mtime_ns == stamp  # same inputs: reused, not retrained
    mining = json.loads(rnd.paths.mining.read_text())
    assert mining["settings"]["verifier"]["crop"] == 16 and mining["classes"]["blob"]["verify"] > 0
    assert mining["classes"]["blob"]["verifier_auc"] == result.scores.classes["blob"].verifier_auc


@pytest.mark.slow
def test_cli_mine_verifies_and_hides_weak_fp_cases(cohort, tmp_path):
    """``byu review mine --verify --fp-threshold``: wired through (here one tomogram's predictions: too few
    negatives to train, so nothing is verified and the round says so in mining.json)."""
    _, _, preds = cohort
    few = preds[preds.tomo_id == "t0"].assign(conf=[0.9, 0.9, 0.9, 0.2])
    data, csv = _data_root(cohort, tmp_path / "data", few)
    env = {**os.environ, "BYU_DATA": str(data.root), "COLUMNS": "200"}
    args = ["review", "mine", "r1", "--labels", "gt", "--predictions", str(csv), "--no-render", "--verify",
            "--offer-recall", "0.5", "--fp-threshold", "0.5"]
    proc = subprocess.run([sys.executable, "-c", "from byu.cli import main; main()", *args], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rnd = ReviewRound(data, "r1")
    mining = json.loads(rnd.paths.mining.read_text())
    blob = mining["classes"]["blob"]
    assert mining["settings"]["verify"] and blob["verify"] is None and blob["verifier_auc"] is None
    assert mining["settings"]["offer_recall"] == 0.5
    assert blob["fp"] == 0.5
    assert pd.read_csv(rnd.paths.verification)["verification"].isna().all()
    # t0's unlabeled decoy at 0.2 is below 0.5: no FP case, and its three labels are matched
    assert [c.kind for c in rnd.cases() if c.tomo_id == "t0"] == []
    bad = subprocess.run([sys.executable, "-c", "from byu.cli import main; main()", *args[:-1], "half"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "--fp-threshold" in bad.stderr + bad.stdout


@pytest.mark.slow
def test_one_network_verifies_every_class_with_a_head_each(cohort):
    """Two classes with opposite positives (solid particles for one, hollow ones for the other) in one run: each
    class's head learns its own, from one shared network per fold."""
    root, labels, preds = cohort
    solid = collect_examples(labels, preds, root.tomograms, particle="blob", tomo_ids=labels.tomo_ids,
                             threshold=0.05, settings=FAST)
    hollow = Examples(**{**solid.__dict__, "target": 1 - solid.target, "cls": None})
    hollow.train = solid.train.copy()
    merged = merge_examples([solid, hollow])
    assert list(np.bincount(merged.classes)) == [len(solid.target)] * 2
    quick = FAST.model_copy(update={"seeds": 1, "steps": 60, "folds": 2})
    scores = cross_fitted_scores(merged, quick, seed=0)
    a, b = scores[merged.classes == 0], scores[merged.classes == 1]
    pos, neg = solid.train & (solid.target == 1), solid.train & (solid.target == 0)  # labels, far decoys
    assert np.nanmean(a[pos]) > np.nanmean(a[neg]) + 0.3  # class 0: the solid ones
    assert np.nanmean(b[neg]) > np.nanmean(b[pos]) + 0.3  # class 1, same crops: the hollow ones
    assert _batch_size(FAST, 1) == FAST.batch and _batch_size(FAST, 3) == 2 * FAST.batch \
        and _batch_size(FAST, 6) == 3 * FAST.batch  # six classes cost 1.5x three, not 2x


def test_scoring_in_chunks_equals_one_pass_per_view():
    """Scoring batches each chunk's four views in one pass; it equals scoring every crop's views one at a time by
    its class's head (the network is in eval mode: batch norm uses its running statistics)."""
    import torch

    from byu.review.verify import SCORE_CHUNK, _net, _score

    torch.manual_seed(0)
    model = _net(torch.nn, heads=3).eval()
    rng = np.random.default_rng(0)
    crops = rng.normal(size=(2 * SCORE_CHUNK + 5, 16, 16, 16)).astype(np.float32)
    cls = rng.integers(0, 3, len(crops))
    got = _score(model, crops, cls, device=torch.device("cpu"), layout=torch.channels_last_3d)
    with torch.no_grad():
        want = [np.mean([torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(v))[None, None]))[0, c].item()
                         for v in (x, x[::-1], x[:, ::-1], x[:, :, ::-1])]) for x, c in zip(crops, cls, strict=True)]
    assert got.shape == (len(crops),) and np.ptp(got) > 1e-3  # the scores differ from crop to crop
    np.testing.assert_allclose(got, want, atol=1e-6)

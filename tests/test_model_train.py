"""Training, checkpoints, resuming, out-of-fold prediction, ensembles and the errors around them.

A ``micro`` model trains in seconds on four small tomograms with bright motor-like particles.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import byu.model  # noqa: F401, I001  (first: sets OMP_WAIT_POLICY before torch loads)
from byu.cli.model import app
from byu.errors import InputError, NotFoundError, VersionExistsError
from byu.labels.formats import write_labels
from byu.labels.store import LabelStore
from byu.metrics import score_multi
from byu.model.decode import read_predictions
from byu.model.infer import load_checkpoint, predict, read_checkpoint
from byu.model.train import train_folds
from byu.paths import DataRoot
from tests.model_helpers import make_root, two_fold_split

FAST = {"epochs": 3, "steps_per_epoch": 8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("model") / "data"
    info = make_root(root, n=4, seed=1)
    LabelStore(DataRoot(root).labels).put("gt", info["labels"], producer="test")
    split = two_fold_split(sorted(info["labels"]["tomo_id"]), root / "cv" / "gt" / "skf2_rd0.json")
    paths = train_folds(root, "gt", split, folds="all", config="micro", run_name="r1", seed=0, device="cpu", **FAST)
    return {"root": root, "split": split, "paths": paths, **info}


@pytest.mark.slow
def test_training_learns_and_checkpoints_say_what_they_were_trained_on(trained):
    root, paths = trained["root"], trained["paths"]
    assert [p.name for p in paths] == ["fold0.pt", "fold1.pt"]
    assert not list((root / "models" / "r1").glob("*.last.pt"))  # removed once a fold is finished
    store = LabelStore(DataRoot(root).labels)
    for k, p in enumerate(paths):
        ck = read_checkpoint(p)
        assert ck["fold"] == k and ck["run"] == "r1" and ck["finished"]
        assert ck["labels"]["version"] == "gt" and ck["labels"]["sha256"] == store.manifest("gt").sha256
        assert ck["split"]["sha256"] and ck["split"]["num_folds"] == 2
        assert ck["classes"] == ["motor"] and ck["spacing"] == 32.0 and ck["config"]["name"] == "micro"
        split = json.loads(trained["split"].read_text())
        assert ck["train_ids"] == split["folds"][k]["train"] and ck["val_ids"] == split["folds"][k]["val"]
        hist = ck["metrics"]["history"]
        assert len(hist) == FAST["epochs"]
        assert hist[-1]["loss"] < hist[0]["loss"]  # it learns
        assert {"val_fbeta", "val_byu_fbeta", "val_best_threshold"} <= set(hist[-1])


@pytest.mark.slow
def test_oof_prediction_finds_the_motors_in_the_original_frame(trained):
    root = trained["root"]
    out = predict(root, ["r1"], mode="oof", tta="flips", threshold=0.05, device="cpu")
    assert out == root / "predictions" / "r1_oof.csv"
    pred = read_predictions(out)
    manifest = json.loads(out.with_suffix(".json").read_text())
    split = json.loads(trained["split"].read_text())
    # every tomogram is predicted by the fold model that did not train on it
    for k, fold in enumerate(split["folds"]):
        for t in fold["val"]:
            assert manifest["assignment"][t] == [f"r1/fold{k}"]
            assert set(pred.loc[pred["tomo_id"] == t, "models"]) <= {f"r1/fold{k}"}
    assert set(pred["voxel_spacing"]) == {10.0}  # the original frame
    s = score_multi(pred, trained["labels"], threshold=0.3)
    assert s.total.recall == 1.0, s.as_dict()
    # the top prediction of each tomogram is its motor, within 1000 Å
    for t, motors in trained["truth_a"].items():
        top = pred[pred["tomo_id"] == t].sort_values("conf").iloc[-1]
        d = np.linalg.norm(motors - top[["z", "y", "x"]].to_numpy(dtype=float) * 10.0, axis=1).min()
        assert d < 1000.0 and top["conf"] > 0.3


@pytest.mark.slow
def test_same_seed_same_weights_and_resume_equals_uninterrupted(trained, tmp_path):
    root = trained["root"]
    opts = {**FAST, "hard_fraction": 0.3, "hard_threshold": 0.001}  # hard negatives are mined and must resume too
    a = train_folds(root, "gt", trained["split"], folds=0, config="micro", run_name="det_a", device="cpu", **opts)[0]
    assert read_checkpoint(a)["metrics"]["history"][0]["hard_negatives"] > 0

    class Stop(Exception):
        pass

    def stop_after_first_epoch(e):
        if e["stage"] == "epoch" and e["epoch"] == 0:
            raise Stop

    with pytest.raises(Stop):
        train_folds(root, "gt", trained["split"], folds=0, config="micro", run_name="det_b", device="cpu",
                    progress=stop_after_first_epoch, **opts)
    last = root / "models" / "det_b" / "fold0.last.pt"
    assert last.exists() and read_checkpoint(last)["epoch"] == 0 and "optimizer" in read_checkpoint(last)
    b = train_folds(root, "gt", trained["split"], folds=0, config="micro", run_name="det_b", device="cpu", **opts)[0]
    sa, sb = read_checkpoint(a)["state_dict"], read_checkpoint(b)["state_dict"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], msg=k)
    assert not last.exists()
    # a finished run is kept as is; other settings under the same name are refused
    mtime = b.stat().st_mtime_ns
    train_folds(root, "gt", trained["split"], folds=0, config="micro", run_name="det_b", device="cpu", **opts)
    assert b.stat().st_mtime_ns == mtime
    with pytest.raises(VersionExistsError, match="different settings"):
        train_folds(root, "gt", trained["split"], folds=0, config="micro", run_name="det_b", device="cpu",
                    epochs=4, steps_per_epoch=8)


def test_ensembles_and_modes(trained):
    root = trained["root"]
    # two runs (the same run twice here) ensemble; mode all uses every model on every tomogram
    out = predict(root, ["r1", root / "models" / "r1"], mode="all", tta="none", threshold=0.05, tomo_ids=["t00"],
                  out_name="ens", device="cpu")
    pred = read_predictions(out)
    assert set(pred["tomo_id"]) == {"t00"}
    assert set(pred["models"]) == {"r1/fold0;r1/fold1;r1/fold0;r1/fold1"}
    # restrict by a label version and a motor count
    out = predict(root, ["r1"], mode="oof", tta="none", labels="gt", max_motors=1, out_name="lab", device="cpu")
    assert sorted(json.loads(out.with_suffix(".json").read_text())["tomo_ids"]) == ["t00", "t01", "t02", "t03"]
    with pytest.raises(InputError, match="no tomograms"):
        predict(root, ["r1"], mode="oof", labels="gt", max_motors=0, tomo_ids=["t00"], device="cpu")


def test_bad_inputs_are_clear_and_write_nothing(trained, tmp_path):
    root = trained["root"]
    preds_dir = root / "predictions"
    before = sorted(p.name for p in preds_dir.glob("*")) if preds_dir.exists() else []
    # a tomogram seen by every model has no out-of-fold prediction
    ck = read_checkpoint(root / "models" / "r1" / "fold0.pt")
    seen = root / "models" / "seen"
    seen.mkdir(parents=True)
    torch.save({**ck, "train_ids": ["t00", "t01", "t02", "t03"], "val_ids": []}, seen / "fold0.pt")
    with pytest.raises(InputError, match="no out-of-fold prediction"):
        predict(root, ["seen"], mode="oof", tomo_ids=["t00"], device="cpu")
    predict(root, ["seen"], mode="oof", tomo_ids=["t00"], allow_seen=True, out_name="seen_ok", device="cpu")
    # checkpoints whose classes or spacing differ cannot be ensembled
    other = root / "models" / "other"
    other.mkdir()
    cfg = dict(ck["config"], classes=[{"name": "ribosome", "radius": 150.0, "weight": 1.0}])
    torch.save({**ck, "config": cfg}, other / "fold0.pt")
    with pytest.raises(InputError, match="classes"):
        predict(root, ["r1", "other"], mode="all", device="cpu")
    torch.save({**ck, "config": dict(ck["config"], spacing=24.0)}, other / "fold0.pt")
    with pytest.raises(InputError, match="spacing"):
        predict(root, ["r1", "other"], mode="all", device="cpu")
    (other / "fold0.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        predict(root, ["other"], mode="all", device="cpu")
    with pytest.raises(NotFoundError, match="no finished fold"):
        predict(root, [root / "models" / "missing"], mode="all", device="cpu")
    # a tomogram missing on disk
    with pytest.raises(NotFoundError, match="t99"):
        predict(root, ["r1"], mode="all", tomo_ids=["t00", "t99"], device="cpu")
    after = sorted(p.name for p in preds_dir.glob("*"))
    assert [n for n in after if n not in before] == ["seen_ok.csv", "seen_ok.json"]
    # training: an empty fold, a split from another label set, a missing tomogram -> nothing written
    models_before = sorted(p.name for p in (root / "models").iterdir())
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"num_folds": 1, "random_state": 0, "folds": [{"train": [], "val": ["t00"]}]}))
    with pytest.raises(InputError, match="no training tomograms"):
        train_folds(root, "gt", empty, config="micro", run_name="bad1", device="cpu")
    none = tmp_path / "none.json"
    none.write_text(json.dumps({"num_folds": 0, "random_state": 0, "folds": []}))
    with pytest.raises(InputError, match="folds"):
        train_folds(root, "gt", none, config="micro", run_name="bad2", device="cpu")
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"num_folds": 1, "random_state": 0, "folds": [{"train": ["zz"], "val": []}]}))
    with pytest.raises(InputError, match="missing from labels"):
        train_folds(root, "gt", foreign, config="micro", run_name="bad3", device="cpu")
    labels = trained["labels"].copy()
    extra = pd.concat([labels, labels.iloc[[0]].assign(tomo_id="t99")], ignore_index=True)
    path = write_labels(extra, tmp_path / "extra.csv")
    split = two_fold_split(sorted(extra["tomo_id"]), tmp_path / "s.json")
    with pytest.raises(NotFoundError, match="t99"):
        train_folds(root, path, split, config="micro", run_name="bad4", device="cpu")
    with pytest.raises(InputError, match="fold"):
        train_folds(root, "gt", trained["split"], folds=5, config="micro", run_name="bad5", device="cpu")
    wrong = labels.assign(voxel_spacing=labels["voxel_spacing"] * 2)  # coordinates in another frame
    with pytest.raises(InputError, match="spans") as info:
        train_folds(root, write_labels(wrong, tmp_path / "wrong.csv"), trained["split"], config="micro",
                    run_name="bad6", device="cpu")
    assert info.value.field == "voxel_spacing" and info.value.row == 2
    assert sorted(p.name for p in (root / "models").iterdir()) == models_before


def test_cli_train_predict_score(trained):
    root = trained["root"]
    runner = CliRunner()
    env = {"BYU_DATA": str(root)}
    r = runner.invoke(app, ["train", "--labels", "gt", "--split", str(trained["split"]), "--fold", "1",
                            "--config", "micro", "--run", "cli", "--epochs", "1", "--steps", "2", "--set", "lr=0.005",
                            "--device", "cpu"],
                      env=env)
    assert r.exit_code == 0, r.output
    assert (root / "models" / "cli" / "fold1.pt").exists() and not (root / "models" / "cli" / "fold0.pt").exists()
    assert read_checkpoint(root / "models" / "cli" / "fold1.pt")["config"]["lr"] == 0.005
    r = runner.invoke(app, ["predict", "--models", "r1", "--mode", "oof", "--tta", "flips", "--threshold", "0.05",
                            "--tomos", "t00,t03", "--out", "cli_oof", "--device", "cpu"], env=env)
    assert r.exit_code == 0, r.output
    pred_path = root / "predictions" / "cli_oof.csv"
    assert set(read_predictions(pred_path)["tomo_id"]) <= {"t00", "t03"}
    r = runner.invoke(app, ["score", str(pred_path), "gt", "--json"], env=env)
    assert r.exit_code == 0, r.output
    scores = json.loads(r.output[r.output.index("["):])
    assert [s["metric"] for s in scores] == ["byu", "multi"]
    assert all(s["n_tomograms"] == 2 for s in scores)  # scoped to the predicted tomograms (manifest)
    assert scores[0]["score"] == 1.0


@pytest.mark.slow
def test_multi_class_picks_train_and_predict_one_channel_per_class(trained, tmp_path):
    root = trained["root"]
    rows = []
    for t, motors in trained["truth_a"].items():
        for p in motors:
            # the same particles as two classes, in voxels of a 16 Å frame (not the 10 Å original)
            rows.append({"tomo_id": t, "particle": "big" if t in ("t00", "t02") else "small",
                         "z": p[0] / 16.0, "y": p[1] / 16.0, "x": p[2] / 16.0, "voxel_spacing": 16.0})
    picks = tmp_path / "picks.csv"
    pd.DataFrame(rows).to_csv(picks, index=False)
    classes = [{"name": "big", "radius": 250.0}, {"name": "small", "radius": 200.0}]
    paths = train_folds(root, picks, trained["split"], folds=0, config="micro", run_name="mc", device="cpu",
                        classes=classes, epochs=2, steps_per_epoch=4)
    model = load_checkpoint(paths[0])
    assert model.config.class_names == ["big", "small"]
    assert model.net(torch.zeros(1, 1, 32, 48, 48)).shape[1] == 2
    out = predict(root, ["mc"], mode="all", tta="none", threshold=0.01, tomo_ids=["t00", "t01"], device="cpu")
    assert set(read_predictions(out)["particle"]) <= {"big", "small"}
    bad = tmp_path / "bad.csv"
    pd.DataFrame(rows).assign(particle="ribosome").to_csv(bad, index=False)
    with pytest.raises(InputError, match="not among the model's classes"):
        train_folds(root, bad, trained["split"], folds=0, config="micro", run_name="mc2", device="cpu",
                    classes=classes)

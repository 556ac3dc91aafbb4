"""byu.metrics against hand-computed cases."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from byu.errors import InputError
from byu.labels.table import make_table
from byu.metrics import CZII_WEIGHTS, fbeta, score_byu, score_czii, score_multi


def preds(rows, spacing=10.0):
    return pd.DataFrame([{"tomo_id": t, "particle": p, "z": z, "y": y, "x": x, "conf": c, "models": "m",
                          "voxel_spacing": spacing} for t, p, z, y, x, c in rows])


def test_fbeta_formula():
    # P = 1/2, R = 1/3: F2 = 5 * (1/6) / (4 * 1/2 + 1/3) = 5/14
    assert fbeta(1, 1, 2, 2.0) == pytest.approx(5 / 14)
    assert fbeta(0, 0, 0, 2.0) == 0.0
    assert fbeta(3, 0, 0, 4.0) == 1.0


def test_byu_metric_matches_the_competition_docstring_example():
    # The competition's own example: labels [none, 250, 100, 200], predictions [100, 251, 600, none] at 10 Å.
    labels = make_table([
        ("t0", (1000, 1000, 1000), 10.0, []),
        ("t1", (1000, 1000, 1000), 10.0, [[250, 250, 250]]),
        ("t2", (1000, 1000, 1000), 10.0, [[100, 100, 100]]),
        ("t3", (1000, 1000, 1000), 10.0, [[200, 200, 200]]),
    ])
    p = preds([("t0", "motor", 100, 100, 100, 0.9), ("t1", "motor", 251, 251, 251, 0.9),
               ("t2", "motor", 600, 600, 600, 0.9)])
    s = score_byu(p, labels)
    # t0 FP, t1 TP, t2 far -> counted as a miss only, t3 FN
    assert (s.total.tp, s.total.fp, s.total.fn) == (1, 1, 2)
    assert s.score == pytest.approx(0.3571428571428571)


def test_byu_metric_uses_only_the_top_prediction_and_angstrom_distances():
    labels = make_table([
        ("a", (100, 100, 100), 20.0, [[50, 50, 50]]),          # motor at 1000 Å each axis
        ("b", (100, 100, 100), 10.0, [[10, 10, 10], [90, 90, 90]]),
    ])
    # a: top prediction is 60 voxels * 20 Å = 1200 Å on z -> 200 Å away: TP; the lower one far away is ignored
    # b: prediction in a different frame (5 Å/voxel): (180, 180, 180) * 5 = 900 Å -> matches motor 2 (900 Å)
    p = pd.concat([
        preds([("a", "motor", 60, 50, 50, 0.8), ("a", "motor", 0, 0, 0, 0.3)], spacing=20.0),
        preds([("b", "motor", 180, 180, 180, 0.7)], spacing=5.0),
    ])
    s = score_byu(p, labels)
    assert (s.total.tp, s.total.fp, s.total.fn) == (2, 0, 0)
    # with a threshold above both of a's predictions, a becomes a miss
    s = score_byu(p, labels, threshold=0.9)
    assert (s.total.tp, s.total.fp, s.total.fn) == (0, 0, 2)
    # distance exactly at the radius counts; just beyond does not
    p2 = preds([("a", "motor", 100, 50, 50, 0.9)], spacing=20.0)  # 50 voxels * 20 Å = 1000 Å away
    assert score_byu(p2, labels, tomo_ids=["a"]).total.tp == 1
    assert score_byu(p2, labels, tomo_ids=["a"], radius=999.0).total.fn == 1


def test_multi_metric_one_to_one_matching():
    labels = make_table([
        ("a", (100, 100, 100), 10.0, [[10, 10, 10], [90, 90, 90]]),
        ("b", (100, 100, 100), 10.0, []),
    ])
    p = preds([
        ("a", "motor", 11, 10, 10, 0.9),   # TP (10 Å from motor 1)
        ("a", "motor", 12, 10, 10, 0.8),   # second prediction on motor 1 (1370 Å from motor 2): FP, one-to-one
        ("a", "motor", 90, 90, 70, 0.2),   # below the threshold: ignored -> motor 2 is a FN
        ("b", "motor", 5, 5, 5, 0.7),      # FP in a tomogram without motors
    ])
    s = score_multi(p, labels, threshold=0.5)
    assert (s.total.tp, s.total.fp, s.total.fn) == (1, 2, 1)
    assert s.total.precision == pytest.approx(1 / 3)
    assert s.total.recall == pytest.approx(1 / 2)
    assert s.score == pytest.approx(5 * (1 / 3) * (1 / 2) / (4 * (1 / 3) + 1 / 2))
    # lowering the threshold adds the third prediction, 200 Å from motor 2: TP
    s = score_multi(p, labels, threshold=0.1)
    assert (s.total.tp, s.total.fp, s.total.fn) == (2, 2, 0)
    # restricting to b only
    s = score_multi(p, labels, threshold=0.5, tomo_ids=["b"])
    assert (s.total.tp, s.total.fp, s.total.fn) == (0, 1, 0)
    with pytest.raises(InputError, match="no labels"):
        score_multi(p, labels, tomo_ids=["nope"])


def test_czii_metric_per_class_and_weighted():
    # labels in Å (no voxel_spacing column); predictions at 10 Å/voxel
    labels = pd.DataFrame([
        {"tomo_id": "e1", "particle": "apo-ferritin", "z": 1000.0, "y": 1000.0, "x": 1000.0},
        {"tomo_id": "e1", "particle": "apo-ferritin", "z": 2000.0, "y": 2000.0, "x": 2000.0},
        {"tomo_id": "e1", "particle": "ribosome", "z": 3000.0, "y": 3000.0, "x": 3000.0},
        {"tomo_id": "e2", "particle": "thyroglobulin", "z": 500.0, "y": 500.0, "x": 500.0},
    ])
    p = preds([
        ("e1", "apo-ferritin", 102, 100, 100, 0.9),   # 20 Å away: within 60 * 0.5 = 30 Å -> TP
        ("e1", "apo-ferritin", 204, 200, 200, 0.9),   # 40 Å away: beyond 30 Å -> FP; that particle is a FN
        ("e1", "ribosome", 307, 300, 300, 0.9),       # 70 Å: within 150 * 0.5 = 75 Å -> TP
        ("e1", "ribosome", 300, 307, 300, 0.9),       # same ribosome again: Kaggle counts TP once, this is FP
        ("e2", "thyroglobulin", 50, 50, 50, 0.9),     # exact -> TP
        ("e9", "ribosome", 0, 0, 0, 0.9),             # tomogram not in the solution: ignored
    ])
    s = score_czii(p, labels)
    apo, ribo, thyro = s.per_class["apo-ferritin"], s.per_class["ribosome"], s.per_class["thyroglobulin"]
    assert (apo.tp, apo.fp, apo.fn) == (1, 1, 1)
    assert (ribo.tp, ribo.fp, ribo.fn) == (1, 1, 0)
    assert (thyro.tp, thyro.fp, thyro.fn) == (1, 0, 0)
    f4 = lambda p_, r_: 17 * p_ * r_ / (16 * p_ + r_)  # noqa: E731
    want = (f4(0.5, 0.5) * 1 + f4(0.5, 1.0) * 1 + 1.0 * 2) / sum(CZII_WEIGHTS.values())
    assert s.score == pytest.approx(want)
    assert apo.precision == 0.5 and apo.recall == 0.5
    assert math.isclose(sum(CZII_WEIGHTS.values()), 7.0)


def test_czii_metric_voxel_labels_and_unknown_class():
    labels = pd.DataFrame([{"tomo_id": "e1", "particle": "ribosome", "z": 100.0, "y": 100.0, "x": 100.0,
                            "voxel_spacing": 10.0}])
    s = score_czii(preds([("e1", "ribosome", 100, 100, 100, 0.9)]), labels)
    assert s.per_class["ribosome"].tp == 1
    assert s.score == pytest.approx(1 / 7)  # only the ribosome (weight 1) is in the solution
    with pytest.raises(InputError, match="unknown particle"):
        score_czii(preds([("e1", "motor", 1, 1, 1, 0.9)]), labels)


def test_score_cli_czii_and_multi_on_picks(tmp_path):
    import json

    from typer.testing import CliRunner

    from byu.cli.model import app

    labels = tmp_path / "picks.csv"
    pd.DataFrame([{"tomo_id": "e1", "particle": "ribosome", "z": 100.0, "y": 100.0, "x": 100.0,
                   "voxel_spacing": 10.0},
                  {"tomo_id": "e1", "particle": "apo-ferritin", "z": 50.0, "y": 50.0, "x": 50.0,
                   "voxel_spacing": 10.0}]).to_csv(labels, index=False)
    pred = tmp_path / "pred.csv"
    preds([("e1", "ribosome", 103, 100, 100, 0.9), ("e1", "apo-ferritin", 60, 50, 50, 0.9)]).to_csv(pred, index=False)
    r = CliRunner().invoke(app, ["score", str(pred), str(labels), "--json", "--data-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)[0]
    # ribosome 30 Å off (within 75 Å): TP; apo-ferritin 100 Å off (beyond 30 Å): FP + FN
    assert s["metric"] == "czii" and s["per_class"]["ribosome"]["tp"] == 1 and s["per_class"]["apo-ferritin"]["fp"] == 1
    assert s["score"] == pytest.approx(1 / 7)
    r = CliRunner().invoke(app, ["score", str(pred), str(labels), "--metric", "multi", "--json",
                                 "--data-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["tp"] == 1


def test_picks_without_spacing_are_angstrom_for_training_and_metrics_alike(tmp_path):
    import pandas as pd

    from byu.metrics import read_picks_table as read_picks_frame
    from byu.model.data import particles_from_labels

    p = tmp_path / "picks.csv"
    p.write_text("tomo_id,particle,z,y,x\nTS_1,ribosome,1000,2000,3000\n")
    picks = read_picks_frame(p)
    assert picks["voxel_spacing"].tolist() == [1.0]
    pts = particles_from_labels(picks, ["ribosome"])
    assert pts["voxel_spacing"].tolist() == [1.0]
    # a prediction at the same place in Å (voxel 100 at 10 Å) is a hit for the CZII metric
    pred = pd.DataFrame([{"tomo_id": "TS_1", "particle": "ribosome", "z": 100, "y": 200, "x": 300, "conf": 0.9,
                          "models": "m", "voxel_spacing": 10.0}])
    from byu.metrics import score_czii

    result = score_czii(pred, picks)
    assert result.per_class["ribosome"].tp == 1

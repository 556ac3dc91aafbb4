"""Mining cases, the scripted reviewer, and applying decisions as a new version (exactly the tagged changes)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from byu.errors import InputError, NotFoundError
from byu.labels.store import LabelStore
from byu.labels.table import make_table
from byu.paths import DataRoot
from byu.review.apply import apply_decisions
from byu.predictions import read_predictions
from byu.review.match import find_cases
from byu.review.decisions import write_decisions
from byu.review.round import apply_round, mine_round
from byu.review.scripted import scripted_decisions

SHAPE = (300, 300, 300)  # 3000 Å a side at 10 Å; predictions at 5 Å exercise the frame conversion


def pred(tomo, z, y, x, conf, spacing=5.0):
    return dict(tomo_id=tomo, particle="motor", z=z, y=y, x=x, conf=conf, models="run/fold0", voxel_spacing=spacing)


@pytest.fixture
def world():
    truth = make_table([
        ("missed", SHAPE, 10.0, [[50, 50, 50]]),
        ("ok", SHAPE, 10.0, [[20, 20, 20]]),
        ("false", SHAPE, 10.0, []),
        ("shifted", SHAPE, 10.0, [[10, 10, 10]]),
        ("deep", SHAPE, 10.0, [[90, 90, 90]]),
    ])
    noisy = make_table([
        ("missed", SHAPE, 10.0, []),
        ("ok", SHAPE, 10.0, [[20, 20, 20]]),
        ("false", SHAPE, 10.0, [[70, 70, 70]]),
        ("shifted", SHAPE, 10.0, [[10, 10, 200]]),  # 1900 Å from the truth: beyond the 1000 Å radius
        ("deep", SHAPE, 10.0, [[90, 90, 90]]),
    ])
    preds = pd.DataFrame([
        pred("missed", 100, 100, 100, 0.9),      # = (50,50,50) at 10 Å: the missed motor
        pred("missed", 20, 180, 20, 0.1),        # a weak false candidate
        pred("ok", 40, 40, 41, 0.8),             # matches the label
        pred("shifted", 20, 20, 20, 0.7),        # the real position of the shifted label
        pred("shifted", 150, 150, 150, 0.06),    # weak junk
    ])
    return truth, noisy, preds


def test_find_cases_kinds_candidates_and_frames(world):
    truth, noisy, preds = world
    cases = find_cases(noisy, preds, label_version="gt", prediction_run="oof", threshold=0.05, max_candidates=5)
    by = {c.tomo_id: c for c in cases.itertuples(index=False)}
    assert set(by) == {"missed", "false", "shifted", "deep"}
    assert (by["missed"].kind, by["false"].kind, by["shifted"].kind, by["deep"].kind) == ("FP", "FN", "FN", "FN")
    cands = json.loads(by["missed"].candidates)
    assert [c["k"] for c in cands] == [1, 2] and cands[0]["conf"] == 0.9
    assert [cands[0]["z"], cands[0]["y"], cands[0]["x"]] == [50.0, 50.0, 50.0]  # converted to the label frame
    shifted = json.loads(by["shifted"].candidates)
    assert shifted[0] == {"k": 0, "z": 10.0, "y": 10.0, "x": 200.0, "conf": None, "source": "label"}
    assert [c["conf"] for c in shifted[1:]] == [0.7, 0.06]
    # review order: score descending, index and ids follow it; names carry the case
    assert list(cases["index"]) == [1, 2, 3, 4]
    assert list(cases["score"]) == sorted(cases["score"], reverse=True)
    assert by["missed"].image == f"FP-{by['missed'].index}-missed-300x300x300-spacing10.jpg"
    assert by["deep"].score == 1.0 and by["shifted"].score == pytest.approx(1 - 0.7)
    # a higher threshold hides weak predictions; fewer candidates when asked
    strict = find_cases(noisy, preds, threshold=0.5, max_candidates=1)
    assert all(len(json.loads(c)) <= 2 for c in strict["candidates"])
    with pytest.raises(NotFoundError):
        find_cases(noisy, preds, tomo_ids=["nope"])


def test_scripted_review_fixes_exactly_the_planted_errors(world):
    truth, noisy, preds = world
    cases = find_cases(noisy, preds, label_version="gt")
    dec = scripted_decisions(cases, truth)
    tags = dict(zip(cases.set_index("case_id").loc[dec.case_id, "tomo_id"], dec.tags))
    assert tags == {"missed": "1", "false": "none", "shifted": "1", "deep": "0"}
    res = apply_decisions(noisy, cases, dec, round_name="r1")
    fixed = dict(zip(res.table.tomo_id, res.table.motor_zyx))
    assert fixed == {"missed": [[50.0, 50.0, 50.0]], "ok": [[20.0, 20.0, 20.0]], "false": [],
                     "shifted": [[10.0, 10.0, 10.0]], "deep": [[90.0, 90.0, 90.0]]}
    actions = dict(zip(res.changes.tomo_id, res.changes.action))
    assert actions == {"missed": "add", "false": "remove", "shifted": "move", "deep": "keep"}
    assert res.label_changes == 3
    assert set(res.changes.case_id) == set(cases.case_id) and (res.changes.reviewer == "scripted").all()


def test_unreviewed_and_unsure_change_nothing_and_bad_tags_are_rejected(world):
    truth, noisy, preds = world
    cases = find_cases(noisy, preds)
    fn = cases[cases.tomo_id == "false"].case_id.iloc[0]
    fp = cases[cases.tomo_id == "missed"].case_id.iloc[0]
    dec = pd.DataFrame([{"case_id": fn, "tags": "unsure", "reviewer": "ann"}])
    res = apply_decisions(noisy, cases, dec, round_name="r1")
    assert res.table.equals(noisy) and res.unsure_cases == [fn] and len(res.unreviewed_cases) == len(cases) - 1
    for bad, words in [("0;none", "contradictory"), ("7", "showed 2 candidate"), ("maybe", "unknown tag"), ("²", "unknown tag"),
                       ("01", "unknown tag")]:
        with pytest.raises(InputError, match=words):
            apply_decisions(noisy, cases, pd.DataFrame([{"case_id": fp, "tags": bad, "reviewer": ""}]), round_name="r")
    with pytest.raises(InputError, match="unknown case"):
        apply_decisions(noisy, cases, pd.DataFrame([{"case_id": "FP-9999", "tags": "1", "reviewer": ""}]),
                        round_name="r")


def test_fn_keep_and_add_and_overrides(world):
    truth, noisy, preds = world
    cases = find_cases(noisy, preds)
    shifted = cases[cases.tomo_id == "shifted"].case_id.iloc[0]
    dec = pd.DataFrame([{"case_id": shifted, "tags": "0;1", "reviewer": "ann"}])
    overrides = pd.DataFrame([{"tomo_id": "ok", "action": "clear", "z": None, "y": None, "x": None, "note": "bad tomo"},
                              {"tomo_id": "false", "action": "add", "z": 5, "y": 5, "x": 5, "note": "seen by eye"}])
    res = apply_decisions(noisy, cases, dec, round_name="r1", overrides=overrides, overrides_source="ov.csv")
    fixed = dict(zip(res.table.tomo_id, res.table.motor_zyx))
    assert fixed["shifted"] == [[10.0, 10.0, 200.0], [10.0, 10.0, 10.0]]
    assert fixed["ok"] == [] and fixed["false"] == [[70.0, 70.0, 70.0], [5.0, 5.0, 5.0]]
    srcs = res.changes.groupby("action").source.apply(set).to_dict()
    assert srcs["remove"] == {"override:ov.csv"} and "review:r1" in srcs["add"]
    bad = pd.DataFrame([{"tomo_id": "ok", "action": "add", "z": 500, "y": 5, "x": 5, "note": ""}])
    with pytest.raises(InputError, match="outside the volume"):
        apply_decisions(noisy, cases, dec, round_name="r1", overrides=bad)


def test_round_on_disk_is_rerunnable_and_versions_immutable(tmp_path, world):
    truth, noisy, preds = world
    root = DataRoot(tmp_path / "data")
    store = LabelStore(root.labels)
    store.put("gt", noisy)
    root.predictions.mkdir(parents=True)
    preds.to_csv(root.predictions / "oof.csv", index=False)
    cases = mine_round(root, "round1", labels_version="gt", predictions=root.predictions / "oof.csv")
    again = mine_round(root, "round1", labels_version="gt", predictions=root.predictions / "oof.csv")
    assert again.equals(cases)
    with pytest.raises(InputError, match="already has different cases"):
        mine_round(root, "round1", labels_version="gt", predictions=root.predictions / "oof.csv", threshold=0.5)
    with pytest.raises(InputError, match="no decisions"):
        apply_round(root, "round1", from_version="gt", to_version="gt_v2")
    write_decisions(scripted_decisions(cases, truth), root.review / "round1" / "decisions.csv")
    manifest, result = apply_round(root, "round1", from_version="gt", to_version="gt_v2")
    assert manifest.parents == ["gt"] and manifest.extra["label_changes"] == 3
    assert sorted(store.changes("gt_v2").action) == ["add", "keep", "move", "remove"]
    apply_round(root, "round1", from_version="gt", to_version="gt_v2")  # same content: accepted
    store.put("other", truth)
    with pytest.raises(InputError, match="mined against"):
        apply_round(root, "round1", from_version="other", to_version="gt_v9")


def test_predictions_csv_validation(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("tomo_id,particle,z,y,x,conf,models,voxel_spacing\nt1,motor,1,2,3,1.7,m,10\n")
    with pytest.raises(InputError) as info:
        read_predictions(p)
    assert info.value.row == 2 and info.value.field == "conf"
    p.write_text("tomo_id,z\nt,1\n")
    with pytest.raises(InputError, match="missing column"):
        read_predictions(p)


def test_weakly_supported_labels_are_reviewed_when_asked(world):
    truth, noisy, preds = world
    weak = pd.concat([preds, pd.DataFrame([pred("false", 140, 140, 141, 0.3)])], ignore_index=True)
    plain = find_cases(noisy, weak)
    assert "false" not in set(plain.tomo_id)  # the weak prediction matches the false label: no case
    cases = find_cases(noisy, weak, confirm_threshold=0.5)
    case = cases[cases.tomo_id == "false"].iloc[0]
    assert case.kind == "FN" and case.score == pytest.approx(0.7)
    assert [c["source"] for c in json.loads(case.candidates)] == ["label"]  # the weak match is not a candidate
    assert "ok" not in set(cases.tomo_id)  # a confident match (0.8) stays confirmed
    res = apply_decisions(noisy, cases, scripted_decisions(cases, truth), round_name="r1")
    assert dict(zip(res.table.tomo_id, res.table.motor_zyx))["false"] == []


def test_override_errors_name_line_and_field_and_remove_needs_a_nearby_motor(world, tmp_path):
    from byu.review.apply import read_overrides

    truth, noisy, preds = world
    cases = find_cases(noisy, preds)
    none = pd.DataFrame(columns=["case_id", "tags", "reviewer"])
    p = tmp_path / "ov.csv"
    p.write_text("tomo_id,action,z,y,x,note\nok,add,abc,5,5,typo\nok,remove,200,200,200,far away\n")
    with pytest.raises(InputError) as info:
        apply_decisions(noisy, cases, none, round_name="r", overrides=read_overrides(p), overrides_source=str(p))
    found = {(e.row, e.field) for e in info.value.errors}
    assert found == {(2, "z"), (3, "z")}
    assert "within 1000 Å" in str(info.value)


def test_mining_without_spacing_is_a_clear_error(world):
    truth, noisy, preds = world
    with pytest.raises(InputError, match="voxel_spacing"):
        find_cases(noisy, preds.drop(columns=["voxel_spacing"]), prediction_run="oof.csv")


def test_mining_defaults_to_the_tomograms_the_run_predicted(tmp_path, world):
    truth, noisy, preds = world
    root = DataRoot(tmp_path / "data")
    LabelStore(root.labels).put("gt", noisy)
    root.predictions.mkdir(parents=True)
    preds.to_csv(root.predictions / "run.csv", index=False)
    # the run covered only two tomograms: the others were never predicted and must not become FN cases
    (root.predictions / "run.json").write_text(json.dumps({"tomo_ids": ["missed", "deep"]}))
    cases = mine_round(root, "r", labels_version="gt", predictions=root.predictions / "run.csv")
    assert set(cases.tomo_id) == {"missed", "deep"}

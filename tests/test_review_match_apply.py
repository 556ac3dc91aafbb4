"""Mining cases, the scripted reviewer, and applying decisions as a new version (exactly the tagged changes)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from byu.errors import InputError, NotFoundError
from byu.labels.formats import to_canonical
from byu.labels.model import LabelSet
from byu.labels.store import LabelStore
from byu.labels.table import make_table
from byu.predictions import read_predictions
from byu.review.apply import apply_decisions
from byu.review.cases import cases_frame, read_cases, write_cases
from byu.review.decisions import write_decisions
from byu.review.match import find_cases
from byu.review.round import ReviewRound
from byu.review.scripted import scripted_decisions
from byu.review.settings import MiningSettings
from byu.review.verify import Verification
from tests.cvat_support import multiclass_world, prediction_row, round_root

SHAPE = (300, 300, 300)  # 3000 Å a side at 10 Å; predictions at 5 Å exercise the frame conversion


pred = prediction_row

#: single-particle cases only, no label verifier, no thresholds: the mining rules one at a time
SINGLE = MiningSettings(galleries=False, verify=False, confirm_threshold=None, fp_threshold=None)


def single(**settings) -> MiningSettings:
    return MiningSettings(**{**SINGLE.model_dump(), **settings})


def mine(labels, preds, *, verification=None, tomo_ids=None, label_version="", prediction_run="", **settings):
    """The cases of ``SINGLE`` mining with ``settings`` changed."""
    return find_cases(labels, preds, settings=single(**settings), verification=verification, tomo_ids=tomo_ids,
                      label_version=label_version, prediction_run=prediction_run).cases


def verified(labels=None, predictions=None, separation=1.0) -> Verification:
    """A verifier's scores of labels and/or predictions, with the given out-of-fold separation (AUC)."""
    empty = pd.Series(dtype=float)
    lab = labels if labels is not None else empty
    return Verification(labels=lab, predictions=predictions if predictions is not None else empty,
                        separation={"motor": separation})


def motors(table) -> dict:
    return dict(zip(table.tomo_id, table.motor_zyx, strict=True))


@pytest.fixture
def world():
    truth = LabelSet.from_canonical(make_table([
        ("missed", SHAPE, 10.0, [[50, 50, 50]]),
        ("ok", SHAPE, 10.0, [[20, 20, 20]]),
        ("false", SHAPE, 10.0, []),
        ("shifted", SHAPE, 10.0, [[10, 10, 10]]),
        ("deep", SHAPE, 10.0, [[90, 90, 90]]),
    ]))
    noisy = LabelSet.from_canonical(make_table([
        ("missed", SHAPE, 10.0, []),
        ("ok", SHAPE, 10.0, [[20, 20, 20]]),
        ("false", SHAPE, 10.0, [[70, 70, 70]]),
        ("shifted", SHAPE, 10.0, [[10, 10, 200]]),  # 1900 Å from the truth: beyond the 1000 Å radius
        ("deep", SHAPE, 10.0, [[90, 90, 90]]),
    ]))
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
    cases = mine(noisy, preds, label_version="gt", prediction_run="oof", threshold=0.05, max_candidates=5)
    by = {c.tomo_id: c for c in cases}
    assert set(by) == {"missed", "false", "shifted", "deep"}
    assert (by["missed"].kind, by["false"].kind, by["shifted"].kind, by["deep"].kind) == ("FP", "FN", "FN", "FN")
    cands = by["missed"].candidates
    assert [c.k for c in cands] == [1, 2] and cands[0].conf == 0.9
    assert cands[0].zyx == [50.0, 50.0, 50.0]  # converted to the label frame
    shifted = by["shifted"].candidates
    assert shifted[0].model_dump(exclude={"tomo_id", "Z", "Y", "X", "voxel_spacing", "known"}) == {"k": 0, "particle": "motor", "z": 10.0, "y": 10.0, "x": 200.0, "conf": None,
                                       "source": "label"}
    assert [c.conf for c in shifted[1:]] == [0.7, 0.06]
    assert by["shifted"].reason == "unmatched" and by["missed"].reason == "unlabeled"
    # review order: score descending, index and ids follow it; names carry the case
    assert [c.index for c in cases] == [1, 2, 3, 4]
    assert [c.score for c in cases] == sorted((c.score for c in cases), reverse=True)
    assert by["missed"].image == f"FP-{by['missed'].index}-missed-300x300x300-spacing10.jpg"
    assert by["deep"].score == 1.0 and by["shifted"].score == pytest.approx(1 - 0.7)
    strict = mine(noisy, preds, threshold=0.5, max_candidates=1)
    assert all(len(c.candidates) <= 2 for c in strict)
    with pytest.raises(NotFoundError):
        mine(noisy, preds, tomo_ids=["nope"])


def test_cases_csv_round_trip(world, tmp_path):
    truth, noisy, preds = world
    cases = mine(noisy, preds, label_version="gt")
    path = write_cases(cases, tmp_path / "cases.csv")
    assert read_cases(path) == cases
    assert list(cases_frame(cases).columns)[:4] == ["case_id", "kind", "index", "tomo_id"]


def test_cases_from_before_multiclass_rounds_are_read_as_motor_cases(tmp_path):
    old = ("case_id,kind,index,tomo_id,image,score,label_version,prediction_run,Z,Y,X,voxel_spacing,radius_A,focus_k,"
           "candidates,labels\n"
           'FN-0001,FN,1,t1,FN-1-t1-10x20x30-spacing10.jpg,1.0,gt,oof,10,20,30,10.0,1000.0,0,'
           '"[{""k"": 0, ""z"": 1.0, ""y"": 2.0, ""x"": 3.0, ""conf"": null, ""source"": ""label""}]",'
           '"[[1.0, 2.0, 3.0]]"\n')
    (tmp_path / "cases.csv").write_text(old)
    case = read_cases(tmp_path / "cases.csv")[0]
    assert case.particle == "motor" and case.candidates[0].particle == "motor"
    assert case.labels[0].particle == "motor" and case.labels[0].x == 3.0


def test_bad_case_rows_name_line_and_field(tmp_path, world):
    truth, noisy, preds = world
    frame = cases_frame(mine(noisy, preds))
    frame.loc[1, "candidates"] = "[{not json"
    frame.loc[2, "tomo_id"] = "../evil"
    frame.to_csv(tmp_path / "cases.csv", index=False)
    with pytest.raises(InputError) as info:
        read_cases(tmp_path / "cases.csv")
    assert {(e.row, e.field) for e in info.value.errors} == {(3, "candidates"), (4, "tomo_id")}


def test_scripted_review_fixes_exactly_the_planted_errors(world):
    truth, noisy, preds = world
    cases = mine(noisy, preds, label_version="gt")
    dec = scripted_decisions(cases, truth)
    tags = {c.tomo_id: t for c, t in zip(cases, dec.tags, strict=True)}
    assert tags == {"missed": "1", "false": "none", "shifted": "1", "deep": "0"}
    res = apply_decisions(noisy, cases, dec, round_name="r1")
    assert motors(to_canonical(res.labels)) == {"missed": [[50.0, 50.0, 50.0]], "ok": [[20.0, 20.0, 20.0]],
                                                "false": [], "shifted": [[10.0, 10.0, 10.0]],
                                                "deep": [[90.0, 90.0, 90.0]]}
    actions = dict(zip(res.changes.tomo_id, res.changes.action, strict=True))
    assert actions == {"missed": "add", "false": "remove", "shifted": "move", "deep": "keep"}
    assert res.label_changes == 3
    assert set(res.changes.case_id) == {c.case_id for c in cases} and (res.changes.reviewer == "scripted").all()
    added = res.labels.picks[res.labels.picks.tomo_id == "missed"].iloc[0]
    assert (added.source, added.user_id, added.session_id) == ("review:r1", "scripted", "r1")


def test_scripted_reviewer_keeps_a_weak_label_and_adds_the_missed_neighbour_shown_with_it():
    # two true motors; only one labeled, weakly supported (0.4 < 0.6): its FN case also shows the prediction on the
    # unlabeled motor (a free prediction goes to the nearest unsupported label of its class)
    truth = LabelSet.from_canonical(make_table([("two", SHAPE, 10.0, [[50, 50, 50], [50, 50, 200]])]))
    noisy = LabelSet.from_canonical(make_table([("two", SHAPE, 10.0, [[50, 50, 50]])]))
    preds = pd.DataFrame([pred("two", 100, 100, 100, 0.4), pred("two", 100, 100, 400, 0.5)])
    cases = mine(noisy, preds, confirm_threshold=0.6)
    assert [(c.kind, c.reason) for c in cases] == [("FN", "weak")]
    dec = scripted_decisions(cases, truth)
    assert dec.tags.tolist() == ["0;1"] and cases[0].candidate(1).zyx == [50.0, 50.0, 200.0]
    res = apply_decisions(noisy, cases, dec, round_name="r1")
    assert sorted(map(tuple, motors(to_canonical(res.labels))["two"])) == [(50.0, 50.0, 50.0), (50.0, 50.0, 200.0)]
    assert sorted(res.changes.action) == ["add", "keep"] and res.label_changes == 1


def test_unreviewed_and_unsure_change_nothing_and_bad_tags_are_rejected(world):
    truth, noisy, preds = world
    cases = mine(noisy, preds)
    fn = next(c.case_id for c in cases if c.tomo_id == "false")
    fp = next(c.case_id for c in cases if c.tomo_id == "missed")
    dec = pd.DataFrame([{"case_id": fn, "tags": "unsure", "reviewer": "ann"}, {"case_id": fp, "tags": "",
                                                                             "reviewer": "ann"}])
    res = apply_decisions(noisy, cases, dec, round_name="r1")
    assert res.labels.equals(noisy) and res.unsure_cases == [fn]
    assert len(res.unreviewed_cases) == len(cases) - 1  # the empty tag cell counts as not reviewed
    for bad, words in [("0;none", "contradictory"), ("7", "candidate 7 was not shown"), ("maybe", "unknown tag"),
                       ("²", "unknown tag"), ("01", "unknown tag"), ("none;1", "contradictory"),
                       ("0;2", "contradictory")]:
        with pytest.raises(InputError, match=words):
            apply_decisions(noisy, cases, pd.DataFrame([{"case_id": fp, "tags": bad, "reviewer": ""}]), round_name="r")
    with pytest.raises(InputError, match="unknown case"):
        apply_decisions(noisy, cases, pd.DataFrame([{"case_id": "FP-9999", "tags": "1", "reviewer": ""}]),
                        round_name="r")


def test_a_candidate_tagged_twice_is_added_once(world):
    truth, noisy, preds = world
    cases = mine(noisy, preds)
    fp = next(c.case_id for c in cases if c.tomo_id == "missed")
    res = apply_decisions(noisy, cases, pd.DataFrame([{"case_id": fp, "tags": "1;1", "reviewer": "a"}]),
                          round_name="r")
    assert motors(to_canonical(res.labels))["missed"] == [[50.0, 50.0, 50.0]] and res.label_changes == 1


def test_fn_keep_and_add_and_overrides(world):
    truth, noisy, preds = world
    cases = mine(noisy, preds)
    shifted = next(c.case_id for c in cases if c.tomo_id == "shifted")
    dec = pd.DataFrame([{"case_id": shifted, "tags": "0;1", "reviewer": "ann"}])
    overrides = pd.DataFrame([{"tomo_id": "ok", "action": "clear", "z": None, "y": None, "x": None, "note": "bad tomo"},
                              {"tomo_id": "false", "action": "add", "z": 5, "y": 5, "x": 5, "note": "seen by eye"}])
    res = apply_decisions(noisy, cases, dec, round_name="r1", overrides=overrides, overrides_source="ov.csv")
    fixed = motors(to_canonical(res.labels))
    assert fixed["shifted"] == [[10.0, 10.0, 200.0], [10.0, 10.0, 10.0]]
    assert fixed["ok"] == [] and fixed["false"] == [[70.0, 70.0, 70.0], [5.0, 5.0, 5.0]]
    srcs = res.changes.groupby("action").source.apply(set).to_dict()
    assert srcs["remove"] == {"override:ov.csv"} and "review:r1" in srcs["add"]
    bad = pd.DataFrame([{"tomo_id": "ok", "action": "add", "z": 500, "y": 5, "x": 5, "note": ""}])
    with pytest.raises(InputError, match="outside the volume"):
        apply_decisions(noisy, cases, dec, round_name="r1", overrides=bad)


def test_round_on_disk_is_rerunnable_and_versions_immutable(tmp_path, world):
    truth, noisy, preds = world
    root, _ = round_root(tmp_path, noisy, preds)
    store = LabelStore(root.labels)
    rnd = ReviewRound(root, "round1")
    cases = rnd.mine(labels_version="gt", predictions=root.predictions / "oof.csv", settings=SINGLE).cases
    assert rnd.mine(labels_version="gt", predictions=root.predictions / "oof.csv", settings=SINGLE).cases == cases
    with pytest.raises(InputError, match="already has other cases"):
        rnd.mine(labels_version="gt", predictions=root.predictions / "oof.csv", settings=single(threshold=0.5))
    with pytest.raises(InputError, match="no decisions"):
        rnd.apply(from_version="gt", to_version="gt_v2")
    write_decisions(scripted_decisions(cases, truth), rnd.paths.decisions)
    manifest, result = rnd.apply(from_version="gt", to_version="gt_v2")
    assert manifest.created and manifest.parents == ["gt"] and manifest.extra["label_changes"] == 3
    assert sorted(store.changes("gt_v2").action) == ["add", "keep", "move", "remove"]
    again, _ = rnd.apply(from_version="gt", to_version="gt_v2")  # same content: accepted, nothing written
    assert not again.created
    store.put("other", truth)
    with pytest.raises(InputError, match="mined against"):
        rnd.apply(from_version="other", to_version="gt_v9")


def test_reapplying_other_decisions_is_refused(tmp_path, world):
    from byu.errors import VersionExistsError

    truth, noisy, preds = world
    root, _ = round_root(tmp_path, noisy, preds)
    rnd = ReviewRound(root, "r")
    cases = rnd.mine(labels_version="gt", predictions=root.predictions / "oof.csv", settings=SINGLE).cases
    write_decisions(scripted_decisions(cases, truth, reviewer="ann"), rnd.paths.decisions)
    rnd.apply(from_version="gt", to_version="gt_v2")
    before = LabelStore(root.labels).changes_path("gt_v2").read_bytes()
    write_decisions(scripted_decisions(cases, truth, reviewer="bob"), rnd.paths.decisions)
    with pytest.raises(VersionExistsError, match="changes"):
        rnd.apply(from_version="gt", to_version="gt_v2")
    assert LabelStore(root.labels).changes_path("gt_v2").read_bytes() == before


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
    plain = mine(noisy, weak)
    assert "false" not in {c.tomo_id for c in plain}  # the weak prediction matches the false label: no case
    cases = mine(noisy, weak, confirm_threshold=0.5)
    case = next(c for c in cases if c.tomo_id == "false")
    assert case.kind == "FN" and case.reason == "weak" and case.score == pytest.approx(0.7)
    assert [c.source for c in case.candidates] == ["label"]  # the weak match is not a candidate
    assert "ok" not in {c.tomo_id for c in cases}  # a confident match (0.8) stays confirmed
    res = apply_decisions(noisy, cases, scripted_decisions(cases, truth), round_name="r1")
    assert motors(to_canonical(res.labels))["false"] == []


def test_override_errors_name_line_and_field_and_remove_needs_a_nearby_motor(world, tmp_path):
    from byu.review.apply import read_overrides

    truth, noisy, preds = world
    cases = mine(noisy, preds)
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
        mine(noisy, preds.drop(columns=["voxel_spacing"]), prediction_run="oof.csv")


def test_mining_defaults_to_the_tomograms_the_run_predicted(tmp_path, world):
    truth, noisy, preds = world
    root, _ = round_root(tmp_path, noisy, preds, run="run.csv")
    # the run covered only two tomograms: the others were never predicted and must not become FN cases
    (root.predictions / "run.json").write_text(json.dumps({"tomo_ids": ["missed", "deep"]}))
    cases = ReviewRound(root, "r").mine(labels_version="gt", predictions=root.predictions / "run.csv",
                                        settings=SINGLE).cases
    assert {c.tomo_id for c in cases} == {"missed", "deep"}


def test_extra_candidates_go_to_fp_cases(world):
    truth, noisy, preds = world
    many = pd.DataFrame([pred("false", 20 + 40 * i, 500, 500, 0.9 - 0.05 * i) for i in range(7)])
    cases = mine(noisy, many, max_candidates=3, max_fp_cases=None)
    shown = [c for case in cases if case.tomo_id == "false" for c in case.candidates if c.k > 0]
    assert len(shown) == 7  # 3 on the FN case of the false label, the other 4 in FP cases of 3 and 1
    kinds = sorted((c.kind, len(c.candidates)) for c in cases if c.tomo_id == "false")
    assert kinds == [("FN", 4), ("FP", 1), ("FP", 3)]
    capped = mine(noisy, many, max_candidates=3)  # by default one FP case per tomogram and class
    confs = [c.conf for case in capped if case.kind == "FP" for c in case.candidates]
    assert confs == [0.75, 0.7, 0.65]  # the strongest of the leftovers


# ---------------------------------------------------------------------------------------------------------------
# several classes


@pytest.fixture
def multi():
    return multiclass_world()


def test_multiclass_mining_per_class_radius_and_relabel(multi):
    truth, noisy, preds = multi
    cases = mine(noisy, preds, label_version="gt")
    by = {(c.tomo_id, c.kind, c.particle): c for c in cases}
    mislabeled = by[("a", "FN", "ribosome")] if ("a", "FN", "ribosome") in by else None
    fn_a = [c for c in cases if c.tomo_id == "a" and c.kind == "FN"]
    assert sorted(c.label.zyx for c in fn_a) == [[20.0, 150.0, 180.0], [50.0, 100.0, 100.0]]
    wrong_class = next(c for c in fn_a if c.label.zyx == [50.0, 100.0, 100.0])
    assert [(k.particle, k.zyx) for k in wrong_class.candidates[1:]] == [("apo-ferritin", [50.0, 100.0, 100.0])]
    assert mislabeled is not None and ("b", "FP", "ribosome") in by and ("b", "FN", "apo-ferritin") in by
    dec = scripted_decisions(cases, truth)
    tags = {(c.tomo_id, tuple(c.label.zyx) if c.label else None): t for c, t in zip(cases, dec.tags, strict=True)}
    assert tags[("a", (50.0, 100.0, 100.0))] == "0:apo-ferritin"  # same place, other class: a relabel
    res = apply_decisions(noisy, cases, dec, round_name="r1")
    got = {(r.tomo_id, r.particle, r.z, r.y, r.x) for r in res.labels.picks.itertuples()}
    want = {(r.tomo_id, r.particle, float(r.z), float(r.y), float(r.x)) for r in truth.picks.itertuples()}
    assert got == want
    assert sorted(res.changes.action) == ["add", "move", "relabel", "remove"]
    relabel = res.changes[res.changes.action == "relabel"].iloc[0]
    assert (relabel.old_particle, relabel.particle) == ("ribosome", "apo-ferritin")


def test_class_tags_are_checked(multi):
    truth, noisy, preds = multi
    cases = mine(noisy, preds)
    fn = next(c for c in cases if c.kind == "FN" and c.tomo_id == "b")
    for tags, words in [("0;as:ribosome;as:apo-ferritin", "more than one class"), ("none;as:ribosome",
                                                                                  "contradictory"),
                        ("as:ribosome", "no candidate"), ("0;as:virus", "not a class of this round"),
                        ("0:ribosome;0:apo-ferritin", "two classes"), ("none;0:ribosome", "contradictory"),
                        ("0:virus", "not a class of this round"), ("0:ribosome;as:ribosome", "per-candidate"),
                        ("x1", "for gallery images"), ("ok", "for gallery images")]:
        with pytest.raises(InputError, match=words):
            apply_decisions(noisy, cases, pd.DataFrame([{"case_id": fn.case_id, "tags": tags, "reviewer": ""}]),
                            round_name="r")
    for tags in ("0;as:ribosome", "0:ribosome"):  # an earlier round's class tag and today's say the same
        res = apply_decisions(noisy, cases, pd.DataFrame([{"case_id": fn.case_id, "tags": tags, "reviewer": "x"}]),
                              round_name="r")
        assert list(res.changes.action) == ["relabel"]


def test_motor_rounds_have_no_class_tags():
    from byu.review.tags import tag_labels

    assert tag_labels(3, ["motor"]) == ["0", "1", "2", "3", "none", "unsure", "ok"]
    assert tag_labels(3, ["motor"], gallery_size=4) == ["0", "1", "2", "3", "4", "x1", "x2", "x3", "x4", "none",
                                                        "unsure", "ok"]
    multi = tag_labels(2, ["ribosome", "apo-ferritin"])
    assert multi[-2:] == ["2:ribosome", "2:apo-ferritin"] and "0:apo-ferritin" in multi
    assert not [t for t in multi if t.startswith("as:")]  # per-candidate class tags replace one class per image


def test_calibrated_confirm_thresholds_follow_each_class():
    from byu.review.match import calibrated_thresholds

    sharp = [0.95, 0.93, 0.96, 0.94, 0.92, 0.97, 0.95, 0.9, 0.93, 0.96]
    faint = [0.5, 0.55, 0.45, 0.6, 0.4, 0.52, 0.58, 0.48, 0.35, 0.62]
    wide = [0.05, 0.1, 0.2, 0.9, 0.95, 0.97, 0.6, 0.7, 0.8, 0.85]  # a Tukey fence would fall below every value
    th = calibrated_thresholds({"motor": sharp, "apo-ferritin": faint, "wide": wide, "few": [0.9, 0.2]})
    assert th["motor"] == pytest.approx(0.75 * 0.945)  # a motor half-believed at 0.65 is reviewed
    assert th["apo-ferritin"] == pytest.approx(0.75 * 0.51)  # a faint class is not reviewed wholesale
    assert th["wide"] == pytest.approx(0.75 * 0.75) and sum(v < th["wide"] for v in wide) == 3
    assert th["few"] == 0.6  # too few labels to calibrate: the fixed fallback


def test_auto_confirm_reviews_the_half_believed_label(world):
    truth, noisy, preds = world
    # nine tomograms whose motors the model sees at 0.9+, and the false label half-believed at 0.65
    rows = [("false", SHAPE, 10.0, [[70, 70, 70]])] + [(f"t{i}", SHAPE, 10.0, [[50, 50, 50]]) for i in range(9)]
    labels = LabelSet.from_canonical(make_table(rows))
    p = pd.DataFrame([pred("false", 140, 140, 140, 0.65)] + [pred(f"t{i}", 100, 100, 100, 0.9 + 0.01 * i)
                                                             for i in range(9)])
    fixed = mine(labels, p, confirm_threshold=0.6)
    assert not fixed  # 0.65 passes a fixed 0.6
    result = find_cases(labels, p, settings=single(confirm_threshold="auto"))
    assert [(c.tomo_id, c.reason) for c in result.cases] == [("false", "weak")]
    assert result.scores.classes["motor"].confirm > 0.65


def _nine_believed_motors(extra_conf: float = 0.95):
    """Ten one-motor tomograms the model supports at 0.9+ (t9 at ``extra_conf``) and one unlabeled prediction per
    tomogram at 0.05-0.5: the weak ones are junk nobody needs to see."""
    labels = LabelSet.from_canonical(make_table([(f"t{i}", SHAPE, 10.0, [[50, 50, 50]]) for i in range(10)]))
    p = pd.DataFrame([pred(f"t{i}", 100, 100, 100, 0.9 + 0.005 * i if i < 9 else extra_conf) for i in range(10)]
                     + [pred(f"t{i}", 400, 400, 400, 0.05 + 0.05 * i) for i in range(10)])
    return labels, p


def test_fp_threshold_hides_unlabeled_predictions_weaker_than_half_the_confirm_threshold():
    from byu.review.settings import FP_FRACTION

    labels, p = _nine_believed_motors()
    every = mine(labels, p, confirm_threshold="auto")
    assert sorted(c.tomo_id for c in every) == [f"t{i}" for i in range(10)] and {c.kind for c in every} == {"FP"}
    result = find_cases(labels, p, settings=single(confirm_threshold="auto", fp_threshold="auto"))
    bars, auto = result.scores.classes["motor"], result.cases
    assert bars.fp == pytest.approx(FP_FRACTION * bars.confirm)
    assert all(c.candidates[0].conf >= bars.fp for c in auto)
    assert {c.tomo_id for c in auto} == {f"t{i}" for i in range(10) if 0.05 + 0.05 * i >= bars.fp}
    assert len(auto) < len(every)
    fixed = mine(labels, p, fp_threshold=0.3)
    assert {c.tomo_id for c in fixed} == {"t5", "t6", "t7", "t8", "t9"}
    assert len(mine(labels, p, fp_threshold="auto")) == len(every)  # no confirm threshold: nothing to scale
    with pytest.raises(ValidationError, match="fp_threshold"):
        mine(labels, p, fp_threshold="half")


def test_the_least_verified_labels_are_reviewed_unless_already_cases():
    labels, p = _nine_believed_motors(extra_conf=0.2)  # t9's label is weakly supported
    p = p[p["conf"] >= 0.9 - 1e-9].pipe(lambda d: pd.concat([d, p[p["tomo_id"] == "t9"].head(1)]))
    verification = pd.Series([0.9, 0.8, 0.1, 0.95, 0.7, 0.85, 0.99, 0.2, 0.75, 0.05], index=labels.picks.index)
    result = find_cases(labels, p, settings=single(confirm_threshold="auto", verify=True, verify_quantile=0.3),
                        verification=verified(verification))
    cases = result.cases
    assert result.scores.classes["motor"].verify == pytest.approx(float(verification.quantile(0.3)))
    reasons = {c.tomo_id: c.reason for c in cases}
    assert reasons == {"t9": "weak", "t2": "unverified", "t7": "unverified"}  # t9 stays 'weak', not counted twice
    t2 = next(c for c in cases if c.tomo_id == "t2")
    assert t2.kind == "FN" and t2.score == pytest.approx(0.9) and t2.candidates[0].source == "label"
    assert not mine(labels, p, verify=True,
                    verification=verified(verification.where(verification > 1)))  # none verified: no rule
    few = labels.select([f"t{i}" for i in range(5)])
    assert not [c for c in mine(few, p[p.tomo_id.isin(few.tomo_ids)], verify=True,
                                verification=verified(verification))
                if c.reason == "unverified"]  # fewer labels than calibrating needs
    with pytest.raises(ValidationError, match="verify_quantile"):
        mine(labels, p, verify=True, verification=verified(verification), verify_quantile=1.5)
    # a verifier that cannot tell labels from unlabeled predictions (its own out-of-fold AUC) reviews none
    blind = mine(labels, p, confirm_threshold="auto", verify=True, verify_quantile=0.3,
                 verification=verified(verification, separation=0.55))
    assert {c.tomo_id: c.reason for c in blind} == {"t9": "weak"}
    half = find_cases(labels, p, settings=single(verify=True, verify_quantile=0.6),
                      verification=verified(verification, separation=0.75)).scores.classes["motor"]
    assert half.verify_quantile == pytest.approx(0.3) and half.verifier_auc == 0.75


def test_a_class_no_score_ranks_is_audited_in_galleries_when_that_is_cheap():
    """A verifier no better than chance vouches for no label: with one label already in doubt, the other nine go
    to the same galleries (one more image at most), unless the verifier ranks them, nothing is in doubt, the
    audit is switched off or there are no galleries."""
    labels, p = _nine_believed_motors(extra_conf=0.2)  # t9's label is weakly supported
    p = p[p["conf"] >= 0.9 - 1e-9].pipe(lambda d: pd.concat([d, p[p["tomo_id"] == "t9"].head(1)]))
    verification = pd.Series(np.linspace(0.3, 0.7, 10), index=labels.picks.index)

    def reviewed(separation: float, **settings) -> dict[str, str]:
        cases = mine(labels, p, confirm_threshold="auto", verify=True, verification=verified(
            verification, separation=separation), **{"galleries": True, "known_rate": 0.0, **settings})
        return {c.frame_of(k).tomo_id: c.reason for c in cases for k in c.candidates if k.source == "label"}

    blind = reviewed(0.5)
    assert blind == {f"t{i}": "weak,audit" for i in range(10)}  # one gallery of the ten labels, the weak one first
    assert reviewed(0.5, audit_load=None) == {"t9": "weak"}
    assert reviewed(0.5, audit_load=0.05) == {"t9": "weak"}  # one more image for one label in doubt: too dear
    assert set(reviewed(0.9)) < set(blind) and "t9" in reviewed(0.9)  # a verifier that ranks: its own share
    assert not [c for c in mine(labels, p, confirm_threshold="auto", verify=True, galleries=False,
                                verification=verified(verification, separation=0.5)) if c.reason == "audit"]
    believed, q = _nine_believed_motors()
    q = q[q["conf"] >= 0.9 - 1e-9]
    assert not mine(believed, q, confirm_threshold="auto", verify=True, galleries=True, known_rate=0.0,
                    verification=verified(pd.Series(np.linspace(0.3, 0.7, 10), index=believed.picks.index),
                                          separation=0.5))  # nothing in doubt: nothing to audit


def test_unlabeled_predictions_are_offered_most_verified_first():
    """A missed particle the fold models believe less than five gold beads is shown first when the verifier
    believes it more; without verification the beads fill the FP case; the FP threshold still applies per
    candidate."""
    labels = LabelSet.from_canonical(make_table([(f"t{i}", SHAPE, 10.0, [[50, 50, 50]]) for i in range(10)]))
    beads = [pred("t0", 300 + 40 * k, 300, 300, 0.9 - 0.01 * k) for k in range(5)]
    p = pd.DataFrame([pred(f"t{i}", 100, 100, 100, 0.95) for i in range(10)] + beads
                     + [pred("t0", 500, 100, 500, 0.4), pred("t0", 100, 500, 500, 0.06)])
    missed, faint = len(p) - 2, len(p) - 1
    plain = [c for c in mine(labels, p) if c.kind == "FP"]
    assert len(plain) == 1 and 0.4 not in [c.conf for c in plain[0].candidates]  # five beads, strongest first
    scored = pd.Series(0.05, index=p.index).where(p.index < 10, 0.1)
    scored[missed], scored[faint] = 0.8, 0.9
    cases = [c for c in mine(labels, p, verification=verified(predictions=scored)) if c.kind == "FP"]
    assert [c.conf for c in cases[0].candidates][:2] == [0.06, 0.4] and cases[0].score == pytest.approx(0.9)
    blind = [c for c in mine(labels, p, verification=verified(predictions=scored, separation=0.5)) if c.kind == "FP"]
    assert [c.conf for c in blind[0].candidates] == [c.conf for c in plain[0].candidates]  # ranked by confidence
    barred = [c for c in mine(labels, p, verification=verified(predictions=scored), fp_threshold=0.3)
              if c.kind == "FP"]
    assert [c.conf for c in barred[0].candidates][0] == 0.4 and 0.06 not in [c.conf for c in barred[0].candidates]


def test_a_shifted_label_owns_only_the_predictions_near_it_and_class_tags_name_each_candidate():
    """A shifted ribosome's case shows the ribosome where it really is (within OWN_RADII match radii); a ribosome
    prediction that fell on an apo-ferritin 1166 Å away goes to its own FP case, where it can be named an
    apo-ferritin unless the apo-ferritin's own case already added it. Every label ends where the truth is."""
    tomos = pd.DataFrame({"tomo_id": ["a"], "Z": [100], "Y": [200], "X": [200], "voxel_spacing": [10.0]})
    cols = ["tomo_id", "particle", "z", "y", "x"]
    truth = LabelSet.build(tomos, pd.DataFrame([("a", "ribosome", 50, 50, 50), ("a", "apo-ferritin", 50, 150, 150)],
                                               columns=cols))
    noisy = LabelSet.build(tomos, pd.DataFrame([("a", "ribosome", 50, 50, 90)], columns=cols),
                           ["ribosome", "apo-ferritin"])
    preds = pd.DataFrame([pred("a", 100, 300, 300, 0.6, particle="ribosome"),  # on the apo-ferritin, wrong class
                          pred("a", 100, 100, 100, 0.5, particle="ribosome"),  # the ribosome's true position
                          pred("a", 100, 300, 300, 0.9, particle="apo-ferritin")])
    cases = mine(noisy, preds)
    fn = next(c for c in cases if c.kind == "FN")
    assert [(c.particle, c.zyx) for c in fn.candidates[1:]] == [("ribosome", [50.0, 50.0, 50.0])]
    dec = scripted_decisions(cases, truth)
    tags = dict(zip(dec.case_id, dec.tags, strict=True))
    assert tags[fn.case_id] == "1"
    res = apply_decisions(noisy, cases, dec, round_name="r1")
    got = {(r.particle, r.z, r.y, r.x) for r in res.labels.picks.itertuples()}
    assert got == {("ribosome", 50.0, 50.0, 50.0), ("apo-ferritin", 50.0, 150.0, 150.0)}
    wrong_class = next(c for c in cases if c.kind == "FP" and c.particle == "ribosome")
    alone = scripted_decisions([wrong_class], truth)  # seen on its own, the reviewer names its class
    assert alone.tags.tolist() == ["1:apo-ferritin"]
    res = apply_decisions(noisy, [wrong_class], alone, round_name="r1")
    assert res.changes[["action", "particle"]].values.tolist() == [["add", "apo-ferritin"]]


def test_unlabeled_predictions_another_class_explains_are_offered_last():
    """A ribosome peak on a labeled apo-ferritin, or on an unlabeled one its own channel believes more, is offered
    after a fainter ribosome peak on nothing else; an apo-ferritin peak beside a ribosome peak is not explained
    away (a small particle beside a large one is a real neighbour as often as not)."""
    from byu.review.match import choose_review, score_round

    tomos = pd.DataFrame({"tomo_id": ["a"], "Z": [100], "Y": [400], "X": [400], "voxel_spacing": [10.0]})
    cols = ["tomo_id", "particle", "z", "y", "x"]
    ribo = [("a", "ribosome", 50, 40 + 40 * k, 40) for k in range(8)]
    apo = [("a", "apo-ferritin", 50, 40 + 40 * k, 200) for k in range(8)]
    labels = LabelSet.build(tomos, pd.DataFrame(ribo + apo, columns=cols))
    rows = [pred("a", *r[2:], 0.5, spacing=10.0, particle="ribosome") for r in ribo]
    rows += [pred("a", *r[2:], 0.6 + 0.01 * k, spacing=10.0, particle="apo-ferritin")
             for k, r in enumerate(apo)]
    rows += [pred("a", 52, 40, 202, 0.45, spacing=10.0, particle="ribosome"),  # on a labeled apo-ferritin
             pred("a", 50, 360, 300, 0.9, spacing=10.0, particle="apo-ferritin"),  # an unlabeled apo-ferritin ...
             pred("a", 51, 361, 301, 0.4, spacing=10.0, particle="ribosome"),  # ... a ribosome peak on it
             pred("a", 50, 200, 340, 0.2, spacing=10.0, particle="ribosome"),  # a faint ribosome on its own
             pred("a", 50, 240, 340, 0.5, spacing=10.0, particle="ribosome"),  # a ribosome ...
             pred("a", 50, 243, 344, 0.1, spacing=10.0, particle="apo-ferritin")]  # ... and an apo-ferritin at it
    p = pd.DataFrame(rows)
    settings = MiningSettings(verify=False, confirm_threshold=None, fp_threshold=None)
    scores = score_round(labels, p, settings=settings)
    free = scores.predictions[scores.predictions["label"] < 0]
    explained = {(r.particle, round(r.y)): bool(r.explained) for r in free.itertuples()}
    assert explained == {("ribosome", 40): True, ("ribosome", 361): True, ("ribosome", 200): False,
                         ("ribosome", 240): False, ("apo-ferritin", 360): False, ("apo-ferritin", 243): False}
    plan = choose_review(scores, settings)
    offered = plan.offered[plan.offered["particle"] == "ribosome"].sort_values("rank")
    assert [round(y) for y in offered["y"]] == [240, 200, 40, 361]  # the unexplained first, by confidence
    assert plan.budget["ribosome"]["explained_elsewhere"] == 2
    assert plan.budget["apo-ferritin"]["explained_elsewhere"] == 0


def test_a_crowded_fn_case_shows_its_best_candidates_not_its_nearest():
    """Around a shifted ribosome label lie more free ribosome peaks than a case shows: the case takes the most
    believed (the verifier ranks nothing here), never one another class explains, wherever they lie within
    OWN_RADII match radii."""
    tomos = pd.DataFrame({"tomo_id": ["a"], "Z": [100], "Y": [400], "X": [400], "voxel_spacing": [10.0]})
    cols = ["tomo_id", "particle", "z", "y", "x"]
    labels = LabelSet.build(tomos, pd.DataFrame([("a", "ribosome", 50, 200, 200), ("a", "apo-ferritin", 50, 218, 200)],
                                                columns=cols))
    near = [pred("a", 50, 200 + dy, 200 + dx, 0.1, spacing=10.0, particle="ribosome")  # faint peaks close by
            for dy, dx in [(20, 20), (-20, 20), (20, -20), (-20, -20), (0, 25)]]
    rows = near + [pred("a", 50, 218, 201, 0.9, spacing=10.0, particle="ribosome"),  # on the apo-ferritin label
                   pred("a", 50, 240, 200, 0.5, spacing=10.0, particle="ribosome"),  # where the ribosome is
                   pred("a", 50, 218, 200, 0.8, spacing=10.0, particle="apo-ferritin")]
    p = pd.DataFrame(rows)
    blind = Verification(labels=pd.Series(0.5, index=labels.picks.index), predictions=pd.Series(0.5, index=p.index),
                         separation={"ribosome": 0.5})
    fn = next(c for c in mine(labels, p, verification=blind, verify=True) if c.kind == "FN")
    shown = [(round(c.zyx[1]), c.conf) for c in fn.candidates if c.source == "prediction"]
    assert shown[0] == (240, 0.5) and (218, 0.9) not in shown and len(shown) == 5


def test_a_weak_label_with_a_stronger_peak_no_gallery_offers_gets_a_case_with_candidates():
    """In galleries, a label a look-alike's faint peak supports, with its particle's stronger peak 400 Å away: when
    the budget offers that peak, the galleries move it (label removed, peak added); when it does not, the label is
    shown with the peak in a case of its own. A weak label with nothing stronger near it stays a gallery crop."""
    tomos = pd.DataFrame({"tomo_id": ["a"], "Z": [100], "Y": [600], "X": [600], "voxel_spacing": [10.0]})
    cols = ["tomo_id", "particle", "z", "y", "x"]
    ribo = [("a", "ribosome", 50, 40 + 40 * k, 40) for k in range(12)]
    truth = LabelSet.build(tomos, pd.DataFrame(ribo + [("a", "ribosome", 50, 300, 440)], columns=cols))
    noisy = LabelSet.build(tomos, pd.DataFrame(ribo + [("a", "ribosome", 50, 300, 400), ("a", "ribosome", 50, 500,
                                                                                        500)], columns=cols))
    rows = [pred("a", *r[2:], 0.8, spacing=10.0, particle="ribosome") for r in ribo]
    rows += [pred("a", 50, 300, 405, 0.1, spacing=10.0, particle="ribosome"),  # a look-alike beside the shifted label
             pred("a", 50, 300, 440, 0.7, spacing=10.0, particle="ribosome"),  # the particle it belongs to
             pred("a", 50, 500, 505, 0.1, spacing=10.0, particle="ribosome")]  # the other weak label's only peak
    for budget in ("auto", 0):
        cases = find_cases(noisy, pd.DataFrame(rows), settings=MiningSettings(verify=False, known_rate=0.0,
                                                                                budget=budget)).cases
        fn = [c for c in cases if c.kind == "FN"]
        offered = [round(k.zyx[2]) for c in cases if c.kind == "GP" for k in c.candidates]
        if budget == "auto":
            assert not fn and offered == [440]
        else:
            assert len(fn) == 1 and fn[0].reason == "weak" and not offered
            assert [(c.source, round(c.zyx[2])) for c in fn[0].candidates] == [("label", 400), ("prediction", 440)]
        gl = [round(k.zyx[1]) for c in cases if c.kind == "GL" for k in c.candidates if k.source == "label"]
        assert gl == ([300, 500] if budget == "auto" else [500])
        res = apply_decisions(noisy, cases, scripted_decisions(cases, truth), round_name="r1")
        got = {(r.z, r.y, r.x) for r in res.labels.picks.itertuples()}
        assert (50.0, 300.0, 440.0) in got and (50.0, 300.0, 400.0) not in got


def test_only_a_particle_too_close_to_be_another_explains_a_prediction():
    """Beside a motor label (match radius 1000 Å, particle radius 250 Å), an apo-ferritin 400 Å away is a
    neighbour, not the motor seen by the wrong channel; one 20 Å from the motor's centre is."""
    from byu.review.match import score_round

    tomos = pd.DataFrame({"tomo_id": ["a"], "Z": [100], "Y": [300], "X": [300], "voxel_spacing": [10.0]})
    labels = LabelSet.build(tomos, pd.DataFrame([("a", "motor", 50, 150, 150)] +
                                                [("a", "apo-ferritin", 50, 20 + 30 * k, 280) for k in range(8)],
                                                columns=["tomo_id", "particle", "z", "y", "x"]))
    p = pd.DataFrame([pred("a", 50, 20 + 30 * k, 280, 0.8, spacing=10.0, particle="apo-ferritin") for k in range(8)]
                     + [pred("a", 50, 150, 190, 0.6, spacing=10.0, particle="apo-ferritin"),
                        pred("a", 50, 152, 150, 0.6, spacing=10.0, particle="apo-ferritin")])
    scores = score_round(labels, p, settings=MiningSettings(verify=False))
    free = scores.predictions[scores.predictions["label"] < 0]
    assert {round(r.x): bool(r.explained) for r in free.itertuples()} == {190: False, 150: True}


def test_the_auto_budget_searches_deeper_where_the_models_believe_labeled_particles_no_more_than_look_alikes():
    """Two classes of 20 labels and 80 unlabeled peaks: the models believe the labeled apo-ferritins (0.9) far
    more than its look-alikes (0.2-0.3), so one offer per label reaches any apo-ferritin they found; the labeled
    ribosomes (0.3-0.6) no more than their look-alikes, so a missed ribosome is as likely anywhere in that range
    and every peak believed at least as much as 90 % of the labeled ribosomes is offered, the missed one too."""
    from byu.review.match import choose_review, score_round

    tomos = pd.DataFrame({"tomo_id": ["a"], "Z": [100], "Y": [1000], "X": [1000], "voxel_spacing": [10.0]})
    cols = ["tomo_id", "particle", "z", "y", "x"]
    rng = np.random.default_rng(0)
    grid = [(50, 30 + 45 * (k // 20), 30 + 45 * (k % 20)) for k in range(200)]  # 450 Å apart: no two match
    lab = [("a", "ribosome", *grid[k]) for k in range(20)] + [("a", "apo-ferritin", *grid[20 + k]) for k in range(20)]
    labels = LabelSet.build(tomos, pd.DataFrame(lab, columns=cols))
    rows = [pred("a", *grid[k], float(c), spacing=10.0, particle="ribosome")
            for k, c in enumerate(np.linspace(0.3, 0.6, 20))]
    rows += [pred("a", *grid[20 + k], 0.9, spacing=10.0, particle="apo-ferritin") for k in range(20)]
    rows += [pred("a", *grid[40 + k], float(c), spacing=10.0, particle="ribosome")  # look-alikes
             for k, c in enumerate(rng.uniform(0.2, 0.6, 80))]
    rows += [pred("a", *grid[120 + k], float(c), spacing=10.0, particle="apo-ferritin")
             for k, c in enumerate(rng.uniform(0.2, 0.3, 79))]
    rows += [pred("a", *grid[199], 0.35, spacing=10.0, particle="ribosome")]  # a missed ribosome, deep in the ranking
    p = pd.DataFrame(rows)
    settings = MiningSettings(verify=False, confirm_threshold=None, fp_threshold=None, known_rate=0.0)
    plan = choose_review(score_round(labels, p, settings=settings), settings)
    count = plan.offered["particle"].value_counts()
    cut = np.quantile(np.linspace(0.3, 0.6, 20), 0.1)
    free_ribo = np.array([r["conf"] for r in rows[40:120]] + [0.35])
    assert count["apo-ferritin"] == 20 and plan.budget["apo-ferritin"]["hidden"] == 59  # one per label
    assert count["ribosome"] == int((free_ribo >= cut).sum()) > 20
    missed = plan.offered[(plan.offered["particle"] == "ribosome") & (plan.offered["conf"] == 0.35)]
    assert len(missed) == 1 and int(missed["rank"].iloc[0]) > 20  # beyond one per label, reached all the same
    half = choose_review(score_round(labels, p, settings=settings),
                           settings.model_copy(update={"offer_recall": 0.5}))
    assert (half.offered["particle"] == "ribosome").sum() < count["ribosome"]  # a lower share: a smaller search

"""Galleries (many labels or predictions of one class to an image), the tag vocabulary on them, applying them, the
scripted reviewer on them, and the panel geometry that maps a point on an image back to the tomogram."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from byu.errors import NotFoundError
from byu.labels.model import LabelSet
from byu.review.apply import apply_decisions
from byu.review.cases import Candidate, Case, read_cases, write_cases
from byu.review.decisions import import_decisions_csv, parse_cvat_xml, tag_vocabulary
from byu.review.match import find_cases
from byu.review.render import GalleryLayout, Layout, point_to_frame, read_geometry, render_case, render_gallery
from byu.review.scripted import scripted_decisions
from byu.review.settings import MiningSettings
from byu.review.tags import check_tags
from byu.tomo.io import TomoMeta, write_tomogram
from tests.cvat_support import multiclass_world, prediction_row

pred = prediction_row
NO_VERIFIER = MiningSettings(verify=False, confirm_threshold=None, fp_threshold=None, known_rate=0.0)


def crowd(n_tomos: int = 6, per_tomo: int = 5):
    """Ribosomes on a grid in several 100x200x200 tomograms at 10 Å: one label per tomogram is false (nothing there),
    one true particle per tomogram is missed, one label is shifted; the predictions see every true particle."""
    shape, s = (100, 200, 200), 10.0
    ids = [f"t{i}" for i in range(n_tomos)]
    tomos = pd.DataFrame({"tomo_id": ids, "Z": [shape[0]] * n_tomos, "Y": [shape[1]] * n_tomos,
                          "X": [shape[2]] * n_tomos, "voxel_spacing": [s] * n_tomos})
    true, noisy, preds = [], [], []
    for t in ids:
        spots = [(50, 30 + 35 * j, 40 + 30 * j) for j in range(per_tomo)]
        for j, (z, y, x) in enumerate(spots):
            true.append((t, "ribosome", z, y, x))
            preds.append(pred(t, 2 * z, 2 * y, 2 * x, 0.9 - 0.01 * j, particle="ribosome"))
            if j == 0:
                continue  # missed: no label
            noisy.append((t, "ribosome", z, y, x + 40) if j == 1 else (t, "ribosome", z, y, x))  # j=1: shifted
        noisy.append((t, "ribosome", 80, 180, 20))  # false: nothing there, no prediction near
    cols = ["tomo_id", "particle", "z", "y", "x"]
    return (LabelSet.build(tomos, pd.DataFrame(true, columns=cols)),
            LabelSet.build(tomos, pd.DataFrame(noisy, columns=cols), ["ribosome", "apo-ferritin"]),
            pd.DataFrame(preds))


def test_galleries_hold_many_items_of_one_class_and_single_cases_keep_what_needs_context():
    truth, noisy, preds = crowd()
    result = find_cases(noisy, preds, settings=NO_VERIFIER.model_copy(update={"gallery_size": 4}))
    kinds = [c.kind for c in result.cases]
    assert kinds == sorted(kinds, key=["FN", "GL", "GP"].index)  # single cases first, then galleries
    fn = [c for c in result.cases if c.kind == "FN"]
    assert len(fn) == 6 and all(c.reason == "unmatched" and len(c.candidates) >= 2 for c in fn)  # the shifted
    gl = [c for c in result.cases if c.kind == "GL"]
    assert sum(len(c.candidates) for c in gl) == 6 and [len(c.candidates) for c in gl] == [4, 2]  # the false ones
    assert all(c.particle == "ribosome" and c.image.startswith("GL-") for c in gl)
    assert all(c.frame_of(k).tomo_id.startswith("t") for c in gl for k in c.candidates)
    assert len({gl[0].frame_of(k).tomo_id for k in gl[0].candidates}) == 4  # one gallery spans tomograms
    gp = [c for c in result.cases if c.kind == "GP"]
    shown = [k for c in gp for k in c.candidates]
    assert len(shown) == 6 and all(k.source == "prediction" for k in shown)  # each missed particle, once
    assert [k.conf for k in shown] == sorted((k.conf for k in shown), reverse=True)  # most believed first
    summary = result.summary()["ribosome"]
    assert summary["labels_reviewed"] == {"unmatched": 12} and summary["offered"] == 6
    capped = find_cases(noisy, preds, settings=NO_VERIFIER.model_copy(update={"budget": 2}))
    assert sum(len(c.candidates) for c in capped.cases if c.kind == "GP") == 2
    assert capped.summary()["ribosome"]["hidden"] == 4
    # a round trip through cases.csv keeps every item's own frame
    assert read_cases(write_cases(result.cases, "/tmp/byu-gallery-cases.csv")) == result.cases


def test_the_scripted_reviewer_fixes_a_crowd_through_galleries():
    truth, noisy, preds = crowd()
    result = find_cases(noisy, preds, settings=NO_VERIFIER)
    dec = scripted_decisions(result.cases, truth, labeled=noisy)
    by_kind = dict(zip([c.kind for c in result.cases], dec.tags, strict=True))
    assert by_kind["GL"].startswith("x1") and "x" not in by_kind["GP"]
    res = apply_decisions(noisy, result.cases, dec, round_name="r1")
    got = sorted((r.tomo_id, r.z, r.y, r.x) for r in res.labels.picks.itertuples())
    assert got == sorted((r.tomo_id, float(r.z), float(r.y), float(r.x)) for r in truth.picks.itertuples())
    assert sorted(res.changes.action.value_counts().items()) == [("add", 6), ("move", 6), ("remove", 6)]
    images_per_change = len(result.cases) / res.label_changes
    assert images_per_change < 1.0  # 6 shifts as single cases, 12 removals and additions in 2 galleries


def _gallery(kind: str, n: int = 3) -> Case:
    frame = {"tomo_id": "t0", "Z": 100, "Y": 200, "X": 200, "voxel_spacing": 10.0}
    source = "label" if kind == "GL" else "prediction"
    cands = tuple(Candidate(k=k, particle="ribosome", z=50, y=20 * k, x=20 * k, conf=0.5, source=source, **frame)
                  for k in range(1, n + 1))
    return Case(case_id=f"{kind}-0001", kind=kind, index=1, image=f"{kind}-1-ribosome.jpg", particle="ribosome",
                focus_k=1, candidates=cands)


@pytest.mark.parametrize(("kind", "tags", "words"), [
    ("GL", ["x2", "2"], "contradictory tags 'x2'"),
    ("GL", ["x2", "2:apo-ferritin"], "contradictory tags 'x2'"),
    ("GL", ["2:apo-ferritin", "2:ribosome"], "two classes"),
    ("GL", ["0"], "not a crop of a gallery"),
    ("GL", ["x9"], "crop 9 was not shown"),
    ("GL", ["none", "1:apo-ferritin"], "contradictory"),
    ("GP", ["none", "2"], "contradictory"),
    ("GP", ["as:apo-ferritin", "1"], "k:<class>"),
    ("GP", ["3:virus"], "not a class of this round"),
])
def test_gallery_contradictions_name_the_problem(kind, tags, words):
    _, problems = check_tags(tags, _gallery(kind), ["ribosome", "apo-ferritin"])
    assert any(words in p for p in problems), problems


def test_gallery_tags_apply_crop_by_crop():
    tomos = pd.DataFrame({"tomo_id": ["t0"], "Z": [100], "Y": [200], "X": [200], "voxel_spacing": [10.0]})
    cols = ["tomo_id", "particle", "z", "y", "x"]
    labels = LabelSet.build(tomos, pd.DataFrame([("t0", "ribosome", 50, 20 * k, 20 * k) for k in (1, 2, 3)],
                                                columns=cols), ["ribosome", "apo-ferritin"])
    gl, gp = _gallery("GL"), _gallery("GP")
    gp = gp.model_copy(update={"case_id": "GP-0002", "image": "GP-2-ribosome.jpg", "candidates": tuple(
        c.model_copy(update={"x": c.x + 100}) for c in gp.candidates)})
    dec = pd.DataFrame([{"case_id": "GL-0001", "tags": "x1;3:apo-ferritin", "reviewer": "ann"},
                        {"case_id": "GP-0002", "tags": "2;3:apo-ferritin", "reviewer": "bob"}])
    res = apply_decisions(labels, [gl, gp], dec, round_name="r")
    got = sorted((r.particle, r.y, r.x) for r in res.labels.picks.itertuples())
    assert got == [("apo-ferritin", 60.0, 60.0), ("apo-ferritin", 60.0, 160.0), ("ribosome", 40.0, 40.0),
                   ("ribosome", 40.0, 140.0)]
    assert sorted(res.changes.action) == ["add", "add", "keep", "relabel", "remove"]  # crop 2 of GL: kept
    everything = apply_decisions(labels, [gl], pd.DataFrame([{"case_id": "GL-0001", "tags": "none", "reviewer": ""}]),
                                 round_name="r")
    assert everything.labels.picks.empty and everything.label_changes == 3
    nothing = apply_decisions(labels, [gl, gp], pd.DataFrame([{"case_id": "GL-0001", "tags": "ok", "reviewer": ""},
                                                              {"case_id": "GP-0002", "tags": "ok", "reviewer": ""}]),
                              round_name="r")
    assert nothing.labels.picks.equals(labels.picks) and nothing.label_changes == 0
    assert sorted(nothing.changes.action) == ["keep"] * 3 and nothing.unreviewed_cases == []


def _xml(frames: dict[str, list[str]]) -> str:
    images = "".join(f'<image id="{i}" name="{name}" width="10" height="10">'
                     + "".join(f'<tag label="{t}" source="manual"/>' for t in tags) + "</image>"
                     for i, (name, tags) in enumerate(frames.items()))
    return f"<annotations><version>1.1</version><meta><task><id>1</id></task></meta>{images}</annotations>"


def test_an_untagged_gallery_in_a_completed_job_means_ok(tmp_path):
    gl = _gallery("GL")
    fn = Case(case_id="FN-0002", kind="FN", index=2, tomo_id="t0", image="FN-2-t0.jpg", Z=100, Y=200, X=200,
              voxel_spacing=10.0, particle="ribosome", focus_k=0,
              candidates=(Candidate(k=0, particle="ribosome", z=1, y=2, x=3, source="label"),))
    xml = tmp_path / "r-001.xml"
    xml.write_text(_xml({gl.image: [], fn.image: []}))
    done = parse_cvat_xml(xml, [gl, fn], job_states={0: "completed", 1: "completed"})
    assert done.decisions[["case_id", "tags"]].values.tolist() == [["GL-0001", "ok"]]  # an untagged FN: not reviewed
    busy = parse_cvat_xml(xml, [gl, fn], job_states={0: "in progress", 1: "completed"})
    assert busy.decisions.empty  # the reviewer may not have looked yet
    csv = tmp_path / "outside.csv"
    csv.write_text(f"image,tags\n{gl.image},\n")
    assert import_decisions_csv(csv, [gl, fn]).decisions.empty  # a CSV says ok explicitly
    csv.write_text(f"image,tags\n{gl.image},ok\n")
    assert import_decisions_csv(csv, [gl, fn]).decisions.tags.tolist() == ["ok"]
    vocabulary = tag_vocabulary([gl, fn])
    assert {"x1", "x3", "ok", "1:ribosome"} - set(vocabulary) == {"1:ribosome"}  # one class: no class tags


def test_multiclass_vocabulary_names_every_candidate_and_crop():
    truth, noisy, preds = multiclass_world()
    cases = find_cases(noisy, preds, settings=NO_VERIFIER).cases
    vocabulary = tag_vocabulary(cases)
    assert "0:apo-ferritin" in vocabulary and "x1" in vocabulary
    dec = scripted_decisions(cases, truth, labeled=noisy)
    res = apply_decisions(noisy, cases, dec, round_name="r1")
    got = {(r.tomo_id, r.particle, r.z, r.y, r.x) for r in res.labels.picks.itertuples()}
    assert got == {(r.tomo_id, r.particle, float(r.z), float(r.y), float(r.x)) for r in truth.picks.itertuples()}


# ---------------------------------------------------------------------------------------------------------------
# images and their geometry

STORED, ORIGINAL = 16.0, 10.0
SHAPE = (40, 64, 96)  # stored Z, Y, X (not a cube)
ORIGINAL_SHAPE = (64, 102, 153)


def _tomo(root, tomo_id, bright):
    vol = np.full(SHAPE, 90, np.uint8)
    z, y, x = bright
    vol[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = 255
    write_tomogram(root / tomo_id, vol, TomoMeta(tomo_id=tomo_id, shape=SHAPE, voxel_spacing=STORED,
                                                  original_shape=ORIGINAL_SHAPE, original_spacing=ORIGINAL))


def _to_frame(stored):
    return [(v + 0.5) * STORED / ORIGINAL - 0.5 for v in stored]


@pytest.mark.parametrize("kind", ["GL", "GP"])
def test_gallery_images_and_every_view_maps_back(tmp_path, kind):
    points = [(12, 20, 70), (30, 40, 30), (5, 60, 90)]
    for i, p in enumerate(points):
        _tomo(tmp_path / "tomograms", f"t{i}", p)
    source = "label" if kind == "GL" else "prediction"
    cands = tuple(Candidate(k=i + 1, particle="ribosome", z=zyx[0], y=zyx[1], x=zyx[2], conf=0.4, source=source,
                            tomo_id=f"t{i}", Z=ORIGINAL_SHAPE[0], Y=ORIGINAL_SHAPE[1], X=ORIGINAL_SHAPE[2],
                            voxel_spacing=ORIGINAL)
                  for i, zyx in enumerate(_to_frame(p) for p in points))
    case = Case(case_id=f"{kind}-0001", kind=kind, index=1, image=f"{kind}-1-ribosome.jpg", particle="ribosome",
                focus_k=1, candidates=cands)
    out = render_gallery(case, tmp_path / "tomograms", tmp_path / case.image, thumb_px=96,
                         geometry_dir=tmp_path / "geometry")
    with Image.open(out) as im:
        layout = GalleryLayout(n=3, thumb_px=96)
        assert im.size == (layout.width, layout.height)
        pixels = np.asarray(im.convert("L"), dtype=int)
    panels = read_geometry(tmp_path / "geometry" / f"{case.image}.json")
    assert len(panels) == 9 and {p.plane for p in panels} == {"xy", "xz", "yz"}
    for p in panels:
        item = case.candidate(p.k)
        # the bright voxel sits at the centre of every view, and the centre pixel maps back to the item
        x0, y0, x1, y1 = p.box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        assert pixels[int(cy), int(cx)] > 200, (p.k, p.plane)
        back = point_to_frame(p, cx, cy)
        assert np.allclose(back, item.zyx, atol=ORIGINAL / STORED * 1.0 + 1.0), (p.plane, back, item.zyx)


def test_single_case_panels_map_clicks_back_on_a_non_cubic_tomogram(tmp_path):
    stored = (20, 30, 70)
    _tomo(tmp_path / "tomograms", "t0", stored)
    z, y, x = _to_frame(stored)
    case = Case(case_id="FP-0001", kind="FP", index=1, tomo_id="t0", image="FP-1-t0.jpg", Z=ORIGINAL_SHAPE[0],
                Y=ORIGINAL_SHAPE[1], X=ORIGINAL_SHAPE[2], voxel_spacing=ORIGINAL, particle="ribosome", focus_k=1,
                candidates=(Candidate(k=1, particle="ribosome", z=z, y=y, x=x, conf=0.7),))
    render_case(case, tmp_path / "tomograms" / "t0", tmp_path / case.image, panel_px=96, crop=32, dz=4,
                geometry_dir=tmp_path / "geometry")
    panels = read_geometry(tmp_path / "geometry" / f"{case.image}.json")
    layout = Layout(n_rows=1, panel_px=96)
    assert [p.box[:2] for p in panels] == [layout.panel_origin(0, c) for c in range(5)]
    # a click 6 stored voxels right of and 3 below the centre of each panel
    for p in panels:
        scale = p.scale
        x0, y0, x1, y1 = p.box
        u, v = (x0 + x1) / 2 + 6 * scale, (y0 + y1) / 2 + 3 * scale
        got = np.asarray(point_to_frame(p, u, v))
        want_stored = {"xy": (p.origin[0], stored[1] + 3, stored[2] + 6),
                       "xz": (stored[0] + 3, stored[1], stored[2] + 6),
                       "yz": (stored[0] + 3, stored[1] + 6, stored[2])}[p.plane]
        assert np.allclose(got, _to_frame(want_stored), atol=0.6 * STORED / ORIGINAL), (p.plane, got)


def test_a_gallery_of_missing_tomograms_names_them(tmp_path):
    with pytest.raises(NotFoundError, match="t0"):
        render_gallery(_gallery("GL"), tmp_path / "tomograms", tmp_path / "x.jpg")


def test_known_answer_items_are_mixed_into_galleries_and_measure_the_reviewer():
    from byu.review.quality import known_accuracy

    truth, noisy, preds = crowd(n_tomos=8)
    settings = NO_VERIFIER.model_copy(update={"known_rate": 0.25, "gallery_size": 8})
    result = find_cases(noisy, preds, settings=settings)
    galleries = [c for c in result.cases if c.is_gallery]
    known = [k for c in galleries for k in c.candidates if k.known]
    assert known and {k.known for k in known} == {"real", "not"}
    assert all(len(c.candidates) <= 8 for c in galleries)  # the known items fit in the gallery size
    assert all(sum(k.known is not None for k in c.candidates) <= 2 for c in galleries)
    for k in known:  # a background point is far from every label and prediction; a known real one is a label
        frame = next(c for c in galleries if k in c.candidates).frame_of(k)
        labs = noisy.picks[noisy.picks.tomo_id == frame.tomo_id][["z", "y", "x"]].to_numpy(float)
        d = np.linalg.norm(labs - np.array(k.zyx), axis=1).min() * frame.voxel_spacing
        assert (d >= 3 * 150.0) if k.known == "not" else (d < 1e-6)
    # the cases.csv round trip keeps the key; the reviewer sees ordinary crops
    assert read_cases(write_cases(result.cases, "/tmp/byu-known-cases.csv")) == result.cases
    perfect = scripted_decisions(result.cases, truth, labeled=noisy)
    erring = scripted_decisions(result.cases, truth, labeled=noisy, error_rate=0.3, seed=4, reviewer="tired")
    acc = {**known_accuracy(result.cases, perfect), **known_accuracy(result.cases, erring)}
    assert acc["scripted"].rate == 1.0 and acc["scripted"].n == len(known)
    assert acc["tired"].n == len(known) and acc["tired"].rate < 1.0
    lo, hi = acc["tired"].interval
    assert lo <= acc["tired"].rate <= hi
    # known items never change a label: applying the perfect review gives the truth, known items or not
    res = apply_decisions(noisy, result.cases, perfect, round_name="r1")
    got = sorted((r.tomo_id, r.z, r.y, r.x) for r in res.labels.picks.itertuples())
    assert got == sorted((r.tomo_id, float(r.z), float(r.y), float(r.x)) for r in truth.picks.itertuples())


def test_an_erring_scripted_reviewer_errs_on_every_kind_of_item_at_its_rate():
    from byu.review.scripted import scripted_answers

    truth, noisy, preds = crowd(n_tomos=12)
    cases = find_cases(noisy, preds, settings=NO_VERIFIER).cases
    _, answers = scripted_answers(cases, truth, labeled=noisy, error_rate=0.15, seed=1)
    wrong = [a for a in answers if a.wrong]
    assert 0.05 < len(wrong) / len(answers) < 0.3
    _, many = scripted_answers(cases, truth, labeled=noisy, error_rate=0.4, seed=1)  # enough errors to see kinds
    kinds = {next(c.kind for c in cases if c.case_id == a.case_id) for a in many if a.wrong}
    assert kinds >= {"FN", "GL", "GP"}
    assert {a.true is None for a in wrong} == {True, False}  # both ways: real called not, not called real
    _, again = scripted_answers(cases, truth, labeled=noisy, error_rate=0.15, seed=1)
    assert again == answers  # reproducible

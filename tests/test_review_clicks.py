""""Click where the particle is" (issue #26 item 3): a point placed on a panel of a case image maps back through the
image's panel geometry to the tomogram's label frame, becomes an ``at:<z>/<y>/<x>`` tag, and moves or adds a pick.

Rounds go through the real cvat-sdk against the loopback fake CVAT, with images and geometry files rendered from a
small non-cubic synthetic tomogram whose label frame (10 Å) is not its stored frame (16 Å)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cvat_sdk import Client, Config

from byu.labels.model import LabelSet
from byu.labels.store import LabelStore
from byu.paths import DataRoot
from byu.review.apply import apply_decisions
from byu.review.cases import Candidate, Case, LabelPoint, write_cases
from byu.review.cvat import CvatConfig, pull_round, push_round
from byu.review.decisions import import_decisions_csv, parse_cvat_xml, tag_vocabulary
from byu.review.paths import RoundPaths
from byu.review.render import PanelGeometry, read_geometry, render_cases
from byu.review.tags import check_tags, join_tags, label_type, parse_click, split_tags, tag_labels
from byu.tomo.grid import frame_to_stored
from byu.tomo.io import TomoMeta, write_tomogram
from tests.fakes.cvat import (
    CVAT_VERSIONS,
    FAKE_CVAT_VERSION,
    click_images_as_annotator,
    start_fake_cvat,
    tag_images_as_annotator,
)

USERS = {"operator": "op-pass-1", "alice": "alice-pass-2"}
STORED, ORIGINAL = 16.0, 10.0
SHAPE = (40, 64, 96)  # stored Z, Y, X: not a cube
FRAME = (64, 102, 153)  # the label frame (the original grid at 10 Å)
RADIUS_A = 60.0  # the cases' match radius

# stored-voxel positions: where each particle really is, and where its label (or the prediction shown) is
TRUTH = {"P1": (20, 30, 40), "P2": (12, 20, 70), "P3": (28, 45, 20), "P4": (10, 50, 30), "P5": (14, 50, 12)}
LABELED = {"P1": (20, 30, 46), "P2": (12, 26, 70), "P3": (28, 40, 25)}  # shifted in the plane clicked below
FP_PREDICTION = (10, 50, 20)  # a prediction that is no particle, with P4 and P5 in its row's panels
DECOY = (20, 50, 80)  # FN-0001's only candidate: nowhere near P1


def to_frame(stored) -> list[float]:
    return [(v + 0.5) * STORED / ORIGINAL - 0.5 for v in stored]


def _cand(k, stored, *, source="prediction", particle="motor", conf=0.5, **frame):
    z, y, x = to_frame(stored)
    return Candidate(k=k, particle=particle, z=z, y=y, x=x, conf=None if source == "label" else conf, source=source,
                     **frame)


def _single(kind, index, cands, particle="motor", labels=()) -> Case:
    return Case(case_id=f"{kind}-{index:04d}", kind=kind, index=index, tomo_id="t0",
                image=f"{kind}-{index}-t0.jpg", Z=FRAME[0], Y=FRAME[1], X=FRAME[2], voxel_spacing=ORIGINAL,
                particle=particle, radius_A=RADIUS_A, focus_k=0 if kind == "FN" else 1, candidates=tuple(cands),
                labels=tuple(labels))


def world(tmp_path: Path, *, gallery: bool = False, multiclass: bool = False):
    """A data root with tomogram t0, label version ``gt`` and round ``c1`` (cases, images, geometry)."""
    root = DataRoot(tmp_path / "data")
    vol = np.full(SHAPE, 90, np.uint8)
    for z, y, x in TRUTH.values():
        vol[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = 250
    write_tomogram(root.tomograms / "t0", vol, TomoMeta(tomo_id="t0", shape=SHAPE, voxel_spacing=STORED,
                                                         original_shape=FRAME, original_spacing=ORIGINAL))
    tomos = pd.DataFrame({"tomo_id": ["t0"], "Z": [FRAME[0]], "Y": [FRAME[1]], "X": [FRAME[2]],
                          "voxel_spacing": [ORIGINAL]})
    cols = ["tomo_id", "particle", "z", "y", "x"]
    if multiclass:
        cases = [_single("FP", 1, [_cand(1, FP_PREDICTION, particle="ribosome")], particle="ribosome"),
                 _single("FP", 2, [_cand(1, DECOY, particle="apo-ferritin")], particle="apo-ferritin")]
        labels = LabelSet.build(tomos, pd.DataFrame(columns=cols), ["ribosome", "apo-ferritin"])
    else:
        cases = [_single("FN", 1, [_cand(0, LABELED["P1"], source="label"), _cand(1, DECOY, conf=0.3)]),
                 _single("FN", 2, [_cand(0, LABELED["P2"], source="label")]),
                 _single("FN", 3, [_cand(0, LABELED["P3"], source="label")],
                         labels=[LabelPoint(particle="motor", **dict(zip("zyx", to_frame(LABELED["P1"]),
                                                                         strict=True)))]),
                 _single("FP", 4, [_cand(1, FP_PREDICTION, conf=0.6)])]
        if gallery:
            frame = {"tomo_id": "t0", "Z": FRAME[0], "Y": FRAME[1], "X": FRAME[2], "voxel_spacing": ORIGINAL}
            cases.append(Case(case_id="GL-0005", kind="GL", index=5, image="GL-5-motor.jpg", particle="motor",
                              radius_A=RADIUS_A, focus_k=1,
                              candidates=(_cand(1, LABELED["P2"], source="label", **frame),)))
        labels = LabelSet.build(tomos, pd.DataFrame([("t0", "motor", *to_frame(p)) for p in LABELED.values()],
                                                    columns=cols))
    LabelStore(root.labels).put("gt", labels)
    paths = RoundPaths(root.review_round("c1"))
    write_cases(cases, paths.cases)
    render_cases(cases, root.tomograms, paths.images, crop=32, dz=4, panel_px=96, workers=1,
                 geometry_dir=paths.geometry)
    return paths, cases, labels


def panel_of(paths: RoundPaths, case: Case, plane: str, *, k: int, z: int | None = None) -> PanelGeometry:
    """The panel of ``case``'s image showing ``plane`` in candidate row ``k`` (an XY panel: the one at stored z)."""
    panels = [p for p in read_geometry(paths.geometry / f"{case.image}.json")
              if p.plane == plane and p.k == k and (z is None or p.origin[0] == z)]
    assert len(panels) == 1, panels
    return panels[0]


def pixel_of(panel: PanelGeometry, zyx_frame) -> tuple[float, float]:
    """The image pixel that shows label-frame point ``zyx_frame`` in ``panel`` (the inverse of point_to_frame)."""
    z, y, x = frame_to_stored(zyx_frame, panel.frame_spacing, panel.original_spacing, panel.stored_spacing)
    oz, oy, ox = panel.origin
    u, v = {"xy": (x - ox, y - oy), "xz": (x - ox, z - oz), "yz": (y - oy, z - oz)}[panel.plane]
    px, py = panel.box[0] + (u + 0.5) * panel.scale, panel.box[1] + (v + 0.5) * panel.scale
    assert panel.box[0] <= px < panel.box[2] and panel.box[1] <= py < panel.box[3]
    return float(px), float(py)


@pytest.fixture
def fake(request):
    version = getattr(request, "param", FAKE_CVAT_VERSION)
    with start_fake_cvat(users=USERS, page_size=3, version=version) as (url, server):
        yield url, server


@pytest.fixture
def config(fake) -> CvatConfig:
    return CvatConfig(url=fake[0], user="operator", password=USERS["operator"], status_check_period=0.01,
                      backoff_initial=0.01, backoff_max=0.05, max_attempts=3)


@pytest.fixture
def annotator(fake):
    client = Client(fake[0], config=Config(status_check_period=0.01), check_server_version=not fake[1].legacy)
    client.login(("alice", USERS["alice"]))
    yield client
    client.close()


def server_labels(server) -> dict[str, str]:
    with server.state.lock:
        return {lab["name"]: lab["type"] for lab in server.state.labels.values()}


def clicked(decisions: pd.DataFrame, case_id: str) -> list[list[float]]:
    tags = split_tags(decisions.set_index("case_id").at[case_id, "tags"])
    return [c.zyx for t in tags if (c := parse_click(t)) is not None]


# ---------------------------------------------------------------------------------------------------------------
# Through CVAT


@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)
def test_clicks_on_xz_yz_and_xy_panels_move_and_add_picks(fake, config, annotator, tmp_path):
    url, server = fake
    paths, cases, labels = world(tmp_path)
    fn1, fn2, fn3, fp4 = cases
    (entry,) = push_round(paths.dir, config=config)
    kinds = server_labels(server)
    assert kinds["here"] == "points" and {t for n, t in kinds.items() if n != "here"} == {"tag"}
    assert json.loads(paths.tasks.read_text())["labels"][-1] == "here"

    truth = {name: to_frame(p) for name, p in TRUTH.items()}
    z3, z4 = TRUTH["P3"][0], TRUTH["P4"][0]
    points = {
        fn1.image: [("here", *pixel_of(panel_of(paths, fn1, "xz", k=0), truth["P1"]))],  # XZ panel
        fn2.image: [("here", *pixel_of(panel_of(paths, fn2, "yz", k=0), truth["P2"]))],  # YZ panel
        fn3.image: [("here", *pixel_of(panel_of(paths, fn3, "xy", k=0, z=z3), truth["P3"]))],  # XY panel
        fp4.image: [("here", *pixel_of(panel_of(paths, fp4, "xy", k=1, z=z4), truth["P4"])),  # one row,
                    ("here", *pixel_of(panel_of(paths, fp4, "xz", k=1), truth["P5"]))],  # two panels
    }
    tag_images_as_annotator(annotator, entry["id"], {fn2.image: ["none"]}, complete=False)
    assert click_images_as_annotator(annotator, entry["id"], points, assignee="alice") == 5
    job = annotator.tasks.retrieve(entry["id"]).get_jobs()[0]
    shapes = job.get_annotations().shapes  # the SDK reads the points back as CVAT returns them
    assert len(shapes) == 5 and {str(s.type) for s in shapes} == {"points"} and all(len(s.points) == 2 for s in shapes)

    report = pull_round(paths.dir, config=config)
    assert report.result.errors == [] and report.written
    xml = (paths.cvat / f"{entry['name']}.xml").read_text()
    x, y = points[fn1.image][0][1:]
    written = f'<points label="here" source="manual" occluded="0" points="{x:.2f},{y:.2f}" z_order="0"'
    assert written in xml
    if server.legacy:  # CVAT's own layout: an open/close pair with a newline, shapes before tags
        assert written + ">\n    </points>" in xml and "/>" not in xml
        image = xml[xml.index(f'name="{fn2.image}"'):]
        assert image.index("<points") < image.index('<tag label="none"')

    decisions = report.result.decisions
    assert decisions.set_index("case_id").loc[fn2.case_id, "tags"].startswith("none;at:")
    for case, names in ((fn1, ["P1"]), (fn2, ["P2"]), (fn3, ["P3"]), (fp4, ["P4", "P5"])):
        got = sorted(clicked(decisions, case.case_id))
        want = sorted(truth[n] for n in names)
        assert np.allclose(got, want, atol=1.0), (case.case_id, got, want)  # within one label voxel

    res = apply_decisions(labels, cases, decisions, round_name="c1")
    new = res.labels.picks
    assert len(new) == 5
    for name in TRUTH:
        d = np.linalg.norm(new[["z", "y", "x"]].to_numpy(float) - truth[name], axis=1)
        assert d.min() <= 1.0, (name, d.min())
    for p in LABELED.values():  # the shifted labels are gone (moved)
        assert np.linalg.norm(new[["z", "y", "x"]].to_numpy(float) - to_frame(p), axis=1).min() > 3.0
    changes = res.changes
    assert sorted(changes.action) == ["add", "add", "move", "move", "move"]
    assert set(changes.source) == {"review:c1:click"} and set(changes.reviewer) == {"alice"}
    assert changes.confidence.isna().all()
    for r in changes.itertuples():  # each row holds the click's coordinates
        assert [r.new_z, r.new_y, r.new_x] in clicked(decisions, r.case_id)
    moved = changes[changes.action == "move"].set_index("case_id")
    assert np.allclose(moved.loc[fn1.case_id, ["old_z", "old_y", "old_x"]].to_numpy(float), to_frame(LABELED["P1"]))
    assert set(new.source) == {"review:c1"} and set(new.user_id) == {"alice"} and set(new.session_id) == {"c1"}


def test_clicks_off_the_panels_on_a_gallery_or_without_geometry_are_named(fake, config, annotator, tmp_path):
    url, server = fake
    paths, cases, labels = world(tmp_path, gallery=True)
    fn1, fn2, fn3, fp4, gl5 = cases
    (entry,) = push_round(paths.dir, config=config)
    (paths.geometry / f"{fn3.image}.json").unlink()  # an image whose geometry is lost after the push
    gallery_panel = read_geometry(paths.geometry / f"{gl5.image}.json")[0]
    cx, cy = (gallery_panel.box[0] + gallery_panel.box[2]) / 2, (gallery_panel.box[1] + gallery_panel.box[3]) / 2
    click_images_as_annotator(annotator, entry["id"], {
        fn1.image: [("here", 5.0, 5.0)],  # the header: no panel
        fn2.image: [("here", *pixel_of(panel_of(paths, fn2, "yz", k=0), to_frame(TRUTH["P2"])))],  # fine
        fn3.image: [("here", 300.0, 200.0)],
        gl5.image: [("here", cx, cy)],
    })
    report = pull_round(paths.dir, config=config)
    assert not report.written and report.rejected_dir is not None
    errors = report.result.errors
    assert len(errors) == 3, errors
    off, lost, gallery = (next(e for e in errors if c.image in e) for c in (fn1, fn3, gl5))
    assert "pixel (5.00, 5.00)" in off and "outside every panel" in off
    assert "pixel (300.00, 200.00)" in lost and "no geometry file" in lost
    assert "place clicks on single-particle images" in gallery
    assert not paths.decisions.exists()  # nothing was written


def test_multiclass_clicks_name_their_class(fake, config, annotator, tmp_path):
    url, server = fake
    paths, cases, labels = world(tmp_path, multiclass=True)
    (entry,) = push_round(paths.dir, config=config)
    kinds = server_labels(server)
    assert {n for n, t in kinds.items() if t == "points"} == {"here:ribosome", "here:apo-ferritin"}
    assert "here" not in kinds
    fp = cases[0]
    panel = panel_of(paths, fp, "xy", k=1, z=TRUTH["P4"][0])
    click_images_as_annotator(annotator, entry["id"],
                              {fp.image: [("here:apo-ferritin", *pixel_of(panel, to_frame(TRUTH["P4"])))]})
    report = pull_round(paths.dir, config=config)
    assert report.result.errors == []
    (tag,) = split_tags(report.result.decisions.set_index("case_id").at[fp.case_id, "tags"])
    click = parse_click(tag)
    assert click is not None and click.particle == "apo-ferritin" and tag.endswith(":apo-ferritin")
    res = apply_decisions(labels, cases, report.result.decisions, round_name="c1")
    (pick,) = res.labels.picks.itertuples()
    assert pick.particle == "apo-ferritin"
    assert np.allclose([pick.z, pick.y, pick.x], to_frame(TRUTH["P4"]), atol=1.0)
    assert list(res.changes.source) == ["review:c1:click"] and list(res.changes.particle) == ["apo-ferritin"]


# ---------------------------------------------------------------------------------------------------------------
# Without CVAT: the XML reader, the CSV import, the vocabulary


def _xml(images: dict[str, str]) -> str:
    body = "".join(f'<image id="{i}" name="{name}" width="10" height="10">{inner}</image>'
                   for i, (name, inner) in enumerate(images.items()))
    return f"<annotations><version>1.1</version><meta><task><id>1</id></task></meta>{body}</annotations>"


def test_several_points_in_one_shape_and_shapes_that_are_not_clicks(tmp_path):
    paths, cases, labels = world(tmp_path)
    fp4 = cases[3]
    xy = panel_of(paths, fp4, "xy", k=1, z=TRUTH["P4"][0])
    xz = panel_of(paths, fp4, "xz", k=1)
    (a, b), (c, d) = pixel_of(xy, to_frame(TRUTH["P4"])), pixel_of(xz, to_frame(TRUTH["P5"]))
    xml = tmp_path / "t.xml"
    xml.write_text(_xml({fp4.image: f'<points label="here" source="manual" occluded="0" '
                                     f'points="{a:.2f},{b:.2f};{c:.2f},{d:.2f}" z_order="0"></points>'}))
    result = parse_cvat_xml(xml, cases, geometry_dir=paths.geometry)
    assert result.errors == []
    got = sorted(clicked(result.decisions, fp4.case_id))
    assert np.allclose(got, sorted([to_frame(TRUTH["P4"]), to_frame(TRUTH["P5"])]), atol=1.0)
    assert parse_cvat_xml(xml, cases).errors[0].count("geometry") >= 1  # no geometry dir given: an error

    xml.write_text(_xml({fp4.image: '<points label="1" points="1,1"></points>',
                         cases[0].image: '<box label="here" xtl="1" ytl="1" xbr="2" ybr="2"></box>',
                         cases[1].image: '<points label="here" points="a,b"></points>',
                         cases[2].image: '<tag label="here"></tag>'}))
    errors = parse_cvat_xml(xml, cases, geometry_dir=paths.geometry).errors
    assert len(errors) == 4, errors
    assert fp4.image in errors[0] and "a point labelled '1'" in errors[0]
    assert cases[0].image in errors[1] and "<box>" in errors[1]
    assert cases[1].image in errors[2] and "not 'x,y'" in errors[2]
    assert cases[2].image in errors[3] and "point label" in errors[3]


def test_a_csv_import_takes_positions_measured_elsewhere(tmp_path):
    paths, cases, labels = world(tmp_path, gallery=True)
    fn1, fn2, fn3, fp4, gl5 = cases
    p4, p3 = to_frame(TRUTH["P4"]), to_frame(TRUTH["P3"])
    csv = tmp_path / "outside.csv"
    csv.write_text("case_id,tags,reviewer\n"
                   f"{fp4.case_id},at:{p4[0]}/{p4[1]}/{p4[2]},bob\n"
                   f"{fn3.case_id},0;at:{p3[0]:.4f}/{p3[1]:.4f}/{p3[2]:.4f},bob\n")  # keep the label, add one
    result = import_decisions_csv(csv, cases)
    assert result.errors == []
    tags = result.decisions.set_index("case_id")["tags"]
    assert tags[fp4.case_id] == f"at:{p4[0]:.2f}/{p4[1]:.2f}/{p4[2]:.2f}"  # canonical: 2 decimals
    assert tags[fn3.case_id].startswith("0;at:")
    res = apply_decisions(labels, cases, result.decisions, round_name="r2")
    assert sorted(res.changes.action) == ["add", "add", "keep"]
    added = res.changes[res.changes.action == "add"]
    assert set(added.source) == {"review:r2:click"} and set(added.reviewer) == {"bob"}
    assert res.changes[res.changes.action == "keep"].source.tolist() == ["review:r2"]
    assert len(res.labels.picks) == len(labels.picks) + 2

    csv.write_text("case_id,tags\n"
                   f"{fp4.case_id},at:nan/1/2\n"
                   f"{fn1.case_id},at:{FRAME[0]}/1/2\n"
                   f"{fn2.case_id},at:1/2\n"
                   f"{gl5.case_id},at:1/2/3\n")
    errors = import_decisions_csv(csv, cases).errors
    assert len(errors) == 4, errors
    assert "line 2" in errors[0] and "not finite" in errors[0]
    assert "line 3" in errors[1] and "outside the tomogram's frame" in errors[1]
    assert "line 4" in errors[2] and "three coordinates" in errors[2]
    assert "line 5" in errors[3] and "place clicks on single-particle images" in errors[3]


@pytest.mark.parametrize(("kind", "tags", "words"), [
    ("FN", ["1", "at:{c1}"], "the same particle twice"),  # candidate 1 and a click on it
    ("FN", ["0", "at:{label}"], "the same particle twice"),  # keep the label and click on it
    ("FN", ["at:{c1}", "at:{near_c1}"], "are 16 Å apart"),  # two clicks on one particle
    ("FP", ["0", "at:{far}"], "contradictory tags '0'"),
    ("FP", ["none", "at:{far}"], "contradictory tags 'none'"),
    ("FN", ["as:motor", "at:{far}"], "with a click"),
    ("FN", ["at:{far}:virus"], "not a class of this round"),
    ("FN", ["at:-1/2/3"], "outside the tomogram's frame"),
    ("FN", ["at:1/2/x"], "not a number"),
    ("FN", ["at:1/2/3:"], "empty class"),
    ("FN", ["here"], "point label"),
])
def test_click_contradictions_are_named(kind, tags, words):
    label, c1 = [30.0, 50.0, 60.0], [30.0, 50.0, 100.0]
    cands = ([Candidate(k=0, z=label[0], y=label[1], x=label[2], source="label")] if kind == "FN" else []) + \
        [Candidate(k=1, z=c1[0], y=c1[1], x=c1[2], conf=0.5)]
    case = _single(kind, 1, cands)
    fill = {"label": "/".join(map(str, label)), "c1": "/".join(map(str, c1)), "near_c1": "30/50/101.6",
            "far": "10/10/10"}
    _, problems = check_tags([t.format(**fill) for t in tags], case, ["motor"])
    assert any(words in p for p in problems), problems


def test_clicks_that_do_not_contradict():
    label = Candidate(k=0, z=30.0, y=50.0, x=60.0, source="label")
    case = _single("FN", 1, [label, Candidate(k=1, z=30.0, y=50.0, x=100.0, conf=0.5)])
    for tags in (["at:30/50/62"], ["none", "at:30/50/62"], ["1", "at:10/10/10"], ["0", "at:10/10/10", "at:40/90/20"]):
        ok, problems = check_tags(tags, case, ["motor"])
        assert problems == [], (tags, problems)
    assert check_tags(["at:10/10/10", "1"], case, ["motor"])[0] == ["1", "at:10.00/10.00/10.00"]
    assert join_tags(["at:2/1/1", "none", "1", "as:motor", "at:1.5/5/5", "x2"]) == \
        "1;x2;none;as:motor;at:1.5/5/5;at:2/1/1"  # clicks last, by z, y, x


def test_click_labels_are_point_labels():
    assert tag_labels(3, ["motor"], points=True)[-1] == "here"
    multi = tag_labels(2, ["ribosome", "apo-ferritin"], points=True)
    assert multi[-2:] == ["here:ribosome", "here:apo-ferritin"] and "here" not in multi
    assert [label_type(n) for n in ("here", "here:ribosome", "0", "none", "1:ribosome", "hereafter")] == \
        ["points", "points", "tag", "tag", "tag", "tag"]
    gl = Case(case_id="GL-0001", kind="GL", index=1, image="GL-1-motor.jpg", focus_k=1, candidates=(
        Candidate(k=1, z=1, y=1, x=1, source="label", tomo_id="t0", Z=10, Y=10, X=10, voxel_spacing=10.0),))
    assert "here" in tag_vocabulary([gl], points=True)


def test_a_round_without_geometry_gets_no_click_labels(tmp_path):
    """Images made without their panel geometry cannot map a point back: no click label is offered."""
    paths, cases, labels = world(tmp_path)
    for f in paths.geometry.iterdir():
        f.unlink()
    with start_fake_cvat(users=USERS) as (url, server):
        push_round(paths.dir, config=CvatConfig(url=url, user="operator", password=USERS["operator"],
                                                status_check_period=0.01))
        assert "here" not in server_labels(server)

"""Case images: names, sizes, determinism, ring positions, frame conversion, edges, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from byu.errors import InputError, NotFoundError
from byu.labels.classes import ParticleClass
from byu.labels.model import LabelSet
from byu.labels.table import make_table
from byu.review.cases import Candidate, image_name, read_cases, write_cases
from byu.review.match import find_cases
from byu.review.render import (
    FOCUS_COLOUR,
    LABEL_COLOUR,
    MARK_PX,
    OTHER_COLOUR,
    PAD_COLOUR,
    Layout,
    SliceCache,
    render_case,
    render_cases,
    row_label,
)
from byu.review.settings import MiningSettings
from byu.tomo.grid import stored_to_frame
from byu.tomo.io import TomoMeta, write_tomogram

STORED = 16.0  # Å/voxel of the stored stack
LABEL = 10.0  # Å/voxel of the label frame
SHAPE = (48, 96, 80)  # stored Z, Y, X
LABEL_SHAPE = tuple(int(round(s * STORED / LABEL)) for s in SHAPE)
CROP, DZ, PANEL = 32, 8, 96  # small panels keep the tests fast; scale = 3 px per voxel
SCALE = PANEL / CROP
RADIUS_A = 96.0  # 6 stored voxels -> an 18 px ring
OPTS = dict(crop=CROP, dz=DZ, panel_px=PANEL, classes={"motor": ParticleClass(name="motor", radius=RADIUS_A)})


def _label(zyx_stored) -> list[float]:
    return [float(v) for v in stored_to_frame(zyx_stored, LABEL, LABEL, STORED)]


def _make_tomo(root: Path, tomo_id: str, bright: tuple[int, int, int] | None = None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    vol = rng.integers(70, 130, size=SHAPE, dtype=np.uint8)
    if bright is not None:
        z, y, x = bright
        vol[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = 255
    meta = TomoMeta(tomo_id=tomo_id, shape=SHAPE, voxel_spacing=STORED,
                    original_shape=LABEL_SHAPE, original_spacing=LABEL)
    return write_tomogram(root / tomo_id, vol, meta)


def _row(kind: str, index: int, tomo_id: str, cands: list[dict], labels: list[list[float]] | None = None,
         focus_k: int | None = None) -> dict:
    Z, Y, X = LABEL_SHAPE
    return {
        "case_id": f"{kind}-{index:04d}", "kind": kind, "index": index, "tomo_id": tomo_id,
        "image": image_name(kind, index, tomo_id, (Z, Y, X), LABEL),
        "score": 0.75, "label_version": "gt", "prediction_run": "r1",
        "Z": Z, "Y": Y, "X": X, "voxel_spacing": LABEL, "radius_A": 1000.0,
        "focus_k": focus_k if focus_k is not None else (0 if kind == "FN" else 1),
        "candidates": json.dumps(cands), "labels": json.dumps(labels or []),
    }


def _csv(df: pd.DataFrame, path: Path) -> Path:
    """A hand-made cases.csv (rows as the review contract writes them)."""
    df.to_csv(path, index=False)
    return path


def _cand(k: int, zyx_stored, conf: float | None = 0.5) -> dict:
    z, y, x = _label(zyx_stored)
    return {"k": k, "z": z, "y": y, "x": x, "conf": conf, "source": "label" if conf is None else "prediction"}


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def _panel_point(layout: Layout, row: int, col: int, u: float, v: float) -> tuple[float, float]:
    """Pixel (x, y) of crop coordinates (u right, v down) in stored voxels."""
    px, py = layout.panel_origin(row, col)
    return px + (u + 0.5) * SCALE, py + (v + 0.5) * SCALE


def _near(img: np.ndarray, x: float, y: float, colour, tol: int = 60, win: int = 2) -> bool:
    """Some pixel within ``win`` of (x, y) has about ``colour`` (JPEG-tolerant)."""
    xi, yi = int(round(x)), int(round(y))
    patch = img[yi - win:yi + win + 1, xi - win:xi + win + 1]
    return bool((np.abs(patch - np.array(colour)).max(axis=-1) < tol).any())


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path / "tomograms"


def test_row_label_text() -> None:
    assert row_label(Candidate(k=0, z=38.4, y=64.0, x=57.6, conf=None, source="label")) == "0: label (38,64,58)"
    assert row_label(Candidate(k=2, z=1.2, y=3.5, x=9.9, conf=0.871, source="prediction")) == "2: 0.87 (1,4,10)"
    assert row_label(Candidate(k=1, z=0, y=0, x=0)) == "1: ? (0,0,0)"


def test_names_sizes_and_progress(root: Path, tmp_path: Path) -> None:
    _make_tomo(root, "tomo_a")
    _make_tomo(root, "tomo_b", seed=1)
    df = pd.DataFrame([
        _row("FN", 1, "tomo_a", [_cand(0, (24, 40, 36), None), _cand(1, (20, 60, 30), 0.4)]),
        _row("FP", 2, "tomo_b", [_cand(1, (10, 20, 20), 0.9), _cand(2, (30, 70, 60), 0.3), _cand(3, (5, 5, 5), 0.2)]),
    ])
    cases_csv = _csv(df, tmp_path / "cases.csv")
    seen: list[tuple[int, int]] = []
    out = tmp_path / "images"
    paths = render_cases(read_cases(cases_csv), root, out, progress=lambda d, t: seen.append((d, t)), **OPTS)
    assert [p.name for p in paths] == [
        f"FN-1-tomo_a-{LABEL_SHAPE[0]}x{LABEL_SHAPE[1]}x{LABEL_SHAPE[2]}-spacing10.jpg",
        f"FP-2-tomo_b-{LABEL_SHAPE[0]}x{LABEL_SHAPE[1]}x{LABEL_SHAPE[2]}-spacing10.jpg",
    ]
    for path, n_rows in zip(paths, (2, 3), strict=True):
        assert path.parent == out
        with Image.open(path) as im:
            assert im.format == "JPEG"
            layout = Layout(n_rows=n_rows, panel_px=PANEL)
            assert im.size == (layout.width, layout.height)
    assert sorted(seen) == [(1, 2), (2, 2)]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_deterministic_and_workers_agree(root: Path, tmp_path: Path) -> None:
    for i in range(3):
        _make_tomo(root, f"t{i}", seed=i)
    df = pd.DataFrame([_row("FP", i + 1, f"t{i}", [_cand(1, (20 + i, 40, 40), 0.8)]) for i in range(3)])
    heat = np.zeros(SHAPE, dtype=np.float32)
    heat[20:24, 38:44, 38:44] = 0.9
    a = render_cases(df, root, tmp_path / "a", workers=1, heatmaps={"t0": heat}, **OPTS)
    b = render_cases(df, root, tmp_path / "b", workers=3, heatmaps=lambda t: heat if t == "t0" else None, **OPTS)
    c = render_cases(df, root, tmp_path / "a", workers=2, heatmaps={"t0": heat}, **OPTS)  # re-render in place
    assert len(a) == len(b) == len(c) == len(df) == 3  # one image per case: an empty result must not pass
    assert all(p.is_file() and p.stat().st_size > 0 for p in (*a, *b, *c))
    for pa, pb, pc in zip(a, b, c, strict=True):
        assert pa.read_bytes() == pb.read_bytes() == pc.read_bytes()


def test_rings_where_the_candidates_are(root: Path, tmp_path: Path) -> None:
    _make_tomo(root, "tomo_a")
    focus, other = (24, 40, 36), (24, 52, 48)  # same z, 12 voxels away in y and x: both in row 0's crop
    far_label = (24, 30, 26)  # a labeled motor that is not a candidate: a context mark
    row = _row("FN", 1, "tomo_a", [_cand(0, focus, None), _cand(1, other, 0.6)],
               labels=[_label(focus), _label(far_label)])
    out = render_case(row, root / "tomo_a", tmp_path / "x.jpg", **OPTS)
    img = _rgb(out)
    layout = Layout(n_rows=2, panel_px=PANEL)
    half, r_px = CROP // 2, RADIUS_A / STORED * SCALE
    for col in (0, 1, 2):  # XY panels: z-8, z, z+8; the candidates' z=24 is within 6 voxels only of z
        x, y = _panel_point(layout, 0, col, half, half)
        assert _near(img, x + r_px - 1.5, y, FOCUS_COLOUR)  # right edge of the focus ring
        assert _near(img, x - r_px + 1.5, y, FOCUS_COLOUR)  # left edge
    # the other candidate in row 0's z panel, relative position (dy, dx) = (12, 12) voxels
    x, y = _panel_point(layout, 0, 1, half + 12, half + 12)
    assert _near(img, x - r_px + 1.5, y, OTHER_COLOUR)
    assert not _near(img, x - r_px + 1.5, y, FOCUS_COLOUR)
    assert not _near(img, x + r_px - 1.5, y, OTHER_COLOUR)  # that edge is beyond the panel: clipped
    # the context label: a small green mark at its centre, (dy, dx) = (-10, -10), no ring around it
    x, y = _panel_point(layout, 0, 1, half - 10, half - 10)
    assert _near(img, x + MARK_PX / 2, y, LABEL_COLOUR, win=1)
    assert not _near(img, x - r_px + 1.5, y, LABEL_COLOUR)
    # row 1 is centred on candidate 1: cyan ring at the centre, the focus ring at (-12, -12)
    x, y = _panel_point(layout, 1, 1, half, half)
    assert _near(img, x + r_px - 1.5, y, OTHER_COLOUR)
    x, y = _panel_point(layout, 1, 1, half - 12, half - 12)
    assert _near(img, x + r_px - 1.5, y, FOCUS_COLOUR)
    # XZ panel of row 0 (x right, z down): focus at the centre, candidate 1 at dx=+12 (off-plane by 12 in y)
    x, y = _panel_point(layout, 0, 3, half, half)
    assert _near(img, x + r_px - 1.5, y, FOCUS_COLOUR)
    # nothing coloured far from every ring (a panel corner)
    x, y = _panel_point(layout, 0, 1, 1, CROP - 2)
    for colour in (FOCUS_COLOUR, OTHER_COLOUR, LABEL_COLOUR):
        assert not _near(img, x, y, colour)


def test_frame_conversion_puts_the_voxel_at_the_centre(root: Path, tmp_path: Path) -> None:
    stored = (20, 41, 37)
    _make_tomo(root, "tomo_a", bright=stored)
    label = _label(stored)
    assert label != [float(v) for v in stored]  # the frames really differ
    row = _row("FP", 1, "tomo_a", [{"k": 1, "z": label[0], "y": label[1], "x": label[2], "conf": 0.9}])
    out = render_case(row, root / "tomo_a", tmp_path / "x.jpg", **OPTS)
    img = _rgb(out)
    layout = Layout(n_rows=1, panel_px=PANEL)
    half = CROP // 2
    for col in (1, 3, 4):  # z, XZ, YZ: the bright cube sits at the crop centre
        px, py = layout.panel_origin(0, col)
        panel = img[py:py + PANEL, px:px + PANEL]
        white = (panel.min(axis=-1) > 225)  # white, not a coloured ring
        assert white.sum() >= 9, col
        ys, xs = np.nonzero(white)
        centre = (half + 0.5) * SCALE
        assert abs(xs.mean() - centre) <= SCALE and abs(ys.mean() - centre) <= SCALE, (col, xs.mean(), ys.mean())
    px, py = layout.panel_origin(0, 0)  # z-8: the cube (z 19..21) is not in that slice
    assert (img[py:py + PANEL, px:px + PANEL].min(axis=-1) > 225).sum() == 0


def test_only_the_needed_slices_are_read(root: Path, tmp_path: Path) -> None:
    tomo = _make_tomo(root, "tomo_a")
    cache = SliceCache(tomo, capacity=512)
    row = _row("FP", 1, "tomo_a", [_cand(1, (24, 40, 36), 0.9)])
    render_case(row, tomo, tmp_path / "x.jpg", slice_cache=cache, **OPTS)
    assert cache.reads == CROP < SHAPE[0]  # z 8..39 for XZ/YZ; the XY slices are among them
    render_case(row, tomo, tmp_path / "y.jpg", slice_cache=cache, **OPTS)
    assert cache.reads == CROP  # second case of the same tomogram: served from the cache


def test_edges_are_padded(root: Path, tmp_path: Path) -> None:
    _make_tomo(root, "tomo_a")
    near = (1, 2, 3)
    outside = (SHAPE[0] + 30, 10, 10)  # a prediction beyond the stored stack still renders
    row = _row("FP", 1, "tomo_a", [_cand(1, near, 0.9), _cand(2, outside, 0.1)])
    out = render_case(row, root / "tomo_a", tmp_path / "x.jpg", **OPTS)
    img = _rgb(out)
    layout = Layout(n_rows=2, panel_px=PANEL)
    half, r_px = CROP // 2, RADIUS_A / STORED * SCALE
    x, y = _panel_point(layout, 0, 1, 2, 2)  # crop voxel (2, 2) is outside the volume (y, x < 0)
    assert _near(img, x, y, PAD_COLOUR, tol=25, win=0)
    x, y = _panel_point(layout, 0, 1, half, half)  # the candidate's own voxel is inside
    assert not _near(img, x, y, PAD_COLOUR, tol=25, win=0)
    assert _near(img, x + r_px - 1.5, y, FOCUS_COLOUR)
    px, py = layout.panel_origin(1, 1)  # row 2 is wholly outside: a flat pad panel
    panel = img[py + 4:py + 20, px + 4:px + 20]
    assert np.abs(panel - np.array(PAD_COLOUR)).max() < 25


def test_heatmap_overlay_and_shape_check(root: Path, tmp_path: Path) -> None:
    _make_tomo(root, "tomo_a")
    row = _row("FP", 1, "tomo_a", [_cand(1, (24, 40, 36), 0.9)])
    plain = _rgb(render_case(row, root / "tomo_a", tmp_path / "p.jpg", **OPTS))
    heat = np.zeros(SHAPE, dtype=np.float32)
    heat[22:27, 38:43, 34:39] = 1.0
    hot = _rgb(render_case(row, root / "tomo_a", tmp_path / "h.jpg", heatmap=heat, **OPTS))
    layout, model = Layout(n_rows=1, panel_px=PANEL), Layout(n_rows=1, panel_px=PANEL, n_cols=6)
    assert plain.shape[1] == layout.width and hot.shape[1] == model.width  # the model panel is a sixth column
    x, y = (int(v) for v in _panel_point(model, 0, 5, CROP // 2, CROP // 2))
    raw_x, raw_y = (int(v) for v in _panel_point(model, 0, 1, CROP // 2, CROP // 2))
    assert np.ptp(hot[raw_y, raw_x]) < 30  # the raw z panel stays grey beside it
    assert np.ptp(hot[y, x]) > 60  # the model panel is coloured where the heat is
    cx, cy = (int(v) for v in _panel_point(model, 0, 5, 2, 2))
    rx, ry = (int(v) for v in _panel_point(model, 0, 1, 2, 2))
    assert np.abs(hot[cy, cx] - hot[ry, rx]).max() < 20  # zero heat: the model panel shows the raw slice
    with pytest.raises(InputError, match="heatmap"):
        render_case(row, root / "tomo_a", tmp_path / "bad.jpg", heatmap=np.zeros((4, 4, 4)), **OPTS)
    assert not (tmp_path / "bad.jpg").exists()


def test_missing_tomogram_names_the_tomo_id(root: Path, tmp_path: Path) -> None:
    _make_tomo(root, "tomo_a")
    df = pd.DataFrame([_row("FP", 1, "tomo_a", [_cand(1, (24, 40, 36), 0.9)]),
                       _row("FP", 2, "tomo_gone", [_cand(1, (24, 40, 36), 0.9)])])
    with pytest.raises(NotFoundError, match="tomo_gone"):
        render_cases(df, root, tmp_path / "out", **OPTS)
    assert not (tmp_path / "out").exists()  # checked before anything is written
    with pytest.raises(NotFoundError, match="tomo_gone"):
        render_case(df.iloc[1], root / "tomo_gone", tmp_path / "x.jpg", **OPTS)


def test_bad_rows_name_row_and_field(root: Path, tmp_path: Path) -> None:
    _make_tomo(root, "tomo_a")
    good = _row("FP", 1, "tomo_a", [_cand(1, (24, 40, 36), 0.9)])
    bad = dict(_row("FP", 2, "tomo_a", [_cand(1, (24, 40, 36), 0.9)]), candidates='[{"k": 1, "z": "up"}]')
    with pytest.raises(InputError) as err:
        render_cases(pd.DataFrame([good, bad]), root, tmp_path / "out", **OPTS)
    assert err.value.row == 3 and err.value.field == "candidates"  # line 3 of cases.csv: the second case
    assert not (tmp_path / "out").exists()
    evil = dict(good, image="../escape.jpg")
    with pytest.raises(InputError) as err:
        render_cases(pd.DataFrame([evil]), root, tmp_path / "out", **OPTS)
    assert err.value.field == "image"
    for field, value in (("focus_k", 3), ("candidates", "[]"), ("kind", "TP"), ("voxel_spacing", -1.0),
                         ("labels", "[[1, 2]]"), ("candidates", '[{"k": 1, "z": NaN, "y": 1, "x": 1}]')):
        with pytest.raises(InputError) as err:
            render_cases(pd.DataFrame([good, dict(good, **{field: value})]), root, tmp_path / "out", **OPTS)
        assert (err.value.row, err.value.field) == (3, field), (field, value, err.value)
    assert not (tmp_path / "out").exists()
    wrong = dict(good, tomo_id="tomo_b")  # render_case pointed at another tomogram's directory
    _make_tomo(root, "tomo_b")
    with pytest.raises(InputError, match="tomo_a"):
        render_case(wrong, root / "tomo_a", tmp_path / "x.jpg", **OPTS)


def test_default_options_render(root: Path, tmp_path: Path) -> None:
    """Defaults (128-voxel crop, 256 px panels) on a volume smaller than the crop."""
    _make_tomo(root, "tomo_a")
    row = _row("FN", 1, "tomo_a", [_cand(0, (24, 40, 36), None)])
    out = render_case(row, root / "tomo_a", tmp_path / "x.jpg")
    with Image.open(out) as im:
        assert im.size == (Layout(n_rows=1).width, Layout(n_rows=1).height)


def test_cases_from_find_cases_render(root: Path, tmp_path: Path) -> None:
    """The lead's miner writes cases.csv; every case it makes renders, rings on its candidates."""
    _make_tomo(root, "tomo_a")
    _make_tomo(root, "tomo_b", seed=1)
    labels = LabelSet.from_canonical(make_table([
        ("tomo_a", LABEL_SHAPE, LABEL, [_label((24, 40, 36))]),  # no prediction near: an FN case
        ("tomo_b", LABEL_SHAPE, LABEL, []),  # a confident prediction: an FP case
    ]))
    preds = pd.DataFrame([  # predictions in the original (here: label) frame
        {"tomo_id": "tomo_a", "particle": "motor", "conf": 0.6, "models": "r1/fold0", "voxel_spacing": LABEL,
         **dict(zip("zyx", _label((10, 80, 60)), strict=True))},
        {"tomo_id": "tomo_b", "particle": "motor", "conf": 0.9, "models": "r1/fold0", "voxel_spacing": LABEL,
         **dict(zip("zyx", _label((30, 50, 40)), strict=True))},
    ])
    settings = MiningSettings(radius_A=300.0, verify=False, galleries=False, confirm_threshold=None,
                              fp_threshold=None)
    cases = find_cases(labels, preds, settings=settings, label_version="gt", prediction_run="r1").cases
    assert sorted(c.kind for c in cases) == ["FN", "FP"]
    csv = write_cases(cases, tmp_path / "cases.csv")
    paths = render_cases(read_cases(csv), root, tmp_path / "images", **OPTS)
    assert [p.name for p in paths] == [c.image for c in cases]
    fp = next(i for i, c in enumerate(cases) if c.kind == "FP")
    img = _rgb(paths[fp])
    layout = Layout(n_rows=1, panel_px=PANEL)
    x, y = _panel_point(layout, 0, 1, CROP // 2, CROP // 2)
    assert _near(img, x + RADIUS_A / STORED * SCALE - 1.5, y, FOCUS_COLOUR)

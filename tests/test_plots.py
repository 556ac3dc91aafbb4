"""byu.plots: figures for versions, changes, split balance and review images (rendered with Agg)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from byu import plots
from byu.labels.diff import change_row, changes_frame
from byu.labels.splits import read_split
from byu.labels.store import LabelStore
from tests.ops_helpers import build_versions_root


@pytest.fixture
def root(tmp_path):
    return build_versions_root(tmp_path / "data")


def _png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def _bar_heights(fig: Figure) -> list[float]:
    ax = fig.axes[0]
    return [p.get_height() for p in ax.patches]


def test_version_order_puts_parents_first(root):
    store = LabelStore(root.labels)
    order = plots.version_order(store)
    assert sorted(order) == ["all_gt", "external_gt", "gt", "gt_v2"]
    assert order.index("gt") < order.index("gt_v2") < order.index("all_gt")
    assert order.index("external_gt") < order.index("all_gt")


def test_version_counts_and_plot(root, tmp_path):
    store = LabelStore(root.labels)
    counts = plots.version_counts(store).set_index("version")
    assert counts.loc["gt", ["tomograms", "motors"]].tolist() == [12, 8]
    assert counts.loc["gt_v2", "motors"] == 9
    assert counts.loc["all_gt", "parents"] == "gt_v2,external_gt"
    out = tmp_path / "figs" / "versions.png"
    fig = plots.plot_versions(store, out=out)
    assert isinstance(fig, Figure)
    heights = _bar_heights(fig)
    assert len(heights) == 3 * 4 and max(heights) == 18  # all_gt: 12 + 6 tomograms
    w, h = _png_size(out)
    assert w > 500 and h > 300
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temp file


def test_change_counts_single_and_per_version(root):
    store = LabelStore(root.labels)
    per_tomo = plots.change_counts(store.changes("gt_v2"))
    assert per_tomo.loc[:, ["add", "remove", "move"]].to_dict("index") == {
        "tomo_01": {"add": 1, "remove": 0, "move": 0},
        "tomo_02": {"add": 0, "remove": 1, "move": 0},
        "tomo_05": {"add": 1, "remove": 0, "move": 0},
        "tomo_07": {"add": 0, "remove": 0, "move": 1},
    }
    per_version = plots.change_counts(plots.store_changes(store))
    assert list(per_version.index) == ["gt_v2", "all_gt"]  # versions without a parent have no changes
    assert per_version.loc["gt_v2", ["add", "remove", "move"]].tolist() == [2, 1, 1]
    assert per_version.loc["all_gt", ["add", "add_tomo"]].tolist() == [4, 6]


def test_plot_label_diff_stacks_actions(root, tmp_path):
    store = LabelStore(root.labels)
    fig = plots.plot_label_diff(plots.store_changes(store), out=tmp_path / "per_version.png")
    # three stacked series (add, remove, move) over two versions; stacks total 4 each
    ax = fig.axes[0]
    tops = {}
    for p in ax.patches:
        x = round(p.get_x() + p.get_width() / 2, 3)
        tops[x] = max(tops.get(x, 0.0), p.get_y() + p.get_height())
    assert sorted(tops.values()) == [4.0, 4.0]
    fig = plots.plot_label_diff(store.changes("gt_v2"), title="gt_v2 vs gt", out=tmp_path / "gt_v2.png")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["tomo_01", "tomo_02", "tomo_05", "tomo_07"]
    assert "+2 added" in fig.axes[0].get_title() and "1 moved" in fig.axes[0].get_title()
    _png_size(tmp_path / "gt_v2.png")


def test_plot_label_diff_top_and_empty(tmp_path):
    rows = [change_row(f"t{i:02d}", "add", new=[1, 2, 3]) for i in range(10)]
    rows += [change_row("t05", "remove", old=[5, 5, 5]), change_row("t05", "keep")]
    fig = plots.plot_label_diff(changes_frame(rows), top=3)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "t05" and len(labels) == 3
    assert "top 3 shown" in fig.axes[0].get_title()
    empty = plots.plot_label_diff(changes_frame([]), out=tmp_path / "empty.png")
    assert "no label changes" in [t.get_text() for t in empty.axes[0].texts]
    _png_size(tmp_path / "empty.png")


def test_plot_split_balance_matches_split(root, tmp_path):
    store = LabelStore(root.labels)
    df = store.get("gt_v2")
    split = read_split(root.split_path("gt_v2", 4, 42))
    fig = plots.plot_split_balance(df, split, out=tmp_path / "split.png")
    ax = fig.axes[0]
    totals: dict[float, float] = {}
    for p in ax.patches:
        x = round(p.get_x() + p.get_width() / 2, 3)
        totals[x] = totals.get(x, 0.0) + p.get_height()
    expected = []
    for f in split["folds"]:
        expected += [len(f["train"]), len(f["val"])]
    assert [totals[k] for k in sorted(totals)] == expected
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0 motors", "1 motor", "2 motors"]
    _png_size(tmp_path / "split.png")


def test_plot_split_balance_flags_unknown_tomograms(root):
    store = LabelStore(root.labels)
    split = read_split(root.split_path("gt_v2", 4, 42))
    split["folds"][0]["train"] = [*split["folds"][0]["train"], "not_there"]
    fig = plots.plot_split_balance(store.get("gt_v2"), split)
    assert "not in table" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_plot_review_images(root, tmp_path):
    files = sorted((root.review / "round1" / "images").glob("*.jpg"))
    fig = plots.plot_review_images(files, max_images=1, out=tmp_path / "imgs.png")
    assert len(fig.axes) == 1 and fig.axes[0].get_title(loc="left") == files[0].name
    fig = plots.plot_review_images(files)
    assert len(fig.axes) == 2
    assert len(plots.plot_review_images([]).axes) == 1


def test_save_figure_formats(tmp_path):
    fig = Figure()
    fig.add_subplot().plot(np.arange(3))
    svg = plots.save_figure(fig, tmp_path / "a.svg")
    assert svg.read_text().lstrip().startswith("<?xml")
    png = plots.save_figure(fig, tmp_path / "a.png")
    Image.open(io.BytesIO(png.read_bytes())).verify()


def test_split_label_version_resolution(root, tmp_path):
    store = LabelStore(root.labels)
    v1 = root.cv / "v1" / "skf3_rd7.json"
    v2 = root.split_path("gt_v2", 4, 42)
    assert plots.split_label_version(store, v1, read_split(v1), cv_dir=root.cv) == "gt"        # v1 -> gt
    assert plots.split_label_version(store, v2, read_split(v2), cv_dir=root.cv) == "gt_v2"     # folder = version
    tagged = dict(read_split(v1), label_version="gt_v2")
    assert plots.split_label_version(store, tmp_path / "x.json", tagged) == "gt_v2"           # explicit key wins
    # unknown folder: the newest version holding exactly the split's tomograms (gt_v2 is newer than gt)
    assert plots.split_label_version(store, root.cv / "odd name" / "s.json", read_split(v1)) == "gt_v2"
    stranger = {"folds": [{"train": ["zz"], "val": []}]}
    assert plots.split_label_version(store, root.cv / "v9" / "s.json", stranger) is None

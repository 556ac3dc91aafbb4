"""Figures for label versions: motor counts per version, changes per version/tomogram, CV split balance, review images.

Every function builds a :class:`matplotlib.figure.Figure` directly (no pyplot state, so it is safe in threads,
scripts and notebooks alike; rendering goes through Agg), returns it, and when ``out`` is given also saves it
atomically (PNG unless the suffix says otherwise). In a notebook a returned figure displays itself; elsewhere
call :func:`save_figure`.

Used by ``notebooks/label_versions.ipynb`` and the demo report.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.colors
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import AutoLocator
from PIL import Image

from byu.atomic import write_bytes
from byu.errors import InputError
from byu.labels.diff import CHANGE_COLUMNS
from byu.labels.splits import split_balance
from byu.labels.store import LabelStore

# Okabe-Ito palette: readable for colour-blind viewers and in greyscale print.
ACTION_COLOURS = {"add": "#009E73", "remove": "#D55E00", "move": "#E69F00", "relabel": "#CC79A7"}
MOTOR_ACTIONS = ("add", "remove", "move", "relabel")  # every label change (any class)
COUNT_COLOURS = {"tomograms": "#BBBBBB", "tomograms_with_motors": "#56B4E9", "motors": "#0072B2"}
COUNT_LABELS = {"tomograms": "tomograms", "tomograms_with_motors": "tomograms with motors", "motors": "motors"}
DEFAULT_DPI = 120



def _integer_locator() -> AutoLocator:
    """Matplotlib's default tick locator, on whole numbers only (axes of counts)."""
    locator = AutoLocator()
    locator.set_params(integer=True)
    return locator

def save_figure(fig: Figure, path: str | Path, *, dpi: int = DEFAULT_DPI) -> Path:
    """Render ``fig`` and write it atomically to ``path`` (format from the suffix, PNG by default)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", facecolor="white")
    write_bytes(path, buf.getvalue())
    return path


def _finish(fig: Figure, out: str | Path | None) -> Figure:
    if out is not None:
        save_figure(fig, out)
    return fig


def _empty(fig: Figure, ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="#555555", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)


def _text_colour(colour: Any) -> str:
    """Black or white, whichever reads better on ``colour`` (relative luminance)."""
    r, g, b, _ = matplotlib.colors.to_rgba(colour)
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def _label_bars(ax: Any, bars: Any, *, fontsize: int = 8) -> None:
    for rect in bars:
        h = rect.get_height()
        if h > 0:
            ax.annotate(f"{int(round(h))}", (rect.get_x() + rect.get_width() / 2, h), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=fontsize)


# ----------------------------------------------------------------------------------------------
# versions


def version_order(store: LabelStore) -> list[str]:
    """Stored versions with every parent before its children; ties broken by creation time (manifest time, then
    file time: ``created_at`` has one-second resolution), then name."""
    manifests = {n: store.manifest(n) for n in store.names()}
    key = {n: (m.created_at, store.manifest_path(n).stat().st_mtime_ns, n) for n, m in manifests.items()}
    pending = {n: {p for p in m.parents if p in manifests} for n, m in manifests.items()}
    order: list[str] = []
    while pending:
        ready = sorted((n for n, ps in pending.items() if not ps), key=key.__getitem__)
        if not ready:  # a cycle cannot come from the store; fall back to time order rather than loop forever
            ready = sorted(pending, key=key.__getitem__)
        nxt = ready[0]
        order.append(nxt)
        del pending[nxt]
        for ps in pending.values():
            ps.discard(nxt)
    return order


def version_counts(store: LabelStore) -> pd.DataFrame:
    """One row per stored version (lineage order): parents, producer, created_at and the manifest's counts."""
    rows = []
    for name in version_order(store):
        m = store.manifest(name)
        rows.append({"version": name, "parents": ",".join(m.parents), "producer": m.producer,
                     "created_at": m.created_at, "tomograms": m.counts.get("tomograms", 0),
                     "tomograms_with_motors": m.counts.get("tomograms_with_motors", 0),
                     "motors": m.counts.get("motors", 0)})
    return pd.DataFrame(rows, columns=["version", "parents", "producer", "created_at", "tomograms",
                                       "tomograms_with_motors", "motors"])


def plot_versions(store: LabelStore, *, title: str | None = "Label versions",
                  out: str | Path | None = None) -> Figure:
    """Grouped bars per stored version: tomograms, tomograms with motors, motors (each version's parents below)."""
    counts = version_counts(store)
    n = len(counts)
    fig = Figure(figsize=(max(6.0, 1.5 + 1.4 * n), 4.2), layout="constrained")
    ax = fig.add_subplot()
    if n == 0:
        _empty(fig, ax, f"no label versions in {store.dir}")
        return _finish(fig, out)
    x = np.arange(n)
    keys = list(COUNT_COLOURS)
    width = 0.8 / len(keys)
    for i, k in enumerate(keys):
        bars = ax.bar(x + (i - (len(keys) - 1) / 2) * width, counts[k].to_numpy(), width,
                      color=COUNT_COLOURS[k], label=COUNT_LABELS[k], edgecolor="white", linewidth=0.5)
        _label_bars(ax, bars)
    ticks = [v if not p else f"{v}\n← {p.replace(',', ' + ')}"
             for v, p in zip(counts["version"], counts["parents"], strict=True)]
    ax.set_xticks(x, ticks, fontsize=9)
    ax.set_ylabel("count")
    ax.yaxis.set_major_locator(_integer_locator())
    ax.set_ylim(0, max(1, counts[keys].to_numpy().max()) * 1.15)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=9, loc="upper left", ncols=3)
    if title:
        ax.set_title(title)
    return _finish(fig, out)


# ----------------------------------------------------------------------------------------------
# changes


def change_counts(changes: pd.DataFrame | Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Counts of each action: per tomogram for one changes table, per version for a ``{version: changes}`` map.

    Columns ``add, remove, move`` (motors) then ``add_tomo, remove_tomo, keep`` (tomograms / kept labels); rows
    with no change at all are dropped for a single table and kept (all zeros) for a map.
    """
    cols = [*MOTOR_ACTIONS, "add_tomo", "remove_tomo", "keep"]
    if isinstance(changes, Mapping):
        rows = {}
        for version, ch in changes.items():
            vc = ch["action"].value_counts() if len(ch) else pd.Series(dtype="int64")
            rows[version] = {c: int(vc.get(c, 0)) for c in cols}
        out = pd.DataFrame.from_dict(rows, orient="index", columns=cols).astype("int64")
        out.index.name = "version"
        return out
    ch = changes.reindex(columns=CHANGE_COLUMNS)
    if ch.empty:
        out = pd.DataFrame(columns=cols, dtype="int64")
        out.index.name = "tomo_id"
        return out
    table = pd.crosstab(ch["tomo_id"].astype(str), ch["action"].astype(str)).reindex(columns=cols, fill_value=0)
    table = table[(table[list(MOTOR_ACTIONS) + ["add_tomo", "remove_tomo"]] > 0).any(axis=1)]
    table.columns.name = None
    table.index.name = "tomo_id"
    return table.astype("int64")


def store_changes(store: LabelStore, versions: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
    """``{version: changes table}`` for the given (default: all, lineage order) versions that have a parent."""
    names = list(versions) if versions is not None else version_order(store)
    return {n: store.changes(n) for n in names if store.manifest(n).parents}


def plot_label_diff(changes: pd.DataFrame | Mapping[str, pd.DataFrame], *, title: str | None = None,
                    top: int = 30, out: str | Path | None = None) -> Figure:
    """Stacked bars of added / removed / moved motors.

    ``changes`` is one version's ``.changes.csv`` table (one horizontal bar per changed tomogram, the ``top``
    most changed ones, most changed first) or a ``{version: changes}`` map (one bar per version, in map order).
    """
    per_version = isinstance(changes, Mapping)
    counts = change_counts(changes)
    motor = counts[list(MOTOR_ACTIONS)] if len(counts) else counts.reindex(columns=list(MOTOR_ACTIONS))
    if per_version:
        fig = Figure(figsize=(max(5.0, 1.5 + 1.2 * max(1, len(motor))), 4.0), layout="constrained")
        ax = fig.add_subplot()
        if motor.empty:
            _empty(fig, ax, "no version with a parent: nothing changed yet")
            return _finish(fig, out)
        x = np.arange(len(motor))
        bottom = np.zeros(len(motor))
        segments = (motor[list(MOTOR_ACTIONS)] > 0).sum(axis=1).to_numpy()
        for a in MOTOR_ACTIONS:
            vals = motor[a].to_numpy(dtype=float)
            bars = ax.bar(x, vals, 0.6, bottom=bottom, color=ACTION_COLOURS[a], label=a, edgecolor="white",
                          linewidth=0.5)
            for rect, v, b, nseg in zip(bars, vals, bottom, segments, strict=True):
                if v > 0 and nseg > 1:  # a stack of one action: its total above says it all
                    ax.text(rect.get_x() + rect.get_width() / 2, b + v / 2, f"{int(v)}", ha="center", va="center",
                            fontsize=8, color=_text_colour(ACTION_COLOURS[a]), fontweight="bold")
            bottom += vals
        for xi, total in zip(x, bottom, strict=True):
            ax.annotate(f"{int(total)}", (xi, total), xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize=9)
        extra = counts[["add_tomo", "remove_tomo"]]
        ticks = []
        for v in motor.index:
            t = str(v)
            if extra.loc[v, "add_tomo"] or extra.loc[v, "remove_tomo"]:
                t += f"\n+{extra.loc[v, 'add_tomo']} / −{extra.loc[v, 'remove_tomo']} tomos"
            ticks.append(t)
        ax.set_xticks(x, ticks, fontsize=9)
        ax.set_xlim(-0.5 - 0.5 * (len(x) < 3), len(x) - 0.5 + 0.5 * (len(x) < 3))
        ax.set_ylabel("picks changed vs parent")
        ax.yaxis.set_major_locator(_integer_locator())
        ax.set_ylim(0, max(1.0, bottom.max()) * 1.15)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(frameon=False, fontsize=9, loc="upper left", ncols=3)
        ax.set_title(title or "Changes per label version")
        return _finish(fig, out)

    motor = motor.assign(_total=motor.sum(axis=1)).sort_values(["_total"], ascending=False, kind="stable")
    n_changed = len(motor)
    shown = motor.head(max(1, top))
    fig = Figure(figsize=(7.0, max(2.5, 1.2 + 0.28 * len(shown))), layout="constrained")
    ax = fig.add_subplot()
    if shown.empty or shown["_total"].sum() == 0:
        _empty(fig, ax, "no label changes")
        ax.set_title(title or "Changes per tomogram")
        return _finish(fig, out)
    y = np.arange(len(shown))[::-1]
    left = np.zeros(len(shown))
    for a in MOTOR_ACTIONS:
        vals = shown[a].to_numpy(dtype=float)
        ax.barh(y, vals, 0.7, left=left, color=ACTION_COLOURS[a], label=a, edgecolor="white", linewidth=0.5)
        left += vals
    ax.set_yticks(y, list(shown.index), fontsize=8)
    ax.set_xlabel("picks")
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_xlim(0, max(1.0, left.max()) * 1.05)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=9, loc="center left", bbox_to_anchor=(1.0, 0.5))
    totals = {a: int(motor[a].sum()) for a in MOTOR_ACTIONS}
    sub = f"{n_changed} tomograms changed: +{totals['add']} added, −{totals['remove']} removed, " \
          f"{totals['move']} moved" + (f", {totals['relabel']} relabeled" if totals["relabel"] else "")
    if n_changed > len(shown):
        sub += f" (top {len(shown)} shown)"
    ax.set_title(f"{title}\n{sub}" if title else sub, fontsize=10)
    return _finish(fig, out)


# ----------------------------------------------------------------------------------------------
# splits


def split_label_version(store: LabelStore, split_path: str | Path, split: Mapping[str, Any],
                        *, cv_dir: str | Path | None = None) -> str | None:
    """The stored label version a split file was made from, or None when it cannot be told.

    In order: a ``label_version`` (or ``labels``) key in the split JSON; the split's folder under ``cv/``
    when it is a version name (``cv/gt_v2/skf5_rd42.json``); the flows' short folder names ``v1`` -> ``gt``
    and ``vN`` -> ``gt_vN``; else the newest version (lineage order) holding exactly the split's tomograms.
    """
    for key in ("label_version", "labels"):
        v = split.get(key)
        if isinstance(v, str) and store.exists(v):
            return v
    p = Path(split_path)
    folder = p.parent.name
    if cv_dir is not None:
        try:
            folder = p.relative_to(cv_dir).parts[0]
        except (ValueError, IndexError):
            pass
    candidates = [folder]
    if len(folder) > 1 and folder[0] == "v" and folder[1:].isdigit():
        candidates.append("gt" if folder == "v1" else f"gt_{folder}")
    for c in candidates:
        try:
            if store.exists(c):
                return c
        except InputError:  # a folder name that is not a valid version id
            continue
    ids = {t for f in split.get("folds", []) for part in ("train", "val") for t in f.get(part, [])}
    for name in reversed(version_order(store)):
        if set(store.get(name).tomo_ids) == ids:
            return name
    return None


def plot_class_balance(labels: Any, split: Mapping[str, Any], *, title: str | None = None,
                       out: str | Path | None = None) -> Figure:
    """Multi-class versions: per fold, validation tomograms holding each class (grouped bars, one per class)."""
    from byu.labels.splits import class_balance

    bal = class_balance(labels, dict(split))
    val = bal[bal["part"] == "val"].pivot(index="fold", columns="particle", values="tomograms")
    folds, classes = list(val.index), list(val.columns)
    fig = Figure(figsize=(max(6.0, 1.6 + 1.1 * len(folds) * max(1, len(classes)) / 2), 4.2), layout="constrained")
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["tab10"]
    width = 0.8 / max(1, len(classes))
    for i, c in enumerate(classes):
        bars = ax.bar(np.arange(len(folds)) + (i - (len(classes) - 1) / 2) * width, val[c].to_numpy(), width,
                      color=cmap(i % 10), label=c, edgecolor="white", linewidth=0.5)
        _label_bars(ax, bars)
    ax.set_xticks(np.arange(len(folds)), [f"fold {k}" for k in folds])
    ax.set_ylabel("validation tomograms holding the class")
    ax.yaxis.set_major_locator(_integer_locator())
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=9, loc="center left", bbox_to_anchor=(1.0, 0.5))
    name = title or "Split balance"
    ax.set_title(f"{name} ({split.get('num_folds', len(folds))} folds, seed {split.get('random_state', '?')})")
    return _finish(fig, out)


def plot_class_scores(table: pd.DataFrame, *, title: str | None = None, out: str | Path | None = None) -> Figure:
    """Per class (and ``all``), precision / recall / F-beta bars of a :func:`byu.metrics.scores_table`; one panel
    per metric."""
    metrics = list(dict.fromkeys(table["metric"])) if len(table) else []
    fig = Figure(figsize=(max(6.0, 2.0 + 1.3 * max((table["metric"] == m).sum() for m in metrics) if metrics
                              else 6.0), 3.4 * max(1, len(metrics))), layout="constrained")
    axes = fig.subplots(max(1, len(metrics)), 1, squeeze=False)[:, 0]
    if not metrics:
        _empty(fig, axes[0], "no scores")
        return _finish(fig, out)
    colours = {"precision": "#56B4E9", "recall": "#E69F00", "fbeta": "#009E73"}
    for ax, metric in zip(axes, metrics, strict=True):
        t = table[table["metric"] == metric]
        x = np.arange(len(t))
        for i, col in enumerate(("precision", "recall", "fbeta")):
            label = col if col != "fbeta" else f"F{t['beta'].iloc[0]:g}"
            bars = ax.bar(x + (i - 1) * 0.27, t[col].to_numpy(dtype=float), 0.27, color=colours[col], label=label)
            for rect, v in zip(bars, t[col].to_numpy(dtype=float), strict=True):
                ax.annotate(f"{v:.2f}", (rect.get_x() + rect.get_width() / 2, v), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, [f"{c}\n{tp}/{tp + fn} found, {fp} extra" for c, tp, fn, fp in
                          zip(t["class"], t["tp"], t["fn"], t["fp"], strict=True)], fontsize=8)
        ax.set_ylim(0, 1.12)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(frameon=False, fontsize=8, loc="upper left", ncols=3)
        ax.set_title(f"{metric}: {float(t['score'].iloc[0]):.3f}", fontsize=10, loc="left")
    if title:
        fig.suptitle(title)
    return _finish(fig, out)


def plot_split_balance(df: Any, split: Mapping[str, Any], *, title: str | None = None,
                       out: str | Path | None = None) -> Figure:
    """Per fold, a train and a val bar stacked by number of motors (``byu.labels.splits.split_balance``); for a
    multi-class version, validation tomograms per class (:func:`plot_class_balance`).

    Tomograms named in the split but missing from ``df`` are stacked as "not in table".
    """
    from byu.labels.splits import as_labels

    labels = as_labels(df)
    if not labels.is_motor_only:
        return plot_class_balance(labels, split, title=title, out=out)
    bal = split_balance(labels, dict(split))
    folds = len(split["folds"])
    fig = Figure(figsize=(max(6.0, 1.6 + 1.3 * folds), 4.2), layout="constrained")
    ax = fig.add_subplot()
    if bal.empty:
        _empty(fig, ax, "empty split")
        return _finish(fig, out)
    pivot = bal.pivot_table(index=["fold", "part"], columns="num_motors", values="tomograms", aggfunc="sum",
                            fill_value=0)
    pivot = pivot.reindex(pd.MultiIndex.from_product([range(folds), ["train", "val"]], names=["fold", "part"]),
                          fill_value=0)
    classes = sorted(pivot.columns)
    real = [c for c in classes if c >= 0]
    cmap = matplotlib.colormaps["viridis"]
    # one colour per motor count, the same in every split figure (4 and more share the last one)
    colours: dict[int, Any] = {c: cmap(0.1 + 0.85 * min(c, 4) / 4) for c in real}
    colours[-1] = "#CCCCCC"
    pos = []
    for k in range(folds):
        pos += [k * 3.0, k * 3.0 + 1.0]
    pos_arr = np.array(pos)
    bottom = np.zeros(len(pivot))
    for c in classes:
        vals = pivot[c].to_numpy(dtype=float)
        label = "not in table" if c < 0 else f"{c} motor{'s' if c != 1 else ''}"
        bars = ax.bar(pos_arr, vals, 0.9, bottom=bottom, color=colours[c], label=label, edgecolor="white",
                      linewidth=0.5)
        for rect, v, b in zip(bars, vals, bottom, strict=True):
            if v > 0 and v >= 0.06 * max(1.0, pivot.to_numpy().sum(axis=1).max()):
                ax.text(rect.get_x() + rect.get_width() / 2, b + v / 2, f"{int(v)}", ha="center", va="center",
                        fontsize=8, color=_text_colour(colours[c]))
        bottom += vals
    for p, total in zip(pos_arr, bottom, strict=True):
        ax.annotate(f"{int(total)}", (p, total), xytext=(0, 2), textcoords="offset points", ha="center",
                    va="bottom", fontsize=8)
    ax.set_xticks(pos_arr, ["train", "val"] * folds, fontsize=8)
    sec = ax.secondary_xaxis(-0.08)
    sec.set_xticks([k * 3.0 + 0.5 for k in range(folds)], [f"fold {k}" for k in range(folds)], fontsize=9)
    sec.tick_params(length=0)
    sec.spines["bottom"].set_visible(False)
    ax.set_ylabel("tomograms")
    ax.yaxis.set_major_locator(_integer_locator())
    ax.set_ylim(0, max(1.0, bottom.max()) * 1.12)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=9, loc="center left", bbox_to_anchor=(1.0, 0.5), title="per tomogram")
    name = title or "Split balance"
    ax.set_title(f"{name} ({split.get('num_folds', folds)} folds, seed {split.get('random_state', '?')})")
    return _finish(fig, out)


# ----------------------------------------------------------------------------------------------
# review images


def plot_review_images(paths: Sequence[str | Path], *, max_images: int = 4, width_in: float = 11.0,
                       title: str | None = None, out: str | Path | None = None) -> Figure:
    """The first ``max_images`` review case images, one per row at their own aspect ratio, titled by file name."""
    chosen = [Path(p) for p in list(paths)[: max(0, max_images)]]
    if not chosen:
        fig = Figure(figsize=(6.0, 1.5), layout="constrained")
        _empty(fig, fig.add_subplot(), "no review images")
        return _finish(fig, out)
    images: list[np.ndarray] = []
    for p in chosen:
        with Image.open(p) as im:
            images.append(np.asarray(im.convert("RGB")))
    heights = [width_in * im.shape[0] / im.shape[1] for im in images]
    fig = Figure(figsize=(width_in, sum(heights) + 0.35 * len(images) + (0.3 if title else 0.0)),
                 layout="constrained")
    axes = fig.subplots(len(images), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, pixels, p in zip(axes, images, chosen, strict=True):
        ax.imshow(pixels, interpolation="antialiased")
        ax.set_title(p.name, fontsize=9, loc="left")
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return _finish(fig, out)

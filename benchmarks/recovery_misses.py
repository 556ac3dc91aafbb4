"""Why a round missed what it missed: read the data roots that ``recovery.py --keep`` left and explain each miss.

    python benchmarks/recovery.py --seeds 13 22 --work runs --keep
    python benchmarks/recovery_misses.py runs/seed13 runs/seed22 --figure misses.png

Per cohort and class it prints how well the out-of-fold models tell the true particles from each kind of decoy
(AUC of the strongest prediction on the object: 1.0 = every true particle above every decoy), and for each planted
error the round did not fix, what the round saw there: the label's out-of-fold support, the round's confirm
threshold, the label's rank among the class's labels (1 = least believed) and how many cases reviewing every label
up to it would have cost, as cases per label change; for a missed or shifted particle, the strongest prediction at
its true position. ``--figure`` (.png or .jpg) draws each missed false label (three orthogonal slices through it)
beside the true particle of its class that the models believe about as much (and each missed background label:
the crowded world's). Reads every world's ``synth/`` tables (``truth_picks.csv``, ``decoys.csv``,
``planted_errors.csv``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from byu.labels.model import LabelSet  # noqa: E402
from byu.labels.store import LabelStore  # noqa: E402
from byu.matching import match_points  # noqa: E402
from byu.report import planted_errors_fixed  # noqa: E402
from byu.review.match import predicted_tomograms  # noqa: E402
from byu.tomo.io import read_meta, read_volume, tomo_dir  # noqa: E402


def label_supports(labels: LabelSet, preds: pd.DataFrame, tomo_ids: set[str]) -> pd.DataFrame:
    """Each label of a predicted tomogram with the confidence of the prediction matched to it one-to-one within
    its class's match radius (0 when none), as mining matches them."""
    rows = []
    groups = {key: g for key, g in preds.groupby(["tomo_id", "particle"], sort=False)}
    for (tid, name), lab in labels.picks.groupby(["tomo_id", "particle"], sort=False):
        if tid not in tomo_ids:
            continue
        spacing = labels.frame(tid)[1]
        g = groups.get((tid, name))
        conf = np.zeros(len(lab))
        if g is not None:
            m = match_points(lab[["z", "y", "x"]].to_numpy(float) * spacing,
                             g[["z", "y", "x"]].to_numpy(float) * g[["voxel_spacing"]].to_numpy(float),
                             labels.cls(name).match_radius_A)
            for i, j, _ in m.pairs:
                conf[i] = g["conf"].iloc[j]
        rows += [(tid, name, *zyx, c) for zyx, c in zip(lab[["z", "y", "x"]].to_numpy(float), conf, strict=True)]
    return pd.DataFrame(rows, columns=["tomo_id", "particle", "z", "y", "x", "support"])


def object_confidence(objects: pd.DataFrame, preds: pd.DataFrame, labels: LabelSet, particle: str) -> np.ndarray:
    """The strongest prediction of ``particle`` within the class's particle radius of each object."""
    radius = labels.cls(particle).radius
    out = np.zeros(len(objects))
    for n, row in enumerate(objects.itertuples(index=False)):
        g = preds[(preds["tomo_id"] == row.tomo_id) & (preds["particle"] == particle)]
        if len(g):
            spacing = labels.frame(row.tomo_id)[1]
            d = np.linalg.norm(g[["z", "y", "x"]].to_numpy(float) * g[["voxel_spacing"]].to_numpy(float)
                               - np.array([row.z, row.y, row.x]) * spacing, axis=1)
            near = d <= radius
            out[n] = float(g["conf"].to_numpy()[near].max()) if near.any() else 0.0
    return out


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a random positive scores above a random negative), ties counted half (NaN without both)."""
    if not len(pos) or not len(neg):
        return float("nan")
    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


class Cohort:
    """One kept data root of ``recovery.py``: its noisy labels, out-of-fold predictions, truth and report."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.report = json.loads((root / "demo_report.json").read_text())
        self.labels = LabelStore(root / "labels").get("gt")
        pred_path = root / "predictions" / "round1_oof.csv"
        self.preds = pd.read_csv(pred_path)
        self.preds = self.preds[self.preds["conf"] >= 0.05]
        ids = predicted_tomograms(pred_path)
        self.predicted = set(ids if ids is not None else self.preds["tomo_id"])
        synth = root / "synth"
        self.truth = pd.read_csv(synth / "truth_picks.csv")
        self.decoys = pd.read_csv(synth / "decoys.csv")
        if "mimics" not in self.decoys.columns:  # motor cohorts: every decoy is motor-sized
            self.decoys["mimics"] = self.labels.class_names[0]
        self.errors = pd.read_csv(synth / "planted_errors.csv")
        if "particle" not in self.errors.columns:
            self.errors["particle"] = self.labels.class_names[0]
        mining = json.loads((root / "review" / "round1" / "mining.json").read_text())
        bars = mining.get("classes") or {}
        self.confirm = {k: v["confirm"] for k, v in bars.items() if v.get("confirm") is not None}
        self.verify_bar = {k: v["verify"] for k, v in bars.items() if v.get("verify") is not None}
        self.supports = label_supports(self.labels, self.preds, self.predicted)
        verification = root / "review" / "round1" / "verification.csv"
        self.verification = pd.read_csv(verification).query("source == 'label'") if verification.exists() else None

    def seen(self, df: pd.DataFrame) -> pd.DataFrame:
        return df[df["tomo_id"].isin(self.predicted)]

    def discrimination(self) -> list[str]:
        lines = []
        for name in self.labels.class_names:
            true = self.seen(self.truth[self.truth["particle"] == name])
            conf_true = object_confidence(true, self.preds, self.labels, name)
            parts = [f"true {len(true)} median {np.median(conf_true) if len(true) else float('nan'):.2f}"]
            decoys = self.seen(self.decoys[self.decoys["mimics"] == name])
            for kind, d in decoys.groupby("kind", sort=True):
                conf = object_confidence(d, self.preds, self.labels, name)
                parts.append(f"{kind} {len(d)} median {np.median(conf):.2f} AUC {auc(conf_true, conf):.3f}")
            lines.append(f"    {name}: " + "; ".join(parts))
        return lines

    def unfixed(self) -> list[tuple[dict, pd.DataFrame]]:
        """The planted errors the round did not fix, each with its row of planted_errors.csv: recomputed on gt_v2
        where the data root has it (one row per error, also where a tomogram has several errors of a class and kind,
        as the crowded world plants them), else as the report lists them."""
        store = LabelStore(self.root / "labels")
        if "gt_v2" in store.names():
            fixed = planted_errors_fixed(self.errors, store.get("gt_v2"))
            rows = fixed[~fixed["fixed"]]
            return [(r, rows.iloc[[i]]) for i, r in enumerate(rows.to_dict("records"))]
        out = []
        for e in self.report.get("errors_not_fixed", []):
            name = e.get("particle", self.labels.class_names[0])
            out.append(({**e, "particle": name}, self.errors[
                (self.errors["tomo_id"] == e["tomo_id"]) & (self.errors["kind"] == e["kind"])
                & (self.errors["particle"] == name)]))
        return out

    def misses(self) -> list[dict]:
        """Each planted error the round did not fix, with what the round saw of it."""
        out = []
        cases, changes = self.report["review_images"], self.report["label_changes"]
        for e, err in self.unfixed():
            name = e["particle"]
            item = {"tomo_id": e["tomo_id"], "particle": name, "kind": e["kind"], "support": None,
                    "at_truth": None}
            if e["kind"] not in ("false", "background") and len(err):  # those have no true position
                true = err.iloc[:1][["tomo_id", "true_z", "true_y", "true_x"]].set_axis(
                    ["tomo_id", "z", "y", "x"], axis=1)
                item["at_truth"] = float(object_confidence(true, self.preds, self.labels, name)[0])
            if e["kind"] != "missed" and len(err):
                lz, ly, lx = err.iloc[0][["label_z", "label_y", "label_x"]].astype(float)
                sup = self.supports[self.supports["particle"] == name]
                here = sup[sup["tomo_id"] == e["tomo_id"]]
                d = np.linalg.norm(here[["z", "y", "x"]].to_numpy(float) - [lz, ly, lx], axis=1)
                if len(d) and d.min() < 1e-2:
                    s = float(here["support"].to_numpy()[int(np.argmin(d))])
                    thr = float(self.confirm.get(name, float("nan")))
                    extra = int(((sup["support"] >= thr) & (sup["support"] <= s)).sum()) if thr == thr else 0
                    item.update(support=s, confirm=thr, rank=int((sup["support"] <= s).sum()), of=len(sup),
                                load=(cases + extra) / max(1, changes + 1), zyx=(lz, ly, lx))
                item["verification"] = self.verified(name, e["tomo_id"], (lz, ly, lx))
            out.append(item)
        return out

    def verified(self, particle: str, tomo_id: str, zyx) -> float | None:
        """The label verifier's score of a label (None when the round did not verify its labels)."""
        if self.verification is None:
            return None
        v = self.verification
        here = v[(v["tomo_id"] == tomo_id) & (v["particle"] == particle)]
        d = np.linalg.norm(here[["z", "y", "x"]].to_numpy(float) - np.asarray(zyx, float), axis=1)
        return float(here["verification"].to_numpy()[int(np.argmin(d))]) if len(d) and d.min() < 1e-2 else None

    def twin(self, particle: str, support: float) -> tuple[str, tuple[float, float, float], float] | None:
        """The true particle of the class whose label support is closest to ``support``."""
        sup = self.supports[self.supports["particle"] == particle]
        truth = self.truth[self.truth["particle"] == particle]
        best = None
        for row in sup.itertuples(index=False):
            spacing = self.labels.frame(row.tomo_id)[1]
            t = truth[truth["tomo_id"] == row.tomo_id][["z", "y", "x"]].to_numpy(float)
            if not len(t) or np.linalg.norm(t - [row.z, row.y, row.x], axis=1).min() * spacing > 1.0:
                continue  # not a correct label
            gap = abs(row.support - support)
            if best is None or gap < best[0]:
                best = (gap, row.tomo_id, (row.z, row.y, row.x), row.support)
        return None if best is None else best[1:]


def crop_views(root: Path, tomo_id: str, zyx, half_A: float) -> list[np.ndarray]:
    """Three orthogonal slices (Z, Y, X) through ``zyx`` (tomogram frame), ``half_A`` Å either side."""
    directory = tomo_dir(root / "tomograms", tomo_id)
    meta = read_meta(directory)
    c = np.round(np.asarray(zyx, float) * meta.scale_from_original).astype(int)
    h = max(4, int(round(half_A / meta.voxel_spacing)))
    vol = read_volume(directory, (c[0] - h, c[0] + h + 1))
    pad_lo = max(0, h - c[0])
    vol = np.pad(vol, ((pad_lo, 2 * h + 1 - pad_lo - vol.shape[0]), (h, h), (h, h)), constant_values=128)
    cy, cx = c[1] + h, c[2] + h
    return [vol[h, cy - h:cy + h + 1, cx - h:cx + h + 1], vol[:, cy, cx - h:cx + h + 1],
            vol[:, cy - h:cy + h + 1, cx]]


def draw(rows: list[tuple[str, Path, str, tuple, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.6 * len(rows)), squeeze=False)
    for r, (title, root, tomo_id, zyx, half_A) in enumerate(rows):
        for a, (img, view) in enumerate(zip(crop_views(root, tomo_id, zyx, half_A), ("Z", "Y", "X"), strict=True)):
            ax = axes[r][a]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{view} slice", fontsize=8)
        axes[r][0].set_ylabel(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", type=Path, nargs="+", help="data roots kept by recovery.py --keep")
    ap.add_argument("--figure", type=Path, default=None, help="draw each missed false label beside a true particle")
    args = ap.parse_args(argv)
    figure = []
    for root in args.roots:
        cohort = Cohort(root)
        r = cohort.report
        print(f"{root}: {r['errors_fixed']}/{r['planted_errors']} fixed, {r['cases_reviewed']} cases, "
              f"{r['label_changes']} changes")
        print("  how the out-of-fold models see true particles and decoys (strongest prediction on the object):")
        print("\n".join(cohort.discrimination()))
        for m in cohort.misses():
            seen = [] if m["at_truth"] is None else [f"strongest prediction at the true position {m['at_truth']:.2f}"]
            if m["support"] is not None:
                seen.insert(0, f"label support {m['support']:.2f}, confirm threshold {m['confirm']:.2f}, rank "
                               f"{m['rank']} of {m['of']} labels from the least believed; reviewing every label up "
                               f"to it: {m['load']:.2f} cases per change")
            if m.get("verification") is not None:
                bar = cohort.verify_bar.get(m["particle"])
                seen.append(f"verification {m['verification']:.2f}" + (f" (reviewed below {bar:.2f})" if bar else ""))
            print(f"  not fixed: {m['tomo_id']} {m['particle']} {m['kind']}: " + ("; ".join(seen) or "not seen"))
            if args.figure and m["kind"] in ("false", "background") and m["support"] is not None:
                half = 4.0 * cohort.labels.cls(m["particle"]).radius
                figure.append((f"{root.name} {m['tomo_id']}\n{m['kind']} {m['particle']} label\nsupport "
                               f"{m['support']:.2f}", root, m["tomo_id"], m["zyx"], half))
                twin = cohort.twin(m["particle"], m["support"])
                if twin is not None:
                    figure.append((f"{root.name} {twin[0]}\ntrue {m['particle']}\nsupport {twin[2]:.2f}", root,
                                   twin[0], twin[1], half))
    if args.figure and figure:
        draw(figure, args.figure)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

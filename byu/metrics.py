"""Scores of predictions against labels; every distance is compared in Å.

- :func:`score_byu`: the BYU Kaggle metric. Per tomogram, the single most confident prediction (at or above
  ``threshold``) or "no motor"; a tomogram is predicted positive when it has a prediction and, if it has labelled
  motors, the prediction lies within ``radius`` (1000 Å) of one of them; F-beta (beta=2) of that binary
  prediction against "has a labelled motor". (A far prediction in a tomogram with a motor counts as a miss, not
  as a false positive, exactly as in the competition's ``distance_metric``.)
- :func:`score_multi`: all predictions at or above ``threshold`` matched one-to-one, nearest first, to the
  labelled particles within ``radius`` (:func:`byu.matching.match_points`); TP/FP/FN summed over tomograms.
  Used where tomograms hold several motors (the synthetic cohort) and for validation.
- :func:`score_czii`: the CZII Kaggle metric: per class, a labelled particle is found when a pick of that class
  lies within ``distance_multiplier`` (0.5) x the class radius; TP = labelled particles found, FP = picks - TP,
  FN = labelled - TP, summed over tomograms (micro-average); per-class F-beta (beta=4), then the weighted mean with
  the published weights (divided by the sum of all weights, as the Kaggle metric does).

Predictions are tables with ``tomo_id, particle, z, y, x, conf, voxel_spacing`` (voxel coordinates at that
spacing); motor labels are canonical label tables; CZII labels are picks tables whose coordinates are in Å unless
they carry a ``voxel_spacing`` column.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

from byu.errors import InputError
from byu.matching import match_points

BYU_RADIUS = 1000.0
CZII_RADII = {
    "apo-ferritin": 60.0, "beta-amylase": 65.0, "beta-galactosidase": 90.0, "ribosome": 150.0,
    "thyroglobulin": 130.0, "virus-like-particle": 135.0,
}
CZII_WEIGHTS = {
    "apo-ferritin": 1.0, "beta-amylase": 0.0, "beta-galactosidase": 2.0, "ribosome": 1.0, "thyroglobulin": 2.0,
    "virus-like-particle": 1.0,
}


def fbeta(tp: float, fp: float, fn: float, beta: float) -> float:
    """F-beta from counts; 0 when undefined."""
    b2 = beta * beta
    denom = (1 + b2) * tp + b2 * fn + fp
    return float((1 + b2) * tp / denom) if denom > 0 and tp > 0 else 0.0


@dataclass
class Counts:
    """TP/FP/FN with the derived precision, recall and F-beta."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    beta: float = 2.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp > 0 else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn > 0 else 0.0

    @property
    def fbeta(self) -> float:
        return fbeta(self.tp, self.fp, self.fn, self.beta)

    def as_dict(self) -> dict[str, float]:
        return {"fbeta": self.fbeta, "precision": self.precision, "recall": self.recall,
                "tp": self.tp, "fp": self.fp, "fn": self.fn, "beta": self.beta}


@dataclass
class Score:
    """A metric's value plus its parts (per class for multi-class metrics)."""

    metric: str
    score: float
    total: Counts
    per_class: dict[str, Counts] = field(default_factory=dict)
    n_tomograms: int = 0
    params: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"metric": self.metric, "score": self.score, **{k: v for k, v in self.total.as_dict().items()},
                "n_tomograms": self.n_tomograms, "params": dict(self.params),
                "per_class": {k: c.as_dict() for k, c in self.per_class.items()}}

    def table(self) -> pd.DataFrame:
        """Per-class rows (and ``all``) of precision, recall, F-beta and counts."""
        rows = [{"class": k, **c.as_dict()} for k, c in self.per_class.items()]
        rows.append({"class": "all", **self.total.as_dict()})
        return pd.DataFrame(rows)


def _pred_angstrom(pred: pd.DataFrame) -> np.ndarray:
    if "voxel_spacing" not in pred.columns:
        raise InputError("predictions need a voxel_spacing column to be compared in Å", field="voxel_spacing")
    return pred[["z", "y", "x"]].to_numpy(dtype=float) * pred["voxel_spacing"].to_numpy(dtype=float)[:, None]


def _scope(labels_ids: Sequence[str], tomo_ids: Sequence[str] | None) -> list[str]:
    ids = list(dict.fromkeys(labels_ids))
    if tomo_ids is None:
        return ids
    known = set(ids)
    missing = [t for t in tomo_ids if t not in known]
    if missing:
        raise InputError(f"{len(missing)} tomogram(s) to score have no labels: {', '.join(map(str, missing[:10]))}",
                         field="tomo_id")
    return list(dict.fromkeys(tomo_ids))


def _motors_angstrom(labels: pd.DataFrame) -> dict[str, np.ndarray]:
    return {r.tomo_id: np.asarray(r.motor_zyx, dtype=float).reshape(-1, 3) * float(r.voxel_spacing)
            for r in labels.itertuples(index=False)}


def score_byu(pred: pd.DataFrame, labels: pd.DataFrame, *, threshold: float = 0.0, radius: float = BYU_RADIUS,
              beta: float = 2.0, tomo_ids: Sequence[str] | None = None) -> Score:
    """The BYU competition F-beta (top prediction per tomogram; see the module docstring).

    ``labels`` is a canonical table; ``tomo_ids`` (default: all labelled tomograms) is the scored set.
    """
    scope = _scope(labels["tomo_id"], tomo_ids)
    motors = _motors_angstrom(labels)
    p = pred[(pred["conf"] >= threshold)]
    if "particle" in p.columns:
        p = p[p["particle"] == "motor"]
    p = p[p["tomo_id"].isin(scope)]
    top = p.sort_values("conf", ascending=False, kind="stable").drop_duplicates("tomo_id")
    top_pos = dict(zip(top["tomo_id"], _pred_angstrom(top), strict=True)) if len(top) else {}
    c = Counts(beta=beta)
    for t in scope:
        has = len(motors[t]) > 0
        guess = t in top_pos
        if guess and has:
            guess = float(np.min(np.linalg.norm(motors[t] - top_pos[t], axis=1))) <= radius
        c.tp += int(has and guess)
        c.fp += int(guess and not has)
        c.fn += int(has and not guess)
    return Score(metric="byu", score=c.fbeta, total=c, per_class={"motor": c}, n_tomograms=len(scope),
                 params={"threshold": threshold, "radius": radius, "beta": beta})


def score_multi(pred: pd.DataFrame, labels: pd.DataFrame, *, threshold: float = 0.5,
                radius: float | Mapping[str, float] = BYU_RADIUS, beta: float = 2.0,
                tomo_ids: Sequence[str] | None = None) -> Score:
    """F-beta of all predictions >= ``threshold`` matched one-to-one within ``radius`` Å (per class if a mapping).

    ``labels``: a canonical table (class ``motor``) or a long table ``tomo_id, particle, z, y, x`` in Å, or in
    voxels with a ``voxel_spacing`` column.
    """
    if "motor_zyx" in labels.columns:
        from byu.labels.table import motor_points

        long = motor_points(labels)
        label_ids = list(labels["tomo_id"])
    else:
        long = labels
        label_ids = list(labels["tomo_id"])
    scope = _scope(label_ids, tomo_ids)
    long = long[long["tomo_id"].isin(scope)]
    spacing = long["voxel_spacing"].to_numpy(dtype=float) if "voxel_spacing" in long.columns else np.ones(len(long))
    lab_a = long[["z", "y", "x"]].to_numpy(dtype=float) * spacing[:, None]
    p = pred[(pred["conf"] >= threshold) & pred["tomo_id"].isin(scope)]
    pred_a = _pred_angstrom(p) if len(p) else np.zeros((0, 3))
    classes = list(dict.fromkeys(list(long["particle"]) + list(p["particle"])))
    per: dict[str, Counts] = {}
    total = Counts(beta=beta)
    lab_t, lab_c = long["tomo_id"].to_numpy(), long["particle"].to_numpy()
    pr_t, pr_c = p["tomo_id"].to_numpy(), p["particle"].to_numpy()
    for cls in classes:
        r = radius[cls] if isinstance(radius, Mapping) else float(radius)
        c = Counts(beta=beta)
        for t in scope:
            a = pred_a[(pr_t == t) & (pr_c == cls)]
            b = lab_a[(lab_t == t) & (lab_c == cls)]
            m = match_points(a, b, r)
            c.tp += len(m.pairs)
            c.fp += len(m.unmatched_a)
            c.fn += len(m.unmatched_b)
        per[cls] = c
        total.tp, total.fp, total.fn = total.tp + c.tp, total.fp + c.fp, total.fn + c.fn
    return Score(metric="multi", score=total.fbeta, total=total, per_class=per, n_tomograms=len(scope),
                 params={"threshold": threshold, "beta": beta,
                         **({"radius": float(radius)} if not isinstance(radius, Mapping) else {})})


def _czii_counts(ref: np.ndarray, cand: np.ndarray, radius: float) -> tuple[int, int, int]:
    """The Kaggle CZII counting: TP = reference particles with a pick within ``radius`` (each counted once)."""
    if len(ref) == 0:
        return 0, len(cand), 0
    if len(cand) == 0:
        return 0, 0, len(ref)
    hit = np.any(cdist(cand, ref) <= radius, axis=0)
    tp = int(hit.sum())
    return tp, len(cand) - tp, len(ref) - tp


def score_czii(pred: pd.DataFrame, labels: pd.DataFrame, *, threshold: float = 0.0, beta: float = 4.0,
               distance_multiplier: float = 0.5, radii: Mapping[str, float] | None = None,
               weights: Mapping[str, float] | None = None, tomo_ids: Sequence[str] | None = None) -> Score:
    """The CZII Kaggle metric (see the module docstring) with per-class precision/recall.

    ``labels``: long table ``tomo_id, particle, z, y, x`` in Å, or in voxels with a ``voxel_spacing`` column.
    Predictions of tomograms outside the labels are ignored; classes outside ``radii`` are an error.
    """
    radii = dict(CZII_RADII if radii is None else radii)
    weights = dict(CZII_WEIGHTS if weights is None else weights)
    scope = _scope(labels["tomo_id"], tomo_ids)
    lab = labels[labels["tomo_id"].isin(scope)]
    lab_spacing = lab["voxel_spacing"].to_numpy(dtype=float) if "voxel_spacing" in lab.columns else 1.0
    lab_a = lab[["z", "y", "x"]].to_numpy(dtype=float) * np.reshape(lab_spacing, (-1, 1))
    p = pred[(pred["conf"] >= threshold) & pred["tomo_id"].isin(scope)]
    unknown = sorted((set(p["particle"]) | set(lab["particle"])) - set(radii))
    if unknown:
        raise InputError(f"unknown particle class(es) {unknown}; known: {sorted(radii)}", field="particle")
    pred_a = _pred_angstrom(p) if len(p) else np.zeros((0, 3))
    lab_t, lab_c = lab["tomo_id"].to_numpy(), lab["particle"].to_numpy()
    pr_t, pr_c = p["tomo_id"].to_numpy(), p["particle"].to_numpy()
    per: dict[str, Counts] = {}
    total = Counts(beta=beta)
    for cls in dict.fromkeys(lab["particle"]):  # as Kaggle: the classes present in the solution
        c = Counts(beta=beta)
        for t in scope:
            tp, fp, fn = _czii_counts(lab_a[(lab_t == t) & (lab_c == cls)], pred_a[(pr_t == t) & (pr_c == cls)],
                                      radii[cls] * distance_multiplier)
            c.tp, c.fp, c.fn = c.tp + tp, c.fp + fp, c.fn + fn
        per[cls] = c
        total.tp, total.fp, total.fn = total.tp + c.tp, total.fp + c.fp, total.fn + c.fn
    wsum = sum(weights.values())
    value = (sum(per[k].fbeta * weights.get(k, 1.0) for k in per) / wsum if wsum > 0
             else float(np.mean([c.fbeta for c in per.values()])) if per else 0.0)
    return Score(metric="czii", score=float(value), total=total, per_class=per, n_tomograms=len(scope),
                 params={"threshold": threshold, "beta": beta, "distance_multiplier": distance_multiplier})


def best_threshold(pred: pd.DataFrame, labels: pd.DataFrame, *, metric: str = "multi",
                   thresholds: Sequence[float] | None = None, **kwargs) -> tuple[float, Score]:
    """The threshold (from ``thresholds``, default 0.05..0.95) giving the highest score, and that score."""
    grid = list(thresholds) if thresholds is not None else [round(x, 2) for x in np.arange(0.05, 0.96, 0.05)]
    scorers: dict[str, Callable[..., Score]] = {"multi": score_multi, "byu": score_byu, "czii": score_czii}
    fn = scorers[metric]
    if not grid:
        raise InputError("no thresholds to try", field="thresholds")
    scored = [(th, fn(pred, labels, threshold=th, **kwargs)) for th in grid]
    return max(scored, key=lambda ts: ts[1].score)  # the first of equal scores, as the lowest threshold


def _long(labels) -> pd.DataFrame:
    """``tomo_id, particle, z, y, x, voxel_spacing`` of a LabelSet (each pick in its tomogram's frame)."""
    out = labels.picks.loc[:, ["tomo_id", "particle", "z", "y", "x"]].copy()
    out["voxel_spacing"] = out["tomo_id"].map(labels.spacing_of()).astype(float)
    return out


def score_predictions(pred: pd.DataFrame, labels, *, metric: str = "auto", threshold: float | None = None,
                      beta: float | None = None, tomo_ids: Sequence[str] | None = None) -> list[Score]:
    """Scores of predictions against a label version (a :class:`~byu.labels.model.LabelSet`), per class.

    ``auto``: a motor version gets the BYU F2 (top-1 per tomogram, 1000 Å, threshold 0.5) and the multi-motor F2;
    other versions the CZII F-beta (beta 4, a hit within half the class radius, the classes' weights, threshold 0)
    and the one-to-one F2 within each class's match radius (``multi``). ``byu``, ``multi`` or ``czii`` pick one.
    """
    from byu.labels.formats import to_canonical

    if metric not in ("auto", "byu", "multi", "czii"):
        raise InputError(f"unknown metric {metric!r}; choose auto, byu, multi or czii", field="metric")
    scope = [t for t in (tomo_ids if tomo_ids is not None else labels.tomo_ids) if t in set(labels.tomo_ids)]
    out: list[Score] = []
    if labels.is_motor_only:
        table = to_canonical(labels)
        th = threshold if threshold is not None else 0.5
        if metric in ("auto", "byu"):
            out.append(score_byu(pred, table, threshold=th, beta=beta or 2.0, tomo_ids=scope))
        if metric in ("auto", "multi"):
            out.append(score_multi(pred, table, threshold=th, beta=beta or 2.0, tomo_ids=scope))
        if metric == "czii":
            out.append(score_czii(pred, _long(labels), threshold=threshold or 0.0, beta=beta or 4.0, tomo_ids=scope,
                                  radii={c.name: c.radius for c in labels.classes},
                                  weights={c.name: c.weight for c in labels.classes}))
        return out
    if metric == "byu":
        raise InputError("the BYU metric scores motors only; this version holds other classes", field="metric")
    long = _long(labels)
    if metric in ("auto", "czii"):
        out.append(score_czii(pred[pred["particle"].isin(labels.class_names)], long,
                              threshold=threshold if threshold is not None else 0.0, beta=beta or 4.0,
                              tomo_ids=scope, radii={c.name: c.radius for c in labels.classes},
                              weights={c.name: c.weight for c in labels.classes}))
    if metric in ("auto", "multi"):
        out.append(score_multi(pred[pred["particle"].isin(labels.class_names)], long,
                               threshold=threshold if threshold is not None else 0.5, beta=beta or 2.0,
                               radius={c.name: c.match_radius_A for c in labels.classes}, tomo_ids=scope))
    return out


def compare_versions(candidate, reference, *, beta: float | None = None,
                     tomo_ids: Sequence[str] | None = None) -> list[Score]:
    """How well version ``candidate`` agrees with version ``reference`` (treated as the truth), per class: every
    pick of ``candidate`` is a prediction of confidence 1 (same metrics as :func:`score_predictions`)."""
    pred = _long(candidate).assign(conf=1.0, models="")
    shared = [t for t in reference.tomo_ids if t in set(candidate.tomo_ids)]
    scope = shared if tomo_ids is None else [t for t in tomo_ids if t in set(shared)]
    return score_predictions(pred, reference, threshold=1.0, beta=beta, tomo_ids=scope)


def scores_table(scores: Sequence[Score]) -> pd.DataFrame:
    """One row per metric and class (and ``all``): precision, recall, F-beta, TP/FP/FN, and the metric's value."""
    frames = [s.table().assign(metric=s.metric, score=s.score) for s in scores]
    cols = ["metric", "class", "precision", "recall", "fbeta", "tp", "fp", "fn", "beta", "score"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def score_picks(pred: pd.DataFrame, picks: pd.DataFrame, *, metric: str = "auto", threshold: float | None = None,
                beta: float | None = None, tomo_ids: Sequence[str] | None = None) -> list[Score]:
    """Scores against a bare picks table (:func:`read_picks_table`: no tomogram frames needed): the CZII metric
    (``auto``/``czii``) or the one-to-one F-beta within half each class's radius (``multi``)."""
    from byu.labels.classes import BUILTIN_CLASSES

    if tomo_ids is not None:
        tomo_ids = [t for t in tomo_ids if t in set(picks["tomo_id"])]
    if metric in ("auto", "czii"):
        return [score_czii(pred, picks, beta=beta or 4.0, threshold=threshold or 0.0, tomo_ids=tomo_ids)]
    if metric == "multi":
        radius = {c: BUILTIN_CLASSES[c].radius * 0.5 if c in BUILTIN_CLASSES else BYU_RADIUS
                  for c in set(picks["particle"]) | set(pred["particle"])}
        return [score_multi(pred, picks, radius=radius, beta=beta or 2.0, threshold=threshold or 0.0,
                            tomo_ids=tomo_ids)]
    raise InputError(f"the {metric} metric needs a label version (tomograms and classes), not bare picks",
                     field="metric")


def read_picks_table(path) -> pd.DataFrame:
    """A picks CSV as scored by the CZII metric (``tomo_id,particle,z,y,x[,conf][,voxel_spacing]``): without a
    ``voxel_spacing`` column the coordinates are Å (spacing 1.0)."""
    from byu.labels.formats import _read_raw, read_picks

    table = read_picks(path)
    raw = _read_raw(path)
    if "voxel_spacing" in raw.columns:
        spacing = pd.to_numeric(raw["voxel_spacing"], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~(np.isfinite(spacing) & (spacing > 0)))
        if len(bad):
            raise InputError(f"voxel spacing must be a positive number, got {raw['voxel_spacing'].iloc[bad[0]]!r}",
                             file=path, row=int(raw["__line__"].iloc[bad[0]]), field="voxel_spacing")
        table["voxel_spacing"] = spacing
    else:
        table["voxel_spacing"] = 1.0
    return table


__all__ = ["BYU_RADIUS", "CZII_RADII", "CZII_WEIGHTS", "Counts", "Score", "best_threshold", "compare_versions",
           "fbeta", "read_picks_table", "score_byu", "score_czii", "score_multi", "score_picks", "score_predictions",
           "scores_table"]

"""Mine a round's review cases in three steps: score, choose, assemble.

1. :func:`score_round` — every label and every prediction at or above the threshold, per tomogram and class:
   predictions are matched one-to-one (nearest first) to the labels of their class within the class's match
   radius (``radius_A`` overrides it), in Å. A label's **support** is the confidence of the prediction that matched
   it (0: unmatched); with a label verifier (:mod:`byu.review.verify`), every label and prediction also has a
   **verification**. Per class, the bars below are calibrated here: the confirm threshold (``"auto"``:
   :data:`~byu.review.settings.SUPPORT_FRACTION` of the median support of the class's labels in this round, so a
   faint small particle is not reviewed wholesale and a half-believed motor is), the threshold an unlabeled
   prediction needs to be shown (``"auto"``: :data:`~byu.review.settings.FP_FRACTION` of the confirm threshold), and
   the verification below which a label is doubted (the ``verify_quantile`` of the class's verification, scaled by
   the verifier's own out-of-fold separation: none at all for a verifier that cannot tell labels from unlabeled
   predictions).
2. :func:`choose_review` — from those scores alone: a label is reviewed when no prediction matched it
   (``unmatched``), only a weak one did (``weak``) or the verifier doubts it (``unverified``); in galleries, every
   other label of a class is reviewed (``audit``) when its verifier was measured and ranks its labels no better than
   chance (so no score says which of them are wrong) and that costs at most ``audit_load`` gallery images per label
   of the class already in doubt; an unmatched prediction near an unmatched label of its class (within
   :data:`OWN_RADII` match radii; of another class: within both match radii — a pick of the wrong class) is a
   candidate of that label's case (a shift, a missed neighbour; the case takes the ``max_candidates`` best, as below,
   not the nearest); the other unmatched predictions above their class's bar are offered best first (most verified
   where the class's verifier ranks at all, else strongest; those another class explains — on another class's label,
   or a large class's peak on a more believed small particle — after all the rest) within a per-class **budget**
   (``"auto"``: every one the models believe at least as much as the ``offer_recall`` share of the class's supported
   labels, since a particle the labels missed looks to them like the labeled ones, and at least one per labeled
   particle and a gallery; or a reviewer-set number), so one crowded tomogram can hold many items and an empty one
   none, and a class the models cannot tell from its look-alikes is searched deeper than one they rank well.
3. :func:`assemble_cases` — cases from the choice: an unmatched label with candidates is a single-particle ``FN``
   case (its context matters); the other labels to review go into ``GL`` galleries and the offered predictions
   into ``GP`` galleries, ``gallery_size`` crops of one class per image, most doubtful labels and most believed
   predictions first. Without galleries every reviewed label is an ``FN`` case and the offered predictions fill
   ``FP`` cases of ``max_candidates`` per tomogram and class (at most ``max_fp_cases`` of them).

:func:`find_cases` runs the three. Cases are in review order: single-particle cases by how doubtful they are
(FN ``1 -`` the support, or the strongest prediction of the class within twice the match radius; FP the strongest
candidate), then galleries of labels, then galleries of predictions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

from byu.errors import InputError, NotFoundError
from byu.labels.model import LabelSet
from byu.matching import match_points
from byu.review.cases import Candidate, Case, Frame, LabelPoint, gallery_image_name, image_name
from byu.review.quality import KnownItem, known_candidate, known_pool
from byu.review.settings import FP_FRACTION, SUPPORT_FRACTION, MiningSettings
from byu.review.verify import Verification


def predicted_tomograms(predictions: str | Path) -> list[str] | None:
    """The tomograms a predictions run covered, from its ``.json`` sidecar (``None`` when there is none).

    A tomogram with no peak has no row in the CSV, so only the sidecar tells "predicted, nothing found" from
    "never predicted"; mining the latter would turn every labeled pick into an FN case.
    """
    sidecar = Path(predictions).with_suffix(".json")
    if not sidecar.exists():
        return None
    try:
        ids = json.loads(sidecar.read_text()).get("tomo_ids")
    except (json.JSONDecodeError, AttributeError, RecursionError) as exc:
        raise InputError(f"not a predictions sidecar: {type(exc).__name__}", file=sidecar) from None
    return list(ids) if isinstance(ids, list) else None


MIN_CALIBRATION_LABELS = 8  # fewer matched labels of a class: its fixed fallback threshold applies
FALLBACK_CONFIRM = 0.6
MIN_CONFIRM = 0.05
OWN_RADII = 4.0  # an unmatched label's case shows the free predictions of its class within this many match radii
VERIFIER_USELESS_AUC = 0.6  # a verifier separating labels from unlabeled predictions no better: no label reviewed
VERIFIER_GOOD_AUC = 0.9  # from here on the full verify_quantile of a class's labels is reviewed
#: a class whose particle radius is at least this many times another's is "larger" (one of its peaks on a particle
#: of the smaller class is that particle seen by the wrong channel)
SIZE_RATIO = 1.5


def calibrated_thresholds(supports: dict[str, list[float]], *, fallback: float = FALLBACK_CONFIRM,
                          fraction: float = SUPPORT_FRACTION) -> dict[str, float]:
    """Per class, the confidence below which a label counts as weakly believed: ``fraction`` of the median
    confidence of the predictions that match the class's labels (at least ``MIN_CONFIRM``); ``fallback`` for a
    class with fewer than ``MIN_CALIBRATION_LABELS`` supported labels.

    Relative to the class's own median because out-of-fold confidence is on a different scale per class: a motor
    model that sees motors at 0.95 half-believes a label at 0.6, a small-particle model that sees its particles at
    0.5 does not."""
    out = {}
    for name, values in supports.items():
        v = np.asarray(values, dtype=float)
        if len(v) < MIN_CALIBRATION_LABELS:
            out[name] = float(fallback)
            continue
        out[name] = float(max(MIN_CONFIRM, fraction * np.median(v)))
    return out


def verifier_weight(auc: float | None) -> float:
    """The share of ``verify_quantile`` a verifier of out-of-fold separation ``auc`` is given: 0 up to
    :data:`VERIFIER_USELESS_AUC` (an inverted or useless verifier sends no label to review), rising linearly to 1
    at :data:`VERIFIER_GOOD_AUC`."""
    if auc is None or not np.isfinite(auc):
        return 0.0
    return float(np.clip((auc - VERIFIER_USELESS_AUC) / (VERIFIER_GOOD_AUC - VERIFIER_USELESS_AUC), 0.0, 1.0))


# ----------------------------------------------------------------------------------------------------------------
# 1. score


@dataclass(frozen=True)
class ClassBars:
    """What a class's scores were judged against in this round."""

    match_radius_A: float
    labels: int
    supported: int  # labels a prediction matched
    median_support: float | None
    confirm: float | None  # a matched label below this is "weak"
    fp: float | None  # an unlabeled prediction below this is not offered
    verifier_auc: float | None  # the verifier's own out-of-fold separation (labels vs unlabeled predictions)
    verify_quantile: float | None  # the share of the class's labels the verifier may send to review
    verify: float | None  # a label verified below this is "unverified"

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class MiningScores:
    """Every label and prediction of a round's tomograms, scored (see the module docstring).

    ``labels`` (index: rows of the version's picks): ``tomo_id, particle, z, y, x`` (label frame), ``support`` (0:
    unmatched), ``matched`` (the prediction row, -1), ``verification`` (NaN: not verified). ``predictions`` (index:
    rows of the predictions run, those at or above the threshold of the version's classes): ``tomo_id, particle, z,
    y, x`` (in the label frame of its tomogram), ``conf``, ``verification``, ``label`` (the picks row it matched,
    -1), ``quality`` (how much it looks like the class's labels: its verification where the class's verifier
    separates labels from unlabeled predictions at all, else its confidence), ``explained`` (an unlabeled prediction
    another class explains: on a label of another class, or a peak of a larger class on a more believed particle of
    a smaller one; :func:`explained_elsewhere`)."""

    labels: pd.DataFrame
    predictions: pd.DataFrame
    classes: dict[str, ClassBars]
    frames: dict[str, Frame]
    tomo_ids: list[str]
    context: dict[str, tuple[LabelPoint, ...]] = field(default_factory=dict)


def _class_bars(settings: MiningSettings, labels: pd.DataFrame, radius: dict[str, float],
                verification: Verification | None) -> dict[str, ClassBars]:
    supports = {name: labels.loc[(labels["particle"] == name) & (labels["matched"] >= 0), "support"].tolist()
                for name in radius}
    ct = settings.confirm_threshold
    confirm: dict[str, float | None] = dict(calibrated_thresholds(supports)) if ct == "auto" else \
        {name: (None if ct is None else float(ct)) for name in radius}
    out = {}
    for name, r in radius.items():
        mine = labels[labels["particle"] == name]
        fp_setting = settings.fp_threshold
        c = confirm[name]
        fp = None if fp_setting is None else (FP_FRACTION * c if c is not None else None) \
            if fp_setting == "auto" else float(fp_setting)
        auc = verification.separation.get(name) if verification is not None else None
        q = None
        bar = None
        values = mine["verification"].dropna().to_numpy(float)
        if verification is not None and settings.verify and len(values) >= MIN_CALIBRATION_LABELS:
            q = settings.verify_quantile * verifier_weight(auc)
            bar = float(np.quantile(values, q)) if q > 0 else None
        sup = supports[name]
        out[name] = ClassBars(match_radius_A=r, labels=int(len(mine)), supported=len(sup),
                              median_support=float(np.median(sup)) if sup else None, confirm=c, fp=fp,
                              verifier_auc=auc, verify_quantile=q, verify=bar)
    return out


def _support_ecdf(lab_table: pd.DataFrame, pred_table: pd.DataFrame) -> np.ndarray:
    """Per prediction, the share of its class's matched labels supported less than it: its confidence on the
    scale of what its own channel gives the class's labels (out of fold, so comparable across classes)."""
    out = np.zeros(len(pred_table))
    for name, rows in pred_table.groupby("particle", sort=False).indices.items():
        sup = np.sort(lab_table.loc[(lab_table["particle"] == name) & (lab_table["matched"] >= 0),
                                    "support"].to_numpy(float))
        conf = pred_table["conf"].to_numpy(float)[rows]
        out[rows] = np.searchsorted(sup, conf, side="right") / len(sup) if len(sup) else 0.0
    return out


def explained_elsewhere(lab_table: pd.DataFrame, pred_table: pd.DataFrame, size: dict[str, float],
                        frames: dict[str, Frame]) -> np.ndarray:
    """Which unlabeled predictions another class explains (bool per row of ``pred_table``), by the classes'
    particle radii ``size`` (Å; not their match radii, which for a motor say how far a pick may be off):

    - one within the smaller particle's radius of a label of another class: that labeled particle, seen by the
      wrong channel (two particles' centres cannot be that close);
    - one of a larger class (:data:`SIZE_RATIO`) within the smaller particle's radius of a prediction of the smaller
      class which its own channel believes more, each confidence placed on its class's scale
      (:func:`_support_ecdf`): a ribosome peak on an apo-ferritin. Only the larger class is explained away: a small
      particle's peak beside a large one's is a real neighbour as often as not.

    Such a prediction is offered after every other one of its class."""
    out = np.zeros(len(pred_table), bool)
    free = pred_table["label"].to_numpy(np.int64) < 0
    if not free.any():
        return out
    scale = _support_ecdf(lab_table, pred_table)
    labs = {key: g for key, g in lab_table.groupby(["tomo_id", "particle"], sort=False)}
    preds = {key: g for key, g in pred_table.groupby(["tomo_id", "particle"], sort=False)}
    pos = {row: i for i, row in enumerate(pred_table.index)}
    for (tid, name), g in preds.items():
        g = g[g["label"] < 0]
        if not len(g):
            continue
        s = frames[str(tid)].voxel_spacing
        here = g[["z", "y", "x"]].to_numpy(float) * s
        rows = np.array([pos[r] for r in g.index])
        hit = np.zeros(len(g), bool)
        for other, r_other in size.items():
            if other == name:
                continue
            close = min(r_other, size[str(name)])
            lab = labs.get((tid, other))
            if lab is not None and len(lab):
                d = cdist(here, lab[["z", "y", "x"]].to_numpy(float) * s).min(axis=1)
                hit |= d <= close
            op = preds.get((tid, other))
            if op is not None and len(op) and size[str(name)] >= SIZE_RATIO * r_other:
                d = cdist(here, op[["z", "y", "x"]].to_numpy(float) * s)
                theirs = scale[[pos[r] for r in op.index]]
                believed = (d <= close) & (theirs[None, :] > scale[rows][:, None])
                hit |= believed.any(axis=1)
        out[rows] = hit
    return out


def score_round(labels: LabelSet, predictions: pd.DataFrame, *, settings: MiningSettings | None = None,
                tomo_ids: Sequence[str] | None = None, verification: Verification | None = None,
                label_version: str = "", prediction_run: str = "") -> MiningScores:
    """Score every label and prediction of the tomograms ``tomo_ids`` (default: every tomogram of the version).

    Only tomograms that were actually predicted should be passed: one absent from ``predictions`` turns every
    labeled pick into an unmatched one. Predictions of classes the version does not cover are ignored."""
    settings = settings or MiningSettings()
    if "voxel_spacing" not in predictions.columns:
        raise InputError("predictions lack the voxel_spacing column: distances are compared in Å",
                         file=prediction_run or None, field="voxel_spacing")
    known = set(labels.tomo_ids)
    ids = labels.tomo_ids if tomo_ids is None else list(dict.fromkeys(tomo_ids))
    unknown = sorted(set(ids) - known)
    if unknown:
        raise NotFoundError(f"tomo_id(s) not in the label version {label_version or ''}: {unknown[:10]}")
    classes = {c.name: c for c in labels.classes}
    radius = {name: float(settings.radius_A) if settings.radius_A is not None else c.match_radius_A
              for name, c in classes.items()}
    frames = {str(r.tomo_id): Frame(tomo_id=str(r.tomo_id), Z=int(r.Z), Y=int(r.Y), X=int(r.X),
                                    voxel_spacing=float(r.voxel_spacing))
              for r in labels.tomograms.itertuples(index=False) if r.tomo_id in set(ids)}
    preds = predictions[(predictions["conf"] >= settings.threshold) & predictions["particle"].isin(list(classes))
                        & predictions["tomo_id"].isin(ids)]
    preds = preds.sort_values(["conf"], ascending=False, kind="stable")
    spacing = preds["tomo_id"].map({t: f.voxel_spacing for t, f in frames.items()}).to_numpy(float)
    pred_vox = preds[["z", "y", "x"]].to_numpy(float) * (preds["voxel_spacing"].to_numpy(float) / spacing)[:, None]
    pred_ver = verification.predictions.reindex(preds.index).to_numpy(float) if verification is not None \
        else np.full(len(preds), np.nan)
    pred_table = pd.DataFrame({"tomo_id": preds["tomo_id"].astype(str).to_numpy(),
                               "particle": preds["particle"].astype(str).to_numpy(),
                               "z": pred_vox[:, 0], "y": pred_vox[:, 1], "x": pred_vox[:, 2],
                               "conf": preds["conf"].to_numpy(float), "verification": pred_ver,
                               "label": np.full(len(preds), -1, np.int64)}, index=preds.index)
    picks = labels.picks[labels.picks["tomo_id"].isin(set(ids))]
    lab_ver = verification.labels.reindex(picks.index).to_numpy(float) if verification is not None \
        else np.full(len(picks), np.nan)
    lab_table = pd.DataFrame({"tomo_id": picks["tomo_id"].astype(str).to_numpy(),
                              "particle": picks["particle"].astype(str).to_numpy(),
                              "z": picks["z"].to_numpy(float), "y": picks["y"].to_numpy(float),
                              "x": picks["x"].to_numpy(float), "support": np.zeros(len(picks)),
                              "matched": np.full(len(picks), -1, np.int64), "verification": lab_ver},
                             index=picks.index)
    pred_groups = {key: g for key, g in pred_table.groupby(["tomo_id", "particle"], sort=False)}
    support = lab_table["support"].to_numpy(float).copy()
    matched = lab_table["matched"].to_numpy(np.int64).copy()
    label_of = pred_table["label"].to_numpy(np.int64).copy()
    lab_pos = {row: i for i, row in enumerate(lab_table.index)}
    pred_pos = {row: i for i, row in enumerate(pred_table.index)}
    for (tid, name), lab in lab_table.groupby(["tomo_id", "particle"], sort=False):
        g = pred_groups.get((tid, name))
        if g is None or not len(g):
            continue
        s = frames[str(tid)].voxel_spacing
        m = match_points(lab[["z", "y", "x"]].to_numpy(float) * s, g[["z", "y", "x"]].to_numpy(float) * s,
                         radius[str(name)])
        for a, b, _ in m.pairs:
            la, pb = lab.index[a], g.index[b]
            support[lab_pos[la]] = float(g["conf"].iloc[b])
            matched[lab_pos[la]] = int(pb)
            label_of[pred_pos[pb]] = int(la)
    lab_table["support"] = support
    lab_table["matched"] = matched
    pred_table["label"] = label_of
    pred_table["explained"] = explained_elsewhere(lab_table, pred_table, {n: float(c.radius) for n, c in
                                                                          classes.items()}, frames)
    q = pred_table["verification"].to_numpy(float)
    # a verifier that cannot tell the class's labels from its unlabeled predictions ranks those predictions at
    # random: then the models' confidence orders them
    ranks = {c: verification is not None and verifier_weight(verification.separation.get(c)) > 0 for c in classes}
    useful = pred_table["particle"].map(ranks).fillna(False).to_numpy(bool)
    pred_table["quality"] = np.where(np.isfinite(q) & useful, q, pred_table["conf"].to_numpy(float))
    context = {t: tuple(LabelPoint(particle=str(r.particle), z=float(r.z), y=float(r.y), x=float(r.x))
                        for r in g.itertuples(index=False)) for t, g in lab_table.groupby("tomo_id", sort=False)}
    return MiningScores(labels=lab_table, predictions=pred_table, classes=_class_bars(settings, lab_table, radius,
                                                                                       verification),
                        frames=frames, tomo_ids=ids, context=context)


# ----------------------------------------------------------------------------------------------------------------
# 2. choose


REASON_ORDER = {"unmatched": 0, "weak": 1, "unverified": 2, "audit": 3}


@dataclass
class ReviewPlan:
    """What a round shows: ``labels`` (index: picks rows; ``reason``, ``owned``: the prediction rows shown with it)
    and ``offered`` (index: prediction rows of unlabeled predictions offered on their own, best first per class;
    ``rank``); ``budget`` per class: ``offered``, ``hidden`` (above the class's bar but beyond the budget),
    ``below_bar``."""

    labels: pd.DataFrame
    offered: pd.DataFrame
    budget: dict[str, dict[str, int]]


def _best_first(preds: pd.DataFrame) -> pd.DataFrame:
    """Predictions in the order a round shows them: those another class explains last, then by quality (the
    verification where the class's verifier ranks at all, else the models' confidence), then confidence."""
    return preds.sort_values(["explained", "quality", "conf"], ascending=[True, False, False], kind="stable")


def _reach(preds: pd.DataFrame, name: str, above: pd.DataFrame, recall: float) -> int:
    """How many of ``above`` (a class's unlabeled predictions over its bar, best first) an ``auto`` budget offers
    so that it reaches about ``recall`` of the particles the labels missed: a missed particle looks to the models
    like the labeled ones (they are the same species), so those believed at least as much as the ``recall`` share
    of the class's supported labels (by the same quality the offer is ordered by). Predictions another class
    explains do not count. Fewer than :data:`MIN_CALIBRATION_LABELS` supported labels: 0."""
    matched = preds.loc[(preds["particle"] == name) & (preds["label"] >= 0), "quality"].to_numpy(float)
    if len(matched) < MIN_CALIBRATION_LABELS:
        return 0
    cut = float(np.quantile(matched, 1.0 - recall))
    mine = above[~above["explained"].astype(bool)]
    return int((mine["quality"].to_numpy(float) >= cut).sum())


def _may_be_shifted(scores: MiningScores, reviewed: pd.DataFrame, free: pd.DataFrame) -> pd.Series:
    """Reviewed labels only weakly supported (reason ``weak``) with a prediction of ``free`` (the
    ones no gallery offers) of their class within :data:`OWN_RADII` match radii that the models believe more than
    their own support and no other class explains: perhaps a shift. In a gallery such a label could only be kept or
    removed, and the particle's peak would never be shown, so it gets a case with those predictions as
    candidates (a shift whose peak is offered is fixed in galleries: the label removed, the peak added)."""
    out = pd.Series(False, index=reviewed.index)
    weak = reviewed[reviewed["reason"] == "weak"]
    cand = free[~free["explained"].astype(bool)]
    groups = {key: g for key, g in cand.groupby(["tomo_id", "particle"], sort=False)}
    for (tid, name), lab in weak.groupby(["tomo_id", "particle"], sort=False):
        g = groups.get((tid, name))
        if g is None or not len(g):
            continue
        s = scores.frames[str(tid)].voxel_spacing
        d = cdist(lab[["z", "y", "x"]].to_numpy(float) * s, g[["z", "y", "x"]].to_numpy(float) * s)
        stronger = g["conf"].to_numpy(float)[None, :] > lab["support"].to_numpy(float)[:, None]
        out[lab.index] = ((d <= OWN_RADII * scores.classes[str(name)].match_radius_A) & stronger).any(axis=1)
    return out


def _owners(scores: MiningScores, reviewed: pd.DataFrame, settings: MiningSettings, *,
            unmatched_only: bool, free_rows: Sequence[int] | None = None) -> tuple[dict[int, list[int]], list[int]]:
    """Free predictions (``free_rows``, default every unmatched one) owned by a reviewed label's case (label row ->
    prediction rows, best first), and the rest (prediction rows)."""
    preds = scores.predictions
    free = preds[preds["label"] < 0] if free_rows is None else preds.loc[list(free_rows)]
    radius = {name: bars.match_radius_A for name, bars in scores.classes.items()}
    owners_pool = reviewed[reviewed["reason"] == "unmatched"] if unmatched_only else reviewed
    owned: dict[int, list[int]] = {int(i): [] for i in owners_pool.index}
    rest: list[int] = []
    free = _best_first(free)  # as offered predictions are; a case takes its first max_candidates
    by_tomo = {t: g for t, g in owners_pool.groupby("tomo_id", sort=False)}
    for t, g in free.groupby("tomo_id", sort=False):
        own = by_tomo.get(str(t))
        if own is None or not len(own):
            rest += [int(j) for j in g.index]
            continue
        s = scores.frames[str(t)].voxel_spacing
        own_A = own[["z", "y", "x"]].to_numpy(float) * s
        own_cls = own["particle"].to_numpy(object)
        own_r = np.array([radius[str(c)] for c in own_cls])
        for j, p in zip(g.index, g[["z", "y", "x"]].to_numpy(float) * s, strict=True):
            cls = str(preds.at[j, "particle"])
            d = np.linalg.norm(own_A - p, axis=1)
            same = (own_cls == cls) & (d <= OWN_RADII * own_r)
            near = (own_cls != cls) & (d <= np.minimum(own_r, radius[cls]))
            pool = np.flatnonzero(same) if same.any() else np.flatnonzero(near)
            placed = False
            for i in sorted(pool, key=lambda i: (float(d[i]), int(own.index[i]))):
                if len(owned[int(own.index[i])]) < settings.max_candidates:
                    owned[int(own.index[i])].append(int(j))
                    placed = True
                break  # the nearest owner only: a full case does not pass its candidate on
            if not placed:
                rest.append(int(j))
    return owned, rest


def choose_review(scores: MiningScores, settings: MiningSettings | None = None) -> ReviewPlan:
    """Which labels are reviewed, which predictions are shown with them and which are offered on their own."""
    settings = settings or MiningSettings()
    lab = scores.labels
    reasons = pd.Series("", index=lab.index, dtype=object)
    for name, bars in scores.classes.items():
        mine = lab["particle"] == name
        unmatched = mine & (lab["matched"] < 0)
        weak = mine & (lab["matched"] >= 0) & (bars.confirm is not None) & \
            (lab["support"] < (bars.confirm if bars.confirm is not None else -1.0))
        doubted = mine & (bars.verify is not None) & \
            (lab["verification"] < (bars.verify if bars.verify is not None else -1.0))
        reasons[doubted] = "unverified"
        reasons[weak] = "weak"
        reasons[unmatched] = "unmatched"
        if settings.galleries and settings.audit_load is not None and bars.verify_quantile == 0:
            rest = mine & (reasons == "")  # verified, and the verifier ranks no label: none of these is vouched for
            in_doubt = int((mine & (reasons != "")).sum())
            if rest.any() and math.ceil(int(rest.sum()) / settings.gallery_size) <= settings.audit_load * in_doubt:
                reasons[rest] = "audit"
    reviewed = lab[reasons != ""].assign(reason=reasons[reasons != ""])
    owned, rest = _owners(scores, reviewed, settings, unmatched_only=settings.galleries)
    reviewed = reviewed.assign(owned=[owned.get(int(i), []) for i in reviewed.index])
    preds = scores.predictions
    pool = preds.loc[rest]
    offered_parts, budget = [], {}
    for name, bars in scores.classes.items():
        mine = pool[pool["particle"] == name]
        above = mine[mine["conf"] >= bars.fp] if bars.fp is not None else mine
        above = _best_first(above)
        if settings.budget != "auto":
            n = int(settings.budget)
        elif not settings.galleries:
            n = len(above)  # single FP cases: their count per tomogram (max_fp_cases) is the budget
        else:
            n = max(settings.gallery_size, bars.labels, _reach(preds, name, above, settings.offer_recall))
        chosen = above.iloc[:n]
        offered_parts.append(chosen.assign(rank=np.arange(1, len(chosen) + 1)))
        budget[name] = {"offered": int(len(chosen)), "hidden": int(len(above) - len(chosen)),
                        "explained_elsewhere": int(above["explained"].sum()),
                        "below_bar": int(len(mine) - len(above))}
    offered = pd.concat(offered_parts) if offered_parts else preds.iloc[0:0].assign(rank=[])
    if settings.galleries:
        shown = set(offered.index)
        unseen = [j for j in rest if j not in shown]
        shifted = reviewed[_may_be_shifted(scores, reviewed, preds.loc[unseen])]
        if len(shifted):
            more, _ = _owners(scores, shifted, settings, unmatched_only=False, free_rows=unseen)
            owned.update({i: js for i, js in more.items() if js})
            reviewed = reviewed.assign(owned=[owned.get(int(i), []) for i in reviewed.index])
    return ReviewPlan(labels=reviewed, offered=offered, budget=budget)


# ----------------------------------------------------------------------------------------------------------------
# 3. assemble


def _cand(k: int, particle: str, zyx, conf: float | None, source: str, frame: Frame | None = None) -> Candidate:
    own = {} if frame is None else frame.model_dump()
    zyx = np.asarray(zyx, dtype=float)
    return Candidate(k=k, particle=particle, z=round(float(zyx[0]), 3), y=round(float(zyx[1]), 3),
                     x=round(float(zyx[2]), 3), conf=None if conf is None else round(float(conf), 6),
                     source=source, **own)  # type: ignore[arg-type]


def _single_base(scores: MiningScores, tid: str, label_version: str, prediction_run: str) -> dict:
    f = scores.frames[tid]
    return {"tomo_id": tid, "Z": f.Z, "Y": f.Y, "X": f.X, "voxel_spacing": f.voxel_spacing,
            "label_version": label_version, "prediction_run": prediction_run, "labels": scores.context.get(tid, ())}


def _fn_score(scores: MiningScores, row: pd.Series, i: int) -> float:
    if row["reason"] == "weak":
        return 1.0 - float(row["support"])
    if row["reason"] == "unverified":
        return 1.0 - float(row["verification"])
    preds = scores.predictions
    same = preds[(preds["tomo_id"] == row["tomo_id"]) & (preds["particle"] == row["particle"])]
    if not len(same):
        return 1.0
    s = scores.frames[str(row["tomo_id"])].voxel_spacing
    d = np.linalg.norm((same[["z", "y", "x"]].to_numpy(float) - row[["z", "y", "x"]].to_numpy(float)) * s, axis=1)
    near = d <= 2 * scores.classes[str(row["particle"])].match_radius_A
    return 1.0 - (float(same["conf"].to_numpy(float)[near].max()) if near.any() else 0.0)


def _with_known(cands: list[Candidate], pool: list[KnownItem], n: int, source: str) -> list[Candidate]:
    """``cands`` with up to ``n`` known-answer items of ``pool`` (taken from it) spread among them, renumbered."""
    extra = [pool.pop(0) for _ in range(min(n, len(pool)))]
    if not extra:
        return cands
    out: list[Candidate | KnownItem] = list(cands)
    step = max(1, (len(cands) + len(extra)) // len(extra))
    for i, item in enumerate(extra):
        out.insert(min(len(out), i * step + step // 2), item)
    return [known_candidate(x, k + 1, source) if isinstance(x, KnownItem) else x.model_copy(update={"k": k + 1})
            for k, x in enumerate(out)]


def assemble_cases(scores: MiningScores, plan: ReviewPlan, settings: MiningSettings | None = None, *,
                   label_version: str = "", prediction_run: str = "",
                   known: dict[str, list[KnownItem]] | None = None) -> list[Case]:
    """The cases of a plan, in review order (see the module docstring); ``known``: known-answer items per class
    (:func:`byu.review.quality.known_pool`), mixed into the galleries at ``settings.known_rate``."""
    settings = settings or MiningSettings()
    known = {k: list(v) for k, v in (known or {}).items()}
    n_known = max(1, int(round(settings.known_rate * settings.gallery_size))) if settings.known_rate and known else 0
    size = max(1, settings.gallery_size - n_known)
    preds = scores.predictions
    singles: list[dict] = []
    galleries: dict[str, list[tuple[str, str, list[Candidate], float]]] = {"GL": [], "GP": []}
    gallery_labels: dict[str, list[int]] = {}
    for i, row in plan.labels.iterrows():
        name, tid = str(row["particle"]), str(row["tomo_id"])
        owned = list(row["owned"])
        if settings.galleries and not owned:
            gallery_labels.setdefault(name, []).append(int(i))
            continue
        cands = [_cand(0, name, row[["z", "y", "x"]], None, "label")]
        cands += [_cand(n + 1, str(preds.at[j, "particle"]), preds.loc[j, ["z", "y", "x"]], preds.at[j, "conf"],
                        "prediction") for n, j in enumerate(owned)]
        singles.append({**_single_base(scores, tid, label_version, prediction_run), "kind": "FN",
                        "reason": row["reason"], "particle": name, "score": _fn_score(scores, row, int(i)),
                        "focus_k": 0, "radius_A": scores.classes[name].match_radius_A, "candidates": tuple(cands),
                        "order": (name, int(i))})
    for name, rows in gallery_labels.items():
        part = plan.labels.loc[rows]
        key = part["reason"].map(REASON_ORDER).to_numpy(int)
        doubt = np.where(part["reason"] == "unverified", part["verification"].fillna(1.0), part["support"])
        order = np.lexsort((np.asarray(rows), doubt, key))
        part = part.iloc[order]
        for start in range(0, len(part), size):
            chunk = part.iloc[start:start + size]
            cands = [_cand(n + 1, name, r[["z", "y", "x"]], r["support"], "label", scores.frames[str(r["tomo_id"])])
                     for n, (_, r) in enumerate(chunk.iterrows())]
            cands = _with_known(cands, known.get(name, []), n_known, "label")
            reasons = ",".join(dict.fromkeys(chunk["reason"]))
            score = 1.0 - float(np.min(np.where(chunk["reason"] == "unverified", chunk["verification"].fillna(1.0),
                                                chunk["support"])))
            galleries["GL"].append((name, reasons, cands, score))
    offered = plan.offered
    if settings.galleries:
        for name, g in offered.groupby("particle", sort=False):
            g = g.sort_values("rank", kind="stable")
            for start in range(0, len(g), size):
                chunk = g.iloc[start:start + size]
                cands = [_cand(n + 1, str(name), r[["z", "y", "x"]], r["conf"], "prediction",
                               scores.frames[str(r["tomo_id"])]) for n, (_, r) in enumerate(chunk.iterrows())]
                cands = _with_known(cands, known.get(str(name), []), n_known, "prediction")
                galleries["GP"].append((str(name), "unlabeled", cands, float(chunk["quality"].max())))
    else:
        for (tid, name), g in offered.groupby(["tomo_id", "particle"], sort=False):
            g = g.sort_values("rank", kind="stable")
            starts = list(range(0, len(g), settings.max_candidates))
            if settings.max_fp_cases is not None:
                starts = starts[:settings.max_fp_cases]
            for chunk_no, start in enumerate(starts):
                chunk = g.iloc[start:start + settings.max_candidates]
                cands = [_cand(n + 1, str(name), r[["z", "y", "x"]], r["conf"], "prediction")
                         for n, (_, r) in enumerate(chunk.iterrows())]
                singles.append({**_single_base(scores, str(tid), label_version, prediction_run), "kind": "FP",
                                "reason": "unlabeled", "particle": str(name), "score": float(chunk["conf"].max()),
                                "focus_k": 1, "radius_A": scores.classes[str(name)].match_radius_A,
                                "candidates": tuple(cands), "order": (str(name), chunk_no)})
    singles.sort(key=lambda c: (-c["score"], c["tomo_id"], c["kind"], c["order"]))
    cases: list[Case] = []
    for c in singles:
        c.pop("order")
        index = len(cases) + 1
        cases.append(Case(case_id=f"{c['kind']}-{index:04d}", index=index,
                          image=image_name(c["kind"], index, c["tomo_id"], (c["Z"], c["Y"], c["X"]),
                                           c["voxel_spacing"]), **c))
    for kind in ("GL", "GP"):
        entries = sorted(galleries[kind], key=lambda e: (-e[3], e[0])) if kind == "GL" else galleries[kind]
        for name, reason, cands, score in entries:
            index = len(cases) + 1
            cases.append(Case(case_id=f"{kind}-{index:04d}", kind=kind, index=index,
                              image=gallery_image_name(kind, index, name), score=round(score, 6), reason=reason,
                              particle=name, label_version=label_version, prediction_run=prediction_run,
                              radius_A=scores.classes[name].match_radius_A, focus_k=1, candidates=tuple(cands)))
    return cases


@dataclass
class MiningResult:
    """A round's cases and what they were chosen from."""

    cases: list[Case]
    scores: MiningScores
    plan: ReviewPlan

    def summary(self) -> dict:
        """Per class: the bars, the budget and what was chosen (``mining.json``, the round's artifact)."""
        chosen = self.plan.labels["reason"].groupby(self.plan.labels["particle"]).value_counts()
        out = {}
        for name, bars in self.scores.classes.items():
            reasons = {str(r): int(n) for (c, r), n in chosen.items() if c == name}
            out[name] = {**bars.as_dict(), "labels_reviewed": reasons, **self.plan.budget.get(name, {})}
        return out


def find_cases(labels: LabelSet, predictions: pd.DataFrame, *, settings: MiningSettings | None = None,
               tomo_ids: Sequence[str] | None = None, verification: Verification | None = None,
               label_version: str = "", prediction_run: str = "") -> MiningResult:
    """Score, choose and assemble a round's cases (see the module docstring)."""
    settings = settings or MiningSettings()
    scores = score_round(labels, predictions, settings=settings, tomo_ids=tomo_ids, verification=verification,
                         label_version=label_version, prediction_run=prediction_run)
    plan = choose_review(scores, settings)
    known = known_pool(scores, plan, labels) if settings.known_rate and settings.galleries else None
    cases = assemble_cases(scores, plan, settings, label_version=label_version, prediction_run=prediction_run,
                           known=known)
    return MiningResult(cases=cases, scores=scores, plan=plan)


__all__ = [
    "ClassBars", "MiningResult", "MiningScores", "ReviewPlan", "assemble_cases", "calibrated_thresholds",
    "choose_review", "find_cases", "predicted_tomograms", "score_round", "verifier_weight",
]

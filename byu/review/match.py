"""Mine review cases: predictions vs a label version, matched per class in Å.

Per tomogram and class, predictions at or above ``threshold`` are matched one-to-one (nearest first) to the labeled
picks of the class within the class's match radius (``radius_A`` overrides it for every class). Then:

- a labeled pick no prediction matched is an **FN** case (``reason`` ``unmatched``); with ``confirm_threshold``
  set, so is one matched only by a prediction weaker than it (``weak``: the model barely sees a particle there,
  the way it sees decoys labeled by mistake). ``confirm_threshold="auto"`` calibrates it per class, from how
  strongly the out-of-fold models support that class's labels in this round (:func:`calibrated_thresholds`:
  ``SUPPORT_FRACTION`` of the median support of the class's labels), so a class the model sees faintly (a small
  particle) is not reviewed wholesale and a class it sees sharply has its half-believed labels reviewed;
- every unmatched prediction is shown as a candidate: of the nearest FN case of its own class in the tomogram, else
  of the nearest FN case of another class closer than both classes' match radii (a pick that may have the wrong
  class), else of an **FP** case of its class (``reason`` ``unlabeled``). A case shows at most ``max_candidates``
  predictions, strongest first (with ``candidate_verification``: the ones that look most like the class's labels
  first); those beyond an FN case's go to the FP cases of their class. A tomogram gets at most ``max_fp_cases`` FP
  cases per class (default 1; ``None``: as many as needed, for crowded classes); the ones beyond are counted in
  the round's summary, not shown.

Three settings keep the load where the errors are:

- ``fp_threshold``: an unlabeled prediction is a candidate of an FP case only when its confidence reaches it;
  ``"auto"`` is ``FP_FRACTION`` of the class's confirm threshold (an unlabeled prediction the models believe less
  than half as much as a label they half-believe). The predictions below stay in the predictions run; only their
  review is skipped. On eight 40-tomogram motor cohorts, none of the 60 FP cases below it held a real motor.
- ``verification`` (:mod:`byu.review.verify`): labels the round's own crop classifier believes least (below the
  ``verify_quantile`` of their class) are FN cases too (``reason`` ``unverified``): false labels on decoys the fold
  models believe as much as real particles, which no support threshold reaches.
- ``candidate_verification``: the same classifier's score of each prediction orders the unlabeled ones, so a
  missed particle is shown before gold beads and decoys the fold models believe more (a small particle's class
  can have ten such predictions in one tomogram, more than two cases show).

Scores rank the cases for review: FN ``1 - confidence`` of the weak match, or ``1 -`` the strongest prediction of
the class within twice the match radius; FP the strongest candidate's confidence.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from byu.errors import InputError, NotFoundError
from byu.labels.model import LabelSet
from byu.matching import match_points
from byu.review.cases import Candidate, Case, LabelPoint, image_name


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
SUPPORT_FRACTION = 0.75
MIN_CONFIRM = 0.05
FP_FRACTION = 0.5
VERIFY_QUANTILE = 0.7


def calibrated_thresholds(supports: dict[str, list[float]], *, fallback: float = FALLBACK_CONFIRM,
                          fraction: float = SUPPORT_FRACTION) -> dict[str, float]:
    """Per class, the confidence below which a label counts as weakly believed: ``fraction`` of the median
    confidence of the predictions that match the class's labels (at least ``MIN_CONFIRM``); ``fallback`` for a
    class with fewer than ``MIN_CALIBRATION_LABELS`` supported labels.

    Relative to the class's own median because out-of-fold confidence is on a different scale per class: a motor
    model that sees motors at 0.95 half-believes a label at 0.6, a small-particle model that sees its particles at
    0.5 does not. Measured over five 40-tomogram motor cohorts and a three-class cohort (benchmarks/recovery.py),
    it flags the same planted errors as a fixed 0.6 (46 of 52) while sending 30 instead of 56 correct labels to
    review; a Tukey fence (q25 - 1.5 IQR) collapsed to the floor on wide distributions and flagged 36."""
    out = {}
    for name, values in supports.items():
        v = np.asarray(values, dtype=float)
        if len(v) < MIN_CALIBRATION_LABELS:
            out[name] = float(fallback)
            continue
        out[name] = float(max(MIN_CONFIRM, fraction * np.median(v)))
    return out


def fp_thresholds(fp_threshold: float | str | None, confirm: dict[str, float | None]) -> dict[str, float]:
    """Per class, the confidence an unmatched prediction needs to be shown in an FP case: ``fp_threshold`` as a
    number, or for ``"auto"`` ``FP_FRACTION`` of the class's confirm threshold (nothing without one)."""
    if fp_threshold is None:
        return {}
    if isinstance(fp_threshold, str):
        if fp_threshold != "auto":
            raise InputError(f"fp_threshold must be a number, 'auto' or empty, got {fp_threshold!r}",
                             field="fp_threshold")
        return {k: FP_FRACTION * v for k, v in confirm.items() if v is not None}
    return {k: float(fp_threshold) for k in confirm}


def verification_thresholds(verification: pd.Series | None, labels: LabelSet, tomo_ids: Sequence[str],
                            quantile: float) -> dict[str, float]:
    """Per class, the verification below which a label of ``tomo_ids`` is reviewed: the ``quantile`` of the
    verification of the class's labels there (classes with fewer than ``MIN_CALIBRATION_LABELS`` verified labels:
    none)."""
    if verification is None:
        return {}
    if not 0.0 <= quantile <= 1.0:
        raise InputError(f"verify_quantile must be between 0 and 1, got {quantile}", field="verify_quantile")
    picks = labels.picks[labels.picks["tomo_id"].isin(set(tomo_ids))]
    v = verification.reindex(picks.index)
    out = {}
    for name, values in v.groupby(picks["particle"]):
        values = values.dropna()
        if len(values) >= MIN_CALIBRATION_LABELS:
            out[str(name)] = float(np.quantile(values.to_numpy(float), quantile))
    return out


def _cand(k: int, particle: str, zyx, conf: float | None, source: str) -> Candidate:
    return Candidate(k=k, particle=particle, z=round(float(zyx[0]), 3), y=round(float(zyx[1]), 3),
                     x=round(float(zyx[2]), 3), conf=None if conf is None else round(float(conf), 6),
                     source=source)  # type: ignore[arg-type]


def find_cases(labels: LabelSet, predictions: pd.DataFrame, *, label_version: str = "", prediction_run: str = "",
               threshold: float = 0.05, radius_A: float | None = None, max_candidates: int = 5,
               tomo_ids: Sequence[str] | None = None, confirm_threshold: float | str | None = None,
               max_fp_cases: int | None = 1, thresholds_out: dict[str, float] | None = None,
               fp_threshold: float | str | None = None, verification: pd.Series | None = None,
               verify_quantile: float = VERIFY_QUANTILE,
               bars_out: dict[str, dict[str, float]] | None = None,
               candidate_verification: pd.Series | None = None) -> list[Case]:
    """Review cases for the tomograms ``tomo_ids`` (default: every tomogram of the version), in review order.

    Only tomograms that were actually predicted should be passed: one absent from ``predictions`` turns every
    labeled pick into an FN case. Predictions of classes the version does not cover are ignored. The confirm
    threshold used per class is written to ``thresholds_out`` when given; the FP threshold and the verification
    below which a label is reviewed, per class, to ``bars_out`` (keys ``fp`` and ``verify``).

    ``verification`` (index: rows of ``labels.picks``) is how much a label verifier believes each label
    (:mod:`byu.review.verify`); a label below the ``verify_quantile`` of its class's verification in these
    tomograms is an FN case too (``reason`` ``unverified``), when it is not one already. ``fp_threshold`` (a
    number, ``"auto"``: ``FP_FRACTION`` of the class's confirm threshold, or ``None``: every one) is the confidence
    an FP case's candidate needs. ``candidate_verification`` (index: rows of ``predictions``) orders each class's
    unlabeled predictions, most verified first (predictions without one follow, strongest first).
    """
    if "voxel_spacing" not in predictions.columns:
        raise InputError("predictions lack the voxel_spacing column: distances are compared in Å",
                         file=prediction_run or None, field="voxel_spacing")
    if max_candidates < 1:
        raise InputError(f"max_candidates must be at least 1, got {max_candidates}", field="max_candidates")
    known = set(labels.tomo_ids)
    ids = labels.tomo_ids if tomo_ids is None else list(dict.fromkeys(tomo_ids))
    unknown = sorted(set(ids) - known)
    if unknown:
        raise NotFoundError(f"tomo_id(s) not in the label version {label_version or ''}: {unknown[:10]}")
    classes = {c.name: c for c in labels.classes}

    def radius(name: str) -> float:
        return float(radius_A) if radius_A is not None else classes[name].match_radius_A

    preds = predictions[(predictions["conf"] >= threshold) & predictions["particle"].isin(list(classes))
                        & predictions["tomo_id"].isin(ids)]
    pred_groups = {t: g for t, g in preds.groupby("tomo_id", sort=False)}
    label_groups = labels.groups()
    frames = labels.tomograms.set_index("tomo_id")
    auto = isinstance(confirm_threshold, str)
    if auto and confirm_threshold != "auto":
        raise InputError(f"confirm_threshold must be a number, 'auto' or empty, got {confirm_threshold!r}",
                         field="confirm_threshold")
    per_tomo: dict[str, tuple] = {}
    supports: dict[str, list[float]] = {name: [] for name in classes}
    for tid in ids:
        fr = frames.loc[tid]
        spacing = float(fr.voxel_spacing)
        lab = label_groups[tid]
        lab_cls = lab["particle"].to_numpy(dtype=object)
        lab_vox = lab[["z", "y", "x"]].to_numpy(dtype=float)
        lab_A = lab_vox * spacing
        g = pred_groups.get(tid)
        if g is not None:
            g = g.sort_values("conf", ascending=False, kind="stable")
            pred_cls = g["particle"].to_numpy(dtype=object)
            pred_A = g[["z", "y", "x"]].to_numpy(float) * g["voxel_spacing"].to_numpy(float)[:, None]
            conf = g["conf"].to_numpy(float)
            ver = candidate_verification.reindex(g.index).to_numpy(float) if candidate_verification is not None \
                else np.full(len(g), np.nan)
        else:
            pred_cls, pred_A, conf, ver = np.zeros(0, dtype=object), np.zeros((0, 3)), np.zeros(0), np.zeros(0)
        matches = {}
        for name in classes:
            li = np.flatnonzero(lab_cls == name)
            pj = np.flatnonzero(pred_cls == name)
            m = match_points(lab_A[li], pred_A[pj], radius(name))
            matches[name] = (li, pj, m)
            supports[name] += [float(conf[pj[b]]) for _, b, _ in m.pairs]
        per_tomo[tid] = (fr, spacing, lab.index.to_numpy(), lab_cls, lab_vox, lab_A, pred_cls, pred_A, conf, ver,
                         matches)
    if auto:
        confirm = calibrated_thresholds(supports)
    else:
        confirm = {name: confirm_threshold for name in classes}
    fp_bar = fp_thresholds(fp_threshold, confirm)
    verify_bar = verification_thresholds(verification, labels, ids, verify_quantile)
    if thresholds_out is not None:
        thresholds_out.update({k: v for k, v in confirm.items() if v is not None})
    if bars_out is not None:
        bars_out.update({"fp": fp_bar, "verify": verify_bar})
    raw: list[dict] = []
    for tid in ids:
        fr, spacing, rows, lab_cls, lab_vox, lab_A, pred_cls, pred_A, conf, ver, matches = per_tomo[tid]
        unsupported: dict[int, tuple[str, float | None]] = {}  # label index -> (reason, weak conf)
        free: list[int] = []
        for name in classes:
            li, pj, m = matches[name]
            for a in m.unmatched_a:
                unsupported[int(li[a])] = ("unmatched", None)
            for a, b, _ in m.pairs:
                c = float(conf[pj[b]])
                if confirm[name] is not None and c < confirm[name]:
                    unsupported[int(li[a])] = ("weak", c)
            if name in verify_bar:
                v = verification.reindex(rows[li]).to_numpy(float)  # type: ignore[union-attr]
                for a in np.flatnonzero(v < verify_bar[name]):
                    unsupported.setdefault(int(li[a]), ("unverified", float(v[a])))
            free += [int(pj[b]) for b in m.unmatched_b]
        # most verified first (a class not verified: strongest first, as the predictions are ordered)
        free.sort(key=lambda j: (bool(np.isnan(ver[j])), -conf[j] if np.isnan(ver[j]) else -ver[j], j))

        owned: dict[int, list[int]] = {i: [] for i in unsupported}
        leftover: list[int] = []
        for j in free:
            same = [i for i in unsupported if lab_cls[i] == pred_cls[j]]
            near = [i for i in unsupported if lab_cls[i] != pred_cls[j]
                    and np.linalg.norm(lab_A[i] - pred_A[j]) <= min(radius(lab_cls[i]), radius(pred_cls[j]))]
            pool = same or near
            if pool:
                owner = min(pool, key=lambda i: (float(np.linalg.norm(lab_A[i] - pred_A[j])), i))
                if len(owned[owner]) < max_candidates:
                    owned[owner].append(j)
                    continue
            leftover.append(j)
        to_frame = pred_A / spacing
        context = tuple(LabelPoint(particle=str(c), z=float(v[0]), y=float(v[1]), x=float(v[2]))
                        for c, v in zip(lab_cls, lab_vox))
        base = {"tomo_id": tid, "Z": int(fr.Z), "Y": int(fr.Y), "X": int(fr.X), "voxel_spacing": spacing,
                "label_version": label_version, "prediction_run": prediction_run, "labels": context}
        for i in sorted(unsupported):
            name = str(lab_cls[i])
            reason, weak = unsupported[i]
            cands = [_cand(0, name, lab_vox[i], None, "label")]
            cands += [_cand(n + 1, str(pred_cls[j]), to_frame[j], conf[j], "prediction")
                      for n, j in enumerate(owned[i])]
            if weak is not None:  # weak: the matched prediction's confidence; unverified: the verification
                score = 1.0 - weak
            else:
                same = pred_cls == name
                near = same & (np.linalg.norm(pred_A - lab_A[i], axis=1) <= 2 * radius(name)) if len(pred_A) \
                    else np.zeros(0, bool)
                score = 1.0 - (float(conf[near].max()) if np.any(near) else 0.0)
            raw.append({**base, "kind": "FN", "reason": reason, "particle": name, "score": score, "focus_k": 0,
                        "radius_A": radius(name), "candidates": tuple(cands), "order": (name, i)})
        by_class: dict[str, list[int]] = {}
        for j in leftover:
            if conf[j] >= fp_bar.get(str(pred_cls[j]), 0.0):
                by_class.setdefault(str(pred_cls[j]), []).append(j)
        for name, js in by_class.items():
            starts = range(0, len(js), max_candidates)
            for chunk_no, start in enumerate(starts if max_fp_cases is None else list(starts)[:max_fp_cases]):
                chunk = js[start:start + max_candidates]
                cands = [_cand(n + 1, name, to_frame[j], conf[j], "prediction") for n, j in enumerate(chunk)]
                raw.append({**base, "kind": "FP", "reason": "unlabeled", "particle": name,
                            "score": float(conf[chunk].max()), "focus_k": 1, "radius_A": radius(name),
                            "candidates": tuple(cands), "order": (name, chunk_no)})
    raw.sort(key=lambda c: (-c["score"], c["tomo_id"], c["kind"], c["order"]))
    cases = []
    for index, c in enumerate(raw, start=1):
        c.pop("order")
        cases.append(Case(case_id=f"{c['kind']}-{index:04d}", index=index,
                          image=image_name(c["kind"], index, c["tomo_id"], (c["Z"], c["Y"], c["X"]),
                                           c["voxel_spacing"]), **c))
    return cases


__all__ = ["find_cases", "predicted_tomograms"]

"""How far a round's decisions can be trusted: known-answer items, reviewer accuracy, and the items' answers.

**Known-answer items.** Mining mixes items whose answer is known into the galleries, at ``known_rate`` of their
crops; they look like every other crop (a label to confirm in a ``GL`` gallery, an unlabeled prediction in a ``GP``
one), are marked ``known`` in ``cases.csv`` only, and never change a label. Where the answers come from:

- ``real``: labels an earlier round decided (picks whose provenance says a reviewer added or moved them), then the
  labels the round itself believes most: supported by the fold models at or above the class's 80th percentile of
  support and, with a verifier, verified at or above the 80th percentile — taken as real (an assumption: among
  those the error rate is taken to be negligible; reported as such);
- ``not``: background points, at least three match radii from every label and every prediction of any class at
  the round's threshold, inside the volume by a particle radius: nothing there the models or anyone has seen.

**Item answers.** :func:`item_answers` reads what a decision says of each item it shows: real (and its class) or
not. **Accuracy**: :func:`known_accuracy` scores each reviewer on the known-answer items they decided, with the
count it rests on and a Wilson 95 % interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import pandas as pd

from byu.review.apply import read_tags
from byu.review.cases import Candidate, Case, Frame, round_classes
from byu.review.tags import NONE, OK, UNSURE, check_tags, parse_click, split_tags, tags_for

KNOWN_REAL_QUANTILE = 0.8  # labels believed at or above this quantile of their class (support and verification)
BACKGROUND_RADII = 3.0  # a background point is this many match radii from every label and prediction
BACKGROUND_TRIES = 400  # random draws per tomogram and class
CONFIDENCE = 0.75  # a reviewer is trusted when shown above the bar at this one-sided confidence (QualitySettings)


@dataclass(frozen=True)
class KnownItem:
    """An item whose answer is known, in its tomogram's label frame."""

    particle: str
    frame: Frame
    zyx: tuple[float, float, float]
    answer: str  # "real" or "not"
    conf: float | None = None  # what its crop's caption shows


def known_pool(scores, plan, labels, *, seed: int = 0) -> dict[str, list[KnownItem]]:
    """Per class, known-answer items for the round (see the module docstring), interleaved real / not, in a
    reproducible order (``seed``). ``scores`` and ``plan`` are :func:`byu.review.match.score_round`'s and
    :func:`byu.review.match.choose_review`'s results; ``labels`` the version mined against."""
    rng = np.random.default_rng(seed)
    lab, preds = scores.labels, scores.predictions
    reviewed = set(plan.labels.index)
    source = labels.picks.get("source", pd.Series("", index=labels.picks.index)).astype(str)
    out: dict[str, list[KnownItem]] = {}
    all_points = {t: np.concatenate([lab.loc[lab["tomo_id"] == t, ["z", "y", "x"]].to_numpy(float),
                                     preds.loc[preds["tomo_id"] == t, ["z", "y", "x"]].to_numpy(float)])
                  for t in scores.frames}
    for name, bars in scores.classes.items():
        mine = lab[(lab["particle"] == name) & ~lab.index.isin(reviewed)]
        earlier = mine[source.reindex(mine.index).str.startswith("review:").fillna(False).to_numpy(bool)]
        sup = mine["support"].to_numpy(float)
        ok = (sup > 0) & (sup >= np.quantile(sup, KNOWN_REAL_QUANTILE) if len(sup) else sup > 0)
        ver = mine["verification"].to_numpy(float)
        if np.isfinite(ver).any():
            ok &= ~np.isfinite(ver) | (ver >= np.nanquantile(ver, KNOWN_REAL_QUANTILE))
        believed = mine[ok & ~mine.index.isin(earlier.index)]
        real_rows = pd.concat([earlier, believed])
        real = [KnownItem(name, scores.frames[str(r.tomo_id)], (float(r.z), float(r.y), float(r.x)), "real",
                          float(r.support)) for r in real_rows.itertuples()]
        rng.shuffle(real)
        nots: list[KnownItem] = []
        for tid, frame in scores.frames.items():
            margin = labels.cls(name).radius / frame.voxel_spacing
            shape = np.array(frame.shape, float)
            if np.any(shape <= 2 * margin):
                continue
            draws = rng.uniform(margin, shape - margin, size=(BACKGROUND_TRIES, 3))
            pts = all_points[tid]
            far = np.ones(len(draws), bool) if not len(pts) else \
                np.min(np.linalg.norm((draws[:, None, :] - pts[None]) * frame.voxel_spacing, axis=2), axis=1) \
                >= BACKGROUND_RADII * bars.match_radius_A
            for p in draws[far][:2]:
                nots.append(KnownItem(name, frame, (round(float(p[0]), 3), round(float(p[1]), 3),
                                                    round(float(p[2]), 3)), "not", 0.0))
        rng.shuffle(nots)
        mixed: list[KnownItem] = []
        for i in range(max(len(real), len(nots))):
            mixed += [x[i] for x in (real, nots) if i < len(x)]
        out[name] = mixed
    return out


def known_candidate(item: KnownItem, k: int, source: str) -> Candidate:
    """A known-answer item as a gallery crop numbered ``k`` (shown as a ``source``)."""
    return Candidate(k=k, particle=item.particle, z=item.zyx[0], y=item.zyx[1], x=item.zyx[2],
                     conf=None if item.conf is None else round(item.conf, 6), source=source,  # type: ignore[arg-type]
                     known=item.answer, **item.frame.model_dump())  # type: ignore[arg-type]


def item_answers(case: Case, tags: Sequence[str]) -> dict[int, tuple[bool, str | None]] | None:
    """What validated ``tags`` say of each item of ``case``: ``k -> (real, class)``; None for ``unsure``."""
    if UNSURE in tags:
        return None
    said = read_tags(list(tags), case)
    out: dict[int, tuple[bool, str | None]] = {}
    if case.kind == "GL":
        for c in case.candidates:
            kept = c.k not in said.wrong
            out[c.k] = (kept, said.relabel.get(c.k, c.particle) if kept else None)
        return out
    shown_real = dict(said.real)
    for c in case.candidates:
        if c.k == 0:
            out[0] = (said.keep, (said.label_class or c.particle) if said.keep else None)
        else:
            out[c.k] = (c.k in shown_real, shown_real.get(c.k))
    return out


def _wilson(n: int, correct: int, z: float) -> tuple[float, float]:
    """The Wilson score interval of ``correct`` of ``n`` at ``z`` standard errors, clipped to [0, 1]."""
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Accuracy:
    """A reviewer's accuracy on known-answer items: ``correct`` of ``n``, with a Wilson 95 % interval."""

    n: int
    correct: int

    @property
    def rate(self) -> float | None:
        return None if not self.n else self.correct / self.n

    @property
    def interval(self) -> tuple[float, float] | None:
        if not self.n:
            return None
        lo, hi = _wilson(self.n, self.correct, 1.96)
        return (round(lo, 4), round(hi, 4))

    def lower(self, confidence: float) -> float | None:
        """The one-sided lower Wilson bound at ``confidence`` (0.5: the estimate itself)."""
        return _wilson(self.n, self.correct, NormalDist().inv_cdf(confidence))[0] if self.n else None

    def as_dict(self) -> dict:
        return {"n": self.n, "correct": self.correct, "accuracy": None if self.rate is None else round(self.rate, 4),
                "interval_95": self.interval}


def known_accuracy(cases: Iterable[Case], decisions: pd.DataFrame) -> dict[str, Accuracy]:
    """Per reviewer (the decisions' ``reviewer`` column), how many known-answer items they answered right."""
    cases = list(cases)
    by_id = {c.case_id: c for c in cases}
    classes = round_classes(cases)
    counts: dict[str, list[int]] = {}
    for d in decisions.to_dict("records"):
        case = by_id.get(str(d.get("case_id", "")))
        if case is None or not any(c.known for c in case.candidates):
            continue
        tags, problems = check_tags(split_tags(d.get("tags", "")), case, classes)
        answers = item_answers(case, tags) if tags and not problems else None
        if answers is None:
            continue
        who = str(d.get("reviewer") or "")
        tally = counts.setdefault(who, [0, 0])
        for c in case.candidates:
            if c.known is not None:
                tally[0] += 1
                tally[1] += int(answers[c.k][0] == (c.known == "real"))
    return {who: Accuracy(n=n, correct=ok) for who, (n, ok) in counts.items()}


# ----------------------------------------------------------------------------------------------------------------
# a second reviewer, agreement, resolution


def _decided(cases: Sequence[Case], decisions: pd.DataFrame) -> dict[str, tuple[Case, list[str], str]]:
    """case_id -> (case, validated tags, reviewer) of every decision with tags (problems are left out: the readers
    refuse them before they get here)."""
    by_id = {c.case_id: c for c in cases}
    classes = round_classes(cases)
    out = {}
    for d in decisions.to_dict("records"):
        case = by_id.get(str(d.get("case_id", "")))
        if case is None:
            continue
        tags, problems = check_tags(split_tags(d.get("tags", "")), case, classes)
        if tags and not problems:
            out[case.case_id] = (case, tags, str(d.get("reviewer") or ""))
    return out


def flagged_reviewers(accuracy: dict[str, Accuracy], *, min_accuracy: float, min_known: int,
                      confidence: float = CONFIDENCE) -> set[str]:
    """Reviewers who answered at least ``min_known`` known-answer items and are not shown to reach
    ``min_accuracy`` at one-sided ``confidence``: the lower Wilson bound of their accuracy is below it (at 0.5, the
    accuracy itself). With 50 known items and a bar of 0.9, a reviewer right on 46 (0.92) is flagged at 0.75, as
    a reviewer of true accuracy 0.85 scores that often (about 1 round in 5); one right on 47 is not."""
    return {who for who, a in accuracy.items()
            if a.n >= min_known and (lo := a.lower(confidence)) is not None and lo < min_accuracy}


def second_review_images(cases: Sequence[Case], decisions: pd.DataFrame, accuracy: dict[str, Accuracy], *,
                         min_accuracy: float, min_known: int, rate: float, seed: int = 0,
                         confidence: float = CONFIDENCE) -> dict[str, str]:
    """The images a second reviewer sees, with why: ``unsure``; ``held`` (decided by a reviewer below
    ``min_accuracy``: their decisions are not applied until a second review agrees or resolves them); ``sample``
    (``rate`` of the other decided images, reproducibly from ``seed``)."""
    flagged = flagged_reviewers(accuracy, min_accuracy=min_accuracy, min_known=min_known, confidence=confidence)
    out: dict[str, str] = {}
    rng = np.random.default_rng(seed)
    for case, tags, who in _decided(list(cases), decisions).values():
        if UNSURE in tags:
            out[case.image] = "unsure"
        elif who in flagged:
            out[case.image] = "held"
        elif rate > 0 and rng.random() < rate:
            out[case.image] = "sample"
    return out


def _binary(answers: dict[int, tuple[bool, str | None]], case: Case) -> dict[int, bool]:
    return {c.k: answers[c.k][0] for c in case.candidates if c.known is None}


def agreement(cases: Sequence[Case], first: pd.DataFrame, second: pd.DataFrame) -> dict[str, dict]:
    """Per class, how the two reviews agree on the items both decided (real or not): ``items``, ``agree``,
    Cohen's ``kappa`` (None when either review gave one answer only)."""
    from sklearn.metrics import cohen_kappa_score

    a, b = _decided(list(cases), first), _decided(list(cases), second)
    pairs: dict[str, list[tuple[bool, bool]]] = {}
    for case_id in sorted(set(a) & set(b)):
        case, tags_a, _ = a[case_id]
        _, tags_b, _ = b[case_id]
        ans_a, ans_b = item_answers(case, tags_a), item_answers(case, tags_b)
        if ans_a is None or ans_b is None:
            continue
        ba, bb = _binary(ans_a, case), _binary(ans_b, case)
        pairs.setdefault(case.particle, []).extend((ba[k], bb[k]) for k in ba)
    out = {}
    for name, p in pairs.items():
        x, y = [int(u) for u, _ in p], [int(v) for _, v in p]
        kappa = None if len(set(x)) < 2 and len(set(y)) < 2 else round(float(cohen_kappa_score(x, y)), 4)
        out[name] = {"items": len(p), "agree": int(sum(u == v for u, v in zip(x, y, strict=True))),
                     "kappa": kappa}
    return out


def _clicks(tags: Sequence[str]) -> list[tuple[float, float, float, str | None]]:
    return [(c.z, c.y, c.x, c.particle) for t in tags if (c := parse_click(t)) is not None]


def same_decision(case: Case, tags_a: Sequence[str], tags_b: Sequence[str]) -> bool:
    """Whether two decisions of one image say the same: the same answer for every item, and clicks at the same
    particles (one to one, of one class, within the case's match radius)."""
    return item_answers(case, tags_a) == item_answers(case, tags_b) and _same_clicks(case, tags_a, tags_b)


def _same_clicks(case: Case, tags_a: Sequence[str], tags_b: Sequence[str]) -> bool:
    ca, cb = _clicks(tags_a), _clicks(tags_b)
    if len(ca) != len(cb):
        return False
    spacing = case.voxel_spacing or 1.0
    left = list(cb)
    for z, y, x, cls in ca:
        near = [q for q in left if q[3] == cls and
                math.dist((z, y, x), q[:3]) * spacing <= case.radius_A]
        if not near:
            return False
        left.remove(near[0])
    return True


def disputed_images(cases: Sequence[Case], first: pd.DataFrame, second: pd.DataFrame) -> list[str]:
    """The images both reviews decided and say different things of (neither ``unsure``): :func:`same_decision`."""
    a, b = _decided(list(cases), first), _decided(list(cases), second)
    out = []
    for cid in sorted(set(a) & set(b)):
        case, ta, _ = a[cid]
        tb = b[cid][1]
        if UNSURE not in ta and UNSURE not in tb and not same_decision(case, ta, tb):
            out.append(case.image)
    return out


@dataclass(frozen=True)
class Resolution:
    """The decisions to apply, and for each decided image how it was decided."""

    decisions: pd.DataFrame  # DECISION_COLUMNS; reviewer names who decided (and from which reviews)
    how: dict[str, str]  # case_id -> "first", "agreed", "resolved", "second"
    held: list[str]  # case_ids not applied: a held reviewer's decision nobody confirmed, or an unresolved tie
    # resolved case_id -> {items: the items the reviews split on, decider, reviews: [first, second], resolver: bool}
    disputed: dict[str, dict] = field(default_factory=dict)


def resolve(cases: Sequence[Case], first: pd.DataFrame, second: pd.DataFrame | None,
            accuracy: dict[str, Accuracy], *, min_accuracy: float, min_known: int,
            resolution: pd.DataFrame | None = None, confidence: float = CONFIDENCE) -> Resolution:
    """One decision per image from the reviews (see :func:`second_review_images`):

    - reviewed once: the decision, unless its reviewer is below ``min_accuracy`` (then held, not applied);
    - reviewed twice and the item answers agree: the decision, its reviewer ``first+second``;
    - they disagree: the items both answered alike keep that answer, and each disputed item (and the clicks, when
      they differ) takes the answer of a ``resolution`` decision for the image when there is one (its reviewer
      recorded as ``resolver (resolving first, second)``), otherwise that of the reviewer more accurate on the
      known-answer items (recorded as ``second (more accurate than first on known answers)``); equal accuracy, or
      a resolver who said ``unsure``, leaves the image held. ``Resolution.disputed`` lists the disputed items.
    """
    from byu.review.decisions import DECISION_COLUMNS
    from byu.review.tags import join_tags

    cases = list(cases)
    flagged = flagged_reviewers(accuracy, min_accuracy=min_accuracy, min_known=min_known, confidence=confidence)
    a = _decided(cases, first)
    b = _decided(cases, second) if second is not None else {}
    r = _decided(cases, resolution) if resolution is not None else {}
    rows, how, held = [], {}, []
    disputed: dict[str, dict] = {}
    classes = round_classes(cases)

    def row(case: Case, tags: list[str], who: str, source: str) -> dict:
        return {"case_id": case.case_id, "image": case.image, "tags": join_tags(tags), "reviewer": who,
                "source": source, "job_state": ""}

    for case in cases:
        cid = case.case_id
        if cid not in a and cid not in b:
            continue
        if cid in a and cid not in b:
            c, tags, who = a[cid]
            if who in flagged or UNSURE in tags:
                held.append(cid)
                continue
            rows.append(row(case, tags, who, "review"))
            how[cid] = "first"
            continue
        if cid not in a:
            c, tags, who = b[cid]
            rows.append(row(case, tags, who, "second review"))
            how[cid] = "second"
            continue
        (_, ta, wa), (_, tb, wb) = a[cid], b[cid]
        ans_a, ans_b = item_answers(case, ta), item_answers(case, tb)
        if ans_a is None:  # the first said unsure: the second decides
            rows.append(row(case, tb, wb, "second review"))
            how[cid] = "second"
            continue
        if ans_b is None or same_decision(case, ta, tb):
            if ans_b is not None or wa not in flagged:
                rows.append(row(case, ta, f"{wa}+{wb}" if ans_b is not None else wa, "review+second review"))
                how[cid] = "agreed" if ans_b is not None else "first"
            else:
                held.append(cid)
            continue
        split = sorted(k for k in ans_a if ans_a[k] != ans_b[k])
        if cid in r:
            _, tr, wr = r[cid]
            ans_r = item_answers(case, tr)
            if ans_r is None:
                held.append(cid)
                continue
            decider, who, source = (tr, ans_r), f"{wr} (resolving {wa}, {wb})", "resolution"
            party, by_resolver = wr, True
        else:
            ra, rb = accuracy.get(wa), accuracy.get(wb)
            pa = ra.rate if ra is not None and ra.rate is not None else None
            pb = rb.rate if rb is not None and rb.rate is not None else None
            if pa is None or pb is None or pa == pb:
                held.append(cid)
                continue
            winner, loser = (wa, wb) if pa > pb else (wb, wa)
            decider = (ta, ans_a) if pa > pb else (tb, ans_b)
            who, source = f"{winner} (more accurate than {loser} on known answers)", "review+second review"
            party, by_resolver = winner, False
        tags = _merged(case, ta, ans_a, tb, decider, split)
        if check_tags(tags, case, classes)[1]:  # the merge says something no single answer may: the decider's own
            tags = list(decider[0])
        rows.append(row(case, tags, who, source))
        how[cid] = "resolved"
        disputed[cid] = {"items": split, "decider": party, "reviews": [wa, wb], "resolver": by_resolver}
    return Resolution(decisions=pd.DataFrame(rows, columns=DECISION_COLUMNS), how=how, held=held, disputed=disputed)


def _merged(case: Case, ta: Sequence[str], ans_a: dict[int, tuple[bool, str | None]], tb: Sequence[str],
            decider: tuple[Sequence[str], dict[int, tuple[bool, str | None]]], split: Sequence[int]) -> list[str]:
    """The tags of one disputed image: the agreed items' answers, the ``decider``'s on the ``split`` items, and
    the clicks both reviews placed alike (else the decider's)."""
    tags_d, ans_d = decider
    answers = {k: (ans_d if k in split else ans_a)[k] for k in ans_a}
    tags = tags_for(case, {k: cls if real else None for k, (real, cls) in answers.items()})
    clicks = [t for t in (ta if _same_clicks(case, ta, tb) else tags_d)
              if parse_click(t) is not None]
    if clicks:
        tags = [t for t in tags if t not in (NONE, OK)] + clicks
    return tags


# ----------------------------------------------------------------------------------------------------------------
# errors left

DEFAULT_ACCURACY = 0.95  # a reviewer no known-answer item measured is taken to err like this (stated as assumed)
ASSUMPTIONS = [
    "each decided item is wrong with probability 1 - the accuracy its reviewer showed on the known-answer items "
    "(two agreeing reviewers: both wrong; where they split, the resolver wrong, or without one the more accurate "
    "reviewer wrong and the other right; a reviewer nothing measured: taken at 0.95)",
    "a resolver errs on the items the reviews split on as on the known-answer items of the images it resolved",
    "an item a reviewer saw but did not decide keeps the error rate the decided items of its kind showed",
    "labels nobody reviewed are false at most at the rate of the least erroneous reviewed stratum of their class",
    "unlabeled predictions beyond the budget are real at most at the rate of the last quarter of those shown; "
    "those below the class's bar and particles no model found are not counted",
]


def _corrected(observed: float, a: float) -> float:
    """The rate of true changes among items whose answers changed at ``observed`` by a reviewer of accuracy ``a``
    (``observed = p a + (1 - p)(1 - a)``)."""
    if a <= 0.5:
        return float(np.clip(observed, 0.0, 1.0))
    return float(np.clip((observed - (1 - a)) / (2 * a - 1), 0.0, 1.0))


def _who(reviewer: str) -> list[str]:
    """The reviewers a resolved decision's ``reviewer`` names: ``a+b`` → [a, b]; ``c (resolving a, b)`` → [c]."""
    head = reviewer.split(" (", 1)[0]
    return [w for w in head.split("+") if w]


def _acc(name: str, accuracy: dict[str, Accuracy], bound: int) -> float:
    """``name``'s accuracy on the known-answer items; ``bound`` -1 / 0 / +1: its upper Wilson bound, the estimate,
    its lower bound (a reviewer nothing measured: ``DEFAULT_ACCURACY``)."""
    a = accuracy.get(name)
    if a is None or a.rate is None:
        return DEFAULT_ACCURACY
    lo, hi = a.interval or (a.rate, a.rate)
    return {-1: hi, 0: a.rate, 1: lo}[bound]


def _both_wrong(a1: float, a2: float) -> float:
    """The probability that an answer two independent reviewers of accuracy ``a1``, ``a2`` agree on is wrong."""
    both = (1 - a1) * (1 - a2)
    return both / (both + a1 * a2) if both + a1 * a2 > 0 else 0.0


def _wrong_p(reviewer: str, how: str, accuracy: dict[str, Accuracy], bound: int, k: int = 0,
             disputed: dict | None = None) -> float:
    """The probability that item ``k`` of an image decided by ``reviewer`` (``how`` it was decided; ``disputed``:
    its :attr:`Resolution.disputed` entry) is wrong, at the accuracies' ``bound`` (:func:`_acc`)."""
    if how == "resolved" and disputed:
        first, second = (_acc(w, accuracy, bound) for w in disputed["reviews"])
        if k not in disputed["items"]:
            return _both_wrong(first, second)
        decider = _acc(disputed["decider"], accuracy, bound)
        if disputed.get("resolver"):
            return 1.0 - decider
        other = second if disputed["decider"] == disputed["reviews"][0] else first
        # the more accurate reviewer's answer where the two split: wrong when it erred and the other did not
        wrong, right = (1 - decider) * other, decider * (1 - other)
        return wrong / (wrong + right) if wrong + right > 0 else 0.5
    names = _who(reviewer)
    if how == "agreed" and len(names) >= 2:
        return _both_wrong(_acc(names[0], accuracy, bound), _acc(names[1], accuracy, bound))
    return 1.0 - _acc(names[0], accuracy, bound) if names else 1.0 - DEFAULT_ACCURACY


def errors_left(cases: Sequence[Case], applied: pd.DataFrame, accuracy: dict[str, Accuracy],
                mined: dict[str, dict], *, how: dict[str, str] | None = None,
                reviews: pd.DataFrame | None = None, disputed: dict[str, dict] | None = None) -> dict[str, dict]:
    """Per class, an estimate of the label errors the new version still holds, with a 90 % interval and the
    parts it is made of (``ASSUMPTIONS`` say what it rests on). ``applied``: the decisions the version was made
    from (``reviewer`` as :func:`resolve` writes it); ``mined``: the round's ``mining.json`` ``classes``; ``how``:
    :attr:`Resolution.how` (None: one review); ``reviews``: every review's decisions (default ``applied``), whose
    answers set how often a shown item needs a change (so held images count too); ``disputed``:
    :attr:`Resolution.disputed` (the items of resolved images the reviews split on)."""
    from scipy.stats import poisson

    cases = list(cases)
    how = how or {}
    disputed = disputed or {}
    decided = _decided(cases, applied)
    seen = _decided(cases, reviews if reviews is not None else applied)
    out: dict[str, dict] = {}
    for name, info in mined.items():
        mine = [c for c in cases if c.particle == name]
        parts = {k: [0.0, 0.0, 0.0] for k in ("reviewer_errors", "undecided_shown", "unreviewed_labels",
                                              "beyond_budget")}
        changed = {"label": [0, 0], "prediction": [0, 0]}  # items decided, items whose answer changes a label
        reviewed_labels = 0
        strata: dict[str, list[int]] = {}
        gp_tail: list[tuple[int, bool]] = []
        undecided = {"label": 0, "prediction": 0}
        for case in mine:
            items = [c for c in case.candidates if c.known is None]
            reviewed_labels += sum(c.source == "label" for c in items)
            d = decided.get(case.case_id)
            answers = item_answers(case, d[1]) if d is not None else None
            if answers is None:
                for c in items:
                    undecided[c.source] += 1
            else:
                _, _, reviewer = d  # type: ignore[misc]
                for bound, slot in ((-1, 0), (0, 1), (1, 2)):
                    parts["reviewer_errors"][slot] += sum(
                        _wrong_p(reviewer, how.get(case.case_id, "first"), accuracy, bound, c.k,
                                 disputed.get(case.case_id)) for c in items)
            s = seen.get(case.case_id)
            answers = item_answers(case, s[1]) if s is not None else None
            if answers is None:
                continue
            for c in items:
                real = answers[c.k][0]
                change = (not real) if c.source == "label" else real
                changed[c.source][0] += 1
                changed[c.source][1] += int(change)
                if case.kind == "GL":
                    strata.setdefault(case.reason or "", [0, 0])
                    strata[case.reason or ""][0] += 1
                    strata[case.reason or ""][1] += int(not real)
                if case.kind == "GP":
                    gp_tail.append((c.k, real))
        rates = [a.rate for a in accuracy.values() if a.rate is not None]
        mean_acc = float(np.mean(rates)) if rates else DEFAULT_ACCURACY
        for source, (n, k) in changed.items():
            rate = _corrected(k / n, mean_acc) if n else 0.0
            lo, hi = Accuracy(n=n, correct=k).interval or (0.0, 0.0)
            m = undecided[source]
            parts["undecided_shown"][0] += m * _corrected(lo, mean_acc)
            parts["undecided_shown"][1] += m * rate
            parts["undecided_shown"][2] += m * _corrected(hi, mean_acc)
        n_unrev = max(0, int(info.get("labels", 0)) - reviewed_labels)
        if strata and n_unrev:
            best = min(strata.values(), key=lambda nk: nk[1] / nk[0] if nk[0] else 1.0)
            rate = _corrected(best[1] / best[0], mean_acc) if best[0] else 0.0
            hi = (Accuracy(n=best[0], correct=best[1]).interval or (0.0, 0.0))[1]
            parts["unreviewed_labels"] = [0.0, n_unrev * rate, n_unrev * _corrected(hi, mean_acc)]
        hidden = int(info.get("hidden", 0) or 0)
        if hidden and gp_tail:
            tail = gp_tail[-max(1, len(gp_tail) // 4):]
            k = sum(real for _, real in tail)
            hi = (Accuracy(n=len(tail), correct=k).interval or (0.0, 0.0))[1]
            parts["beyond_budget"] = [0.0, hidden * _corrected(k / len(tail), mean_acc),
                                      hidden * _corrected(hi, mean_acc)]
        lo = sum(p[0] for p in parts.values())
        mid = sum(p[1] for p in parts.values())
        hi = sum(p[2] for p in parts.values())
        out[name] = {"estimate": round(mid, 1), "interval_90": [int(poisson.ppf(0.05, lo)) if lo > 0 else 0,
                                                                 int(poisson.ppf(0.95, hi)) if hi > 0 else 0],
                     "parts": {k: round(v[1], 2) for k, v in parts.items()}}
    return out


__all__ = ["ASSUMPTIONS", "Accuracy", "KnownItem", "Resolution", "agreement", "disputed_images", "errors_left",
           "flagged_reviewers", "item_answers", "known_accuracy", "known_candidate", "known_pool", "resolve",
           "same_decision", "second_review_images"]

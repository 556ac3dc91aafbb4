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
from dataclasses import dataclass

import numpy as np
import pandas as pd

from byu.review.apply import read_tags
from byu.review.cases import Candidate, Case, Frame, round_classes
from byu.review.tags import UNSURE, check_tags, split_tags

KNOWN_REAL_QUANTILE = 0.8  # labels believed at or above this quantile of their class (support and verification)
BACKGROUND_RADII = 3.0  # a background point is this many match radii from every label and prediction
BACKGROUND_TRIES = 400  # random draws per tomogram and class


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
        z, n, p = 1.96, self.n, self.correct / self.n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))

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


__all__ = ["Accuracy", "KnownItem", "item_answers", "known_accuracy", "known_candidate", "known_pool"]

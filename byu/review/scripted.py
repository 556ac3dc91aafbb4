"""A scripted reviewer that answers from a known truth (synthetic cohorts, demos, tests), optionally erring.

It tags like a careful annotator, with the round's vocabulary (:mod:`byu.review.tags`). An item "is" a true particle
when one lies within the match radius of the item's class (and of the true particle's class) in the item's
tomogram; each true particle is claimed by at most one item of the round (the first shown), and a prediction is not
claimed for a true particle that is already labeled.

- FN case: ``0`` when the labeled pick is a true particle (``0:<class>`` when it is one of another class), plus
  every other candidate that is a true, unlabeled particle (``k``, or ``k:<class>`` when shown as another class:
  keep + add); otherwise the candidates that are true particles (a move), or ``none``.
- FP case: every candidate that is a true particle not yet labeled, or ``none``.
- ``GL`` gallery: ``x<k>`` for every crop that is not a true particle, ``k:<class>`` for one of another class; ``ok``
  when every crop is right.
- ``GP`` gallery: ``k`` (``k:<class>``) for every crop that is a true particle not yet labeled; ``ok`` when none is.

With ``error_rate`` the reviewer errs on that share of its item answers, at random (reproducibly from ``seed`` and
the case and item): a real particle answered "not a particle" and the other way round (an item shown as a class it
is not answered as the class shown), in every kind of case and on every kind of item, the labeled pick of an FN
case included; :func:`scripted_answers` also returns which answers were wrong, for measuring.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from byu.labels.model import LabelSet
from byu.review.cases import Candidate, Case
from byu.review.decisions import DECISION_COLUMNS
from byu.review.tags import join_tags, tags_for

_Points = dict[str, list[tuple[str, np.ndarray]]]


def _index(labels: LabelSet) -> _Points:
    """Picks per tomogram as ``(class, position in Å)``."""
    spacing = labels.spacing_of()
    out: _Points = {}
    for r in labels.picks.itertuples(index=False):
        out.setdefault(r.tomo_id, []).append((r.particle, np.array([r.z, r.y, r.x], float) * spacing[r.tomo_id]))
    return out


class _Truth:
    """The true particles of a round, each claimed by at most one item."""

    def __init__(self, truth: LabelSet, labeled: LabelSet | None, radius_A: float | None) -> None:
        self.true = _index(truth)
        self.labeled = _index(labeled) if labeled is not None else None
        self.radii = {c.name: c.match_radius_A for c in truth.classes}
        self.radius_A = radius_A
        self.claimed: set[tuple[str, int]] = set()

    def radius(self, case: Case, *names: str) -> float:
        if self.radius_A is not None:
            return float(self.radius_A)
        return min(self.radii.get(n, case.radius_A) for n in names)

    def claim(self, case: Case, c: Candidate) -> str | None:
        """The true class of the particle candidate ``c`` of ``case`` shows (and claim it), or None."""
        frame = case.frame_of(c)
        p = np.array(c.zyx) * frame.voxel_spacing
        best, best_d = None, np.inf
        true = self.true.get(frame.tomo_id, [])
        for i, (cls, q) in enumerate(true):
            d = float(np.linalg.norm(q - p))
            if (frame.tomo_id, i) not in self.claimed and d <= self.radius(case, c.particle, cls) and d < best_d:
                best, best_d = i, d
        if best is None:
            return None
        cls, q = true[best]
        if c.source == "prediction" and c.known is None:
            if self.labeled is not None:
                labeled = self.labeled.get(frame.tomo_id, [])
            else:
                labeled = [(lp.particle, np.array([lp.z, lp.y, lp.x]) * frame.voxel_spacing) for lp in case.labels]
            if any(lc == cls and float(np.linalg.norm(lq - q)) <= self.radius(case, cls) for lc, lq in labeled):
                return None  # that true particle is already labeled
        self.claimed.add((frame.tomo_id, best))
        return cls


def true_answers(case: Case, truth: _Truth) -> dict[int, str | None]:
    """What each item of ``case`` really is (the label of an FN case first, so it claims its particle first)."""
    order = sorted(case.candidates, key=lambda c: (c.source != "label", c.k))
    return {c.k: truth.claim(case, c) for c in order}


def _flip(seed: int, case: Case, k: int) -> float:
    digest = hashlib.sha256(f"{seed}:{case.case_id}:{k}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class ScriptedAnswer:
    """One item answer of the scripted reviewer: what it said and what is true."""

    case_id: str
    k: int
    said: str | None
    true: str | None
    known: str | None

    @property
    def wrong(self) -> bool:
        return self.said != self.true


def scripted_answers(cases: Iterable[Case], truth: LabelSet, *, radius_A: float | None = None,
                     labeled: LabelSet | None = None, error_rate: float = 0.0,
                     seed: int = 0) -> tuple[list[tuple[Case, dict[int, str | None]]], list[ScriptedAnswer]]:
    """Per case, the item answers the reviewer gives (``error_rate`` of them wrong), and every answer with the
    truth beside it."""
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"error_rate must be between 0 and 1, got {error_rate}")
    state = _Truth(truth, labeled, radius_A)
    out, record = [], []
    for case in cases:
        true = true_answers(case, state)
        said = dict(true)
        for c in case.candidates:
            if error_rate and _flip(seed, case, c.k) < error_rate:
                said[c.k] = None if true[c.k] is not None else c.particle
            record.append(ScriptedAnswer(case.case_id, c.k, said[c.k], true[c.k], c.known))
        out.append((case, said))
    return out, record


def scripted_decisions(cases: Iterable[Case], truth: LabelSet, *, radius_A: float | None = None,
                       reviewer: str = "scripted", labeled: LabelSet | None = None, error_rate: float = 0.0,
                       seed: int = 0) -> pd.DataFrame:
    """Decisions (``DECISION_COLUMNS``) for every case, from the ``truth`` labels. ``labeled`` is the version the
    cases were mined against (what is already labeled, for gallery predictions; single cases carry their
    tomogram's labels); ``error_rate`` and ``seed``: see the module docstring."""
    answered, _ = scripted_answers(cases, truth, radius_A=radius_A, labeled=labeled, error_rate=error_rate,
                                   seed=seed)
    rows = [{"case_id": case.case_id, "image": case.image, "tags": join_tags(tags_for(case, said)),
             "reviewer": reviewer, "source": "scripted", "job_state": ""} for case, said in answered]
    return pd.DataFrame(rows, columns=DECISION_COLUMNS)


__all__ = ["ScriptedAnswer", "scripted_answers", "scripted_decisions", "tags_for", "true_answers"]

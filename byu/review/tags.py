"""The review tag vocabulary and its one validator, shared by CVAT projects, decision files and applying them.

Every decision is one tag (one click or one key in CVAT's tag mode); an image can carry several.

On a single-particle image (``FN``: the labeled pick is candidate ``0``; ``FP``: predictions ``1..K``):

- ``0``: keep the labeled pick as it is (FN) / there is no particle here (FP);
- ``k`` (``1..K``): candidate k is a real particle of the class it is shown as (several allowed);
- ``k:<class>``: candidate k is a real particle of that class (``0:<class>``: the labeled pick is real and of that
  class: a relabel), e.g. ``0;2:ribosome`` keeps the label as it is and adds candidate 2 as a ribosome;
- ``none``: the labeled pick is not a real particle (FN) / there is no particle here (FP);
- ``unsure``: send the image to a second review (nothing changes now);
- ``as:<class>`` (kept for decision files of earlier rounds): the tagged candidates without a class tag of their
  own are of that class.

On a gallery image (crops ``1..N`` of one class, each from its own tomogram):

- ``GL`` (labels to confirm): ``x<k>`` crop k is not a real particle (its label is removed); ``k:<class>`` crop k
  is a real particle of that class (relabel); ``k`` crop k is right (the same as leaving it untagged); ``none``
  no crop is a real particle;
- ``GP`` (unlabeled predictions): ``k`` crop k is a real particle of the gallery's class (it is added);
  ``k:<class>`` it is one of that class; ``x<k>`` crop k is not one (the same as leaving it untagged); ``none``
  no crop is a real particle;
- ``ok``: nothing (else) on this image needs changing — a decided image with nothing tagged; ``unsure`` as above.

A single-particle image without tags is "not reviewed": nothing changes. An untagged gallery image in a CVAT job
marked completed means ``ok`` (the reviewer looked and found nothing to change); in a decisions CSV, write ``ok``.

Contradictions are errors naming the image: ``0`` with ``none``; on an FP image ``0``/``none`` with a candidate;
``none`` with a crop called real; one item given two answers (``x3`` with ``3`` or ``3:ribosome``; ``3:ribosome``
with ``3:apo-ferritin``; ``0`` with ``0:ribosome``); ``as:<class>`` with ``none``, with a per-candidate class or
without a candidate, or two of them. A tag named twice counts once.

**Clicks** ("the particle is here": none of the candidates is right). A reviewer places a point on a panel of a
single-particle image (CVAT point label ``here``; ``here:<class>`` in a multi-class round); it is read back through
the image's panel geometry (:func:`byu.review.render.point_to_frame`) into the tag ``at:<z>/<y>/<x>`` (label-frame
voxel coordinates of the case's tomogram, 2 decimals) or ``at:<z>/<y>/<x>:<class>``. A decisions CSV may carry the
same tag (a position measured elsewhere). A click without a class is of the case's class (on an FN image: the
label's). Meaning:

- FN image: a click without ``0`` moves the labeled pick to the click (as tagging the candidate that would be
  there; with tagged candidates too, the label moves to the first candidate and the clicks are added); ``0`` + a
  click keeps the label and adds a pick at the click; ``none`` + a click removes the label and adds one at the
  click (= a move);
- FP image: a click adds a pick there;
- several clicks are several picks.

Click errors name the image: a click on a gallery ("place clicks on single-particle images"); coordinates that are
not finite numbers or lie outside the tomogram's frame (the case's ``Z, Y, X``: ``0 <= z < Z``, after rounding to 2
decimals); ``0``/``none`` with a click on an FP image; ``as:<class>`` with a click; a click closer than the case's
match radius (``radius_A`` of ``cases.csv``: its class's) to a tagged candidate, to the kept label (``0``) or to
another click — the same particle twice. A point label used as a tag is an error too (place it as a point).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from byu.review.cases import Candidate, Case

_NUMBER = re.compile(r"(0|[1-9][0-9]*)")
_REJECT = re.compile(r"x(0|[1-9][0-9]*)")
_CLASSED = re.compile(r"(0|[1-9][0-9]*):(.+)")

KEEP = "0"
NONE = "none"
UNSURE = "unsure"
OK = "ok"
SPECIAL = (NONE, UNSURE, OK)
CLASS_PREFIX = "as:"
REJECT_PREFIX = "x"
CLICK_PREFIX = "at:"
POINT_LABEL = "here"  # the CVAT point label of a click (``here:<class>`` in multi-class rounds)
GALLERY_CLICK = "place clicks on single-particle images"
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Click:
    """A click tag: label-frame voxel coordinates (z, y, x) and the class it names (None: the case's)."""

    z: float
    y: float
    x: float
    particle: str | None = None

    @property
    def zyx(self) -> list[float]:
        return [self.z, self.y, self.x]


def _two(v: float) -> float:
    return round(float(v), 2) + 0.0  # + 0.0: no "-0.00"


def click_tag(zyx: Sequence[float] | np.ndarray, particle: str | None = None) -> str:
    """``at:<z>/<y>/<x>`` (2 decimals), with ``:<class>`` when ``particle`` is given."""
    z, y, x = (_two(v) for v in zyx)
    return f"{CLICK_PREFIX}{z:.2f}/{y:.2f}/{x:.2f}" + (f":{particle}" if particle else "")


def parse_click(tag: str) -> Click | None:
    """The click of an ``at:`` tag, rounded to 2 decimals (None for other tags). Raises ``ValueError`` (its message
    says what is wrong) for an ``at:`` tag that is not ``at:<z>/<y>/<x>[:<class>]`` with finite numbers."""
    if not tag.startswith(CLICK_PREFIX):
        return None
    coords, sep, particle = tag[len(CLICK_PREFIX):].partition(":")
    parts = [p.strip() for p in coords.split("/")]
    if len(parts) != 3:
        raise ValueError("a click is at:<z>/<y>/<x> or at:<z>/<y>/<x>:<class> (three coordinates)")
    values = []
    for part in parts:
        if not _NUMBER_TEXT.fullmatch(part):
            what = "not finite" if part.lower().lstrip("+-") in ("nan", "inf", "infinity") else "not a number"
            raise ValueError(f"coordinate {part!r} is {what} (coordinates are finite numbers)")
        v = float(part)
        if not math.isfinite(v):
            raise ValueError(f"coordinate {part!r} is not finite (coordinates are finite numbers)")
        values.append(_two(v))
    if sep and not particle.strip():
        raise ValueError("an empty class after the coordinates")
    return Click(values[0], values[1], values[2], particle.strip() if sep else None)


def point_labels(classes: Sequence[str] = ()) -> list[str]:
    """The CVAT point labels of a round: ``here`` (one class), ``here:<class>`` for each class (several)."""
    if len(classes) > 1:
        return [f"{POINT_LABEL}:{c}" for c in classes]
    return [POINT_LABEL]


def point_label_class(label: str) -> tuple[bool, str | None]:
    """``(is a point label, its class)``: ``here`` -> ``(True, None)``, ``here:ribosome`` -> ``(True,
    "ribosome")``, any other label -> ``(False, None)``."""
    if label == POINT_LABEL:
        return True, None
    if label.startswith(POINT_LABEL + ":") and label[len(POINT_LABEL) + 1:]:
        return True, label[len(POINT_LABEL) + 1:]
    return False, None


def label_type(name: str) -> str:
    """The CVAT label type of a label of :func:`tag_labels`: ``points`` for the click labels, else ``tag``."""
    return "points" if point_label_class(name)[0] else "tag"


def class_tag(name: str) -> str:
    """``as:<class>`` (decision files of earlier rounds)."""
    return f"{CLASS_PREFIX}{name}"


def tag_class(tag: str) -> str | None:
    """The class named by an ``as:<class>`` tag (None for other tags)."""
    return tag[len(CLASS_PREFIX):] if tag.startswith(CLASS_PREFIX) else None


def candidate_class_tag(k: int, name: str) -> str:
    """``k:<class>``: candidate (or crop) k is a real particle of that class."""
    return f"{k}:{name}"


def reject_tag(k: int) -> str:
    """``x<k>``: gallery crop k is not a real particle."""
    return f"{REJECT_PREFIX}{k}"


def is_candidate(tag: str) -> bool:
    """``"0"`` or a candidate number written plainly (ASCII digits, no leading zero)."""
    return bool(_NUMBER.fullmatch(tag))


def rejected(tag: str) -> int | None:
    """The crop number of an ``x<k>`` tag (None for other tags)."""
    m = _REJECT.fullmatch(tag)
    return int(m.group(1)) if m else None


def classed(tag: str) -> tuple[int, str] | None:
    """``(k, class)`` of a ``k:<class>`` tag (None for other tags)."""
    m = _CLASSED.fullmatch(tag)
    return (int(m.group(1)), m.group(2)) if m else None


def tag_labels(max_candidates: int, classes: Sequence[str] = (), *, gallery_size: int = 0,
               points: bool = False) -> list[str]:
    """The CVAT labels of a round: ``0..K`` (K the most candidates or crops an image shows), ``x1..xN`` when
    the round has galleries (N crops), ``none``, ``unsure``, ``ok`` and, when the round shows more than one class,
    ``k:<class>`` for every number and class: all of CVAT type ``tag``; with ``points`` (the round's images have
    their panel geometry, so a point maps back), then the click labels (:func:`point_labels`, CVAT type
    ``points``: :func:`label_type`)."""
    top = max(max_candidates, gallery_size)
    out = [str(k) for k in range(top + 1)]
    out += [reject_tag(k) for k in range(1, gallery_size + 1)]
    out += list(SPECIAL)
    if len(classes) > 1:
        out += [candidate_class_tag(k, c) for k in range(top + 1) for c in classes]
    if points:
        out += point_labels(classes)
    return out


def _real(c: Candidate, cls: str) -> str:
    return str(c.k) if cls == c.particle else candidate_class_tag(c.k, cls)


def tags_for(case: Case, answers: dict[int, str | None]) -> list[str]:
    """The tags that say ``answers`` (item k -> the class it is, or None: not a particle / nothing to add)."""
    if case.kind == "GL":
        tags = []
        for c in case.candidates:
            cls = answers[c.k]
            if cls is None:
                tags.append(reject_tag(c.k))
            elif cls != c.particle:
                tags.append(candidate_class_tag(c.k, cls))
        return tags or [OK]
    if case.kind == "GP":
        return [_real(c, cls) for c in case.candidates if (cls := answers[c.k]) is not None] or [OK]
    label = case.label
    real = [_real(c, cls) for c in case.candidates if c.k > 0 and (cls := answers[c.k]) is not None]
    if case.kind == "FN" and label is not None and answers[0] is not None:
        keep = KEEP if answers[0] == label.particle else candidate_class_tag(0, answers[0])
        return [keep] + real
    return real or [NONE]


def split_tags(text: object) -> list[str]:
    """Tags of a ``;``-joined (or ``,``-joined) cell, stripped; empty cells give no tags."""
    if text is None or (isinstance(text, float) and text != text):
        return []
    return [t.strip() for t in str(text).replace(",", ";").split(";") if t.strip()]


def _order(tag: str) -> tuple[int, int, tuple[float, ...], str]:
    if is_candidate(tag):
        return (0, int(tag), (), "")
    if (k := rejected(tag)) is not None:
        return (1, k, (), "")
    if (kc := classed(tag)) is not None:
        return (2, kc[0], (), kc[1])
    if tag in SPECIAL:
        return (3, SPECIAL.index(tag), (), "")
    if tag.startswith(CLICK_PREFIX):
        try:
            click = parse_click(tag)
        except ValueError:
            click = None
        return (5, 0, tuple(click.zyx) if click else (), tag)
    return (4, 0, (), tag)


def join_tags(tags: Iterable[str]) -> str:
    """Canonical ``;``-joined form: numbers ascending, then ``x<k>``, ``k:<class>``, ``none``, ``unsure``, ``ok``,
    then ``as:<class>``, then the clicks ``at:...`` (by z, y, x)."""
    return ";".join(sorted(set(tags), key=_order))


def check_tags(raw: Iterable[str], case: Case, classes: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """``(valid tags in canonical order, problems)`` for the tags put on one case image.

    ``classes`` are the classes a reviewer may name (the round's classes).
    """
    problems: list[str] = []
    tags: list[str] = []
    gallery = case.is_gallery
    shown = case.ks | ({0} if case.kind == "FN" else set())

    def known_item(t: str, k: int) -> bool:
        if k in shown:
            return True
        if gallery:
            problems.append(f"tag {t!r}: crop {k} was not shown (crops shown: 1..{max(case.ks)})")
        else:
            where = f"1..{max(case.ks)}" if case.ks else "none"
            problems.append(f"tag {t!r}: candidate {k} was not shown (candidates shown: {where})")
        return False

    def known_class(t: str, name: str) -> bool:
        if name in classes:
            return True
        problems.append(f"tag {t!r}: {name!r} is not a class of this round "
                        f"({', '.join(classes) or 'single-class round: no class tags'})")
        return False

    for original in raw:
        t = (original or "").strip()
        if not t:
            problems.append(f"unknown tag {original!r} (a blank label)")
        elif t in (NONE, UNSURE) or (t == OK and gallery):
            tags.append(t)
        elif t == OK:
            problems.append("tag 'ok' is for gallery images (here: 0 keeps the label, none says it is not real)")
        elif is_candidate(t):
            if gallery and t == KEEP:
                problems.append("tag '0' is not a crop of a gallery (crops are 1..N; 'ok': nothing to change)")
            elif t == KEEP or known_item(t, int(t)):  # 0: keep the label (FN) / no particle here (FP)
                tags.append(t)
        elif (k := rejected(t)) is not None:
            if not gallery:
                problems.append(f"tag {t!r} is for gallery images (here: none says the labeled pick is not real)")
            elif known_item(t, k):
                tags.append(t)
        elif (kc := classed(t)) is not None:
            if known_item(t, kc[0]) and known_class(t, kc[1]):
                tags.append(t)
        elif (name := tag_class(t)) is not None:
            if gallery:
                problems.append(f"tag {t!r}: name a crop's class with k:<class> on a gallery")
            elif known_class(t, name):
                tags.append(t)
        elif t.startswith(CLICK_PREFIX):
            if gallery:
                problems.append(f"tag {t!r}: {GALLERY_CLICK} (a gallery's crops come from many tomograms)")
                continue
            try:
                click = parse_click(t)
            except ValueError as exc:
                problems.append(f"tag {t!r}: {exc}")
                continue
            if click is None or (click.particle is not None and not known_class(t, click.particle)):
                continue
            if not all(0 <= v < s for v, s in zip(click.zyx, case.shape, strict=True)):
                Z, Y, X = case.shape
                problems.append(f"tag {t!r}: the click lies outside the tomogram's frame (0 <= z < {Z}, "
                                f"0 <= y < {Y}, 0 <= x < {X})")
                continue
            tags.append(click_tag(click.zyx, click.particle))
        elif point_label_class(t)[0]:
            problems.append(f"{t!r} is a point label: place it as a point on a panel of the image (a click), "
                            "not as a tag")
        else:
            allowed = "x<k>, k, k:<class>, ok, none, unsure" if gallery else \
                f"0, 1..K, {'k:<class>, ' if len(classes) > 1 else ''}none, unsure, at:<z>/<y>/<x>"
            problems.append(f"unknown tag {t!r} (allowed: {allowed})")
    uniq = set(tags)
    real = {int(t) for t in uniq if is_candidate(t)}
    named: dict[int, set[str]] = {}
    for t in uniq:
        if (kc := classed(t)) is not None:
            named.setdefault(kc[0], set()).add(kc[1])
    wrong = {k for t in uniq if (k := rejected(t)) is not None}
    legacy = sorted(t for t in uniq if tag_class(t) is not None)
    for k, names in sorted(named.items()):
        if len(names) > 1:
            problems.append(f"item {k} is given two classes {sorted(names)}")
        elif k in real and k in case.ks and case.candidate(k).particle not in names:
            problems.append(f"contradictory tags '{k}' (a {case.candidate(k).particle} as shown) and "
                            f"'{k}:{next(iter(names))}'")
        elif k == 0 and KEEP in uniq and case.label is not None and case.label.particle not in names:
            problems.append(f"contradictory tags '0' (keep the label as it is) and '0:{next(iter(names))}' "
                            "(relabel it)")
    for k in sorted(wrong & (real | set(named))):
        problems.append(f"contradictory tags 'x{k}' (not a particle) and '{k}' (a real particle)")
    picks = (real | set(named)) - {0}
    if gallery:
        if NONE in uniq and (real | set(named)) and case.kind == "GP":
            problems.append(f"contradictory tags 'none' (no particle here) and crop(s) {sorted(picks)} (real)")
        if NONE in uniq and named and case.kind == "GL":
            problems.append(f"contradictory tags 'none' (no crop is a particle) and crop(s) {sorted(named)} "
                            "given a class")
        return sorted(uniq, key=_order), problems
    keeps = KEEP in uniq or 0 in named
    clicks = [(t, c) for t in sorted(uniq, key=_order) if (c := parse_click(t)) is not None]
    if keeps and NONE in uniq:
        problems.append("contradictory tags '0' (keep) and 'none' (not real)")
    if case.kind == "FP" and picks and (KEEP in uniq or NONE in uniq):
        said = "'0'" if KEEP in uniq else "'none'"
        problems.append(f"contradictory tags {said} (no particle here) and candidate(s) {sorted(picks)} "
                        "(real particles)")
    if case.kind == "FP" and clicks and (KEEP in uniq or NONE in uniq):
        said = "'0'" if KEEP in uniq else "'none'"
        problems.append(f"contradictory tags {said} (no particle here) and click(s) {[t for t, _ in clicks]} "
                        "(a particle here)")
    if legacy and clicks:
        problems.append(f"{legacy[0]!r} with a click: give the click's class in the click (at:<z>/<y>/<x>:<class>)")
    problems += _same_particle_twice(case, clicks, picks, keeps)
    if case.kind == "FP" and 0 in named:
        problems.append("tag '0:<class>' is for FN images (an FP image has no labeled pick)")
    if len(legacy) > 1:
        problems.append(f"more than one class tag {legacy}: tag one class per image")
    if legacy and NONE in uniq:
        problems.append(f"contradictory tags 'none' (not real) and {legacy[0]!r} (a class for it)")
    if legacy and named:
        problems.append(f"{legacy[0]!r} with per-candidate class tags: use k:<class> tags only")
    if legacy and not (real - {0}) and not (case.kind == "FN" and KEEP in uniq):
        problems.append(f"{legacy[0]!r} names a class but no candidate is tagged "
                        f"({'0 or ' if case.kind == 'FN' else ''}1..K)")
    return sorted(uniq, key=_order), problems


def _same_particle_twice(case: Case, clicks: list[tuple[str, Click]], picks: set[int], keeps: bool) -> list[str]:
    """Clicks closer than the case's match radius to a tagged candidate, to the kept label or to each other."""
    out: list[str] = []
    spacing, r = float(case.voxel_spacing or 1.0), float(case.radius_A)

    def apart(a: Sequence[float], b: Sequence[float]) -> float:
        return float(np.linalg.norm(np.subtract(a, b))) * spacing

    for i, (t, c) in enumerate(clicks):
        for k in sorted(picks & case.ks):
            if (d := apart(c.zyx, case.candidate(k).zyx)) < r:
                out.append(f"contradictory tags '{k}' and {t!r}: the click is {d:.0f} Å from candidate {k}, closer "
                           f"than the match radius {r:g} Å (the same particle twice)")
        label = case.label
        if keeps and case.kind == "FN" and label is not None and (d := apart(c.zyx, label.zyx)) < r:
            out.append(f"contradictory tags '0' (keep the label) and {t!r}: the click is {d:.0f} Å from the labeled "
                       f"pick, closer than the match radius {r:g} Å (the same particle twice; without '0' the click "
                       "moves the label)")
        for u, other in clicks[i + 1:]:
            if (d := apart(c.zyx, other.zyx)) < r:
                out.append(f"clicks {t!r} and {u!r} are {d:.0f} Å apart, closer than the match radius {r:g} Å (the "
                           "same particle twice)")
    return out


__all__ = [
    "CLASS_PREFIX", "CLICK_PREFIX", "GALLERY_CLICK", "KEEP", "NONE", "OK", "POINT_LABEL", "REJECT_PREFIX", "SPECIAL",
    "UNSURE", "Click", "candidate_class_tag", "check_tags", "class_tag", "classed", "click_tag", "is_candidate",
    "join_tags", "label_type", "parse_click", "point_label_class", "point_labels", "reject_tag", "rejected",
    "split_tags", "tag_class", "tag_labels", "tags_for",
]

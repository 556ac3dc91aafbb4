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
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from byu.review.cases import Case

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


def tag_labels(max_candidates: int, classes: Sequence[str] = (), *, gallery_size: int = 0) -> list[str]:
    """The CVAT tag labels of a round: ``0..K`` (K the most candidates or crops an image shows), ``x1..xN`` when
    the round has galleries (N crops), ``none``, ``unsure``, ``ok`` and, when the round shows more than one class,
    ``k:<class>`` for every number and class."""
    top = max(max_candidates, gallery_size)
    out = [str(k) for k in range(top + 1)]
    out += [reject_tag(k) for k in range(1, gallery_size + 1)]
    out += list(SPECIAL)
    if len(classes) > 1:
        out += [candidate_class_tag(k, c) for k in range(top + 1) for c in classes]
    return out


def split_tags(text: object) -> list[str]:
    """Tags of a ``;``-joined (or ``,``-joined) cell, stripped; empty cells give no tags."""
    if text is None or (isinstance(text, float) and text != text):
        return []
    return [t.strip() for t in str(text).replace(",", ";").split(";") if t.strip()]


def _order(tag: str) -> tuple[int, int, str]:
    if is_candidate(tag):
        return (0, int(tag), "")
    if (k := rejected(tag)) is not None:
        return (1, k, "")
    if (kc := classed(tag)) is not None:
        return (2, kc[0], kc[1])
    if tag in SPECIAL:
        return (3, SPECIAL.index(tag), "")
    return (4, 0, tag)


def join_tags(tags: Iterable[str]) -> str:
    """Canonical ``;``-joined form: numbers ascending, then ``x<k>``, ``k:<class>``, ``none``, ``unsure``, ``ok``,
    then ``as:<class>``."""
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
        else:
            allowed = "x<k>, k, k:<class>, ok, none, unsure" if gallery else \
                f"0, 1..K, {'k:<class>, ' if len(classes) > 1 else ''}none, unsure"
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
    if keeps and NONE in uniq:
        problems.append("contradictory tags '0' (keep) and 'none' (not real)")
    if case.kind == "FP" and picks and (KEEP in uniq or NONE in uniq):
        said = "'0'" if KEEP in uniq else "'none'"
        problems.append(f"contradictory tags {said} (no particle here) and candidate(s) {sorted(picks)} "
                        "(real particles)")
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


__all__ = [
    "CLASS_PREFIX", "KEEP", "NONE", "OK", "REJECT_PREFIX", "SPECIAL", "UNSURE", "candidate_class_tag", "check_tags",
    "class_tag", "classed", "is_candidate", "join_tags", "reject_tag", "rejected", "split_tags", "tag_class",
    "tag_labels",
]

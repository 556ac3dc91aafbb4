"""The review tag vocabulary and its one validator, shared by CVAT projects, decision files and applying them.

Tags a reviewer puts on a case image:

- ``0``: keep the labeled pick as it is (FN) / there is no particle here (FP);
- ``1``..``K``: candidate k is a real particle (several allowed);
- ``none``: the labeled pick is not a real particle (FN) / there is no particle here (FP);
- ``unsure``: send the case to a second review (nothing changes now);
- ``as:<class>`` (multi-class rounds only): the candidates tagged on this image are of that class — ``0`` +
  ``as:ribosome`` relabels the labeled pick, ``2`` + ``as:ribosome`` adds (or moves the label to) candidate 2 as a
  ribosome. Without it each candidate keeps the class it was shown with. A motor-only round has no class tags, so
  its vocabulary (and a reviewer's clicks) are exactly those of a single-class round.

No tag means "not reviewed": nothing changes. Contradictions are errors: ``0`` with ``none``; on an FP image
``0``/``none`` with a candidate; ``as:…`` with ``none`` or without a candidate, or two class tags. A candidate
named twice counts once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from byu.review.cases import Case

_NUMBER = re.compile(r"^(0|[1-9][0-9]*)$")

KEEP = "0"
NONE = "none"
UNSURE = "unsure"
SPECIAL = (NONE, UNSURE)
CLASS_PREFIX = "as:"


def class_tag(name: str) -> str:
    return f"{CLASS_PREFIX}{name}"


def tag_class(tag: str) -> str | None:
    """The class named by an ``as:<class>`` tag (None for other tags)."""
    return tag[len(CLASS_PREFIX):] if tag.startswith(CLASS_PREFIX) else None


def tag_labels(max_candidates: int, classes: Sequence[str] = ()) -> list[str]:
    """The CVAT tag labels of a round: ``0..K``, ``none``, ``unsure`` and, when the round shows more than one
    class, ``as:<class>`` for each."""
    out = [str(k) for k in range(max_candidates + 1)] + list(SPECIAL)
    if len(classes) > 1:
        out += [class_tag(c) for c in classes]
    return out


def is_candidate(tag: str) -> bool:
    """``"0"`` or a candidate number written plainly (ASCII digits, no leading zero)."""
    return bool(_NUMBER.match(tag))


def split_tags(text: object) -> list[str]:
    """Tags of a ``;``-joined (or ``,``-joined) cell, stripped; empty cells give no tags."""
    if text is None or (isinstance(text, float) and text != text):
        return []
    return [t.strip() for t in str(text).replace(",", ";").split(";") if t.strip()]


def join_tags(tags: Iterable[str]) -> str:
    """Canonical ``;``-joined form: numbers ascending, then ``none``, ``unsure``, then class tags."""
    uniq = set(tags)
    nums = sorted((t for t in uniq if is_candidate(t)), key=int)
    rest = sorted(t for t in uniq if not is_candidate(t) and t not in SPECIAL)
    return ";".join(nums + [t for t in SPECIAL if t in uniq] + rest)


def check_tags(raw: Iterable[str], case: Case, classes: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """``(valid tags in canonical order, problems)`` for the tags put on one case image.

    ``classes`` are the classes a reviewer may name with ``as:<class>`` (the round's classes).
    """
    problems: list[str] = []
    tags: list[str] = []
    for original in raw:
        t = (original or "").strip()
        if not t:
            problems.append(f"unknown tag {original!r} (a blank label)")
            continue
        if t in SPECIAL or t == KEEP:
            tags.append(t)
        elif is_candidate(t):
            k = int(t)
            if k not in case.ks:
                shown = f"1..{max(case.ks)}" if case.ks else "none"
                problems.append(f"tag {t!r}: candidate {k} was not shown (candidates shown: {shown})")
            else:
                tags.append(t)
        elif tag_class(t) is not None:
            name = tag_class(t)
            if name not in classes:
                problems.append(f"tag {t!r}: {name!r} is not a class of this round "
                                f"({', '.join(classes) or 'single-class round: no class tags'})")
            else:
                tags.append(t)
        else:
            problems.append(f"unknown tag {t!r} (allowed: 0, 1..K, none, unsure"
                            f"{', as:<class>' if len(classes) > 1 else ''})")
    uniq = set(tags)
    picks = [t for t in uniq if is_candidate(t) and t != KEEP]
    named = sorted(t for t in uniq if tag_class(t) is not None)
    if KEEP in uniq and NONE in uniq:
        problems.append("contradictory tags '0' (keep) and 'none' (not real)")
    if case.kind == "FP" and picks and (KEEP in uniq or NONE in uniq):
        said = "'0'" if KEEP in uniq else "'none'"
        problems.append(f"contradictory tags {said} (no particle here) and candidate(s) {sorted(picks, key=int)} "
                        "(real particles)")
    if len(named) > 1:
        problems.append(f"more than one class tag {named}: tag one class per image")
    if named and NONE in uniq:
        problems.append(f"contradictory tags 'none' (not real) and {named[0]!r} (a class for it)")
    if named and not picks and not (case.kind == "FN" and KEEP in uniq):
        problems.append(f"{named[0]!r} names a class but no candidate is tagged "
                        f"({'0 or ' if case.kind == 'FN' else ''}1..K)")
    return (join_tags(tags).split(";") if tags else []), problems


__all__ = [
    "CLASS_PREFIX", "KEEP", "NONE", "SPECIAL", "UNSURE", "check_tags", "class_tag", "is_candidate", "join_tags",
    "split_tags", "tag_class", "tag_labels",
]

"""The review tag vocabulary shared by CVAT projects, decision parsing and applying decisions.

``"0"`` keep as labeled; ``"1".."K"`` candidate k is real (several allowed); ``"none"`` the labeled particle shown
is not real; ``"unsure"`` route to a second review. No tag means not reviewed.
"""

from __future__ import annotations

import re

_CANDIDATE = re.compile(r"^(0|[1-9][0-9]*)$")

KEEP = "0"
NONE = "none"
UNSURE = "unsure"
SPECIAL = (NONE, UNSURE)


def tag_labels(max_candidates: int) -> list[str]:
    """The CVAT tag label names of a round with up to ``max_candidates`` candidates per image."""
    return [str(k) for k in range(max_candidates + 1)] + list(SPECIAL)


def join_tags(tags) -> str:
    """Canonical ``;``-joined form: candidate numbers ascending, then ``none``, then ``unsure``."""
    uniq = set(tags)
    nums = sorted((t for t in uniq if is_candidate(t)), key=int)
    return ";".join(nums + [t for t in SPECIAL if t in uniq])


def split_tags(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(";") if t.strip()]


def is_candidate(tag: str) -> bool:
    """``"0"`` or a candidate number written plainly (ASCII digits, no leading zero)."""
    return bool(_CANDIDATE.match(tag))


def tag_problems(tags, n_candidates: int) -> list[str]:
    """Why a tag set is invalid for a case showing candidates ``1..n_candidates`` (empty list: valid)."""
    problems = []
    for t in tags:
        if t in SPECIAL:
            continue
        if not is_candidate(t):
            problems.append(f"unknown tag {t!r} (expected 0..K, 'none' or 'unsure')")
        elif int(t) > n_candidates:
            problems.append(f"tag {t!r} names candidate {t} but the image showed {n_candidates} candidate(s)")
    if KEEP in tags and NONE in tags:
        problems.append("contradictory tags: '0' (keep as labeled) with 'none' (label not real)")
    return problems

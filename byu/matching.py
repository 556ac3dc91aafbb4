"""One-to-one point matching in physical units (Å), nearest pairs first.

Shared by mining (predictions vs labels), label diffs and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.distance import cdist


@dataclass
class Match:
    """Result of matching points ``a`` to points ``b`` (indices into each)."""

    pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (i in a, j in b, distance Å)
    unmatched_a: list[int] = field(default_factory=list)
    unmatched_b: list[int] = field(default_factory=list)


def match_points(a_angstrom: np.ndarray, b_angstrom: np.ndarray, radius: float) -> Match:
    """Greedy one-to-one matching: repeatedly take the closest remaining pair within ``radius``.

    ``a_angstrom`` and ``b_angstrom`` are (n, 3) and (m, 3) arrays of positions in Å. Ties are
    broken by index (a first, then b) so the result is deterministic.
    """
    a = np.asarray(a_angstrom, dtype=float).reshape(-1, 3)
    b = np.asarray(b_angstrom, dtype=float).reshape(-1, 3)
    out = Match()
    if len(a) and len(b):
        d = cdist(a, b)
        ii, jj = np.nonzero(d <= radius)
        order = np.lexsort((jj, ii, d[ii, jj]))
        used_a: set[int] = set()
        used_b: set[int] = set()
        for k in order:
            i, j = int(ii[k]), int(jj[k])
            if i in used_a or j in used_b:
                continue
            used_a.add(i)
            used_b.add(j)
            out.pairs.append((i, j, float(d[i, j])))
    matched_a = {p[0] for p in out.pairs}
    matched_b = {p[1] for p in out.pairs}
    out.unmatched_a = [i for i in range(len(a)) if i not in matched_a]
    out.unmatched_b = [j for j in range(len(b)) if j not in matched_b]
    return out

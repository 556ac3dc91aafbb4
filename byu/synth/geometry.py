"""Frames and random geometry shared by every synthetic world.

- :class:`Frame`: a synthetic tomogram's two grids, the stored one (``spacing`` Å/voxel, stored voxel ``i`` at
  ``i * spacing`` Å) and the original one it was resampled from; :meth:`Frame.to_original` maps a rendered position
  (Å) to original-frame voxel coordinates through the preprocessing's resampling grid (:mod:`byu.tomo.grid`), so
  ``original_to_stored`` of a written label lands on the rendered centre;
- :func:`original_shape`: the smallest original shape the preprocessing resamples to a stored shape;
- :func:`draw_shape`: a stored shape (multiples of 8: fast FFTs) from voxel ranges;
- random directions and rotations (:func:`unit`, :func:`perp`, :func:`rotation`, :func:`rotations`), points inside a
  box, pairwise separated (:func:`sample_separated`);
- the cell envelope of the motor worlds (:class:`Cell`, :func:`cell_through`: a sphere through 0-3 motors).

Every function draws from the ``numpy.random.Generator`` it is given, in a fixed order: the same generator state
gives the same result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from byu.tomo.grid import resampled_length, scale_factor, stored_to_original

MEMBRANE_CLEARANCE_A = 60.0  # objects of the multi-class world keep this clear of a membrane (beyond their radius)


@dataclass
class Frame:
    """A synthetic tomogram's grids: the stored one (``spacing``) and the original one it was resampled from."""

    tomo_id: str
    index: int
    original_spacing: float
    spacing: float
    shape: tuple[int, int, int]
    original_shape: tuple[int, int, int]

    @property
    def extent(self) -> np.ndarray:
        """Physical position (Å) of the last voxel along each axis."""
        return (np.asarray(self.shape, dtype=float) - 1.0) * self.spacing

    def to_original(self, pos_a: np.ndarray) -> list[float]:
        """Original-frame voxel coordinates of a point rendered at ``pos_a`` Å on the stored grid (stored voxel
        ``pos_a / spacing``), through the preprocessing's resampling grid (:mod:`byu.tomo.grid`), rounded to 3
        decimals (as the tables are written)."""
        stored = np.asarray(pos_a, dtype=float) / self.spacing
        return [round(float(v), 3) for v in stored_to_original(stored, self.original_spacing, self.spacing)]


def original_shape(shape: tuple[int, int, int], original_spacing: float, spacing: float) -> tuple[int, int, int]:
    """The smallest original shape that the preprocessing (``floor(n * s)``) resamples to ``shape``."""
    s = scale_factor(original_spacing, spacing)
    out = []
    for n in shape:
        m = max(1, int(n / s) - 2)
        while resampled_length(m, s) < n:
            m += 1
        out.append(m)
    return (out[0], out[1], out[2])


def draw_shape(rng: np.random.Generator, z_range: tuple[int, int], yx_range: tuple[int, int],
               upper: bool) -> tuple[int, int, int]:
    """Stored shape, multiples of 8 (fast FFTs); ``upper`` draws from the upper half of the ranges."""

    def one(lo: int, hi: int) -> int:
        lo8, hi8 = int(np.ceil(lo / 8)), int(hi // 8)
        if upper:
            lo8 = (lo8 + hi8 + 1) // 2
        return 8 * int(rng.integers(lo8, max(lo8, hi8) + 1))

    return one(*z_range), one(*yx_range), one(*yx_range)


# ----------------------------------------------------------------------------------------------------------------
# random directions and rotations


def unit(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random unit vector."""
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def perp(u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random unit vector perpendicular to the unit vector ``u``."""
    v = rng.standard_normal(3)
    v -= v.dot(u) * u
    return v / np.linalg.norm(v)


def rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (columns: body axes in z, y, x)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 2] = -q[:, 2]
    return q


def rotations(rng: np.random.Generator, k: int) -> np.ndarray:
    """``k`` uniformly random rotation matrices, ``(k, 3, 3)`` (from uniform unit quaternions; vectorised)."""
    q = rng.standard_normal((k, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, a, b, c = q.T
    return np.stack([
        np.stack([1 - 2 * (b * b + c * c), 2 * (a * b - c * w), 2 * (a * c + b * w)], axis=-1),
        np.stack([2 * (a * b + c * w), 1 - 2 * (a * a + c * c), 2 * (b * c - a * w)], axis=-1),
        np.stack([2 * (a * c - b * w), 2 * (b * c + a * w), 1 - 2 * (a * a + b * b)], axis=-1),
    ], axis=1)


# ----------------------------------------------------------------------------------------------------------------
# points


def in_box(p: np.ndarray, extent: np.ndarray, margin: float) -> np.ndarray:
    """Which points lie inside the box ``[margin, extent - margin]`` on every axis."""
    p = np.atleast_2d(p)
    return np.all((p >= margin) & (p <= extent - margin), axis=-1)


def sample_separated(rng: np.random.Generator, k: int, extent: np.ndarray, *, margin: float, min_sep: float,
                     tries: int = 4000) -> np.ndarray | None:
    """``k`` points inside the box (``margin`` from the faces), pairwise at least ``min_sep`` apart, or None."""
    if k == 0:
        return np.zeros((0, 3))
    lo, hi = margin, extent - margin
    if np.any(hi < lo):
        return None
    cand = lo + rng.random((tries, k, 3)) * (hi - lo)
    if k == 1:
        return cand[0]
    d = np.linalg.norm(cand[:, :, None, :] - cand[:, None, :, :], axis=-1)
    iu = np.triu_indices(k, 1)
    ok = np.all(d[:, iu[0], iu[1]] >= min_sep, axis=1)
    hit = np.flatnonzero(ok)
    return cand[hit[0]] if len(hit) else None


# ----------------------------------------------------------------------------------------------------------------
# the cell envelope (motor worlds)


@dataclass
class Cell:
    """A cell envelope: two concentric spherical membranes, ``radius + inner_offset`` and ``radius + outer_offset``
    from ``centre`` (Å); ``radius`` is the sphere through the motor centres."""

    centre: np.ndarray
    radius: float
    inner_offset: float
    outer_offset: float

    def distance(self, p: np.ndarray) -> np.ndarray:
        """Signed distance (Å) of points from the sphere through the motor centres (outwards positive)."""
        return np.linalg.norm(np.atleast_2d(p) - self.centre, axis=-1) - self.radius

    def clear(self, p: np.ndarray, radius: float | np.ndarray) -> np.ndarray:
        """Which points are at least ``radius + MEMBRANE_CLEARANCE_A`` from both membranes."""
        d = self.distance(p)
        gap = radius + MEMBRANE_CLEARANCE_A
        return (np.abs(d - self.inner_offset) >= gap) & (np.abs(d - self.outer_offset) >= gap)


def cell_through(points: np.ndarray, rng: np.random.Generator, extent: np.ndarray) -> tuple[np.ndarray, float]:
    """A sphere (centre, radius in Å) passing through 0–3 points, radius between ~2500 and ~9000 Å."""
    k = len(points)
    extra = rng.uniform(0.0, 6000.0)
    if k == 0:
        q = rng.random(3) * extent
        radius = 2500.0 + extra
        return q - radius * unit(rng), radius
    if k == 1:
        radius = 2500.0 + extra
        return points[0] - radius * unit(rng), radius
    if k == 2:
        a, b = points
        half = np.linalg.norm(b - a) / 2
        radius = max(2500.0, float(1.05 * half)) + extra
        v = perp((b - a) / (2 * half), rng)
        return (a + b) / 2 + np.sqrt(radius**2 - half**2) * v, radius
    if k == 3:
        a, b, c = points
        ab, ac = b - a, c - a
        n = np.cross(ab, ac)
        nn = n.dot(n)
        circ = a + (np.cross(n, ab) * ac.dot(ac) + np.cross(ac, n) * ab.dot(ab)) / (2 * nn)
        rc = np.linalg.norm(circ - a)
        radius = max(2500.0, float(1.05 * rc)) + extra
        side = 1.0 if rng.random() < 0.5 else -1.0
        return circ + side * np.sqrt(radius**2 - rc**2) * n / np.sqrt(nn), radius
    raise ValueError("at most 3 motors per tomogram")

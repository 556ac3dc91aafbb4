"""Synthetic cohort: tomograms with flagellar-motor-like particles, their true labels, and noisy labels.

``make_cohort(out, n=24, seed=0)`` writes, under the data root ``out``:

- ``tomograms/synth_NNN/`` slice stacks + ``meta.json`` (the on-disk form the portal flow writes), stored at
  ``max(working_spacing, original_spacing)`` Å/voxel;
- ``synth/truth.csv``: every true motor, canonical form, in each tomogram's ORIGINAL frame (like a gt.csv):
  the original shape is the one the preprocessing resamples to the stored shape, and a particle rendered at
  stored voxel ``p`` is written at ``byu.tomo.grid.stored_to_original(p)``, so ``original_to_stored`` of a
  label lands on the rendered centre;
- ``synth/labels_noisy.csv``: the same table with planted errors (missed motors, false labels on decoys, labels
  shifted by more than 1000 Å), only in tomograms whose noisy label has at most one motor;
- ``synth/planted_errors.csv``: one row per planted error (original frame);
- ``synth/decoys.csv``: the motor-sized decoy structures (original frame).

What a tomogram holds, all placed in physical units (Å) and rendered on the stored grid:

- a cell envelope: inner and outer membranes as concentric spherical sheets (cytoplasm slightly denser);
- motors sitting in the inner membrane, axis along the envelope's outward normal: a dense bell-shaped body
  (350–450 Å across), a thin rod crossing the periplasm and the outer membrane, and a curved hook outside it;
- decoys of motor size away from the membranes: solid blobs, rings (tori) and vesicles (hollow shells);
- ribosome-sized clutter in the cytoplasm and a few very dense gold beads;
- correlated noise, a missing wedge (±55–65° tilt range about Y) and a resolution low-pass applied in Fourier
  space, then a little white noise; converted to uint8 by percentile clipping (0.879 / 99.06).

Everything is drawn from ``numpy.random.Generator``s seeded from ``seed`` (one stream per tomogram, one for the
cohort), so the same seed gives byte-identical files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft

from byu.atomic import atomic_open, write_bytes
from byu.labels.formats import tomograms_bytes, write_export, write_labels
from byu.labels.model import LabelSet
from byu.labels.table import make_table
from byu.paths import DataRoot
from byu.tomo.grid import resampled_length, scale_factor, stored_to_original
from byu.tomo.io import TomoMeta, write_tomogram

CLIP_PERCENTILES = (0.879, 99.06)
ERROR_KINDS = ("missed", "false", "shifted")
ERROR_COLUMNS = ["tomo_id", "kind", "true_z", "true_y", "true_x", "label_z", "label_y", "label_x"]
DECOY_COLUMNS = ["tomo_id", "z", "y", "x", "kind"]
DECOY_KINDS = ("blob", "ring", "vesicle")


@dataclass(frozen=True)
class CohortResult:
    """What ``make_cohort`` wrote and how much of it."""

    root: Path
    tomo_ids: list[str]
    truth_path: Path
    noisy_path: Path
    errors_path: Path
    decoys_path: Path
    n_motors: int
    n_decoys: int
    errors_by_kind: dict[str, int]
    seconds: float

    @property
    def n_tomograms(self) -> int:
        return len(self.tomo_ids)

    @property
    def n_errors(self) -> int:
        return sum(self.errors_by_kind.values())


@dataclass
class _Motor:
    pos: np.ndarray  # body centre, Å
    axis: np.ndarray  # unit, outward membrane normal
    bend: np.ndarray  # unit, perpendicular to axis: the direction the hook curves to
    diameter: float
    height: float
    rod_radius: float
    rod_end: float  # along axis from the body centre, Å
    hook_radius: float
    hook_curvature: float
    hook_sweep: float  # radians


@dataclass
class _Frame:
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
        ``pos_a / spacing``), through the preprocessing's resampling grid (:mod:`byu.tomo.grid`)."""
        stored = np.asarray(pos_a, dtype=float) / self.spacing
        return [round(float(v), 3) for v in stored_to_original(stored, self.original_spacing, self.spacing)]


@dataclass
class _Tomo(_Frame):
    cell_centre: np.ndarray = field(default_factory=lambda: np.zeros(3))
    cell_radius: float = 0.0  # sphere through the motor centres
    inner_offset: float = 0.0  # inner membrane radius = cell_radius + inner_offset
    outer_offset: float = 0.0
    motors: list[_Motor] = field(default_factory=list)
    decoys: list[tuple[str, np.ndarray, dict]] = field(default_factory=list)
    clutter: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))  # z, y, x (Å), diameter, amplitude
    beads: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # z, y, x (Å), radius
    tilt_deg: float = 60.0


def _original_shape(shape: tuple[int, int, int], original_spacing: float,
                    spacing: float) -> tuple[int, int, int]:
    """The smallest original shape that the preprocessing (``floor(n * s)``) resamples to ``shape``."""
    s = scale_factor(original_spacing, spacing)
    out = []
    for n in shape:
        m = max(1, int(n / s) - 2)
        while resampled_length(m, s) < n:
            m += 1
        out.append(m)
    return tuple(out)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------
# geometry


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _perp(u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    v -= v.dot(u) * u
    return v / np.linalg.norm(v)


def _in_box(p: np.ndarray, extent: np.ndarray, margin: float) -> np.ndarray:
    p = np.atleast_2d(p)
    return np.all((p >= margin) & (p <= extent - margin), axis=-1)


def _sample_separated(rng: np.random.Generator, k: int, extent: np.ndarray, *, margin: float, min_sep: float,
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


def _cell_through(points: np.ndarray, rng: np.random.Generator, extent: np.ndarray) -> tuple[np.ndarray, float]:
    """A sphere (centre, radius in Å) passing through 0–3 points, radius between ~2500 and ~9000 Å."""
    k = len(points)
    extra = rng.uniform(0.0, 6000.0)
    if k == 0:
        q = rng.random(3) * extent
        radius = 2500.0 + extra
        return q - radius * _unit(rng), radius
    if k == 1:
        radius = 2500.0 + extra
        return points[0] - radius * _unit(rng), radius
    if k == 2:
        a, b = points
        half = np.linalg.norm(b - a) / 2
        radius = max(2500.0, 1.05 * half) + extra
        v = _perp((b - a) / (2 * half), rng)
        return (a + b) / 2 + np.sqrt(radius**2 - half**2) * v, radius
    if k == 3:
        a, b, c = points
        ab, ac = b - a, c - a
        n = np.cross(ab, ac)
        nn = n.dot(n)
        circ = a + (np.cross(n, ab) * ac.dot(ac) + np.cross(ac, n) * ab.dot(ab)) / (2 * nn)
        rc = np.linalg.norm(circ - a)
        radius = max(2500.0, 1.05 * rc) + extra
        side = 1.0 if rng.random() < 0.5 else -1.0
        return circ + side * np.sqrt(radius**2 - rc**2) * n / np.sqrt(nn), radius
    raise ValueError("at most 3 motors per tomogram")


def _shell_distance(p: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    return np.linalg.norm(np.atleast_2d(p) - centre, axis=-1) - radius


def _draw_shape(rng: np.random.Generator, z_range: tuple[int, int], yx_range: tuple[int, int],
                upper: bool) -> tuple[int, int, int]:
    """Stored shape, multiples of 8 (fast FFTs); ``upper`` draws from the upper half of the ranges."""

    def one(lo: int, hi: int) -> int:
        lo8, hi8 = int(np.ceil(lo / 8)), int(hi // 8)
        if upper:
            lo8 = (lo8 + hi8 + 1) // 2
        return 8 * int(rng.integers(lo8, max(lo8, hi8) + 1))

    return one(*z_range), one(*yx_range), one(*yx_range)


def _plan_tomogram(index: int, n_motors: int, ss: np.random.SeedSequence, *, working_spacing: float,
                   spacing_range: tuple[float, float], z_range: tuple[int, int], yx_range: tuple[int, int],
                   min_motor_sep: float, edge_margin: float) -> _Tomo:
    rng = np.random.default_rng(ss)
    tomo_id = f"synth_{index:03d}"
    original_spacing = round(float(rng.uniform(*spacing_range)), 2)
    spacing = max(float(working_spacing), original_spacing)
    for attempt in range(40):
        shape = _draw_shape(rng, z_range, yx_range, upper=n_motors >= 2 and attempt > 0)
        extent = (np.asarray(shape) - 1.0) * spacing
        pts = _sample_separated(rng, n_motors, extent, margin=edge_margin, min_sep=min_motor_sep)
        if pts is not None:
            break
    else:
        raise ValueError(f"{tomo_id}: cannot fit {n_motors} motors {min_motor_sep:.0f} Å apart in shapes "
                         f"Z{z_range} YX{yx_range} at {spacing} Å; widen the shape ranges")
    original_shape = _original_shape(shape, original_spacing, spacing)
    centre, radius = _cell_through(pts, rng, extent)

    inner_offset = 120.0  # the body centre sits this far inside the inner membrane
    outer_offset = inner_offset + float(rng.uniform(200.0, 260.0))  # periplasm width
    motors = []
    for p in pts:
        axis = (p - centre) / np.linalg.norm(p - centre)
        diameter = float(rng.uniform(350.0, 450.0))
        motors.append(_Motor(
            pos=p, axis=axis, bend=_perp(axis, rng), diameter=diameter, height=diameter * rng.uniform(0.75, 0.9),
            rod_radius=float(rng.uniform(35.0, 45.0)), rod_end=outer_offset + 15.0,
            hook_radius=float(rng.uniform(35.0, 45.0)), hook_curvature=float(rng.uniform(110.0, 160.0)),
            hook_sweep=float(np.deg2rad(rng.uniform(80.0, 120.0))),
        ))
    tomo = _Tomo(tomo_id=tomo_id, index=index, original_spacing=original_spacing, spacing=spacing, shape=shape,
                 original_shape=original_shape, cell_centre=centre, cell_radius=radius, inner_offset=inner_offset,
                 outer_offset=outer_offset, motors=motors, tilt_deg=float(rng.uniform(55.0, 65.0)))
    _place_decoys(tomo, rng, edge_margin=edge_margin)
    _place_clutter(tomo, rng)
    return tomo


def _place_decoys(tomo: _Tomo, rng: np.random.Generator, *, edge_margin: float) -> None:
    """1–3 motor-sized decoys away from the membranes, >= 1500 Å from motors, >= 600 Å from each other."""
    want = int(rng.integers(1, 4))
    extent = tomo.extent
    motors = np.array([m.pos for m in tomo.motors]).reshape(-1, 3)
    cand = edge_margin + rng.random((600, 3)) * (extent - 2 * edge_margin)
    ok = np.ones(len(cand), dtype=bool)
    if len(motors):
        ok &= np.min(np.linalg.norm(cand[:, None] - motors[None], axis=-1), axis=1) >= 1500.0
    d = _shell_distance(cand, tomo.cell_centre, tomo.cell_radius)
    away = (np.abs(d - tomo.inner_offset) > 300.0) & (np.abs(d - tomo.outer_offset) > 300.0)
    order = np.concatenate([np.flatnonzero(ok & away), np.flatnonzero(ok & ~away)])  # relax only if needed
    chosen: list[np.ndarray] = []
    for i in order:
        if len(chosen) == want:
            break
        if all(np.linalg.norm(cand[i] - c) >= 600.0 for c in chosen):
            chosen.append(cand[i])
    for p in chosen:
        kind = DECOY_KINDS[int(rng.integers(len(DECOY_KINDS)))]
        if kind == "blob":
            rot = np.linalg.qr(rng.standard_normal((3, 3)))[0]
            params = {"rot": rot, "semi": rng.uniform(160.0, 220.0) * rng.uniform(0.85, 1.15, 3)}
        elif kind == "ring":
            params = {"axis": _unit(rng), "major": rng.uniform(140.0, 190.0), "minor": rng.uniform(55.0, 75.0)}
        else:
            params = {"radius": rng.uniform(190.0, 280.0), "width": rng.uniform(18.0, 26.0)}
        tomo.decoys.append((kind, p, params))


def _place_clutter(tomo: _Tomo, rng: np.random.Generator) -> None:
    """Ribosome-sized blobs in the cytoplasm and a few gold beads anywhere."""
    extent = tomo.extent
    volume_a3 = float(np.prod(extent))
    cand = rng.random((int(volume_a3 / 1.2e8) + 1, 3)) * extent
    d = _shell_distance(cand, tomo.cell_centre, tomo.cell_radius)
    keep = d < tomo.inner_offset - 150.0
    others = [m.pos for m in tomo.motors] + [p for _, p, _ in tomo.decoys]
    if others:
        keep &= np.min(np.linalg.norm(cand[:, None] - np.array(others)[None], axis=-1), axis=1) > 380.0
    pos = cand[keep]
    tomo.clutter = np.column_stack([pos, rng.uniform(180.0, 260.0, len(pos)), rng.uniform(0.35, 0.6, len(pos))])
    nb = int(rng.integers(3, 9))
    tomo.beads = np.column_stack([rng.random((nb, 3)) * extent, rng.uniform(45.0, 60.0, nb)])


# ----------------------------------------------------------------------------------------------------------------
# rendering


def _step(x: np.ndarray, width: float) -> np.ndarray:
    """Soft 0→1 step at x = 0."""
    return 0.5 * (1.0 + np.tanh(x / np.float32(width)))


def _local(vol: np.ndarray, spacing: float, centre: np.ndarray, half: float):
    """Index slices and broadcastable Å offsets (z, y, x) of the box ``centre ± half`` clipped to ``vol``."""
    lo = np.maximum(np.floor((centre - half) / spacing).astype(int), 0)
    hi = np.minimum(np.ceil((centre + half) / spacing).astype(int) + 1, vol.shape)
    if np.any(hi <= lo):
        return None
    axes = [np.arange(lo[k], hi[k], dtype=np.float32) * np.float32(spacing) - np.float32(centre[k]) for k in range(3)]
    return (tuple(slice(lo[k], hi[k]) for k in range(3)),
            (axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]))


def _add(vol: np.ndarray, spacing: float, centre: np.ndarray, half: float, density) -> None:
    box = _local(vol, spacing, np.asarray(centre, dtype=float), half)
    if box is not None:
        sl, (z, y, x) = box
        vol[sl] += density(z, y, x).astype(np.float32, copy=False)


def _axial(z, y, x, u):
    t = z * np.float32(u[0]) + y * np.float32(u[1]) + x * np.float32(u[2])
    r = np.sqrt(np.maximum(z * z + y * y + x * x - t * t, 0.0))
    return t, r


def _render_motor(vol: np.ndarray, spacing: float, m: _Motor, edge: float) -> None:
    u, v = m.axis, m.bend
    w = np.cross(u, v)
    h2, r0 = m.height / 2, m.diameter / 2

    def body(z, y, x):
        t, r = _axial(z, y, x, u)
        s = np.clip(t / m.height + 0.5, 0.0, 1.0)
        rmax = r0 * (1.0 - 0.45 * s * s)  # wide C-ring at the bottom, narrower towards the membrane
        dens = _step(rmax - r, edge) * _step(h2 - np.abs(t), edge)
        core = ((r / (0.22 * m.diameter)) ** 2) + ((t + 0.2 * m.height) / (0.25 * m.height)) ** 2
        hollow = 1.0 - 0.2 * np.exp(-core)  # a slightly less dense core, as in the C-ring
        return 1.2 * dens * hollow

    _add(vol, spacing, m.pos, r0 + 3 * edge, body)

    t0, t1 = h2, m.rod_end  # the soft ends of body and rod add up to 1 where they meet

    def rod(z, y, x):  # offsets are from the rod's middle
        t, r = _axial(z, y, x, u)
        t = t + np.float32((t0 + t1) / 2)
        return 0.85 * _step(m.rod_radius - r, edge) * _step(t - t0, edge) * _step(t1 - t, edge)

    rod_mid = m.pos + u * (t0 + t1) / 2
    _add(vol, spacing, rod_mid, (t1 - t0) / 2 + m.rod_radius + 3 * edge, rod)

    rc = m.hook_curvature
    start = m.pos + u * t1
    cc = start + rc * v  # centre of the hook's arc, which starts along +u and bends towards v
    sweep = m.hook_sweep

    def hook(z, y, x):
        a = z * np.float32(u[0]) + y * np.float32(u[1]) + x * np.float32(u[2])
        b = z * np.float32(v[0]) + y * np.float32(v[1]) + x * np.float32(v[2])
        h = z * np.float32(w[0]) + y * np.float32(w[1]) + x * np.float32(w[2])
        rho = np.sqrt(a * a + b * b)
        dist = np.sqrt((rho - np.float32(rc)) ** 2 + h * h)
        phi = np.arctan2(a, -b)
        ang = np.float32(edge / rc)
        return 0.85 * _step(m.hook_radius - dist, edge) * _step(phi, ang) * _step(np.float32(sweep) - phi, ang)

    _add(vol, spacing, cc, rc + m.hook_radius + 3 * edge, hook)


def _render_decoy(vol: np.ndarray, spacing: float, kind: str, p: np.ndarray, q: dict, edge: float) -> None:
    if kind == "blob":
        rot, semi = q["rot"], q["semi"]

        def blob(z, y, x):
            a = [z * np.float32(rot[0, k]) + y * np.float32(rot[1, k]) + x * np.float32(rot[2, k]) for k in range(3)]
            rad = np.sqrt(sum((a[k] / np.float32(semi[k])) ** 2 for k in range(3)))
            return 1.0 * _step((1.0 - rad) * np.float32(semi.mean()), edge)

        _add(vol, spacing, p, float(semi.max()) + 3 * edge, blob)
    elif kind == "ring":

        def ring(z, y, x):
            t, r = _axial(z, y, x, q["axis"])
            dist = np.sqrt((r - np.float32(q["major"])) ** 2 + t * t)
            return 1.3 * _step(np.float32(q["minor"]) - dist, edge)

        _add(vol, spacing, p, q["major"] + q["minor"] + 3 * edge, ring)
    else:

        def vesicle(z, y, x):
            dist = np.sqrt(z * z + y * y + x * x) - np.float32(q["radius"])
            return 0.9 * np.exp(-(dist * dist) / np.float32(2 * q["width"] ** 2))

        _add(vol, spacing, p, q["radius"] + 4 * q["width"], vesicle)


def _render_envelope(vol: np.ndarray, tomo: _Tomo) -> None:
    s = np.float32(tomo.spacing)
    c = tomo.cell_centre.astype(np.float32)
    zz = (np.arange(vol.shape[0], dtype=np.float32) * s - c[0]) ** 2
    yy = (np.arange(vol.shape[1], dtype=np.float32) * s - c[1]) ** 2
    xx = (np.arange(vol.shape[2], dtype=np.float32) * s - c[2]) ** 2
    d = np.sqrt(zz[:, None, None] + (yy[:, None] + xx[None, :])[None]) - np.float32(tomo.cell_radius)
    for off, amp, sig in ((tomo.inner_offset, 0.75, 22.0), (tomo.outer_offset, 0.7, 22.0)):
        e = d - np.float32(off)
        vol += np.float32(amp) * np.exp(e * e * np.float32(-0.5 / sig**2))
    vol += np.float32(0.15) * _step(np.float32(tomo.inner_offset) - d, 40.0)  # denser cytoplasm
    periplasm = _step(d - np.float32(tomo.inner_offset), 40.0) * _step(np.float32(tomo.outer_offset) - d, 40.0)
    vol += np.float32(0.06) * periplasm


def _freq_grids(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kz = scipy.fft.fftfreq(shape[0]).astype(np.float32)[:, None, None]
    ky = scipy.fft.fftfreq(shape[1]).astype(np.float32)[None, :, None]
    kx = scipy.fft.rfftfreq(shape[2]).astype(np.float32)[None, None, :]
    return kz, ky, kx


def _wedge(kz: np.ndarray, kx: np.ndarray, *, tilt_deg: float, soft_deg: float = 3.0) -> np.ndarray:
    """Missing wedge of a tilt series about Y spanning ±``tilt_deg``: frequencies closer to kz than that were never
    measured (soft edge of a few degrees)."""
    angle = np.degrees(np.arctan2(np.abs(kz), kx))  # 0 along kx, 90 along kz
    return _step(np.float32(tilt_deg) - angle, soft_deg).astype(np.float32)


def _lowpass(kz: np.ndarray, ky: np.ndarray, kx: np.ndarray, sigma_vox: float) -> np.ndarray:
    """Fourier transform of a Gaussian blur of ``sigma_vox`` voxels."""
    return np.exp(np.float32(-2 * np.pi**2 * sigma_vox**2) * (kz * kz + ky * ky + kx * kx))


def _rfft_power(h: np.ndarray, nx: int) -> float:
    """Mean of |h|² over the full (Hermitian) spectrum, given its rfft half ``h``."""
    weights = np.full(h.shape[2], 2.0)
    weights[0] = 1.0
    if nx % 2 == 0:
        weights[-1] = 1.0
    total = float(np.sum(np.sum(np.abs(h).astype(np.float64) ** 2, axis=(0, 1)) * weights))
    return total / (h.shape[0] * h.shape[1] * nx)


def _render(tomo: _Tomo, rng: np.random.Generator, *, noise: float) -> tuple[np.ndarray, tuple[float, float]]:
    """The tomogram as uint8 (Z, Y, X) and the clip values used."""
    shape = tomo.shape
    vol = np.zeros(shape, dtype=np.float32)
    edge = 0.6 * tomo.spacing  # soft edges of about one voxel
    _render_envelope(vol, tomo)
    for x in tomo.clutter:
        r, amp = x[3] / 2, np.float32(x[4])
        _add(vol, tomo.spacing, x[:3], r + 3 * edge,
             lambda z, y, xx, r=r, amp=amp: amp * _step(np.float32(r) - np.sqrt(z * z + y * y + xx * xx), edge))
    for kind, p, q in tomo.decoys:
        _render_decoy(vol, tomo.spacing, kind, p, q, edge)
    for m in tomo.motors:
        _render_motor(vol, tomo.spacing, m, edge)
    for b in tomo.beads:
        r = b[3]
        _add(vol, tomo.spacing, b[:3], r + 3 * edge,
             lambda z, y, x, r=r: 4.0 * _step(np.float32(r) - np.sqrt(z * z + y * y + x * x), edge))

    # Imaging, in Fourier space: the structure is blurred (resolution) and loses the wedge; the noise is drawn
    # there directly (complex Gaussian shaped by the same wedge and a wider blur: correlated noise).
    kz, ky, kx = _freq_grids(shape)
    wedge = _wedge(kz, kx, tilt_deg=tomo.tilt_deg)
    spec = scipy.fft.rfftn(vol, workers=1)
    del vol
    spec *= wedge * _lowpass(kz, ky, kx, 0.7)
    h_noise = wedge * _lowpass(kz, ky, kx, 1.1)
    scale = noise * np.sqrt(float(np.prod(shape)) / 2.0 / _rfft_power(h_noise, shape[2]))
    h_noise *= np.float32(scale)
    spec += rng.standard_normal(spec.shape, dtype=np.float32) * h_noise
    spec += 1j * rng.standard_normal(spec.shape, dtype=np.float32) * h_noise
    del h_noise
    vol = scipy.fft.irfftn(spec, s=shape, workers=1).astype(np.float32, copy=False)
    del spec
    vol += rng.standard_normal(shape, dtype=np.float32) * np.float32(0.12 * noise)  # detector-like grain
    lo, hi = (float(v) for v in np.percentile(vol, CLIP_PERCENTILES))
    out = np.clip((vol - np.float32(lo)) * np.float32(255.0 / (hi - lo)), 0, 255)
    return np.rint(out).astype(np.uint8), (lo, hi)

# ----------------------------------------------------------------------------------------------------------------
# planted errors


def _motor_counts(n: int, rng: np.random.Generator) -> np.ndarray:
    """~25% no motor, ~50% one, ~25% two or three, shuffled."""
    n0 = int(round(0.25 * n))
    nmany = int(round(0.25 * n))
    counts = [0] * n0 + [1] * (n - n0 - nmany) + [int(rng.choice([2, 3], p=[0.6, 0.4])) for _ in range(nmany)]
    return rng.permutation(np.asarray(counts, dtype=int))


def _shift_target(tomo: _Tomo, pos: np.ndarray, rng: np.random.Generator, *, edge_margin: float,
                  shift_range: tuple[float, float]) -> np.ndarray | None:
    """A point 1300–2000 Å (default) from ``pos``, inside the volume, clear of decoys and other motors."""
    dirs = rng.standard_normal((400, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    cand = pos + dirs * rng.uniform(*shift_range, (400, 1))
    ok = _in_box(cand, tomo.extent, edge_margin)
    others = [m.pos for m in tomo.motors if not np.array_equal(m.pos, pos)]
    for q in others + [p for _, p, _ in tomo.decoys]:
        ok &= np.linalg.norm(cand - q, axis=1) >= 1200.0
    hit = np.flatnonzero(ok)
    return cand[hit[0]] if len(hit) else None


def _plant_errors(tomos: list[_Tomo], rng: np.random.Generator, *, fraction: float, edge_margin: float,
                  shift_range: tuple[float, float]) -> list[dict]:
    """Choose and describe the planted errors (at most one per tomogram)."""
    n_err = int(round(fraction * len(tomos)))
    pools = {
        "false": [t for t in tomos if not t.motors and t.decoys],
        "shifted": [t for t in tomos if len(t.motors) == 1],
        "missed": [t for t in tomos if len(t.motors) in (1, 2)],
    }
    quota = dict.fromkeys(ERROR_KINDS, 0)
    if len(tomos) >= 12 and n_err >= 3:
        for k in ERROR_KINDS:
            quota[k] = 1
    rest = n_err - sum(quota.values())
    for j, k in enumerate(rng.permutation(len(ERROR_KINDS))):  # spread the rest evenly, random kinds first
        quota[ERROR_KINDS[int(k)]] += rest // len(ERROR_KINDS) + (1 if j < rest % len(ERROR_KINDS) else 0)
    used: set[str] = set()
    errors: list[dict] = []
    nan = [float("nan")] * 3

    def fill(kind: str, want: int) -> int:
        cands = [t for t in pools[kind] if t.tomo_id not in used]
        got = 0
        for j in rng.permutation(len(cands)):
            if got >= want:
                break
            t = cands[int(j)]
            if kind == "false":
                decoy = t.decoys[int(rng.integers(len(t.decoys)))][1]
                errors.append({"tomo": t, "kind": kind, "true": nan, "label": t.to_original(decoy)})
            elif kind == "shifted":
                target = _shift_target(t, t.motors[0].pos, rng, edge_margin=edge_margin, shift_range=shift_range)
                if target is None:
                    continue
                errors.append({"tomo": t, "kind": kind, "true": t.to_original(t.motors[0].pos),
                               "label": t.to_original(target), "motor": 0})
            else:
                i = int(rng.integers(len(t.motors)))
                errors.append({"tomo": t, "kind": kind, "true": t.to_original(t.motors[i].pos), "label": nan,
                               "motor": i})
            used.add(t.tomo_id)
            got += 1
        return got

    shortfall = sum(quota[k] - fill(k, quota[k]) for k in ("false", "shifted", "missed"))  # smallest pools first
    for kind in ("missed", "shifted", "false"):  # hand what could not be placed to the other kinds
        if shortfall > 0:
            shortfall -= fill(kind, shortfall)
    return errors


# ----------------------------------------------------------------------------------------------------------------
# public API


def make_cohort(
    out: str | Path,
    *,
    n: int = 24,
    seed: int = 0,
    working_spacing: float = 16.0,
    spacing_range: tuple[float, float] = (8.0, 20.0),
    z_range: tuple[int, int] = (96, 160),
    yx_range: tuple[int, int] = (160, 256),
    error_fraction: float = 0.3,
    noise: float = 0.35,
    min_motor_sep: float = 2000.0,
    edge_margin: float = 300.0,
    shift_range: tuple[float, float] = (1300.0, 2000.0),
) -> CohortResult:
    """Write a synthetic cohort of ``n`` tomograms with motors, true labels and noisy labels under ``out``.

    ``out`` is a byu data root: tomograms go to ``out/tomograms/synth_NNN``, the tables to ``out/synth/``
    (``truth.csv``, ``labels_noisy.csv``, ``planted_errors.csv``, ``decoys.csv``; all coordinates in each
    tomogram's original frame). Shapes are stored-voxel ranges at ``max(working_spacing, original spacing)``;
    original spacings are drawn from ``spacing_range``. About ``error_fraction`` of the tomograms get one planted
    error (missed / false-on-decoy / shifted by ``shift_range`` Å), only where the noisy label has at most one
    motor; with ``n >= 12`` every kind occurs at least once. ``noise`` is the std of the correlated noise relative
    to a motor body's density of 1. The same ``seed`` gives byte-identical output.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    t_start = time.perf_counter()
    root = DataRoot.from_env(Path(out))
    synth_dir = root.root / "synth"
    seq = np.random.SeedSequence(seed)
    cohort_rng = np.random.default_rng(seq.spawn(1)[0])
    tomo_seqs = [np.random.SeedSequence(seed, spawn_key=(1, i)) for i in range(n)]
    counts = _motor_counts(n, cohort_rng)

    tomos = [
        _plan_tomogram(i, int(counts[i]), tomo_seqs[i], working_spacing=working_spacing, spacing_range=spacing_range,
                       z_range=z_range, yx_range=yx_range, min_motor_sep=min_motor_sep, edge_margin=edge_margin)
        for i in range(n)
    ]
    errors = _plant_errors(tomos, cohort_rng, fraction=error_fraction, edge_margin=edge_margin,
                           shift_range=shift_range)

    for t, ss in zip(tomos, tomo_seqs):
        noise_rng = np.random.default_rng(ss.spawn(1)[0])
        vol, clip = _render(t, noise_rng, noise=noise)
        meta = TomoMeta(tomo_id=t.tomo_id, shape=t.shape, voxel_spacing=t.spacing, original_shape=t.original_shape,
                        original_spacing=t.original_spacing, clip=clip, clip_percentiles=CLIP_PERCENTILES,
                        source={"synth": {"seed": seed, "index": t.index}})
        write_tomogram(root.tomogram(t.tomo_id), vol, meta)

    truth_rows, noisy_rows = [], []
    by_tomo = {e["tomo"].tomo_id: e for e in errors}
    for t in tomos:
        true = [t.to_original(m.pos) for m in t.motors]
        noisy = list(true)
        e = by_tomo.get(t.tomo_id)
        if e is not None:
            if e["kind"] == "missed":
                noisy.pop(e["motor"])
            elif e["kind"] == "shifted":
                noisy[e["motor"]] = e["label"]
            else:
                noisy.append(e["label"])
        truth_rows.append((t.tomo_id, t.original_shape, t.original_spacing, true))
        noisy_rows.append((t.tomo_id, t.original_shape, t.original_spacing, noisy))
    truth_table = make_table(truth_rows)
    truth_path = write_labels(truth_table, synth_dir / "truth.csv")
    noisy_path = write_labels(make_table(noisy_rows), synth_dir / "labels_noisy.csv")
    truth_labels = LabelSet.from_canonical(truth_table)  # the same truth in the picks form, with its tomograms
    write_export(truth_labels, "picks", synth_dir / "truth_picks.csv")
    write_bytes(synth_dir / "tomograms.csv", tomograms_bytes(truth_labels))

    err_df = pd.DataFrame(
        [[e["tomo"].tomo_id, e["kind"], *e["true"], *e["label"]]
         for e in sorted(errors, key=lambda e: e["tomo"].tomo_id)],
        columns=ERROR_COLUMNS,
    )
    decoy_df = pd.DataFrame([[t.tomo_id, *t.to_original(p), kind] for t in tomos for kind, p, _ in t.decoys],
                            columns=DECOY_COLUMNS)
    errors_path, decoys_path = synth_dir / "planted_errors.csv", synth_dir / "decoys.csv"
    for df, path in ((err_df, errors_path), (decoy_df, decoys_path)):
        with atomic_open(path, "w", newline="") as fh:
            df.to_csv(fh, index=False, lineterminator="\n")

    return CohortResult(
        root=root.root, tomo_ids=[t.tomo_id for t in tomos], truth_path=truth_path, noisy_path=noisy_path,
        errors_path=errors_path, decoys_path=decoys_path, n_motors=int(sum(len(t.motors) for t in tomos)),
        n_decoys=len(decoy_df), errors_by_kind={k: int((err_df["kind"] == k).sum()) for k in ERROR_KINDS},
        seconds=time.perf_counter() - t_start,
    )

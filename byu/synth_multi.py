"""Synthetic multi-class cohort: tomograms with particles of several classes, their true picks, and noisy picks.

``make_multiclass_cohort(out, classes=[...], n=24, seed=0)`` writes, under the data root ``out``:

- ``tomograms/synth_NNN/`` slice stacks + ``meta.json`` (uint8, stored at ``max(working_spacing, original)`` Å);
- ``synth/truth_picks.csv`` and ``synth/labels_noisy_picks.csv``: ``tomo_id,particle,z,y,x,voxel_spacing``, one row
  per particle, coordinates in each tomogram's ORIGINAL voxel frame, ``voxel_spacing`` its original spacing; rows
  sorted by tomo_id, then particle (class name), then the order the particles were placed in;
- ``synth/tomograms.csv``: ``tomo_id,Z,Y,X,voxel_spacing`` (original frame) of every tomogram;
- ``synth/planted_errors.csv``: ``tomo_id,particle,kind,true_z,true_y,true_x,label_z,label_y,label_x`` (original
  frame, empty/NaN where not applicable), kinds ``missed``, ``false``, ``shifted``;
- ``synth/decoys.csv``: ``tomo_id,z,y,x,kind,mimics`` (original frame; ``mimics`` is the class a decoy is sized
  and placed like; empty for gold beads);
- ``synth/classes.json``: the classes used.

What a tomogram holds (physical units, Å, rendered on the stored grid; stored voxel ``i`` is at ``i * spacing``):

- particles of every class with a class-specific shape at its real size (:data:`CLASS_SHAPES`) in a random
  orientation: ``apo-ferritin`` a hollow spherical shell, ``ribosome`` a large and a small lobe, ``beta-galactosidase``
  four blobs in a square, ``thyroglobulin`` an elongated two-lobed dimer with a waist, ``beta-amylase`` a small dense
  blob with a groove cut into one side, ``virus-like-particle`` a thick icosahedral shell, ``motor`` the motor of
  :mod:`byu.synth` (bell-shaped body in the inner membrane of a cell envelope, rod, hook), any other class a solid
  ellipsoid of its radius;
- when ``motor`` is among the classes, the cell envelope of :mod:`byu.synth` (two membranes; other particles keep
  clear of them);
- per class, decoys of the class's size but another shape (:data:`DECOY_SHAPES`: a solid sphere for a shell, one
  blob for the two-lobed ribosome, a ring for the four-blob square, a rod for the dimer, a dumbbell for the grooved
  blob, blob / ring / vesicle for a motor, a vesicle for an ellipsoid), gold beads and faint clutter;
- the imaging of :mod:`byu.synth`: missing wedge, resolution low-pass, correlated noise, percentile clip to uint8.

Objects never overlap: any two are at least twice the larger radius apart (motors ``min_motor_sep`` apart, other
objects clear of a motor's rod and hook), a decoy at least 1.5 match radii from the particles of the class it mimics.

Planted errors, per class, at most one per (tomogram, class): ``missed`` (a true particle left out), ``false`` (a
label on a decoy mimicking the class), ``shifted`` (a label moved by 2x the class's match radius up to that plus its
radius, inside the volume, at least 2x the match radius from every other particle of the class). Each class gets
``round(error_fraction * n)`` of them (every kind at least once when ``n >= 12``), as far as its tomograms allow.

Everything is drawn from ``numpy.random.Generator``s seeded from ``seed`` (one stream per tomogram for its content,
one per tomogram for its noise, one for the cohort), so the same arguments give byte-identical files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.fft

from byu.atomic import atomic_open, write_text
from byu.labels.classes import BUILTIN_CLASSES, ParticleClass
from byu.paths import DataRoot
from byu.synth import (
    CLIP_PERCENTILES,
    _add,
    _cell_through,
    _draw_shape,
    _original_shape,
    _perp,
    _sample_separated,
    _Frame,
    _freq_grids,
    _lowpass,
    _Motor,
    _render_motor,
    _rfft_power,
    _step,
    _wedge,
)
from byu.tomo import grid
from byu.tomo.io import TomoMeta, write_tomogram

ERROR_KINDS = ("missed", "false", "shifted")
PICK_COLUMNS = ["tomo_id", "particle", "z", "y", "x", "voxel_spacing"]
TOMOGRAM_COLUMNS = ["tomo_id", "Z", "Y", "X", "voxel_spacing"]
ERROR_COLUMNS = ["tomo_id", "particle", "kind", "true_z", "true_y", "true_x", "label_z", "label_y", "label_x"]
DECOY_COLUMNS = ["tomo_id", "z", "y", "x", "kind", "mimics"]

#: The shape drawn for a class name; any other class is a solid ellipsoid of its radius.
CLASS_SHAPES: dict[str, str] = {
    "apo-ferritin": "shell",
    "ribosome": "two-lobes",
    "beta-galactosidase": "tetramer",
    "thyroglobulin": "dimer",
    "beta-amylase": "grooved-blob",
    "virus-like-particle": "capsid",
    "motor": "motor",
}
DEFAULT_SHAPE = "ellipsoid"
#: Decoy kinds per class shape: the class's size, another shape.
DECOY_SHAPES: dict[str, tuple[str, ...]] = {
    "shell": ("sphere",),
    "two-lobes": ("blob",),
    "tetramer": ("ring",),
    "dimer": ("rod",),
    "grooved-blob": ("dumbbell",),
    "capsid": ("sphere",),
    "motor": ("blob", "ring", "vesicle"),
    "ellipsoid": ("vesicle",),
}
MOTOR = "motor"
MOTOR_CLEARANCE_A = 650.0  # a motor's rod and hook end within this of its body centre
MEMBRANE_CLEARANCE_A = 60.0
DECOY_MATCH_SEP = 1.5  # a decoy is at least this many match radii from the particles of the class it mimics
INNER_OFFSET_A = 120.0  # a motor's body centre sits this far inside the inner membrane (as byu.synth)

_PHI = (1.0 + 5.0**0.5) / 2.0
# Face normals of an icosahedron (the vertices of a dodecahedron), one of each +- pair.
_ICOSA_FACES = np.array(
    [[1, 1, 1], [1, 1, -1], [1, -1, 1], [1, -1, -1],
     [0, 1 / _PHI, _PHI], [0, 1 / _PHI, -_PHI], [1 / _PHI, _PHI, 0], [1 / _PHI, -_PHI, 0],
     [_PHI, 0, 1 / _PHI], [_PHI, 0, -1 / _PHI]], dtype=float,
) / np.sqrt(3.0)
_ICOSA_IN_OVER_CIRCUM = 0.7946544722917661


@dataclass(frozen=True)
class MultiCohortResult:
    """What ``make_multiclass_cohort`` wrote and how much of it."""

    root: Path
    tomo_ids: list[str]
    class_names: list[str]
    truth_path: Path
    noisy_path: Path
    tomograms_path: Path
    errors_path: Path
    decoys_path: Path
    classes_path: Path
    particles_by_class: dict[str, int]
    decoys_by_class: dict[str, int]
    errors_by_class: dict[str, dict[str, int]]
    unplaced_by_class: dict[str, int]  # particles drawn that did not fit anywhere (left out of the truth too)
    n_beads: int
    seconds: float

    @property
    def n_tomograms(self) -> int:
        return len(self.tomo_ids)

    @property
    def n_particles(self) -> int:
        return sum(self.particles_by_class.values())

    @property
    def n_errors(self) -> int:
        return sum(sum(v.values()) for v in self.errors_by_class.values())

    @property
    def errors_by_kind(self) -> dict[str, int]:
        return {k: sum(v[k] for v in self.errors_by_class.values()) for k in ERROR_KINDS}


@dataclass
class _Obj:
    role: str  # "particle", "decoy", "bead", "clutter"
    cls: str  # the particle's class, the class a decoy mimics, "" for beads and clutter
    shape: str  # renderer kind
    pos: np.ndarray  # Å, stored frame (stored voxel i at i * spacing)
    radius: float  # exclusion radius, Å
    rot: np.ndarray  # columns: the body axes
    params: dict[str, Any]

    @property
    def is_motor(self) -> bool:
        return self.role == "particle" and self.shape == "motor"


@dataclass
class _Cell:
    centre: np.ndarray
    radius: float
    inner_offset: float
    outer_offset: float

    def clear(self, p: np.ndarray, radius: float) -> np.ndarray:
        d = np.linalg.norm(np.atleast_2d(p) - self.centre, axis=-1) - self.radius
        gap = radius + MEMBRANE_CLEARANCE_A
        return (np.abs(d - self.inner_offset) >= gap) & (np.abs(d - self.outer_offset) >= gap)


@dataclass
class _Plan(_Frame):
    tilt_deg: float = 60.0
    cell: _Cell | None = None
    objects: list[_Obj] = field(default_factory=list)
    unplaced: dict[str, int] = field(default_factory=dict)  # particles drawn that did not fit, per class

    def of(self, role: str, cls: str | None = None) -> list[_Obj]:
        return [o for o in self.objects if o.role == role and (cls is None or o.cls == cls)]


# ----------------------------------------------------------------------------------------------------------------
# geometry


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (columns: body axes in z, y, x)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 2] = -q[:, 2]
    return q


def _shape_of(c: ParticleClass) -> str:
    return CLASS_SHAPES.get(c.name, DEFAULT_SHAPE)


def _min_sep(a: _Obj, b: _Obj, classes: dict[str, ParticleClass], min_motor_sep: float) -> float:
    """The least distance (Å) allowed between the centres of two objects."""
    if a.is_motor and b.is_motor:
        return min_motor_sep
    if a.is_motor or b.is_motor:
        m, o = (a, b) if a.is_motor else (b, a)
        sep = max(2 * max(m.radius, o.radius), MOTOR_CLEARANCE_A + o.radius)
    else:
        sep = 2 * max(a.radius, b.radius)
    for d, p in ((a, b), (b, a)):
        if d.role == "decoy" and p.role == "particle" and d.cls == p.cls:
            sep = max(sep, DECOY_MATCH_SEP * classes[d.cls].match_radius_A)
    return sep


def _place(rng: np.random.Generator, plan: _Plan, obj: _Obj, *, margin: float, classes: dict[str, ParticleClass],
           min_motor_sep: float, tries: int = 400) -> bool:
    """Put ``obj`` at a random free position (``margin`` Å from the faces); False if none of ``tries`` fits.

    Draws the same number of random numbers whatever happens (determinism does not depend on what fits)."""
    extent = plan.extent
    lo, hi = margin, extent - margin
    cand = lo + rng.random((tries, 3)) * np.maximum(hi - lo, 0.0)
    if np.any(hi < lo):
        return False
    ok = np.ones(tries, dtype=bool)
    if plan.objects:
        pos = np.array([o.pos for o in plan.objects])
        req = np.array([_min_sep(obj, o, classes, min_motor_sep) for o in plan.objects])
        ok &= np.all(np.linalg.norm(cand[:, None] - pos[None], axis=-1) >= req[None], axis=1)
    if plan.cell is not None and not obj.is_motor:
        ok &= plan.cell.clear(cand, obj.radius)
    hit = np.flatnonzero(ok)
    if not len(hit):
        return False
    obj.pos = cand[hit[0]]
    plan.objects.append(obj)
    return True


def _particle_params(shape: str, radius: float, rng: np.random.Generator) -> tuple[dict[str, Any], float]:
    """Shape parameters (Å) of one particle and its extent from the centre."""
    j = float(rng.uniform(0.95, 1.05))
    r = radius * j
    if shape == "shell":
        return {"outer": r, "inner": r * float(rng.uniform(0.6, 0.68)), "amp": 2.0}, r  # a dense protein shell
    if shape == "two-lobes":  # large subunit + small subunit; the centre of mass is near the origin
        return {"large_c": (-0.28 * r, 0.0, 0.0), "large_r": 0.62 * r,
                "small_c": (0.58 * r, 0.06 * r, 0.0), "small_semi": (0.3 * r, 0.62 * r, 0.5 * r), "amp": 1.0}, r
    if shape == "tetramer":  # four blobs in a square in the body's (1, 2) plane
        d = 0.38 * r
        return {"centres": [(0.0, sy * d, sx * d) for sy in (-1, 1) for sx in (-1, 1)], "blob_r": 0.4 * r,
                "amp": 1.1}, r
    if shape == "dimer":  # two ellipsoids end to end along body axis 0, a waist between them
        return {"centres": [(-0.45 * r, 0.0, 0.0), (0.45 * r, 0.0, 0.0)], "semi": (0.5 * r, 0.4 * r, 0.34 * r),
                "amp": 1.0}, r
    if shape == "grooved-blob":  # dense; a groove across body axis 0 cut into the +axis-2 side
        return {"semi": (0.85 * r, 0.75 * r, 0.65 * r), "groove_half": 0.22 * r, "groove_from": 0.05 * r,
                "amp": 1.3}, r
    if shape == "capsid":  # thick icosahedral shell, circumradius r
        outer = _ICOSA_IN_OVER_CIRCUM * r
        return {"outer": outer, "inner": outer * float(rng.uniform(0.66, 0.72)), "amp": 1.1}, r
    if shape == "ellipsoid":
        return {"semi": (r, r * float(rng.uniform(0.75, 0.95)), r * float(rng.uniform(0.6, 0.85))), "amp": 1.0}, r
    raise ValueError(f"unknown particle shape {shape!r}")


def _decoy_params(kind: str, radius: float, rng: np.random.Generator, *, motor: bool = False) -> dict[str, Any]:
    """Shape parameters (Å) of a decoy sized like a particle of ``radius``."""
    if kind == "sphere":
        return {"r": radius * float(rng.uniform(0.85, 1.0)), "amp": 1.0}
    if kind == "blob":  # about a ribosome's volume; a motor's as byu.synth (160-220 Å for a 250 Å motor)
        lo, hi = (0.64, 0.88) if motor else (0.58, 0.78)
        return {"semi": tuple(radius * float(rng.uniform(lo, hi)) * rng.uniform(0.85, 1.15, 3)), "amp": 1.0}
    if kind == "ring":
        return {"major": radius * float(rng.uniform(0.56, 0.76)), "minor": radius * float(rng.uniform(0.22, 0.3)),
                "amp": 1.25}
    if kind == "rod":
        return {"half": radius * float(rng.uniform(0.9, 1.0)), "r": radius * float(rng.uniform(0.26, 0.32)),
                "amp": 1.0}
    if kind == "dumbbell":
        return {"offset": 0.52 * radius, "r": radius * float(rng.uniform(0.38, 0.44)), "amp": 1.25}
    if kind == "vesicle":
        return {"radius": radius * float(rng.uniform(0.76, 1.12)), "width": float(rng.uniform(18.0, 26.0)),
                "amp": 0.9}
    raise ValueError(f"unknown decoy kind {kind!r}")


def _motor(pos: np.ndarray, cell: _Cell, rng: np.random.Generator) -> _Motor:
    """A motor at ``pos`` in the inner membrane of ``cell`` (parameters as byu.synth draws them)."""
    axis = (pos - cell.centre) / np.linalg.norm(pos - cell.centre)
    diameter = float(rng.uniform(350.0, 450.0))
    return _Motor(
        pos=pos, axis=axis, bend=_perp(axis, rng), diameter=diameter, height=diameter * rng.uniform(0.75, 0.9),
        rod_radius=float(rng.uniform(35.0, 45.0)), rod_end=cell.outer_offset + 15.0,
        hook_radius=float(rng.uniform(35.0, 45.0)), hook_curvature=float(rng.uniform(110.0, 160.0)),
        hook_sweep=float(np.deg2rad(rng.uniform(80.0, 120.0))),
    )


def _plan_tomogram(index: int, classes: list[ParticleClass], ss: np.random.SeedSequence, *, working_spacing: float,
                   spacing_range: tuple[float, float], z_range: tuple[int, int], yx_range: tuple[int, int],
                   count_range: tuple[int, int], motor_count_range: tuple[int, int],
                   decoy_range: tuple[int, int], motor_decoy_range: tuple[int, int], n_beads: tuple[int, int],
                   min_motor_sep: float, motor_margin: float) -> _Plan:
    rng = np.random.default_rng(ss)
    by_name = {c.name: c for c in classes}
    tomo_id = f"synth_{index:03d}"
    original_spacing = round(float(rng.uniform(*spacing_range)), 2)
    spacing = grid.working_spacing(original_spacing, working_spacing)
    counts = {c.name: int(rng.integers(*(motor_count_range if c.name == MOTOR else count_range), endpoint=True))
              for c in classes}
    has_motor_class = MOTOR in by_name
    n_motors = counts.get(MOTOR, 0)
    for attempt in range(40):
        shape = _draw_shape(rng, z_range, yx_range, upper=n_motors >= 2 and attempt > 0)
        extent = (np.asarray(shape) - 1.0) * spacing
        motor_pos = _sample_separated(rng, n_motors, extent, margin=motor_margin, min_sep=min_motor_sep)
        if motor_pos is not None:
            break
    else:
        raise ValueError(f"{tomo_id}: cannot fit {n_motors} motors {min_motor_sep:.0f} Å apart in shapes "
                         f"Z{z_range} YX{yx_range} at {spacing} Å; widen the shape ranges")
    original_shape = _original_shape(shape, original_spacing, spacing)
    cell = None
    if has_motor_class:
        centre, radius = _cell_through(motor_pos, rng, extent)
        cell = _Cell(centre=centre, radius=radius, inner_offset=INNER_OFFSET_A,
                     outer_offset=INNER_OFFSET_A + float(rng.uniform(200.0, 260.0)))
    plan = _Plan(tomo_id=tomo_id, index=index, original_spacing=original_spacing, spacing=spacing, shape=shape,
                 original_shape=original_shape, tilt_deg=float(rng.uniform(55.0, 65.0)), cell=cell)
    for p in motor_pos:
        plan.objects.append(_Obj("particle", MOTOR, "motor", p, by_name[MOTOR].radius, np.eye(3),
                                 {"motor": _motor(p, cell, rng)}))  # type: ignore[arg-type]

    # The rest, largest first (particles of a class before its decoys): particles, then decoys, then beads.
    todo: list[tuple[float, int, str, ParticleClass]] = []
    for c in classes:
        if c.name != MOTOR:
            todo += [(c.radius, 0, "particle", c)] * counts[c.name]
        k = int(rng.integers(*(motor_decoy_range if c.name == MOTOR else decoy_range), endpoint=True))
        todo += [(c.radius, 1, "decoy", c)] * k
    todo.sort(key=lambda t: (-t[0], t[1]))  # stable: classes keep their given order among equal radii
    place = dict(classes=by_name, min_motor_sep=min_motor_sep)
    for _, _, role, c in todo:
        shape_kind = _shape_of(c)
        rot = _rotation(rng)
        if role == "particle":
            params, extent_r = _particle_params(shape_kind, c.radius, rng)
            obj = _Obj("particle", c.name, shape_kind, np.zeros(3), extent_r, rot, params)
        else:
            kinds = DECOY_SHAPES[shape_kind]
            kind = kinds[int(rng.integers(len(kinds)))]
            obj = _Obj("decoy", c.name, kind, np.zeros(3), c.radius, rot,
                       _decoy_params(kind, c.radius, rng, motor=c.name == MOTOR))
        margin = motor_margin if c.name == MOTOR else max(c.radius + spacing, 2 * spacing)
        placed = _place(rng, plan, obj, margin=min(margin, float(plan.extent.min()) / 2 - 1.0), **place)
        if not placed and role == "particle":
            plan.unplaced[c.name] = plan.unplaced.get(c.name, 0) + 1
    for _ in range(int(rng.integers(*n_beads, endpoint=True))):
        r = float(rng.uniform(45.0, 60.0))
        _place(rng, plan, _Obj("bead", "", "gold", np.zeros(3), r, np.eye(3), {"r": r, "amp": 4.0}),
               margin=r + spacing, **place)
    _place_clutter(plan, rng)
    return plan


def _place_clutter(plan: _Plan, rng: np.random.Generator) -> None:
    """Faint small blobs in the background, clear of every object and membrane (not recorded anywhere)."""
    extent = plan.extent
    k = int(float(np.prod(extent)) / 1.5e8) + 1
    cand = rng.random((k, 3)) * extent
    semi = rng.uniform(30.0, 90.0, (k, 1)) * rng.uniform(0.8, 1.2, (k, 3))
    amp = rng.uniform(0.25, 0.45, k)
    rots = [_rotation(rng) for _ in range(k)]
    rmax = semi.max(axis=1)
    ok = np.ones(k, dtype=bool)
    if plan.objects:
        pos = np.array([o.pos for o in plan.objects])
        rad = np.array([MOTOR_CLEARANCE_A if o.is_motor else o.radius for o in plan.objects])
        ok &= np.all(np.linalg.norm(cand[:, None] - pos[None], axis=-1) >= rad[None] + rmax[:, None] + 40.0, axis=1)
    if plan.cell is not None:
        ok &= plan.cell.clear(cand, rmax)
    for i in np.flatnonzero(ok):
        plan.objects.append(_Obj("clutter", "", "ellipsoid", cand[i], float(rmax[i]), rots[i],
                                 {"semi": tuple(semi[i]), "amp": float(amp[i])}))


# ----------------------------------------------------------------------------------------------------------------
# rendering


def _f(v: float) -> np.float32:
    return np.float32(v)


def _body(z, y, x, rot: np.ndarray) -> list[np.ndarray]:
    """Offsets in the body frame (the columns of ``rot`` are the body axes in z, y, x)."""
    return [z * _f(rot[0, k]) + y * _f(rot[1, k]) + x * _f(rot[2, k]) for k in range(3)]


def _ell(a: list[np.ndarray], c: Sequence[float], semi: Sequence[float], edge: float) -> np.ndarray:
    """Soft solid ellipsoid (body coordinates ``a``, centre ``c``, semi-axes ``semi``)."""
    rad = np.sqrt(sum(((a[k] - _f(c[k])) / _f(semi[k])) ** 2 for k in range(3)))
    return _step((1.0 - rad) * _f(min(semi)), edge)


def _ball(a: list[np.ndarray], c: Sequence[float], r: float, edge: float) -> np.ndarray:
    d = np.sqrt(sum((a[k] - _f(c[k])) ** 2 for k in range(3)))
    return _step(_f(r) - d, edge)


def _density(o: _Obj, edge: float):
    """The density function of an object (offsets z, y, x in Å from its centre) and its half extent (Å)."""
    p, rot, amp = o.params, o.rot, _f(o.params.get("amp", 1.0))
    s = o.shape
    if s in ("shell", "sphere", "gold"):
        outer = p.get("outer", p.get("r"))
        inner = p.get("inner")

        def f(z, y, x):
            d = np.sqrt(z * z + y * y + x * x)
            v = _step(_f(outer) - d, edge)
            return amp * (v * _step(d - _f(inner), edge) if inner is not None else v)

        return f, outer
    if s == "two-lobes":

        def f(z, y, x):
            a = _body(z, y, x, rot)
            return amp * np.maximum(_ball(a, p["large_c"], p["large_r"], edge),
                                    _ell(a, p["small_c"], p["small_semi"], edge))

        return f, o.radius
    if s in ("tetramer", "dimer"):

        def f(z, y, x):
            a = _body(z, y, x, rot)
            parts = [_ball(a, c, p["blob_r"], edge) if s == "tetramer" else _ell(a, c, p["semi"], edge)
                     for c in p["centres"]]
            return amp * np.maximum.reduce(parts)

        return f, o.radius
    if s == "grooved-blob":

        def f(z, y, x):
            a = _body(z, y, x, rot)
            groove = _step(_f(p["groove_half"]) - np.abs(a[0]), edge) * _step(a[2] - _f(p["groove_from"]), edge)
            return amp * _ell(a, (0.0, 0.0, 0.0), p["semi"], edge) * (1.0 - groove)

        return f, o.radius
    if s == "capsid":
        faces = rot @ _ICOSA_FACES.T  # face normals in z, y, x

        def f(z, y, x):
            dist = np.maximum.reduce([np.abs(z * _f(n[0]) + y * _f(n[1]) + x * _f(n[2])) for n in faces.T])
            return amp * _step(_f(p["outer"]) - dist, edge) * _step(dist - _f(p["inner"]), edge)

        return f, o.radius
    if s in ("ellipsoid", "blob"):

        def f(z, y, x):
            return amp * _ell(_body(z, y, x, rot), (0.0, 0.0, 0.0), p["semi"], edge)

        return f, float(max(p["semi"]))
    if s == "ring":

        def f(z, y, x):
            a = _body(z, y, x, rot)
            rr = np.sqrt(a[1] * a[1] + a[2] * a[2])
            d = np.sqrt((rr - _f(p["major"])) ** 2 + a[0] * a[0])
            return amp * _step(_f(p["minor"]) - d, edge)

        return f, p["major"] + p["minor"]
    if s == "rod":

        def f(z, y, x):
            a = _body(z, y, x, rot)
            rr = np.sqrt(a[1] * a[1] + a[2] * a[2])
            return amp * _step(_f(p["r"]) - rr, edge) * _step(_f(p["half"]) - np.abs(a[0]), edge)

        return f, p["half"] + p["r"]
    if s == "dumbbell":

        def f(z, y, x):
            a = _body(z, y, x, rot)
            return amp * np.maximum(_ball(a, (p["offset"], 0.0, 0.0), p["r"], edge),
                                    _ball(a, (-p["offset"], 0.0, 0.0), p["r"], edge))

        return f, p["offset"] + p["r"]
    if s == "vesicle":

        def f(z, y, x):
            d = np.sqrt(z * z + y * y + x * x) - _f(p["radius"])
            return amp * np.exp(-(d * d) / _f(2 * p["width"] ** 2))

        return f, p["radius"] + 4 * p["width"]
    raise ValueError(f"unknown shape {s!r}")


def _render_object(vol: np.ndarray, spacing: float, o: _Obj, edge: float) -> None:
    if o.shape == "motor":
        _render_motor(vol, spacing, o.params["motor"], edge)
        return
    f, half = _density(o, edge)
    _add(vol, spacing, o.pos, half + 3 * edge, f)


def _render_envelope(vol: np.ndarray, spacing: float, cell: _Cell) -> None:
    """Two membranes as concentric spherical sheets, denser cytoplasm (as byu.synth draws them)."""
    s = _f(spacing)
    c = cell.centre.astype(np.float32)
    zz = (np.arange(vol.shape[0], dtype=np.float32) * s - c[0]) ** 2
    yy = (np.arange(vol.shape[1], dtype=np.float32) * s - c[1]) ** 2
    xx = (np.arange(vol.shape[2], dtype=np.float32) * s - c[2]) ** 2
    d = np.sqrt(zz[:, None, None] + (yy[:, None] + xx[None, :])[None]) - _f(cell.radius)
    for off, amp, sig in ((cell.inner_offset, 0.75, 22.0), (cell.outer_offset, 0.7, 22.0)):
        e = d - _f(off)
        vol += _f(amp) * np.exp(e * e * _f(-0.5 / sig**2))
    vol += _f(0.15) * _step(_f(cell.inner_offset) - d, 40.0)
    vol += _f(0.06) * _step(d - _f(cell.inner_offset), 40.0) * _step(_f(cell.outer_offset) - d, 40.0)


def _image(vol: np.ndarray, rng: np.random.Generator, *, tilt_deg: float, noise: float
           ) -> tuple[np.ndarray, tuple[float, float]]:
    """Missing wedge + low-pass + correlated noise (as byu.synth), then percentile clip to uint8."""
    shape = vol.shape
    kz, ky, kx = _freq_grids(shape)
    wedge = _wedge(kz, kx, tilt_deg=tilt_deg)
    spec = scipy.fft.rfftn(vol, workers=1)
    spec *= wedge * _lowpass(kz, ky, kx, 0.7)
    h_noise = wedge * _lowpass(kz, ky, kx, 1.1)
    scale = noise * np.sqrt(float(np.prod(shape)) / 2.0 / _rfft_power(h_noise, shape[2]))
    h_noise *= _f(scale)
    spec += rng.standard_normal(spec.shape, dtype=np.float32) * h_noise
    spec += 1j * rng.standard_normal(spec.shape, dtype=np.float32) * h_noise
    del h_noise
    out = scipy.fft.irfftn(spec, s=shape, workers=1).astype(np.float32, copy=False)
    del spec
    out += rng.standard_normal(shape, dtype=np.float32) * _f(0.12 * noise)
    lo, hi = (float(v) for v in np.percentile(out, CLIP_PERCENTILES))
    out = np.clip((out - _f(lo)) * _f(255.0 / (hi - lo)), 0, 255)
    return np.rint(out).astype(np.uint8), (lo, hi)


def _render(plan: _Plan, rng: np.random.Generator, *, noise: float) -> tuple[np.ndarray, tuple[float, float]]:
    vol = np.zeros(plan.shape, dtype=np.float32)
    edge = 0.6 * plan.spacing
    if plan.cell is not None:
        _render_envelope(vol, plan.spacing, plan.cell)
    for role in ("clutter", "decoy", "particle", "bead"):
        for o in plan.of(role):
            _render_object(vol, plan.spacing, o, edge)
    return _image(vol, rng, tilt_deg=plan.tilt_deg, noise=noise)


def render_template(c: ParticleClass | str, spacing: float = 16.0, *, seed: int = 0, decoy: str | None = None,
                    rotation: np.ndarray | None = None, box: int | None = None) -> np.ndarray:
    """A noise-free float32 density cube of one particle of class ``c`` (or, with ``decoy``, a decoy of that kind
    sized like it) centred on voxel ``box // 2``, at ``spacing`` Å/voxel, before any imaging (for tests, figures and
    checking what a class looks like). ``rotation`` (3x3, columns the body axes) defaults to a random one."""
    c = BUILTIN_CLASSES[c] if isinstance(c, str) else c
    rng = np.random.default_rng(seed)
    rot = _rotation(rng) if rotation is None else np.asarray(rotation, dtype=float)
    shape_kind = _shape_of(c)
    if box is None:
        reach = 700.0 if shape_kind == "motor" and decoy is None else 1.3 * c.radius
        box = 2 * int(np.ceil(reach / spacing)) + 5
    centre = np.full(3, (box // 2) * spacing)
    edge = 0.6 * spacing
    vol = np.zeros((box, box, box), dtype=np.float32)
    if decoy is not None:
        _render_object(vol, spacing, _Obj("decoy", c.name, decoy, centre, c.radius, rot,
                                          _decoy_params(decoy, c.radius, rng, motor=c.name == MOTOR)), edge)
    elif shape_kind == "motor":
        axis = rot[:, 0]
        cell = _Cell(centre=centre - 4000.0 * axis, radius=4000.0, inner_offset=INNER_OFFSET_A,
                     outer_offset=INNER_OFFSET_A + 230.0)
        _render_motor(vol, spacing, _motor(centre, cell, rng), edge)
    else:
        params, reach = _particle_params(shape_kind, c.radius, rng)
        _render_object(vol, spacing, _Obj("particle", c.name, shape_kind, centre, reach, rot, params), edge)
    return vol


# ----------------------------------------------------------------------------------------------------------------
# planted errors


def _shift_target(plan: _Plan, obj: _Obj, c: ParticleClass, rng: np.random.Generator) -> np.ndarray | None:
    """A point 2 match radii (+1 Å) to 2 match radii + radius from ``obj``, inside the volume, at least 2 match
    radii from every other particle of its class; preferably clear of every other object too."""
    m, r = c.match_radius_A, c.radius
    dirs = rng.standard_normal((600, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    cand = obj.pos + dirs * rng.uniform(2 * m + 1.0, 2 * m + r, (600, 1))
    margin = max(plan.spacing, min(r, 300.0))
    ok = np.all((cand >= margin) & (cand <= plan.extent - margin), axis=1)
    for o in plan.of("particle", c.name):
        if o is not obj:
            ok &= np.linalg.norm(cand - o.pos, axis=1) >= 2 * m + 1.0
    clear = ok.copy()
    for o in plan.objects:
        if o is not obj and o.role != "clutter":
            clear &= np.linalg.norm(cand - o.pos, axis=1) >= r + (MOTOR_CLEARANCE_A if o.is_motor else o.radius)
    for mask in (clear, ok):
        hit = np.flatnonzero(mask)
        if len(hit):
            return cand[hit[0]]
    return None


def _plant_errors(plans: list[_Plan], classes: list[ParticleClass], rng: np.random.Generator, *,
                  fraction: float) -> list[dict[str, Any]]:
    """Per class, about ``fraction * n`` errors, at most one per tomogram; each kind at least once when n >= 12."""
    n = len(plans)
    errors: list[dict[str, Any]] = []
    nan = [float("nan")] * 3
    for c in classes:
        n_err = int(round(fraction * n))
        pools = {
            "false": [p for p in plans if p.of("decoy", c.name)],
            "shifted": [p for p in plans if p.of("particle", c.name)],
            "missed": [p for p in plans if p.of("particle", c.name)],
        }
        quota = dict.fromkeys(ERROR_KINDS, 0)
        if n >= 12 and n_err >= len(ERROR_KINDS):
            for k in ERROR_KINDS:
                quota[k] = 1
        rest = n_err - sum(quota.values())
        for j, k in enumerate(rng.permutation(len(ERROR_KINDS))):
            quota[ERROR_KINDS[int(k)]] += rest // len(ERROR_KINDS) + (1 if j < rest % len(ERROR_KINDS) else 0)
        used: set[str] = set()

        def fill(kind: str, want: int) -> int:
            cands = [p for p in pools[kind] if p.tomo_id not in used]
            got = 0
            for j in rng.permutation(len(cands)):
                if got >= want:
                    break
                p = cands[int(j)]
                if kind == "false":
                    decoys = p.of("decoy", c.name)
                    d = decoys[int(rng.integers(len(decoys)))]
                    errors.append({"plan": p, "cls": c.name, "kind": kind, "true": nan, "label": p.to_original(d.pos),
                                   "obj": d})
                else:
                    parts = p.of("particle", c.name)
                    o = parts[int(rng.integers(len(parts)))]
                    label = nan
                    if kind == "shifted":
                        target = _shift_target(p, o, c, rng)
                        if target is None:
                            continue
                        label = p.to_original(target)
                    errors.append({"plan": p, "cls": c.name, "kind": kind, "true": p.to_original(o.pos),
                                   "label": label, "obj": o})
                used.add(p.tomo_id)
                got += 1
            return got

        shortfall = sum(quota[k] - fill(k, quota[k]) for k in ("false", "shifted", "missed"))
        for kind in ("missed", "shifted", "false"):  # hand what could not be placed to the other kinds
            if shortfall > 0:
                shortfall -= fill(kind, shortfall)
    return errors


# ----------------------------------------------------------------------------------------------------------------
# public API


def _resolve_classes(classes: Sequence[ParticleClass | str]) -> list[ParticleClass]:
    out = [BUILTIN_CLASSES[c] if isinstance(c, str) else c for c in classes]
    if not out:
        raise ValueError("no particle classes given")
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ValueError(f"a class is listed twice: {names}")
    return out


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    with atomic_open(path, "w", newline="") as fh:
        df.to_csv(fh, index=False, lineterminator="\n")
    return path


def make_multiclass_cohort(
    out: str | Path,
    *,
    classes: Sequence[ParticleClass | str],
    n: int = 24,
    seed: int = 0,
    working_spacing: float = 16.0,
    spacing_range: tuple[float, float] = (8.0, 14.0),
    z_range: tuple[int, int] = (64, 112),
    yx_range: tuple[int, int] = (128, 224),
    count_range: tuple[int, int] = (2, 6),
    motor_count_range: tuple[int, int] = (0, 2),
    decoy_range: tuple[int, int] = (0, 2),
    motor_decoy_range: tuple[int, int] = (1, 2),
    n_beads: tuple[int, int] = (3, 8),
    error_fraction: float = 0.3,
    noise: float = 0.2,
    min_motor_sep: float = 2000.0,
    motor_margin: float = 300.0,
) -> MultiCohortResult:
    """Write a synthetic cohort of ``n`` tomograms holding particles of ``classes`` under the data root ``out``.

    ``classes`` are :class:`ParticleClass` es (or built-in class names). Per tomogram and class, the number of
    particles is drawn from ``count_range`` (``motor_count_range`` for ``motor``), of decoys from ``decoy_range``
    (``motor_decoy_range``), inclusive; a particle that does not fit is left out. Shapes are stored-voxel ranges at
    ``max(working_spacing, original spacing)``; original spacings are drawn from ``spacing_range``. ``noise`` is the
    std of the correlated noise relative to a particle density of 1 (lower than :mod:`byu.synth`'s 0.35: at 16 Å an
    apo-ferritin shell is 7-8 voxels across and drowns in that). See the module docstring for the files.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    if motor_count_range[1] > 3:
        raise ValueError("at most 3 motors per tomogram (the cell envelope passes through them)")
    t_start = time.perf_counter()
    cls_list = _resolve_classes(classes)
    root = DataRoot.from_env(Path(out))
    synth_dir = root.root / "synth"
    cohort_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    plans = [
        _plan_tomogram(i, cls_list, np.random.SeedSequence(seed, spawn_key=(1, i)), working_spacing=working_spacing,
                       spacing_range=spacing_range, z_range=z_range, yx_range=yx_range, count_range=count_range,
                       motor_count_range=motor_count_range, decoy_range=decoy_range,
                       motor_decoy_range=motor_decoy_range, n_beads=n_beads, min_motor_sep=min_motor_sep,
                       motor_margin=motor_margin)
        for i in range(n)
    ]
    errors = _plant_errors(plans, cls_list, cohort_rng, fraction=error_fraction)

    for p in plans:
        vol, clip = _render(p, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, p.index))),
                            noise=noise)
        assert grid.resampled_shape(p.original_shape, p.original_spacing, working_spacing) == p.shape
        meta = TomoMeta(tomo_id=p.tomo_id, shape=p.shape, voxel_spacing=p.spacing, original_shape=p.original_shape,
                        original_spacing=p.original_spacing, clip=clip, clip_percentiles=CLIP_PERCENTILES,
                        source={"synth_multi": {"seed": seed, "index": p.index,
                                                "classes": [c.name for c in cls_list]}})
        write_tomogram(root.tomogram(p.tomo_id), vol, meta)

    by_obj = {id(e["obj"]): e for e in errors}
    truth_rows, noisy_rows = [], []
    for p in plans:
        for c in cls_list:
            for o in p.of("particle", c.name):
                row = [p.tomo_id, c.name, *p.to_original(o.pos), p.original_spacing]
                truth_rows.append(row)
                e = by_obj.get(id(o))
                if e is None:
                    noisy_rows.append(row)
                elif e["kind"] == "shifted":
                    noisy_rows.append([p.tomo_id, c.name, *e["label"], p.original_spacing])
            for e in errors:
                if e["plan"] is p and e["cls"] == c.name and e["kind"] == "false":
                    noisy_rows.append([p.tomo_id, c.name, *e["label"], p.original_spacing])

    def picks(rows: list[list[Any]]) -> pd.DataFrame:
        df = pd.DataFrame(rows, columns=PICK_COLUMNS)
        return df.sort_values(["tomo_id", "particle"], kind="stable").reset_index(drop=True)

    truth_path = _write_csv(picks(truth_rows), synth_dir / "truth_picks.csv")
    noisy_path = _write_csv(picks(noisy_rows), synth_dir / "labels_noisy_picks.csv")
    tomograms_path = _write_csv(pd.DataFrame([[p.tomo_id, *p.original_shape, p.original_spacing] for p in plans],
                                             columns=TOMOGRAM_COLUMNS), synth_dir / "tomograms.csv")
    err_df = pd.DataFrame(
        [[e["plan"].tomo_id, e["cls"], e["kind"], *e["true"], *e["label"]]
         for e in sorted(errors, key=lambda e: (e["plan"].tomo_id, e["cls"]))],
        columns=ERROR_COLUMNS,
    )
    errors_path = _write_csv(err_df, synth_dir / "planted_errors.csv")
    decoy_df = pd.DataFrame(
        [[p.tomo_id, *p.to_original(o.pos), o.shape, o.cls] for p in plans for o in p.objects
         if o.role in ("decoy", "bead")],
        columns=DECOY_COLUMNS,
    )
    decoys_path = _write_csv(decoy_df, synth_dir / "decoys.csv")
    classes_path = synth_dir / "classes.json"
    write_text(classes_path, json.dumps([c.model_dump(mode="json") for c in cls_list], indent=2) + "\n")

    return MultiCohortResult(
        root=root.root, tomo_ids=[p.tomo_id for p in plans], class_names=[c.name for c in cls_list],
        truth_path=truth_path, noisy_path=noisy_path, tomograms_path=tomograms_path, errors_path=errors_path,
        decoys_path=decoys_path, classes_path=classes_path,
        particles_by_class={c.name: sum(len(p.of("particle", c.name)) for p in plans) for c in cls_list},
        decoys_by_class={c.name: sum(len(p.of("decoy", c.name)) for p in plans) for c in cls_list},
        errors_by_class={c.name: {k: int(((err_df["particle"] == c.name) & (err_df["kind"] == k)).sum())
                                  for k in ERROR_KINDS} for c in cls_list},
        unplaced_by_class={c.name: sum(p.unplaced.get(c.name, 0) for p in plans) for c in cls_list},
        n_beads=sum(len(p.of("bead")) for p in plans),
        seconds=time.perf_counter() - t_start,
    )


__all__ = [
    "CLASS_SHAPES", "DECOY_COLUMNS", "DECOY_SHAPES", "ERROR_COLUMNS", "ERROR_KINDS", "MultiCohortResult",
    "PICK_COLUMNS", "TOMOGRAM_COLUMNS", "make_multiclass_cohort", "render_template",
]

"""Particle shapes: density primitives, the motor, and a registry of named density models (:data:`SHAPES`).

A :class:`Shape` draws its parameters from a ``numpy.random.Generator`` at a given radius (Å) and renders them into a
float32 volume on the stored grid (stored voxel ``i`` at ``i * spacing`` Å) at a position (Å) and an orientation (a
3x3 rotation, columns the body axes in z, y, x), by adding its density in a local box around the position
(:func:`add_density`); soft edges are about ``edge`` Å wide (the worlds use 0.6 voxel).

Registered shapes (``role``: where the worlds use them):

- ``particle`` (the default worlds' classes, :data:`CLASS_SHAPES`): ``motor`` (a bell-shaped body in the inner
  membrane of a cell envelope, a thin rod across the periplasm, a curved hook; drawn at a position in a
  :class:`~byu.synth.geometry.Cell`), ``shell`` (hollow spherical shell), ``two-lobes`` (a large and a small lobe),
  ``tetramer`` (four blobs in a square), ``dimer`` (two ellipsoids end to end with a waist), ``grooved-blob`` (a
  dense blob with a groove cut into one side), ``capsid`` (thick icosahedral shell), ``ellipsoid`` (any other class);
- ``decoy`` (sized like a class, another shape, :data:`DECOY_SHAPES`): ``sphere``, ``blob``, ``ring``, ``rod``,
  ``dumbbell``, ``vesicle``; and the motor cohort's motor-sized decoys ``motor-blob``, ``motor-ring``,
  ``motor-vesicle`` (its own parameter ranges and edges; tables call them ``blob``, ``ring``, ``vesicle``);
- ``bead``: ``gold`` (a very dense small sphere);
- ``species`` (the crowded world, :mod:`byu.synth.assemblies`): ``c2`` … ``c7``, ``d2`` … ``d4``, ``tetrahedral``,
  ``octahedral``, ``icosahedral``, ``filament``, ``multidomain``: Gaussian-subunit assemblies whose layout (a
  species' identity) is drawn once.

The draws and float32 arithmetic of the default worlds' shapes are fixed: today's cohorts stay byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from byu.synth.assemblies import FAMILIES, assembly_density
from byu.synth.geometry import Cell, perp, unit

Density = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

_PHI = (1.0 + 5.0**0.5) / 2.0
# Face normals of an icosahedron (the vertices of a dodecahedron), one of each +- pair.
_ICOSA_FACES = np.array(
    [[1, 1, 1], [1, 1, -1], [1, -1, 1], [1, -1, -1],
     [0, 1 / _PHI, _PHI], [0, 1 / _PHI, -_PHI], [1 / _PHI, _PHI, 0], [1 / _PHI, -_PHI, 0],
     [_PHI, 0, 1 / _PHI], [_PHI, 0, -1 / _PHI]], dtype=float,
) / np.sqrt(3.0)
_ICOSA_IN_OVER_CIRCUM = 0.7946544722917661


# ----------------------------------------------------------------------------------------------------------------
# primitives


def f32(v: float) -> np.float32:
    return np.float32(v)


def step(x: np.ndarray, width: float | np.floating) -> np.ndarray:
    """Soft 0→1 step at x = 0."""
    return 0.5 * (1.0 + np.tanh(x / np.float32(width)))


def local_box(vol: np.ndarray, spacing: float, centre: np.ndarray, half: float):
    """Index slices and broadcastable Å offsets (z, y, x) of the box ``centre ± half`` clipped to ``vol``."""
    lo = np.maximum(np.floor((centre - half) / spacing).astype(int), 0)
    hi = np.minimum(np.ceil((centre + half) / spacing).astype(int) + 1, vol.shape)
    if np.any(hi <= lo):
        return None
    axes = [np.arange(lo[k], hi[k], dtype=np.float32) * np.float32(spacing) - np.float32(centre[k]) for k in range(3)]
    return (tuple(slice(lo[k], hi[k]) for k in range(3)),
            (axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]))


def add_density(vol: np.ndarray, spacing: float, centre: np.ndarray, half: float, density: Density) -> None:
    """Add ``density(z, y, x)`` (offsets in Å from ``centre``) to ``vol`` in the box ``centre ± half``."""
    box = local_box(vol, spacing, np.asarray(centre, dtype=float), half)
    if box is not None:
        sl, (z, y, x) = box
        vol[sl] += density(z, y, x).astype(np.float32, copy=False)


def axial(z, y, x, u):
    """Offsets along the unit axis ``u`` and their distance from it."""
    t = z * np.float32(u[0]) + y * np.float32(u[1]) + x * np.float32(u[2])
    r = np.sqrt(np.maximum(z * z + y * y + x * x - t * t, 0.0))
    return t, r


def body(z, y, x, rot: np.ndarray) -> list[np.ndarray]:
    """Offsets in the body frame (the columns of ``rot`` are the body axes in z, y, x)."""
    return [z * f32(rot[0, k]) + y * f32(rot[1, k]) + x * f32(rot[2, k]) for k in range(3)]


def ellipsoid(a: list[np.ndarray], c: Sequence[float], semi: Sequence[float], edge: float) -> np.ndarray:
    """Soft solid ellipsoid (body coordinates ``a``, centre ``c``, semi-axes ``semi``)."""
    rad = np.sqrt(sum(((a[k] - f32(c[k])) / f32(semi[k])) ** 2 for k in range(3)))
    return step((1.0 - rad) * f32(min(semi)), edge)


def ball(a: list[np.ndarray], c: Sequence[float], r: float, edge: float) -> np.ndarray:
    """Soft solid ball (body coordinates ``a``, centre ``c``, radius ``r``)."""
    d = np.sqrt(sum((a[k] - f32(c[k])) ** 2 for k in range(3)))
    return step(f32(r) - d, edge)


# ----------------------------------------------------------------------------------------------------------------
# the motor


@dataclass
class Motor:
    """A flagellar motor: body centre, axis along the envelope's outward normal, the hook's bend direction."""

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


def draw_motor(pos: np.ndarray, cell: Cell, rng: np.random.Generator) -> Motor:
    """A motor with its body centre at ``pos`` in the inner membrane of ``cell``: 350–450 Å across."""
    axis = (pos - cell.centre) / np.linalg.norm(pos - cell.centre)
    diameter = float(rng.uniform(350.0, 450.0))
    return Motor(
        pos=pos, axis=axis, bend=perp(axis, rng), diameter=diameter, height=diameter * rng.uniform(0.75, 0.9),
        rod_radius=float(rng.uniform(35.0, 45.0)), rod_end=cell.outer_offset + 15.0,
        hook_radius=float(rng.uniform(35.0, 45.0)), hook_curvature=float(rng.uniform(110.0, 160.0)),
        hook_sweep=float(np.deg2rad(rng.uniform(80.0, 120.0))),
    )


def render_motor(vol: np.ndarray, spacing: float, m: Motor, edge: float) -> None:
    """Body (a bell, wide C-ring at the bottom, slightly hollow core), rod and hook."""
    u, v = m.axis, m.bend
    w = np.cross(u, v)
    h2, r0 = m.height / 2, m.diameter / 2

    def body_density(z, y, x):
        t, r = axial(z, y, x, u)
        s = np.clip(t / m.height + 0.5, 0.0, 1.0)
        rmax = r0 * (1.0 - 0.45 * s * s)  # wide C-ring at the bottom, narrower towards the membrane
        dens = step(rmax - r, edge) * step(h2 - np.abs(t), edge)
        core = ((r / (0.22 * m.diameter)) ** 2) + ((t + 0.2 * m.height) / (0.25 * m.height)) ** 2
        hollow = 1.0 - 0.2 * np.exp(-core)  # a slightly less dense core, as in the C-ring
        return 1.2 * dens * hollow

    add_density(vol, spacing, m.pos, r0 + 3 * edge, body_density)

    t0, t1 = h2, m.rod_end  # the soft ends of body and rod add up to 1 where they meet

    def rod(z, y, x):  # offsets are from the rod's middle
        t, r = axial(z, y, x, u)
        t = t + np.float32((t0 + t1) / 2)
        return 0.85 * step(m.rod_radius - r, edge) * step(t - t0, edge) * step(t1 - t, edge)

    rod_mid = m.pos + u * (t0 + t1) / 2
    add_density(vol, spacing, rod_mid, (t1 - t0) / 2 + m.rod_radius + 3 * edge, rod)

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
        return 0.85 * step(m.hook_radius - dist, edge) * step(phi, ang) * step(np.float32(sweep) - phi, ang)

    add_density(vol, spacing, cc, rc + m.hook_radius + 3 * edge, hook)


def render_envelope(vol: np.ndarray, spacing: float, cell: Cell, *, periplasm_first: bool = False) -> None:
    """Two membranes as concentric spherical sheets; cytoplasm slightly denser, periplasm a little.

    ``periplasm_first``: multiply the periplasm's two steps before scaling them (the motor cohort's float32
    association; the multi-class cohort scales first), so both cohorts stay byte for byte."""
    s = f32(spacing)
    c = cell.centre.astype(np.float32)
    zz = (np.arange(vol.shape[0], dtype=np.float32) * s - c[0]) ** 2
    yy = (np.arange(vol.shape[1], dtype=np.float32) * s - c[1]) ** 2
    xx = (np.arange(vol.shape[2], dtype=np.float32) * s - c[2]) ** 2
    d = np.sqrt(zz[:, None, None] + (yy[:, None] + xx[None, :])[None]) - f32(cell.radius)
    for off, amp, sig in ((cell.inner_offset, 0.75, 22.0), (cell.outer_offset, 0.7, 22.0)):
        e = d - f32(off)
        vol += f32(amp) * np.exp(e * e * f32(-0.5 / sig**2))
    vol += f32(0.15) * step(f32(cell.inner_offset) - d, 40.0)  # denser cytoplasm
    if periplasm_first:
        vol += f32(0.06) * (step(d - f32(cell.inner_offset), 40.0) * step(f32(cell.outer_offset) - d, 40.0))
    else:
        vol += f32(0.06) * step(d - f32(cell.inner_offset), 40.0) * step(f32(cell.outer_offset) - d, 40.0)


# ----------------------------------------------------------------------------------------------------------------
# parameter draws (Å) at a radius


def _draw_shell(rng: np.random.Generator, radius: float) -> dict[str, Any]:
    r = radius * float(rng.uniform(0.95, 1.05))
    return {"outer": r, "inner": r * float(rng.uniform(0.6, 0.68)), "amp": 2.0, "extent": r}  # a dense shell


def _draw_two_lobes(rng: np.random.Generator, radius: float) -> dict[str, Any]:
    r = radius * float(rng.uniform(0.95, 1.05))  # large subunit + small subunit; centre of mass near the origin
    return {"large_c": (-0.28 * r, 0.0, 0.0), "large_r": 0.62 * r,
            "small_c": (0.58 * r, 0.06 * r, 0.0), "small_semi": (0.3 * r, 0.62 * r, 0.5 * r), "amp": 1.0, "extent": r}


def _draw_tetramer(rng: np.random.Generator, radius: float) -> dict[str, Any]:
    r = radius * float(rng.uniform(0.95, 1.05))  # four blobs in a square in the body's (1, 2) plane
    d = 0.38 * r
    return {"centres": [(0.0, sy * d, sx * d) for sy in (-1, 1) for sx in (-1, 1)], "blob_r": 0.4 * r, "amp": 1.1,
            "extent": r}


def _draw_dimer(rng: np.random.Generator, radius: float) -> dict[str, Any]:
    r = radius * float(rng.uniform(0.95, 1.05))  # two ellipsoids end to end along body axis 0, a waist between
    return {"centres": [(-0.45 * r, 0.0, 0.0), (0.45 * r, 0.0, 0.0)], "semi": (0.5 * r, 0.4 * r, 0.34 * r),
            "amp": 1.0, "extent": r}


def _draw_grooved_blob(rng: np.random.Generator, radius: float) -> dict[str, Any]:
    r = radius * float(rng.uniform(0.95, 1.05))  # dense; a groove across body axis 0 cut into the +axis-2 side
    return {"semi": (0.85 * r, 0.75 * r, 0.65 * r), "groove_half": 0.22 * r, "groove_from": 0.05 * r, "amp": 1.3,
            "extent": r}


def _draw_capsid(rng: np.random.Generator, radius: float) -> dict[str, Any]:
    r = radius * float(rng.uniform(0.95, 1.05))  # thick icosahedral shell, circumradius r
    outer = _ICOSA_IN_OVER_CIRCUM * r
    return {"outer": outer, "inner": outer * float(rng.uniform(0.66, 0.72)), "amp": 1.1, "extent": r}


def _draw_ellipsoid(rng: np.random.Generator, radius: float) -> dict[str, Any]:
    r = radius * float(rng.uniform(0.95, 1.05))
    return {"semi": (r, r * float(rng.uniform(0.75, 0.95)), r * float(rng.uniform(0.6, 0.85))), "amp": 1.0,
            "extent": r}


def _draw_sphere(rng: np.random.Generator, radius: float) -> dict[str, Any]:
    return {"r": radius * float(rng.uniform(0.85, 1.0)), "amp": 1.0}


def _draw_blob(rng: np.random.Generator, radius: float, *, motor: bool = False) -> dict[str, Any]:
    """About a ribosome's volume; a motor's (``motor``) as the motor cohort's (160-220 Å for a 250 Å motor)."""
    lo, hi = (0.64, 0.88) if motor else (0.58, 0.78)
    return {"semi": tuple(radius * float(rng.uniform(lo, hi)) * rng.uniform(0.85, 1.15, 3)), "amp": 1.0}


def _draw_ring(rng: np.random.Generator, radius: float) -> dict[str, Any]:
    return {"major": radius * float(rng.uniform(0.56, 0.76)), "minor": radius * float(rng.uniform(0.22, 0.3)),
            "amp": 1.25}


def _draw_rod(rng: np.random.Generator, radius: float) -> dict[str, Any]:
    return {"half": radius * float(rng.uniform(0.9, 1.0)), "r": radius * float(rng.uniform(0.26, 0.32)), "amp": 1.0}


def _draw_dumbbell(rng: np.random.Generator, radius: float) -> dict[str, Any]:
    return {"offset": 0.52 * radius, "r": radius * float(rng.uniform(0.38, 0.44)), "amp": 1.25}


def _draw_vesicle(rng: np.random.Generator, radius: float) -> dict[str, Any]:
    return {"radius": radius * float(rng.uniform(0.76, 1.12)), "width": float(rng.uniform(18.0, 26.0)), "amp": 0.9}


def _draw_gold(rng: np.random.Generator, radius: float | None = None) -> dict[str, Any]:
    """Gold beads come in one size range (45-60 Å radius); ``radius`` is not used."""
    r = float(rng.uniform(45.0, 60.0))
    return {"r": r, "amp": 4.0}


MOTOR_RADIUS_A = 250.0  # the motor cohort's decoy ranges are for motors of this radius


def _draw_motor_blob(rng: np.random.Generator, radius: float = MOTOR_RADIUS_A) -> dict[str, Any]:
    k = radius / MOTOR_RADIUS_A
    rot = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    return {"rot": rot, "semi": rng.uniform(160.0 * k, 220.0 * k) * rng.uniform(0.85, 1.15, 3)}


def _draw_motor_ring(rng: np.random.Generator, radius: float = MOTOR_RADIUS_A) -> dict[str, Any]:
    k = radius / MOTOR_RADIUS_A
    return {"axis": unit(rng), "major": rng.uniform(140.0 * k, 190.0 * k), "minor": rng.uniform(55.0 * k, 75.0 * k)}


def _draw_motor_vesicle(rng: np.random.Generator, radius: float = MOTOR_RADIUS_A) -> dict[str, Any]:
    k = radius / MOTOR_RADIUS_A
    return {"radius": rng.uniform(190.0 * k, 280.0 * k), "width": rng.uniform(18.0, 26.0)}


def _draw_motor(rng: np.random.Generator, radius: float = MOTOR_RADIUS_A, *, pos: np.ndarray,
                cell: Cell) -> dict[str, Any]:
    return {"motor": draw_motor(pos, cell, rng)}


# ----------------------------------------------------------------------------------------------------------------
# densities: (params, rotation, edge) -> (density function, half size of the box to render it in, Å)


def _spherical(p: dict[str, Any], rot: np.ndarray, edge: float) -> tuple[Density, float]:
    amp = f32(p.get("amp", 1.0))
    outer = p["outer"] if "outer" in p else p["r"]
    inner = p.get("inner")

    def f(z, y, x):
        d = np.sqrt(z * z + y * y + x * x)
        v = step(f32(outer) - d, edge)
        return amp * (v * step(d - f32(inner), edge) if inner is not None else v)

    return f, outer + 3 * edge


def _two_lobes(p: dict[str, Any], rot: np.ndarray, edge: float) -> tuple[Density, float]:
    amp = f32(p.get("amp", 1.0))

    def f(z, y, x):
        a = body(z, y, x, rot)
        return amp * np.maximum(ball(a, p["large_c"], p["large_r"], edge),
                                ellipsoid(a, p["small_c"], p["small_semi"], edge))

    return f, p["extent"] + 3 * edge


def _tetramer(p: dict[str, Any], rot: np.ndarray, edge: float) -> tuple[Density, float]:
    amp = f32(p.get("amp", 1.0))

    def f(z, y, x):
        a = body(z, y, x, rot)
        return amp * np.maximum.reduce([ball(a, c, p["blob_r"], edge) for c in p["centres"]])

    return f, p["extent"] + 3 * edge


def _dimer(p: dict[str, Any], rot: np.ndarray, edge: float) -> tuple[Density, float]:
    amp = f32(p.get("amp", 1.0))

    def f(z, y, x):
        a = body(z, y, x, rot)
        return amp * np.maximum.reduce([ellipsoid(a, c, p["semi"], edge) for c in p["centres"]])

    return f, p["extent"] + 3 * edge


def _grooved_blob(p: dict[str, Any], rot: np.ndarray, edge: float) -> tuple[Density, float]:
    amp = f32(p.get("amp", 1.0))

    def f(z, y, x):
        a = body(z, y, x, rot)
        groove = step(f32(p["groove_half"]) - np.abs(a[0]), edge) * step(a[2] - f32(p["groove_from"]), edge)
        return amp * ellipsoid(a, (0.0, 0.0, 0.0), p["semi"], edge) * (1.0 - groove)

    return f, p["extent"] + 3 * edge


def _capsid(p: dict[str, Any], rot: np.ndarray, edge: float) -> tuple[Density, float]:
    amp = f32(p.get("amp", 1.0))
    faces = rot @ _ICOSA_FACES.T  # face normals in z, y, x

    def f(z, y, x):
        dist = np.maximum.reduce([np.abs(z * f32(n[0]) + y * f32(n[1]) + x * f32(n[2])) for n in faces.T])
        return amp * step(f32(p["outer"]) - dist, edge) * step(dist - f32(p["inner"]), edge)

    return f, p["extent"] + 3 * edge


def _solid_ellipsoid(p: dict[str, Any], rot: np.ndarray, edge: float) -> tuple[Density, float]:
    amp = f32(p.get("amp", 1.0))

    def f(z, y, x):
        return amp * ellipsoid(body(z, y, x, rot), (0.0, 0.0, 0.0), p["semi"], edge)

    return f, float(max(p["semi"])) + 3 * edge


def _ring(p: dict[str, Any], rot: np.ndarray, edge: float) -> tuple[Density, float]:
    amp = f32(p.get("amp", 1.0))

    def f(z, y, x):
        a = body(z, y, x, rot)
        rr = np.sqrt(a[1] * a[1] + a[2] * a[2])
        d = np.sqrt((rr - f32(p["major"])) ** 2 + a[0] * a[0])
        return amp * step(f32(p["minor"]) - d, edge)

    return f, p["major"] + p["minor"] + 3 * edge


def _rod(p: dict[str, Any], rot: np.ndarray, edge: float) -> tuple[Density, float]:
    amp = f32(p.get("amp", 1.0))

    def f(z, y, x):
        a = body(z, y, x, rot)
        rr = np.sqrt(a[1] * a[1] + a[2] * a[2])
        return amp * step(f32(p["r"]) - rr, edge) * step(f32(p["half"]) - np.abs(a[0]), edge)

    return f, p["half"] + p["r"] + 3 * edge


def _dumbbell(p: dict[str, Any], rot: np.ndarray, edge: float) -> tuple[Density, float]:
    amp = f32(p.get("amp", 1.0))

    def f(z, y, x):
        a = body(z, y, x, rot)
        return amp * np.maximum(ball(a, (p["offset"], 0.0, 0.0), p["r"], edge),
                                ball(a, (-p["offset"], 0.0, 0.0), p["r"], edge))

    return f, p["offset"] + p["r"] + 3 * edge


def _vesicle(p: dict[str, Any], rot: np.ndarray, edge: float) -> tuple[Density, float]:
    amp = f32(p.get("amp", 1.0))

    def f(z, y, x):
        d = np.sqrt(z * z + y * y + x * x) - f32(p["radius"])
        return amp * np.exp(-(d * d) / f32(2 * p["width"] ** 2))

    return f, p["radius"] + 4 * p["width"] + 3 * edge


def _motor_blob(q: dict[str, Any], rot: np.ndarray, edge: float) -> tuple[Density, float]:
    r, semi = q["rot"], q["semi"]

    def f(z, y, x):
        a = [z * np.float32(r[0, k]) + y * np.float32(r[1, k]) + x * np.float32(r[2, k]) for k in range(3)]
        rad = np.sqrt(sum((a[k] / np.float32(semi[k])) ** 2 for k in range(3)))
        return 1.0 * step((1.0 - rad) * np.float32(semi.mean()), edge)

    return f, float(semi.max()) + 3 * edge


def _motor_ring(q: dict[str, Any], rot: np.ndarray, edge: float) -> tuple[Density, float]:
    def f(z, y, x):
        t, r = axial(z, y, x, q["axis"])
        dist = np.sqrt((r - np.float32(q["major"])) ** 2 + t * t)
        return 1.3 * step(np.float32(q["minor"]) - dist, edge)

    return f, q["major"] + q["minor"] + 3 * edge


def _motor_vesicle(q: dict[str, Any], rot: np.ndarray, edge: float) -> tuple[Density, float]:
    def f(z, y, x):
        dist = np.sqrt(z * z + y * y + x * x) - np.float32(q["radius"])
        return 0.9 * np.exp(-(dist * dist) / np.float32(2 * q["width"] ** 2))

    return f, q["radius"] + 4 * q["width"]


# ----------------------------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class Shape:
    """A named density model: ``draw(rng, radius, **context) -> params`` and ``render``.

    ``density(params, rot, edge)`` gives the density function and the half size (Å) of the box it is rendered in;
    ``None`` for shapes that render themselves (the motor: three boxes). ``label`` is the name the tables use."""

    name: str
    role: str  # "particle", "decoy", "bead", "species"
    draw: Callable[..., dict[str, Any]]
    density: Callable[[dict[str, Any], np.ndarray, float], tuple[Density, float]] | None
    description: str
    label: str = ""

    @property
    def table_name(self) -> str:
        return self.label or self.name

    def render(self, vol: np.ndarray, spacing: float, pos: np.ndarray, rot: np.ndarray, params: dict[str, Any],
               edge: float) -> None:
        """Add one copy with ``params`` at ``pos`` (Å) in orientation ``rot`` to ``vol``."""
        if self.density is None:
            render_motor(vol, spacing, params["motor"], edge)
            return
        f, half = self.density(params, rot, edge)
        add_density(vol, spacing, pos, half, f)


SHAPES: dict[str, Shape] = {}


def register(shape: Shape) -> Shape:
    """Add a shape to :data:`SHAPES` (a name is registered once)."""
    if shape.name in SHAPES:
        raise ValueError(f"shape {shape.name!r} is already registered")
    SHAPES[shape.name] = shape
    return shape


for _shape in (
    Shape("motor", "particle", _draw_motor, None, "bell-shaped body in the inner membrane, rod, curved hook"),
    Shape("shell", "particle", _draw_shell, _spherical, "hollow dense spherical shell"),
    Shape("two-lobes", "particle", _draw_two_lobes, _two_lobes, "a large and a small lobe"),
    Shape("tetramer", "particle", _draw_tetramer, _tetramer, "four blobs in a flat square"),
    Shape("dimer", "particle", _draw_dimer, _dimer, "two ellipsoids end to end, a waist between"),
    Shape("grooved-blob", "particle", _draw_grooved_blob, _grooved_blob, "dense blob, a groove on one side"),
    Shape("capsid", "particle", _draw_capsid, _capsid, "thick icosahedral shell"),
    Shape("ellipsoid", "particle", _draw_ellipsoid, _solid_ellipsoid, "solid ellipsoid"),
    Shape("sphere", "decoy", _draw_sphere, _spherical, "solid sphere"),
    Shape("blob", "decoy", _draw_blob, _solid_ellipsoid, "solid irregular ellipsoid"),
    Shape("ring", "decoy", _draw_ring, _ring, "torus"),
    Shape("rod", "decoy", _draw_rod, _rod, "solid cylinder"),
    Shape("dumbbell", "decoy", _draw_dumbbell, _dumbbell, "two beads in a row"),
    Shape("vesicle", "decoy", _draw_vesicle, _vesicle, "hollow thin Gaussian shell"),
    Shape("motor-blob", "decoy", _draw_motor_blob, _motor_blob, "motor-sized solid blob", label="blob"),
    Shape("motor-ring", "decoy", _draw_motor_ring, _motor_ring, "motor-sized torus", label="ring"),
    Shape("motor-vesicle", "decoy", _draw_motor_vesicle, _motor_vesicle, "motor-sized vesicle", label="vesicle"),
    Shape("gold", "bead", _draw_gold, _spherical, "very dense gold bead, 45-60 Å radius"),
):
    register(_shape)
for _name, _draw in FAMILIES.items():
    register(Shape(_name, "species", _draw, assembly_density, f"Gaussian-subunit assembly ({_name})"))

#: The shape drawn for a class name in the default worlds; any other class is a solid ellipsoid of its radius.
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
#: Decoy kinds per class shape in the multi-class world: the class's size, another shape.
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
#: The motor cohort's decoys, in the order its planner draws them.
MOTOR_DECOY_SHAPES: tuple[str, ...] = ("motor-blob", "motor-ring", "motor-vesicle")
#: The assembly family a class's species has in the crowded world (others: one chosen by the class name).
CROWDED_CLASS_SHAPES: dict[str, str] = {
    "apo-ferritin": "octahedral",  # a 24-mer cage, as ferritin is
    "ribosome": "multidomain",  # a large and a small subunit, lopsided
    "thyroglobulin": "c2",  # an elongated dimer
    "beta-galactosidase": "d2",  # a tetramer of D2 symmetry
    "beta-amylase": "multidomain",
    "virus-like-particle": "icosahedral",
}
SPECIES_FAMILIES: tuple[str, ...] = tuple(FAMILIES)


def class_shape(name: str) -> str:
    """The default worlds' shape of a class name."""
    return CLASS_SHAPES.get(name, DEFAULT_SHAPE)

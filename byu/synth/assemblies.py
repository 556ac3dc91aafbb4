"""Density-like protein assemblies for the crowded world: isotropic Gaussian subunits laid out by a family rule.

A layout is a dict ``{"centres": (K, 3) body-frame subunit centres (Å), "sigmas": (K,) Gaussian widths (Å),
"weights": (K,), "amp", "gain", "extent"}``; its density at a point ``v`` (Å from the particle's centre) is

    amp * (1 - exp(-gain * sum_k weights_k * exp(-|v - R c_k|^2 / (2 sigma_k^2))))

(``R`` the particle's rotation, columns the body axes in z, y, x): subunits merge softly where they overlap and the
density saturates at ``amp`` (about a protein's density). Every layout is centred on its density centroid and scaled
so that each subunit's ``|c_k| + FIT_SIGMAS * sigma_k`` (2.5 sigma) stays within the radius it was drawn at
(``extent``): one subunit's density there is about 12 % of ``amp`` and falls off fast beyond it, so particles whose
spheres do not overlap do not overlap. The density above half of ``amp`` fills 30-57 % of the sphere for the
symmetric families (a filament about 5 %, a multi-domain complex about 18 %): compact, protein-like.

Families (:data:`FAMILIES`, each a drawing rule ``draw(rng, radius) -> layout``):

- ``c2`` … ``c7``: a ring of ``n`` copies of an asymmetric unit (a main subunit and 0–2 satellites) about body
  axis 0 (point group Cn);
- ``d2`` … ``d4``: two such rings stacked back to back, related by a two-fold axis across (Dn);
- ``tetrahedral``, ``octahedral``, ``icosahedral``: 12, 24 or 60 copies of an asymmetric unit on a sphere (T, O, I
  cages; hollow, like apo-ferritin's 24-mer);
- ``filament``: a helical segment of 8–16 subunits along body axis 0 (elongated);
- ``multidomain``: 2–4 domains of unequal size (each a cluster of 3–6 subunits) joined in a chain (lopsided).

A species draws its layout once (its identity), and every copy of it is that layout in a random orientation.
Rendering is separable (a sum of Gaussians is a sum of outer products of 1-D Gaussians), so a particle costs a few
small matrix products in its local box.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

FIT_SIGMAS = 2.5  # each subunit's |centre| + FIT_SIGMAS * sigma is within the species radius
GAIN = 3.0
BOX_SIGMAS = 3.2  # the local box a particle is rendered in reaches this many sigmas beyond each subunit centre

_PHI = (1.0 + 5.0**0.5) / 2.0


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def _closure(generators: list[np.ndarray], expect: int) -> np.ndarray:
    """The finite rotation group the generators generate (checked to have ``expect`` elements)."""
    group = [np.eye(3)]
    keys = {tuple(np.round(np.eye(3), 6).ravel())}
    frontier = [np.eye(3)]
    while frontier:
        nxt = []
        for g in frontier:
            for h in generators:
                m = h @ g
                key = tuple(np.round(m, 6).ravel() + 0.0)
                if key not in keys:
                    keys.add(key)
                    group.append(m)
                    nxt.append(m)
        frontier = nxt
        if len(group) > expect:
            break
    if len(group) != expect:
        raise RuntimeError(f"point group of {len(group)} elements, expected {expect}")
    return np.array(group)


@cache
def point_group(name: str) -> np.ndarray:
    """The rotations ``(|G|, 3, 3)`` of a point group: ``c<n>``, ``d<n>`` (principal axis = body axis 0),
    ``tetrahedral``, ``octahedral`` or ``icosahedral``."""
    ax0, ax1 = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    diag = np.array([1.0, 1.0, 1.0])
    if name[0] in "cd" and name[1:].isdigit():
        n = int(name[1:])
        gens = [_axis_rotation(ax0, 2 * np.pi / n)]
        if name[0] == "d":
            gens.append(_axis_rotation(ax1, np.pi))
        return _closure(gens, n if name[0] == "c" else 2 * n)
    if name == "tetrahedral":
        return _closure([_axis_rotation(ax0, np.pi), _axis_rotation(diag, 2 * np.pi / 3)], 12)
    if name == "octahedral":
        return _closure([_axis_rotation(ax0, np.pi / 2), _axis_rotation(diag, 2 * np.pi / 3)], 24)
    if name == "icosahedral":
        five = _axis_rotation(np.array([0.0, 1.0, _PHI]), 2 * np.pi / 5)  # through a vertex of the icosahedron
        return _closure([five, _axis_rotation(diag, 2 * np.pi / 3)], 60)  # (1, 1, 1): through a face centre
    raise ValueError(f"unknown point group {name!r}")


def _finish(centres: np.ndarray, sigmas: np.ndarray, weights: np.ndarray, radius: float,
            rng: np.random.Generator) -> dict[str, Any]:
    """Centre on the density centroid and scale to fit ``radius`` (see the module docstring)."""
    mass = weights * sigmas**3
    centres = centres - (mass[:, None] * centres).sum(axis=0) / mass.sum()
    bound = float(np.max(np.linalg.norm(centres, axis=1) + FIT_SIGMAS * sigmas))
    scale = radius / bound
    return {"centres": centres * scale, "sigmas": sigmas * scale, "weights": weights,
            "amp": float(rng.uniform(0.9, 1.1)), "gain": GAIN, "extent": float(radius)}


def _unit_rows(rng: np.random.Generator, k: int) -> np.ndarray:
    v = rng.standard_normal((k, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _asymmetric_unit(rng: np.random.Generator, main: np.ndarray, sigma: float,
                     max_satellites: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A main subunit at ``main`` with 0..``max_satellites`` smaller ones touching it."""
    k = int(rng.integers(0, max_satellites + 1))
    sat = main + _unit_rows(rng, k) * sigma * rng.uniform(0.9, 1.3, (k, 1))
    centres = np.vstack([main[None], sat])
    sigmas = np.concatenate([[sigma], sigma * rng.uniform(0.5, 0.8, k)])
    return centres, sigmas, np.ones(1 + k)


def _symmetric(rng: np.random.Generator, group: np.ndarray, centres: np.ndarray, sigmas: np.ndarray,
               weights: np.ndarray, radius: float) -> dict[str, Any]:
    allc = np.concatenate([centres @ g.T for g in group])
    return _finish(allc, np.tile(sigmas, len(group)), np.tile(weights, len(group)), radius, rng)


def _cyclic(n: int) -> Callable[[np.random.Generator, float], dict[str, Any]]:
    def draw(rng: np.random.Generator, radius: float) -> dict[str, Any]:
        rho = float(rng.uniform(0.3, 0.55))
        sigma = rho * float(np.sin(np.pi / n)) * float(rng.uniform(0.8, 1.1))
        main = np.array([float(rng.uniform(-0.15, 0.15)), rho, 0.0])
        c, s, w = _asymmetric_unit(rng, main, sigma)
        return _symmetric(rng, point_group(f"c{n}"), c, s, w, radius)

    return draw


def _dihedral(n: int) -> Callable[[np.random.Generator, float], dict[str, Any]]:
    def draw(rng: np.random.Generator, radius: float) -> dict[str, Any]:
        rho = float(rng.uniform(0.3, 0.55))
        sigma = rho * float(np.sin(np.pi / n)) * float(rng.uniform(0.75, 1.0))
        main = np.array([float(rng.uniform(0.6, 1.0)) * sigma, rho, 0.0])
        c, s, w = _asymmetric_unit(rng, main, sigma, max_satellites=1)
        return _symmetric(rng, point_group(f"d{n}"), c, s, w, radius)

    return draw


def _cage(group_name: str) -> Callable[[np.random.Generator, float], dict[str, Any]]:
    def draw(rng: np.random.Generator, radius: float) -> dict[str, Any]:
        group = point_group(group_name)
        sigma = float(np.sqrt(4 * np.pi / len(group))) / 2.3 * float(rng.uniform(0.85, 1.0))
        main = _unit_rows(rng, 1)[0]
        c, s, w = _asymmetric_unit(rng, main, sigma, max_satellites=1)
        return _symmetric(rng, group, c, s, w, radius)

    return draw


def _filament(rng: np.random.Generator, radius: float) -> dict[str, Any]:
    k = int(rng.integers(8, 17))
    rise = 1.0
    twist = float(np.deg2rad(rng.uniform(20.0, 170.0)))
    rho = float(rng.uniform(0.4, 1.2))
    t = np.arange(k) - (k - 1) / 2
    centres = np.column_stack([t * rise, rho * np.cos(t * twist), rho * np.sin(t * twist)])
    sigmas = np.full(k, rise * float(rng.uniform(0.65, 0.85)))
    return _finish(centres, sigmas, np.ones(k), radius, rng)


def _multidomain(rng: np.random.Generator, radius: float) -> dict[str, Any]:
    n_dom = int(rng.integers(2, 5))
    sizes = np.concatenate([[1.0], rng.uniform(0.35, 0.8, n_dom - 1)])
    where = [np.zeros(3)]
    for j in range(1, n_dom):
        i = int(rng.integers(0, j))
        where.append(where[i] + _unit_rows(rng, 1)[0] * 0.8 * (sizes[i] + sizes[j]))
    centres, sigmas = [], []
    for j in range(n_dom):
        m = int(rng.integers(3, 7))
        centres.append(where[j] + rng.standard_normal((m, 3)) * 0.35 * sizes[j])
        sigmas.append(rng.uniform(0.35, 0.5, m) * sizes[j])
    c, s = np.vstack(centres), np.concatenate(sigmas)
    return _finish(c, s, np.ones(len(s)), radius, rng)


FAMILIES: dict[str, Callable[[np.random.Generator, float], dict[str, Any]]] = {
    **{f"c{n}": _cyclic(n) for n in range(2, 8)},
    **{f"d{n}": _dihedral(n) for n in range(2, 5)},
    **{name: _cage(name) for name in ("tetrahedral", "octahedral", "icosahedral")},
    "filament": _filament,
    "multidomain": _multidomain,
}


def assembly_density(params: dict[str, Any], rot: np.ndarray, edge: float):
    """The density function of a layout in orientation ``rot`` (offsets z, y, x in Å from its centre, as
    broadcastable 1-D axes) and the half size (Å) of the box it needs. ``edge`` is unused: Gaussians are soft."""
    centres = (np.asarray(params["centres"], dtype=float) @ np.asarray(rot, dtype=float).T).astype(np.float32)
    sigmas = np.asarray(params["sigmas"], dtype=float)
    inv = (1.0 / (2.0 * sigmas**2)).astype(np.float32)[:, None]
    w = np.asarray(params["weights"], dtype=np.float32)[:, None]
    amp, gain = np.float32(params["amp"]), np.float32(params["gain"])

    def f(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        ez = np.exp(-((z.reshape(1, -1) - centres[:, 0:1]) ** 2) * inv) * w
        ey = np.exp(-((y.reshape(1, -1) - centres[:, 1:2]) ** 2) * inv)
        ex = np.exp(-((x.reshape(1, -1) - centres[:, 2:3]) ** 2) * inv)
        s = np.tensordot(ez[:, :, None] * ey[:, None, :], ex, axes=(0, 0))
        return amp * (np.float32(1.0) - np.exp(-gain * s))

    half = float(np.max(np.linalg.norm(centres, axis=1) + BOX_SIGMAS * sigmas))
    return f, half

"""Planted errors: how the noisy labels differ from the truth, per world. Coordinates are recorded in each
tomogram's original frame; an error is a dict ``{"plan", "cls", "kind", "true", "label", "obj", ["on"]}``.

Kinds (:data:`ERROR_KINDS`; the default worlds plant the first three, :func:`error_kinds`):

- ``missed``: a true particle left out of the labels;
- ``false``: a label on something that is not a particle of the class: a decoy (default worlds) or a particle of an
  unlabeled look-alike species of similar size (crowded world; ``on`` names the species);
- ``shifted``: a true particle's label moved away from it (motor world: by ``shift_range`` Å, clear of decoys and
  other motors; otherwise by 2x the class's match radius up to that plus its radius, at least 2 match radii from
  every other particle of the class);
- ``background`` (crowded world): a label on empty background, at least 2 match radii (and a match radius beyond
  its sphere) from every particle of any species and every bead.

Motor world (:func:`plant_motor_errors`): at most one error per tomogram, only where the noisy label has at most one
motor (the tomograms round 1 reviews): ``round(error_fraction * n)`` of them, every kind at least once when
``n >= 12``. Multi-class world (:func:`plant_multiclass_errors`): per class, at most one per tomogram,
``round(error_fraction * n)`` of them, every kind at least once when ``n >= 12``. Crowded world
(:func:`plant_crowded_errors`): per tomogram and class, ``round(error_fraction * labels)``, spread evenly over the
four kinds (the remainder to kinds in a random order); in the crowded world, every planted label (shifted, false,
background) is also at least 2 match radii from every other planted label of its class. Where a kind cannot be
placed, its share goes to the other kinds (``missed`` last resort).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from byu.labels.classes import ParticleClass
from byu.synth.geometry import in_box
from byu.synth.placement import free_of
from byu.synth.scene import MOTOR_CLEARANCE_A, Obj, Plan

ERROR_KINDS = ("missed", "false", "shifted", "background")
_DEFAULT_KINDS = ERROR_KINDS[:3]
_NAN = [float("nan")] * 3


def error_kinds(world: str) -> tuple[str, ...]:
    """The kinds of error a world plants (the default worlds: missed, false, shifted; crowded: + background)."""
    return ERROR_KINDS if world == "crowded" else _DEFAULT_KINDS


def _quota(n_err: int, kinds: tuple[str, ...], rng: np.random.Generator, *, one_each: bool) -> dict[str, int]:
    """``n_err`` spread over ``kinds`` evenly (``one_each``: each at least once first), the rest to kinds in a
    random order."""
    quota = dict.fromkeys(kinds, 0)
    if one_each:
        for k in kinds:
            quota[k] = 1
    rest = n_err - sum(quota.values())
    for j, k in enumerate(rng.permutation(len(kinds))):
        quota[kinds[int(k)]] += rest // len(kinds) + (1 if j < rest % len(kinds) else 0)
    return quota


# ----------------------------------------------------------------------------------------------------------------
# the motor world


def _motor_shift_target(plan: Plan, pos: np.ndarray, rng: np.random.Generator, *, edge_margin: float,
                        shift_range: tuple[float, float]) -> np.ndarray | None:
    """A point 1300–2000 Å (default) from ``pos``, inside the volume, clear of decoys and other motors."""
    dirs = rng.standard_normal((400, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    cand = pos + dirs * rng.uniform(*shift_range, (400, 1))
    ok = in_box(cand, plan.extent, edge_margin)
    others = [m.pos for m in plan.of("particle") if not np.array_equal(m.pos, pos)]
    for q in others + [d.pos for d in plan.of("decoy")]:
        ok &= np.linalg.norm(cand - q, axis=1) >= 1200.0
    hit = np.flatnonzero(ok)
    return cand[hit[0]] if len(hit) else None


def plant_motor_errors(plans: list[Plan], rng: np.random.Generator, *, fraction: float, edge_margin: float,
                       shift_range: tuple[float, float]) -> list[dict[str, Any]]:
    """Choose and describe the motor world's planted errors (at most one per tomogram)."""
    n_err = int(round(fraction * len(plans)))
    pools = {
        "false": [t for t in plans if not t.of("particle") and t.of("decoy")],
        "shifted": [t for t in plans if len(t.of("particle")) == 1],
        "missed": [t for t in plans if len(t.of("particle")) in (1, 2)],
    }
    quota = _quota(n_err, _DEFAULT_KINDS, rng, one_each=len(plans) >= 12 and n_err >= 3)
    used: set[str] = set()
    errors: list[dict[str, Any]] = []

    def fill(kind: str, want: int) -> int:
        cands = [t for t in pools[kind] if t.tomo_id not in used]
        got = 0
        for j in rng.permutation(len(cands)):
            if got >= want:
                break
            t = cands[int(j)]
            motors = t.of("particle")
            if kind == "false":
                decoys = t.of("decoy")
                decoy = decoys[int(rng.integers(len(decoys)))]
                errors.append({"plan": t, "cls": "motor", "kind": kind, "true": _NAN,
                               "label": t.to_original(decoy.pos), "obj": decoy})
            elif kind == "shifted":
                target = _motor_shift_target(t, motors[0].pos, rng, edge_margin=edge_margin,
                                             shift_range=shift_range)
                if target is None:
                    continue
                errors.append({"plan": t, "cls": "motor", "kind": kind, "true": t.to_original(motors[0].pos),
                               "label": t.to_original(target), "obj": motors[0]})
            else:
                i = int(rng.integers(len(motors)))
                errors.append({"plan": t, "cls": "motor", "kind": kind, "true": t.to_original(motors[i].pos),
                               "label": _NAN, "obj": motors[i]})
            used.add(t.tomo_id)
            got += 1
        return got

    shortfall = sum(quota[k] - fill(k, quota[k]) for k in ("false", "shifted", "missed"))  # smallest pools first
    for kind in ("missed", "shifted", "false"):  # hand what could not be placed to the other kinds
        if shortfall > 0:
            shortfall -= fill(kind, shortfall)
    return errors


# ----------------------------------------------------------------------------------------------------------------
# the multi-class world


def _shift_target(plan: Plan, obj: Obj, c: ParticleClass, rng: np.random.Generator) -> np.ndarray | None:
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


def plant_multiclass_errors(plans: list[Plan], classes: list[ParticleClass], rng: np.random.Generator, *,
                            fraction: float) -> list[dict[str, Any]]:
    """Per class, about ``fraction * n`` errors, at most one per tomogram; each kind at least once when n >= 12."""
    n = len(plans)
    errors: list[dict[str, Any]] = []
    for c in classes:
        n_err = int(round(fraction * n))
        pools = {
            "false": [p for p in plans if p.of("decoy", c.name)],
            "shifted": [p for p in plans if p.of("particle", c.name)],
            "missed": [p for p in plans if p.of("particle", c.name)],
        }
        quota = _quota(n_err, _DEFAULT_KINDS, rng, one_each=n >= 12 and n_err >= len(_DEFAULT_KINDS))
        used: set[str] = set()

        def fill(kind: str, want: int, c: ParticleClass = c, pools=pools, used=used) -> int:
            cands = [p for p in pools[kind] if p.tomo_id not in used]
            got = 0
            for j in rng.permutation(len(cands)):
                if got >= want:
                    break
                p = cands[int(j)]
                if kind == "false":
                    decoys = p.of("decoy", c.name)
                    d = decoys[int(rng.integers(len(decoys)))]
                    errors.append({"plan": p, "cls": c.name, "kind": kind, "true": _NAN,
                                   "label": p.to_original(d.pos), "obj": d})
                else:
                    parts = p.of("particle", c.name)
                    o = parts[int(rng.integers(len(parts)))]
                    label = _NAN
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
# the crowded world


def _far_from(cand: np.ndarray, points: list[np.ndarray], sep: float) -> np.ndarray:
    if not points or not len(cand):
        return np.ones(len(cand), dtype=bool)
    d = np.linalg.norm(cand[:, None, :] - np.asarray(points)[None], axis=-1)
    return np.all(d >= sep, axis=1)


def _crowded_shift(plan: Plan, obj: Obj, c: ParticleClass, same: np.ndarray, planted: list[np.ndarray],
                   rng: np.random.Generator) -> np.ndarray | None:
    """A point 2 match radii (+1 Å) to 2 match radii + radius from ``obj``, inside the volume, at least 2 match
    radii (+1 Å) from every other particle of the class and 2 match radii from every planted label of the class."""
    m, r = c.match_radius_A, c.radius
    dirs = rng.standard_normal((400, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    cand = obj.pos + dirs * rng.uniform(2 * m + 1.0, 2 * m + r, (400, 1))
    ok = in_box(cand, plan.extent, plan.spacing)
    others = same[np.linalg.norm(same - obj.pos, axis=1) > 1e-6]
    ok &= free_of(cand, 2 * m + 1.0, others, np.zeros(len(others)))
    ok &= _far_from(cand, planted, 2 * m)
    hit = np.flatnonzero(ok)
    return cand[hit[0]] if len(hit) else None


def _background_points(plan: Plan, c: ParticleClass, tree: cKDTree | None, pos: np.ndarray, radii: np.ndarray,
                       rng: np.random.Generator, tries: int = 4000) -> np.ndarray:
    """Candidate background points, in draw order: at least ``max(2m, m + r_j)`` from every object ``j``."""
    m = c.match_radius_A
    cand = plan.spacing + rng.random((tries, 3)) * np.maximum(plan.extent - 2 * plan.spacing, 0.0)
    if not len(pos):
        return cand
    need = np.maximum(2 * m - radii, m)  # |cand - p_j| >= m + need_j  <=>  >= max(2m, m + r_j)
    return cand[free_of(cand, m, pos, need, tree=tree)]


def plant_crowded_errors(plans: list[Plan], classes: list[ParticleClass], rng: np.random.Generator, *,
                         fraction: float) -> list[dict[str, Any]]:
    """Per tomogram and class: ``round(fraction * labels)`` errors over the four kinds (module docstring)."""
    errors: list[dict[str, Any]] = []
    for plan in plans:
        objs = [o for o in plan.objects if o.role in ("particle", "lookalike", "bead")]
        pos = np.array([o.pos for o in objs], dtype=float).reshape(-1, 3)
        radii = np.array([o.radius for o in objs], dtype=float)
        tree = cKDTree(pos) if len(pos) else None
        for c in classes:
            m = c.match_radius_A
            parts = plan.of("particle", c.name)
            same = np.array([o.pos for o in parts], dtype=float).reshape(-1, 3)
            quota = _quota(int(round(fraction * len(parts))), ERROR_KINDS, rng, one_each=False)
            free = list(rng.permutation(len(parts)))  # particles not yet missed or shifted, in a random order
            looks = [o for o in plan.of("lookalike", c.name)
                     if not len(same) or np.min(np.linalg.norm(same - o.pos, axis=1)) >= 1.5 * m]
            look_order = list(rng.permutation(len(looks)))
            background = _background_points(plan, c, tree, pos, radii, rng)
            planted: list[np.ndarray] = []

            def add(kind: str, obj: Obj | None, label_a: np.ndarray | None, *, plan: Plan = plan,
                    c: ParticleClass = c, planted: list[np.ndarray] = planted) -> None:
                true = plan.to_original(obj.pos) if obj is not None and kind in ("missed", "shifted") else _NAN
                label = plan.to_original(label_a) if label_a is not None else _NAN
                if label_a is not None:
                    planted.append(np.asarray(label_a, dtype=float))
                errors.append({"plan": plan, "cls": c.name, "kind": kind, "true": true, "label": label, "obj": obj,
                               "on": obj.species if kind == "false" and obj is not None else ""})

            def fill(kind: str, want: int, *, parts: list[Obj] = parts, same: np.ndarray = same,
                     free: list = free, looks: list[Obj] = looks, look_order: list = look_order,
                     background: np.ndarray = background, planted: list[np.ndarray] = planted,
                     c: ParticleClass = c, m: float = m, plan: Plan = plan) -> int:
                got = 0
                if kind == "missed":
                    while got < want and free:
                        add(kind, parts[int(free.pop(0))], None)
                        got += 1
                elif kind == "shifted":
                    tried = 0
                    while got < want and tried < len(free):
                        o = parts[int(free[tried])]
                        target = _crowded_shift(plan, o, c, same, planted, rng)
                        if target is None:
                            tried += 1
                            continue
                        free.pop(tried)
                        add(kind, o, target)
                        got += 1
                elif kind == "false":
                    while got < want and look_order:
                        o = looks[int(look_order.pop(0))]
                        if _far_from(o.pos[None], planted, 2 * m)[0]:
                            add(kind, o, o.pos)
                            got += 1
                else:
                    for p in background:
                        if got >= want:
                            break
                        if _far_from(p[None], planted, 2 * m)[0]:
                            add(kind, None, p)
                            got += 1
                return got

            shortfall = sum(quota[k] - fill(k, quota[k]) for k in ("background", "false", "shifted", "missed"))
            for kind in ("missed", "shifted", "false", "background"):
                if shortfall > 0:
                    shortfall -= fill(kind, shortfall)
    return errors

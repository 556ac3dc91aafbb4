"""Planning: what each synthetic tomogram holds and where, per world (:func:`plan_motor`, :func:`plan_multiclass`,
:func:`plan_crowded`), in physical units (Å, stored frame).

Motor world (``world="default"``, classes ``["motor"]``): a cell envelope (inner and outer membranes as concentric
spherical sheets through the motors), 0–3 motors sitting in the inner membrane ``min_motor_sep`` apart, 1–3
motor-sized decoys (blob, ring, vesicle) away from the membranes, >= 1500 Å from motors and >= 600 Å from each
other, ribosome-sized clutter in the cytoplasm and a few gold beads anywhere.

Multi-class world (``world="default"``, other classes): per class a number of particles (``count_range``;
``motor_count_range`` for motors) and of decoys; the cell envelope when ``motor`` is a class; largest objects
first, each at a random free position: any two objects at least twice the larger radius apart (motors
``min_motor_sep``; other objects clear of a motor's rod and hook), a decoy at least 1.5 match radii from the
particles of the class it mimics; then gold beads and faint clutter (clear of everything).

Crowded world (``world="crowded"``): particle-free pockets (``voids``), a few gold beads, then every species of the
:func:`~byu.synth.species.catalogue`, largest first, packed at random (:func:`pack`): no two particles' spheres
overlap (centres at least the sum of their radii apart), none reaches into a void; the expected number of copies
of a species is ``crowding * cytosol volume * share / sphere volume`` (its share of the volume from its weight; the
cytosol is the box less the voids), each tomogram drawing a Poisson number. ``crowding`` is thus the volume
fraction of the cytosol occupied by the particles' spheres.

Every planner draws from the tomogram's own generator in a fixed order: the same arguments give the same plan.
"""

from __future__ import annotations

from itertools import chain

import numpy as np
from scipy.spatial import cKDTree

from byu.labels.classes import ParticleClass
from byu.synth.geometry import (
    Cell,
    cell_through,
    draw_shape,
    original_shape,
    rotation,
    rotations,
    sample_separated,
)
from byu.synth.imaging import Optics
from byu.synth.scene import INNER_OFFSET_A, MOTOR, MOTOR_CLEARANCE_A, Obj, Plan
from byu.synth.shapes import DECOY_SHAPES, MOTOR_DECOY_SHAPES, SHAPES, class_shape, draw_motor
from byu.synth.species import Species
from byu.tomo import grid

DECOY_MATCH_SEP = 1.5  # a decoy is at least this many match radii from the particles of the class it mimics


def _tomo_id(index: int) -> str:
    return f"synth_{index:03d}"


def _draw_decoy(kind: str, radius: float, rng: np.random.Generator, *, motor: bool) -> dict:
    shape = SHAPES[kind]
    return shape.draw(rng, radius, motor=motor) if kind == "blob" else shape.draw(rng, radius)


# ----------------------------------------------------------------------------------------------------------------
# the motor world


def plan_motor(index: int, n_motors: int, ss: np.random.SeedSequence, *, working_spacing: float,
               spacing_range: tuple[float, float], z_range: tuple[int, int], yx_range: tuple[int, int],
               min_motor_sep: float, edge_margin: float) -> Plan:
    """One tomogram of the motor world with ``n_motors`` motors (module docstring)."""
    rng = np.random.default_rng(ss)
    tomo_id = _tomo_id(index)
    original_spacing = round(float(rng.uniform(*spacing_range)), 2)
    spacing = max(float(working_spacing), original_spacing)
    for attempt in range(40):
        shape = draw_shape(rng, z_range, yx_range, upper=n_motors >= 2 and attempt > 0)
        extent = (np.asarray(shape) - 1.0) * spacing
        pts = sample_separated(rng, n_motors, extent, margin=edge_margin, min_sep=min_motor_sep)
        if pts is not None:
            break
    else:
        raise ValueError(f"{tomo_id}: cannot fit {n_motors} motors {min_motor_sep:.0f} Å apart in shapes "
                         f"Z{z_range} YX{yx_range} at {spacing} Å; widen the shape ranges")
    orig_shape = original_shape(shape, original_spacing, spacing)
    centre, radius = cell_through(pts, rng, extent)
    inner_offset = INNER_OFFSET_A  # the body centre sits this far inside the inner membrane
    cell = Cell(centre=centre, radius=radius, inner_offset=inner_offset,
                outer_offset=inner_offset + float(rng.uniform(200.0, 260.0)))  # + the periplasm's width
    motors = [draw_motor(p, cell, rng) for p in pts]
    plan = Plan(tomo_id=tomo_id, index=index, original_spacing=original_spacing, spacing=spacing, shape=shape,
                original_shape=orig_shape, cell=cell, tilt_deg=float(rng.uniform(55.0, 65.0)), motor_cohort=True)
    plan.objects += [Obj("particle", MOTOR, MOTOR, m.pos, 250.0, np.eye(3), {"motor": m}) for m in motors]
    _place_motor_decoys(plan, rng, edge_margin=edge_margin)
    _place_motor_clutter(plan, rng)
    return plan


def _place_motor_decoys(plan: Plan, rng: np.random.Generator, *, edge_margin: float) -> None:
    """1–3 motor-sized decoys away from the membranes, >= 1500 Å from motors, >= 600 Å from each other."""
    assert plan.cell is not None
    want = int(rng.integers(1, 4))
    extent = plan.extent
    motors = plan.positions(("particle",))
    cand = edge_margin + rng.random((600, 3)) * (extent - 2 * edge_margin)
    ok = np.ones(len(cand), dtype=bool)
    if len(motors):
        ok &= np.min(np.linalg.norm(cand[:, None] - motors[None], axis=-1), axis=1) >= 1500.0
    d = plan.cell.distance(cand)
    away = (np.abs(d - plan.cell.inner_offset) > 300.0) & (np.abs(d - plan.cell.outer_offset) > 300.0)
    order = np.concatenate([np.flatnonzero(ok & away), np.flatnonzero(ok & ~away)])  # relax only if needed
    chosen: list[np.ndarray] = []
    for i in order:
        if len(chosen) == want:
            break
        if all(np.linalg.norm(cand[i] - c) >= 600.0 for c in chosen):
            chosen.append(cand[i])
    for p in chosen:
        kind = MOTOR_DECOY_SHAPES[int(rng.integers(len(MOTOR_DECOY_SHAPES)))]
        params = SHAPES[kind].draw(rng)
        plan.objects.append(Obj("decoy", MOTOR, kind, p, 250.0, params.get("rot", np.eye(3)), params))


def _place_motor_clutter(plan: Plan, rng: np.random.Generator) -> None:
    """Ribosome-sized blobs in the cytoplasm and a few gold beads anywhere."""
    assert plan.cell is not None
    extent = plan.extent
    volume_a3 = float(np.prod(extent))
    cand = rng.random((int(volume_a3 / 1.2e8) + 1, 3)) * extent
    d = plan.cell.distance(cand)
    keep = d < plan.cell.inner_offset - 150.0
    others = plan.positions(("particle", "decoy"))
    if len(others):
        keep &= np.min(np.linalg.norm(cand[:, None] - others[None], axis=-1), axis=1) > 380.0
    pos = cand[keep]
    clutter = np.column_stack([pos, rng.uniform(180.0, 260.0, len(pos)), rng.uniform(0.35, 0.6, len(pos))])
    nb = int(rng.integers(3, 9))
    beads = np.column_stack([rng.random((nb, 3)) * extent, rng.uniform(45.0, 60.0, nb)])
    for x in clutter:
        r = x[3] / 2
        plan.objects.append(Obj("clutter", "", "sphere", x[:3], float(r), np.eye(3), {"r": r, "amp": float(x[4])}))
    for b in beads:
        plan.objects.append(Obj("bead", "", "gold", b[:3], float(b[3]), np.eye(3), {"r": b[3], "amp": 4.0}))


def motor_counts(n: int, rng: np.random.Generator) -> np.ndarray:
    """Motors per tomogram: ~25% none, ~50% one, ~25% two or three, shuffled."""
    n0 = int(round(0.25 * n))
    nmany = int(round(0.25 * n))
    counts = [0] * n0 + [1] * (n - n0 - nmany) + [int(rng.choice([2, 3], p=[0.6, 0.4])) for _ in range(nmany)]
    return rng.permutation(np.asarray(counts, dtype=int))


# ----------------------------------------------------------------------------------------------------------------
# the multi-class world


def _min_sep(a: Obj, b: Obj, classes: dict[str, ParticleClass], min_motor_sep: float) -> float:
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


def place(rng: np.random.Generator, plan: Plan, obj: Obj, *, margin: float, classes: dict[str, ParticleClass],
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


def plan_multiclass(index: int, classes: list[ParticleClass], ss: np.random.SeedSequence, *,
                    working_spacing: float, spacing_range: tuple[float, float], z_range: tuple[int, int],
                    yx_range: tuple[int, int], count_range: tuple[int, int], motor_count_range: tuple[int, int],
                    decoy_range: tuple[int, int], motor_decoy_range: tuple[int, int], n_beads: tuple[int, int],
                    min_motor_sep: float, motor_margin: float) -> Plan:
    """One tomogram of the multi-class world (module docstring)."""
    rng = np.random.default_rng(ss)
    by_name = {c.name: c for c in classes}
    tomo_id = _tomo_id(index)
    original_spacing = round(float(rng.uniform(*spacing_range)), 2)
    spacing = grid.working_spacing(original_spacing, working_spacing)
    counts = {c.name: int(rng.integers(*(motor_count_range if c.name == MOTOR else count_range), endpoint=True))
              for c in classes}
    n_motors = counts.get(MOTOR, 0)
    for attempt in range(40):
        shape = draw_shape(rng, z_range, yx_range, upper=n_motors >= 2 and attempt > 0)
        extent = (np.asarray(shape) - 1.0) * spacing
        motor_pos = sample_separated(rng, n_motors, extent, margin=motor_margin, min_sep=min_motor_sep)
        if motor_pos is not None:
            break
    else:
        raise ValueError(f"{tomo_id}: cannot fit {n_motors} motors {min_motor_sep:.0f} Å apart in shapes "
                         f"Z{z_range} YX{yx_range} at {spacing} Å; widen the shape ranges")
    orig_shape = original_shape(shape, original_spacing, spacing)
    cell = None
    if MOTOR in by_name:
        centre, radius = cell_through(motor_pos, rng, extent)
        cell = Cell(centre=centre, radius=radius, inner_offset=INNER_OFFSET_A,
                    outer_offset=INNER_OFFSET_A + float(rng.uniform(200.0, 260.0)))
    plan = Plan(tomo_id=tomo_id, index=index, original_spacing=original_spacing, spacing=spacing, shape=shape,
                original_shape=orig_shape, tilt_deg=float(rng.uniform(55.0, 65.0)), cell=cell)
    for p in motor_pos:
        assert cell is not None
        plan.objects.append(Obj("particle", MOTOR, MOTOR, p, by_name[MOTOR].radius, np.eye(3),
                                {"motor": draw_motor(p, cell, rng)}))

    # The rest, largest first (particles of a class before its decoys): particles, then decoys, then beads.
    todo: list[tuple[float, int, str, ParticleClass]] = []
    for c in classes:
        if c.name != MOTOR:
            todo += [(c.radius, 0, "particle", c)] * counts[c.name]
        k = int(rng.integers(*(motor_decoy_range if c.name == MOTOR else decoy_range), endpoint=True))
        todo += [(c.radius, 1, "decoy", c)] * k
    todo.sort(key=lambda t: (-t[0], t[1]))  # stable: classes keep their given order among equal radii
    for _, _, role, c in todo:
        shape_kind = class_shape(c.name)
        rot = rotation(rng)
        if role == "particle":
            params = SHAPES[shape_kind].draw(rng, c.radius)
            obj = Obj("particle", c.name, shape_kind, np.zeros(3), params["extent"], rot, params)
        else:
            kinds = DECOY_SHAPES[shape_kind]
            kind = kinds[int(rng.integers(len(kinds)))]
            obj = Obj("decoy", c.name, kind, np.zeros(3), c.radius, rot,
                      _draw_decoy(kind, c.radius, rng, motor=c.name == MOTOR))
        margin = motor_margin if c.name == MOTOR else max(c.radius + spacing, 2 * spacing)
        placed = place(rng, plan, obj, margin=min(margin, float(plan.extent.min()) / 2 - 1.0), classes=by_name,
                       min_motor_sep=min_motor_sep)
        if not placed and role == "particle":
            plan.unplaced[c.name] = plan.unplaced.get(c.name, 0) + 1
    for _ in range(int(rng.integers(*n_beads, endpoint=True))):
        params = SHAPES["gold"].draw(rng)
        place(rng, plan, Obj("bead", "", "gold", np.zeros(3), params["r"], np.eye(3), params),
              margin=params["r"] + spacing, classes=by_name, min_motor_sep=min_motor_sep)
    _place_faint_clutter(plan, rng)
    return plan


def _place_faint_clutter(plan: Plan, rng: np.random.Generator) -> None:
    """Faint small blobs in the background, clear of every object and membrane (not recorded anywhere)."""
    extent = plan.extent
    k = int(float(np.prod(extent)) / 1.5e8) + 1
    cand = rng.random((k, 3)) * extent
    semi = rng.uniform(30.0, 90.0, (k, 1)) * rng.uniform(0.8, 1.2, (k, 3))
    amp = rng.uniform(0.25, 0.45, k)
    rots = [rotation(rng) for _ in range(k)]
    rmax = semi.max(axis=1)
    ok = np.ones(k, dtype=bool)
    if plan.objects:
        pos = np.array([o.pos for o in plan.objects])
        rad = np.array([MOTOR_CLEARANCE_A if o.is_motor else o.radius for o in plan.objects])
        ok &= np.all(np.linalg.norm(cand[:, None] - pos[None], axis=-1) >= rad[None] + rmax[:, None] + 40.0, axis=1)
    if plan.cell is not None:
        ok &= plan.cell.clear(cand, rmax)
    for i in np.flatnonzero(ok):
        plan.objects.append(Obj("clutter", "", "ellipsoid", cand[i], float(rmax[i]), rots[i],
                                {"semi": tuple(semi[i]), "amp": float(amp[i])}))


# ----------------------------------------------------------------------------------------------------------------
# the crowded world


def free_of(cand: np.ndarray, radius: float, pos: np.ndarray, radii: np.ndarray, *,
            tree: cKDTree | None = None) -> np.ndarray:
    """Which candidate centres (``(m, 3)``, Å) are at least ``radius + radii[j]`` from every ``pos[j]``."""
    if not len(pos) or not len(cand):
        return np.ones(len(cand), dtype=bool)
    tree = tree if tree is not None else cKDTree(pos)
    lists = tree.query_ball_point(cand, radius + float(radii.max()))
    lens = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(cand))
    idx = np.fromiter(chain.from_iterable(lists), dtype=np.int64, count=int(lens.sum()))
    ci = np.repeat(np.arange(len(cand)), lens)
    bad = np.linalg.norm(cand[ci] - pos[idx], axis=1) < radius + radii[idx]
    return np.bincount(ci[bad], minlength=len(cand)) == 0


def outside_voids(cand: np.ndarray, radius: float, voids: np.ndarray) -> np.ndarray:
    """Which spheres of ``radius`` at ``cand`` stay out of every void (``(k, 4)``: centre, radius; Å)."""
    if not len(voids):
        return np.ones(len(cand), dtype=bool)
    d = np.linalg.norm(cand[:, None, :] - voids[None, :, :3], axis=-1)
    return np.all(d >= voids[None, :, 3] + radius, axis=1)


def _greedy(cand: np.ndarray, sep: float, want: int) -> np.ndarray:
    """Indices of up to ``want`` candidates, in order, pairwise at least ``sep`` apart (first come, first kept)."""
    if len(cand) <= 1:
        return np.arange(min(len(cand), want))
    pairs = cKDTree(cand).query_pairs(sep, output_type="ndarray")
    both = np.concatenate([pairs, pairs[:, ::-1]]) if len(pairs) else np.zeros((0, 2), dtype=np.int64)
    both = both[np.lexsort((both[:, 1], both[:, 0]))]
    start = np.searchsorted(both[:, 0], np.arange(len(cand) + 1))
    blocked = np.zeros(len(cand), dtype=bool)
    kept: list[int] = []
    for i in range(len(cand)):
        if len(kept) >= want:
            break
        if blocked[i]:
            continue
        kept.append(i)
        blocked[both[start[i]:start[i + 1], 1]] = True
    return np.asarray(kept, dtype=np.int64)


def pack(rng: np.random.Generator, pos: np.ndarray, radii: np.ndarray, radius: float, count: int,
         lo: np.ndarray, hi: np.ndarray, voids: np.ndarray, *, rounds: int = 16) -> np.ndarray:
    """Up to ``count`` centres (``(k, 3)``, Å) for spheres of ``radius`` uniformly in the box ``[lo, hi]``: clear of
    the placed spheres (``pos``, ``radii``), of each other and of the voids. Random sequential addition in batches
    (each round draws a batch of candidates, drops those that collide with what is placed, keeps a non-overlapping
    subset in draw order)."""
    got = np.zeros((0, 3))
    if count <= 0 or np.any(hi < lo):
        return got
    for _ in range(rounds):
        need = count - len(got)
        if need <= 0:
            break
        cand = lo + rng.random((max(64, 8 * need), 3)) * (hi - lo)
        every = np.vstack([pos, got])
        every_r = np.concatenate([radii, np.full(len(got), radius)])
        ok = free_of(cand, radius, every, every_r) & outside_voids(cand, radius, voids)
        cand = cand[ok]
        got = np.vstack([got, cand[_greedy(cand, 2 * radius, need)]])
    return got


def cytosol_fraction(extent: np.ndarray, voids: np.ndarray, n: int = 24) -> float:
    """Fraction of the box outside the voids (a regular ``n``³ grid of sample points)."""
    if not len(voids):
        return 1.0
    axes = [(np.arange(n) + 0.5) / n * e for e in extent]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    return float(outside_voids(pts, 0.0, voids).mean())


def plan_crowded(index: int, species: list[Species], ss: np.random.SeedSequence, *, working_spacing: float,
                 spacing_range: tuple[float, float], z_range: tuple[int, int], yx_range: tuple[int, int],
                 crowding: float, tilt_range: tuple[float, float], defocus_range: tuple[float, float],
                 void_count: tuple[int, int], void_radius: tuple[float, float], n_beads: tuple[int, int],
                 texture: float, face_margin: float) -> Plan:
    """One crowded tomogram (module docstring). Particle centres stay ``face_margin`` of their radius inside the
    faces (particles may be cut by a face, as in a real section)."""
    rng = np.random.default_rng(ss)
    tomo_id = _tomo_id(index)
    original_spacing = round(float(rng.uniform(*spacing_range)), 2)
    spacing = grid.working_spacing(original_spacing, working_spacing)
    shape = draw_shape(rng, z_range, yx_range, upper=False)
    orig_shape = original_shape(shape, original_spacing, spacing)
    tilt = float(rng.uniform(*tilt_range))
    defocus = float(rng.uniform(*defocus_range))
    plan = Plan(tomo_id=tomo_id, index=index, original_spacing=original_spacing, spacing=spacing, shape=shape,
                original_shape=orig_shape, tilt_deg=tilt, optics=Optics(defocus_a=defocus), texture=texture,
                texture_seed=int(rng.integers(2**63)))
    extent = plan.extent
    k = int(rng.integers(void_count[0], void_count[1], endpoint=True))
    plan.voids = np.column_stack([rng.random((k, 3)) * extent, rng.uniform(*void_radius, k)]).reshape(-1, 4)
    pos, radii = np.zeros((0, 3)), np.zeros(0)

    nb = int(rng.integers(n_beads[0], n_beads[1], endpoint=True))
    for _ in range(nb):
        params = SHAPES["gold"].draw(rng)
        got = pack(rng, pos, radii, params["r"], 1, np.full(3, params["r"]), extent - params["r"], plan.voids)
        for p in got:
            plan.objects.append(Obj("bead", "", "gold", p, params["r"], np.eye(3), params))
            pos, radii = np.vstack([pos, p]), np.append(radii, params["r"])

    cytosol = float(np.prod(extent)) * cytosol_fraction(extent, plan.voids)
    total_weight = sum(s.weight for s in species)
    order = sorted(range(len(species)), key=lambda i: -species[i].radius)
    for i in order:
        s = species[i]
        mean = crowding * cytosol * (s.weight / total_weight) / s.volume_a3
        want = int(rng.poisson(mean))
        margin = face_margin * s.radius
        got = pack(rng, pos, radii, s.radius, want, np.full(3, margin), extent - margin, plan.voids)
        rots = rotations(rng, len(got))
        role = "particle" if s.labeled else "lookalike"
        for p, rot in zip(got, rots, strict=True):
            plan.objects.append(Obj(role, s.label or s.mimics or "", s.shape, p, s.radius, rot, s.params,
                                    species=s.name))
        if len(got) < want:
            plan.unplaced[s.name] = want - len(got)
        pos, radii = np.vstack([pos, got]), np.concatenate([radii, np.full(len(got), s.radius)])
    return plan

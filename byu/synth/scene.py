"""A planned tomogram (:class:`Plan`: its frame and the objects in it) and its noise-free density.

Objects (:class:`Obj`) have a role: ``particle`` (a true particle of a labeled class: in the truth), ``decoy`` (a
structure sized like a class, another shape: the default worlds), ``lookalike`` (a particle of an unlabeled species:
the crowded world), ``bead`` (gold) and ``clutter`` (faint small blobs, recorded nowhere). Positions are Å in the
stored frame (stored voxel ``i`` at ``i * spacing``); a shape from :data:`byu.synth.shapes.SHAPES` renders each.

:func:`render_density` draws, in this order, the cell envelope (if any), clutter, decoys, look-alikes, particles and
beads into a float32 volume; the crowded world adds a faint cytosol texture (a smooth Gaussian random field: the
unresolved small proteins between the particles). :func:`render_template` draws one particle (or decoy, or a
crowded-world species) alone, noise-free, for tests, figures and diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft

from byu.labels.classes import BUILTIN_CLASSES, ParticleClass
from byu.synth.geometry import Cell, Frame
from byu.synth.geometry import rotation as random_rotation
from byu.synth.imaging import Optics, freq_grids, lowpass, rfft_power
from byu.synth.shapes import SHAPES, class_shape, draw_motor, render_envelope, render_motor

MOTOR = "motor"
MOTOR_CLEARANCE_A = 650.0  # a motor's rod and hook end within this of its body centre
INNER_OFFSET_A = 120.0  # a motor's body centre sits this far inside the inner membrane
RENDER_ORDER = ("clutter", "decoy", "lookalike", "particle", "bead")


@dataclass
class Obj:
    role: str  # "particle", "decoy", "lookalike", "bead", "clutter"
    cls: str  # the particle's class, the class a decoy or look-alike resembles, "" for beads and clutter
    shape: str  # a key of SHAPES
    pos: np.ndarray  # Å, stored frame (stored voxel i at i * spacing)
    radius: float  # exclusion radius, Å
    rot: np.ndarray  # columns: the body axes
    params: dict[str, Any]
    species: str = ""  # the crowded world's species name

    @property
    def is_motor(self) -> bool:
        return self.role == "particle" and self.shape == MOTOR


@dataclass
class Plan(Frame):
    """A synthetic tomogram before rendering: frame, imaging settings and objects."""

    tilt_deg: float = 60.0
    cell: Cell | None = None
    objects: list[Obj] = field(default_factory=list)
    unplaced: dict[str, int] = field(default_factory=dict)  # objects drawn that did not fit, per class or species
    optics: Optics | None = None  # the crowded world's CTF
    voids: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # z, y, x, radius (Å): particle-free
    texture: float = 0.0  # std of the cytosol texture (relative to a protein density of 1)
    texture_seed: int = 0
    motor_cohort: bool = False  # the motor cohort's envelope arithmetic (see render_envelope)

    def of(self, role: str, cls: str | None = None) -> list[Obj]:
        return [o for o in self.objects if o.role == role and (cls is None or o.cls == cls)]

    def positions(self, roles: tuple[str, ...] = ("particle", "lookalike", "decoy", "bead")) -> np.ndarray:
        """``(n, 3)`` positions (Å) of the objects with these roles."""
        pts = [o.pos for o in self.objects if o.role in roles]
        return np.array(pts, dtype=float).reshape(-1, 3)


def texture_field(shape: tuple[int, int, int], seed: int, *, std: float, sigma_vox: float = 1.2) -> np.ndarray:
    """A smooth zero-mean Gaussian random field of about ``std`` (correlation ~``sigma_vox`` voxels)."""
    rng = np.random.default_rng(seed)
    kz, ky, kx = freq_grids(shape)
    h = lowpass(kz, ky, kx, sigma_vox)
    scale = std * np.sqrt(float(np.prod(shape)) / 2.0 / rfft_power(h, shape[2]))
    h = h * np.float32(scale)
    spec = rng.standard_normal(h.shape, dtype=np.float32) * h + 1j * rng.standard_normal(h.shape, dtype=np.float32) * h
    return scipy.fft.irfftn(spec, s=shape, workers=1).astype(np.float32, copy=False)


def render_density(plan: Plan) -> np.ndarray:
    """The noise-free density of a plan on its stored grid, float32 (soft edges of 0.6 voxel)."""
    vol = np.zeros(plan.shape, dtype=np.float32)
    edge = 0.6 * plan.spacing
    if plan.cell is not None:
        render_envelope(vol, plan.spacing, plan.cell, periplasm_first=plan.motor_cohort)
    if plan.texture > 0:
        vol += texture_field(plan.shape, plan.texture_seed, std=plan.texture)
    for role in RENDER_ORDER:
        for o in plan.of(role):
            SHAPES[o.shape].render(vol, plan.spacing, o.pos, o.rot, o.params, edge)
    return vol


def away_from_beads(plan: Plan, *, reach: float = 3.0) -> np.ndarray:
    """Which stored voxels are farther than ``reach`` bead radii from every gold bead (bool, the plan's shape)."""
    keep = np.ones(plan.shape, dtype=bool)
    for b in plan.of("bead"):
        lo = np.maximum(np.floor((b.pos - reach * b.radius) / plan.spacing).astype(int), 0)
        hi = np.minimum(np.ceil((b.pos + reach * b.radius) / plan.spacing).astype(int) + 1, plan.shape)
        if np.any(hi <= lo):
            continue
        axes = [np.arange(lo[k], hi[k]) * plan.spacing - b.pos[k] for k in range(3)]
        d2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
        keep[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] &= d2 > (reach * b.radius) ** 2
    return keep


def render_template(c: ParticleClass | str, spacing: float = 16.0, *, seed: int = 0, decoy: str | None = None,
                    rotation: np.ndarray | None = None, box: int | None = None,
                    species: Any = None) -> np.ndarray:
    """A noise-free float32 density cube of one particle of class ``c`` (or, with ``decoy``, a decoy of that kind
    sized like it; or, with ``species``, a crowded-world :class:`~byu.synth.species.Species`) centred on voxel
    ``box // 2``, at ``spacing`` Å/voxel, before any imaging (for tests, figures and checking what a class looks
    like). ``rotation`` (3x3, columns the body axes) defaults to a random one drawn from ``seed``."""
    c = BUILTIN_CLASSES[c] if isinstance(c, str) else c
    rng = np.random.default_rng(seed)
    rot = random_rotation(rng) if rotation is None else np.asarray(rotation, dtype=float)
    shape_kind = class_shape(c.name)
    if box is None:
        reach = 700.0 if shape_kind == MOTOR and decoy is None and species is None else 1.3 * c.radius
        if species is not None:
            reach = 1.3 * species.radius
        box = 2 * int(np.ceil(reach / spacing)) + 5
    centre = np.full(3, (box // 2) * spacing)
    edge = 0.6 * spacing
    vol = np.zeros((box, box, box), dtype=np.float32)
    if species is not None:
        SHAPES[species.shape].render(vol, spacing, centre, rot, species.params, edge)
    elif decoy is not None:
        SHAPES[decoy].render(vol, spacing, centre, rot, SHAPES[decoy].draw(rng, c.radius, motor=c.name == MOTOR)
                             if decoy == "blob" else SHAPES[decoy].draw(rng, c.radius), edge)
    elif shape_kind == MOTOR:
        axis = rot[:, 0]
        cell = Cell(centre=centre - 4000.0 * axis, radius=4000.0, inner_offset=INNER_OFFSET_A,
                    outer_offset=INNER_OFFSET_A + 230.0)
        render_motor(vol, spacing, draw_motor(centre, cell, rng), edge)
    else:
        SHAPES[shape_kind].render(vol, spacing, centre, rot, SHAPES[shape_kind].draw(rng, c.radius), edge)
    return vol

"""The public API: ``make_cohort(out, classes=..., n=..., seed=..., world=...) -> Cohort``.

Worlds (:data:`WORLDS`):

- ``"default"`` with classes ``["motor"]``: the motor cohort (the BYU setting; :class:`MotorOptions`): tomograms
  with 0-3 flagellar motors in a cell envelope, motor-sized decoys, clutter and gold beads; one planted error in
  about ``error_fraction`` of the tomograms, only where the noisy label has at most one motor;
- ``"default"`` with any other classes: the multi-class cohort (:class:`MultiClassOptions`): particles of every class
  with a class-specific shape at its real size, per class decoys of its size and another shape, gold beads, faint
  clutter (and the cell envelope when ``motor`` is a class); at most one error per (tomogram, class);
- ``"crowded"``: the harder world (:class:`CrowdedOptions`), a crowded cytoplasm as a picker sees a real cellular
  tomogram: ``species`` protein species (default 12) of density-like Gaussian-subunit assemblies, the labeled
  classes among them (default ribosome, apo-ferritin, thyroglobulin) and unlabeled look-alikes of similar size
  (:mod:`byu.synth.species`), packed without overlap to the volume fraction ``crowding`` (default 0.30), a few
  particle-free pockets and gold beads; a ±60° missing wedge (tilt range drawn in 57-63°), a phase-flipped CTF
  band-pass (defocus drawn in 3.5-5.5 µm) and noise at the target ``snr`` (default 0.1; SNR = variance of the
  filtered signal over that of the noise, in the volume, gold beads left out: :mod:`byu.synth.imaging`);
  planted errors per tomogram and class, about ``error_fraction`` (0.2) of the labels, of four kinds: missed,
  false (on a look-alike), shifted, background (:mod:`byu.synth.errors`). Each tomogram is 80x160x160 voxels
  stored at 16 Å (from 128x256x256 at 10 Å); ``n`` is the caller's (8 make a held-out-like test set).

The default world writes exactly the files its two former modules (``byu.synth``, ``byu.synth_multi``) wrote, byte
for byte, for the same arguments. Files: :mod:`byu.synth.writers`; the same arguments give byte-identical files.

Streams (``numpy.random.SeedSequence``): the cohort (motor counts, planted errors) ``spawn_key=(0,)``; a tomogram's
content ``(1, i)`` (the crowded world's cytosol texture from a seed that stream draws); its noise ``(1, i, 0)``
(motor cohort) or ``(2, i)`` (others); the crowded world's species identities from ``species_seed``
(:mod:`byu.synth.species`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from byu.labels.classes import BUILTIN_CLASSES, ParticleClass
from byu.paths import DataRoot
from byu.synth import placement
from byu.synth.errors import error_kinds, plant_crowded_errors, plant_motor_errors, plant_multiclass_errors
from byu.synth.imaging import image, image_snr
from byu.synth.scene import MOTOR, Plan, away_from_beads, render_density
from byu.synth.species import Species, catalogue
from byu.synth.writers import write_class_tables, write_motor_tables, write_species, write_tomogram_of
from byu.tomo import grid

WORLDS = ("default", "crowded")
#: The crowded world's labeled classes when the caller passes the default ``("motor",)``: motors need a cell
#: envelope, not a cytoplasm; these three span small (60 Å), mid (130 Å) and large (150 Å) radii.
CROWDED_CLASSES = ("ribosome", "apo-ferritin", "thyroglobulin")
CROWDED_SPECIES = 12
CROWDED_SNR = 0.1
#: Volume fraction of the cytosol occupied by the particles' spheres. Macromolecules occupy about 20-30 % of the
#: volume of a bacterial cytoplasm (300-400 g/l; Zimmerman & Trach 1991, J Mol Biol 222:599; Ellis 2001, Trends
#: Biochem Sci 26:597); 0.30 is at the dense end of that, and random packing of the spheres stays well below its
#: jamming limit (about 0.38), so every drawn particle fits. At the defaults a 1280x2560x2560 Å tomogram then holds
#: about 900 particles (~740 of 50-70 Å radius, ~150 of 115-170 Å); no more fit without overlapping: 2,500 spheres
#: of even 60 Å radius alone would fill 27 % of the box.
CROWDED_CROWDING = 0.30
MAX_CROWDING = 0.4


@dataclass(frozen=True)
class MotorOptions:
    """Options of the motor cohort: shapes are stored-voxel ranges at ``max(working_spacing, original)``; original
    spacings drawn from ``spacing_range``; ``noise`` the std of the correlated noise relative to a motor body's
    density of 1; errors shifted by ``shift_range`` Å; motors ``min_motor_sep`` Å apart and ``edge_margin`` Å from
    the faces."""

    working_spacing: float = 16.0
    spacing_range: tuple[float, float] = (8.0, 20.0)
    z_range: tuple[int, int] = (96, 160)
    yx_range: tuple[int, int] = (160, 256)
    error_fraction: float = 0.3
    noise: float = 0.35
    min_motor_sep: float = 2000.0
    edge_margin: float = 300.0
    shift_range: tuple[float, float] = (1300.0, 2000.0)


@dataclass(frozen=True)
class MultiClassOptions:
    """Options of the multi-class cohort: per tomogram and class, particles from ``count_range``
    (``motor_count_range`` for motors), decoys from ``decoy_range`` (``motor_decoy_range``), inclusive; ``noise``
    lower than the motor cohort's (at 16 Å an apo-ferritin shell is 7-8 voxels across and drowns in 0.35)."""

    working_spacing: float = 16.0
    spacing_range: tuple[float, float] = (8.0, 14.0)
    z_range: tuple[int, int] = (64, 112)
    yx_range: tuple[int, int] = (128, 224)
    count_range: tuple[int, int] = (2, 6)
    motor_count_range: tuple[int, int] = (0, 2)
    decoy_range: tuple[int, int] = (0, 2)
    motor_decoy_range: tuple[int, int] = (1, 2)
    n_beads: tuple[int, int] = (3, 8)
    error_fraction: float = 0.3
    noise: float = 0.2
    min_motor_sep: float = 2000.0
    motor_margin: float = 300.0


@dataclass(frozen=True)
class CrowdedOptions:
    """Options of the crowded world (``species``, ``snr`` and ``crowding`` are :func:`make_cohort` arguments):
    stored shapes drawn from ``z_range``/``yx_range`` (multiples of 8) at ``max(working_spacing, original)``;
    tilt range (±deg) from ``tilt_range``; defocus (Å underfocus) from ``defocus_range``; ``void_count``
    particle-free pockets of radius ``void_radius`` Å; ``n_beads`` gold beads; ``texture`` the std of the cytosol's
    fine texture (relative to a protein density of 1); particle centres at least ``face_margin`` of their radius
    inside the faces; ``species_seed`` picks the species' identities (the same for every cohort seed)."""

    working_spacing: float = 16.0
    spacing_range: tuple[float, float] = (10.0, 10.0)
    z_range: tuple[int, int] = (80, 80)
    yx_range: tuple[int, int] = (160, 160)
    error_fraction: float = 0.2
    tilt_range: tuple[float, float] = (57.0, 63.0)
    defocus_range: tuple[float, float] = (35000.0, 55000.0)
    void_count: tuple[int, int] = (1, 3)
    void_radius: tuple[float, float] = (300.0, 450.0)
    n_beads: tuple[int, int] = (3, 6)
    texture: float = 0.1
    face_margin: float = 0.5
    species_seed: int = 0


@dataclass(frozen=True)
class CohortPaths:
    """Where a cohort's files are (also before it is made); None where a world writes no such file."""

    root: Path
    truth: Path  # picks form, every world
    noisy: Path  # the motor cohort: canonical labels_noisy.csv; others: labels_noisy_picks.csv
    tomograms: Path
    errors: Path
    decoys: Path
    classes: Path | None
    truth_canonical: Path | None  # the motor cohort's truth.csv
    species: Path | None  # the crowded world's species.json


def _names(classes: Sequence[ParticleClass | str]) -> list[str]:
    return [c if isinstance(c, str) else c.name for c in classes]


def is_motor_cohort(classes: Sequence[ParticleClass | str], world: str = "default") -> bool:
    """Whether these arguments make the motor cohort (the default world with classes ``["motor"]``)."""
    return world == "default" and _names(classes) == [MOTOR]


def cohort_paths(root: str | Path, *, classes: Sequence[ParticleClass | str] = (MOTOR,),
                 world: str = "default") -> CohortPaths:
    """The paths :func:`make_cohort` writes for these arguments under the data root ``root``."""
    synth = Path(root) / "synth"
    motor = is_motor_cohort(classes, world)
    return CohortPaths(
        root=Path(root), truth=synth / "truth_picks.csv",
        noisy=synth / ("labels_noisy.csv" if motor else "labels_noisy_picks.csv"),
        tomograms=synth / "tomograms.csv", errors=synth / "planted_errors.csv", decoys=synth / "decoys.csv",
        classes=None if motor else synth / "classes.json", truth_canonical=synth / "truth.csv" if motor else None,
        species=synth / "species.json" if world == "crowded" else None,
    )


def resolve_classes(classes: Sequence[ParticleClass | str], world: str = "default") -> list[ParticleClass]:
    """The classes a cohort labels: :class:`ParticleClass` es or built-in names; in the crowded world the default
    ``("motor",)`` stands for :data:`CROWDED_CLASSES`, and ``motor`` among other classes is refused."""
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}: choose one of {', '.join(WORLDS)}")
    if world == "crowded" and _names(classes) == [MOTOR]:
        classes = CROWDED_CLASSES
    out = []
    for c in classes:
        if isinstance(c, str):
            if c not in BUILTIN_CLASSES:
                raise ValueError(f"unknown particle class {c!r}; built in: {', '.join(BUILTIN_CLASSES)}")
            c = BUILTIN_CLASSES[c]
        out.append(c)
    if not out:
        raise ValueError("no particle classes given")
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ValueError(f"a class is listed twice: {names}")
    if world == "crowded" and MOTOR in names:
        raise ValueError("motor is not a class of the crowded world: flagellar motors sit in a cell envelope, not "
                         f"in a crowded cytoplasm; choose soluble complexes, e.g. {','.join(CROWDED_CLASSES)}")
    return out


@dataclass(frozen=True)
class Cohort:
    """What :func:`make_cohort` wrote and how much of it; the same fields for every world.

    ``truth_path`` is the truth in the picks form (``tomo_id,particle,z,y,x,voxel_spacing``) in every world;
    ``noisy_path`` the noisy labels as written (canonical for the motor cohort, picks otherwise): both read with
    ``byu.labels.formats.read_version_file(path, tomograms=tomograms_path)``. Counts are per class and kind;
    ``extra`` holds what only one world has."""

    root: Path
    world: str
    tomo_ids: list[str]
    class_names: list[str]
    truth_path: Path
    noisy_path: Path
    tomograms_path: Path | None
    errors_path: Path | None
    decoys_path: Path | None
    classes_path: Path | None
    truth_canonical_path: Path | None
    particles_by_class: dict[str, int]
    decoys_by_class: dict[str, int]
    errors_by_class: dict[str, dict[str, int]]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tomograms(self) -> int:
        return len(self.tomo_ids)

    @property
    def n_particles(self) -> int:
        return sum(self.particles_by_class.values())

    @property
    def error_kinds(self) -> tuple[str, ...]:
        return error_kinds(self.world)

    @property
    def errors_by_kind(self) -> dict[str, int]:
        return {k: sum(v.get(k, 0) for v in self.errors_by_class.values()) for k in self.error_kinds}

    @property
    def n_errors(self) -> int:
        return sum(sum(v.values()) for v in self.errors_by_class.values())


def _options(cls: type, options: dict[str, Any], what: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s) for the {what}: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**options)


def _counts(errors: list[dict[str, Any]], classes: list[str], kinds: tuple[str, ...]) -> dict[str, dict[str, int]]:
    out = {c: dict.fromkeys(kinds, 0) for c in classes}
    for e in errors:
        out[e["cls"]][e["kind"]] += 1
    return out


def make_cohort(
    out: str | Path,
    *,
    classes: Sequence[ParticleClass | str] = (MOTOR,),
    n: int = 24,
    seed: int = 0,
    world: str = "default",
    species: int | None = None,
    snr: float | None = None,
    crowding: float | None = None,
    **options: Any,
) -> Cohort:
    """Write a synthetic cohort of ``n`` tomograms with true and noisy labels under the data root ``out``.

    ``classes``: :class:`ParticleClass` es or built-in names; ``world``: ``"default"`` (the motor cohort for
    ``["motor"]``, else the multi-class cohort) or ``"crowded"``; ``species``, ``snr``, ``crowding``: the crowded
    world's number of species, target SNR and volume fraction (defaults 12, 0.1, 0.30); ``options``: the world's
    :class:`MotorOptions`, :class:`MultiClassOptions` or :class:`CrowdedOptions`. The same arguments give
    byte-identical files (module docstring).
    """
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}: choose one of {', '.join(WORLDS)}")
    if n < 1:
        raise ValueError("n must be at least 1")
    if world == "default":
        given = [k for k, v in (("species", species), ("snr", snr), ("crowding", crowding)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: options of the crowded world only (world='crowded')")
        if is_motor_cohort(classes, world):
            return _make_motor(out, n=n, seed=seed, opts=_options(MotorOptions, options, "motor cohort"))
        opts = _options(MultiClassOptions, options, "multi-class cohort")
        if opts.motor_count_range[1] > 3:
            raise ValueError("at most 3 motors per tomogram (the cell envelope passes through them)")
        return _make_multiclass(out, resolve_classes(classes, world), n=n, seed=seed, opts=opts)
    cls_list = resolve_classes(classes, world)
    n_species = CROWDED_SPECIES if species is None else int(species)
    snr = CROWDED_SNR if snr is None else float(snr)
    crowding = CROWDED_CROWDING if crowding is None else float(crowding)
    if not (math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a positive number: got {snr}")
    if not 0 < crowding <= MAX_CROWDING:
        raise ValueError(f"crowding (a volume fraction) must be in (0, {MAX_CROWDING}]: got {crowding}")
    opts = _options(CrowdedOptions, options, "crowded world")
    if not 0 <= opts.error_fraction <= 1:
        raise ValueError(f"error_fraction must be in [0, 1]: got {opts.error_fraction}")
    cat = catalogue(cls_list, n_species, opts.species_seed)
    return _make_crowded(out, cls_list, cat, n=n, seed=seed, snr=snr, crowding=crowding, opts=opts)


def _make_motor(out: str | Path, *, n: int, seed: int, opts: MotorOptions) -> Cohort:
    t_start = time.perf_counter()
    root = DataRoot.from_env(Path(out))
    seq = np.random.SeedSequence(seed)
    cohort_rng = np.random.default_rng(seq.spawn(1)[0])
    tomo_seqs = [np.random.SeedSequence(seed, spawn_key=(1, i)) for i in range(n)]
    counts = placement.motor_counts(n, cohort_rng)
    plans = [
        placement.plan_motor(i, int(counts[i]), tomo_seqs[i], working_spacing=opts.working_spacing,
                             spacing_range=opts.spacing_range, z_range=opts.z_range, yx_range=opts.yx_range,
                             min_motor_sep=opts.min_motor_sep, edge_margin=opts.edge_margin)
        for i in range(n)
    ]
    errors = plant_motor_errors(plans, cohort_rng, fraction=opts.error_fraction, edge_margin=opts.edge_margin,
                                shift_range=opts.shift_range)
    for p, ss in zip(plans, tomo_seqs, strict=True):
        noise_rng = np.random.default_rng(ss.spawn(1)[0])
        vol, clip = image(render_density(p), noise_rng, tilt_deg=p.tilt_deg, noise=opts.noise)
        write_tomogram_of(root, p, vol, clip, {"synth": {"seed": seed, "index": p.index}})
    paths = cohort_paths(root.root, world="default")
    write_motor_tables(root.root / "synth", plans, errors)
    return Cohort(
        root=root.root, world="default", tomo_ids=[p.tomo_id for p in plans], class_names=[MOTOR],
        truth_path=paths.truth, noisy_path=paths.noisy, tomograms_path=paths.tomograms, errors_path=paths.errors,
        decoys_path=paths.decoys, classes_path=None, truth_canonical_path=paths.truth_canonical,
        particles_by_class={MOTOR: sum(len(p.of("particle")) for p in plans)},
        decoys_by_class={MOTOR: sum(len(p.of("decoy")) for p in plans)},
        errors_by_class=_counts(errors, [MOTOR], error_kinds("default")),
        seconds=time.perf_counter() - t_start,
        extra={"n_beads": sum(len(p.of("bead")) for p in plans)},
    )


def _make_multiclass(out: str | Path, cls_list: list[ParticleClass], *, n: int, seed: int,
                     opts: MultiClassOptions) -> Cohort:
    t_start = time.perf_counter()
    root = DataRoot.from_env(Path(out))
    cohort_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    plans = [
        placement.plan_multiclass(
            i, cls_list, np.random.SeedSequence(seed, spawn_key=(1, i)), working_spacing=opts.working_spacing,
            spacing_range=opts.spacing_range, z_range=opts.z_range, yx_range=opts.yx_range,
            count_range=opts.count_range, motor_count_range=opts.motor_count_range, decoy_range=opts.decoy_range,
            motor_decoy_range=opts.motor_decoy_range, n_beads=opts.n_beads, min_motor_sep=opts.min_motor_sep,
            motor_margin=opts.motor_margin)
        for i in range(n)
    ]
    errors = plant_multiclass_errors(plans, cls_list, cohort_rng, fraction=opts.error_fraction)
    names = [c.name for c in cls_list]
    for p in plans:
        noise_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, p.index)))
        vol, clip = image(render_density(p), noise_rng, tilt_deg=p.tilt_deg, noise=opts.noise)
        assert grid.resampled_shape(p.original_shape, p.original_spacing, opts.working_spacing) == p.shape
        write_tomogram_of(root, p, vol, clip, {"synth_multi": {"seed": seed, "index": p.index, "classes": names}})
    paths = write_class_tables(root.root / "synth", plans, cls_list, errors, crowded=False)
    return Cohort(
        root=root.root, world="default", tomo_ids=[p.tomo_id for p in plans], class_names=names,
        truth_path=paths["truth"], noisy_path=paths["noisy"], tomograms_path=paths["tomograms"],
        errors_path=paths["errors"], decoys_path=paths["decoys"], classes_path=paths["classes"],
        truth_canonical_path=None,
        particles_by_class={c: sum(len(p.of("particle", c)) for p in plans) for c in names},
        decoys_by_class={c: sum(len(p.of("decoy", c)) for p in plans) for c in names},
        errors_by_class=_counts(errors, names, error_kinds("default")),
        seconds=time.perf_counter() - t_start,
        extra={"unplaced_by_class": {c: sum(p.unplaced.get(c, 0) for p in plans) for c in names},
               "n_beads": sum(len(p.of("bead")) for p in plans)},
    )


def _sphere_fraction(p: Plan) -> float:
    """Volume fraction of the box occupied by the particles' spheres (all species; beads not counted)."""
    v = sum(4.0 / 3.0 * math.pi * o.radius**3 for o in p.objects if o.role in ("particle", "lookalike"))
    return v / float(np.prod(p.extent))


def _make_crowded(out: str | Path, cls_list: list[ParticleClass], cat: list[Species], *, n: int, seed: int,
                  snr: float, crowding: float, opts: CrowdedOptions) -> Cohort:
    t_start = time.perf_counter()
    root = DataRoot.from_env(Path(out))
    names = [c.name for c in cls_list]
    cohort_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    plans = [
        placement.plan_crowded(
            i, cat, np.random.SeedSequence(seed, spawn_key=(1, i)), working_spacing=opts.working_spacing,
            spacing_range=opts.spacing_range, z_range=opts.z_range, yx_range=opts.yx_range, crowding=crowding,
            tilt_range=opts.tilt_range, defocus_range=opts.defocus_range, void_count=opts.void_count,
            void_radius=opts.void_radius, n_beads=opts.n_beads, texture=opts.texture, face_margin=opts.face_margin)
        for i in range(n)
    ]
    errors = plant_crowded_errors(plans, cls_list, cohort_rng, fraction=opts.error_fraction)
    measured, density_fraction = [], []
    for p in plans:
        assert p.optics is not None
        vol = render_density(p)
        density_fraction.append(round(float(np.count_nonzero(vol > 0.5)) / vol.size, 4))
        im = image_snr(vol, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, p.index))),
                       spacing=p.spacing, tilt_deg=p.tilt_deg, optics=p.optics, snr=snr,
                       signal_mask=away_from_beads(p))
        del vol
        measured.append(round(im.snr, 6))
        write_tomogram_of(root, p, im.volume, im.clip, {"synth_crowded": {
            "seed": seed, "index": p.index, "classes": names, "species": len(cat), "species_seed": opts.species_seed,
            "snr": snr, "snr_measured": measured[-1], "crowding": crowding, "tilt_deg": round(p.tilt_deg, 3),
            "defocus_A": round(p.optics.defocus_a, 1)}})
    synth_dir = root.root / "synth"
    paths = write_class_tables(synth_dir, plans, cls_list, errors, crowded=True)
    per_tomo = {s.name: [sum(1 for o in p.objects if o.species == s.name) for p in plans] for s in cat}
    species_path = write_species(synth_dir / "species.json",
                                 [{**s.summary(), "per_tomogram": per_tomo[s.name]} for s in cat])
    lookalikes = {c: sum(len(p.of("lookalike", c)) for p in plans) for c in names}
    return Cohort(
        root=root.root, world="crowded", tomo_ids=[p.tomo_id for p in plans], class_names=names,
        truth_path=paths["truth"], noisy_path=paths["noisy"], tomograms_path=paths["tomograms"],
        errors_path=paths["errors"], decoys_path=paths["decoys"], classes_path=paths["classes"],
        truth_canonical_path=None,
        particles_by_class={c: sum(len(p.of("particle", c)) for p in plans) for c in names},
        decoys_by_class=lookalikes,
        errors_by_class=_counts(errors, names, error_kinds("crowded")),
        seconds=time.perf_counter() - t_start,
        extra={
            "species_path": species_path, "species": [s.summary() for s in cat],
            "particles_by_species": {k: sum(v) for k, v in per_tomo.items()},
            "unplaced_by_species": {s.name: sum(p.unplaced.get(s.name, 0) for p in plans) for s in cat},
            "n_beads": sum(len(p.of("bead")) for p in plans),
            "snr": snr, "snr_measured": measured, "crowding": crowding,
            "sphere_fraction": [round(_sphere_fraction(p), 4) for p in plans], "density_fraction": density_fraction,
            "tilt_deg": [round(p.tilt_deg, 3) for p in plans],
            "defocus_A": [round(p.optics.defocus_a, 1) for p in plans if p.optics is not None],
        },
    )


def cohort_summary(c: Cohort) -> str:
    """A few lines on what a cohort holds (the CLI prints them)."""
    parts = ", ".join(f"{k} {v}" for k, v in c.particles_by_class.items())
    errs = "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in kinds.items())
                     for name, kinds in c.errors_by_class.items())
    lines = [f"wrote {c.n_tomograms} tomograms ({c.world} world; particles: {parts}) under {c.root} in "
             f"{c.seconds:.1f} s", f"truth: {c.truth_path}" + (f" (canonical: {c.truth_canonical_path})"
                                                                 if c.truth_canonical_path else ""),
             f"noisy labels: {c.noisy_path}", f"planted errors: {errs}"]
    if c.world == "crowded":
        lines.append(f"species: {len(c.extra['species'])} ({c.extra['species_path']}); crowding {c.extra['crowding']}"
                     f", sphere fraction {np.mean(c.extra['sphere_fraction']):.3f}; SNR {c.extra['snr']}")
    return "\n".join(lines)


__all__ = [
    "CROWDED_CLASSES", "Cohort", "CohortPaths", "CrowdedOptions", "MotorOptions", "MultiClassOptions", "WORLDS",
    "cohort_paths", "cohort_summary", "is_motor_cohort", "make_cohort", "resolve_classes",
]

"""The crowded world's species: the labeled classes and the unlabeled proteins around them (:func:`catalogue`).

Each species is one density-like assembly (:mod:`byu.synth.assemblies`) with a fixed identity (its subunit layout),
drawn once from its own stream, so every copy of a species looks alike (in a random orientation):

- one species per labeled class, of the class's radius (``ParticleClass.radius``), with the assembly family of
  :data:`~byu.synth.shapes.CROWDED_CLASS_SHAPES` (apo-ferritin an octahedral 24-mer cage, ribosome a lopsided
  two-domain complex, thyroglobulin an elongated C2 dimer, ...; another class: a family chosen by its name). Its
  identity stream is seeded by ``species_seed`` and the class name only, so a class looks the same in every cohort;
- unlabeled species up to ``n_species`` in all: first, round-robin over the labeled classes, two look-alikes per
  class, one smaller (0.82–0.95 of its radius) and one larger (1.05–1.18), of a random family (they never appear in
  the truth or the labels: ``mimics`` names the class they resemble); then species of assorted sizes (radius
  log-uniform in 60–160 Å), ``mimics`` the labeled class within ±20 % of their radius, if any. With fewer species
  than ``3 x`` the labeled classes, the first classes get their look-alikes first.

Abundance: every species takes a share of the crowded volume proportional to its ``weight`` (labeled species
:data:`LABELED_WEIGHT`, unlabeled 1), so small species have many more copies than large ones (equal volume per
weight, as roughly equal mass per protein species).

Streams: the catalogue (sizes, families) from ``SeedSequence(species_seed, spawn_key=(4,))``; an unlabeled species
``k`` from ``(3, 1, k)``; a labeled class from ``(3, 0, crc32(name))``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from byu.labels.classes import ParticleClass
from byu.synth.shapes import CROWDED_CLASS_SHAPES, SHAPES, SPECIES_FAMILIES

LABELED_WEIGHT = 2.0
LOOKALIKES_PER_CLASS = 2
LOOKALIKE_RANGES = ((0.82, 0.95), (1.05, 1.18))  # radius factors of a class's smaller and larger look-alike
ASSORTED_RADIUS_A = (60.0, 160.0)
SIMILAR = 0.2  # radii within ±20 %: "of similar size"


@dataclass(frozen=True)
class Species:
    """One protein species of the crowded world."""

    name: str
    radius: float  # Å: the exclusion sphere its density lies in
    shape: str  # a species family of SHAPES
    params: dict[str, Any]  # the identity: subunit layout
    label: str | None  # the labeled class this species is, None for an unlabeled one
    mimics: str | None  # the labeled class it is sized like (itself for a labeled species)
    weight: float  # share of the crowded volume, relative

    @property
    def labeled(self) -> bool:
        return self.label is not None

    @property
    def volume_a3(self) -> float:
        return 4.0 / 3.0 * np.pi * self.radius**3

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "radius": round(self.radius, 1), "shape": self.shape, "label": self.label,
                "mimics": self.mimics, "weight": self.weight, "subunits": int(len(self.params["sigmas"]))}


def _name_key(name: str) -> int:
    return zlib.crc32(name.encode())


def similar_class(radius: float, classes: list[ParticleClass]) -> str | None:
    """The labeled class of most similar radius within ±20 %, or None."""
    best = None
    for c in classes:
        gap = abs(radius / c.radius - 1.0)
        if gap <= SIMILAR and (best is None or gap < best[0]):
            best = (gap, c.name)
    return None if best is None else best[1]


def catalogue(classes: list[ParticleClass], n_species: int, species_seed: int = 0) -> list[Species]:
    """The species of a crowded cohort: the labeled ones (class order) and the unlabeled ones (module docstring)."""
    if n_species < len(classes) + 1:
        raise ValueError(f"species must be at least the number of labeled classes + 1 ({len(classes) + 1}): "
                         f"got {n_species}")
    out = []
    for c in classes:
        family = CROWDED_CLASS_SHAPES.get(c.name, SPECIES_FAMILIES[_name_key(c.name) % len(SPECIES_FAMILIES)])
        rng = np.random.default_rng(np.random.SeedSequence(species_seed, spawn_key=(3, 0, _name_key(c.name))))
        out.append(Species(c.name, float(c.radius), family, SHAPES[family].draw(rng, float(c.radius)), c.name,
                           c.name, LABELED_WEIGHT))
    cat = np.random.default_rng(np.random.SeedSequence(species_seed, spawn_key=(4,)))
    n_unlabeled = n_species - len(classes)
    n_look = min(n_unlabeled, LOOKALIKES_PER_CLASS * len(classes))
    for k in range(n_unlabeled):
        if k < n_look:
            c = classes[k % len(classes)]
            lo, hi = LOOKALIKE_RANGES[(k // len(classes)) % len(LOOKALIKE_RANGES)]
            radius = c.radius * float(cat.uniform(lo, hi))
            mimics: str | None = c.name
        else:
            radius = float(np.exp(cat.uniform(*np.log(ASSORTED_RADIUS_A))))
            mimics = similar_class(radius, classes)
        family = SPECIES_FAMILIES[int(cat.integers(len(SPECIES_FAMILIES)))]
        rng = np.random.default_rng(np.random.SeedSequence(species_seed, spawn_key=(3, 1, k)))
        out.append(Species(f"unlabeled-{k + 1:02d}-{family}", radius, family, SHAPES[family].draw(rng, radius),
                           None, mimics, 1.0))
    return out

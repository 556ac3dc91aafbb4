"""Synthetic cohorts: tomograms with particles, their true labels, and noisy labels with planted errors.

``make_cohort(out, classes=("motor",), n=24, seed=0, world="default", ...) -> Cohort`` writes a cohort under the
data root ``out`` (:mod:`byu.synth.cohort`): the motor cohort, the multi-class cohort or the crowded world; the same
arguments give byte-identical files. Modules by concern:

- :mod:`~byu.synth.geometry`: frames (stored / original), random directions, rotations, the cell envelope;
- :mod:`~byu.synth.shapes`: density primitives and the registry of particle shapes (:data:`SHAPES`);
  :mod:`~byu.synth.assemblies`: the crowded world's Gaussian-subunit assemblies;
- :mod:`~byu.synth.species`: the crowded world's labeled and unlabeled species;
- :mod:`~byu.synth.scene`: a planned tomogram and its noise-free density (:func:`render_template`);
- :mod:`~byu.synth.placement`: what each world puts where; :mod:`~byu.synth.errors`: the planted errors;
- :mod:`~byu.synth.imaging`: missing wedge, resolution, CTF, noise (level or SNR), uint8;
- :mod:`~byu.synth.writers`: the files and their columns.
"""

from byu.synth.cohort import (
    CROWDED_CLASSES,
    WORLDS,
    Cohort,
    CohortPaths,
    cohort_paths,
    cohort_summary,
    is_motor_cohort,
    make_cohort,
    resolve_classes,
)
from byu.synth.errors import ERROR_KINDS, error_kinds
from byu.synth.scene import render_template
from byu.synth.shapes import SHAPES

__all__ = [
    "CROWDED_CLASSES", "ERROR_KINDS", "SHAPES", "WORLDS", "Cohort", "CohortPaths", "cohort_paths", "cohort_summary",
    "error_kinds", "is_motor_cohort", "make_cohort", "render_template", "resolve_classes",
]

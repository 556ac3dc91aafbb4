"""copick projects in and out: :func:`ingest_copick` reads a project's tomograms and picks into a data root and a
label version; :func:`export_copick` writes a (reviewed) version back into the project as copick picks.

Uses the real ``copick`` library (any backend it opens: filesystem, CryoET Data Portal, mlcroissant). Coordinates:
copick stores picks in Å in ``x, y, z`` order; a label's coordinates are voxels ``z, y, x`` of its tomogram's frame,
and the frame of a copick run is the chosen tomogram's own grid (its full-resolution shape at its voxel spacing), so
``Å = voxel x spacing`` both ways. Pick files are read and written by :mod:`byu.copick.picks` (clear errors,
per-set locks, atomic writes, no writing through a symlink out of the overlay).
"""

from byu.copick.export import CopickExportReport, PickSetWrite, export_copick
from byu.copick.ingest import (
    DEFAULT_TOMO_TYPES,
    MIN_SPACING_A,
    CopickIngestReport,
    RadiusNote,
    SupersededSet,
    TomogramResult,
    check_spacing,
    choose_tomogram,
    copick_tomo_id,
    ingest_copick,
    open_project,
)

__all__ = [
    "CopickExportReport", "CopickIngestReport", "DEFAULT_TOMO_TYPES", "MIN_SPACING_A", "PickSetWrite", "RadiusNote",
    "SupersededSet", "TomogramResult", "check_spacing", "choose_tomogram", "copick_tomo_id", "export_copick",
    "ingest_copick", "open_project",
]

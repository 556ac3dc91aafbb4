"""The resampling grid between a tomogram's original voxels and its stored (working-spacing) voxels.

One convention, the reference pipeline's: ``torch.nn.functional.interpolate(x, scale_factor=s, mode="trilinear",
align_corners=False, recompute_scale_factor=False)`` with ``s = original spacing / working spacing``:

- output size per axis: ``floor(n * s)`` (Python float arithmetic, as torch computes it);
- output voxel ``i`` samples the source at ``(i + 0.5) / s - 0.5``.

Coordinates move between the two grids through the very same function (:func:`original_to_stored`,
:func:`stored_to_original`), so a label placed on a voxel of the original volume lands on the stored voxel that
shows it. Physical positions are ``Å = original voxel x original spacing`` (the portal's, copick's and the label
tables' convention); the stored grid is only ever reached through these functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_TARGET_SPACING = 16.0


def working_spacing(original_spacing: float, target_spacing: float = DEFAULT_TARGET_SPACING) -> float:
    """The stored spacing: ``max(target, original)`` (a tomogram is never upsampled)."""
    return max(float(target_spacing), float(original_spacing))


def scale_factor(original_spacing: float, stored_spacing: float) -> float:
    """``s = original / stored`` (at most 1): stored voxels per original voxel."""
    return float(original_spacing) / float(stored_spacing)


def resampled_length(n: int, s: float) -> int:
    """``floor(n * s)`` as torch computes the output size for ``scale_factor=s`` (at least 1)."""
    return max(1, math.floor(float(n) * float(s)))


def resampled_shape(shape: Sequence[int], original_spacing: float,
                    target_spacing: float = DEFAULT_TARGET_SPACING) -> tuple[int, int, int]:
    """The stored shape of an original volume ``shape`` at ``original_spacing``."""
    s = scale_factor(original_spacing, working_spacing(original_spacing, target_spacing))
    return tuple(resampled_length(int(n), s) for n in shape)  # type: ignore[return-value]


def source_positions(n_out: int, s: float) -> np.ndarray:
    """Source (original-grid) coordinate sampled by each of ``n_out`` output voxels: ``(i + 0.5) / s - 0.5``."""
    return (np.arange(n_out, dtype=np.float64) + 0.5) / float(s) - 0.5


def original_to_stored(zyx: np.ndarray | Iterable[float], original_spacing: float,
                       stored_spacing: float) -> np.ndarray:
    """Original voxel coordinates -> stored voxel coordinates (inverse of the sampling map)."""
    s = scale_factor(original_spacing, stored_spacing)
    return (np.asarray(zyx, dtype=float) + 0.5) * s - 0.5


def stored_to_original(zyx: np.ndarray | Iterable[float], original_spacing: float,
                       stored_spacing: float) -> np.ndarray:
    """Stored voxel coordinates -> original voxel coordinates: ``(i + 0.5) / s - 0.5``."""
    s = scale_factor(original_spacing, stored_spacing)
    return (np.asarray(zyx, dtype=float) + 0.5) / s - 0.5


def frame_to_stored(zyx: np.ndarray | Iterable[float], frame_spacing: float, original_spacing: float,
                    stored_spacing: float) -> np.ndarray:
    """Coordinates of a label frame (``Å = voxel x frame_spacing``) -> stored voxel coordinates."""
    original = np.asarray(zyx, dtype=float) * (float(frame_spacing) / float(original_spacing))
    return original_to_stored(original, original_spacing, stored_spacing)


def stored_to_frame(zyx: np.ndarray | Iterable[float], frame_spacing: float, original_spacing: float,
                    stored_spacing: float) -> np.ndarray:
    """Stored voxel coordinates -> a label frame's coordinates (``Å = voxel x frame_spacing``)."""
    original = stored_to_original(zyx, original_spacing, stored_spacing)
    return original * (float(original_spacing) / float(frame_spacing))


__all__ = [
    "DEFAULT_TARGET_SPACING", "frame_to_stored", "original_to_stored", "resampled_length", "resampled_shape",
    "scale_factor", "source_positions", "stored_to_frame", "stored_to_original", "working_spacing",
]

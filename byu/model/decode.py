"""Heatmap -> particle positions: 3-D non-maximum suppression, threshold, back to the original voxel frame.

Peaks are local maxima of a max-pool over a cube around each voxel (separable: three 1-D max-pools), kept when
their value is at least the threshold; a greedy pass then keeps the strongest and drops every peak within ``r``
of a kept one. The cube is by default the largest inside the ball of radius ``r`` (at least the 26 neighbours), so
the ball decides what merges; the ``enclosing`` window (half-width ``ceil(r)``) also suppresses a weaker peak up
to ``sqrt(3) * r`` away along a diagonal, and is kept for the configurations measured with it. ``r`` per class
comes from the model config (:meth:`byu.model.config.ModelConfig.nms_radii_A`; :func:`config_peaks`). Each
survivor is refined to sub-voxel precision by a parabola through the log values of its neighbours along each
axis (exact for a Gaussian peak).

The predictions table (``data/predictions/<run>.csv``) has the columns ``PREDICTION_COLUMNS``: coordinates in
the tomogram's ORIGINAL voxel frame, whose spacing is the ``voxel_spacing`` column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from byu.model.config import ModelConfig
from byu.model.data import Geometry
from byu.predictions import PREDICTION_COLUMNS, empty_predictions, read_predictions, write_predictions  # noqa: F401


def _max_filter(h: torch.Tensor, k: int) -> torch.Tensor:
    """Max over a k x k x k cube (k odd) of a (Z, Y, X) tensor, as three 1-D max-pools."""
    x = h[None, None]
    r = k // 2
    for kernel, pad in (((k, 1, 1), (0, 0, 0, 0, r, r)), ((1, k, 1), (0, 0, r, r, 0, 0)),
                        ((1, 1, k), (r, r, 0, 0, 0, 0))):
        x = F.max_pool3d(F.pad(x, pad, value=float("-inf")), kernel, stride=1)
    return x[0, 0]


def _refine(h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Sub-voxel peak positions: per axis, the vertex of the parabola through the log values at -1, 0, +1.

    Exact for a Gaussian peak; an axis at the border or without curvature keeps the voxel position.
    """
    def logv(ii: torch.Tensor) -> torch.Tensor:
        return torch.log(h[ii[:, 0], ii[:, 1], ii[:, 2]].double().clamp_min(1e-12))

    f0 = logv(idx)
    pos = idx.double().clone()
    for a in range(3):
        lo, hi = idx.clone(), idx.clone()
        lo[:, a] = (lo[:, a] - 1).clamp_min(0)
        hi[:, a] = (hi[:, a] + 1).clamp_max(h.shape[a] - 1)
        fm, fp = logv(lo), logv(hi)
        curv = fm - 2 * f0 + fp
        ok = (idx[:, a] > 0) & (idx[:, a] < h.shape[a] - 1) & (curv < 0)
        step = torch.where(ok, (0.5 * (fm - fp) / torch.where(ok, curv, -1.0)).clamp(-1.0, 1.0), 0.0)
        pos[:, a] += step
    return pos


def find_peaks(heatmap: torch.Tensor | np.ndarray, *, threshold: float, nms_radius: Sequence[float],
               max_peaks: int | None = None, refine: bool = True,
               window: Literal["inscribed", "enclosing"] = "inscribed") -> list[np.ndarray]:
    """Peaks of a (C, Z, Y, X) probability heatmap, per class: (K, 4) arrays ``z, y, x, conf`` (heatmap voxels).

    ``nms_radius[c]`` is in heatmap voxels; at most ``max_peaks`` per class, strongest first (``None``: every peak
    the NMS keeps, which the radius bounds by how many particles fit: a crowded cytoplasm holds hundreds of small
    particles per tomogram). Non-maximum suppression is greedy, strongest first, over a k-d tree of the candidates
    (memory and time grow with the candidates, not their square). Candidates are the
    local maxima over a cube (``window``): ``inscribed`` in the NMS ball (at least the 26 neighbours), so only the
    ball decides which peaks merge; ``enclosing`` the ball, which also drops a weaker peak up to sqrt(3) radii away
    on a diagonal (an apo-ferritin beside a gold bead). Runs on the heatmap's device (a GPU heatmap never comes
    back whole); only the candidate peaks move to the CPU.
    """
    hm = torch.as_tensor(heatmap).float()
    out = []
    for c in range(hm.shape[0]):
        h = hm[c]
        r = max(0.0, float(nms_radius[c]))
        if window == "inscribed":
            k = 2 * max(1, int(math.floor(r / math.sqrt(3.0)))) + 1
        else:
            k = 2 * int(math.ceil(r)) + 1
        pooled = _max_filter(h, k) if k > 1 else h
        mask = (h >= pooled) & (h >= threshold)
        idx = torch.nonzero(mask)
        if not len(idx):
            out.append(np.zeros((0, 4)))
            continue
        conf = h[mask]
        order = torch.argsort(-conf, stable=True)
        if max_peaks is not None:
            order = order[: max_peaks * 8]
        idx, conf = idx[order], conf[order]
        idx_np = idx.cpu().numpy()
        cap = len(idx_np) if max_peaks is None else max_peaks
        keep: list[int] = []
        if len(idx_np) > 1 and r > 0:
            points = idx_np.astype(float)
            tree = cKDTree(points)
            dropped = np.zeros(len(idx_np), dtype=bool)
            for i in range(len(idx_np)):
                if dropped[i]:
                    continue
                keep.append(i)
                if len(keep) >= cap:
                    break
                dropped[tree.query_ball_point(points[i], r)] = True
        else:
            keep = list(range(min(len(idx_np), cap)))
        sel = torch.as_tensor(keep, dtype=torch.long, device=idx.device)
        idx, conf = idx[sel], conf[sel]
        pos = _refine(h, idx) if refine else idx.double()
        out.append(np.column_stack([pos.cpu().numpy(), conf.double().cpu().numpy()]))
    return out


def config_peaks(heatmap: torch.Tensor | np.ndarray, config: ModelConfig, *, threshold: float,
                 stride: int | None = None) -> list[np.ndarray]:
    """:func:`find_peaks` with a model config's NMS distance per class, peak window and ``max_peaks``; ``stride``:
    heatmap voxels per input voxel (default the config's)."""
    spacing = config.spacing * (config.stride if stride is None else stride)
    return find_peaks(heatmap, threshold=threshold, nms_radius=[r / spacing for r in config.nms_radii_A()],
                      max_peaks=config.max_peaks, window=config.peak_window)


def peaks_to_frame(peaks: list[np.ndarray], *, geometry: Geometry, stride: int, class_names: Sequence[str],
                   models: str) -> pd.DataFrame:
    """Heatmap peaks of one tomogram -> prediction rows in its original voxel frame (clipped into the volume)."""
    rows = []
    hi = np.asarray(geometry.original_shape, dtype=float) - 1.0
    for c, arr in enumerate(peaks):
        if not len(arr):
            continue
        net = (arr[:, :3] + 0.5) * stride - 0.5
        orig = np.clip(geometry.from_net(net, geometry.original_spacing), 0.0, hi)
        for (z, y, x), conf in zip(orig, arr[:, 3], strict=True):
            rows.append({"tomo_id": geometry.tomo_id, "particle": class_names[c], "z": float(z), "y": float(y),
                         "x": float(x), "conf": float(conf), "models": models,
                         "voxel_spacing": geometry.original_spacing})
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)



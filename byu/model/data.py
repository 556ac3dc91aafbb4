"""Volumes at the network's spacing, particle coordinates in that frame, patches and heatmap targets.

Frames. A label row's coordinates are voxels at the row's ``voxel_spacing`` (Å = voxel x spacing, the same
physical position as the original volume's ``Å = original voxel x original spacing``); the stack on disk is at
``meta.voxel_spacing`` ("stored"); the network sees the stack resampled to ``config.spacing`` ("net").

- frame -> original voxels: ``coord x spacing / original_spacing``;
- original <-> stored: the preprocessing's resampling grid, :func:`byu.tomo.grid.original_to_stored` /
  :func:`~byu.tomo.grid.stored_to_original` (``stored = (original + 0.5) * s - 0.5``, ``s = original / stored
  spacing``; the identity for MRC sources, whose stored grid is the original one);
- stored <-> net: the exact mapping of the resampling, with voxel centres aligned as in area/trilinear
  resampling (``align_corners=False``): ``stored = (net + 0.5) * ratio - 0.5`` per axis.

A heatmap at stride ``s`` relates to the net input the same way (``net = (h + 0.5) * s - 0.5``), so the whole
chain is invertible exactly.

Tomograms are read lazily: from the JPEG slice stack (``tomograms/<id>/``) chunk by chunk along Z, or from
``tomograms/<id>.mrc`` through a memory map; resampled volumes are kept in a byte-bounded LRU cache.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.transforms import (
    Compose,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from byu.errors import InputError, NotFoundError
from byu.model.config import ModelConfig
from byu.paths import DataRoot, check_id
from byu.tomo.grid import frame_to_stored, stored_to_frame
from byu.tomo.io import META_NAME, read_meta, read_slice
from byu.tomo.preprocess import MrcSource

CLIP_SIGMAS = 6.0  # normalized intensities are clipped to +-this
Z_CHUNK = 32  # stored slices read at a time
READ_WORKERS = min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class Geometry:
    """Shapes, spacings and the frame mapping of one tomogram (no voxels)."""

    tomo_id: str
    stored_shape: tuple[int, int, int]
    stored_spacing: float
    original_shape: tuple[int, int, int]
    original_spacing: float
    net_spacing: float
    net_shape: tuple[int, int, int]
    ratio: tuple[float, float, float]  # stored voxels per net voxel, per axis
    pool: int  # integer pooling factor used for resampling (0: interpolation)

    def to_stored(self, zyx: np.ndarray | Sequence[float], spacing: float) -> np.ndarray:
        """Voxel coordinates at ``spacing`` (any frame of this tomogram) -> stored voxel coordinates (N, 3),
        through the resampling grid (:func:`byu.tomo.grid.frame_to_stored`)."""
        zyx = np.asarray(zyx, dtype=float).reshape(-1, 3)
        return frame_to_stored(zyx, float(spacing), self.original_spacing, self.stored_spacing)

    def from_stored(self, zyx: np.ndarray | Sequence[float], spacing: float) -> np.ndarray:
        """Stored voxel coordinates -> voxel coordinates at ``spacing`` (:func:`byu.tomo.grid.stored_to_frame`)."""
        zyx = np.asarray(zyx, dtype=float).reshape(-1, 3)
        return stored_to_frame(zyx, float(spacing), self.original_spacing, self.stored_spacing)

    def to_net(self, zyx: np.ndarray | Sequence[float], spacing: float) -> np.ndarray:
        """Voxel coordinates at ``spacing`` (any frame of this tomogram) -> net voxel coordinates."""
        return (self.to_stored(zyx, spacing) + 0.5) / np.asarray(self.ratio) - 0.5

    def from_net(self, zyx: np.ndarray | Sequence[float], spacing: float) -> np.ndarray:
        """Net voxel coordinates -> voxel coordinates at ``spacing`` (e.g. the original frame)."""
        stored = (np.asarray(zyx, dtype=float).reshape(-1, 3) + 0.5) * np.asarray(self.ratio) - 0.5
        return self.from_stored(stored, spacing)


def geometry_for(tomo_id: str, stored_shape: Sequence[int], stored_spacing: float, original_shape: Sequence[int],
                 original_spacing: float, net_spacing: float) -> Geometry:
    """The net grid for a stack: integer average pooling when the spacings allow it, else interpolation."""
    factor = float(net_spacing) / float(stored_spacing)
    k = round(factor)
    if k >= 1 and abs(factor - k) < 1e-6:
        nz, ny, nx = (max(1, math.ceil(n / k)) for n in stored_shape)
        pool = int(k)
    else:
        nz, ny, nx = (max(1, int(round(n / factor))) for n in stored_shape)
        pool = 0
    net_shape = (nz, ny, nx)
    sz, sy, sx = (int(v) for v in stored_shape)
    oz, oy, ox = (int(v) for v in original_shape)
    ratio = (float(k),) * 3 if pool else (sz / nz, sy / ny, sx / nx)
    return Geometry(tomo_id=tomo_id, stored_shape=(sz, sy, sx),
                    stored_spacing=float(stored_spacing), original_shape=(oz, oy, ox),
                    original_spacing=float(original_spacing), net_spacing=float(net_spacing),
                    net_shape=net_shape, ratio=ratio, pool=pool)


# ----------------------------------------------------------------------------------------------------------------
# reading


def find_tomogram(data_root: DataRoot, tomo_id: str) -> Path:
    """``tomograms/<id>/`` (slice stack) or ``tomograms/<id>.mrc``; NotFoundError names what was looked for."""
    check_id(tomo_id)
    stack = data_root.tomograms / tomo_id
    if (stack / META_NAME).exists():
        return stack
    mrc = data_root.tomograms / f"{tomo_id}.mrc"
    if mrc.exists():
        return mrc
    raise NotFoundError(f"tomogram {tomo_id!r} is not on disk: neither {stack}/{META_NAME} nor {mrc} exists")


def read_geometry(path: Path, net_spacing: float) -> Geometry:
    """Geometry of a slice stack (from meta.json) or an MRC file (from its header)."""
    if path.suffix == ".mrc":
        with MrcSource(path) as src:  # validates the header and the data size; errors name the file
            shape, spacing = src.shape, float(src.voxel_spacing or 0.0)
        if not spacing > 0:
            raise InputError(f"expected a 3-D volume with a positive voxel size, got shape {shape}, "
                             f"voxel size {spacing}", file=path)
        return geometry_for(path.stem, shape, spacing, shape, spacing, net_spacing)
    meta = read_meta(path)
    return geometry_for(meta.tomo_id, meta.shape, meta.voxel_spacing, meta.original_shape, meta.original_spacing,
                        net_spacing)


def read_stored(source: Path | np.ndarray, z0: int, z1: int) -> np.ndarray:
    """Stored slices ``z0:z1`` (uint8 for stacks, the file's dtype for MRC; arrays are sliced)."""
    if isinstance(source, np.ndarray):
        return source[z0:z1]
    if source.suffix == ".mrc":
        with MrcSource(source) as src:
            return np.asarray(src.read(z0, z1), dtype=np.float32)
    zs = list(range(z0, z1))
    first = read_slice(source, zs[0])
    out = np.empty((len(zs), *first.shape), dtype=np.uint8)
    out[0] = first
    if len(zs) > 1:  # JPEG decoding releases the GIL: decode slices in parallel
        with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
            for i, img in enumerate(pool.map(lambda z: read_slice(source, z), zs[1:]), start=1):
                out[i] = img
    return out


def load_volume(source: Path | np.ndarray, geometry: Geometry, *,
                device: str | torch.device | None = None) -> torch.Tensor:
    """The tomogram resampled to the net grid and normalized: a float16 tensor (Z, Y, X) on ``device``.

    ``source``: a slice-stack directory, an MRC file or a stored-frame array. With an integer pooling factor the
    stack is read and pooled ``Z_CHUNK`` slices at a time (memory: the output plus one chunk; on a GPU the
    pooling and normalization run there); otherwise the whole stack is interpolated at once.
    """
    g = geometry
    dev = torch.device(device) if device is not None else torch.device("cpu")
    nz = g.stored_shape[0]
    if g.pool >= 1:
        k = g.pool
        out = torch.empty(g.net_shape, dtype=torch.float32, device=dev)
        step = max(k, (Z_CHUNK // k) * k)
        for z0 in range(0, nz, step):
            block = torch.from_numpy(np.ascontiguousarray(read_stored(source, z0, min(nz, z0 + step))))
            block = block.to(dev, non_blocking=True).float()
            if k > 1:
                pad = [(-n) % k for n in block.shape]
                if any(pad):  # replicate the last slice/row/column up to a multiple of k
                    block = F.pad(block[None, None], (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")[0, 0]
                block = F.avg_pool3d(block[None, None], k)[0, 0]
            out[z0 // k: z0 // k + block.shape[0]] = block
    else:
        vol = torch.from_numpy(np.ascontiguousarray(read_stored(source, 0, nz))).to(dev).float()[None, None]
        down = g.net_spacing > g.stored_spacing
        out = F.interpolate(vol, size=g.net_shape, mode="area" if down else "trilinear",
                            align_corners=None if down else False)[0, 0]
    return normalize(out)


def normalize(vol: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std (statistics of the central 0.5–99.5 percentile range), clipped, as float16."""
    flat = vol.reshape(-1)
    sample = flat[:: max(1, flat.numel() // 2_000_000)].float()
    lo, hi = torch.quantile(sample, torch.tensor([0.005, 0.995], device=sample.device))
    inner = sample[(sample >= lo) & (sample <= hi)]
    inner = inner if inner.numel() else sample
    mean, std = float(inner.mean()), float(inner.std()) if inner.numel() > 1 else 1.0
    std = std if std > 1e-6 else 1.0
    out = vol.float().sub_(mean).div_(std).clamp_(-CLIP_SIGMAS, CLIP_SIGMAS)
    return out.to(torch.float16)


class VolumeCache:
    """Net-grid volumes of a data root's tomograms, loaded on first use and evicted least-recently-used."""

    def __init__(self, data_root: DataRoot | str | Path, net_spacing: float, *, max_bytes: float = 8e9) -> None:
        self.root = data_root if isinstance(data_root, DataRoot) else DataRoot.from_env(data_root)
        self.net_spacing = float(net_spacing)
        self.max_bytes = max_bytes
        self._geometry: dict[str, Geometry] = {}
        self._paths: dict[str, Path] = {}
        self._volumes: OrderedDict[str, np.ndarray] = OrderedDict()

    def path(self, tomo_id: str) -> Path:
        if tomo_id not in self._paths:
            self._paths[tomo_id] = find_tomogram(self.root, tomo_id)
        return self._paths[tomo_id]

    def geometry(self, tomo_id: str) -> Geometry:
        if tomo_id not in self._geometry:
            self._geometry[tomo_id] = read_geometry(self.path(tomo_id), self.net_spacing)
        return self._geometry[tomo_id]

    def get(self, tomo_id: str) -> np.ndarray:
        """The normalized net-grid volume (float16 array), loaded on first use."""
        if tomo_id in self._volumes:
            self._volumes.move_to_end(tomo_id)
            return self._volumes[tomo_id]
        vol = load_volume(self.path(tomo_id), self.geometry(tomo_id)).numpy()
        self._volumes[tomo_id] = vol
        while len(self._volumes) > 1 and sum(v.nbytes for v in self._volumes.values()) > self.max_bytes:
            self._volumes.popitem(last=False)
        return vol

    def check(self, tomo_ids: Sequence[str]) -> None:
        """Raise one NotFoundError listing every tomogram that is not on disk."""
        missing = []
        for t in tomo_ids:
            try:
                self.path(t)
            except NotFoundError:
                missing.append(t)
        if missing:
            raise NotFoundError(f"{len(missing)} tomogram(s) not on disk under {self.root.tomograms}: "
                                f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")


# ----------------------------------------------------------------------------------------------------------------
# particles


def particles_from_labels(labels: Any, class_names: Sequence[str]) -> pd.DataFrame:
    """Long particle table ``tomo_id, particle, z, y, x, voxel_spacing`` from a label version (LabelSet), a canonical
    table or a picks table.

    A LabelSet gives each pick its tomogram's frame spacing; a canonical table (one row per tomogram) gives class
    ``motor``; a picks table (``tomo_id, particle, z, y, x[, voxel_spacing]``) keeps its classes (without
    ``voxel_spacing`` the coordinates are Å: spacing 1.0, as the metrics read them). Every particle's class must be
    one of ``class_names``.
    """
    from byu.labels.model import LabelSet
    from byu.labels.table import motor_points

    if isinstance(labels, LabelSet):
        pts = labels.picks.loc[:, ["tomo_id", "particle", "z", "y", "x"]].copy()
        pts["voxel_spacing"] = pts["tomo_id"].map(labels.spacing_of()).astype(float)
    elif "motor_zyx" in labels.columns:
        pts = motor_points(labels)
    else:
        pts = labels.copy()
        if "voxel_spacing" not in pts.columns:
            pts["voxel_spacing"] = 1.0
    pts = pts.loc[:, ["tomo_id", "particle", "z", "y", "x", "voxel_spacing"]].reset_index(drop=True)
    unknown = sorted(set(pts["particle"]) - set(class_names))
    if unknown:
        raise InputError(f"label classes {unknown} are not among the model's classes {list(class_names)}",
                         field="particle")
    return pts


def net_points(points: pd.DataFrame, geometry: Geometry, class_names: Sequence[str]) -> np.ndarray:
    """(K, 4) array ``class_index, z, y, x`` of one tomogram's particles in net voxels."""
    if not len(points):
        return np.zeros((0, 4))
    spacing = points["voxel_spacing"].fillna(geometry.original_spacing).to_numpy(dtype=float)
    zyx = points[["z", "y", "x"]].to_numpy(dtype=float)
    net = np.vstack([geometry.to_net(p, s) for p, s in zip(zyx, spacing, strict=True)])
    cls = np.array([list(class_names).index(c) for c in points["particle"]], dtype=float)
    return np.column_stack([cls, net])


# ----------------------------------------------------------------------------------------------------------------
# targets and patches


def heatmap_target(points: np.ndarray, *, offset: Sequence[int], patch_size: Sequence[int], stride: int,
                   sigmas: Sequence[float], n_classes: int) -> np.ndarray:
    """Gaussian heatmap (C, P/s...) for particles ``points`` (K, 4: class, z, y, x in net voxels).

    Heatmap voxel ``h`` of a patch at net ``offset`` is centred at ``offset + (h + 0.5) * s - 0.5``; the value is
    the maximum over particles of ``exp(-d^2 / 2 sigma^2)`` (``sigmas`` per class, in net voxels).
    """
    shape = [p // stride for p in patch_size]
    out = np.zeros((n_classes, *shape), dtype=np.float32)
    axes = [np.asarray(offset[a]) + (np.arange(shape[a]) + 0.5) * stride - 0.5 for a in range(3)]
    for c, z, y, x in points:
        c = int(c)
        sig = float(sigmas[c])
        reach = 3.0 * sig
        sl = []
        for a, p in enumerate((z, y, x)):
            lo = int(np.searchsorted(axes[a], p - reach))
            hi = int(np.searchsorted(axes[a], p + reach, side="right"))
            sl.append(slice(lo, hi))
        if any(s.stop <= s.start for s in sl):
            continue
        dz = (axes[0][sl[0]] - z)[:, None, None]
        dy = (axes[1][sl[1]] - y)[None, :, None]
        dx = (axes[2][sl[2]] - x)[None, None, :]
        g = np.exp(-(dz * dz + dy * dy + dx * dx) / (2.0 * sig * sig)).astype(np.float32)
        region = out[c, sl[0], sl[1], sl[2]]
        np.maximum(region, g, out=region)
    return out


def crop(vol: np.ndarray, offset: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """``vol[offset : offset + size]`` as float32, zero (the normalized mean) outside the volume."""
    out = np.zeros(tuple(size), dtype=np.float32)
    src, dst = [], []
    for o, s, n in zip(offset, size, vol.shape, strict=True):
        lo, hi = max(0, o), min(n, o + s)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - o, hi - o))
    out[tuple(dst)] = vol[tuple(src)]
    return out


def augmentation(config: ModelConfig) -> Compose:
    """MONAI transforms on ``{"image", "target"}``: flips, in-plane 90° rotations, intensity jitter, noise."""
    both = ["image", "target"]
    ts: list = []
    if config.flips:
        ts += [RandFlipd(both, prob=0.5, spatial_axis=a) for a in range(3)]
    if config.rot90:
        ts.append(RandRotate90d(both, prob=0.75, max_k=3, spatial_axes=(1, 2)))
    if config.intensity > 0:
        ts += [RandScaleIntensityd("image", factors=config.intensity, prob=0.8),
               RandShiftIntensityd("image", offsets=config.intensity, prob=0.8)]
    if config.noise > 0:
        ts.append(RandGaussianNoised("image", prob=0.5, std=config.noise))
    return Compose(ts)


class PatchSampler:
    """Random training patches: a share ``pos_fraction`` placed so a particle falls inside, the rest anywhere.

    Patch offsets are multiples of the heatmap stride, as sliding-window positions are at inference, so the
    heatmap grid sits the same way in training and prediction.
    """

    def __init__(self, cache: VolumeCache, tomo_ids: Sequence[str], particles: pd.DataFrame,
                 config: ModelConfig) -> None:
        if not tomo_ids:
            raise InputError("no training tomograms", field="train")
        self.cache = cache
        self.config = config
        self.tomo_ids = list(tomo_ids)
        names = config.class_names
        self.points = {t: net_points(particles[particles["tomo_id"] == t], cache.geometry(t), names)
                       for t in self.tomo_ids}
        self.index = [(t, i) for t in self.tomo_ids for i in range(len(self.points[t]))]
        self.sigmas = [max(c.radius * config.sigma / config.spacing, config.min_sigma * config.stride)
                       for c in config.classes]
        self.transform = augmentation(config)
        self.hard: dict[str, np.ndarray] = {}  # tomo_id -> (K, 3) net coordinates of hard negatives
        self._hard_index: list[tuple[str, int]] = []

    @property
    def hard_count(self) -> int:
        return len(self._hard_index)

    def set_hard_negatives(self, hard: dict[str, np.ndarray]) -> None:
        """Centres (net voxels) of look-alikes to oversample with ``config.hard_fraction``."""
        self.hard = {t: np.asarray(v, dtype=float).reshape(-1, 3) for t, v in hard.items()}
        self._hard_index = [(t, i) for t, v in self.hard.items() for i in range(len(v))]

    def _offset(self, rng: np.random.Generator, shape: Sequence[int], centre: np.ndarray | None) -> list[int]:
        s = self.config.stride
        out = []
        for a, (n, p) in enumerate(zip(shape, self.config.patch_size, strict=True)):
            if centre is None:
                lo, hi = 0, max(0, n - p)
            else:
                margin = p // 6
                lo = int(np.floor(centre[a] - (p - margin)))
                hi = int(np.ceil(centre[a] - margin))
                if n >= p:  # stay inside the volume when it is big enough
                    lo, hi = max(lo, 0), min(hi, n - p)
                    lo, hi = min(lo, hi), max(lo, hi)
            o = int(rng.integers(lo, hi + 1))
            out.append(int(np.floor(o / s) * s))
        return out

    def sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One augmented patch: ``image`` (1, P...) and ``target`` (C, P/s...)."""
        cfg = self.config
        r = rng.random()
        if self.index and r < cfg.pos_fraction:
            t, i = self.index[int(rng.integers(len(self.index)))]
            centre = self.points[t][i, 1:]
        elif self._hard_index and r < cfg.pos_fraction + cfg.hard_fraction:
            t, i = self._hard_index[int(rng.integers(len(self._hard_index)))]
            centre = self.hard[t][i]
        else:
            t, centre = self.tomo_ids[int(rng.integers(len(self.tomo_ids)))], None
        vol = self.cache.get(t)
        offset = self._offset(rng, vol.shape, centre)
        image = crop(vol, offset, cfg.patch_size)[None]
        target = heatmap_target(self.points[t], offset=offset, patch_size=cfg.patch_size, stride=cfg.stride,
                                sigmas=self.sigmas, n_classes=len(cfg.classes))
        out = self.transform({"image": image, "target": target})
        return {k: torch.as_tensor(np.ascontiguousarray(np.asarray(out[k])), dtype=torch.float32)
                for k in ("image", "target")}

    def batch(self, rng: np.random.Generator, size: int) -> dict[str, torch.Tensor]:
        items = [self.sample(rng) for _ in range(size)]
        return {k: torch.stack([it[k] for it in items]) for k in ("image", "target")}

    def seed_transforms(self, seed: int) -> None:
        self.transform.set_random_state(seed=int(seed) % (2**32))


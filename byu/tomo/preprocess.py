"""Chunked preprocessing of a raw tomogram (MRC or OME-Zarr) into a stored JPEG slice stack.

Steps, in this order (the same as a whole-volume reference, so the result is exact up to float rounding):

1. **Clip values**: the ``clip_percentiles`` (default 0.879 % / 99.06 %) of the intensities, estimated with
   ``np.percentile`` on a strided sample of at most ``sample_voxels`` voxels taken from evenly spaced Z slices
   (the whole volume when it is smaller than that): no full sort, no full pass.
2. **Clip** each voxel to ``[lo, hi]``.
3. **Resample** to the working spacing ``max(target_spacing, original)`` on the grid of :mod:`byu.tomo.grid`,
   which is the reference pipeline's ``torch.nn.functional.interpolate(x, mode="trilinear",
   scale_factor=s, align_corners=False, recompute_scale_factor=False)`` with ``s = original / working``:
   the output has ``floor(n * s)`` voxels per axis and output index ``i`` samples input position
   ``(i + 0.5) / s - 0.5`` (:func:`~byu.tomo.grid.source_positions`). Trilinear interpolation is separable,
   so Z is interpolated explicitly between the two source slices of each output slice (slabs carry their
   1-slice halo, seams are exact) and Y/X with a bilinear ``interpolate(scale_factor=(s, s),
   recompute_scale_factor=False)`` per slab, the same 2-D rule.
4. **Normalize** to uint8: ``round((v - lo) * 255 / (hi - lo))`` (affine maps commute with interpolation, so it
   is applied after resampling, on the smaller array).
5. Encode ``slice_%04d.jpg`` files with a small thread pool (Pillow releases the GIL) into a temporary
   directory that is renamed into place with ``meta.json`` (and the stack's content digest in it, see
   :mod:`byu.tomo.io`).

Coordinates move between the original and the stored grid with :func:`byu.tomo.grid.original_to_stored` /
:func:`~byu.tomo.grid.stored_to_original` (the same map as step 3); ``resampled_shape``, ``working_spacing`` and
``source_positions`` are re-exported here from :mod:`byu.tomo.grid`.

Memory: the source is read slab by slab with plain ``readinto`` (not an ``mmap``, whose resident pages
would count toward the process RSS), so peak memory is set by ``slab_bytes`` and the slice size, not by the
volume. A corrupt or truncated input raises :class:`~byu.errors.InputError` naming the file, and nothing is
left under ``tomograms/``.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mrcfile
import mrcfile.utils
import numpy as np
from PIL import Image

from byu.errors import InputError
from byu.tomo.grid import (
    DEFAULT_TARGET_SPACING,
    resampled_length,
    resampled_shape,
    scale_factor,
    source_positions,
    working_spacing,
)
from byu.tomo.io import JPEG_QUALITY, ReplaceGuard, TomogramWriter, TomoMeta, slice_path, tomo_dir

DEFAULT_CLIP_PERCENTILES: tuple[float, float] = (0.879, 99.06)
DEFAULT_SAMPLE_VOXELS = 8_000_000
DEFAULT_SAMPLE_SLICES = 64
DEFAULT_SLAB_BYTES = 64 << 20
ZARR_CACHE_BYTES = 256 << 20

__all__ = [
    "ArraySource", "DEFAULT_CLIP_PERCENTILES", "DEFAULT_TARGET_SPACING", "MrcSource", "VolumeSource",
    "ZarrSource", "estimate_clip", "iter_uint8_slabs", "open_volume", "preprocess_tomogram",
    "resampled_shape", "source_positions", "working_spacing",
]


# --------------------------------------------------------------------------------------------------- sources
class VolumeSource:
    """A (Z, Y, X) volume read in Z slabs. ``read`` returns a new float32 array the caller may modify."""

    path: Path | None = None
    shape: tuple[int, int, int]
    voxel_spacing: float | None = None  # Å/voxel from the file's own metadata, when it has one
    format: str = "array"

    def read(self, z0: int, z1: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release file handles."""

    def __enter__(self) -> VolumeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def nbytes_float32(self) -> int:
        z, y, x = self.shape
        return z * y * x * 4


class ArraySource(VolumeSource):
    """An in-memory volume (tests, synthetic data)."""

    format = "array"

    def __init__(self, volume: np.ndarray, *, voxel_spacing: float | None = None) -> None:
        if volume.ndim != 3:
            raise ValueError(f"expected a 3-D (Z, Y, X) volume, got shape {volume.shape}")
        self.volume = volume
        self.shape = tuple(int(s) for s in volume.shape)  # type: ignore[assignment]
        self.voxel_spacing = voxel_spacing

    def read(self, z0: int, z1: int) -> np.ndarray:
        return np.array(self.volume[z0:z1], dtype=np.float32, copy=True)


class MrcSource(VolumeSource):
    """An MRC file: header validated by ``mrcfile`` (``permissive=False``), data read slab by slab."""

    format = "mrc"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with mrcfile.open(self.path, mode="r", permissive=False, header_only=True) as mrc:
                header = mrc.header.copy()
        except FileNotFoundError:
            raise InputError("file not found", file=self.path) from None
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"not a valid MRC file (corrupt header): {exc}", file=self.path) from exc
        try:
            dtype = mrcfile.utils.data_dtype_from_header(header)
        except ValueError as exc:
            raise InputError(f"unsupported MRC mode {int(header.mode)}: {exc}", file=self.path) from exc
        if dtype.kind == "c":
            raise InputError(f"complex MRC data (mode {int(header.mode)}) is not a tomogram", file=self.path)
        axes = (int(header.mapc), int(header.mapr), int(header.maps))
        if axes != (1, 2, 3):
            raise InputError(f"unsupported MRC axis order mapc/mapr/maps={axes} (expected 1,2,3)", file=self.path)
        nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
        if min(nx, ny, nz) < 1:
            raise InputError(f"MRC header gives an empty volume nx,ny,nz={nx},{ny},{nz}", file=self.path)
        self.shape = (nz, ny, nx)
        self.dtype = dtype
        self.offset = 1024 + int(header.nsymbt)
        self.slice_bytes = ny * nx * dtype.itemsize
        expected = self.offset + nz * self.slice_bytes
        actual = self.path.stat().st_size
        if actual < expected:
            raise InputError(
                f"truncated MRC: header says {nz}x{ny}x{nx} {dtype.name} (file of {expected} bytes) "
                f"but the file has {actual} bytes", file=self.path)
        mx, cella_x = int(header.mx), float(header.cella.x)
        self.voxel_spacing = cella_x / mx if mx > 0 and cella_x > 0 else None
        self._raw = _RawSlabs(open(self.path, "rb", buffering=0), self.offset, self.shape, dtype, self.path)

    def read(self, z0: int, z1: int) -> np.ndarray:
        return self._raw.read(z0, z1)

    def close(self) -> None:
        if getattr(self, "_raw", None) is not None:
            self._raw.close()


class _RawSlabs:
    """Z slabs of a raw C-order (Z, Y, X) block at ``offset`` of an open binary file, via ``readinto``."""

    def __init__(self, fh: Any, offset: int, shape: tuple[int, int, int], dtype: np.dtype, name: Path) -> None:
        self.fh, self.offset, self.shape, self.dtype, self.name = fh, offset, shape, np.dtype(dtype), name
        self.slice_bytes = shape[1] * shape[2] * self.dtype.itemsize

    def read(self, z0: int, z1: int) -> np.ndarray:
        raw = np.empty((z1 - z0, self.shape[1], self.shape[2]), dtype=self.dtype)
        self.fh.seek(self.offset + z0 * self.slice_bytes)
        view = memoryview(raw.data).cast("B")
        got = 0
        while got < len(view):
            n = self.fh.readinto(view[got:])
            if not n:
                raise InputError(f"truncated MRC data: slices {z0}..{z1 - 1} could not be read "
                                 f"({got} of {len(view)} bytes)", file=self.name)
            got += n
        if raw.dtype == np.float32 and raw.dtype.isnative:
            return raw
        return raw.astype(np.float32)

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.close()


class ZarrSource(VolumeSource):
    """The full-resolution array of an OME-Zarr (group with ``multiscales``) or a plain Zarr array.

    Zarr decodes whole chunks. When a row of chunks along Z (chunk depth x Y x X) fits ``cache_bytes``, reads
    are served from that cached block, so every chunk is decoded once per pass. When it does not (deep chunks,
    e.g. 256^3 on a 1000x1000 plane), the array is first transcoded chunk by chunk into an unlinked temporary
    raw file in ``spill_dir`` (default: beside the store) and slabs are read from there, so memory stays
    bounded without decoding each chunk once per slab.
    """

    format = "zarr"
    path: Path

    def __init__(self, path: str | Path, *, cache_bytes: int = ZARR_CACHE_BYTES,
                 spill_dir: str | Path | None = None) -> None:
        import zarr

        self.path = Path(path)
        if not self.path.exists():
            raise InputError("file not found", file=self.path)
        try:
            node = zarr.open(str(self.path), mode="r")
            attrs = dict(node.attrs)
            scale = None
            if hasattr(node, "shape"):
                arr = node
            else:
                multiscales = attrs.get("multiscales") or [{}]
                datasets = multiscales[0].get("datasets") or [{"path": "0"}]
                first = datasets[0]
                arr = node[first.get("path", "0")]
                scale = _zarr_scale(multiscales[0], first)
        except InputError:
            raise
        except Exception as exc:  # zarr raises many kinds (KeyError, ValueError, JSON errors...)
            raise InputError(f"not a readable OME-Zarr: {type(exc).__name__}: {exc}", file=self.path) from exc
        if len(arr.shape) != 3:
            raise InputError(f"expected a 3-D array, found shape {arr.shape}", file=self.path)
        if np.dtype(arr.dtype).kind not in "iuf":
            raise InputError(f"unsupported data type {arr.dtype}", file=self.path)
        self.array = arr
        self.shape = tuple(int(s) for s in arr.shape)  # type: ignore[assignment]
        self.voxel_spacing = scale
        chunks = tuple(int(c) for c in (getattr(arr, "chunks", None) or self.shape))
        self.chunks = chunks
        self.chunk_z = chunks[0]
        self.cache_bytes = cache_bytes
        self.spill_dir = Path(spill_dir) if spill_dir is not None else self.path.parent
        self._cache: tuple[int, int, np.ndarray] | None = None
        self._spill: _RawSlabs | None = None

    @property
    def spills(self) -> bool:
        """Whether reads go through a temporary raw copy (a row of chunks does not fit ``cache_bytes``)."""
        return self.chunk_z * self.shape[1] * self.shape[2] * 4 > self.cache_bytes

    def _load(self, region: tuple[slice, ...]) -> np.ndarray:
        try:
            return np.ascontiguousarray(self.array[region], dtype=np.float32)
        except Exception as exc:
            z = region[0]
            raise InputError(f"corrupt OME-Zarr data in slices {z.start}..{z.stop - 1}: {type(exc).__name__}: "
                             f"{exc}", file=self.path) from exc

    def _transcode(self) -> _RawSlabs:
        z_n, y_n, x_n = self.shape
        cz, cy, cx = self.chunks
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        fh = tempfile.TemporaryFile(dir=self.spill_dir, prefix=f".{self.path.name}.", suffix=".f32")
        try:
            fd = fh.fileno()
            os.ftruncate(fd, z_n * y_n * x_n * 4)
            for z0 in range(0, z_n, cz):
                z1 = min(z_n, z0 + cz)
                for y0 in range(0, y_n, cy):
                    y1 = min(y_n, y0 + cy)
                    for x0 in range(0, x_n, cx):
                        x1 = min(x_n, x0 + cx)
                        tile = self._load((slice(z0, z1), slice(y0, y1), slice(x0, x1)))
                        for k in range(z1 - z0):
                            if x0 == 0 and x1 == x_n:  # whole rows: one contiguous write per slice
                                os.pwrite(fd, tile[k].data, ((z0 + k) * y_n + y0) * x_n * 4)
                                continue
                            for j in range(y1 - y0):
                                os.pwrite(fd, tile[k, j].data, (((z0 + k) * y_n + y0 + j) * x_n + x0) * 4)
                        del tile
        except BaseException:
            fh.close()
            raise
        return _RawSlabs(fh, 0, self.shape, np.dtype(np.float32), self.path)

    def read(self, z0: int, z1: int) -> np.ndarray:
        if self.spills:
            if self._spill is None:
                self._spill = self._transcode()
            return self._spill.read(z0, z1)
        if self._cache is not None and self._cache[0] <= z0 and z1 <= self._cache[1]:
            c0, _, block = self._cache
            return block[z0 - c0:z1 - c0].copy()
        cz = self.chunk_z
        b0, b1 = (z0 // cz) * cz, min(self.shape[0], -(-z1 // cz) * cz)
        self._cache = None
        block = self._load((slice(b0, b1), slice(None), slice(None)))
        self._cache = (b0, b1, block)
        return block[z0 - b0:z1 - b0].copy()

    def close(self) -> None:
        self._cache = None
        if self._spill is not None:
            self._spill.close()  # the temporary file was never linked: closing frees it
            self._spill = None


def _zarr_scale(multiscale: Mapping[str, Any], dataset: Mapping[str, Any]) -> float | None:
    unit = None
    for axis in multiscale.get("axes") or []:
        if isinstance(axis, dict) and axis.get("type") == "space":
            unit = axis.get("unit")
    for t in dataset.get("coordinateTransformations") or []:
        if t.get("type") == "scale" and t.get("scale"):
            s = float(t["scale"][-1])
            if unit in ("nanometer", "nm"):
                s *= 10.0
            return s if s > 0 else None
    return None


def open_volume(path: str | Path) -> VolumeSource:
    """Open an MRC file or an OME-Zarr directory (by suffix / being a directory) for slab reading."""
    p = Path(path)
    if p.is_dir() or p.suffix.lower() == ".zarr":
        return ZarrSource(p)
    return MrcSource(p)


# ----------------------------------------------------------------------------------------------- geometry
def _linear_taps(n_out: int, n_in: int, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two input indices and the weight of the second, as torch's linear rule
    computes them for ``scale_factor=s`` (source position clamped at 0, upper neighbour clamped at the end)."""
    src = np.maximum(source_positions(n_out, s), 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = (src - i0).astype(np.float32)
    return i0, i1, w


def _scales(in_shape: tuple[int, int, int], out_shape: tuple[int, int, int] | None,
            scale: float | None) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Output shape and per-axis scale factor: from ``scale`` (the reference rule, ``floor(n * s)``), or from
    ``out_shape`` alone (torch's ``size=`` rule, ``s = n_out / n_in``)."""
    if scale is not None:
        s = float(scale)
        if not 0.0 < s <= 1.0:
            raise ValueError(f"scale must be in (0, 1] (a tomogram is never upsampled), got {scale}")
        shape = tuple(resampled_length(n, s) for n in in_shape)
        if out_shape is not None and tuple(out_shape) != shape:
            raise ValueError(f"out_shape {tuple(out_shape)} is not the resampled shape {shape} of {in_shape} "
                             f"at scale {s}")
        return shape, (s, s, s)  # type: ignore[return-value]
    if out_shape is None:
        raise ValueError("give scale (original / working spacing) or out_shape")
    shape = tuple(int(n) for n in out_shape)
    return shape, tuple(o / i for o, i in zip(shape, in_shape, strict=True))  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ clipping
def estimate_clip(source: VolumeSource, percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES, *,
                  sample_voxels: int = DEFAULT_SAMPLE_VOXELS,
                  sample_slices: int = DEFAULT_SAMPLE_SLICES) -> tuple[float, float]:
    """Clip values at ``percentiles`` (percent) from a strided sample (exact when the volume is small).

    The sample takes up to ``sample_slices`` evenly spaced Z slices and a regular Y/X stride in each, so that
    about ``sample_voxels`` voxels are used; non-finite values are ignored.
    """
    lo_p, hi_p = (float(p) for p in percentiles)
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise InputError(f"clip percentiles must satisfy 0 <= low < high <= 100, got {percentiles}",
                         field="clip_percentiles")
    z, y, x = source.shape
    parts: list[np.ndarray] = []
    if z * y * x <= sample_voxels:
        step_z = max(1, DEFAULT_SLAB_BYTES // max(1, y * x * 4))
        for z0 in range(0, z, step_z):
            parts.append(source.read(z0, min(z, z0 + step_z)).ravel())
    else:
        zs = np.unique(np.linspace(0, z - 1, min(z, sample_slices)).round().astype(int))
        per_slice = max(1, sample_voxels // len(zs))
        stride = max(1, int(math.ceil(math.sqrt(y * x / per_slice))))
        for zi in zs:
            parts.append(np.ascontiguousarray(source.read(int(zi), int(zi) + 1)[0, ::stride, ::stride]).ravel())
    sample = np.concatenate(parts)
    finite = np.isfinite(sample)
    if not finite.all():
        sample = sample[finite]
    if sample.size == 0:
        raise InputError("the volume holds no finite values", file=source.path)
    lo, hi = np.percentile(sample, [lo_p, hi_p])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------------------- the kernel
def iter_uint8_slabs(source: VolumeSource, *, clip: tuple[float, float],
                     out_shape: tuple[int, int, int] | None = None, scale: float | None = None,
                     slab_bytes: int = DEFAULT_SLAB_BYTES) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first output z, uint8 slab)`` of the clipped, resampled, normalized volume, in Z order.

    ``scale`` is the reference's ``scale_factor`` (``original / working`` spacing, see :mod:`byu.tomo.grid`):
    output shape ``floor(n * scale)``, output ``i`` samples input ``(i + 0.5) / scale - 0.5``. Without it,
    ``out_shape`` is used with torch's ``size=`` rule (``scale = n_out / n_in`` per axis; identity when equal).
    """
    import torch  # torch only where a volume is resampled: the command line and the readers start without it
    import torch.nn.functional as F

    lo, hi = float(clip[0]), float(clip[1])
    norm = 255.0 / (hi - lo) if hi > lo else 0.0
    zin, yin, xin = source.shape
    (zout, yout, xout), (sz, sy, sx) = _scales(source.shape, out_shape, scale)
    i0, i1, w = _linear_taps(zout, zin, sz)
    same_z = zout == zin and sz == 1.0
    same_yx = (yout, xout) == (yin, xin) and sy == sx == 1.0
    slices_per_slab = max(1, slab_bytes // max(1, yin * xin * 4))
    j0 = 0
    while j0 < zout:
        # grow the output chunk while its input span (halo included) fits the slab budget
        j1 = j0 + 1
        while j1 < zout and int(i1[j1]) + 1 - int(i0[j0]) <= slices_per_slab:
            j1 += 1
        a, b = (j0, j1) if same_z else (int(i0[j0]), int(i1[j1 - 1]) + 1)
        slab = torch.from_numpy(source.read(a, b))
        slab.clamp_(lo, hi)
        if same_z:
            zi = slab
        else:
            zi = torch.empty((j1 - j0, yin, xin), dtype=torch.float32)
            for k, j in enumerate(range(j0, j1)):  # one lerp per output slice (scalar weight: fast path)
                torch.lerp(slab[int(i0[j]) - a], slab[int(i1[j]) - a], float(w[j]), out=zi[k])
        del slab
        if not same_yx:
            if scale is not None:  # the reference's rule: scale_factor, not a size
                zi = F.interpolate(zi.unsqueeze(0), scale_factor=(sy, sx), mode="bilinear", align_corners=False,
                                   recompute_scale_factor=False)[0]
            else:
                zi = F.interpolate(zi.unsqueeze(0), size=(yout, xout), mode="bilinear", align_corners=False)[0]
        zi.nan_to_num_(nan=lo)  # NaN input voxels (and what interpolation spreads them to) become black
        out = zi.sub_(lo).mul_(norm).round_().clamp_(0.0, 255.0).to(torch.uint8).numpy()
        yield j0, out
        j0 = j1


# ------------------------------------------------------------------------------------------------- driver
def _save_jpeg(image: np.ndarray, path: Path, quality: int) -> None:
    Image.fromarray(image).save(path, quality=quality)


def preprocess_tomogram(
    source_path: str | Path,
    tomograms_dir: str | Path,
    *,
    tomo_id: str,
    original_spacing: float | None = None,
    target_spacing: float = DEFAULT_TARGET_SPACING,
    clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES,
    sample_voxels: int = DEFAULT_SAMPLE_VOXELS,
    slab_bytes: int = DEFAULT_SLAB_BYTES,
    jpeg_workers: int | None = None,
    torch_threads: int = 1,
    jpeg_quality: int = JPEG_QUALITY,
    source: Mapping[str, Any] | None = None,
    sha256: str | None = None,
    guard: ReplaceGuard | None = None,
) -> TomoMeta:
    """Preprocess one raw tomogram into ``<tomograms_dir>/<tomo_id>/slice_%04d.jpg`` + ``meta.json``.

    ``original_spacing`` (Å/voxel) defaults to the file's own header/metadata; ``source`` (portal ids, ...)
    and ``sha256`` (of the download) go into ``meta.json``. The input is validated before anything is
    written; on any error the temporary stack is removed and an existing tomogram of that id is kept.
    Returns the :class:`~byu.tomo.io.TomoMeta` written (its ``content_sha256`` included). ``guard`` is asked
    before other content replaces a stored tomogram of that id (:class:`~byu.tomo.io.TomogramWriter`): the ingests
    refuse to replace what a label version pins.

    Threads: the kernel runs in this thread with ``torch_threads`` intra-op threads (default 1: on a small
    machine OpenMP workers fight the JPEG encoders and run 3x slower), while ``jpeg_workers`` threads
    (default: CPUs - 1) encode the previous slab. ``torch.set_num_threads`` is process-wide; it is restored
    on return.
    """
    import torch

    final = tomo_dir(tomograms_dir, tomo_id)
    workers = jpeg_workers if jpeg_workers is not None else default_jpeg_workers()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, torch_threads))
    try:
        return _preprocess(source_path, final, tomo_id=tomo_id, original_spacing=original_spacing,
                           target_spacing=target_spacing, clip_percentiles=clip_percentiles,
                           sample_voxels=sample_voxels, slab_bytes=slab_bytes, jpeg_workers=workers,
                           jpeg_quality=jpeg_quality, source=source, sha256=sha256, guard=guard)
    finally:
        torch.set_num_threads(previous_threads)


def _preprocess(source_path: str | Path, final: Path, *, tomo_id: str, original_spacing: float | None,
                target_spacing: float, clip_percentiles: tuple[float, float], sample_voxels: int,
                slab_bytes: int, jpeg_workers: int, jpeg_quality: int, source: Mapping[str, Any] | None,
                sha256: str | None, guard: ReplaceGuard | None) -> TomoMeta:
    with open_volume(source_path) as src:
        spacing = float(original_spacing) if original_spacing else src.voxel_spacing
        if not spacing or spacing <= 0 or not math.isfinite(spacing):
            raise InputError("voxel spacing unknown (header has none): pass original_spacing",
                             file=source_path, field="voxel_spacing")
        out_spacing = working_spacing(spacing, target_spacing)
        out_shape = resampled_shape(src.shape, spacing, target_spacing)
        s = scale_factor(spacing, out_spacing)
        lo, hi = estimate_clip(src, clip_percentiles, sample_voxels=sample_voxels)
        meta = TomoMeta(
            tomo_id=tomo_id, shape=out_shape, voxel_spacing=out_spacing, original_shape=src.shape,
            original_spacing=spacing, clip=(lo, hi), clip_percentiles=(clip_percentiles[0], clip_percentiles[1]),
            source={"file": Path(source_path).name, "format": src.format, **dict(source or {})},
            sha256=sha256,
        )
        with TomogramWriter(final, guard=guard) as writer, ThreadPoolExecutor(max_workers=max(1, jpeg_workers)) as pool:
            pending: deque[list[Future[None]]] = deque()
            written = 0
            try:
                for z0, block in iter_uint8_slabs(src, clip=(lo, hi), out_shape=out_shape, scale=s,
                                                 slab_bytes=slab_bytes):
                    pending.append([pool.submit(_save_jpeg, block[k], slice_path(writer.tmp, z0 + k), jpeg_quality)
                                    for k in range(block.shape[0])])
                    written = z0 + block.shape[0]
                    while len(pending) > 2:  # bound the slabs waiting for the encoder
                        for f in pending.popleft():
                            f.result()
                while pending:
                    for f in pending.popleft():
                        f.result()
            except BaseException:
                for batch in pending:
                    for f in batch:
                        f.cancel()
                raise
            writer.n = written
            writer.commit(meta)
    assert writer.committed is not None
    return writer.committed


def default_jpeg_workers() -> int:
    """Encoder threads: the CPUs this process may use, minus the one running the kernel (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)

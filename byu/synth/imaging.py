"""Imaging: what the microscope and the reconstruction do to a density volume, then uint8 by percentile clipping.

One pipeline for every world, all in Fourier space (one forward FFT of the density per volume):

- missing wedge: a tilt series about Y spanning ±``tilt_deg`` never measured the frequencies closer to kz than
  that (:func:`wedge`, soft edge of a few degrees);
- resolution: a Gaussian low-pass (σ 0.7 voxel) of the structure (:func:`lowpass`);
- the crowded world only: a phase-flipped CTF band-pass (:func:`ctf`): ``|sqrt(1 - A²) sin χ + A cos χ|`` with
  ``χ(k) = π λ Δf k² − π/2 Cs λ³ k⁴`` (defocus ``Δf`` underfocus, Å; amplitude contrast ``A``; electron wavelength
  ``λ`` at the voltage; spherical aberration ``Cs``), times an envelope ``exp(−B k² / 4)``; the absolute value is
  the phase flipping a tomogram's reconstruction applies, so what is left is the CTF's amplitude: low frequencies
  strongly damped, a pass band, zeros beyond;
- correlated noise drawn directly in Fourier space (complex Gaussian shaped by the same wedge and a wider blur,
  σ 1.1 voxel), plus a little white detector-like grain (0.12 of the correlated noise's level);
- percentile clipping to uint8 (:data:`CLIP_PERCENTILES`: 0.879 / 99.06).

Noise level. The default worlds give it as ``noise``: the std of the correlated noise relative to a particle
density of 1 (:func:`image`). The crowded world gives a target SNR (:func:`image_snr`), defined as

    SNR = var(filtered signal) / var(noise),

the signal after all of the filtering above (wedge, CTF, low-pass) over the voxels of the volume (the crowded world
leaves out those within three bead radii of a gold bead: a few very dense beads would otherwise dominate the
signal's variance, and the percentile clip removes them anyway), the noise as added (correlated + grain) over every
voxel; the noise is scaled so that this ratio is the target exactly (the measured value is returned). Under that
definition the correlation of a noisy volume with its noise-free signal is about ``sqrt(SNR / (1 + SNR))``
(clipping to uint8 and JPEG take a little off).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from byu.synth.shapes import step

CLIP_PERCENTILES = (0.879, 99.06)
NOISE_BLUR_VOX = 1.1
SIGNAL_BLUR_VOX = 0.7
GRAIN = 0.12


def freq_grids(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable frequency axes (cycles per voxel) of an ``rfftn`` of ``shape``."""
    kz = scipy.fft.fftfreq(shape[0]).astype(np.float32)[:, None, None]
    ky = scipy.fft.fftfreq(shape[1]).astype(np.float32)[None, :, None]
    kx = scipy.fft.rfftfreq(shape[2]).astype(np.float32)[None, None, :]
    return kz, ky, kx


def wedge(kz: np.ndarray, kx: np.ndarray, *, tilt_deg: float, soft_deg: float = 3.0) -> np.ndarray:
    """Missing wedge of a tilt series about Y spanning ±``tilt_deg``: frequencies closer to kz than that were never
    measured (soft edge of a few degrees)."""
    angle = np.degrees(np.arctan2(np.abs(kz), kx))  # 0 along kx, 90 along kz
    return step(np.float32(tilt_deg) - angle, soft_deg).astype(np.float32)


def lowpass(kz: np.ndarray, ky: np.ndarray, kx: np.ndarray, sigma_vox: float) -> np.ndarray:
    """Fourier transform of a Gaussian blur of ``sigma_vox`` voxels."""
    return np.exp(np.float32(-2 * np.pi**2 * sigma_vox**2) * (kz * kz + ky * ky + kx * kx))


def electron_wavelength_a(voltage_kv: float) -> float:
    """Relativistic electron wavelength (Å) at an acceleration voltage (kV): 0.0197 Å at 300 kV."""
    v = voltage_kv * 1e3
    return 12.2643 / np.sqrt(v * (1.0 + 0.978466e-6 * v))


@dataclass(frozen=True)
class Optics:
    """The microscope of the crowded world (defaults: a 300 kV instrument, cellular-tomography defocus)."""

    defocus_a: float = 45000.0  # underfocus, Å (4.5 µm)
    amplitude_contrast: float = 0.07
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    b_factor: float = 800.0  # envelope exp(-B k² / 4), Å²


def ctf(kz: np.ndarray, ky: np.ndarray, kx: np.ndarray, spacing: float, optics: Optics) -> np.ndarray:
    """The phase-flipped CTF with its envelope on an ``rfftn`` grid of voxel size ``spacing`` Å (module docstring)."""
    k2 = (kz * kz + ky * ky + kx * kx) / np.float32(spacing * spacing)  # 1/Å²
    lam = electron_wavelength_a(optics.voltage_kv)
    cs = optics.cs_mm * 1e7
    chi = np.float32(np.pi * lam * optics.defocus_a) * k2 - np.float32(0.5 * np.pi * cs * lam**3) * k2 * k2
    a = optics.amplitude_contrast
    c = np.abs(np.float32(np.sqrt(1.0 - a * a)) * np.sin(chi) + np.float32(a) * np.cos(chi))
    return (c * np.exp(np.float32(-optics.b_factor / 4.0) * k2)).astype(np.float32)


def rfft_power(h: np.ndarray, nx: int) -> float:
    """Mean of |h|² over the full (Hermitian) spectrum, given its rfft half ``h``."""
    weights = np.full(h.shape[2], 2.0)
    weights[0] = 1.0
    if nx % 2 == 0:
        weights[-1] = 1.0
    total = float(np.sum(np.sum(np.abs(h).astype(np.float64) ** 2, axis=(0, 1)) * weights))
    return total / (h.shape[0] * h.shape[1] * nx)


def to_uint8(vol: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Percentile clip (:data:`CLIP_PERCENTILES`) to uint8, and the clip values used."""
    lo, hi = (float(v) for v in np.percentile(vol, CLIP_PERCENTILES))
    out = np.clip((vol - np.float32(lo)) * np.float32(255.0 / (hi - lo)), 0, 255)
    return np.rint(out).astype(np.uint8), (lo, hi)


def _noise_spectrum(rng: np.random.Generator, shape: tuple[int, int, int], h_noise: np.ndarray,
                    level: float) -> np.ndarray:
    """Complex Gaussian noise shaped by ``h_noise``, scaled to a real-space std of about ``level``."""
    scale = level * np.sqrt(float(np.prod(shape)) / 2.0 / rfft_power(h_noise, shape[2]))
    h = h_noise * np.float32(scale)
    spec = rng.standard_normal(h.shape, dtype=np.float32) * h
    return spec + 1j * rng.standard_normal(h.shape, dtype=np.float32) * h


def image(vol: np.ndarray, rng: np.random.Generator, *, tilt_deg: float,
          noise: float) -> tuple[np.ndarray, tuple[float, float]]:
    """The default worlds' imaging: missing wedge + low-pass + correlated noise of std ``noise`` (relative to a
    particle density of 1) + grain, percentile clip to uint8. ``vol`` is consumed (its FFT replaces it)."""
    shape = vol.shape
    kz, ky, kx = freq_grids(shape)
    w = wedge(kz, kx, tilt_deg=tilt_deg)
    spec = scipy.fft.rfftn(vol, workers=1)
    del vol
    spec *= w * lowpass(kz, ky, kx, SIGNAL_BLUR_VOX)
    h_noise = w * lowpass(kz, ky, kx, NOISE_BLUR_VOX)
    scale = noise * np.sqrt(float(np.prod(shape)) / 2.0 / rfft_power(h_noise, shape[2]))
    h_noise *= np.float32(scale)
    spec += rng.standard_normal(spec.shape, dtype=np.float32) * h_noise
    spec += 1j * rng.standard_normal(spec.shape, dtype=np.float32) * h_noise
    del h_noise
    out = scipy.fft.irfftn(spec, s=shape, workers=1).astype(np.float32, copy=False)
    del spec
    out += rng.standard_normal(shape, dtype=np.float32) * np.float32(GRAIN * noise)  # detector-like grain
    return to_uint8(out)


@dataclass(frozen=True)
class Imaged:
    """What :func:`image_snr` made: the uint8 volume, its clip values, and the variances it set the noise from."""

    volume: np.ndarray
    clip: tuple[float, float]
    signal_var: float
    noise_var: float

    @property
    def snr(self) -> float:
        return self.signal_var / self.noise_var


def filtered_signal(vol: np.ndarray, *, spacing: float, tilt_deg: float, optics: Optics) -> np.ndarray:
    """The noise-free density after wedge, CTF and low-pass, float32 (what :func:`image_snr` adds noise to)."""
    shape = vol.shape
    kz, ky, kx = freq_grids(shape)
    spec = scipy.fft.rfftn(vol, workers=1)
    spec *= wedge(kz, kx, tilt_deg=tilt_deg) * ctf(kz, ky, kx, spacing, optics) * lowpass(kz, ky, kx,
                                                                                         SIGNAL_BLUR_VOX)
    return scipy.fft.irfftn(spec, s=shape, workers=1).astype(np.float32, copy=False)


def image_snr(vol: np.ndarray, rng: np.random.Generator, *, spacing: float, tilt_deg: float, optics: Optics,
              snr: float, signal_mask: np.ndarray | None = None) -> Imaged:
    """The crowded world's imaging: wedge + CTF + low-pass of the density, correlated noise + grain scaled to the
    target ``snr`` (module docstring), percentile clip to uint8. ``signal_mask`` (bool, the volume's shape): the
    voxels whose signal variance counts (default all; the crowded world leaves out those near gold beads)."""
    if not snr > 0:
        raise ValueError("snr must be positive")
    shape = vol.shape
    signal = filtered_signal(vol, spacing=spacing, tilt_deg=tilt_deg, optics=optics)
    kz, ky, kx = freq_grids(shape)
    h_noise = wedge(kz, kx, tilt_deg=tilt_deg) * lowpass(kz, ky, kx, NOISE_BLUR_VOX)
    noise = scipy.fft.irfftn(_noise_spectrum(rng, shape, h_noise, 1.0), s=shape, workers=1).astype(np.float32)
    noise += rng.standard_normal(shape, dtype=np.float32) * np.float32(GRAIN)
    counted = signal if signal_mask is None or not signal_mask.any() else signal[signal_mask]
    signal_var = float(np.var(counted, dtype=np.float64))
    noise_var = float(np.var(noise, dtype=np.float64))
    k = np.sqrt(signal_var / (snr * noise_var)) if signal_var > 0 else 1.0
    noise *= np.float32(k)
    noise_var = float(np.var(noise, dtype=np.float64))  # as added (measured, not assumed)
    signal += noise
    del noise
    u8, clip = to_uint8(signal)
    return Imaged(u8, clip, signal_var, noise_var)

"""Chunked preprocessing: accuracy against a whole-volume reference, bounded slabs, corrupt inputs."""

from __future__ import annotations

import json
import math

import mrcfile
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from byu.errors import InputError
from byu.tomo import grid
from byu.tomo.io import read_meta, read_volume
from byu.tomo.preprocess import (
    ArraySource,
    MrcSource,
    ZarrSource,
    estimate_clip,
    iter_uint8_slabs,
    open_volume,
    preprocess_tomogram,
    resampled_shape,
)
from tests.fakes.portal import write_mrc, write_omezarr

PCT = (0.879, 99.06)


def reference(volume: np.ndarray, spacing: float, target: float = 16.0) -> np.ndarray:
    """The reference pipeline on the whole volume: exact percentiles, clip, ``F.interpolate(trilinear,
    scale_factor=original/working, align_corners=False, recompute_scale_factor=False)``, normalize, round."""
    lo, hi = np.percentile(volume, PCT)
    t = torch.from_numpy(np.clip(volume.astype(np.float64), lo, hi))[None, None]
    s = spacing / max(target, spacing)
    if s != 1.0:
        t = F.interpolate(t, scale_factor=s, mode="trilinear", align_corners=False, recompute_scale_factor=False)
    return ((t[0, 0] - lo) * (255.0 / (hi - lo))).round().clamp(0, 255).to(torch.uint8).numpy()


def textured(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Noise with structure and a heavy tail, like a tomogram."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(size=shape).astype(np.float32)
    z, y, x = np.meshgrid(*(np.linspace(0, 6, n) for n in shape), indexing="ij")
    vol += (2 * np.sin(z + y) * np.cos(x)).astype(np.float32)
    vol[rng.random(shape) < 0.002] += 40.0  # outliers the clip must cut
    return vol


def run(volume: np.ndarray, spacing: float, **kw) -> np.ndarray:
    src = ArraySource(volume, voxel_spacing=spacing)
    clip = estimate_clip(src, PCT, sample_voxels=kw.pop("sample_voxels", 8_000_000))
    shape = resampled_shape(volume.shape, spacing)
    s = grid.scale_factor(spacing, grid.working_spacing(spacing))
    return np.concatenate([b for _, b in iter_uint8_slabs(src, clip=clip, out_shape=shape, scale=s, **kw)])


@pytest.mark.parametrize("spacing", [6.5, 10.0, 13.48, 16.0, 22.0])
def test_matches_whole_volume_reference_within_one_grey_level(spacing):
    vol = textured((45, 70, 83))
    ref = reference(vol, spacing)
    assert ref.shape == resampled_shape(vol.shape, spacing)  # e.g. 70 -> 43 (floor), not 44 (round) at 10 Å
    for slab_bytes in (70 * 83 * 4 * 2, 70 * 83 * 4 * 7, 1 << 30):  # seams at different places, or none
        got = run(vol, spacing, slab_bytes=slab_bytes)
        assert got.shape == ref.shape
        diff = np.abs(got.astype(int) - ref.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


@pytest.mark.parametrize("n, spacing", [(300, 10.0), (299, 10.0), (462, 6.5), (463, 6.5)])
def test_output_shape_is_the_reference_floor_and_matches_interpolate(n, spacing):
    """300 slices at 10 Å give 187 stored slices (floor(187.5)), as the reference does, not 188."""
    s = spacing / 16.0
    assert resampled_shape((n, n + 1, n + 2), spacing, 16.0) == tuple(math.floor(m * s) for m in (n, n + 1, n + 2))
    assert resampled_shape((n, 1, 1), spacing)[0] == {300: 187, 299: 186, 462: 187, 463: 188}[n]
    vol = textured((n, 9, 11), seed=n)
    ref = reference(vol, spacing)
    assert ref.shape == (math.floor(n * s), math.floor(9 * s), math.floor(11 * s))
    got = run(vol, spacing, slab_bytes=9 * 11 * 4 * 40)
    assert got.shape == ref.shape
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize("spacing", [6.5, 10.0, 13.48])
def test_a_bright_point_lands_where_original_to_stored_says(spacing):
    """A bright spot centred on original voxel v is centred on stored voxel ``original_to_stored(v)``.

    The tolerance (0.05 stored voxel) separates it from the plain spacing ratio ``v * s``, which is
    ``(1 - s) / 2`` stored voxel away: 0.30 at 6.5 Å, 0.19 at 10 Å (0.08 at 13.48 Å: too close to tell).
    """
    shape = (70, 80, 90)
    v = np.array([31.0, 40.0, 47.0])
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    sig = 2.5  # original voxels
    vol = 1000.0 * np.exp(-((zz - v[0]) ** 2 + (yy - v[1]) ** 2 + (xx - v[2]) ** 2) / (2 * sig * sig))
    stored_spacing = grid.working_spacing(spacing)
    s = grid.scale_factor(spacing, stored_spacing)
    out = np.concatenate([b for _, b in iter_uint8_slabs(ArraySource(vol.astype(np.float32)), clip=(0.0, 1000.0),
                                                         scale=s, slab_bytes=80 * 90 * 4 * 5)])
    want = grid.original_to_stored(v, spacing, stored_spacing)
    assert out.shape == resampled_shape(shape, spacing)
    peak = np.array(np.unravel_index(int(out.argmax()), out.shape))
    assert np.all(np.abs(peak - want) <= 0.5 + 1e-9), (peak, want)
    w = out.astype(np.float64)
    found = np.array([(g * w).sum() / w.sum() for g in np.meshgrid(*[np.arange(n) for n in out.shape], indexing="ij")])
    np.testing.assert_allclose(found, want, atol=0.05)
    if (1 - s) / 2 > 0.15:  # the convention without the half-voxel terms is off
        assert np.all(np.abs(found - v * s) > 0.1)
    np.testing.assert_allclose(grid.stored_to_original(found, spacing, stored_spacing), v, atol=0.05 / s)


def test_sampled_percentiles_stay_within_one_grey_level():
    vol = textured((64, 160, 160), seed=3)  # 1.6 M voxels, sampled with 200 k
    ref = reference(vol, 10.0)
    got = run(vol, 10.0, sample_voxels=200_000)
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.3  # a slightly different scale: some voxels round the other way


def test_slabs_are_bounded_and_read_in_order(tmp_path):
    vol = textured((60, 64, 64))
    path = tmp_path / "v.mrc"
    write_mrc(path, vol, 10.0)
    reads: list[tuple[int, int]] = []

    class Spy(MrcSource):  # records the slab each read asks for
        def read(self, z0: int, z1: int) -> np.ndarray:
            reads.append((z0, z1))
            return super().read(z0, z1)

    slab_bytes = 64 * 64 * 4 * 6
    with Spy(path) as src:
        shape = resampled_shape(src.shape, 10.0)
        blocks = list(iter_uint8_slabs(src, clip=(-2.0, 2.0), scale=0.625, slab_bytes=slab_bytes))
    assert max(b - a for a, b in reads) <= 6 + 1  # budget, plus at most the 1-slice halo
    last = grid.source_positions(shape[0], 0.625)[-1]  # 57.9: the last output slice needs input slices 57, 58
    assert reads[0][0] == 0 and reads[-1][1] == math.floor(last) + 2 == 59
    assert [z for z, _ in blocks] == sorted(z for z, _ in blocks)
    assert sum(b.shape[0] for _, b in blocks) == shape[0]


def test_preprocess_writes_stack_and_meta(tmp_path):
    vol = textured((30, 48, 40))
    path = tmp_path / "raw" / "v.mrc"
    write_mrc(path, vol, 8.0)
    meta = preprocess_tomogram(path, tmp_path / "tomograms", tomo_id="t1", source={"portal": {"run_id": 7}},
                               sha256="abc")
    d = tmp_path / "tomograms" / "t1"
    assert meta == read_meta(d)
    assert meta.shape == (15, 24, 20) and meta.voxel_spacing == 16.0 and meta.original_spacing == 8.0
    assert meta.original_shape == (30, 48, 40) and meta.sha256 == "abc" and meta.source["portal"]["run_id"] == 7
    assert meta.clip_percentiles == PCT and meta.clip[0] < meta.clip[1]
    stack = read_volume(d)
    assert stack.shape == meta.shape
    # JPEG at quality 95 is close to the exact uint8 result (not identical: lossy)
    assert np.abs(stack.astype(int) - reference(vol, 8.0).astype(int)).mean() < 4
    assert sorted(p.name for p in (tmp_path / "tomograms").iterdir()) == ["t1"]  # no temp dirs left


def test_header_spacing_and_dtypes(tmp_path):
    vol16 = (textured((20, 32, 32)) * 100).astype(np.int16)
    path = tmp_path / "i16.mrc"
    write_mrc(path, vol16, 12.5)
    with open_volume(path) as src:
        assert src.voxel_spacing == pytest.approx(12.5) and src.shape == (20, 32, 32)
        np.testing.assert_array_equal(src.read(3, 9), vol16[3:9].astype(np.float32))
    meta = preprocess_tomogram(path, tmp_path / "tomograms", tomo_id="i16")
    assert meta.original_spacing == pytest.approx(12.5) and meta.shape == resampled_shape((20, 32, 32), 12.5)


def test_zarr_and_mrc_give_the_same_stack(tmp_path):
    vol = textured((26, 40, 36))
    write_mrc(tmp_path / "v.mrc", vol, 10.0)
    write_omezarr(tmp_path / "v.zarr", vol, 10.0, (8, 16, 16))
    a = preprocess_tomogram(tmp_path / "v.mrc", tmp_path / "t", tomo_id="a")
    b = preprocess_tomogram(tmp_path / "v.zarr", tmp_path / "t", tomo_id="b")
    assert a.shape == b.shape and a.clip == b.clip and b.source["format"] == "zarr"
    np.testing.assert_array_equal(read_volume(tmp_path / "t" / "a"), read_volume(tmp_path / "t" / "b"))


@pytest.mark.parametrize("corruption, message", [("header", "corrupt header"), ("truncated", "truncated MRC")])
def test_corrupt_mrc_names_the_file_and_writes_nothing(tmp_path, corruption, message):
    path = tmp_path / "bad.mrc"
    write_mrc(path, textured((20, 32, 32)), 10.0, corrupt=corruption)
    with pytest.raises(InputError, match=message) as err:
        preprocess_tomogram(path, tmp_path / "tomograms", tomo_id="bad")
    assert err.value.file == str(path)
    assert not (tmp_path / "tomograms").exists() or list((tmp_path / "tomograms").iterdir()) == []


def test_truncation_found_while_reading_keeps_the_old_tomogram(tmp_path):
    path = tmp_path / "v.mrc"
    write_mrc(path, textured((40, 32, 32)), 10.0)
    preprocess_tomogram(path, tmp_path / "tomograms", tomo_id="t")
    before = sorted(p.name for p in (tmp_path / "tomograms" / "t").iterdir())
    src = MrcSource(path)
    with open(path, "r+b") as fh:  # the file shrinks after the header check
        fh.truncate(1024 + 32 * 32 * 4 * 20)
    with pytest.raises(InputError, match="truncated MRC data") as err:
        list(iter_uint8_slabs(src, clip=(0.0, 1.0), out_shape=(40, 32, 32)))
    src.close()
    assert err.value.file == str(path)
    with pytest.raises(InputError, match="truncated MRC"):
        preprocess_tomogram(path, tmp_path / "tomograms", tomo_id="t")
    assert sorted(p.name for p in (tmp_path / "tomograms" / "t").iterdir()) == before
    assert [p.name for p in (tmp_path / "tomograms").iterdir()] == ["t"]


def test_corrupt_zarr_names_the_store(tmp_path):
    store = tmp_path / "v.zarr"
    write_omezarr(store, textured((16, 16, 16)), 10.0, (8, 8, 8))
    (store / "0" / ".zarray").write_text("{broken")
    with pytest.raises(InputError, match="not a readable OME-Zarr") as err:
        preprocess_tomogram(store, tmp_path / "tomograms", tomo_id="z")
    assert err.value.file == str(store)
    chunk = next(p for p in (store / "0").rglob("*") if p.is_file() and not p.name.startswith("."))
    (store / "0" / ".zarray").unlink()
    write_omezarr(store, textured((16, 16, 16)), 10.0, (8, 8, 8))
    chunk.write_bytes(b"garbage, not a compressed chunk")
    with pytest.raises(InputError, match="corrupt OME-Zarr data"):
        preprocess_tomogram(store, tmp_path / "tomograms", tomo_id="z")
    assert not (tmp_path / "tomograms").exists() or list((tmp_path / "tomograms").iterdir()) == []


def test_unknown_spacing_and_bad_percentiles_are_input_errors(tmp_path):
    path = tmp_path / "v.mrc"
    with mrcfile.new(path, data=textured((8, 8, 8))) as m:
        m.voxel_size = 0.0
    with pytest.raises(InputError, match="voxel spacing unknown"):
        preprocess_tomogram(path, tmp_path / "t", tomo_id="v")
    with pytest.raises(InputError, match="percentiles"):
        preprocess_tomogram(path, tmp_path / "t", tomo_id="v", original_spacing=10.0, clip_percentiles=(99.0, 1.0))
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == '["v.mrc"]'


def test_deep_zarr_chunks_spill_to_a_temporary_raw_copy(tmp_path):
    vol = textured((30, 36, 44))
    write_omezarr(tmp_path / "v.zarr", vol, 10.0, (16, 16, 16))  # partial tiles on every axis
    shape = resampled_shape(vol.shape, 10.0)
    expected = np.concatenate([b for _, b in iter_uint8_slabs(ArraySource(vol), clip=(-2.0, 2.0), out_shape=shape,
                                                              scale=0.625)])
    with ZarrSource(tmp_path / "v.zarr", cache_bytes=16 * 36 * 44 * 4 - 1, spill_dir=tmp_path / "spill") as src:
        assert src.spills
        np.testing.assert_array_equal(src.read(5, 22), vol[5:22])
        got = np.concatenate([b for _, b in iter_uint8_slabs(src, clip=(-2.0, 2.0), scale=0.625,
                                                             slab_bytes=36 * 44 * 4 * 3)])
        assert list((tmp_path / "spill").iterdir()) == []  # unlinked temporary file
    np.testing.assert_array_equal(got, expected)


def test_nan_voxels_are_ignored_by_the_clip_and_become_black():
    vol = textured((20, 30, 30))
    vol[4, 5, 6] = np.nan
    src = ArraySource(vol)
    lo, hi = estimate_clip(src, PCT)
    assert np.isfinite([lo, hi]).all()
    out = np.concatenate([b for _, b in iter_uint8_slabs(src, clip=(lo, hi), out_shape=vol.shape)])
    assert out[4, 5, 6] == 0
    fixed = np.where(np.isnan(vol), lo, vol)
    same = np.concatenate([b for _, b in iter_uint8_slabs(ArraySource(fixed), clip=(lo, hi), out_shape=vol.shape)])
    np.testing.assert_array_equal(out, same)
    finite = vol[np.isfinite(vol)]
    np.testing.assert_allclose([lo, hi], np.percentile(finite, PCT))

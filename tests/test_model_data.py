"""Frames, resampling, heatmap targets, patches, peak decoding and sliding windows (no training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import byu.model  # noqa: F401, I001  (first: sets OMP_WAIT_POLICY before torch loads)
from byu.errors import InputError, NotFoundError
from byu.model.config import CONFIGS, ModelConfig, resolve_config
from byu.model.data import (
    PatchSampler,
    VolumeCache,
    geometry_for,
    heatmap_target,
    load_volume,
    particles_from_labels,
)
from byu.model.decode import find_peaks, peaks_to_frame, read_predictions, write_predictions
from byu.model.infer import sliding_window_heatmap
from byu.model.net import build_network
from byu.paths import DataRoot
from byu.tomo import grid
from byu.tomo.io import TomoMeta, write_tomogram
from byu.tomo.preprocess import preprocess_tomogram
from tests.fakes.portal import write_mrc
from tests.model_helpers import make_root


def test_geometry_round_trip_integer_and_interpolated():
    g = geometry_for("a", (97, 120, 101), 16.0, (155, 192, 162), 10.0, 32.0)
    assert g.pool == 2 and g.net_shape == (49, 60, 51)
    pts = np.array([[0.0, 0.0, 0.0], [154.0, 191.0, 161.0], [33.3, 44.4, 55.5]])
    np.testing.assert_allclose(g.from_net(g.to_net(pts, 10.0), 10.0), pts, atol=1e-9)
    # stored voxel 0 and 1 pool into net voxel 0, whose centre is stored 0.5 (original 1.1 through the grid)
    centre = grid.stored_to_original([[0.5, 0.5, 0.5]], 10.0, 16.0)
    np.testing.assert_allclose(centre, [[1.1, 1.1, 1.1]])
    np.testing.assert_allclose(g.to_net(centre, 10.0), [[0.0, 0.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(g.to_stored(centre, 10.0), [[0.5, 0.5, 0.5]], atol=1e-12)
    # any frame goes through the original voxels and the resampling grid: Å (spacing 1) and the 16 Å frame
    np.testing.assert_allclose(g.to_net(pts * 10.0, 1.0), g.to_net(pts, 10.0), atol=1e-9)
    np.testing.assert_allclose(g.to_stored(pts * 10.0 / 16.0, 16.0), grid.original_to_stored(pts, 10.0, 16.0),
                               atol=1e-9)
    np.testing.assert_allclose(g.to_net(pts, 10.0), (grid.original_to_stored(pts, 10.0, 16.0) + 0.5) / 2 - 0.5,
                               atol=1e-12)
    np.testing.assert_allclose(g.from_net(g.to_net(pts, 10.0), 1.0), pts * 10.0, atol=1e-9)
    h = geometry_for("b", (100, 150, 150), 19.34, (100, 150, 150), 19.34, 32.0)
    assert h.pool == 0
    np.testing.assert_allclose(h.from_net(h.to_net(pts, 19.34), 19.34), pts, atol=1e-9)
    # physical positions are preserved to within the rounding of the grid size
    a = h.from_net(h.to_net([[50.0, 75.0, 75.0]], 19.34), 32.0) * 32.0
    np.testing.assert_allclose(a, [[50 * 19.34, 75 * 19.34, 75 * 19.34]], rtol=0.02)


@pytest.mark.parametrize("stored_spacing", [16.0, 20.0])
def test_load_volume_puts_a_blob_where_the_frame_mapping_says(tmp_path, stored_spacing):
    shape = (40, 64, 64)
    centre = np.array([17.3, 30.6, 41.2])  # stored voxels
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    blob = np.exp(-((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) / (2 * 3.0**2))
    vol = (blob * 250).astype(np.uint8)
    meta = TomoMeta(tomo_id="b", shape=shape, voxel_spacing=stored_spacing, original_shape=shape,
                    original_spacing=stored_spacing)
    write_tomogram(tmp_path / "tomograms" / "b", vol, meta)
    cache = VolumeCache(tmp_path, 32.0)
    g = cache.geometry("b")
    net = load_volume(cache.path("b"), g).float().numpy()
    assert net.shape == g.net_shape and net.dtype == np.float32
    w = np.clip(net - np.median(net), 0, None)
    grids = np.meshgrid(*[np.arange(n) for n in net.shape], indexing="ij")
    found = np.array([(gr * w).sum() / w.sum() for gr in grids])
    np.testing.assert_allclose(found, g.to_net(centre, stored_spacing)[0], atol=0.15)


@pytest.mark.parametrize("net_spacing", [16.0, 32.0])
def test_a_label_in_the_original_frame_lands_on_its_spot_after_preprocess_and_load(tmp_path, net_spacing):
    """Original MRC at 6.5 Å -> preprocess (16 Å stack) -> net grid: a blob at original voxel v is found at
    ``to_net(v)``. Skipping the resampling grid's half-voxel terms is off by 0.3 stored voxels (0.15-0.3 net)."""
    shape, v, spacing = (72, 90, 100), np.array([33.0, 41.0, 52.0]), 6.5
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    d2 = (zz - v[0]) ** 2 + (yy - v[1]) ** 2 + (xx - v[2]) ** 2
    write_mrc(tmp_path / "raw" / "b.mrc", (100.0 * np.exp(-d2 / (2 * 6.0**2))).astype(np.float32), spacing)
    meta = preprocess_tomogram(tmp_path / "raw" / "b.mrc", tmp_path / "tomograms", tomo_id="b",
                               clip_percentiles=(0.0, 100.0))
    assert meta.shape == grid.resampled_shape(shape, spacing) and meta.voxel_spacing == 16.0
    cache = VolumeCache(tmp_path, net_spacing)
    g = cache.geometry("b")
    net = cache.get("b").astype(np.float32)
    w = np.clip(net - np.median(net), 0, None) ** 2
    found = np.array([(gr * w).sum() / w.sum() for gr in np.meshgrid(*[np.arange(n) for n in net.shape],
                                                                      indexing="ij")])
    want = g.to_net(v, spacing)[0]
    np.testing.assert_allclose(found, want, atol=0.06)
    naive = (v * spacing / 16.0 + 0.5) / g.ratio[0] - 0.5  # the spacing ratio alone, without the grid
    assert np.all(np.abs(found - want) < np.abs(found - naive))
    np.testing.assert_allclose(g.from_net(found, spacing)[0], v, atol=0.06 * g.ratio[0] * 16.0 / spacing)


def test_heatmap_target_width_is_physical():
    cfg = CONFIGS["micro"]
    sig_a = cfg.classes[0].radius * cfg.sigma
    widths = []
    for spacing in (16.0, 32.0):
        sig = sig_a / spacing
        # particle at the centre of heatmap voxel (5, 6, 7) of a stride-2 patch at offset 0: net 2h + 0.5
        p = np.array([[0, 10.5, 12.5, 14.5]])
        t = heatmap_target(p, offset=(0, 0, 0), patch_size=(32, 32, 32), stride=2, sigmas=[sig], n_classes=1)
        assert t.shape == (1, 16, 16, 16)
        assert t[0, 5, 6, 7] == pytest.approx(1.0)
        assert t[0, 4, 6, 7] == pytest.approx(t[0, 6, 6, 7])
        # width in Å: distance where the value falls to exp(-1/2) ~ sigma
        widths.append(np.sqrt(-2 * np.log(t[0, 6, 6, 7])) ** -1 * 2 * spacing)
    assert widths[0] == pytest.approx(sig_a, rel=1e-5) and widths[1] == pytest.approx(sig_a, rel=1e-5)


def test_patch_sampler_positive_patches_hold_their_particle(tmp_path):
    info = make_root(tmp_path, n=2)
    cfg = resolve_config("micro", pos_fraction=1.0, intensity=0.0, noise=0.0)
    cache = VolumeCache(DataRoot(tmp_path), cfg.spacing)
    pts = particles_from_labels(info["labels"], cfg.class_names)
    sampler = PatchSampler(cache, ["t00", "t01"], pts, cfg)
    sampler.seed_transforms(0)
    rng = np.random.default_rng(0)
    for _ in range(6):
        b = sampler.sample(rng)
        assert b["image"].shape == (1, *cfg.patch_size)
        assert b["target"].shape == (1, *[p // cfg.stride for p in cfg.patch_size])
        assert float(b["target"].max()) > 0.5
        # the bright particle sits under the target's peak (flips/rotations moved both together)
        peak = np.unravel_index(int(b["target"][0].argmax()), b["target"].shape[1:])
        net_peak = [(p + 0.5) * cfg.stride - 0.5 for p in peak]
        img = b["image"][0].numpy()
        lo = [max(0, int(c) - 2) for c in net_peak]
        assert img[lo[0]:lo[0] + 5, lo[1]:lo[1] + 5, lo[2]:lo[2] + 5].mean() > img.mean() + 0.5


def test_find_peaks_nms_threshold_and_refinement():
    hm = np.zeros((1, 20, 30, 30), dtype=np.float32)
    zz, yy, xx = np.meshgrid(np.arange(20), np.arange(30), np.arange(30), indexing="ij")
    for (z, y, x), a in (((5.25, 6.0, 7.0), 0.9), ((14.0, 22.0, 20.5), 0.6), ((5.0, 9.0, 7.0), 0.5)):
        hm[0] = np.maximum(hm[0], a * np.exp(-((zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2) / 2.0))
    peaks = find_peaks(hm, threshold=0.3, nms_radius=[4.0])[0]
    assert len(peaks) == 2  # the 0.5 peak 3 voxels from the 0.9 one is suppressed
    np.testing.assert_allclose(peaks[:, 3], [0.9 * np.exp(-0.25**2 / 2), 0.6 * np.exp(-0.5**2 / 2)], rtol=1e-5)
    np.testing.assert_allclose(peaks[0, :3], [5.25, 6.0, 7.0], atol=1e-4)  # exact for a Gaussian
    np.testing.assert_allclose(peaks[1, :3], [14.0, 22.0, 20.5], atol=1e-4)
    assert len(find_peaks(hm, threshold=0.3, nms_radius=[1.0])[0]) == 3
    assert len(find_peaks(hm, threshold=0.95, nms_radius=[4.0])[0]) == 0


def test_a_weaker_peak_beyond_the_nms_radius_on_a_diagonal_is_kept():
    """Peaks 5.2 voxels apart on a diagonal (3 per axis) with an NMS radius of 4: two particles, though a cube as
    wide as the NMS ball holds both; within the radius they merge."""
    hm = np.zeros((1, 24, 24, 24), dtype=np.float32)
    zz, yy, xx = np.meshgrid(*(np.arange(24),) * 3, indexing="ij")
    for (z, y, x), a in (((10, 10, 10), 0.9), ((13, 13, 13), 0.4)):
        hm[0] = np.maximum(hm[0], a * np.exp(-((zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2) / 1.0))
    peaks = find_peaks(hm, threshold=0.1, nms_radius=[4.0], refine=False)[0]
    assert [tuple(p[:3]) for p in peaks] == [(10, 10, 10), (13, 13, 13)]
    assert len(find_peaks(hm, threshold=0.1, nms_radius=[5.5])[0]) == 1
    assert len(find_peaks(hm, threshold=0.1, nms_radius=[4.0], window="enclosing")[0]) == 1  # the cube holds both


def test_nms_distance_is_at_most_the_match_radius():
    from byu.labels.classes import BUILTIN_CLASSES

    cfg = resolve_config("small", classes=[BUILTIN_CLASSES[n] for n in ("motor", "ribosome", "apo-ferritin")])
    assert cfg.nms_radii_A() == [500.0, 150.0, 60.0]  # motor 2 x 250 Å; the CZII classes their match radius


def test_peaks_map_to_the_original_frame_and_round_trip_through_csv(tmp_path):
    g = geometry_for("a", (64, 96, 96), 16.0, (102, 154, 154), 10.0, 32.0)
    orig = np.array([[40.0, 77.0, 100.0]])
    net = g.to_net(orig, 10.0)
    h = (net + 0.5) / 2 - 0.5  # stride-2 heatmap coordinates
    df = peaks_to_frame([np.column_stack([h, [0.8]])], geometry=g, stride=2, class_names=["motor"], models="r/fold0")
    np.testing.assert_allclose(df[["z", "y", "x"]].to_numpy(), orig, atol=1e-9)
    assert df["voxel_spacing"].iloc[0] == 10.0
    p = write_predictions(df, tmp_path / "p.csv")
    back = read_predictions(p)
    np.testing.assert_allclose(back[["z", "y", "x"]].to_numpy(), orig, atol=1e-4)
    assert list(back["models"]) == ["r/fold0"]


def test_read_predictions_names_bad_cells(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("tomo_id,particle,z,y,x,conf,models,voxel_spacing\na,motor,1,2,x3,0.5,m,10\n")
    with pytest.raises(InputError, match="x3") as info:
        read_predictions(p)
    assert (info.value.row, info.value.field) == (2, "x")


class _Pool(torch.nn.Module):
    """A stride-2 'network' whose output is exactly local: logit = mean of each 2x2x2 block."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool3d(x, 2) * self.w


@pytest.mark.parametrize("shape", [(40, 70, 90), (16, 16, 16)])
def test_sliding_window_stitches_strided_outputs_exactly(shape):
    cfg = ModelConfig(name="t", spacing=32.0, channels=(4, 8), stem_stride=2, output_stride=2,
                      patch_size=(16, 16, 16), roi_size=(16, 32, 32), overlap=0.5, rot90=False)
    x = torch.randn(*shape)
    want = torch.sigmoid(torch.nn.functional.avg_pool3d(
        torch.nn.functional.pad(x, [0, shape[2] % 2, 0, shape[1] % 2, 0, shape[0] % 2])[None, None], 2))[0]
    for flips in (((),), ((), (3,), (4,), (3, 4))):
        got = sliding_window_heatmap(_Pool(), x, cfg, flips=flips, device=torch.device("cpu"))
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_networks_build_for_every_arch():
    for arch, extra in (("heatmapnet", {}), ("heatmapnet", {"stem_stride": 4, "output_stride": 4}),
                        ("heatmapnet", {"stem_stride": 1, "output_stride": 2}),
                        ("basicunet", {"features": (4, 4, 8, 8, 16, 4)}), ("segresnet", {"init_filters": 4})):
        cfg = resolve_config("micro", arch=arch, **extra)
        net = build_network(cfg).eval()
        with torch.no_grad():
            out = net(torch.randn(1, 1, 32, 64, 64))
        assert out.shape == (1, 1, 32 // cfg.stride, 64 // cfg.stride, 64 // cfg.stride)
        assert float(torch.sigmoid(out).mean()) == pytest.approx(0.01, abs=0.02)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(InputError, match="patch_size"):
        resolve_config("micro", patch_size=(30, 48, 48))
    with pytest.raises(NotFoundError, match="unknown config"):
        resolve_config("nope")
    f = tmp_path / "c.yaml"
    f.write_text("spacing: 24\nclasses: [{name: ribosome, radius: 150}, {name: apo-ferritin, radius: 60}]\n"
                 "patch_size: [32, 64, 64]\nroi_size: [32, 64, 64]\n")
    cfg = resolve_config(f)
    assert cfg.name == "c" and cfg.class_names == ["ribosome", "apo-ferritin"]
    with pytest.raises(InputError, match="unique"):
        resolve_config("micro", classes=[{"name": "a", "radius": 1}, {"name": "a", "radius": 2}])


def test_mrc_tomograms_are_read_with_their_header_spacing(tmp_path):
    import mrcfile

    shape = (24, 40, 40)
    vol = np.zeros(shape, dtype=np.float32)
    vol[10:14, 20:24, 8:12] = 5.0  # stored centre (11.5, 21.5, 9.5)
    (tmp_path / "tomograms").mkdir()
    with mrcfile.new(tmp_path / "tomograms" / "m1.mrc") as m:
        m.set_data(vol)
        m.voxel_size = 16.0
    cache = VolumeCache(tmp_path, 32.0)
    g = cache.geometry("m1")
    assert (g.stored_spacing, g.original_spacing, g.net_shape, g.pool) == (16.0, 16.0, (12, 20, 20), 2)
    net = cache.get("m1").astype(np.float32)
    assert np.unravel_index(int(net.argmax()), net.shape) in {(5, 10, 4), (6, 10, 4), (5, 11, 4), (5, 10, 5)}
    np.testing.assert_allclose(g.to_net([[11.5, 21.5, 9.5]], 16.0), [[5.5, 10.5, 4.5]])
    with pytest.raises(NotFoundError, match="m2"):
        cache.geometry("m2")


def test_prefetched_volumes_match_the_cache_on_both_paths(tmp_path):
    from byu.model.infer import _prefetched

    make_root(tmp_path, n=3, stored_spacing=16.0)
    cache = VolumeCache(DataRoot(tmp_path), 32.0)
    ids = ["t00", "t01", "t02"]
    for on_device in (False, True):  # True is the GPU path: read on the host, resample where the model runs
        got = list(_prefetched(cache, ids, torch.device("cpu"), resample_on_device=on_device))
        assert [t for t, _ in got] == ids
        for t, vol in got:
            np.testing.assert_array_equal(vol.numpy(), cache.get(t))


def test_mrc_tomograms_are_read_through_the_validating_reader(tmp_path):
    import mrcfile

    from byu.errors import InputError
    from byu.model.data import read_geometry, read_stored

    good = tmp_path / "t1.mrc"
    vol = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    with mrcfile.new(good) as m:
        m.set_data(vol)
        m.voxel_size = 10.0
    g = read_geometry(good, 32.0)
    assert g is not None
    np.testing.assert_array_equal(read_stored(good, 1, 3), vol[1:3])
    bad = tmp_path / "t2.mrc"
    bad.write_bytes(good.read_bytes()[:1100])  # header fine, data truncated
    with pytest.raises(InputError) as info:
        read_geometry(bad, 32.0)
    assert "t2.mrc" in str(info.value)

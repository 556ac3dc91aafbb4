"""Inference-speed settings (:class:`byu.model.infer.InferenceSettings`) change how fast the network runs, not what
it predicts: batched TTA, channels_last and compile match the one-pass-per-flip fp32 heatmap to float rounding,
bf16 autocast to a stated tolerance with the same peaks, and the CPU defaults write today's CSV byte for byte.

The network is a random ``micro`` one whose head is scaled so its heatmap spans 0..1 (there are peaks to decode),
on small windows (16x32x32) over a 48x88x72 volume: 4x4x3 windows on a grid that is not symmetric under the flips,
so a TTA that flipped each window in place (instead of each view keeping its own windows) would differ by ~0.2.
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist
from typer.testing import CliRunner

import byu.model  # noqa: F401, I001  (first: sets OMP_WAIT_POLICY before torch loads)
from byu.cli.model import app
from byu.errors import InputError
from byu.model import infer
from byu.model.config import resolve_config
from byu.model.decode import config_peaks
from byu.model.infer import (
    CHECKPOINT_FORMAT,
    TTA_FLIPS,
    InferenceSettings,
    compile_failed,
    merge_predictions,
    plan_predictions,
    predict,
    predict_shard,
    sliding_window_heatmap,
)
from byu.model.net import build_network
from tests.model_helpers import make_root

CFG = resolve_config("micro", roi_size=(16, 32, 32))
SHAPE = (48, 88, 72)
CPU = torch.device("cpu")
PLAIN = InferenceSettings(precision="fp32", batch_tta=False, channels_last=False, compile="off")
MINING_THRESHOLD = 0.05  # byu.review.settings.MiningSettings.threshold: the peaks review sees


def _net(seed: int = 0, scale: float = 150.0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_network(CFG).eval()
    with torch.no_grad():
        net.head.weight.mul_(scale)
    return net


@pytest.fixture(scope="module")
def case():
    g = torch.Generator().manual_seed(1)
    x = F.avg_pool3d(torch.randn(1, 1, *SHAPE, generator=g), 3, 1, 1)[0, 0] * 3
    net = _net()
    ref = sliding_window_heatmap(net, x, CFG, flips=TTA_FLIPS["flips"], device=CPU, inference=PLAIN)
    return {"net": net, "x": x, "ref": ref}


def _heat(case, tta: str = "flips", net=None, **settings) -> torch.Tensor:
    return sliding_window_heatmap(net or case["net"], case["x"], CFG, flips=TTA_FLIPS[tta], device=CPU,
                                  inference=InferenceSettings(**settings))


def test_the_window_grid_is_not_symmetric_under_the_flips():
    roi, overlaps = infer._window(CFG, SHAPE)
    steps = [int(r * (1 - o)) for r, o in zip(roi, overlaps, strict=True)]  # MONAI's scan interval
    assert any((n - r) % s for n, r, s in zip(SHAPE, roi, steps, strict=True))


def test_settings_resolve_per_device(monkeypatch):
    cpu = InferenceSettings().resolve("cpu")
    assert (cpu.precision, cpu.batch_tta, cpu.channels_last, cpu.compile) == ("fp32", False, False, False)
    monkeypatch.setattr(infer, "_cuda_bf16", lambda device: True)
    gpu = InferenceSettings().resolve("cuda")
    assert (gpu.precision, gpu.batch_tta, gpu.channels_last, gpu.compile) == ("bf16", True, True, True)
    monkeypatch.setattr(infer, "_cuda_bf16", lambda device: False)
    assert InferenceSettings().resolve("cuda").precision == "fp16"
    explicit = InferenceSettings(precision="bf16", batch_tta=True, channels_last="on", compile="on").resolve("cpu")
    assert (explicit.precision, explicit.batch_tta, explicit.channels_last, explicit.compile) == (
        "bf16", True, True, True)
    assert InferenceSettings(compile="off").resolve("cuda:0").compile is False
    # frozen, no unknown fields; a plan's dict round-trips; bad values name the field
    with pytest.raises(ValueError):
        InferenceSettings(speed="max")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        InferenceSettings().precision = "fp16"  # type: ignore[misc]
    s = InferenceSettings(precision="fp16", window_batch=3)
    assert InferenceSettings.parse(s.model_dump(mode="json")) == s
    assert InferenceSettings.parse(None) == InferenceSettings()
    with pytest.raises(InputError) as info:
        InferenceSettings.parse({"precision": "fp8"})
    assert info.value.field == "precision"


@pytest.mark.slow
def test_cpu_defaults_are_the_plain_path_bit_for_bit(case):
    assert torch.equal(_heat(case), case["ref"])


def test_batched_tta_equals_one_pass_per_flip(case):
    got = _heat(case, batch_tta=True, precision="fp32", channels_last=False, compile="off")
    assert got.shape == case["ref"].shape
    assert float((got - case["ref"]).abs().max()) <= 1e-5  # measured 1.5e-6 (oneDNN batch kernels round differently)
    x = case["x"][:24, :48, :40]  # all eight flips on a smaller volume (3x2x2 windows)
    plain = sliding_window_heatmap(case["net"], x, CFG, flips=TTA_FLIPS["flips8"], device=CPU, inference=PLAIN)
    batched = sliding_window_heatmap(case["net"], x, CFG, flips=TTA_FLIPS["flips8"], device=CPU,
                                     inference=InferenceSettings(batch_tta=True, window_batch=5))
    assert float((batched - plain).abs().max()) <= 1e-5


@pytest.mark.slow
def test_bf16_autocast_on_cpu_is_close_and_keeps_the_peaks(case):
    """bf16 keeps 8 bits of mantissa: the heatmap moves by up to ~1% of its range and peaks stay put, except where
    two maxima of a saturated plateau nearly tie (then NMS may keep the other one). Measured on a 48x88x72 volume
    at threshold 0.05: this net (heatmap up to 0.48): max |difference| 0.0063, the same 40 peaks within 0.006
    voxels; the sharper one of the other tests (head x150, saturating at 1.0): 0.034, and 2 of 42 peaks, on
    plateaus at 0.93-1.0, move to the other maximum 4.7 and 8.8 voxels away (with flip TTA: 0.013, and the same
    two move 1.0 voxel)."""
    net = _net(scale=40.0)  # one view: bf16 is emulated, so slow, on CPUs without AVX512-BF16
    ref = sliding_window_heatmap(net, case["x"], CFG, device=CPU, inference=PLAIN)
    got = _heat(case, tta="none", net=net, precision="bf16")
    assert got.dtype == torch.float32  # accumulated in fp32 whatever the autocast dtype
    assert float((got - ref).abs().max()) <= 0.02
    want = config_peaks(ref, CFG, threshold=MINING_THRESHOLD)[0]
    have = config_peaks(got, CFG, threshold=MINING_THRESHOLD)[0]
    assert len(want) > 20 and len(have) == len(want)
    # the same peaks, one to one (nearly equal ones may swap places in the strongest-first order), each within
    # one heatmap voxel and 0.02 in confidence
    d = cdist(want[:, :3], have[:, :3])
    match = d.argmin(axis=1)
    assert sorted(match) == list(range(len(have)))
    assert d[np.arange(len(want)), match].max() <= 1.0
    assert np.abs(have[match, 3] - want[:, 3]).max() <= 0.02


@pytest.mark.slow
def test_channels_last_on_cpu_equals_fp32(case):
    got = _heat(case, channels_last=True, batch_tta=False, precision="fp32", compile="off")
    assert float((got - case["ref"]).abs().max()) <= 1e-5
    conv = case["net"].down[0][0].conv.weight  # a 3x3x3 kernel (a 1x1x1 one is both formats at once)
    assert conv.is_contiguous(memory_format=torch.channels_last_3d) and not conv.is_contiguous()  # it stays so ...
    assert torch.equal(_heat(case), case["ref"])  # ... until plain settings put them back


@pytest.mark.slow
def test_compile_on_cpu_matches_eager_or_falls_back_with_one_warning(case):
    net = copy.deepcopy(case["net"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _heat(case, net=net, compile="on", precision="fp32", batch_tta=False, channels_last=False)
    if compile_failed(net):
        assert sum("torch.compile failed" in str(w.message) for w in caught) == 1
        assert torch.equal(got, case["ref"])  # eager from then on
        pytest.skip(f"torch.compile cannot run here: {[str(w.message) for w in caught][0]}")
    assert float((got - case["ref"]).abs().max()) <= 1e-4


# ------------------------------------------------------------------------------------------------ the files


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Two tomograms whose net grid (32 Å) is 32x56x48 (3x2x2 windows), and one random-weight fold model of CFG."""
    root = tmp_path_factory.mktemp("speed") / "data"
    make_root(root, n=2, seed=3, shape=(64, 112, 96))
    run = root / "models" / "rnd"
    run.mkdir(parents=True)
    torch.save({"format": CHECKPOINT_FORMAT, "config": CFG.model_dump(mode="json"), "state_dict": _net().state_dict(),
                "fold": 0, "run": "rnd", "train_ids": [], "val_ids": ["t00", "t01"], "finished": True},
               run / "fold0.pt")
    return root


def _sidecar(path):
    return json.loads(path.with_suffix(".json").read_text())


@pytest.mark.slow
def test_predict_with_cpu_defaults_writes_the_plain_paths_bytes(root):
    default = predict(root, ["rnd"], mode="all", tta="flips", out_name="default", device="cpu")
    plain = predict(root, ["rnd"], mode="all", tta="flips", out_name="plain", device="cpu", inference=PLAIN)
    assert default.read_bytes() == plain.read_bytes()
    rows = default.read_text().splitlines()[1:]
    assert len(rows) > 10 and {r.split(",")[0] for r in rows} == {"t00", "t01"}
    side = _sidecar(default)
    assert side["inference"] == InferenceSettings().model_dump(mode="json")
    assert side["inference_used"] == [{"device": "cpu", "precision": "fp32", "batch_tta": False,
                                       "channels_last": False, "compile": False, "window_batch": None}]
    assert _sidecar(plain)["inference"] == PLAIN.model_dump(mode="json")
    assert _sidecar(plain)["inference_used"] == side["inference_used"]


def test_other_precision_is_another_prediction_in_the_plan_and_the_sidecar(root):
    bf16 = InferenceSettings(precision="bf16")
    a = plan_predictions(root, ["rnd"], mode="all", tta="none", out_name="p")
    b = plan_predictions(root, ["rnd"], mode="all", tta="none", out_name="p", inference=bf16)
    # the flows key their merge on the plan and each shard on the plan's inference settings
    assert a.as_dict() != b.as_dict() and b.inference["precision"] == "bf16"
    assert type(b)(**b.as_dict()) == b
    t0, t1 = b.tomo_ids
    tables = [predict_shard(root, b.checkpoints, [t0], mode="all", tta="none", device="cpu", inference=b.inference),
              predict_shard(root, b.checkpoints, [t1], mode="all", tta="none", device="cpu", inference=PLAIN)]
    assert tables[0].attrs["inference"]["precision"] == "bf16"
    side = _sidecar(merge_predictions(b.as_dict(), tables))
    assert side["inference"]["precision"] == "bf16"
    # every distinct resolution of the shards, in a fixed order
    assert sorted(u["precision"] for u in side["inference_used"]) == ["bf16", "fp32"]
    assert side["inference_used"] == _sidecar(merge_predictions(b.as_dict(), tables[::-1]))["inference_used"]


def test_cli_takes_the_settings_and_names_a_bad_one(root):
    runner = CliRunner()
    env = {"BYU_DATA": str(root)}
    r = runner.invoke(app, ["predict", "--models", "rnd", "--mode", "all", "--tta", "none",
                                          "--out", "cli", "--device", "cpu", "--precision", "fp32",
                                          "--no-batch-tta", "--channels-last", "off", "--compile", "off"], env=env)
    assert r.exit_code == 0, r.output
    assert _sidecar(root / "predictions" / "cli.csv")["inference"] == {
        "precision": "fp32", "batch_tta": False, "channels_last": False, "compile": "off", "window_batch": None}
    r = runner.invoke(app, ["predict", "--models", "rnd", "--mode", "all", "--device", "cpu",
                                          "--precision", "fp8"], env=env)
    assert r.exit_code != 0 and "precision" in r.output


def test_review_heatmaps_run_fast_and_equal_the_plain_path(root):
    """The review images' heatmaps batch the TTA views in a channels-last layout; they equal the one-pass-per-flip
    fp32 heatmap of the run's model to float rounding, on the stored grid."""
    from byu.model.data import VolumeCache
    from byu.model.infer import ensemble_heatmap, load_checkpoint, stored_heatmaps

    run = predict(root, ["rnd"], mode="all", tta="flips", out_name="review", device="cpu")
    fast = stored_heatmaps(root, run, device="cpu")("t01")
    assert fast is not None and set(fast) == set(CFG.class_names)
    model = load_checkpoint(root / "models" / "rnd" / "fold0.pt", device=CPU)
    cache = VolumeCache(root, CFG.spacing)
    plain, _ = ensemble_heatmap([model], cache.get("t01"), tta="flips", device=CPU, inference=PLAIN)
    stored = F.interpolate(plain[None].float(), size=tuple(cache.geometry("t01").stored_shape), mode="trilinear",
                           align_corners=False)[0].clamp(0, 1).numpy()
    for c, name in enumerate(CFG.class_names):
        assert fast[name].shape == stored[c].shape
        assert float(stored[c].max()) > 0.1  # a heatmap with something in it
        np.testing.assert_allclose(fast[name], stored[c], atol=1e-3)  # float16: < half an 8-bit overlay level


def test_review_heatmaps_are_computed_once_per_tomogram_and_keyed(root, tmp_path):
    """A round rendered in batches reads each tomogram's heatmap from its cache folder: the kept file is what a
    later batch draws, it equals a fresh computation, and one whose key no longer matches is computed again."""
    from byu.model.infer import stored_heatmaps

    run = predict(root, ["rnd"], mode="all", tta="flips", out_name="cached", device="cpu")
    fresh = stored_heatmaps(root, run, device="cpu")("t01")
    kept_dir = tmp_path / "heatmaps"
    first = stored_heatmaps(root, run, device="cpu", cache_dir=kept_dir)("t01")
    assert fresh is not None and first is not None
    for name in CFG.class_names:
        np.testing.assert_array_equal(first[name], fresh[name])  # the same image with or without the cache
    path = kept_dir / "t01.npz"
    with np.load(path) as kept:
        heat, key = kept["heat"], str(kept["key"])
    assert heat.dtype == np.float16 and not [p for p in kept_dir.iterdir() if p.name.startswith(".")]

    np.savez(path, heat=np.zeros_like(heat), key=np.array(key))  # a later batch draws the kept heatmap
    later = stored_heatmaps(root, run, device="cpu", cache_dir=kept_dir)("t01")
    assert later is not None and all(float(later[n].max()) == 0.0 for n in CFG.class_names)

    np.savez(path, heat=np.zeros_like(heat), key=np.array("other models"))  # keyed to something else: recomputed
    again = stored_heatmaps(root, run, device="cpu", cache_dir=kept_dir)("t01")
    assert again is not None
    for name in CFG.class_names:
        np.testing.assert_array_equal(again[name], fresh[name])
    path.write_bytes(b"not an npz")  # unreadable: recomputed and replaced
    assert stored_heatmaps(root, run, device="cpu", cache_dir=kept_dir)("t01") is not None
    with np.load(path) as kept:
        assert str(kept["key"]) == key

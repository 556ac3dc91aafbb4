"""Sliding-window inference throughput and peak memory of a model config, per inference-speed variant.

    python benchmarks/infer.py                                    # tiny on CPU, a 128x208x208 tomogram at 16 Å
    python benchmarks/infer.py --config full --device cuda --shape 300 600 600     # every variant
    python benchmarks/infer.py --config small --shape 96 160 160 --variants baseline batched channels_last compile

Times, per tomogram, the three stages of ``byu predict`` on a synthetic uint8 volume held in memory (no JPEG
decoding): resampling to the config's spacing + normalization, the heatmap (sliding windows, Gaussian blending,
flip TTA), and peak decoding; weights are random (throughput does not depend on them). The heatmap runs once per
variant of :class:`byu.model.infer.InferenceSettings`, each adding one change to the variants before it that are
run (``--variants``):

- ``baseline``: fp32, one sliding-window pass per TTA flip, contiguous, eager (the code before the settings);
- ``batched``: the TTA views of each window through the network as one batch (one pass);
- ``lowp``: + reduced-precision autocast (``--precision``; default ``auto``: bf16 on CUDA GPUs with native bf16,
  fp16 on other CUDA GPUs, bf16 on a CPU);
- ``channels_last``: + channels_last_3d weights and windows;
- ``compile``: + ``torch.compile`` (its compile time is in the warm-up column; a failure runs eager, and says so).

Per variant: the median time of ``--repeats`` passes after one warm-up pass (cuDNN autotuning, allocator,
compiling), tomograms/s per model, speed-up over the baseline, peak memory during the variant's passes (CUDA:
``torch.cuda.max_memory_allocated``; CPU: the process's peak RSS, reset per variant through
``/proc/self/clear_refs`` where Linux allows, else the process's peak so far), and the largest heatmap difference
from the baseline. CUDA is synchronized before every clock read. Target for ``full`` on a GPU: >= 1 tomogram of
~300x600x600 voxels at 16 Å per second per model, TTA included.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import byu.model  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads)
from byu.model.config import CONFIGS, resolve_config  # noqa: E402
from byu.model.data import geometry_for, load_volume  # noqa: E402
from byu.model.decode import config_peaks  # noqa: E402
from byu.model.infer import (  # noqa: E402
    TTA_FLIPS,
    InferenceSettings,
    LoadedModel,
    compile_failed,
    ensemble_heatmap,
    resolve_device,
)
from byu.model.net import build_network, count_parameters  # noqa: E402

VARIANTS = ("baseline", "batched", "lowp", "channels_last", "compile")
CPU_DEFAULT = ("baseline", "batched", "channels_last")


def variant_settings(name: str, selected: list[str], precision: str, device: torch.device) -> InferenceSettings:
    """The settings of variant ``name``: its change on top of those of the ``selected`` variants before it
    (every field explicit, nothing left to ``auto``)."""
    on = set(selected[: selected.index(name) + 1])
    lowp = precision
    if lowp == "auto":
        lowp = InferenceSettings().resolve(device).precision if device.type == "cuda" else "bf16"
    return InferenceSettings.model_validate({
        "batch_tta": "batched" in on, "precision": lowp if "lowp" in on else "fp32",
        "channels_last": "channels_last" in on, "compile": "on" if "compile" in on else "off"})


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ``clear_refs``); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set size of this process since the last reset (``VmHWM``), else since it started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0  # macOS reports bytes, Linux KiB


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny", help=f"one of {', '.join(sorted(CONFIGS))} or a config file")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (cuda:N)")
    ap.add_argument("--shape", type=int, nargs=3, default=(128, 208, 208), metavar=("Z", "Y", "X"),
                    help="stored tomogram shape (voxels at --spacing)")
    ap.add_argument("--spacing", type=float, default=16.0, help="stored spacing in Å")
    ap.add_argument("--tta", default="flips", choices=sorted(TTA_FLIPS))
    ap.add_argument("--models", type=int, default=1, help="ensemble size")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per variant (after one warm-up)")
    ap.add_argument("--variants", nargs="+", default=None, choices=VARIANTS,
                    help="which variants to run, in the order above; each adds its change to the ones "
                    "before it that are run (without lowp, channels_last and compile are fp32). Default: all on "
                    f"CUDA; {' '.join(CPU_DEFAULT)} on a CPU (bf16 is emulated, and so slow, on most CPUs; "
                    "compiling takes a minute)")
    ap.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16"),
                    help="the lowp variant's autocast dtype")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the config's)")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.models < 1:
        ap.error("--repeats and --models must be at least 1")

    cfg = resolve_config(args.config)
    dev = resolve_device(args.device)
    threads = args.threads or cfg.num_threads
    if threads and dev.type == "cpu":
        torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    models = []
    for k in range(args.models):
        net = build_network(cfg).to(dev).eval()
        models.append(LoadedModel(path=Path("."), run="bench", fold=k, config=cfg, net=net, meta={}))
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 256, size=tuple(args.shape), dtype=np.uint8)
    geom = geometry_for("bench", stored.shape, args.spacing, stored.shape, args.spacing, cfg.spacing)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    chosen = args.variants or (VARIANTS if dev.type == "cuda" else CPU_DEFAULT)
    order = [v for v in VARIANTS if v in chosen]
    rows: list[dict[str, Any]] = []
    reference: torch.Tensor | None = None
    for name in order:
        settings = variant_settings(name, order, args.precision, dev)
        sync()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        rss_reset = _reset_peak_rss()
        times: dict[str, list[float]] = {"resample": [], "heatmap": [], "decode": [], "total": []}
        warmup = 0.0
        heat = None
        for rep in range(args.repeats + 1):  # the first pass warms up (cuDNN autotuning, allocator, compiling)
            sync()
            t0 = time.perf_counter()
            image = load_volume(stored, geom, device=dev)
            sync()
            t1 = time.perf_counter()
            heat, stride = ensemble_heatmap(models, image, tta=args.tta, device=dev, inference=settings)
            sync()
            t2 = time.perf_counter()
            config_peaks(heat, cfg, threshold=0.05, stride=stride)
            sync()
            t3 = time.perf_counter()
            if rep == 0:
                warmup = t3 - t0
                continue
            for key, v in zip(("resample", "heatmap", "decode", "total"), (t1 - t0, t2 - t1, t3 - t2, t3 - t0),
                              strict=True):
                times[key].append(v)
        assert heat is not None
        med = {k: float(np.median(v)) for k, v in times.items()}
        run = settings.resolve(dev)
        failed = run.compile and any(compile_failed(m.net) for m in models)
        row: dict[str, Any] = {
            "variant": name, "settings": settings.model_dump(mode="json"),
            "precision": run.precision, "batch_tta": run.batch_tta, "channels_last": run.channels_last,
            "compile": run.compile and not failed, "compile_failed": bool(failed),
            "seconds": {k: round(v, 4) for k, v in med.items()}, "warmup_s": round(warmup, 3),
            "tomograms_per_s": round(1.0 / med["total"], 4),
            "tomograms_per_s_per_model": round(args.models / med["total"], 4),
            "voxels_per_s": round(float(np.prod(args.shape)) / med["total"]),
        }
        if dev.type == "cuda":
            row["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        row["peak_rss_mib"] = round(peak_rss_mib(), 1)
        row["peak_rss_scope"] = "variant" if rss_reset else "process"
        if reference is None:
            reference = heat.float()
        row["max_abs_diff_vs_first"] = float((heat.float() - reference).abs().max())
        rows.append(row)
        del heat
    base = rows[0]["seconds"]["total"]
    for row in rows:
        row["speedup"] = round(base / row["seconds"]["total"], 2)

    out: dict[str, Any] = {
        "config": cfg.name, "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda"
        else f"cpu x{torch.get_num_threads()} threads", "torch": torch.__version__,
        "shape": list(args.shape), "spacing": args.spacing, "net_shape": list(geom.net_shape), "tta": args.tta,
        "tta_passes": len(TTA_FLIPS[args.tta]), "models": args.models, "repeats": args.repeats,
        "parameters": count_parameters(models[0].net), "variants": rows,
    }
    if args.json:
        print(json.dumps(out))
        return out
    print(f"config {out['config']} on {out['device_name']} (torch {torch.__version__}): tomogram {tuple(args.shape)} "
          f"at {args.spacing} Å -> net grid {tuple(geom.net_shape)} at {cfg.spacing} Å, {args.models} model(s), "
          f"TTA {args.tta} ({out['tta_passes']} views), {out['parameters']:,} parameters, median of {args.repeats}")
    mem = "peak CUDA" if dev.type == "cuda" else "peak RSS"
    head = (f"{'variant':14s} {'precision':9s} {'heatmap':>9s} {'total':>9s} {'tomo/s/model':>12s} {'speed-up':>8s} "
            f"{mem:>10s} {'warm-up':>9s} {'max|Δ| vs 1st':>14s}")
    print(head)
    print("-" * len(head))
    for row in rows:
        peak = row["peak_cuda_mib"] if dev.type == "cuda" else row["peak_rss_mib"]
        note = "  (compile failed: eager)" if row["compile_failed"] else ""
        print(f"{row['variant']:14s} {row['precision']:9s} {row['seconds']['heatmap']:8.3f}s "
              f"{row['seconds']['total']:8.3f}s {row['tomograms_per_s_per_model']:12.3f} {row['speedup']:7.2f}x "
              f"{peak:7.0f} MiB {row['warmup_s']:8.2f}s {row['max_abs_diff_vs_first']:14.2e}{note}")
    skipped = [v for v in VARIANTS if v not in order]
    if skipped:
        print(f"(not run: {', '.join(skipped)}; --variants {' '.join(VARIANTS)} runs them all)")
    if dev.type != "cuda" and rows and rows[0]["peak_rss_scope"] == "process":
        print("(peak RSS: of the process so far; this kernel does not allow resetting it per variant)")
    return out


if __name__ == "__main__":
    main()

"""Sliding-window inference throughput and peak memory of a model config.

    python benchmarks/infer.py                                    # tiny on CPU, a 128x208x208 tomogram at 16 Å
    python benchmarks/infer.py --config full --device cuda --shape 300 600 600

Times, per tomogram, the three stages of ``byu predict`` on a synthetic uint8 volume held in memory (no JPEG
decoding): resampling to the config's spacing + normalization, the heatmap (sliding windows, Gaussian blending,
flip TTA), and peak decoding; weights are random (throughput does not depend on them). Prints voxels/s of the
stored 16 Å volume, tomograms/s, and the peak RSS (and peak CUDA memory on a GPU). Target for ``full`` on a GPU:
>= 1 tomogram of ~300x600x600 voxels at 16 Å per second per model, TTA included.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import byu.model  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads)
from byu.model.config import resolve_config  # noqa: E402
from byu.model.data import geometry_for, load_volume  # noqa: E402
from byu.model.decode import config_peaks  # noqa: E402
from byu.model.infer import TTA_FLIPS, LoadedModel, ensemble_heatmap, resolve_device  # noqa: E402
from byu.model.net import build_network, count_parameters  # noqa: E402


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--shape", type=int, nargs=3, default=(128, 208, 208), metavar=("Z", "Y", "X"),
                    help="stored tomogram shape (voxels at --spacing)")
    ap.add_argument("--spacing", type=float, default=16.0, help="stored spacing in Å")
    ap.add_argument("--tta", default="flips", choices=sorted(TTA_FLIPS))
    ap.add_argument("--models", type=int, default=1, help="ensemble size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the config's)")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args(argv)

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
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {"resample": [], "heatmap": [], "decode": [], "total": []}
    for rep in range(args.repeats + 1):  # the first pass warms up (cuDNN autotuning, allocator)
        if dev.type == "cuda" and rep == 1:
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        image = load_volume(stored, geom, device=dev)
        sync()
        t1 = time.perf_counter()
        heat, stride = ensemble_heatmap(models, image, tta=args.tta, device=dev)
        sync()
        t2 = time.perf_counter()
        config_peaks(heat, cfg, threshold=0.05, stride=stride)
        sync()
        t3 = time.perf_counter()
        if rep:
            spans = (t1 - t0, t2 - t1, t3 - t2, t3 - t0)
            for key, v in zip(("resample", "heatmap", "decode", "total"), spans, strict=True):
                times[key].append(v)
    med = {k: float(np.median(v)) for k, v in times.items()}
    voxels = float(np.prod(args.shape))
    out = {
        "config": cfg.name, "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda"
        else f"cpu x{torch.get_num_threads()} threads", "shape": list(args.shape), "spacing": args.spacing,
        "net_shape": list(geom.net_shape), "tta": args.tta, "tta_passes": len(TTA_FLIPS[args.tta]),
        "models": args.models, "parameters": count_parameters(models[0].net),
        "seconds": {k: round(v, 4) for k, v in med.items()},
        "voxels_per_s": round(voxels / med["total"]), "tomograms_per_s": round(1.0 / med["total"], 3),
        "tomograms_per_s_per_model": round(args.models / med["total"], 3),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    if dev.type == "cuda":
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"config {out['config']} on {out['device_name']}: tomogram {tuple(args.shape)} at {args.spacing} Å "
              f"-> net grid {tuple(geom.net_shape)} at {cfg.spacing} Å, {args.models} model(s), "
              f"TTA {args.tta} ({out['tta_passes']} passes), {out['parameters']:,} parameters")
        for k, v in med.items():
            print(f"  {k:9s} {v:8.3f} s")
        print(f"  throughput {out['voxels_per_s'] / 1e6:.2f} Mvoxel/s, {out['tomograms_per_s']:.3f} tomograms/s "
              f"({out['tomograms_per_s_per_model']:.3f} per model)")
        print(f"  peak RSS {out['peak_rss_mib']:.0f} MiB" +
              (f", peak CUDA {out['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in out else ""))
    return out


if __name__ == "__main__":
    main()

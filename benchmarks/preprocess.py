"""Throughput and peak memory of tomogram preprocessing (byu.tomo.preprocess) as the volume grows.

For each size, a synthetic float32 MRC is written to a temporary directory (slab by slab), then
``preprocess_tomogram`` runs in its own subprocess so that the reported peak RSS (``ru_maxrss``) is that of
the preprocessing alone. Printed per size: input MB, wall seconds, MB/s of float32 input, peak RSS, the RSS
right after the imports (torch alone is a few hundred MB) and the growth above it.

    python benchmarks/preprocess.py                     # --quick (default): 3 sizes, a couple of minutes
    python benchmarks/preprocess.py --full              # 200x512x512 ... 500x1000x1000
    python benchmarks/preprocess.py --sizes 500x1912x1847 --spacing 6.5

The input file is freshly written, so it is read from the page cache: the figures measure the pipeline,
not the disk. Targets (notes/targets.md): >= 300 MB/s on 2 cores, peak RSS <= 1 GiB and flat.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUICK = ["200x512x512", "300x768x768", "300x1000x1000"]
FULL = ["200x512x512", "300x768x768", "300x1000x1000", "500x1000x1000"]


def parse_size(text: str) -> tuple[int, int, int]:
    """``ZxYxX`` -> (Z, Y, X)."""
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must look like 200x512x512, got {text!r}")
    return parts[0], parts[1], parts[2]


def write_volume(path: Path, shape: tuple[int, int, int], spacing: float, seed: int = 0) -> None:
    """A float32 MRC of noise plus a smooth pattern, written slab by slab (flat memory)."""
    import mrcfile
    import numpy as np

    z, y, x = shape
    with mrcfile.new_mmap(path, shape=shape, mrc_mode=2, overwrite=True) as mrc:
        mrc.voxel_size = spacing
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 8, y, dtype=np.float32), np.linspace(0, 8, x, dtype=np.float32),
                         indexing="ij")
    pattern = np.sin(yy) * np.cos(xx)
    with open(path, "r+b") as fh:
        fh.seek(1024)
        for k in range(z):
            sl = rng.standard_normal((y, x), dtype=np.float32)
            sl += pattern * np.float32(np.sin(k / 20.0) * 2)
            fh.write(sl.tobytes())


def child(path: str, spacing: float, out: str) -> None:
    """Run in the subprocess: import, note the RSS, preprocess, print one JSON line."""
    from byu.tomo.preprocess import preprocess_tomogram

    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    meta = preprocess_tomogram(path, out, tomo_id="bench", original_spacing=spacing)
    wall = time.perf_counter() - t0
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"wall": wall, "rss_peak": rss_peak, "rss_imports": rss_imports, "out_shape": meta.shape}))


def run_size(shape: tuple[int, int, int], spacing: float, workdir: Path) -> dict:
    path = workdir / "volume.mrc"
    t0 = time.perf_counter()
    write_volume(path, shape, spacing)
    gen = time.perf_counter() - t0
    out = workdir / "tomograms"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, __file__, "--child", str(path), "--spacing", str(spacing),
                           "--out", str(out)], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"preprocess failed for {shape}:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(shape=shape, mb=shape[0] * shape[1] * shape[2] * 4 / 1e6, gen=gen)
    path.unlink()
    shutil.rmtree(out, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=lambda s: [parse_size(p) for p in s.split(",")],
                    help="comma-separated ZxYxX list (overrides --quick/--full)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help=f"sizes {','.join(QUICK)} (default)")
    mode.add_argument("--full", action="store_true", help=f"sizes {','.join(FULL)}")
    ap.add_argument("--spacing", type=float, default=10.0, help="voxel spacing of the input in Å (default 10)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write the temporary volumes")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.spacing, args.out)
        return
    sizes = args.sizes or [parse_size(s) for s in (FULL if args.full else QUICK)]
    workdir = Path(tempfile.mkdtemp(prefix="byu-bench-", dir=args.workdir))
    print(f"preprocess benchmark: float32 MRC at {args.spacing:g} Å -> max(16, spacing) Å, "
          f"{os.cpu_count()} CPU(s); input read from the page cache")
    header = f"{'input ZxYxX':>16} {'output ZxYxX':>14} {'MB':>7} {'wall s':>7} {'MB/s':>7} " \
             f"{'peak RSS MB':>11} {'after import':>12} {'growth MB':>9}"
    print(header)
    print("-" * len(header))
    try:
        for shape in sizes:
            r = run_size(shape, args.spacing, workdir)
            print(f"{'x'.join(map(str, shape)):>16} {'x'.join(map(str, r['out_shape'])):>14} {r['mb']:7.0f} "
                  f"{r['wall']:7.2f} {r['mb'] / r['wall']:7.0f} {r['rss_peak'] / 2**20:11.0f} "
                  f"{r['rss_imports'] / 2**20:12.0f} {(r['rss_peak'] - r['rss_imports']) / 2**20:9.0f}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

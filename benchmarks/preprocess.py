"""Tomogram preprocessing (byu.tomo.preprocess) against the reference pipeline: exactness, throughput, memory.

For each size and input spacing, a synthetic float32 MRC is written to a temporary directory (slab by slab),
then two subprocesses run on it:

- **byu**: ``preprocess_tomogram`` (timed; its peak RSS, ``VmHWM``, is that of the preprocessing alone),
  then, untimed, the same kernel's uint8 output (before JPEG, which is lossy) is written to a raw file;
- **reference**: the reference pipeline on the whole volume, clipped to the same values:
  ``torch.nn.functional.interpolate(x, mode="trilinear", scale_factor=original/working, align_corners=False,
  recompute_scale_factor=False)`` then the same uint8 normalization, written to a raw file.

Printed per case: input and output shapes, the slice counts of byu and of the reference, the max and mean
absolute grey-level difference (the target is a max of at most 1 grey level; ``ok`` says whether it holds),
byu's wall seconds, GB/s of float32 input, peak RSS, the RSS right after the imports (torch alone is a few
hundred MB) and the reference's peak RSS (whole volume in memory) for contrast. The exit status is 1 when a
case differs by more than 1 grey level or in shape.

    python benchmarks/preprocess.py                     # --quick (default): 3 sizes at 10 Å and 6.5 Å
    python benchmarks/preprocess.py --full              # 200x512x512 ... 500x1000x1000
    python benchmarks/preprocess.py --sizes 500x1912x1847 --spacing 6.5

10 Å -> 16 Å is a non-integer ratio (0.625: 300 slices -> 187, where ``round`` would give 188); 6.5 Å -> 16 Å
is 0.40625. The input file is freshly written, so it is read from the page cache: the figures measure the
pipeline, not the disk. Targets (notes/targets.md): >= 300 MB/s on 2 cores, peak RSS <= 1 GiB and flat.
"""

from __future__ import annotations

import argparse
import json
import math
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
SPACINGS = [10.0, 6.5]
TARGET = 16.0


def parse_size(text: str) -> tuple[int, int, int]:
    """``ZxYxX`` -> (Z, Y, X)."""
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must look like 200x512x512, got {text!r}")
    return parts[0], parts[1], parts[2]


def parse_spacings(text: str) -> list[float]:
    """``10,6.5`` -> [10.0, 6.5]."""
    try:
        out = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"spacing must look like 10 or 10,6.5, got {text!r}") from None
    if not out or min(out) <= 0:
        raise argparse.ArgumentTypeError(f"spacings must be positive, got {text!r}")
    return out


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


def _peak_rss() -> int:
    """Peak RSS of this process image: ``VmHWM`` (``ru_maxrss`` would also count the parent's peak, which
    Linux carries across fork and exec); ``ru_maxrss`` where ``/proc`` has no such line."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_byu(path: str, spacing: float, out: str, raw: str) -> None:
    """Subprocess: import, note the RSS, preprocess (timed), then write the kernel's uint8 output to ``raw``."""
    from byu.tomo.grid import scale_factor
    from byu.tomo.preprocess import iter_uint8_slabs, open_volume, preprocess_tomogram

    rss_imports = _peak_rss()
    t0 = time.perf_counter()
    meta = preprocess_tomogram(path, out, tomo_id="bench", original_spacing=spacing)
    wall = time.perf_counter() - t0
    rss_peak = _peak_rss()
    with open_volume(path) as src, open(raw, "wb") as fh:  # untimed: the exact uint8 stack, before JPEG
        for _, block in iter_uint8_slabs(src, clip=meta.clip, out_shape=meta.shape,
                                         scale=scale_factor(spacing, meta.voxel_spacing)):
            fh.write(block.tobytes())
    print(json.dumps({"wall": wall, "rss_peak": rss_peak, "rss_imports": rss_imports, "out_shape": meta.shape,
                      "clip": meta.clip}))


def child_reference(path: str, spacing: float, clip: str, raw: str) -> None:
    """Subprocess: the reference pipeline on the whole volume (clip, ``F.interpolate``, uint8) into ``raw``."""
    import mrcfile
    import numpy as np
    import torch
    import torch.nn.functional as F

    lo, hi = (float(v) for v in clip.split(","))
    t0 = time.perf_counter()
    with mrcfile.mmap(path, mode="r") as mrc:
        vol = torch.from_numpy(np.array(mrc.data, dtype=np.float32))
    vol.clamp_(lo, hi)
    s = spacing / max(TARGET, spacing)
    if s != 1.0:
        vol = F.interpolate(vol[None, None], scale_factor=s, mode="trilinear", align_corners=False,
                            recompute_scale_factor=False)[0, 0]
    out = vol.sub_(lo).mul_(255.0 / (hi - lo)).round_().clamp_(0.0, 255.0).to(torch.uint8).numpy()
    wall = time.perf_counter() - t0
    out.tofile(raw)
    print(json.dumps({"wall": wall, "rss_peak": _peak_rss(), "out_shape": list(out.shape)}))


def compare(a: Path, b: Path, shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> tuple[int, float]:
    """Max and mean absolute difference of two raw uint8 volumes, read slab by slab."""
    import numpy as np

    if tuple(shape_a) != tuple(shape_b):
        return -1, math.nan
    ma = np.memmap(a, dtype=np.uint8, mode="r", shape=tuple(shape_a))
    mb = np.memmap(b, dtype=np.uint8, mode="r", shape=tuple(shape_b))
    worst, total = 0, 0
    step = max(1, (64 << 20) // max(1, shape_a[1] * shape_a[2]))
    for z0 in range(0, shape_a[0], step):
        d = np.abs(ma[z0:z0 + step].astype(np.int16) - mb[z0:z0 + step].astype(np.int16))
        worst, total = max(worst, int(d.max())), total + int(d.sum(dtype=np.int64))
    del ma, mb
    return worst, total / max(1, math.prod(shape_a))


def _run(args: list[str], what: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_case(shape: tuple[int, int, int], spacing: float, workdir: Path) -> dict:
    path = workdir / "volume.mrc"
    out = workdir / "tomograms"
    raw_byu, raw_ref = workdir / "byu.u8", workdir / "ref.u8"
    t0 = time.perf_counter()
    write_volume(path, shape, spacing)
    gen = time.perf_counter() - t0
    try:
        r = _run(["--child", str(path), "--spacing", str(spacing), "--out", str(out), "--raw", str(raw_byu)],
                 f"byu preprocess of {shape} at {spacing} Å")
        clip = f"--clip={r['clip'][0]!r},{r['clip'][1]!r}"  # '=': a negative value is not an option
        ref = _run(["--reference", str(path), "--spacing", str(spacing), clip, "--raw", str(raw_ref)],
                   f"reference of {shape} at {spacing} Å")
        worst, mean = compare(raw_byu, raw_ref, tuple(r["out_shape"]), tuple(ref["out_shape"]))
    finally:
        for p in (path, raw_byu, raw_ref):
            p.unlink(missing_ok=True)
        shutil.rmtree(out, ignore_errors=True)
    r.update(shape=shape, spacing=spacing, gb=math.prod(shape) * 4 / 1e9, gen=gen, ref=ref, max_diff=worst,
             mean_diff=mean, ok=0 <= worst <= 1 and tuple(r["out_shape"]) == tuple(ref["out_shape"]))
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=lambda s: [parse_size(p) for p in s.split(",")],
                    help="comma-separated ZxYxX list (overrides --quick/--full)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help=f"sizes {','.join(QUICK)} (default)")
    mode.add_argument("--full", action="store_true", help=f"sizes {','.join(FULL)}")
    ap.add_argument("--spacing", type=parse_spacings, default=SPACINGS,
                    help="input voxel spacing(s) in Å, comma-separated (default 10,6.5)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write the temporary volumes")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--reference", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--raw", help=argparse.SUPPRESS)
    ap.add_argument("--clip", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_byu(args.child, args.spacing[0], args.out, args.raw)
        return 0
    if args.reference:
        child_reference(args.reference, args.spacing[0], args.clip, args.raw)
        return 0
    sizes = args.sizes or [parse_size(s) for s in (FULL if args.full else QUICK)]
    workdir = Path(tempfile.mkdtemp(prefix="byu-bench-", dir=args.workdir))
    print(f"preprocess benchmark: float32 MRC at {','.join(f'{s:g}' for s in args.spacing)} Å -> "
          f"max({TARGET:g}, spacing) Å, {os.cpu_count()} CPU(s); input read from the page cache; "
          f"reference = F.interpolate(trilinear, scale_factor, recompute_scale_factor=False) of the whole volume")
    header = (f"{'Å':>5} {'input ZxYxX':>14} {'output ZxYxX':>13} {'Z byu':>5} {'Z ref':>5} {'max':>4} "
              f"{'mean':>7} {'ok':>3} {'wall s':>6} {'GB/s':>5} {'peak RSS MB':>11} {'after import':>12} "
              f"{'ref RSS MB':>10}")
    print(header)
    print("-" * len(header))
    failed = 0
    try:
        for spacing in args.spacing:
            for shape in sizes:
                r = run_case(shape, spacing, workdir)
                failed += not r["ok"]
                print(f"{spacing:5g} {'x'.join(map(str, shape)):>14} {'x'.join(map(str, r['out_shape'])):>13} "
                      f"{r['out_shape'][0]:5d} {r['ref']['out_shape'][0]:5d} {r['max_diff']:4d} "
                      f"{r['mean_diff']:7.5f} {'yes' if r['ok'] else 'NO':>3} {r['wall']:6.2f} "
                      f"{r['gb'] / r['wall']:5.2f} {r['rss_peak'] / 2**20:11.0f} {r['rss_imports'] / 2**20:12.0f} "
                      f"{r['ref']['rss_peak'] / 2**20:10.0f}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"max |byu - reference| <= 1 grey level and same shape: {'holds' if not failed else 'FAILS'} "
          f"({failed} case(s) failing)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""How long synthetic cohorts take to generate, per world (figures, never a test's pass/fail).

    python benchmarks/synth.py                      # motor n=2, multi-class n=4, crowded n=8 (the defaults)
    python benchmarks/synth.py --crowded-n 16 --snr 0.05

Each cohort is written to a temporary data root (removed afterwards). Prints, per world: tomograms, seconds in all
and per tomogram, particles per class; for the crowded world also particles per tomogram per species, the volume
fraction of the particles' spheres and of the density above half a protein's, and the measured SNR.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--motor-n", type=int, default=2)
    ap.add_argument("--multi-n", type=int, default=4)
    ap.add_argument("--crowded-n", type=int, default=8)
    ap.add_argument("--snr", type=float, default=None, help="crowded world's SNR (default 0.1)")
    ap.add_argument("--crowding", type=float, default=None, help="crowded world's volume fraction (default 0.30)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from byu.synth import make_cohort

    runs = [("motor", {"classes": ["motor"], "n": args.motor_n}),
            ("multi-class", {"classes": ["motor", "ribosome", "apo-ferritin"], "n": args.multi_n}),
            ("crowded", {"world": "crowded", "n": args.crowded_n, "snr": args.snr, "crowding": args.crowding})]
    for name, kw in runs:
        if not kw["n"]:
            continue
        with tempfile.TemporaryDirectory(prefix="byu-synth-") as tmp:
            t0 = time.perf_counter()
            c = make_cohort(Path(tmp) / "data", seed=args.seed, **kw)
            wall = time.perf_counter() - t0
        print(f"{name}: {c.n_tomograms} tomograms in {wall:.1f} s ({wall / c.n_tomograms:.2f} s each); particles "
              + ", ".join(f"{k} {v}" for k, v in c.particles_by_class.items()), flush=True)
        if c.world == "crowded":
            e = c.extra
            for s in e["species"]:
                per = e["particles_by_species"][s["name"]] / c.n_tomograms
                like = f", like {s['mimics']}" if s["label"] is None and s["mimics"] else ""
                print(f"  {s['name']:<28} {s['shape']:<12} r {s['radius']:6.1f} Å  {per:7.1f} per tomogram{like}")
            total = sum(e["particles_by_species"].values()) / c.n_tomograms
            print(f"  particles per tomogram {total:.0f}; sphere volume fraction {np.mean(e['sphere_fraction']):.3f} "
                  f"(of the box; crowding {e['crowding']} of the cytosol); density > 0.5 in "
                  f"{np.mean(e['density_fraction']):.3f}; SNR measured {np.mean(e['snr_measured']):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

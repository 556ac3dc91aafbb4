"""``byu synth``: write a synthetic cohort (tomograms, true labels, noisy labels with planted errors).

The lead registers it with ``app.command("synth")(synth_command)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from byu.paths import DataRoot
from byu.synth import make_cohort

console = Console()


def synth_command(
    n: Annotated[int, typer.Option("--n", min=1, help="number of tomograms")] = 24,
    seed: Annotated[int, typer.Option("--seed", help="random seed (same seed, same bytes)")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", envvar="BYU_DATA",
                                                help="data root to write into (default $BYU_DATA or ./data)")] = None,
    working_spacing: Annotated[float, typer.Option("--working-spacing", min=1.0,
                                                   help="stored spacing is max(this, original) Å/voxel")] = 16.0,
    noise: Annotated[float, typer.Option("--noise", min=0.0, help="noise std relative to a motor body")] = 0.35,
) -> None:
    """Write a synthetic cohort: tomograms/synth_NNN and synth/{truth,labels_noisy,planted_errors,decoys}.csv."""
    root = DataRoot.from_env(out).root
    result = make_cohort(root, n=n, seed=seed, working_spacing=working_spacing, noise=noise)
    errors = ", ".join(f"{k} {v}" for k, v in result.errors_by_kind.items())
    console.print(
        f"wrote {result.n_tomograms} tomograms ({result.n_motors} motors, {result.n_decoys} decoys) under "
        f"{result.root} in {result.seconds:.1f} s\n"
        f"truth: {result.truth_path}\nnoisy labels: {result.noisy_path} (planted errors: {errors})",
        highlight=False,
    )

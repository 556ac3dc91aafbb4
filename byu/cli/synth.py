"""``byu synth``: write a synthetic cohort (tomograms, true labels, noisy labels with planted errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from byu.cli.util import ClassesFile, say
from byu.paths import DataRoot


def synth_command(
    n: Annotated[int, typer.Option("--n", min=1, help="number of tomograms")] = 24,
    seed: Annotated[int, typer.Option("--seed", min=0, help="random seed (same seed, same bytes)")] = 0,
    classes: Annotated[str, typer.Option("--classes", help="particle classes, comma-separated: motor (the BYU "
                                         "cohort) or any built-in/file classes, e.g. motor,ribosome,apo-ferritin")]
    = "motor",
    out: Annotated[Optional[Path], typer.Option("--out", envvar="BYU_DATA",
                                                help="data root to write into (default $BYU_DATA or ./data)")] = None,
    working_spacing: Annotated[float, typer.Option("--working-spacing", min=1.0,
                                                   help="stored spacing is max(this, original) Å/voxel")] = 16.0,
    noise: Annotated[Optional[float], typer.Option("--noise", min=0.0, help="noise std relative to a particle's "
                                                   "density (default 0.35 for motors, 0.2 otherwise)")] = None,
    classes_file: ClassesFile = None,
) -> None:
    """Write a synthetic cohort: tomograms/synth_NNN and synth/ (truth and noisy labels, planted errors, decoys)."""
    from byu.labels.classes import ClassRegistry

    root = DataRoot.from_env(out).root
    chosen = ClassRegistry.from_file(classes_file).resolve(classes)
    if [c.name for c in chosen] == ["motor"]:
        from byu.synth import make_cohort

        result = make_cohort(root, n=n, seed=seed, working_spacing=working_spacing,
                             **({"noise": noise} if noise is not None else {}))
        errors = ", ".join(f"{k} {v}" for k, v in result.errors_by_kind.items())
        say(f"wrote {result.n_tomograms} tomograms ({result.n_motors} motors, {result.n_decoys} decoys) under "
            f"{result.root} in {result.seconds:.1f} s\ntruth: {result.truth_path} (picks form: "
            f"{result.root / 'synth' / 'truth_picks.csv'})\nnoisy labels: {result.noisy_path} (planted errors: "
            f"{errors})")
        return
    from byu.synth_multi import make_multiclass_cohort

    result = make_multiclass_cohort(root, classes=chosen, n=n, seed=seed, working_spacing=working_spacing,
                                    **({"noise": noise} if noise is not None else {}))
    say(f"wrote {len(result.tomo_ids)} tomograms under {root} in {result.seconds:.1f} s\n"
        f"truth: {result.truth_path}\nnoisy labels: {result.noisy_path}\nplanted errors per class: "
        + "; ".join(f"{c}: {sum(k.values())}" for c, k in result.errors_by_class.items()))

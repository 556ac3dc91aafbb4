"""``byu synth``: write a synthetic cohort (tomograms, true labels, noisy labels with planted errors).

One code path for every world (:func:`byu.synth.make_cohort`): ``--world default`` writes the motor cohort for
``--classes motor`` (the default) and the multi-class cohort for any other classes; ``--world crowded`` the crowded
world (``--species``, ``--snr``, ``--crowding``; its classes default to ribosome, apo-ferritin, thyroglobulin).
Bad values are refused with the option named, before anything is written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from byu.cli.util import ClassesFile, say
from byu.paths import DataRoot


def synth_command(
    n: Annotated[int, typer.Option("--n", min=1, help="number of tomograms")] = 24,
    seed: Annotated[int, typer.Option("--seed", min=0, help="random seed (same seed, same bytes)")] = 0,
    classes: Annotated[str | None, typer.Option("--classes", help="particle classes, comma-separated: motor (the "
                                                   "BYU cohort) or any built-in/file classes, e.g. motor,ribosome,"
                                                   "apo-ferritin (default: motor; crowded world: ribosome,"
                                                   "apo-ferritin,thyroglobulin)")] = None,
    out: Annotated[Path | None, typer.Option("--out", envvar="BYU_DATA",
                                                help="data root to write into (default $BYU_DATA or ./data)")] = None,
    working_spacing: Annotated[float, typer.Option("--working-spacing", min=1.0,
                                                   help="stored spacing is max(this, original) Å/voxel")] = 16.0,
    noise: Annotated[float | None, typer.Option("--noise", min=0.0, help="default world: noise std relative to a "
                                                   "particle's density (default 0.35 for motors, 0.2 otherwise)")]
    = None,
    world: Annotated[str, typer.Option("--world", help="default (motor or multi-class cohort) or crowded (a crowded "
                                       "cytoplasm: many species, look-alikes, CTF, low SNR)")] = "default",
    species: Annotated[int | None, typer.Option("--species", help="crowded world: number of protein species, "
                                                   "labeled and unlabeled (default 12; at least the number of "
                                                   "classes + 1)")] = None,
    snr: Annotated[float | None, typer.Option("--snr", help="crowded world: signal-to-noise ratio, the variance "
                                                 "of the filtered signal over the noise's, in the volume (default "
                                                 "0.1; e.g. 0.05-1)")] = None,
    crowding: Annotated[float | None, typer.Option("--crowding", help="crowded world: volume fraction occupied by "
                                                      "the particles (default 0.30, at most 0.4)")] = None,
    classes_file: ClassesFile = None,
) -> None:
    """Write a synthetic cohort: tomograms/synth_NNN and synth/ (truth and noisy labels, planted errors, decoys)."""
    from byu.labels.classes import ClassRegistry
    from byu.synth import WORLDS, cohort_summary, make_cohort
    from byu.synth.cohort import CROWDED_CLASSES, MAX_CROWDING

    if world not in WORLDS:
        raise typer.BadParameter(f"choose one of {', '.join(WORLDS)}", param_hint="--world")
    if world == "default":
        for value, hint in ((species, "--species"), (snr, "--snr"), (crowding, "--crowding")):
            if value is not None:
                raise typer.BadParameter("an option of the crowded world (--world crowded)", param_hint=hint)
    elif noise is not None:
        raise typer.BadParameter("an option of the default world; the crowded world sets its noise by --snr",
                                 param_hint="--noise")
    if snr is not None and not (math.isfinite(snr) and snr > 0):
        raise typer.BadParameter(f"must be a positive number, got {snr}", param_hint="--snr")
    if crowding is not None and not 0 < crowding <= MAX_CROWDING:
        raise typer.BadParameter(f"a volume fraction in (0, {MAX_CROWDING}], got {crowding}", param_hint="--crowding")
    names = classes if classes is not None else ",".join(CROWDED_CLASSES) if world == "crowded" else "motor"
    chosen = ClassRegistry.from_file(classes_file).resolve(names)
    if world == "crowded" and any(c.name == "motor" for c in chosen):
        raise typer.BadParameter("motor is not a class of the crowded world (motors sit in a cell envelope, not a "
                                 f"crowded cytoplasm); e.g. {','.join(CROWDED_CLASSES)}", param_hint="--classes")
    if species is not None and species < len(chosen) + 1:
        raise typer.BadParameter(f"at least the number of classes + 1 ({len(chosen) + 1}), got {species}",
                                 param_hint="--species")
    root = DataRoot.from_env(out).root
    options = {"working_spacing": working_spacing, **({"noise": noise} if noise is not None else {})}
    try:
        result = make_cohort(root, classes=chosen, n=n, seed=seed, world=world, species=species, snr=snr,
                             crowding=crowding, **options)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    say(cohort_summary(result))

"""The ``byu`` console script: the library's command line (:mod:`byu.cli`) plus the verbs that orchestrate Prefect
flows, which the library never imports: ``byu demo`` (the whole loop on a synthetic cohort, offline, CPU)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from byu.cli import app
from byu.cli import main as library_main
from byu.cli.util import say


def demo_command(
    data_dir: Annotated[Path, typer.Option(help="where the demo's data root goes")] = Path("demo_data"),
    classes: Annotated[str, typer.Option(help="particle classes of the synthetic cohort, comma-separated "
                                         "(motor; or e.g. motor,ribosome,apo-ferritin)")] = "motor",
    reviewer: Annotated[str, typer.Option(help="scripted (answers from the synthetic truth) or cvat "
                                          "(BYU_CVAT_URL: people tag in CVAT)")] = "scripted",
    n: Annotated[int, typer.Option(min=4, help="tomograms in the synthetic cohort")] = 24,
    seed: Annotated[int, typer.Option(min=0, help="cohort seed")] = 0,
    config: Annotated[str | None, typer.Option(help="model config (default: tiny for motors, small for "
                                                  "other classes, crowded for the crowded world; full on a "
                                                  "GPU)")] = None,
    world: Annotated[str, typer.Option(help="synthetic world: default (motors, or the classes given) or crowded "
                                       "(a crowded cytoplasm: many look-alike species, missing wedge, CTF, low "
                                       "SNR; default classes ribosome, apo-ferritin, thyroglobulin)")] = "default",
    species: Annotated[int | None, typer.Option(min=2, help="crowded world: species in all (default 12)")] = None,
    snr: Annotated[float | None, typer.Option(min=0.001, help="crowded world: signal-to-noise ratio (default "
                                              "0.1)")] = None,
    crowding: Annotated[float | None, typer.Option(min=0.0, max=0.5, help="crowded world: volume fraction of "
                                                   "particles (default 0.30)")] = None,
    reviewer_errors: Annotated[float, typer.Option(min=0.0, max=0.5, help="the scripted reviewer (and the second "
                                                   "reviewer and resolver) get this share of their answers wrong: "
                                                   "the known-answer items, the second review and the errors-left "
                                                   "estimate at work")] = 0.0,
) -> None:
    """Synthetic cohort → train → round1 under Prefect → review → gt_v2 + splits → report."""
    from byu.labels.classes import ClassRegistry

    if reviewer not in ("scripted", "cvat"):
        raise typer.BadParameter("choose scripted or cvat", param_hint="--reviewer")
    if world not in ("default", "crowded"):
        raise typer.BadParameter("choose default or crowded", param_hint="--world")
    if world == "default" and any(v is not None for v in (species, snr, crowding)):
        raise typer.BadParameter("--species, --snr and --crowding are settings of the crowded world",
                                 param_hint="--world")
    names = [c.name for c in ClassRegistry().resolve(classes)]
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.demo import demo_folds, run_demo  # here: `byu --help` and every other verb start without Prefect
    from flows.local_api import temporary_api

    demo_folds(n, classes=names, world=world)  # a cohort too small for the demo's splits: refused before any work
    data_dir.mkdir(parents=True, exist_ok=True)

    with temporary_api():  # a server that cannot outlive this process, even when it is killed
        report = run_demo(data_dir, reviewer=reviewer, n=n, seed=seed, classes=names, config=config, world=world,
                          species=species, snr=snr, crowding=crowding, reviewer_errors=reviewer_errors)
    ipc = report["images_per_label_change"]
    ok = (report["errors_fixed_fraction"] or 0) >= 0.95 and report["changes_without_decision"] == 0 \
        and all((v["fraction"] or 0) >= 0.85 for v in report["errors_by_class"].values())
    per_class = "; ".join(f"{c} {v['fixed']}/{v['planted']}" for c, v in report["errors_by_class"].items())
    say(f"{'done' if ok else 'done, below target'}: {report['errors_fixed']}/{report['planted_errors']} planted "
        f"errors fixed ({per_class}); {report['review_images']} review image(s) ({report['review_items']} items, "
        f"about {report['annotator_minutes']:g} min of review) for {report['label_changes']} label change(s)"
        + (f", {ipc:g} images per change" if ipc is not None else "")
        + f"; {report['wall_time_s']} s — {data_dir / 'demo_report.json'}", style="bold")
    if report.get("reviewer_accuracy"):
        say("reviewer accuracy on known-answer items: " + ", ".join(
            f"{who} {acc:.2f}" for who, acc in report["reviewer_accuracy"].items() if acc is not None)
            + "; errors left (estimate [90 % interval]): " + ", ".join(
            f"{c} {v['estimate']:g} [{v['interval_90'][0]}, {v['interval_90'][1]}]"
            for c, v in report.get("errors_left", {}).items()))
    say("one cohort, one seed: benchmarks/recovery.py measures the loop over several cohorts (figures in the README)")


app.command("demo")(demo_command)


def main() -> None:
    """The ``byu`` entry point: every library verb and ``demo``, with the library's error handling."""
    library_main()


__all__ = ["app", "demo_command", "main"]

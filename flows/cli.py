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
                                                  "other classes; full on a GPU)")] = None,
) -> None:
    """Synthetic cohort → train → round1 under Prefect → review → gt_v2 + splits → report."""
    from byu.labels.classes import ClassRegistry

    if reviewer not in ("scripted", "cvat"):
        raise typer.BadParameter("choose scripted or cvat", param_hint="--reviewer")
    names = [c.name for c in ClassRegistry().resolve(classes)]
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.demo import run_demo  # imported here: `byu --help` and every other verb start without Prefect
    from flows.local_api import temporary_api

    with temporary_api():  # a server that cannot outlive this process, even when it is killed
        report = run_demo(data_dir, reviewer=reviewer, n=n, seed=seed, classes=names, config=config)
    ok = (report["errors_fixed_fraction"] or 0) >= 0.95 and report["changes_without_decision"] == 0
    per_class = "; ".join(f"{c} {v['fixed']}/{v['planted']}" for c, v in report["errors_by_class"].items())
    say(f"{'done' if ok else 'done, below target'}: {report['errors_fixed']}/{report['planted_errors']} planted "
        f"errors fixed ({per_class}), {report['cases_reviewed']} case(s) reviewed, {report['label_changes']} label "
        f"change(s), {report['wall_time_s']} s — {data_dir / 'demo_report.json'}", style="bold")
    say("one cohort, one seed: benchmarks/recovery.py measures the loop over several cohorts (figures in the README)")


app.command("demo")(demo_command)


def main() -> None:
    """The ``byu`` entry point: every library verb and ``demo``, with the library's error handling."""
    library_main()


__all__ = ["app", "demo_command", "main"]

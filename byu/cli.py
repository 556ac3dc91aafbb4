"""The ``byu`` command line: thin wrappers over the library's public functions."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from byu import __version__
from byu.cli_labels import app as labels_app
from byu.cli_model import app as model_app
from byu.cli_portal import app as portal_app
from byu.cli_review import app as review_app
from byu.cli_synth import synth_command
from byu.errors import ByuError

app = typer.Typer(help="byu: human-in-the-loop pseudo-labeling for cryo-ET particle picks.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.add_typer(labels_app, name="labels")
app.add_typer(portal_app, name="portal")
app.add_typer(model_app)  # train, predict, score at top level
app.add_typer(review_app, name="review", help="Review rounds: mine cases, render images, CVAT push/status/pull, import, apply.")
app.command("synth")(synth_command)


@app.command("version")
def version_cmd() -> None:
    """Print the byu version."""
    typer.echo(__version__)


@app.command("demo")
def demo_cmd(
    data_dir: Annotated[Path, typer.Option(help="where the demo's data root goes")] = Path("demo_data"),
    reviewer: Annotated[str, typer.Option(help="scripted (answers from the synthetic truth) or cvat "
                                          "(BYU_CVAT_URL: people tag in CVAT)")] = "scripted",
    n: Annotated[int, typer.Option(help="tomograms in the synthetic cohort")] = 24,
    seed: Annotated[int, typer.Option(help="cohort seed")] = 0,
    config: Annotated[str, typer.Option(help="model config (tiny on CPU; full on a GPU)")] = "tiny",
) -> None:
    """Synthetic cohort → train (tiny) → round1 under Prefect → review → gt_v2 + splits → report."""
    if reviewer not in ("scripted", "cvat"):
        raise typer.BadParameter("--reviewer must be scripted or cvat")
    data_dir.mkdir(parents=True, exist_ok=True)
    # Prefect reads its settings at import: keep its state inside the demo's data root, analytics off.
    os.environ.setdefault("PREFECT_HOME", str((data_dir / ".prefect").resolve()))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.demo import run_demo  # Prefect lives in flows/, never in the library

    report = run_demo(data_dir, reviewer=reviewer, n=n, seed=seed, config=config)
    ok = (report["errors_fixed_fraction"] or 0) >= 0.95 and report["changes_without_decision"] == 0
    Console().print(f"[bold]{'done' if ok else 'done, below target'}[/]: {report['errors_fixed']}/"
                    f"{report['planted_errors']} planted errors fixed, {report['cases_reviewed']} case(s) reviewed, "
                    f"{report['label_changes']} label change(s), {report['wall_time_s']} s — "
                    f"{data_dir / 'demo_report.json'}")


def main() -> None:
    """Entry point: user errors print one clear message and exit 2 (no traceback)."""
    try:
        app(standalone_mode=True)
    except ByuError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)

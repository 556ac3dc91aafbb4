"""``byu review ...``: mine cases, render them, apply decisions (plus CVAT push/status/pull/import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import Progress

from byu.cli_review_cvat import app
from byu.cli_util import DataDir
from byu.paths import DataRoot
from byu.review.match import read_cases
from byu.review.render import render_cases
from byu.review.round import apply_round, mine_round, round_paths

console = Console()


@app.command("mine")
def mine_cmd(
    round_name: Annotated[str, typer.Argument(metavar="ROUND")],
    labels: Annotated[str, typer.Option(help="label version the predictions are compared with")],
    predictions: Annotated[Path, typer.Option(help="predictions CSV (data/predictions/<run>.csv)")],
    threshold: Annotated[float, typer.Option(help="keep predictions with conf ≥ this")] = 0.05,
    radius: Annotated[float, typer.Option(help="match radius in Å")] = 1000.0,
    max_candidates: Annotated[int, typer.Option(help="candidates per case image")] = 5,
    confirm_threshold: Annotated[Optional[float], typer.Option(
        help="also review labels whose matching prediction is weaker than this")] = None,
    max_labeled_motors: Annotated[Optional[int], typer.Option(help="only tomograms with ≤ this many labels")] = None,
    render: Annotated[bool, typer.Option(help="also render the case images")] = True,
    data_dir: DataDir = None,
) -> None:
    """Mine FN/FP cases of a round (review/ROUND/cases.csv) and render their images."""
    from byu.labels.store import LabelStore

    root = DataRoot.from_env(data_dir)
    tomo_ids = None
    if max_labeled_motors is not None:
        table = LabelStore(root.labels).get(labels)
        tomo_ids = sorted(table.loc[table.num_motors <= max_labeled_motors, "tomo_id"])
    cases = mine_round(root, round_name, labels_version=labels, predictions=predictions, threshold=threshold,
                       radius_A=radius, max_candidates=max_candidates, tomo_ids=tomo_ids,
                       confirm_threshold=confirm_threshold)
    kinds = cases["kind"].value_counts().to_dict()
    console.print(f"{len(cases)} case(s) in {round_paths(root, round_name).cases}: {kinds}")
    if render:
        render_cmd(round_name, data_dir=data_dir)


@app.command("render")
def render_cmd(round_name: Annotated[str, typer.Argument(metavar="ROUND")], data_dir: DataDir = None) -> None:
    """Render one JPEG per case into review/ROUND/images/."""
    root = DataRoot.from_env(data_dir)
    paths = round_paths(root, round_name)
    cases = read_cases(paths.cases)
    with Progress(console=console) as progress:
        bar = progress.add_task("rendering cases", total=len(cases))
        images = render_cases(cases, root.tomograms, paths.images, progress=lambda *_: progress.advance(bar))
    console.print(f"{len(images)} image(s) in {paths.images}")


@app.command("apply")
def apply_cmd(
    round_name: Annotated[str, typer.Argument(metavar="ROUND")],
    from_version: Annotated[str, typer.Option("--from", help="parent label version")],
    to_version: Annotated[str, typer.Option("--to", help="new label version")],
    overrides: Annotated[Optional[Path], typer.Option(help="CSV tomo_id,action(add|remove|clear),z,y,x,note")] = None,
    data_dir: DataDir = None,
) -> None:
    """Apply review/ROUND/decisions.csv to --from and store --to (parent + exactly the reviewed changes)."""
    manifest, result = apply_round(DataRoot.from_env(data_dir), round_name, from_version=from_version,
                                   to_version=to_version, overrides=overrides)
    console.print(f"stored {manifest.name}: {result.label_changes} label change(s) from "
                  f"{len(result.applied_cases)} decided case(s); {len(result.unsure_cases)} unsure, "
                  f"{len(result.unreviewed_cases)} not reviewed")


@app.command("resume")
def resume_cmd(round_name: Annotated[str, typer.Argument(metavar="ROUND")], data_dir: DataDir = None) -> None:
    """Tell a flow polling CVAT to pull now, without waiting for every job to be completed."""
    flag = round_paths(DataRoot.from_env(data_dir), round_name).cvat / "PULL_NOW"
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()
    console.print(f"flagged {flag}; the flow pulls at its next status check")

"""``byu review push|status|pull|import``: review rounds in CVAT (thin wrappers over ``byu.review.cvat``).

Credentials come from the environment only (``BYU_CVAT_URL``, ``BYU_CVAT_USER`` + ``BYU_CVAT_PASSWORD``
or ``BYU_CVAT_TOKEN``), so they never show in a process list; ``--url`` and ``--user`` may override.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
import urllib3
from cvat_sdk.api_client.exceptions import ApiException
from cvat_sdk.core.exceptions import BackgroundRequestException
from rich.console import Console

from byu.errors import ByuError
from byu.cli_util import DataDir, print_frame
from byu.paths import DataRoot
from byu.review.cvat import CvatConfig, pull_round, push_round, push_second_review, round_status
from byu.review.decisions import decisions_from_round, import_decisions_csv, load_cases, write_decisions

app = typer.Typer(help="Review rounds in CVAT: push case images, watch progress, pull decisions.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)

Url = Annotated[Optional[str], typer.Option("--url", help="CVAT URL (default $BYU_CVAT_URL)")]
User = Annotated[Optional[str], typer.Option("--user", help="CVAT user (default $BYU_CVAT_USER)")]
Period = Annotated[Optional[float], typer.Option("--status-check-period", help="seconds between polls")]


def _round_dir(data_dir: Path | None, round_name: str) -> Path:
    return DataRoot.from_env(data_dir).review_round(round_name)


def _config(url: str | None, user: str | None, period: float | None) -> CvatConfig:
    try:
        return CvatConfig.from_env(url=url, user=user, status_check_period=period)
    except ValueError as exc:  # pydantic validation (inputs are hidden from the message)
        raise typer.BadParameter(str(exc)) from None


REMOTE_ERRORS = (ApiException, BackgroundRequestException, urllib3.exceptions.HTTPError, ConnectionError)


def _fail(exc: Exception) -> None:
    if isinstance(exc, ApiException):  # its text carries response headers: keep it short
        msg = f"CVAT answered HTTP {exc.status} {exc.reason or ''} (after retries)"
    elif isinstance(exc, BackgroundRequestException):
        msg = f"CVAT could not process the request: {exc}"
    elif not isinstance(exc, ByuError):
        msg = f"cannot reach CVAT: {type(exc).__name__} (after retries)"
    else:
        msg = str(exc)
    err_console.print(f"error: {msg}", style="bold red", highlight=False, markup=False)
    raise typer.Exit(2)


@app.command("push")
def push_cmd(
    round_name: Annotated[str, typer.Argument(metavar="ROUND")],
    batch_size: Annotated[int, typer.Option(help="images per CVAT task")] = 100,
    second_review: Annotated[bool, typer.Option("--second-review", help="push the 'unsure' cases of decisions.csv "
                                                                        "as <round>-review2-<batch> tasks")] = False,
    data_dir: DataDir = None, url: Url = None, user: User = None, status_check_period: Period = None,
) -> None:
    """Push a round's case images to CVAT (safe to rerun: completes, never duplicates)."""
    config = _config(url, user, status_check_period)
    try:
        rd = _round_dir(data_dir, round_name)
        if second_review:
            entries = push_second_review(rd, config=config, batch_size=batch_size)
        else:
            entries = push_round(rd, config=config, batch_size=batch_size)
    except (ByuError, *REMOTE_ERRORS) as exc:
        _fail(exc)
    df = pd.DataFrame([{"task": e["name"], "task_id": e["id"], "images": len(e["images"]), "state": e["state"]}
                       for e in entries], columns=["task", "task_id", "images", "state"])
    print_frame(console, df, f"CVAT tasks of round {round_name}")


@app.command("status")
def status_cmd(
    round_name: Annotated[str, typer.Argument(metavar="ROUND")],
    data_dir: DataDir = None, url: Url = None, user: User = None,
) -> None:
    """Jobs per task of a round: new / in progress / completed."""
    config = _config(url, user, None)
    try:
        df = round_status(_round_dir(data_dir, round_name), config=config)
    except (ByuError, *REMOTE_ERRORS) as exc:
        _fail(exc)
    print_frame(console, df, f"review round {round_name}")
    if len(df):
        console.print(f"{int(df['completed'].sum())}/{int(df['jobs'].sum())} jobs completed")


@app.command("pull")
def pull_cmd(
    round_name: Annotated[str, typer.Argument(metavar="ROUND")],
    allow_errors: Annotated[bool, typer.Option("--allow-errors", help="write decisions.csv for the valid images "
                                                                      "even if some images have errors")] = False,
    data_dir: DataDir = None, url: Url = None, user: User = None, status_check_period: Period = None,
) -> None:
    """Export the round's tasks (CVAT for images 1.1) and write decisions.csv."""
    config = _config(url, user, status_check_period)
    try:
        rd = _round_dir(data_dir, round_name)
        paths = pull_round(rd, config=config)
        result = decisions_from_round(rd)
    except (ByuError, *REMOTE_ERRORS) as exc:
        _fail(exc)
    console.print(f"exported {len(paths)} task(s) to {rd / 'cvat'}")
    _report(result.errors)
    if result.errors and not allow_errors:
        err_console.print("decisions.csv not written (fix the errors, or pass --allow-errors)")
        raise typer.Exit(1)
    write_decisions(result, rd / "decisions.csv", allow_errors=allow_errors)
    console.print(f"{len(result.decisions)} reviewed case(s) -> {rd / 'decisions.csv'}")


@app.command("import")
def import_cmd(
    round_name: Annotated[str, typer.Argument(metavar="ROUND")],
    csv_path: Annotated[Path, typer.Argument(metavar="DECISIONS_CSV", help="case_id or image, tags[, reviewer]")],
    data_dir: DataDir = None,
) -> None:
    """Import decisions made outside CVAT (same vocabulary and checks) as the round's decisions.csv."""
    try:
        rd = _round_dir(data_dir, round_name)
        result = import_decisions_csv(csv_path, load_cases(rd / "cases.csv"))
    except (ByuError, *REMOTE_ERRORS) as exc:
        _fail(exc)
    _report(result.errors)
    if result.errors:
        err_console.print("decisions.csv not written")
        raise typer.Exit(1)
    write_decisions(result, rd / "decisions.csv")
    console.print(f"{len(result.decisions)} reviewed case(s) -> {rd / 'decisions.csv'}")


def _report(errors: list[str]) -> None:
    for e in errors:
        err_console.print(f"- {e}", highlight=False, markup=False)
    if errors:
        err_console.print(f"[bold red]{len(errors)} problem(s)[/]", highlight=False)


if __name__ == "__main__":  # pragma: no cover - ``python -m byu.cli_review_cvat``
    app()

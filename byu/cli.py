"""The ``byu`` command line: thin wrappers over the library's public functions."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from byu import __version__
from byu.cli_labels import app as labels_app
from byu.errors import ByuError

app = typer.Typer(help="byu: human-in-the-loop pseudo-labeling for cryo-ET particle picks.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(labels_app, name="labels")


@app.command("version")
def version_cmd() -> None:
    """Print the byu version."""
    typer.echo(__version__)


def main() -> None:
    """Entry point: user errors print one clear message and exit 2 (no traceback)."""
    try:
        app(standalone_mode=True)
    except ByuError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)

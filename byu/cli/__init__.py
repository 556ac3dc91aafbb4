"""The ``byu`` command line: one module per command group, each verb a thin wrapper over a library call.

The console script is :func:`flows.cli.main`, which adds the verbs that orchestrate Prefect flows (``byu demo``) to
this app; the library itself never imports the flows."""

from __future__ import annotations

import sys

import typer

from byu import __version__
from byu.cli.copick import app as copick_app
from byu.cli.labels import app as labels_app
from byu.cli.model import app as model_app
from byu.cli.portal import app as portal_app
from byu.cli.review import app as review_app
from byu.cli.synth import synth_command
from byu.cli.tomo import app as tomo_app
from byu.cli.util import OS_ERRORS, explain, fail, make_app
from byu.errors import ByuError

app = make_app(help="byu: human-in-the-loop pseudo-labeling for cryo-ET particle picks.", no_args_is_help=True,
               add_completion=False)
app.add_typer(labels_app, name="labels")
app.add_typer(portal_app, name="portal")
app.add_typer(model_app)  # train, predict, score at top level
app.add_typer(review_app, name="review")
app.add_typer(copick_app, name="copick")
app.add_typer(tomo_app, name="tomo")
app.command("synth")(synth_command)


@app.command("version")
def version_cmd() -> None:
    """Print the byu version."""
    typer.echo(__version__)


def main() -> None:
    """Entry point: user errors print one clear message and exit 2 (no traceback)."""
    try:
        app(standalone_mode=True)
    except (ByuError, OSError, RecursionError) as exc:  # raised outside a command (option parsing, callbacks)
        if isinstance(exc, OSError) and exc.errno not in OS_ERRORS:
            raise
        try:
            fail(explain(exc) if not isinstance(exc, RecursionError) else "input nested too deeply to read")
        except typer.Exit as done:
            sys.exit(done.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "main"]

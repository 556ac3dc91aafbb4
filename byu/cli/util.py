"""Small pieces shared by the CLI modules: the ``--data-dir`` option, tables and messages that print user data
literally (never as rich markup), and the one place errors become a clear message and exit status 2."""

from __future__ import annotations

import errno
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, NoReturn

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

DataDir = Annotated[Path | None, typer.Option("--data-dir", envvar="BYU_DATA", help="data root (default ./data)")]
ClassesFile = Annotated[Path | None, typer.Option("--classes-file", help="YAML/JSON file of particle classes "
                                                     "beyond the built-in ones (name, radius in Å, ...)")]
ReplacePinned = Annotated[bool, typer.Option("--replace-pinned", help="replace stored tomograms whose content a "
                                             "label version pins (those versions then refuse to predict, mine and "
                                             "render them); without it such an ingest is refused")]

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def say(text: str, *, style: str | None = None, err: bool = False) -> None:
    """Print ``text`` as it is (no markup, no highlighting), optionally in one style."""
    (err_console if err else console).print(Text(str(text), style=style or ""), highlight=False)


def print_frame(df: pd.DataFrame, title: str | None = None, *, out: Console | None = None) -> None:
    """Print a DataFrame as a rich table; every header and value is literal text."""
    t = Table(title=Text(title) if title else None)
    for c in df.columns:
        t.add_column(Text(str(c)))
    for r in df.itertuples(index=False):
        t.add_row(*[Text("" if v is None or (isinstance(v, float) and v != v) else str(v)) for v in r])
    (out or console).print(t)


def problems(lines: Iterable[str]) -> int:
    """Print problem lines (literally) to stderr; return how many."""
    n = 0
    for line in lines:
        say(f"- {line}", err=True)
        n += 1
    if n:
        say(f"{n} problem(s)", style="bold red", err=True)
    return n


OS_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "file name too long",
    errno.EISDIR: "is a directory (a file path is needed)",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EACCES: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or directory",
}


def fail(message: str) -> NoReturn:
    """Print one clear error line (user data literally) and exit with status 2."""
    err_console.print(Text("error: ", style="bold red") + Text(message), highlight=False)
    raise typer.Exit(code=2)


class ByuGroup(TyperGroup):
    """A command group whose commands' user errors become one clear line and exit status 2 (no traceback),
    however the command is reached (console script, ``python -m``, a test runner)."""

    def invoke(self, ctx):
        from byu.errors import ByuError

        try:
            return super().invoke(ctx)
        except ByuError as exc:
            fail(str(exc))
        except OSError as exc:
            if exc.errno in OS_ERRORS:
                fail(explain(exc))
            raise
        except RecursionError:
            fail("input nested too deeply to read")


def make_app(**kwargs) -> typer.Typer:
    """A Typer app (command group) with byu's error handling."""
    return typer.Typer(cls=ByuGroup, pretty_exceptions_enable=False, **kwargs)


def explain(exc: BaseException) -> str:
    """The one-line message for an error a user can act on (``None``-safe for OSError without a file)."""
    if isinstance(exc, OSError) and exc.errno in OS_ERRORS:
        where = exc.filename or ""
        return f"{where}: {OS_ERRORS[exc.errno]}" if where else OS_ERRORS[exc.errno]
    return str(exc)

"""Small pieces shared by the CLI modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

DataDir = Annotated[Optional[Path], typer.Option("--data-dir", envvar="BYU_DATA", help="data root (default ./data)")]


def print_frame(console: Console, df: pd.DataFrame, title: str | None = None) -> None:
    """Print a DataFrame as a rich table (every value as text)."""
    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c))
    for r in df.itertuples(index=False):
        t.add_row(*[str(v) for v in r])
    console.print(t)

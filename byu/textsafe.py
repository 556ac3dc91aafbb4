"""Text from outside (reviewer names, notes, sources) made safe for the CSV files people open in spreadsheets.

- Control characters (newlines, tabs, escapes ...) become a space: one row stays one line.
- A cell that a spreadsheet would evaluate (starting with ``=``, ``+``, ``-``, ``@``) gets a leading ``'`` so it
  is shown as text (OWASP's advice against CSV injection).
"""

from __future__ import annotations

import re

import pandas as pd

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FORMULA_START = ("=", "+", "-", "@")


def safe_cell(value: object) -> object:
    """``value`` with control characters replaced and formula starts neutralised (non-strings unchanged)."""
    if not isinstance(value, str):
        return value
    text = _CONTROL.sub(" ", value)
    if text.startswith(_FORMULA_START):
        text = "'" + text
    return text


def safe_columns(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """A copy of ``df`` whose text ``columns`` (those present) went through :func:`safe_cell`."""
    out = df.copy()
    for c in columns:
        if c in out.columns:
            out[c] = out[c].map(safe_cell).astype(object)
    return out


__all__ = ["safe_cell", "safe_columns"]

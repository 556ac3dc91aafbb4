"""Errors a user can act on: each names the file, row and field that is wrong."""

from __future__ import annotations

from pathlib import Path


class ByuError(Exception):
    """Base class of every error byu raises on purpose."""


class InputError(ByuError, ValueError):
    """Bad user input: names the file, the line (``row``: 1-based line in the file, header = 1) and the field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.row = row
        self.field = field
        self.reason = message
        where = []
        if self.file:
            where.append(self.file)
        if row is not None:
            where.append(f"line {row}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join([', '.join(where)] if where else [])}{': ' if where else ''}{message}")


class InputErrors(InputError):
    """Several input errors found in one pass (all are listed, so a user fixes them at once)."""

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = errors
        first = errors[0]
        lines = "\n".join(f"  - {e}" for e in errors)
        ValueError.__init__(self, f"{len(errors)} problem(s):\n{lines}")
        self.file, self.row, self.field, self.reason = first.file, first.row, first.field, first.reason


class VersionExistsError(ByuError):
    """A label version name is taken by different content; versions are immutable."""


class NotFoundError(ByuError, LookupError):
    """A named thing (version, tomogram, model run) does not exist."""


class TomogramChangedError(InputError):
    """A stored tomogram no longer holds the content a label version pins (it was replaced or edited since the
    version was stored): reading it for that version would mix labels with other images."""


class PinnedTomogramError(InputError):
    """An ingest would replace a stored tomogram whose content a label version pins; nothing was replaced."""

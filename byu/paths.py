"""The data root (``BYU_DATA``, default ``./data``) and the layout under it (see DESIGN.md)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from byu.errors import InputError

SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")
MAX_ID_LENGTH = 200


def check_id(value: object, *, what: str = "tomo_id", file: str | Path | None = None,
             row: int | None = None) -> str:
    """Return ``value`` as a safe path component or raise an InputError naming where it came from."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} must be a non-empty string, got {value!r}", file=file, row=row, field=what)
    if value in {".", ".."} or not SAFE_ID.match(value) or len(value) > MAX_ID_LENGTH:
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise InputError(
            f"{what} {shown!r} is not allowed: use 1-{MAX_ID_LENGTH} letters, digits, '.', '_' or '-' "
            "(no '/', not '.' or '..')", file=file, row=row, field=what,
        )
    return value


def default_root() -> Path:
    return Path(os.environ.get("BYU_DATA", "data"))


@dataclass(frozen=True)
class DataRoot:
    """Paths of the standard layout under one data root."""

    root: Path

    def __post_init__(self) -> None:
        if not isinstance(self.root, Path):
            object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def from_env(cls, root: str | Path | None = None) -> DataRoot:
        return cls(Path(root) if root is not None else default_root())

    @property
    def tomograms(self) -> Path:
        return self.root / "tomograms"

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def labels(self) -> Path:
        return self.root / "labels"

    @property
    def cv(self) -> Path:
        return self.root / "cv"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def review(self) -> Path:
        return self.root / "review"

    def tomogram(self, tomo_id: str) -> Path:
        return self.tomograms / check_id(tomo_id)

    def review_round(self, round_name: str) -> Path:
        return self.review / check_id(round_name, what="round")

    def split_path(self, version: str, folds: int, seed: int) -> Path:
        return self.cv / check_id(version, what="version") / f"skf{folds}_rd{seed}.json"

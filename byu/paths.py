"""The data root (``BYU_DATA``, default ``./data``) and the layout under it (see DESIGN.md)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from byu.errors import InputError

SAFE_ID = re.compile(r"\A[A-Za-z0-9._-]+\Z")  # \Z, not $: "$" lets a trailing newline through
MAX_ID_LENGTH = 200


def check_id(value: object, *, what: str = "tomo_id", file: str | Path | None = None,
             row: int | None = None) -> str:
    """Return ``value`` as a safe path component or raise an InputError naming where it came from."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} must be a non-empty string, got {value!r}", file=file, row=row, field=what)
    if value in {".", ".."} or not SAFE_ID.fullmatch(value) or len(value) > MAX_ID_LENGTH:
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise InputError(
            f"{what} {shown!r} is not allowed: use 1-{MAX_ID_LENGTH} letters, digits, '.', '_' or '-' "
            "(no '/', not '.' or '..')", file=file, row=row, field=what,
        )
    return value


MANAGED_FOLDERS = ("labels", "cv", "review", "tomograms", "models", "predictions", "raw", "synth")


def managed_folder(path: str | Path, data_root: str | Path) -> str | None:
    """The folder of the data root's layout (``labels``, ``cv``, ...) that ``path`` resolves into, else None."""
    try:
        rel = Path(path).resolve().relative_to(Path(data_root).resolve())
    except ValueError:
        return None
    return rel.parts[0] if len(rel.parts) > 1 and rel.parts[0] in MANAGED_FOLDERS else None


def guard_output(path: str | Path, data_root: str | Path, *, option: str = "--out", exclusive: bool = False,
                 labels_dir: str | Path | None = None) -> Path:
    """Refuse an output path of a command that would replace a file byu stored; return it as a Path.

    Refused (InputError naming the path and the option): a directory; any path inside the label store
    (``labels/``, or ``labels_dir``: versions are immutable); an existing file (or link) in the data root's other
    folders (``cv/``, ``review/``, ``tomograms/``, ``models/``, ``predictions/``, ``raw/``, ``synth/``: splits,
    review decisions, ... that byu wrote). ``exclusive=True`` is for a writer that itself never replaces an
    existing different file (``byu labels split`` writing a NEW split into ``cv/``): then only the label store and
    directories are refused here.
    """
    path = Path(path)
    labels = Path(labels_dir) if labels_dir is not None else Path(data_root) / "labels"
    try:
        path.resolve().relative_to(labels.resolve())
        inside_store = True
    except ValueError:
        inside_store = False
    if inside_store:
        raise InputError(f"{option} points inside the label store {labels}; its files belong to stored versions "
                         "and are never overwritten: write somewhere else (or store a version with --version)",
                         file=path, field=option)
    if path.is_dir():
        raise InputError(f"{option} is a directory; give a file path", file=path, field=option)
    folder = managed_folder(path, data_root)
    if not exclusive and folder is not None and (path.exists() or path.is_symlink()):
        raise InputError(f"{option} would replace a file byu stored in {folder}/ of the data root {data_root}; "
                         "stored files are never overwritten: choose another path", file=path, field=option)
    return path


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

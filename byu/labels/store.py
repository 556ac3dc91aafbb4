"""The versioned label store: ``labels/<version>.csv`` + ``.manifest.json`` + ``.changes.csv``.

A version is committed when its manifest exists (written last). Versions are immutable: putting an existing
name again is accepted only when the table is byte-identical (then nothing is rewritten); every file is
written atomically, so a crash leaves either no version or a whole one, and never touches other versions.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from byu import __version__
from byu.atomic import sha256_bytes, sha256_file, write_bytes, write_json
from byu.errors import InputError, NotFoundError, VersionExistsError
from byu.labels.diff import CHANGE_COLUMNS, diff_tables
from byu.labels.formats import read_labels, to_csv_bytes
from byu.paths import check_id


class Manifest(BaseModel):
    """What ``<version>.manifest.json`` records."""

    name: str
    parents: list[str] = Field(default_factory=list)
    created_at: str
    producer: str
    counts: dict[str, int]
    sha256: str
    changes_sha256: str | None = None
    byu_version: str = __version__
    extra: dict[str, Any] = Field(default_factory=dict)


def table_counts(df: pd.DataFrame) -> dict[str, int]:
    return {
        "tomograms": int(len(df)),
        "motors": int(df["num_motors"].sum()) if len(df) else 0,
        "tomograms_with_motors": int((df["num_motors"] > 0).sum()) if len(df) else 0,
    }


class LabelStore:
    """Immutable, atomic label versions in one directory (``<data root>/labels``)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    # paths
    def path(self, name: str) -> Path:
        return self.dir / f"{check_id(name, what='version')}.csv"

    def manifest_path(self, name: str) -> Path:
        return self.dir / f"{check_id(name, what='version')}.manifest.json"

    def changes_path(self, name: str) -> Path:
        return self.dir / f"{check_id(name, what='version')}.changes.csv"

    # queries
    def exists(self, name: str) -> bool:
        return self.manifest_path(name).exists()

    def names(self) -> list[str]:
        if not self.dir.exists():
            return []
        return sorted(p.name[: -len(".manifest.json")] for p in self.dir.glob("*.manifest.json"))

    def _require(self, name: str) -> None:
        if not self.exists(name):
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(f"label version {name!r} not found in {self.dir} (known: {known})")

    def manifest(self, name: str) -> Manifest:
        self._require(name)
        return Manifest.model_validate_json(self.manifest_path(name).read_text())

    def get(self, name: str, *, verify: bool = True) -> pd.DataFrame:
        """The table of a committed version (checked against its manifest's sha256)."""
        m = self.manifest(name)
        path = self.path(name)
        if verify and sha256_file(path) != m.sha256:
            raise InputError(f"content does not match the manifest sha256 of version {name!r}; "
                             "the file was changed after it was stored", file=path)
        return read_labels(path)

    def changes(self, name: str) -> pd.DataFrame:
        self._require(name)
        p = self.changes_path(name)
        if not p.exists():
            return pd.DataFrame(columns=CHANGE_COLUMNS)
        return pd.read_csv(p, dtype={"tomo_id": str, "action": str, "source": str, "case_id": str,
                                     "reviewer": str}, keep_default_na=True)

    def resolve(self, ref: str | Path) -> tuple[pd.DataFrame, str | None]:
        """A table from a stored version name or a CSV path; returns ``(table, version name or None)``."""
        ref_s = str(ref)
        p = Path(ref_s)
        if p.suffix.lower() == ".csv" or p.exists() or "/" in ref_s:
            return read_labels(p), None
        return self.get(ref_s), ref_s

    # writing
    def put(self, name: str, df: pd.DataFrame, *, parents: list[str] | tuple[str, ...] = (),
            producer: str = "byu", changes: pd.DataFrame | None = None,
            extra: dict[str, Any] | None = None) -> Manifest:
        """Store ``df`` as version ``name``.

        ``changes`` (``CHANGE_COLUMNS``) is the audit trail against ``parents[0]``; when omitted it is computed
        with :func:`byu.labels.diff.diff_tables`. Re-putting byte-identical content is a no-op that returns the
        existing manifest; different content under an existing name raises ``VersionExistsError``.
        """
        check_id(name, what="version")
        data = to_csv_bytes(df)
        digest = sha256_bytes(data)
        if self.exists(name):
            existing = self.manifest(name)
            if existing.sha256 == digest and sha256_file(self.path(name)) == digest:
                return existing
            raise VersionExistsError(
                f"label version {name!r} already exists with different content; versions are immutable — "
                "choose a new name")
        for p in parents:
            self._require(p)
        if changes is None:
            if parents:
                changes = diff_tables(self.get(parents[0]), df, source=producer)
            else:
                changes = pd.DataFrame(columns=CHANGE_COLUMNS)
        changes = changes.reindex(columns=CHANGE_COLUMNS)
        buf = io.StringIO()
        changes.to_csv(buf, index=False, lineterminator="\n")
        changes_bytes = buf.getvalue().encode("utf-8")
        self.dir.mkdir(parents=True, exist_ok=True)
        write_bytes(self.path(name), data)
        write_bytes(self.changes_path(name), changes_bytes)
        manifest = Manifest(
            name=name, parents=list(parents), producer=producer,
            created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            counts=table_counts(df), sha256=digest, changes_sha256=sha256_bytes(changes_bytes),
            extra=json.loads(json.dumps(extra or {}, default=str)),
        )
        write_json(self.manifest_path(name), manifest.model_dump())
        return manifest

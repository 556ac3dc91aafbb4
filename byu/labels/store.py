"""The versioned label store: immutable, atomic, audited label versions in one directory (``<data>/labels``).

A version ``NAME`` is these files:

- ``NAME.tomograms.csv`` and ``NAME.picks.csv``: its content (:class:`~byu.labels.model.LabelSet`);
- ``NAME.csv``: the view downstream training reads: the canonical motor form (byte-exact as the reference's
  ``gt*.csv``) for a motor version, the picks form ``tomo_id,particle,z,y,x,voxel_spacing`` otherwise;
- ``NAME.changes.csv``: the audit trail against its first parent (one row per change, with case, reviewer, ...);
- ``NAME.manifest.json``: parents, producer, classes, counts, the sha256 of every file; written last: a version
  exists once its manifest does.

Writing is serialized per version by an advisory lock (``.NAME.lock``, released by the kernel even when a writer
is killed), every file goes through temp + fsync + rename, and the manifest is committed with an exclusive
link, so of two writers racing for a new name exactly one wins and the other gets :class:`VersionExistsError`
(or a no-op when it would have stored the same). Re-putting a version is a no-op only when tables, changes,
parents, producer, classes and extras are all identical (the timestamp aside); anything else is refused.

New version names are 1-100 letters, digits, ``_`` or ``-`` (no ``.``), so no version's files can be another
version's. Versions written before the picks model (``NAME.csv`` + manifest only) are read as motor versions.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from byu import __version__
from byu.atomic import _fsync_dir, file_mode, remove_stale_temps, sha256_bytes, sha256_file, write_bytes
from byu.errors import InputError, NotFoundError, VersionExistsError
from byu.labels.classes import MOTOR, ParticleClass
from byu.labels.diff import CHANGE_COLUMNS, changes_csv_bytes, diff_labels, read_changes
from byu.labels.formats import labelset_view_bytes, picks_bytes, read_stored_labelset, tomograms_bytes
from byu.labels.model import LabelSet
from byu.paths import check_id, guard_output

VERSION_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,99}\Z")  # \Z, not $ (no trailing newline)
SUFFIXES = (".csv", ".picks.csv", ".tomograms.csv", ".changes.csv", ".manifest.json")


def check_version_name(name: object) -> str:
    """A name for a NEW version: 1-100 letters, digits, ``_`` or ``-``, starting with a letter or digit."""
    if not isinstance(name, str) or not VERSION_NAME.fullmatch(name):
        shown = name if not isinstance(name, str) or len(name) <= 60 else name[:57] + "..."
        raise InputError(f"version name {shown!r} is not allowed: use 1-100 letters, digits, '_' or '-' "
                         "(starting with a letter or digit; no '.', no '/')", field="version")
    return name


class Manifest(BaseModel):
    """What ``<version>.manifest.json`` records."""

    name: str
    parents: list[str] = Field(default_factory=list)
    created_at: str
    producer: str
    counts: dict[str, int]
    sha256: str = Field(description="sha256 of <name>.csv (the downstream view)")
    changes_sha256: str | None = None
    classes: list[ParticleClass] = Field(default_factory=lambda: [MOTOR])
    class_counts: dict[str, int] = Field(default_factory=dict)
    form: str = Field(default="canonical", description="form of <name>.csv: canonical (motor) or picks")
    files: dict[str, str] = Field(default_factory=dict, description="sha256 of picks and tomograms files")
    byu_version: str = __version__
    extra: dict[str, Any] = Field(default_factory=dict)
    _created: bool = PrivateAttr(default=False)

    @property
    def created(self) -> bool:
        """True when the put that returned this manifest wrote the version (False: it was already stored)."""
        return self._created

    def identity(self) -> dict[str, Any]:
        """Everything but the timestamp and byu's version: equal identities mean the same version."""
        return self.model_dump(mode="json", exclude={"created_at", "byu_version"})


@dataclass(frozen=True)
class VersionEntry:
    """One line of a store's listing: a version's manifest, or why it cannot be read (``problem``)."""

    name: str
    manifest: Manifest | None
    problem: str | None


class LabelStore:
    """Immutable, atomic label versions in one directory (``<data root>/labels``)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    # ------------------------------------------------------------------------------------------ paths
    def _base(self, name: str) -> Path:
        return self.dir / check_id(name, what="version")

    def path(self, name: str) -> Path:
        """``NAME.csv``: the downstream view of the version."""
        return self._base(name).with_name(f"{name}.csv")

    def picks_path(self, name: str) -> Path:
        return self._base(name).with_name(f"{name}.picks.csv")

    def tomograms_path(self, name: str) -> Path:
        return self._base(name).with_name(f"{name}.tomograms.csv")

    def manifest_path(self, name: str) -> Path:
        return self._base(name).with_name(f"{name}.manifest.json")

    def changes_path(self, name: str) -> Path:
        return self._base(name).with_name(f"{name}.changes.csv")

    def files(self, name: str) -> list[Path]:
        return [self.path(name), self.picks_path(name), self.tomograms_path(name), self.changes_path(name),
                self.manifest_path(name)]

    def contains(self, path: str | Path) -> bool:
        """Whether ``path`` lies inside the store directory (outputs must never go there)."""
        try:
            Path(path).resolve().relative_to(self.dir.resolve())
        except ValueError:
            return False
        return True

    def check_output(self, path: str | Path, *, option: str = "--out") -> None:
        """InputError when an output file path points into the store (its files belong to versions), names an
        existing directory or would replace a file stored in the data root around the store
        (:func:`byu.paths.guard_output`; the store is ``<data root>/labels``)."""
        guard_output(path, self.dir.parent, option=option, labels_dir=self.dir)

    # ------------------------------------------------------------------------------------------ queries
    def exists(self, name: str) -> bool:
        return self.manifest_path(name).exists()

    def names(self) -> list[str]:
        if not self.dir.exists():
            return []
        return sorted(p.name[: -len(".manifest.json")] for p in self.dir.glob("*.manifest.json")
                      if not p.name.startswith("."))

    def _require(self, name: str) -> None:
        if not self.exists(name):
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(f"label version {name!r} not found in {self.dir} (known: {known})")

    def manifest(self, name: str) -> Manifest:
        self._require(name)
        path = self.manifest_path(name)
        try:
            return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "manifest"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise InputError(f"not a valid version manifest: {where}: {first.get('msg', 'invalid')}{more}",
                             file=path) from None
        except (ValueError, RecursionError, UnicodeDecodeError) as exc:
            raise InputError(f"not a valid version manifest: {type(exc).__name__}", file=path) from None

    def versions(self) -> list[VersionEntry]:
        """Every version with its manifest, or, for one that cannot be read, why (the others are still listed)."""
        out = []
        for name in self.names():
            try:
                out.append(VersionEntry(name, self.manifest(name), None))
            except (InputError, NotFoundError, OSError) as exc:  # NotFoundError: removed while listing
                out.append(VersionEntry(name, None, getattr(exc, "reason", None) or str(exc)))
        return out

    def _verify(self, path: Path, want: str | None, name: str) -> None:
        if want is None:
            return
        if not path.exists():
            raise InputError(f"file of version {name!r} is missing", file=path)
        if sha256_file(path) != want:
            raise InputError(f"content does not match the manifest sha256 of version {name!r}; the file was "
                             "changed after it was stored", file=path)

    def get(self, name: str, *, verify: bool = True) -> LabelSet:
        """The content of a committed version (every file checked against its manifest's sha256)."""
        m = self.manifest(name)
        if verify:
            self._verify(self.path(name), m.sha256, name)
        if not m.files:  # a version written before the picks model: the canonical file is all there is
            from byu.labels.formats import read_labels

            return LabelSet.from_canonical(read_labels(self.path(name)), source=self.path(name))
        if verify:
            self._verify(self.picks_path(name), m.files.get("picks"), name)
            self._verify(self.tomograms_path(name), m.files.get("tomograms"), name)
        return read_stored_labelset(self.tomograms_path(name), self.picks_path(name), m.classes)

    def get_table(self, name: str) -> pd.DataFrame:
        """The canonical motor table of a motor version (InputError for other classes)."""
        from byu.labels.formats import to_canonical

        return to_canonical(self.get(name), source=name)

    def changes(self, name: str) -> pd.DataFrame:
        """The version's audit trail (checked against ``changes_sha256``)."""
        m = self.manifest(name)
        p = self.changes_path(name)
        if not p.exists():
            if m.changes_sha256 is not None:
                raise InputError(f"changes file of version {name!r} is missing", file=p)
            return pd.DataFrame(columns=CHANGE_COLUMNS)
        self._verify(p, m.changes_sha256, name)
        return read_changes(p)

    def resolve(self, ref: str | Path, **read_options: Any) -> tuple[LabelSet, str | None]:
        """Labels from a stored version name or a file path; returns ``(labels, version name or None)``."""
        from byu.labels.formats import read_version_file

        ref_s = str(ref)
        p = Path(ref_s)
        if p.suffix.lower() == ".csv" or p.exists() or "/" in ref_s:
            return read_version_file(p, **read_options), None
        return self.get(ref_s), ref_s

    # ------------------------------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for suffix in SUFFIXES:  # temp files of killed writers of this version: nobody else writes them now
                remove_stale_temps(self.dir, f"{name}{suffix}", older_than_s=0)
            yield
        finally:
            os.close(fd)  # releases the lock (also when the process is killed)

    def put(self, name: str, labels: LabelSet | pd.DataFrame, *, parents: Sequence[str] = (),
            producer: str = "byu", changes: pd.DataFrame | None = None,
            extra: dict[str, Any] | None = None) -> Manifest:
        """Store ``labels`` (a LabelSet, or a canonical motor table) as version ``name``; return its manifest.

        ``changes`` (``CHANGE_COLUMNS``) is the audit trail against ``parents[0]``; when omitted it is computed
        with :func:`byu.labels.diff.diff_labels`. ``manifest.created`` tells whether this call wrote it.
        """
        if isinstance(labels, pd.DataFrame):
            labels = LabelSet.from_canonical(labels)
        exists = self.exists(name)
        if not exists:
            check_version_name(name)
        for p in parents:
            self._require(p)
        view, form = labelset_view_bytes(labels)
        picks, tomos = picks_bytes(labels), tomograms_bytes(labels)
        if changes is None:
            changes = diff_labels(self.get(parents[0]), labels, source=producer) if parents \
                else pd.DataFrame(columns=CHANGE_COLUMNS)
        changes_bytes = changes_csv_bytes(changes)
        manifest = Manifest(
            name=name, parents=list(parents), producer=producer,
            created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            counts=labels.counts(), class_counts=labels.class_counts(), classes=list(labels.classes),
            sha256=sha256_bytes(view), changes_sha256=sha256_bytes(changes_bytes), form=form,
            files={"picks": sha256_bytes(picks), "tomograms": sha256_bytes(tomos)},
            extra=json.loads(json.dumps(extra or {}, default=_json_default)),
        )
        with self._lock(name):
            if self.exists(name):
                return self._same_or_refuse(name, manifest)
            write_bytes(self.path(name), view)
            write_bytes(self.picks_path(name), picks)
            write_bytes(self.tomograms_path(name), tomos)
            write_bytes(self.changes_path(name), changes_bytes)
            if not _link_exclusive(self.manifest_path(name),
                                   (manifest.model_dump_json(indent=2) + "\n").encode("utf-8")):
                return self._same_or_refuse(name, manifest)  # only a writer ignoring the lock gets here
        manifest._created = True
        return manifest

    def _same_or_refuse(self, name: str, new: Manifest) -> Manifest:
        old = self.manifest(name)
        a, b = old.identity(), new.identity()
        if not old.files:  # a version from before the picks model: its table is all that can be compared
            a = {k: a[k] for k in ("sha256", "parents")}
            b = {k: b[k] for k in ("sha256", "parents")}
        if a == b:
            self._verify(self.path(name), old.sha256, name)
            return old
        differ = [k for k in a if a.get(k) != b.get(k)]
        raise VersionExistsError(
            f"label version {name!r} already exists with different {', '.join(_FIELD_WORDS.get(k, k) for k in differ)}"
            f" (stored by {old.producer!r} at {old.created_at}); nothing was stored — versions are immutable: "
            "choose a new name")


_FIELD_WORDS = {"sha256": "labels", "changes_sha256": "changes", "files": "picks", "counts": "counts",
                "class_counts": "class counts", "extra": "details (extra)", "producer": "producer",
                "parents": "parents", "classes": "classes", "form": "form"}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return str(obj)


def _link_exclusive(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` only if ``path`` does not exist (temp file + fsync + link). False if it did."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600; the committed manifest follows the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:  # filesystems without hard links: exclusive create instead
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            try:
                with open(path, "xb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
            except FileExistsError:
                return False
        _fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


__all__ = ["LabelStore", "Manifest", "VersionEntry", "check_version_name", "SUFFIXES"]

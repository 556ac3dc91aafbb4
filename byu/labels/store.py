"""The versioned label store: immutable, atomic, audited label versions in one directory (``<data>/labels``).

A version ``NAME`` is these files:

- ``NAME.tomograms.csv`` and ``NAME.picks.csv``: its content (:class:`~byu.labels.model.LabelSet`);
- ``NAME.csv``: the view downstream training reads: the canonical motor form (byte-exact as the reference's
  ``gt*.csv``) for a motor version, the picks form ``tomo_id,particle,z,y,x,voxel_spacing`` otherwise;
- ``NAME.changes.csv``: the audit trail against its first parent (one row per change, with case, reviewer, ...);
- ``NAME.manifest.json``: parents, producer, classes, counts, the sha256 of every file; written last: a version
  exists once its manifest does.

Tomogram pins: a version records, in its manifest's ``tomograms``, the content digest
(:func:`byu.tomo.io.content_digest`) of each of its tomograms stored under ``<data root>/tomograms`` when it is put
(the field is left out when none is stored, so label-only versions are as before). :meth:`LabelStore.check_tomograms`
says when a stored tomogram is no longer what a version was stored with (:class:`~byu.errors.TomogramChangedError`,
naming the tomogram, the version and both digests): prediction, mining, the label verifier and rendering check it
before they read tomograms for a version. The ingests never replace content a version pins
(:meth:`LabelStore.check_replace` before any work, :meth:`LabelStore.replace_guard` on commit;
:class:`~byu.errors.PinnedTomogramError`) unless told to (``replace_pinned``). Versions stored before pins existed
have none: nothing to check.

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
from pydantic import BaseModel, Field, PrivateAttr, SerializerFunctionWrapHandler, ValidationError, model_serializer

from byu import __version__
from byu.atomic import _fsync_dir, file_mode, remove_stale_temps, sha256_bytes, sha256_file, write_bytes
from byu.errors import InputError, NotFoundError, PinnedTomogramError, TomogramChangedError, VersionExistsError
from byu.labels.classes import MOTOR, ParticleClass
from byu.labels.diff import CHANGE_COLUMNS, changes_csv_bytes, diff_labels, read_changes
from byu.labels.formats import labelset_view_bytes, picks_bytes, read_stored_labelset, tomograms_bytes
from byu.labels.model import LabelSet
from byu.paths import check_id, guard_output
from byu.tomo.io import META_NAME, ReplaceGuard, content_digest, read_meta

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
    tomograms: dict[str, str] = Field(
        default_factory=dict, description="content digest of each tomogram stored when the version was put "
        "(tomo_id -> byu.tomo.io.content_digest); left out of the file when empty")
    byu_version: str = __version__
    extra: dict[str, Any] = Field(default_factory=dict)
    _created: bool = PrivateAttr(default=False)

    @model_serializer(mode="wrap")
    def _without_empty_pins(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if isinstance(data, dict) and not data.get("tomograms"):
            data.pop("tomograms", None)  # label-only versions: the manifest's bytes are as before pins existed
        return data

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

    @property
    def tomograms_dir(self) -> Path:
        """``<data root>/tomograms``: where the tomograms versions pin are stored (the store is ``labels/``)."""
        return self.dir.parent / "tomograms"

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

    # ------------------------------------------------------------------------------------------ tomogram pins
    def pins(self, labels: LabelSet) -> dict[str, str]:
        """The content digest of each tomogram of ``labels`` stored under :attr:`tomograms_dir` (what ``put`` pins);
        tomograms not stored, or unreadable, get none."""
        out: dict[str, str] = {}
        if not self.tomograms_dir.is_dir():
            return out
        for tid in labels.tomo_ids:
            d = self.tomograms_dir / tid
            if (d / META_NAME).exists():
                try:
                    out[tid] = content_digest(d)
                except (InputError, NotFoundError, OSError):
                    continue
        return out

    def check_tomograms(self, name: str, tomo_ids: Sequence[str] | None = None) -> None:
        """:class:`TomogramChangedError` when a stored tomogram of version ``name`` (of ``tomo_ids``, default all it
        pins) no longer holds the content the version pins; one message names each such tomogram, the version and
        both digests. Tomograms the version does not pin (versions stored before pins, tomograms stored after the
        version) and tomograms not stored are not checked here."""
        pins = self.manifest(name).tomograms
        wanted = list(pins) if tomo_ids is None else [t for t in dict.fromkeys(tomo_ids) if t in pins]
        changed = []
        for tid in wanted:
            d = self.tomograms_dir / tid
            if not (d / META_NAME).exists():
                continue
            now = content_digest(d)
            if now != pins[tid]:
                changed.append(f"tomogram {tid!r}: version {name!r} pins content {_short(pins[tid])}, "
                               f"{d} now holds {_short(now)} ({_describe(d)})")
        if changed:
            raise TomogramChangedError(
                (changed[0] if len(changed) == 1 else f"{len(changed)} tomograms changed: " + "; ".join(changed))
                + f". They were replaced (or edited) after label version {name!r} was stored, so its labels and "
                "reviews are of other images: ingest those tomograms again as they were stored for it, or use a "
                "version stored with the current tomograms")

    def pinning(self, tomo_id: str, digest: str) -> list[str]:
        """The versions that pin ``tomo_id`` to ``digest`` (unreadable versions are skipped)."""
        return [e.name for e in self.versions()
                if e.manifest is not None and e.manifest.tomograms.get(tomo_id) == digest]

    def check_replace(self, tomo_id: str, *, doing: str = "this ingest", hint: str = "",
                      replace_pinned: bool = False) -> None:
        """Before an ingest replaces ``tomograms/<tomo_id>`` with other content: :class:`PinnedTomogramError` when a
        version pins what is stored there (unless ``replace_pinned``). ``doing`` says what would replace it,
        ``hint`` how to use the stored one instead."""
        if replace_pinned:
            return
        d = self.tomograms_dir / check_id(tomo_id)
        if not (d / META_NAME).exists():
            return
        try:
            stored = content_digest(d)
        except (InputError, NotFoundError, OSError):
            return  # unreadable: no version can be using it
        self._refuse_pinned(tomo_id, stored, doing=doing, hint=hint)

    def replace_guard(self, *, replace_pinned: bool = False) -> ReplaceGuard | None:
        """A :data:`~byu.tomo.io.ReplaceGuard` for the tomogram writer: refuses (:class:`PinnedTomogramError`) to
        replace stored content a version pins with other content (``None`` with ``replace_pinned``)."""
        if replace_pinned:
            return None

        def guard(tomo_id: str, stored: str, new: str) -> None:
            self._refuse_pinned(tomo_id, stored, doing=f"the new stack (content {_short(new)})", hint="")

        return guard

    def _refuse_pinned(self, tomo_id: str, stored: str, *, doing: str, hint: str) -> None:
        versions = self.pinning(tomo_id, stored)
        if not versions:
            return
        shown = ", ".join(repr(v) for v in versions[:5]) + \
            (f" and {len(versions) - 5} more" if len(versions) > 5 else "")
        raise PinnedTomogramError(
            f"tomograms/{tomo_id} holds the content label version(s) {shown} were stored with ({_short(stored)}: "
            f"{_describe(self.tomograms_dir / tomo_id)}); {doing} would replace it with other content, and "
            "those versions would then refuse to predict, mine and render it. Nothing was replaced. "
            f"{hint + ' ' if hint else ''}To keep both, ingest into another data root; to replace it anyway, pass "
            "--replace-pinned (replace_pinned=True)")

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
        with :func:`byu.labels.diff.diff_labels`. ``manifest.created`` tells whether this call wrote it. The
        manifest pins the content of the version's tomograms stored now (:meth:`pins`); putting a stored version
        again is refused when a tomogram both pin has other content now.
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
            tomograms=self.pins(labels),
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
        old_pins, new_pins = a.pop("tomograms", {}), b.pop("tomograms", {})  # a version from before pins: none
        if not old.files:  # a version from before the picks model: its table is all that can be compared
            a = {k: a[k] for k in ("sha256", "parents")}
            b = {k: b[k] for k in ("sha256", "parents")}
        if a == b:
            changed = sorted(t for t in old_pins.keys() & new_pins.keys() if old_pins[t] != new_pins[t])
            if changed:
                shown = ", ".join(f"{t} ({_short(old_pins[t])}, now {_short(new_pins[t])})" for t in changed[:10])
                raise VersionExistsError(
                    f"label version {name!r} already exists with these labels, but it was stored with other content "
                    f"of tomogram(s) {shown}; nothing was stored — versions are immutable: choose a new name")
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


def _short(digest: str) -> str:
    return digest[:16]


def _describe(directory: Path) -> str:
    """What a stored tomogram is, for messages: its spacing and where it came from."""
    try:
        meta = read_meta(directory)
    except (InputError, NotFoundError, OSError):
        return "unreadable"
    src = meta.source
    origin = ""
    if isinstance(src.get("copick"), dict):
        c = src["copick"]
        origin = f"copick run {c.get('run')} at {c.get('voxel_spacing')} Å, {c.get('tomo_type')}"
    elif isinstance(src.get("portal"), dict):
        origin = "portal " + ", ".join(f"{k} {v}" for k, v in src["portal"].items() if k.endswith("id"))
    elif src.get("file"):
        origin = f"file {src['file']}"
    else:
        origin = ", ".join(k for k in src) or "unknown source"
    return f"{meta.voxel_spacing:g} Å stored, from {origin}"


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

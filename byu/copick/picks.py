"""copick pick-set files: read with clear errors, written atomically under a lock, never through a symlink that
leads out of the overlay; and the note byu leaves in the pick sets it exports.

- **Reading** (:func:`load_pick_set`, :func:`parse_pick_file`): malformed JSON, a missing or non-number coordinate,
  a bad transform or a non-finite value is an :class:`~byu.errors.InputError` naming the file and the point
  (``points[3].location.y``), every problem of a file at once; never a traceback.
- **Writing** (:func:`locked`, :func:`write_pick_file`): one lock per pick set (``fcntl.flock`` on
  ``Picks/.<user>_<session>_<object>.json.lock``, released by the kernel even when a writer is killed), taken in
  path order so two exporters cannot deadlock; the file is written to a temp file beside it and renamed over it,
  so a reader sees the old file or the new one, never half of one. Other backends than a local folder are written
  through fsspec as copick does (no lock).
- **Containment** (:func:`check_inside`): a path to write whose folders (a run folder, ``Picks/``) or file is a
  symlink resolving outside the overlay root is refused, naming the link and where it leads.
- **byu's note** (``"byu"`` in the file, beside copick's fields; copick ignores it): the version exported and the
  pick sets of the same run and object whose picks the set carries (``supersedes``: user, session, and a
  fingerprint of their positions when exported). Ingest leaves such a set out when its exporter is taken too and
  it is unchanged since, so re-ingesting a project after an export gives its picks once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from byu.atomic import write_bytes
from byu.errors import InputError, InputErrors

BYU_KEY = "byu"
LOCK_TIMEOUT_S = 60.0
IDENTITY = np.eye(4)
MAX_SHOWN = 20  # problems listed per file


@dataclass
class PickSetData:
    """A pick set as stored: locations (Å, ``x, y, z``), 4x4 transforms, its trust flag and byu's note."""

    where: str
    locations: np.ndarray  # (n, 3)
    transforms: np.ndarray  # (n, 4, 4)
    trust_orientation: bool
    note: dict[str, Any] | None = None

    @property
    def centres(self) -> np.ndarray:
        """The particle centres (location + the transform's shift), as copick's ``full_positions``."""
        return self.locations + self.transforms[:, :3, 3] if len(self.locations) else self.locations

    def fingerprint(self) -> str:
        return fingerprint(self.centres)


def fingerprint(centres: np.ndarray) -> str:
    """A short sha256 of a pick set's centres (float64, in order): changes when any pick does."""
    arr = np.ascontiguousarray(np.asarray(centres, dtype="<f8").reshape(-1, 3))
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ reading
def _field(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "picks"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_pick_file(data: Any, *, where: str) -> PickSetData:
    """A pick set from the JSON object of its file (copick's model), every problem an InputError naming it."""
    from copick.models import CopickPicksFile
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise InputError(f"not a copick pick set: the file holds {type(data).__name__}, not an object", file=where)
    try:
        meta = CopickPicksFile.model_validate(data)
    except ValidationError as exc:
        errors = []
        for e in exc.errors()[:MAX_SHOWN]:
            kind = str(e.get("type", ""))
            if kind.startswith(("float", "int")):
                what = f"not a number: {_shown(e.get('input'))}"
            elif kind == "missing":
                what = "missing"
            else:
                what = f"{e.get('msg', 'invalid')}: {_shown(e.get('input'))}"
            errors.append(InputError(what, file=where, field=_field(e.get("loc", ()))))
        raise (errors[0] if len(errors) == 1 else InputErrors(errors)) from None
    points = meta.points or []
    n = len(points)
    locations = np.zeros((n, 3))
    transforms = np.zeros((n, 4, 4))
    errors = []
    for i, p in enumerate(points):
        locations[i] = (p.location.x, p.location.y, p.location.z)
        transforms[i] = p.transformation
        if not np.isfinite(locations[i]).all():
            errors.append(InputError(f"not a finite number: {p.location.x!r}, {p.location.y!r}, {p.location.z!r}",
                                     file=where, field=f"points[{i}].location"))
        if not np.isfinite(transforms[i]).all():
            errors.append(InputError("not finite numbers", file=where, field=f"points[{i}].transformation_"))
        if len(errors) >= MAX_SHOWN:
            break
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(errors)
    note = data.get(BYU_KEY)
    return PickSetData(where=where, locations=locations, transforms=transforms,
                       trust_orientation=bool(meta.trust_orientation) if meta.trust_orientation is not None else True,
                       note=note if isinstance(note, dict) else None)


def parse_pick_text(text: str, *, where: str) -> PickSetData:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} (column {exc.colno}); a half-written or damaged pick set",
                         file=where, row=exc.lineno) from None
    except RecursionError:
        raise InputError("not a copick pick set: nested too deeply", file=where) from None
    return parse_pick_file(data, where=where)


def read_pick_file(fs: Any, path: str) -> PickSetData | None:
    """The pick set at ``path`` of filesystem ``fs`` (fsspec), ``None`` when there is none."""
    try:
        with fs.open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise InputError("is a directory, not a pick set file", file=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not a text (UTF-8) file: {exc.reason} at byte {exc.start}", file=path) from None
    return parse_pick_text(text, where=path)


def load_pick_set(s: Any) -> PickSetData:
    """A copick pick set object's data. Overlay (writable) sets are read from their file, byu's note included;
    others (a portal's, a static root's) through copick. Errors name the file and the point."""
    from pydantic import ValidationError

    where = str(getattr(s, "path", "") or f"{s.user_id}_{s.session_id}_{s.pickable_object_name}")
    fs = getattr(s, "fs", None)
    if not getattr(s, "read_only", True) and fs is not None and where.endswith(".json"):
        data = read_pick_file(fs, where)
        if data is None:
            raise InputError("the pick set file disappeared while it was read (another program removed it?)",
                             file=where)
        return data
    try:
        meta = s.load()
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=where, row=exc.lineno) from None
    except ValidationError:
        try:  # the file again, for the point and field at fault
            with s.fs.open(where, "r") as fh:
                text = fh.read()
        except Exception:  # noqa: BLE001 - any backend's failure: the plain message below
            raise InputError("not a readable copick pick set", file=where) from None
        return parse_pick_text(text, where=where)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"not a readable copick pick set: {type(exc).__name__}: {exc}", file=where) from None
    return parse_pick_file(meta.model_dump(), where=where)


# ------------------------------------------------------------------------------------------------ writing
def is_local(fs: Any) -> bool:
    protocol = getattr(fs, "protocol", ())
    protocol = protocol if isinstance(protocol, (tuple, list)) else (protocol,)
    return bool({"file", "local"} & set(protocol))


def check_inside(path: str | Path, root: str | Path) -> None:
    """Refuse ``path`` (to be written) when a folder of it under ``root``, or the file itself, is a symlink that
    resolves outside ``root`` (the overlay root; ``root`` may itself be a link)."""
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    real_root = Path(os.path.realpath(root))
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        raise InputError(f"is not inside the overlay root {root}", file=path) from None
    q = root
    for part in parts:
        q = q / part
        if not q.is_symlink():
            continue
        target = Path(os.path.realpath(q))
        if target != real_root and real_root not in target.parents:
            raise InputError(f"{q} is a symlink to {target}, outside the project's overlay {root}: byu writes "
                             "nothing through it (make it a real folder, or a link inside the overlay)", file=path)


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def locked(paths: Sequence[str | Path], *, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the lock of every pick set file in ``paths`` (local files; their folders must exist), taken in path
    order; waits up to ``timeout_s`` for another writer, then refuses naming the pick set."""
    fds: list[int] = []
    try:
        for p in sorted({str(Path(p)) for p in paths}):
            lock = lock_path(p)
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            except OSError as exc:
                why = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror
                raise InputError(f"cannot open the lock file {lock}: {why}", file=p) from None
            fds.append(fd)
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise InputError(f"pick set {Path(p).stem} is being written by another process (its lock "
                                         f"{lock} has been held for over {timeout_s:g} s); nothing was written: "
                                         "try again", file=p) from None
                    time.sleep(0.02)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # releases its lock


def pick_file_bytes(*, object_name: str, user_id: str, session_id: str, run_name: str | None,
                    locations: np.ndarray, transforms: np.ndarray, trust_orientation: bool,
                    note: dict[str, Any] | None) -> bytes:
    """A pick set file as copick writes one (its fields, indent 4), plus byu's note."""
    points = [{"location": {"x": float(x), "y": float(y), "z": float(z)},
               "transformation_": [[float(v) for v in row] for row in t], "instance_id": 0, "score": 1.0}
              for (x, y, z), t in zip(np.asarray(locations, dtype=float).reshape(-1, 3),
                                      np.asarray(transforms, dtype=float).reshape(-1, 4, 4), strict=True)]
    data: dict[str, Any] = {"pickable_object_name": object_name, "user_id": user_id, "session_id": session_id,
                            "run_name": run_name, "voxel_spacing": None, "unit": "angstrom", "points": points,
                            "trust_orientation": bool(trust_orientation)}
    if note is not None:
        data[BYU_KEY] = note
    return json.dumps(data, indent=4, allow_nan=False).encode("utf-8")


def write_pick_file(fs: Any, path: str, data: bytes) -> None:
    """Write a pick set file: locally temp + fsync + rename (the caller holds its lock), else through fsspec."""
    if is_local(fs):
        write_bytes(path, data)
        return
    with fs.open(path, "wb") as fh:
        fh.write(data)


def same_positions(a: np.ndarray, b: np.ndarray, atol: float = 1e-6) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=0.0, atol=atol))


__all__ = [
    "BYU_KEY", "LOCK_TIMEOUT_S", "PickSetData", "check_inside", "fingerprint", "is_local", "load_pick_set",
    "locked", "parse_pick_file", "parse_pick_text", "pick_file_bytes", "read_pick_file", "same_positions",
    "write_pick_file",
]

"""Atomic file writes: temp file in the same directory, fsync, rename.

A process killed at any point leaves either the old file or the new one under the final
name, never a half-written file. The hidden temp file (``.<name>.<random>.tmp``) a killed writer
leaves behind is removed by the next write of the same file once it is older than
``STALE_TEMP_S`` (no live writer leaves its temp file untouched that long).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

STALE_TEMP_S = 3600.0


def current_umask() -> int:
    """The process's umask now (not at import: a test or a service may set it later).

    Read from ``/proc/self/status`` where there is one: setting the umask to read it back would, for that instant,
    apply the probe value to files other threads create."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o077)  # no /proc: the restrictive probe value, if another thread creates a file meanwhile
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 & ~umask (what a stored file must end with)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir()`` gives a new folder: 0777 & ~umask (``tempfile.mkdtemp`` gives 0700 instead)."""
    return 0o777 & ~current_umask()


def remove_stale_temps(directory: Path, name: str, *, older_than_s: float = STALE_TEMP_S) -> int:
    """Delete ``.<name>.*.tmp`` files in ``directory`` not modified for ``older_than_s`` (0: all); returns how many."""
    import time

    now, n = time.time(), 0
    for p in directory.glob(f".{name}.*.tmp"):
        try:
            if now - p.stat().st_mtime >= older_than_s:
                p.unlink()
                n += 1
        except FileNotFoundError:
            continue
    return n


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on clean exit fsync it and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, file_mode())  # mkstemp makes 0600; a shared data root needs what open() would give
    os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()

"""On-disk tomograms: ``tomograms/<tomo_id>/slice_%04d.jpg`` (uint8, along Z) + ``meta.json``.

A tomogram directory is complete only when ``meta.json`` exists; writers build the directory
under a temporary name and rename it into place, so readers never see a half-written stack.

Frames: a label row's coordinates live in the frame its ``Z,Y,X,voxel_spacing`` describe; the
stack on disk lives in ``meta.shape``/``meta.voxel_spacing``. Physical position is
``voxel * spacing`` (Å), so converting between frames is a scale by the spacing ratio.

Content digest: :func:`digest_stored` is the sha256 of what is stored, the geometry (``shape``, ``voxel_spacing``,
``original_shape``, ``original_spacing``) and then ``slice_%04d.jpg \t sha256`` of every slice in order (the
source, ``sha256``, and provenance, ``source``, are not content). The writer computes it once, on commit, and keeps
it in ``meta.json`` as ``content_sha256``; :func:`content_digest` reads it back (for a tomogram stored before the
field existed it is computed from the files). Label versions pin it (:mod:`byu.labels.store`), so a reader can tell
that ``tomograms/<tomo_id>/`` no longer holds what a version was stored with. ``content_digest(..., from_files=True)``
hashes the files themselves (memoized per process on their names, sizes and mtimes), so a slice edited in place is
seen too; :func:`content_stamp` adds those names, sizes and mtimes to the recorded digest without reading a slice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from byu import __version__
from byu.atomic import dir_mode, sha256_file, write_json
from byu.errors import InputError, NotFoundError

SLICE_PATTERN = "slice_{:04d}.jpg"
META_NAME = "meta.json"
JPEG_QUALITY = 95
CONTENT_DIGEST_FORMAT = "byu-tomogram-content/1"


class TomoMeta(BaseModel):
    """What ``meta.json`` records about a stored tomogram."""

    tomo_id: str
    shape: tuple[int, int, int] = Field(description="Z, Y, X of the stored slices")
    voxel_spacing: float = Field(gt=0, description="Å per voxel of the stored slices")
    original_shape: tuple[int, int, int] = Field(description="Z, Y, X before resampling")
    original_spacing: float = Field(gt=0, description="Å per voxel before resampling")
    clip: tuple[float, float] | None = Field(default=None, description="intensity clip values (low, high)")
    clip_percentiles: tuple[float, float] | None = None
    source: dict[str, Any] = Field(default_factory=dict, description="portal ids, synth seed, ...")
    sha256: str | None = Field(default=None, description="sha256 of the downloaded source file")
    content_sha256: str | None = Field(default=None, description="digest of the stored slices and geometry "
                                       "(digest_stored), set by the writer on commit: what label versions pin")
    byu_version: str = __version__

    @property
    def scale_from_original(self) -> float:
        """Multiply an original-frame voxel coordinate by this to get the stored frame."""
        return self.original_spacing / self.voxel_spacing


def to_frame(zyx: np.ndarray | Iterable[float], from_spacing: float, to_spacing: float) -> np.ndarray:
    """Convert voxel coordinates between frames of different spacing (Å = voxel * spacing)."""
    return np.asarray(zyx, dtype=float) * (float(from_spacing) / float(to_spacing))


def tomo_dir(root: str | Path, tomo_id: str) -> Path:
    from byu.paths import check_id

    return Path(root) / check_id(tomo_id)


def read_meta(directory: str | Path) -> TomoMeta:
    directory = Path(directory)
    path = directory / META_NAME
    if not path.exists():
        raise NotFoundError(f"{directory}: no tomogram here (missing {META_NAME})")
    try:
        return TomoMeta.model_validate_json(path.read_text())
    except ValueError as exc:
        raise InputError(f"invalid tomogram metadata: {exc}", file=path) from exc


def slice_path(directory: str | Path, z: int) -> Path:
    return Path(directory) / SLICE_PATTERN.format(z)


def read_slice(directory: str | Path, z: int) -> np.ndarray:
    with Image.open(slice_path(directory, z)) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def read_volume(directory: str | Path, z_range: tuple[int, int] | None = None) -> np.ndarray:
    """Read slices ``z_range`` (default all) as a uint8 (Z, Y, X) array."""
    meta = read_meta(directory)
    z0, z1 = z_range if z_range is not None else (0, meta.shape[0])
    z0, z1 = max(0, z0), min(meta.shape[0], z1)
    out = np.empty((max(0, z1 - z0), meta.shape[1], meta.shape[2]), dtype=np.uint8)
    for i, z in enumerate(range(z0, z1)):
        out[i] = read_slice(directory, z)
    return out


# ------------------------------------------------------------------------------------------------ content digest
def _geometry(meta: TomoMeta) -> dict[str, Any]:
    return {"shape": list(meta.shape), "voxel_spacing": float(meta.voxel_spacing),
            "original_shape": list(meta.original_shape), "original_spacing": float(meta.original_spacing)}


def digest_stored(directory: str | Path, meta: TomoMeta) -> str:
    """The content digest of the stack in ``directory`` with ``meta``'s geometry, from the files (see the module
    docstring). A missing slice is an :class:`InputError` naming it."""
    directory = Path(directory)
    h = hashlib.sha256(f"{CONTENT_DIGEST_FORMAT}\n".encode())
    h.update(json.dumps(_geometry(meta), sort_keys=True).encode() + b"\n")
    for z in range(meta.shape[0]):
        path = slice_path(directory, z)
        try:
            h.update(f"{path.name}\t{sha256_file(path)}\n".encode())
        except FileNotFoundError:
            raise InputError(f"slice {z} of the stored tomogram is missing", file=path) from None
    return h.hexdigest()


_MEMO: dict[Path, tuple[tuple[Any, ...], str]] = {}
_MEMO_LOCK = threading.Lock()


def _signature(directory: Path) -> tuple[Any, ...]:
    """Names, sizes and mtimes of the folder's files: what a cached digest is trusted on (as git trusts its index)."""
    out = []
    with os.scandir(directory) as entries:
        for e in entries:
            if e.is_file():
                st = e.stat()
                out.append((e.name, st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


def content_digest(directory: str | Path, *, from_files: bool = False) -> str:
    """The content digest of the stored tomogram in ``directory``: the one its ``meta.json`` records (written once,
    when it was stored), else, or with ``from_files``, the digest of its files (memoized per process while their
    names, sizes and mtimes are unchanged). :class:`NotFoundError` when no tomogram is there."""
    directory = Path(directory)
    meta = read_meta(directory)
    if meta.content_sha256 and not from_files:
        return meta.content_sha256
    key = directory.resolve()
    sig = _signature(directory)
    with _MEMO_LOCK:
        known = _MEMO.get(key)
    if known is not None and known[0] == sig:
        return known[1]
    digest = digest_stored(directory, meta)
    with _MEMO_LOCK:
        _MEMO[key] = (sig, digest)
    return digest


def content_stamp(directory: str | Path) -> str:
    """:func:`content_digest` (as recorded) and a digest of the folder's file names, sizes and mtimes: it changes when
    the tomogram is stored again and when a file of it is edited in place, and reads no slice (what a cache key of
    a task that reads the tomogram needs; the files' mtimes make it specific to this copy of the data)."""
    directory = Path(directory)
    sig = hashlib.sha256(json.dumps(_signature(directory)).encode()).hexdigest()
    return f"{content_digest(directory)}:{sig[:16]}"


#: ``guard(tomo_id, stored digest, new digest)``: called before a commit replaces other content; raises to refuse
ReplaceGuard = Callable[[str, str, str], None]


class TomogramWriter:
    """Write a stack slice by slice into a temp dir; ``commit`` renames it into place.

    Use as a context manager; on an exception nothing is left under the final name and any
    previous complete tomogram there is kept. ``commit`` records the content digest in ``meta.json``
    (``committed``: the meta written); ``guard`` (see :data:`ReplaceGuard`) is asked before other content replaces
    a stored tomogram, and refuses by raising (then nothing is replaced).
    """

    def __init__(self, directory: str | Path, *, guard: ReplaceGuard | None = None) -> None:
        self.final = Path(directory)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", suffix=".part", dir=self.final.parent))
        os.chmod(self.tmp, dir_mode())  # mkdtemp makes 0700; the stored folder must be what mkdir gives (umask)
        self.n = 0
        self.guard = guard
        self.committed: TomoMeta | None = None

    def write_slice(self, image: np.ndarray) -> None:
        if image.dtype != np.uint8 or image.ndim != 2:
            raise ValueError(f"slices must be 2-D uint8, got {image.dtype} {image.shape}")
        Image.fromarray(image).save(slice_path(self.tmp, self.n), quality=JPEG_QUALITY)
        self.n += 1

    def write_slices(self, block: np.ndarray) -> None:
        for image in block:
            self.write_slice(image)

    def commit(self, meta: TomoMeta) -> Path:
        if meta.shape[0] != self.n:
            raise ValueError(f"meta says {meta.shape[0]} slices but {self.n} were written")
        meta = meta.model_copy(update={"content_sha256": digest_stored(self.tmp, meta)})
        if self.guard is not None and (self.final / META_NAME).exists():
            try:
                stored: str | None = content_digest(self.final)
            except (InputError, NotFoundError):  # a broken stored tomogram: nothing anyone can be using
                stored = None
            if stored is not None and stored != meta.content_sha256:
                self.guard(meta.tomo_id, stored, str(meta.content_sha256))
        write_json(self.tmp / META_NAME, json.loads(meta.model_dump_json()))
        self.committed = meta
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            self.final.rename(old)
            self.tmp.rename(self.final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.tmp.rename(self.final)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> TomogramWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp.exists():
            self.abort()


def write_tomogram(directory: str | Path, volume: np.ndarray, meta: TomoMeta) -> Path:
    """Write a whole uint8 (Z, Y, X) volume at once (small volumes, tests, synth)."""
    with TomogramWriter(directory) as w:
        w.write_slices(volume)
        return w.commit(meta)


def iter_tomograms(root: str | Path) -> Iterator[tuple[str, Path]]:
    """Complete tomograms under ``root`` (directories holding a meta.json), sorted by id."""
    root = Path(root)
    if not root.exists():
        return
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (d / META_NAME).exists():
            yield d.name, d

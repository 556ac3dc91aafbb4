"""Your own tomograms and picks into a data root: a folder of MRC / OME-Zarr files and a CSV or STAR picks file.

:func:`import_tomograms`, in this order (every problem is found before anything is written):

1. **Tomograms**: the folder's ``*.mrc``, ``*.mrcs``, ``*.rec``, ``*.map`` files and ``*.zarr`` (OME-Zarr)
   directories matching ``pattern`` (not recursive; hidden names skipped). ``tomo_id`` = the file name without its
   suffix (``.ome.zarr`` counts as one), made safe with the copick ingest's rule
   (:func:`byu.copick.ingest.copick_tomo_id`: characters outside ``[A-Za-z0-9._-]`` become ``_``); two files with
   one ``tomo_id`` are an error. Each header is read (shape, voxel spacing): the file's own spacing (MRC
   ``cella / mx``, OME-Zarr ``scale``), ``voxel_spacing`` for files whose header has none (or zero); a file with
   neither is an error naming it. A header spacing that differs from ``voxel_spacing`` wins (a note in
   ``warnings`` lists those files).
2. **Picks** (optional; :mod:`byu.importer.picks` reads CSV and RELION 4/5 STAR files): each row's tomogram is
   matched by file name (``TS_01`` matches ``TS_01.mrc``; the made-safe ``tomo_id`` matches too), its coordinates
   become voxels ``(z, y, x)`` of the ORIGINAL tomogram, its class a byu class: ``particle`` for every pick, else
   the class column through ``class_map`` (``{"1": "ribosome"}``; needed for ``rlnClassNumber``), else the class
   column's names (built-in classes, plus a classes file's), else the classes file's only class. Every bad row
   (not a number, unknown class, tomogram not in the folder, outside its tomogram) is reported at once, naming
   file, line and field, and then nothing is stored.
3. **Preprocess** each tomogram into ``tomograms/<tomo_id>/`` as the portal and copick ingests do
   (:func:`~byu.tomo.preprocess.preprocess_tomogram`: clip, resample to ``max(target_spacing, spacing)``,
   normalize), recording the source's sha256 (an OME-Zarr: the portal download's listing digest, ``path \\t size
   \\t sha256`` of every file) and, under ``source.import``, the path, size and mtime. A tomogram stored from the
   same content with the same settings is skipped; its digest is reused without reading the file again while path,
   size and mtime are unchanged (as ``git`` trusts its index). ``force`` redoes it. A stored tomogram of that id
   that came from elsewhere (portal, copick, synth) is never replaced without ``force``, and one whose content a
   label version pins (:mod:`byu.labels.store`) never by other content without ``replace_pinned``
   (``--replace-pinned``): that is an error before any work.
4. **Label version** ``version`` (required with picks): every tomogram of the folder, each in its ORIGINAL frame
   (shape and spacing of the file, as the other ingests), those without picks too (known to hold none), every
   pick with ``source = import:<picks file name>``; the manifest's ``extra.import`` pins each tomogram's file and
   sha256. Stored only when every tomogram is stored (a failed one is reported; rerun to resume). A version name
   taken by other content is refused before any work (the store's immutability); storing the same again is a
   no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from byu.atomic import sha256_bytes, sha256_file
from byu.copick.ingest import copick_tomo_id
from byu.errors import ByuError, InputError, InputErrors, VersionExistsError
from byu.importer.picks import PickRows, class_key, parse_class_map, read_pick_rows
from byu.labels.classes import ClassRegistry, ParticleClass, read_classes_file
from byu.labels.formats import picks_bytes, tomograms_bytes
from byu.labels.model import LabelSet, _Problems, empty_picks
from byu.labels.store import LabelStore, Manifest, check_version_name
from byu.paths import DataRoot
from byu.tomo.grid import DEFAULT_TARGET_SPACING, working_spacing
from byu.tomo.io import ReplaceGuard, TomoMeta, content_digest, read_meta, tomo_dir
from byu.tomo.preprocess import DEFAULT_CLIP_PERCENTILES, open_volume, preprocess_tomogram

log = logging.getLogger(__name__)

MRC_SUFFIXES = (".mrc", ".mrcs", ".rec", ".map")
ZARR_SUFFIXES = (".ome.zarr", ".zarr")
PRODUCER = "byu tomo import"
SPACING_TOLERANCE = 1e-6
SOURCE_KEY = "import"

ProgressFn = Callable[[str, int, int, str], None]  # (tomo_id, done, total, status), as the copick ingest's


# ------------------------------------------------------------------------------------------------ results
@dataclass
class TomogramResult:
    """One tomogram of the folder: found, then stored / skipped (already stored from the same content) / failed."""

    tomo_id: str
    path: Path
    format: str  # "mrc" | "zarr"
    shape: tuple[int, int, int]  # Z, Y, X of the file
    voxel_spacing: float  # Å of the file (its header's, or the voxel_spacing option's)
    spacing_from: str  # "header" | "option"
    picks: int = 0
    status: str = "pending"
    seconds: float = 0.0
    sha256: str | None = None
    error: str | None = None
    meta: TomoMeta | None = None


@dataclass
class ImportReport:
    directory: Path
    picks_file: Path | None
    version: str | None
    labels: LabelSet | None
    manifest: Manifest | None
    tomograms: list[TomogramResult] = field(default_factory=list)
    convention: str | None = None  # how the coordinates were read (see byu.importer.picks.PickRows)
    warnings: list[str] = field(default_factory=list)
    withheld: list[str] = field(default_factory=list)  # failed tomograms: the version was not stored

    @property
    def ok(self) -> bool:
        return not self.withheld and all(t.status != "failed" for t in self.tomograms)

    def with_status(self, status: str) -> list[TomogramResult]:
        return [t for t in self.tomograms if t.status == status]

    @property
    def stored(self) -> list[TomogramResult]:
        return self.with_status("stored")

    @property
    def skipped(self) -> list[TomogramResult]:
        return self.with_status("skipped")

    @property
    def failed(self) -> list[TomogramResult]:
        return self.with_status("failed")

    @property
    def without_picks(self) -> list[str]:
        return [t.tomo_id for t in self.tomograms if not t.picks]


# ------------------------------------------------------------------------------------------------ discovery
def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    if path.is_dir():
        return next((s for s in ZARR_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)
    return next((s for s in MRC_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)


def find_tomograms(directory: str | Path, *, pattern: str = "*") -> list[tuple[Path, str, str]]:
    """``(path, file stem, tomo_id)`` of the folder's tomograms, sorted by ``tomo_id`` (see the module docstring).
    Raises when the folder is missing or holds none, or two files have one ``tomo_id``."""
    folder = Path(directory)
    if not folder.exists():
        raise InputError("folder not found", file=folder)
    if not folder.is_dir():
        raise InputError("is not a folder; give the folder that holds the tomograms", file=folder)
    found: list[tuple[Path, str, str]] = []
    problems: list[InputError] = []
    by_id: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not fnmatch(path.name, pattern):
            continue
        suffix = _suffix(path)
        if suffix is None:
            continue
        stem = path.name[: -len(suffix)]
        try:
            tid = copick_tomo_id(stem)
        except InputError as exc:
            problems.append(InputError(f"cannot be a tomo_id: {exc.reason}", file=path))
            continue
        if tid in by_id:
            problems.append(InputError(f"{by_id[tid].name!r} and {path.name!r} both become tomo_id {tid!r}: "
                                       "rename one (or leave one out with --pattern)", file=path))
            continue
        by_id[tid] = path
        found.append((path, stem, tid))
    if problems:
        raise problems[0] if len(problems) == 1 else InputErrors(problems)
    if not found:
        kinds = ", ".join("*" + s for s in MRC_SUFFIXES)
        raise InputError(f"no tomograms matching {pattern!r} here (looked for {kinds} files and *.zarr OME-Zarr "
                         "folders)", file=folder)
    return sorted(found, key=lambda f: f[2])


def _stat(path: Path) -> dict[str, int]:
    """``size`` and ``mtime_ns`` of a file, or of a directory's files (their total size, the latest mtime)."""
    if not path.is_dir():
        st = path.stat()
        return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
    size, mtime, files = 0, 0, 0
    for root, _, names in os.walk(path):
        for n in names:
            st = os.stat(os.path.join(root, n))
            size, mtime, files = size + st.st_size, max(mtime, st.st_mtime_ns), files + 1
    return {"size": int(size), "mtime_ns": int(mtime), "files": files}


def source_digest(path: str | Path) -> str:
    """sha256 of a file; of a directory (OME-Zarr), the portal download's listing digest: sha256 of the sorted
    lines ``relative path \\t size \\t sha256`` of its files."""
    p = Path(path)
    if not p.is_dir():
        return sha256_file(p)
    listing = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        rel = f.relative_to(p).as_posix()
        listing.update(f"{rel}\t{f.stat().st_size}\t{sha256_file(f)}\n".encode())
    return listing.hexdigest()


def _stored_meta(data: DataRoot, tomo_id: str) -> TomoMeta | None:
    try:
        return read_meta(tomo_dir(data.tomograms, tomo_id))
    except ByuError:
        return None


def _cached_digest(meta: TomoMeta | None, path: Path, stat: Mapping[str, int]) -> str | None:
    """The stored tomogram's sha256 when it came from this very file, unchanged (path, size, mtime)."""
    if meta is None or not meta.sha256:
        return None
    own = meta.source.get(SOURCE_KEY) or {}
    same = own.get("path") == str(path.resolve()) and all(own.get(k) == v for k, v in stat.items())
    return meta.sha256 if same else None


def _is_current(meta: TomoMeta | None, digest: str, spacing: float, target_spacing: float,
                clip_percentiles: tuple[float, float]) -> bool:
    """Stored from this content at this original spacing, with these settings."""
    return (meta is not None and meta.sha256 == digest
            and abs(meta.original_spacing - spacing) < SPACING_TOLERANCE
            and abs(meta.voxel_spacing - working_spacing(spacing, target_spacing)) < SPACING_TOLERANCE
            and tuple(meta.clip_percentiles or ()) == tuple(clip_percentiles))


# ------------------------------------------------------------------------------------------------ picks
@dataclass
class _Resolved:
    tomo_index: np.ndarray  # per pick row: index into the tomograms (-1: not found)
    classes: list[ParticleClass]
    class_names: list[str]  # per row ("" where unresolved)


UNUSABLE = -3  # a pick's tomogram is in the folder but has a problem of its own (reported with the tomograms')


def _name_index(tomos: list[TomogramResult], stems: list[str], unusable: Iterable[str]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, (t, stem) in enumerate(zip(tomos, stems, strict=True)):
        index.setdefault(stem, i)
        index.setdefault(t.tomo_id, i)
    for name in unusable:
        index.setdefault(name, UNUSABLE)
    return index


def _match_tomogram(name: str, index: Mapping[str, int]) -> int:
    candidates = [name]
    low = name.lower()
    for s in (*ZARR_SUFFIXES, *MRC_SUFFIXES):
        if low.endswith(s) and len(name) > len(s):
            candidates.append(name[: -len(s)])
            break
    for c in list(candidates):
        try:
            candidates.append(copick_tomo_id(c))
        except InputError:
            pass
    return next((index[c] for c in candidates if c in index), -1)


def _resolve(rows: PickRows, tomos: list[TomogramResult], stems: list[str], registry: ClassRegistry, *,
             particle: str | None, class_map: dict[str, str] | None, default_class: str | None, folder: Path,
             unusable: Iterable[str], problems: _Problems) -> _Resolved:
    n = len(rows)
    index = _name_index(tomos, stems, unusable)
    where = np.array([_match_tomogram(name, index) if name and name != "nan" else -2 for name in rows.names],
                     dtype=np.int64)
    missing: dict[str, list[int]] = {}
    for i in map(int, np.flatnonzero(where == -1)):
        missing.setdefault(rows.names[i], []).append(int(i))
    for name, idx in missing.items():
        first = idx[0]
        problems.add(f"{rows.row_label(first)}tomogram {name!r} ({len(idx)} pick(s)) is not in {folder} (found: "
                     f"{', '.join(stems[:10])}{' ...' if len(stems) > 10 else ''})", line=rows.lines[first],
                     field=rows.tomogram_field, kind="tomogram not found")

    known = set(registry)
    declared: list[str] = []
    names = [""] * n
    if particle is None and class_map is None and rows.classes is None:
        particle = default_class
    if particle is not None:
        if particle not in known:
            raise InputError(f"unknown particle class {particle!r}; known: {', '.join(registry)} (add others with "
                             "--classes-file)", field="--particle")
        declared = [particle]
        names = [particle] * n
    elif class_map is not None:
        unknown = [v for v in dict.fromkeys(class_map.values()) if v not in known]
        if unknown:
            raise InputError(f"unknown particle class(es) {unknown}; known: {', '.join(registry)} (add others with "
                             "--classes-file)", field="--class-map")
        if rows.classes is None:
            raise InputError("--class-map maps a class column, and the picks have none (particle / "
                             "rlnClassNumber): give --particle NAME instead", file=rows.path, field="--class-map")
        declared = list(dict.fromkeys(class_map.values()))
        keys = ", ".join(f"{k}={v}" for k, v in class_map.items())
        for i, cell in enumerate(rows.classes):
            mapped = class_map.get(class_key(cell))
            if mapped is None:
                problems.add(f"{rows.row_label(i)}class {cell!r} is not in --class-map ({keys})", line=rows.lines[i],
                             field=str(rows.class_field), kind="not in --class-map")
            else:
                names[i] = mapped
    elif rows.classes is not None:
        if rows.class_field == "rlnClassNumber":
            raise InputError("rlnClassNumber holds numbers: say which byu class each is with --class-map "
                             "1=ribosome,2=... (or give --particle NAME for every pick)", file=rows.path,
                             field="rlnClassNumber")
        for i, cell in enumerate(rows.classes):
            if not cell:
                problems.add(f"{rows.row_label(i)}empty particle class", line=rows.lines[i],
                             field=str(rows.class_field), kind="empty class")
            elif cell not in known:
                problems.add(f"{rows.row_label(i)}unknown particle class {cell!r}; known: {', '.join(registry)} "
                             "(add others with --classes-file)", line=rows.lines[i], field=str(rows.class_field),
                             kind="unknown class")
            else:
                names[i] = cell
        declared = list(dict.fromkeys(c for c in names if c))
    else:
        column = "rlnClassNumber" if rows.format == "star" else "particle"
        raise InputError(f"the picks have no class column ({column}): give --particle NAME, the class of every "
                         "pick", file=rows.path, field=column)
    return _Resolved(tomo_index=where, classes=[registry[c] for c in declared], class_names=names)


def _picks_table(rows: PickRows, resolved: _Resolved, tomos: list[TomogramResult], *,
                 problems: _Problems) -> tuple[pd.DataFrame, list[int]]:
    """The picks in voxels ``(z, y, x)`` of their tomogram's original grid, with the file line of each."""
    n = len(rows)
    zyx = np.full((n, 3), np.nan)
    for t_i, t in enumerate(tomos):
        sel = np.flatnonzero(resolved.tomo_index == t_i)
        if sel.size:
            zyx[sel] = rows.to_voxels(sel, t.shape, t.voxel_spacing)
            t.picks = int(sel.size)
    axis_field = {0: rows.xyz_fields[2], 1: rows.xyz_fields[1], 2: rows.xyz_fields[0]}
    axis_text = {0: 2, 1: 1, 2: 0}
    for i in range(n):
        t_i = int(resolved.tomo_index[i])
        if t_i < 0 or not np.isfinite(rows.xyz[i]).all():
            continue
        t = tomos[t_i]
        for a in range(3):
            v = float(zyx[i, a])
            if not (np.isfinite(v) and 0.0 <= v < t.shape[a]):
                problems.add(f"{rows.row_label(i)}{rows.xyz_text[i][axis_text[a]]!r} is voxel {v:.6g} of "
                             f"{t.tomo_id}, outside [0, {t.shape[a]}) ({'ZYX'[a]} size of {t.path.name}); "
                             f"{rows.hint()}", line=rows.lines[i], field=axis_field[a], kind="outside")
    keep = np.flatnonzero(resolved.tomo_index >= 0)
    source = f"import:{rows.path.name}"
    picks = pd.DataFrame({
        "tomo_id": np.array([tomos[int(resolved.tomo_index[i])].tomo_id for i in keep], dtype=object),
        "particle": np.array([resolved.class_names[i] for i in keep], dtype=object),
        "z": zyx[keep, 0], "y": zyx[keep, 1], "x": zyx[keep, 2],
        "source": np.full(len(keep), source, dtype=object),
        "user_id": np.full(len(keep), "", dtype=object), "session_id": np.full(len(keep), "", dtype=object),
    }) if len(keep) else empty_picks()
    lines = [rows.lines[i] or 0 for i in keep]
    return picks, lines


def _tomograms_table(tomos: list[TomogramResult]) -> pd.DataFrame:
    return pd.DataFrame({
        "tomo_id": [t.tomo_id for t in tomos], "Z": [t.shape[0] for t in tomos], "Y": [t.shape[1] for t in tomos],
        "X": [t.shape[2] for t in tomos], "voxel_spacing": [t.voxel_spacing for t in tomos],
    })


def _version_extra(rows: PickRows, tomos: list[TomogramResult], *, particle: str | None,
                   class_map: dict[str, str] | None, target_spacing: float) -> dict[str, Any]:
    """The manifest's ``extra``: how the picks were read, and each tomogram's file and content (its pin)."""
    return {SOURCE_KEY: {
        "picks": rows.path.name, "picks_sha256": sha256_file(rows.path), "format": rows.format,
        "coordinates": rows.convention, "particle": particle, "class_map": class_map,
        "target_spacing": float(target_spacing),
        "tomograms": {t.tomo_id: {"file": t.path.name, "sha256": t.sha256, "voxel_spacing": t.voxel_spacing,
                                  "spacing_from": t.spacing_from} for t in tomos},
    }}


def _same_version_or_refuse(store: LabelStore, version: str, labels: LabelSet, extra: dict[str, Any]) -> None:
    """Before any work: a stored ``version`` must hold what this import would store (then storing is a no-op)."""
    m = store.manifest(version)
    differ = [what for what, same in (
        ("picks or tomograms", m.files.get("picks") == sha256_bytes(picks_bytes(labels))
         and m.files.get("tomograms") == sha256_bytes(tomograms_bytes(labels))),
        ("classes", list(m.classes) == list(labels.classes)),
        ("producer", m.producer == PRODUCER),
        ("details (picks file, tomogram contents)", m.extra == json.loads(json.dumps(extra))),
    ) if not same]
    if differ:
        raise VersionExistsError(
            f"label version {version!r} already exists with different {', '.join(differ)} (stored by "
            f"{m.producer!r} at {m.created_at}); nothing was done — versions are immutable: choose a new name")


def _digest(t: TomogramResult, data: DataRoot, *, force: bool) -> str:
    """The content digest of ``t``'s file: the stored one while path, size and mtime are unchanged (not with
    ``force``), else read from the file."""
    cached = None if force else _cached_digest(_stored_meta(data, t.tomo_id), t.path, _stat(t.path))
    return cached or source_digest(t.path)


# ------------------------------------------------------------------------------------------------ import
def _positive(value: float | None, what: str) -> None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise InputError(f"must be a positive number of Å, got {value!r}", field=what)


def import_tomograms(
    data_root: str | Path | DataRoot,
    directory: str | Path,
    *,
    picks: str | Path | None = None,
    picks_format: str = "auto",
    version: str | None = None,
    classes_file: str | Path | None = None,
    registry: ClassRegistry | None = None,
    particle: str | None = None,
    class_map: str | Mapping[Any, str] | None = None,
    coordinates: str = "auto",
    pattern: str = "*",
    target_spacing: float = DEFAULT_TARGET_SPACING,
    voxel_spacing: float | None = None,
    clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES,
    force: bool = False,
    progress: ProgressFn | None = None,
    replace_pinned: bool = False,
    **preprocess_options: Any,
) -> ImportReport:
    """Import the tomograms of ``directory`` (and the picks of ``picks`` as label version ``version``) into
    ``data_root``; see the module docstring for every rule. Rerunnable: stored tomograms are skipped, the same
    version again is a no-op.

    ``progress(tomo_id, done, total, status)`` is called before (``preprocessing``) and after (``stored`` /
    ``skipped`` / ``failed``) each tomogram. ``preprocess_options`` go to
    :func:`~byu.tomo.preprocess.preprocess_tomogram` (``jpeg_workers``, ``slab_bytes``, ...). ``replace_pinned``:
    replace stored tomograms a label version pins (those versions then refuse to predict, mine and render them);
    without it that is a :class:`~byu.errors.PinnedTomogramError`.
    """
    data = data_root if isinstance(data_root, DataRoot) else DataRoot.from_env(data_root)
    folder = Path(directory)
    picks_path = Path(picks) if picks is not None else None
    if picks_path is not None and version is None:
        raise InputError("give the label version to store the picks as (--version NAME)", field="--version")
    if picks_path is None and version is not None:
        raise InputError("--version stores picks: give them with --picks FILE (or leave --version out to import "
                         "the tomograms only)", field="--picks")
    if particle is not None and class_map is not None:
        raise InputError("give --particle (one class for every pick) or --class-map, not both", field="--particle")
    _positive(voxel_spacing, "--voxel-spacing")
    _positive(target_spacing, "--spacing")
    store = LabelStore(data.labels)
    if version is not None and not store.exists(version):
        check_version_name(version)
    file_classes = read_classes_file(classes_file) if classes_file is not None else []
    registry = (registry or ClassRegistry()).with_classes(file_classes)
    default_class = file_classes[0].name if len(file_classes) == 1 else None  # "the single class given"
    cmap = parse_class_map(class_map)

    # 1. tomograms: headers only
    found = find_tomograms(folder, pattern=pattern)
    problems: list[InputError] = []
    warnings: list[str] = []
    tomos: list[TomogramResult] = []
    stems: list[str] = []
    overruled: list[str] = []  # header spacings that differ from --voxel-spacing
    unusable: list[str] = []  # stem and tomo_id of the files with a problem
    pinned: list[InputError] = []  # stored content a version pins that this import would replace
    for path, stem, tid in found:
        unusable += [stem, tid]
        try:
            with open_volume(path) as src:
                shape, header = src.shape, src.voxel_spacing
                fmt = src.format
        except InputError as exc:
            problems.append(exc)
            continue
        if header and math.isfinite(header) and header > 0:
            spacing, spacing_from = float(header), "header"
            if voxel_spacing is not None and abs(voxel_spacing - spacing) > 1e-3 * spacing:
                overruled.append(f"{path.name} {spacing:g} Å")
        elif voxel_spacing is not None:
            spacing, spacing_from = float(voxel_spacing), "option"
        else:
            problems.append(InputError("the header gives no voxel spacing: pass --voxel-spacing (Å per voxel of "
                                       "the file)", file=path, field="voxel_spacing"))
            continue
        meta = _stored_meta(data, tid)
        if meta is not None and SOURCE_KEY not in meta.source and not force:
            origin = ", ".join(k for k in meta.source if k not in ("file", "format")) or "elsewhere"
            problems.append(InputError(f"tomograms/{tid} is already stored from another source ({origin}, file "
                                       f"{meta.source.get('file')!r}); rename this file, or pass --force to "
                                       "replace it", file=path))
            continue
        t = TomogramResult(tomo_id=tid, path=path, format=fmt, shape=shape, voxel_spacing=spacing,
                           spacing_from=spacing_from)
        try:
            _refuse_replacing_pinned(store, data, t, meta, target_spacing=target_spacing,
                                     clip_percentiles=clip_percentiles, force=force, replace_pinned=replace_pinned)
        except InputError as exc:
            pinned.append(exc)  # raised after the version's own check (a taken name is said first)
        except OSError as exc:
            problems.append(InputError(f"cannot read the tomogram: {exc.strerror or exc}", file=path))
            continue
        tomos.append(t)
        stems.append(stem)
        del unusable[-2:]

    if overruled:
        warnings.append(f"--voxel-spacing {voxel_spacing:g} Å is for files whose header gives none; these have their "
                        f"own, which is used: {', '.join(overruled[:10])}{' ...' if len(overruled) > 10 else ''}")

    # 2. picks: every row checked against the tomograms before anything is written
    labels: LabelSet | None = None
    rows: PickRows | None = None
    if picks_path is not None:
        rows = read_pick_rows(picks_path, fmt=picks_format, coordinates=coordinates)
        row_problems = _Problems(picks_path)
        resolved = _resolve(rows, tomos, stems, registry, particle=particle, class_map=cmap,
                            default_class=default_class, folder=folder, unusable=unusable, problems=row_problems)
        table, lines = _picks_table(rows, resolved, tomos, problems=row_problems)
        # the file's problems in file order, after the tomograms' own
        problems.extend(sorted([*rows.problems, *row_problems.errors],
                               key=lambda e: (e.row is not None, e.row or 0)))
        if problems:
            raise problems[0] if len(problems) == 1 else InputErrors(problems)
        labels = LabelSet.build(_tomograms_table(tomos), table, resolved.classes, source=picks_path,
                                pick_lines=lines)
        if store.exists(str(version)):  # refused before any work, tomogram contents included
            try:
                for t in tomos:
                    t.sha256 = _digest(t, data, force=force)
            except OSError as exc:
                raise InputError(f"cannot read the tomogram: {exc.strerror or exc}", file=exc.filename) from None
            _same_version_or_refuse(store, str(version), labels, _version_extra(
                rows, tomos, particle=particle, class_map=cmap, target_spacing=target_spacing))
    elif problems:
        raise problems[0] if len(problems) == 1 else InputErrors(problems)
    if pinned:
        raise pinned[0] if len(pinned) == 1 else InputErrors(pinned)

    report = ImportReport(directory=folder, picks_file=picks_path, version=version, labels=labels, manifest=None,
                          tomograms=tomos, convention=rows.convention if rows is not None else None,
                          warnings=warnings)
    # 3. preprocess
    total = len(tomos)
    for i, t in enumerate(tomos):
        _import_one(t, data, target_spacing=target_spacing, clip_percentiles=clip_percentiles, force=force,
                    progress=progress, done=i, total=total,
                    guard=store.replace_guard(replace_pinned=replace_pinned), **preprocess_options)
        if progress:
            progress(t.tomo_id, i + 1, total, t.status)
    failed = [t.tomo_id for t in tomos if t.status == "failed"]
    if failed:
        report.withheld = failed if labels is not None else []
        return report

    # 4. the version
    if labels is not None and version is not None and rows is not None:
        extra = _version_extra(rows, tomos, particle=particle, class_map=cmap, target_spacing=target_spacing)
        report.manifest = store.put(version, labels, producer=PRODUCER, extra=extra)
    return report


def _refuse_replacing_pinned(store: LabelStore, data: DataRoot, t: TomogramResult, meta: TomoMeta | None, *,
                             target_spacing: float, clip_percentiles: tuple[float, float], force: bool,
                             replace_pinned: bool) -> None:
    """Before any work: :class:`~byu.errors.PinnedTomogramError` when importing ``t`` would replace stored content
    a label version pins. The file's digest is read only for such a tomogram (kept in ``t.sha256``); with
    ``force`` a tomogram made from the same file is redone and the writer's guard compares what it made."""
    if meta is None or replace_pinned:
        return
    try:
        stored = content_digest(tomo_dir(data.tomograms, t.tomo_id))
    except ByuError:
        return
    if not store.pinning(t.tomo_id, stored):
        return
    t.sha256 = _digest(t, data, force=force)
    if _is_current(meta, t.sha256, t.voxel_spacing, target_spacing, clip_percentiles):
        return
    store.check_replace(t.tomo_id, doing=f"{t.path.name} ({t.voxel_spacing:g} Å, stored at "
                        f"{working_spacing(t.voxel_spacing, target_spacing):g} Å)",
                        hint=f"To keep the stored one, leave {t.path.name} out (--pattern) or rename it (another "
                        "tomo_id).")


def _import_one(t: TomogramResult, data: DataRoot, *, target_spacing: float, clip_percentiles: tuple[float, float],
                force: bool, progress: ProgressFn | None, done: int, total: int, guard: ReplaceGuard | None = None,
                **options: Any) -> None:
    t0 = time.perf_counter()
    try:
        stat = _stat(t.path)
        meta = _stored_meta(data, t.tomo_id)
        known = t.sha256 or (None if force else _cached_digest(meta, t.path, stat))  # t.sha256: checked already
        if known is not None and not force and _is_current(meta, known, t.voxel_spacing, target_spacing,
                                                           clip_percentiles):
            t.status, t.sha256, t.meta = "skipped", known, meta
            return
        if progress:
            progress(t.tomo_id, done, total, "preprocessing")
        t.sha256 = known or source_digest(t.path)
        if not force and _is_current(meta, t.sha256, t.voxel_spacing, target_spacing, clip_percentiles):
            t.status, t.meta = "skipped", meta
            return
        source = {SOURCE_KEY: {"path": str(t.path.resolve()), **stat, "spacing_from": t.spacing_from}}
        t.meta = preprocess_tomogram(t.path, data.tomograms, tomo_id=t.tomo_id, original_spacing=t.voxel_spacing,
                                     target_spacing=target_spacing, clip_percentiles=clip_percentiles,
                                     source=source, sha256=t.sha256, guard=guard, **options)
        t.status = "stored"
    except (ByuError, OSError) as exc:  # OSError: local trouble (disk full, file gone...), reported like the rest
        t.status, t.error = "failed", str(exc)
    finally:
        t.seconds = time.perf_counter() - t0
        log.debug("tomo import %s (%s, %s @ %g Å): %s in %.2f s", t.tomo_id, t.path.name,
                  "x".join(map(str, t.shape)), t.voxel_spacing, t.status, t.seconds)


__all__ = ["ImportReport", "MRC_SUFFIXES", "PRODUCER", "TomogramResult", "ZARR_SUFFIXES", "find_tomograms",
           "import_tomograms", "source_digest"]

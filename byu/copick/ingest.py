"""A copick project into a data root: its tomograms preprocessed like portal tomograms, its picks a label version.

For every run of the project (or of ``runs``):

1. **Picks**: the pick sets of the chosen objects (default: every particle object of the config), optionally only
   those of some ``user_id`` s / ``session_id`` s (copick's own ids: ``_`` is read as ``-``, as copick stores
   them). Positions are the particle centres copick gives (``CopickPicks.full_positions()``: location plus the
   transform's shift), in Å, ``x, y, z``.
2. **Tomogram** (:func:`choose_tomogram`): the given ``voxel_spacing`` and ``tomo_type`` when given, else the
   largest voxel spacing <= ``target_spacing`` (the least resampling: it is stored at the target spacing anyway;
   the smallest spacing above the target when none is below), and at that spacing the tomogram type ranked first
   in ``DEFAULT_TOMO_TYPES`` (``wbp``, ``denoised``, ...; an exact name first, then a name starting with one of
   them such as ``wbp-denoised``, then alphabetical).
3. **Frame**: the run's label frame is that tomogram's full-resolution grid (its shape at its voxel spacing), so a
   pick's voxel ``(z, y, x) = (z_Å, y_Å, x_Å) / spacing`` exactly. Picks outside that grid are left out and
   reported (``dropped``), as the portal ingest does.
4. **Preprocess** into ``tomograms/<tomo_id>/`` (``tomo_id`` = the run name with characters outside
   ``[A-Za-z0-9._-]`` made ``_``, as the portal's); a tomogram already stored from the same copick tomogram (same
   run, spacing, type and array fingerprint) and settings is skipped. A stored tomogram that a label version pins
   (:mod:`byu.labels.store`) is never replaced by other content (another spacing, type, target spacing or source):
   that is an error before any work, saying which options give the stored one and that ``replace_pinned``
   (``--replace-pinned``) replaces it anyway. A tomogram on a non-local backend, or whose
   chunks are too deep to read in place, is first copied (its full-resolution array, chunks as they are) to
   ``raw/<tomo_id>.copick.zarr`` and read from there, so nothing is ever written into the project.
5. **Classes**: one per object: the registry's class when the object's name is one (the built-ins, plus a classes
   file's), else a new class from the object (name, radius in Å, identifier as ``go_id``). The project's radius
   wins: a registry class whose radius the object gives otherwise takes the object's (and so does its match
   radius when that was the radius), and the report says so (``radii``).
6. **Provenance** per pick: ``source = copick:<config file name>``, ``user_id`` and ``session_id`` of its pick set,
   and ``transform`` (copick's 4x4 matrix) when its pick set trusts its orientations and the matrix is not the
   identity (copick's default, written whether or not anyone knew the orientation: read as not known).
7. **byu's own exports** (:mod:`byu.copick.export`): a pick set byu exported names the pick sets whose picks it
   carries; when both are selected and those are unchanged since, they are left out (``superseded``), so a project
   ingested again after an export gives each pick once. Two selected exports carrying the same pick set are an
   error asking which one (``session_id``).

Pick files that cannot be read (malformed JSON, a missing or non-number coordinate, a non-finite value) are
errors naming the file and the point. Spacings (``target_spacing``, ``voxel_spacing``) must be finite, at least
``MIN_SPACING_A`` (0.1 Å: finer than any tomogram's voxel; less is a typo or another unit) and at most 10⁶ Å.

Runs with none of the selected picks are left out of the version unless ``include_empty`` (a run nobody picked
is not known to be empty). A run with picks but no tomogram is an error, as is an unknown object; every problem is
found before anything is preprocessed. The version is stored only when every tomogram of it is stored (a failed
tomogram is reported; rerun to resume).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from byu.atomic import sha256_bytes
from byu.copick.picks import IDENTITY, PickSetData, load_pick_set
from byu.errors import ByuError, InputError, InputErrors, VersionExistsError
from byu.labels.classes import BUILTIN_CLASSES, ClassRegistry, ParticleClass
from byu.labels.formats import picks_bytes, tomograms_bytes
from byu.labels.model import MAX_SPACING, LabelSet, empty_picks, format_transform
from byu.labels.store import LabelStore, Manifest, check_version_name
from byu.paths import DataRoot, check_id
from byu.tomo.grid import working_spacing
from byu.tomo.io import ReplaceGuard, TomoMeta, read_meta, tomo_dir
from byu.tomo.preprocess import DEFAULT_CLIP_PERCENTILES, DEFAULT_TARGET_SPACING, ZARR_CACHE_BYTES, preprocess_tomogram

log = logging.getLogger(__name__)

DEFAULT_TOMO_TYPES: tuple[str, ...] = ("wbp", "denoised", "ctfdeconvolved", "isonetcorrected", "raw", "filtered")
SPACING_TOLERANCE = 1e-3  # Å: copick names spacing folders with 3 decimals
MIN_SPACING_A = 0.1  # Å: finer than any tomogram's voxel (atoms are ~1 Å apart); less is a typo or another unit
PRODUCER = "byu copick ingest"

ProgressFn = Callable[[str, int, int, str], None]  # (tomo_id, done, total, status)


# ------------------------------------------------------------------------------------------------ results
@dataclass
class TomogramResult:
    """One run's tomogram: chosen, then stored / skipped (already current) / failed."""

    run: str
    tomo_id: str
    voxel_spacing: float
    tomo_type: str
    shape: tuple[int, int, int]
    status: str = "pending"
    seconds: float = 0.0  # copy (when staged) + preprocessing
    staged: bool = False
    error: str | None = None
    meta: TomoMeta | None = None


@dataclass(frozen=True)
class RadiusNote:
    """A class whose radius the project gives otherwise than byu's registry: the project's was taken."""

    object: str
    project_radius: float
    byu_radius: float
    byu_source: str  # "built-in" | "classes file"

    def __str__(self) -> str:
        theirs = "byu's built-in" if self.byu_source == "built-in" else "the classes file's"
        return f"{self.object}: radius {self.project_radius:g} Å from the project ({theirs}: {self.byu_radius:g} Å)"


@dataclass(frozen=True)
class SupersededSet:
    """A selected pick set left out because a selected byu export carries its picks (unchanged since)."""

    run: str
    object: str
    pick_set: str  # user/session
    by: str  # the export's user/session
    version: str  # the version byu exported there

    def __str__(self) -> str:
        return (f"{self.pick_set} (run {self.run}, {self.object}): its picks are in byu's export {self.by} (version "
                f"{self.version}), also taken; to take {self.pick_set} instead, leave {self.by} out with --session-id")


@dataclass
class CopickIngestReport:
    config: Path
    project: str
    version: str
    labels: LabelSet
    manifest: Manifest | None
    tomograms: list[TomogramResult] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    without_picks: list[str] = field(default_factory=list)  # runs without selected picks (left out)
    without_tomogram: list[str] = field(default_factory=list)  # runs without picks and without a tomogram
    dropped: dict[str, list[tuple[str, float, float, float]]] = field(default_factory=dict)  # tomo_id -> outside
    withheld: list[str] = field(default_factory=list)  # failed tomograms: the version was not stored
    radii: list[RadiusNote] = field(default_factory=list)  # the project's radius taken over byu's
    superseded: list[SupersededSet] = field(default_factory=list)  # selected, but carried by a selected export

    @property
    def ok(self) -> bool:
        return not self.withheld and all(t.status != "failed" for t in self.tomograms)

    @property
    def stored(self) -> list[TomogramResult]:
        return [t for t in self.tomograms if t.status == "stored"]

    @property
    def seconds_per_tomogram(self) -> float | None:
        """Mean wall time per tomogram preprocessed by this call (``None`` when none was)."""
        done = self.stored
        return sum(t.seconds for t in done) / len(done) if done else None


# ------------------------------------------------------------------------------------------------ project
def open_project(config_path: str | Path) -> Any:
    """``copick.from_file`` with every failure an :class:`InputError` naming the config file."""
    import copick
    from pydantic import ValidationError

    path = Path(config_path)
    if not path.exists():
        raise InputError("copick config not found", file=path)
    if path.is_dir():
        raise InputError("is a directory; give the copick config JSON file", file=path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "config_type not found, defaulting to filesystem" and the like
            return copick.from_file(str(path))
    except json.JSONDecodeError as exc:
        raise InputError(f"not a readable copick config (JSON): {exc.msg}", file=path, row=exc.lineno) from None
    except ValidationError as exc:
        errors = [InputError(e.get("msg", "invalid"), file=path,
                             field=".".join(str(p) for p in e.get("loc", ())) or None) for e in exc.errors()]
        raise (errors[0] if len(errors) == 1 else InputErrors(errors)) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"not a usable copick config: {type(exc).__name__}: {exc}", file=path) from None


def copick_id(value: str, *, what: str) -> str:
    """A user or session id as copick stores it (``sanitize_name``: ``_``, spaces, ``/`` ... become ``-``)."""
    from copick.util.escape import sanitize_name

    try:
        return sanitize_name(str(value), suppress_warnings=True)
    except ValueError:
        raise InputError(f"{what} {value!r} is empty once made a copick id", field=what) from None


def _ids(values: str | Iterable[str] | None, what: str) -> list[str] | None:
    if values is None:
        return None
    values = [values] if isinstance(values, str) else list(values)
    return list(dict.fromkeys(copick_id(v, what=what) for v in values)) or None


def copick_tomo_id(run_name: str) -> str:
    """The tomo_id of a run: its name with characters outside ``[A-Za-z0-9._-]`` made ``_`` (the portal's rule)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(run_name)).strip("._") or "run"
    return check_id(safe[:200])


def check_spacing(value: float, *, what: str) -> float:
    """A spacing option in Å: finite, from ``MIN_SPACING_A`` to ``MAX_SPACING``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"must be a number of Å, got {value!r}", field=what) from None
    if not (math.isfinite(v) and MIN_SPACING_A <= v <= MAX_SPACING):
        raise InputError(f"must be a finite number of Å from {MIN_SPACING_A:g} Å to {MAX_SPACING:,.0f} Å, got "
                         f"{value!r}", field=what)
    return v


def _project_radius(o: Any, cls: ParticleClass, notes: list[RadiusNote] | None) -> ParticleClass:
    """``cls`` with the object's radius when the project gives another valid one (its match radius too when that
    was the radius)."""
    try:
        r = float(o.radius) if o.radius is not None else math.nan
    except (TypeError, ValueError):
        r = math.nan
    if not (math.isfinite(r) and r > 0) or r == cls.radius:
        return cls
    update: dict[str, Any] = {"radius": r}
    if cls.match_radius_A == cls.radius:
        update["match_radius"] = r
    if notes is not None:
        notes.append(RadiusNote(o.name, r, cls.radius,
                                "built-in" if BUILTIN_CLASSES.get(o.name) == cls else "classes file"))
    return ParticleClass(**{**cls.model_dump(), **update})


def project_classes(root: Any, objects: str | Sequence[str] | None, registry: ClassRegistry, *,
                    config: Path, notes: list[RadiusNote] | None = None) -> list[tuple[Any, ParticleClass]]:
    """``(copick object, class)`` for the chosen objects (default: every particle object), in config order; the
    project's radius of a registry class is taken (and noted in ``notes``)."""
    all_objects = list(root.pickable_objects)
    by_name = {o.name: o for o in all_objects}
    if objects is None:
        chosen = [o for o in all_objects if o.is_particle]
        if not chosen:
            raise InputError("the project has no particle objects (pickable_objects with is_particle true)",
                             file=config, field="pickable_objects")
    else:
        names = [n.strip() for n in objects.split(",")] if isinstance(objects, str) else [str(n) for n in objects]
        names = list(dict.fromkeys(n for n in names if n))
        if not names:
            raise InputError("no objects given", field="objects")
        missing = [n for n in names if n not in by_name]
        if missing:
            raise InputError(f"object(s) {missing} are not among the project's pickable objects "
                             f"{sorted(by_name)}", file=config, field="objects")
        chosen = [by_name[n] for n in names]
        segmentation = [o.name for o in chosen if not o.is_particle]
        if segmentation:
            raise InputError(f"object(s) {segmentation} are not particles (is_particle false: segmentation masks, "
                             "no picks)", file=config, field="objects")
    out = []
    index = {o.name: i for i, o in enumerate(all_objects)}
    known = set(registry)  # (``in registry`` would raise: the registry's lookup error is not a KeyError)
    for o in chosen:
        if o.name in known:
            out.append((o, _project_radius(o, registry[o.name], notes)))
            continue
        where = f"pickable_objects[{index[o.name]}]"
        if not o.radius or not math.isfinite(float(o.radius)) or float(o.radius) <= 0:
            raise InputError(f"object {o.name!r} has no radius: set 'radius' (Å) in the copick config, or give "
                             "the class in a classes file", file=config, field=f"{where}.radius")
        try:
            cls = ParticleClass(name=o.name, radius=float(o.radius), go_id=o.identifier or None)
        except ValueError as exc:
            raise InputError(f"object {o.name!r} cannot be a byu class: {exc}", file=config,
                             field=f"{where}.name") from None
        out.append((o, cls))
    return out


# ------------------------------------------------------------------------------------------------ tomograms
def _type_rank(tomo_type: str, prefer: Sequence[str]) -> tuple[int, str]:
    t = tomo_type.lower()
    for i, p in enumerate(prefer):
        if t == p:
            return (i, tomo_type)
    for i, p in enumerate(prefer):
        if t.startswith(p + "-") or t.startswith(p + "_"):
            return (len(prefer) + i, tomo_type)
    return (2 * len(prefer), tomo_type)


def choose_tomogram(run: Any, *, voxel_spacing: float | None = None, tomo_type: str | None = None,
                    target_spacing: float = DEFAULT_TARGET_SPACING,
                    prefer: Sequence[str] = DEFAULT_TOMO_TYPES) -> tuple[float, Any] | None:
    """``(voxel spacing, copick tomogram)`` of a run by the rule in the module docstring (``None``: none fits)."""
    candidates = [(float(vs.voxel_size), t) for vs in run.voxel_spacings for t in vs.tomograms]
    if voxel_spacing is not None:
        candidates = [c for c in candidates if abs(c[0] - float(voxel_spacing)) <= SPACING_TOLERANCE]
    if tomo_type is not None:
        candidates = [c for c in candidates if c[1].tomo_type == tomo_type]
    if not candidates:
        return None
    spacings = sorted({c[0] for c in candidates})
    below = [s for s in spacings if s <= target_spacing + SPACING_TOLERANCE]
    spacing = max(below) if below else min(spacings)
    pool = [c for c in candidates if c[0] == spacing]
    return min(pool, key=lambda c: _type_rank(c[1].tomo_type, prefer))


def _available(run: Any) -> str:
    parts = [f"{vs.voxel_size:g} Å: {', '.join(sorted(t.tomo_type for t in vs.tomograms)) or 'no tomograms'}"
             for vs in sorted(run.voxel_spacings, key=lambda v: v.voxel_size)]
    return "; ".join(parts) or "no voxel spacings"


@dataclass
class _Level0:
    store: Any
    key: str  # path of the full-resolution array in the store ("" when the store is the array)
    shape: tuple[int, int, int]
    chunks: tuple[int, int, int]
    where: str


def _level0(tomo: Any, *, run: str, spacing: float) -> _Level0:
    import zarr

    store = tomo.zarr()
    where = str(getattr(store, "path", "") or f"run {run}, {spacing:g} Å, {tomo.tomo_type}")
    try:
        node = zarr.open(store, mode="r")
        if hasattr(node, "shape"):
            arr, key = node, ""
        else:
            multiscales = node.attrs.get("multiscales") or [{}]
            datasets = multiscales[0].get("datasets") or [{"path": "0"}]
            key = str(datasets[0].get("path", "0"))
            arr = node[key]
        shape = tuple(int(s) for s in arr.shape)
        chunks = tuple(int(c) for c in (arr.chunks or shape))
    except Exception as exc:  # zarr raises many kinds (KeyError, ValueError, JSON errors...)
        raise InputError(f"run {run!r}: tomogram {tomo.tomo_type!r} at {spacing:g} Å is not a readable OME-Zarr: "
                         f"{type(exc).__name__}: {exc}", file=where) from None
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"run {run!r}: tomogram {tomo.tomo_type!r} is not a 3-D volume (shape {shape})", file=where)
    return _Level0(store=store, key=key, shape=shape, chunks=chunks, where=where)  # type: ignore[arg-type]


def _fingerprint(level0: _Level0) -> str:
    """sha256 of the array's metadata and stored size: changes when the tomogram is rewritten."""
    import zarr

    store, key = level0.store, level0.key
    prefix = f"{key}/" if key else ""
    h = hashlib.sha256()
    for k in (".zattrs", f"{prefix}.zarray", f"{prefix}.zattrs"):
        try:
            h.update(k.encode() + b"\0" + bytes(store[k]) + b"\0")
        except KeyError:
            continue
    try:
        size = zarr.storage.getsize(store, key)
    except Exception:  # a store that cannot tell: metadata only
        size = -1
    h.update(str(size).encode())
    return h.hexdigest()


def _local_path(store: Any) -> Path | None:
    fs, path = getattr(store, "fs", None), getattr(store, "path", None)
    if fs is None or not path:
        return None
    protocol = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return Path(path) if {"file", "local"} & set(protocol) and Path(path).is_dir() else None


def _stage(level0: _Level0, dest: Path) -> Path:
    """Copy the full-resolution array (chunks as stored, no decoding) and the group metadata into ``dest``."""
    import zarr

    part = dest.with_name(dest.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    part.parent.mkdir(parents=True, exist_ok=True)
    target = zarr.storage.DirectoryStore(str(part))
    for k in (".zgroup", ".zattrs"):
        try:
            target[k] = level0.store[k]
        except KeyError:
            continue
    zarr.copy_store(level0.store, target, source_path=level0.key, dest_path=level0.key)
    part.rename(dest)
    return dest


def _is_current(data: DataRoot, tomo_id: str, source: dict[str, Any], target_spacing: float,
                clip_percentiles: tuple[float, float]) -> bool:
    """Stored from the same copick tomogram (run, spacing, type, fingerprint; the config path may have moved) with
    the same settings."""
    try:
        meta = read_meta(tomo_dir(data.tomograms, tomo_id))
    except ByuError:
        return False
    old = {k: v for k, v in (meta.source.get("copick") or {}).items() if k != "config"}
    return (old == {k: v for k, v in source.items() if k != "config"}
            and abs(meta.voxel_spacing - working_spacing(meta.original_spacing, target_spacing)) < 1e-6
            and tuple(meta.clip_percentiles or ()) == tuple(clip_percentiles))


# ------------------------------------------------------------------------------------------------ ingest
@dataclass
class _Planned:
    run: Any
    tomo_id: str
    spacing: float
    tomogram: Any
    level0: _Level0
    picks: list[dict[str, Any]]


def ingest_copick(
    config_path: str | Path,
    data_root: str | Path | DataRoot,
    *,
    version: str,
    user_id: str | Iterable[str] | None = None,
    session_id: str | Iterable[str] | None = None,
    objects: str | Sequence[str] | None = None,
    voxel_spacing: float | None = None,
    tomo_type: str | None = None,
    target_spacing: float = DEFAULT_TARGET_SPACING,
    registry: ClassRegistry | None = None,
    progress: ProgressFn | None = None,
    runs: str | Iterable[str] | None = None,
    include_empty: bool = False,
    prefer: Sequence[str] = DEFAULT_TOMO_TYPES,
    clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES,
    stage: bool | None = None,
    keep_raw: bool = False,
    force: bool = False,
    replace_pinned: bool = False,
    **preprocess_options: Any,
) -> CopickIngestReport:
    """Read a copick project into ``data_root``: tomograms under ``tomograms/``, picks as label version ``version``
    (see the module docstring for every rule). Rerunnable: stored tomograms are skipped and storing the same
    version again is a no-op; a version name taken by other content fails before any work.

    ``stage``: copy the tomogram to ``raw/`` before reading it (default: only when it is not a local directory or
    its chunks are too deep to read in place); ``keep_raw`` keeps those copies. ``progress(tomo_id, done, total,
    status)`` is called before (status ``preprocessing``) and after (``stored``/``skipped``/``failed``) each
    tomogram. ``replace_pinned``: replace stored tomograms a label version pins (those versions then refuse to
    predict, mine and render them); without it that is a :class:`~byu.errors.PinnedTomogramError`.
    """
    config = Path(config_path)
    data = data_root if isinstance(data_root, DataRoot) else DataRoot.from_env(data_root)
    registry = registry or ClassRegistry()
    store = LabelStore(data.labels)
    if not store.exists(version):
        check_version_name(version)
    if voxel_spacing is not None:
        voxel_spacing = check_spacing(voxel_spacing, what="voxel_spacing")
    target_spacing = check_spacing(target_spacing, what="target_spacing")
    root = open_project(config)
    tomo_type = copick_id(tomo_type, what="tomo_type") if tomo_type is not None else None
    users, sessions = _ids(user_id, "user_id"), _ids(session_id, "session_id")
    radii: list[RadiusNote] = []
    pairs = project_classes(root, objects, registry, config=config, notes=radii)
    object_names = [o.name for o, _ in pairs]
    class_of = {o.name: c.name for o, c in pairs}
    source = f"copick:{config.name}"

    all_runs = sorted(root.runs, key=lambda r: r.name)
    if runs is not None:
        wanted = [runs] if isinstance(runs, str) else list(runs)
        known = {r.name for r in all_runs}
        missing = [r for r in wanted if r not in known]
        if missing:
            raise InputError(f"run(s) {missing} are not in the project ({len(known)} runs)", file=config,
                             field="runs")
        all_runs = [r for r in all_runs if r.name in set(wanted)]

    report_without_picks: list[str] = []
    report_without_tomo: list[str] = []
    problems: list[InputError] = []
    planned: list[_Planned] = []
    seen_ids: dict[str, str] = {}
    superseded: list[SupersededSet] = []
    for run in all_runs:
        picks = _run_picks(run, object_names, users, sessions, class_of, source, problems=problems,
                           superseded=superseded)
        if not picks and not include_empty:
            report_without_picks.append(run.name)
            continue
        choice = choose_tomogram(run, voxel_spacing=voxel_spacing, tomo_type=tomo_type,
                                 target_spacing=target_spacing, prefer=prefer)
        if choice is None:
            if not picks:
                report_without_tomo.append(run.name)
                continue
            asked = " and ".join(x for x in (f"at {voxel_spacing:g} Å" if voxel_spacing is not None else "",
                                               f"of type {tomo_type!r}" if tomo_type else "") if x)
            problems.append(InputError(
                f"run {run.name!r} has {len(picks)} pick(s) but no tomogram{' ' + asked if asked else ''} "
                f"(it has: {_available(run)}); choose --voxel-spacing / --tomo-type, or leave the run out "
                "(--runs)", file=config, field="run"))
            continue
        try:
            tid = copick_tomo_id(run.name)
        except InputError as exc:
            problems.append(InputError(f"run {run.name!r}: {exc.reason}", file=config, field="run"))
            continue
        if tid in seen_ids:
            problems.append(InputError(f"runs {seen_ids[tid]!r} and {run.name!r} both become tomo_id {tid!r}",
                                       file=config, field="run"))
            continue
        seen_ids[tid] = run.name
        spacing, tomogram = choice
        try:
            level0 = _level0(tomogram, run=run.name, spacing=spacing)
        except InputError as exc:
            problems.append(exc)
            continue
        planned.append(_Planned(run=run, tomo_id=tid, spacing=spacing, tomogram=tomogram, level0=level0,
                                picks=picks))
    if problems:
        raise problems[0] if len(problems) == 1 else InputErrors(problems)
    if not include_empty and not any(p.picks for p in planned):
        raise InputError(f"no picks of {object_names} match user_id={users} session_id={sessions} in "
                         f"{len(all_runs)} run(s); the project's pick sets (user/session): "
                         f"{_pick_sets(all_runs, object_names)} (pass include_empty / --include-empty to store "
                         "the runs without picks)", file=config, field="picks")

    labels, dropped = _labelset(planned, [c for _, c in pairs], source=config)
    project = str(root.config.name or config.stem)
    extra = {"copick": {
        "config": str(config.resolve()), "project": project, "objects": object_names,
        "user_id": users, "session_id": sessions, "voxel_spacing": voxel_spacing, "tomo_type": tomo_type,
        "target_spacing": float(target_spacing),
        "runs": {p.tomo_id: {"run": p.run.name, "voxel_spacing": p.spacing, "tomo_type": p.tomogram.tomo_type}
                 for p in planned},
    }}
    if superseded:  # only then: versions stored before this existed keep their details
        extra["copick"]["superseded"] = [{"run": x.run, "object": x.object, "pick_set": x.pick_set, "by": x.by}
                                         for x in superseded]
    if store.exists(version):
        _same_version_or_refuse(store, version, labels, extra)
    pinned: list[InputError] = []
    for p in planned:  # content a version pins is never replaced by other content (checked again on commit)
        if _is_current(data, p.tomo_id, _copick_source(p, config), target_spacing, clip_percentiles):
            continue
        try:
            store.check_replace(p.tomo_id, replace_pinned=replace_pinned, hint=_as_stored_hint(data, p.tomo_id),
                                doing=f"copick run {p.run.name!r} at {p.spacing:g} Å, {p.tomogram.tomo_type} "
                                f"(stored at {working_spacing(p.spacing, target_spacing):g} Å)")
        except InputError as exc:
            pinned.append(exc)
    if pinned:
        raise pinned[0] if len(pinned) == 1 else InputErrors(pinned)

    report = CopickIngestReport(config=config, project=project, version=version,
                                labels=labels, manifest=None, objects=object_names,
                                without_picks=report_without_picks, without_tomogram=report_without_tomo,
                                dropped=dropped, radii=radii, superseded=superseded)
    total = len(planned)
    for i, p in enumerate(planned):
        result = _ingest_tomogram(p, data, config=config, target_spacing=target_spacing,
                                  clip_percentiles=clip_percentiles, stage=stage, keep_raw=keep_raw, force=force,
                                  progress=progress, done=i, total=total,
                                  guard=store.replace_guard(replace_pinned=replace_pinned), **preprocess_options)
        report.tomograms.append(result)
        if progress:
            progress(p.tomo_id, i + 1, total, result.status)

    failed = [t.run for t in report.tomograms if t.status == "failed"]
    if failed:
        report.withheld = failed
        return report
    report.manifest = store.put(version, labels, producer=PRODUCER, extra=extra)
    return report


def _same_version_or_refuse(store: LabelStore, version: str, labels: LabelSet, extra: dict[str, Any]) -> None:
    """Before any work: a stored ``version`` must be what this ingest would store (then storing is a no-op)."""
    m = store.manifest(version)
    differ = [what for what, same in (
        ("picks or tomograms", m.files.get("picks") == sha256_bytes(picks_bytes(labels))
         and m.files.get("tomograms") == sha256_bytes(tomograms_bytes(labels))),
        ("classes", list(m.classes) == list(labels.classes)),
        ("producer", m.producer == PRODUCER),
        ("details (config, filters, tomograms)", m.extra == json.loads(json.dumps(extra))),
    ) if not same]
    if differ:
        raise VersionExistsError(
            f"label version {version!r} already exists with different {', '.join(differ)} (stored by "
            f"{m.producer!r} at {m.created_at}); nothing was done — versions are immutable: choose a new name")


def _pick_sets(runs: Sequence[Any], object_names: list[str], limit: int = 20) -> str:
    seen = sorted({f"{s.user_id}/{s.session_id}" for r in runs for s in r.get_picks(object_name=object_names)})
    return (", ".join(seen[:limit]) + (f" ... ({len(seen)})" if len(seen) > limit else "")) or "none"


def _run_picks(run: Any, object_names: list[str], users: list[str] | None, sessions: list[str] | None,
               class_of: dict[str, str], source: str, *, problems: list[InputError],
               superseded: list[SupersededSet]) -> list[dict[str, Any]]:
    """The selected picks of a run, Å ``x, y, z`` with provenance; pick sets in (object, user, session) order.
    Unreadable pick files go to ``problems``; sets a selected byu export carries are left out (``superseded``)."""
    try:
        sets = run.get_picks(object_name=object_names, user_id=users, session_id=sessions)
    except (IndexError, ValueError, AssertionError) as exc:  # copick splits every Picks/*.json name at '_'
        problems.append(InputError(f"run {run.name!r}: its pick sets cannot be listed ({type(exc).__name__}: "
                                   f"{exc}); is a file in Picks/ not named <user>_<session>_<object>.json?",
                                   file=getattr(run, "overlay_path", None), field="picks"))
        return []
    order = {n: i for i, n in enumerate(object_names)}
    sets = sorted(sets, key=lambda s: (order[s.pickable_object_name], s.user_id, s.session_id))
    loaded: list[tuple[Any, PickSetData]] = []
    for s in sets:
        try:
            loaded.append((s, load_pick_set(s)))
        except InputErrors as exc:
            problems.extend(exc.errors)
        except InputError as exc:
            problems.append(exc)
    left_out = _superseded(run.name, loaded, superseded, problems)
    out = []
    for s, d in loaded:
        if (s.pickable_object_name, s.user_id, s.session_id) in left_out:
            continue
        for (x, y, z), t in zip(d.centres, d.transforms, strict=True):
            known = d.trust_orientation and not np.array_equal(t, IDENTITY)
            out.append({"particle": class_of[s.pickable_object_name], "x": x, "y": y, "z": z, "source": source,
                        "user_id": s.user_id, "session_id": s.session_id,
                        "transform": format_transform(t) if known else ""})
    return out


_Key = tuple[str, str, str]  # (object, user, session)


def _superseded(run: str, loaded: list[tuple[Any, PickSetData]], report: list[SupersededSet],
                problems: list[InputError]) -> set[_Key]:
    """The selected pick sets that a selected byu export carries (its note names them with the fingerprint they
    had, and they still have it): left out, recorded in ``report``. A set carried by two exports is a problem."""
    data = {(s.pickable_object_name, s.user_id, s.session_id): d for s, d in loaded}
    carried_by: dict[_Key, list[_Key]] = {}
    for key, d in data.items():
        for entry in (d.note or {}).get("supersedes") or []:
            if not isinstance(entry, dict):
                continue
            target = (key[0], str(entry.get("user_id")), str(entry.get("session_id")))
            if target != key and target in data and entry.get("fingerprint") == data[target].fingerprint():
                carried_by.setdefault(target, []).append(key)

    def holders(key: _Key) -> set[_Key]:
        """The sets taken (carried by none) that carry ``key``'s picks, through chains of exports."""
        found: set[_Key] = set()
        todo, seen = list(carried_by.get(key, [])), {key}
        while todo:
            k = todo.pop()
            if k in seen:
                continue
            seen.add(k)
            if k in carried_by:
                todo.extend(carried_by[k])
            else:
                found.add(k)
        return found

    left_out: set[_Key] = set()
    for key in sorted(carried_by):
        by = sorted(holders(key))
        if not by:
            continue  # a cycle of exports: taken, rather than lose picks
        name = lambda k: f"{k[1]}/{k[2]}"  # noqa: E731
        version = lambda k: str((data[k].note or {}).get("version") or "?")  # noqa: E731
        if len(by) > 1:
            problems.append(InputError(
                f"run {run!r}, {key[0]}: pick sets {', '.join(name(k) for k in by)} are byu exports (of versions "
                f"{', '.join(version(k) for k in by)}) that all carry the picks of {name(key)}; taken together "
                "those picks would count twice: choose one with --session-id (or --user-id)", field="session_id"))
            continue
        left_out.add(key)
        report.append(SupersededSet(run=run, object=key[0], pick_set=name(key), by=name(by[0]),
                                    version=version(by[0])))
    return left_out


def _labelset(planned: list[_Planned], classes: list[ParticleClass], *,
              source: Path) -> tuple[LabelSet, dict[str, list[tuple[str, float, float, float]]]]:
    tomos = pd.DataFrame({
        "tomo_id": [p.tomo_id for p in planned],
        "Z": [p.level0.shape[0] for p in planned], "Y": [p.level0.shape[1] for p in planned],
        "X": [p.level0.shape[2] for p in planned], "voxel_spacing": [p.spacing for p in planned],
    })
    rows: list[dict[str, Any]] = []
    dropped: dict[str, list[tuple[str, float, float, float]]] = {}
    for p in planned:
        shape = np.asarray(p.level0.shape, dtype=float)
        for pk in p.picks:
            zyx = np.array([pk["z"], pk["y"], pk["x"]], dtype=float) / p.spacing
            if not (np.isfinite(zyx).all() and (zyx >= 0).all() and (zyx < shape).all()):
                dropped.setdefault(p.tomo_id, []).append((pk["particle"], pk["x"], pk["y"], pk["z"]))
                continue
            rows.append({"tomo_id": p.tomo_id, "particle": pk["particle"], "z": zyx[0], "y": zyx[1], "x": zyx[2],
                         "source": pk["source"], "user_id": pk["user_id"], "session_id": pk["session_id"],
                         "transform": pk["transform"]})
    picks = pd.DataFrame(rows, columns=list(empty_picks().columns)) if rows else empty_picks()
    return LabelSet.build(tomos, picks, classes, source=source), dropped


def _copick_source(p: _Planned, config: Path) -> dict[str, Any]:
    """What ``meta.source.copick`` records of the copick tomogram a stored tomogram came from."""
    return {"config": str(config.resolve()), "run": p.run.name, "voxel_spacing": p.spacing,
            "tomo_type": p.tomogram.tomo_type, "fingerprint": _fingerprint(p.level0)}


def _as_stored_hint(data: DataRoot, tomo_id: str) -> str:
    """The options that give the tomogram stored for ``tomo_id`` again, when it came from copick ('' otherwise)."""
    try:
        meta = read_meta(tomo_dir(data.tomograms, tomo_id))
    except ByuError:
        return ""
    c = meta.source.get("copick")
    if not isinstance(c, dict) or c.get("voxel_spacing") is None or not c.get("tomo_type"):
        return ""
    return (f"To use the stored one, ingest with --voxel-spacing {float(c['voxel_spacing']):g} --tomo-type "
            f"{c['tomo_type']} --spacing {meta.voxel_spacing:g} (voxel_spacing=, tomo_type=, target_spacing=).")


def _ingest_tomogram(p: _Planned, data: DataRoot, *, config: Path, target_spacing: float,
                     clip_percentiles: tuple[float, float], stage: bool | None, keep_raw: bool, force: bool,
                     progress: ProgressFn | None, done: int, total: int, guard: ReplaceGuard | None = None,
                     **options: Any) -> TomogramResult:
    result = TomogramResult(run=p.run.name, tomo_id=p.tomo_id, voxel_spacing=p.spacing,
                            tomo_type=p.tomogram.tomo_type, shape=p.level0.shape)
    t0 = time.perf_counter()
    try:
        source = _copick_source(p, config)
        if not force and _is_current(data, p.tomo_id, source, target_spacing, clip_percentiles):
            result.status = "skipped"
            return result
        if progress:
            progress(p.tomo_id, done, total, "preprocessing")
        local = _local_path(p.level0.store)
        deep = p.level0.chunks[0] * p.level0.shape[1] * p.level0.shape[2] * 4 > ZARR_CACHE_BYTES
        result.staged = stage if stage is not None else (local is None or deep)
        staged_dir = data.raw / f"{p.tomo_id}.copick.zarr"
        path = _stage(p.level0, staged_dir) if result.staged or local is None else local
        try:
            result.meta = preprocess_tomogram(path, data.tomograms, tomo_id=p.tomo_id, original_spacing=p.spacing,
                                              target_spacing=target_spacing, clip_percentiles=clip_percentiles,
                                              source={"copick": source}, guard=guard, **options)
        finally:
            if result.staged and not keep_raw:
                shutil.rmtree(staged_dir, ignore_errors=True)
        result.status = "stored"
    except (ByuError, OSError) as exc:  # OSError: local trouble (disk full...), reported like the rest
        result.status, result.error = "failed", str(exc)
    finally:
        result.seconds = time.perf_counter() - t0
        log.debug("copick ingest %s (run %s, %s Å %s, %s): %s in %.2f s", p.tomo_id, p.run.name, p.spacing,
                 p.tomogram.tomo_type, "x".join(map(str, p.level0.shape)), result.status, result.seconds)
    return result


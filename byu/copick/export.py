"""A label version into a copick project, as copick picks (written to the project's overlay).

- **Pick sets**: one per run, object and copick user: ``<user>_<session>_<object>`` with the version's picks of
  that class in that run, positions in Å, ``x, y, z`` (``voxel x the tomogram's spacing``). Only (run, object) pairs
  holding picks get a set. Writing is all or nothing as far as checks go: every problem (unknown object, missing
  run, an existing different pick set, a symlink out of the overlay) is found before the first file is written.
- **Orientations**: a pick's kept ``transform`` (copick's 4x4 matrix from ingest) is written back as it was (its
  location = the centre minus the transform's shift, so copick's ``full_positions`` is the version's position).
  A pick without one, or whose provenance says a review changed it (``source`` ``review:...``: moved, added or
  relabelled), has no known orientation: the identity; a pick set with any such pick says
  ``trust_orientation: false``, one whose every pick has its transform ``true``.
- **Ids**: ``user_id`` (default ``byu``) and ``session_id`` (default: the version name) made valid the way copick
  requires (``sanitize_name``: ``_`` and other characters it refuses become ``-``). With ``by_reviewer`` every pick
  goes under its own ``user_id`` provenance (the copick user it came from, or the reviewer who added or moved it),
  picks without one under ``user_id``.
- **byu's note** in each written set (:mod:`byu.copick.picks`): the version, and the project's pick sets of the same
  run and object whose picks it carries (the sets the picks' provenance names, when those picks are still in them),
  with a fingerprint of their positions. :func:`byu.copick.ingest_copick` then leaves those out when it takes the
  export too, so ingesting the project again gives each pick once (an export of curator/manual-1's 25 picks under
  curator/cp-v2, ingested with ``user_id=curator``: 25 picks, not 50).
- **Objects**: a class maps to the project's pickable object of the same name, else to the one particle object
  with the class's identifier (``go_id``). A class with neither is an error naming it, unless ``add_objects``:
  then it is added to the config (name, radius, identifier; next free label) and the config file is saved.
- **Runs**: a tomogram's run is ``run_names[tomo_id]``, else the run recorded in its stored ``meta.json``
  (``data_root``; tomograms from :func:`byu.copick.ingest_copick`), else the tomo_id itself. A run that is not in
  the project is an error (``runs_missing="error"``), created (``"create"``) or left out (``"skip"``).
- **Existing pick sets** of the same run, object, user and session: identical positions are left as they are
  (``unchanged``: exporting twice is a no-op; a set byu wrote whose positions and orientations are the same but
  whose trust flag or note differ is rewritten, ``updated``; any other set with those positions is rewritten only
  with ``overwrite``, e.g. one an older byu wrote without its note); different ones are an error unless
  ``overwrite``, as is an unreadable one.
- **Concurrency**: each pick set file is written under its own lock (``Picks/.<name>.json.lock``) through a temp
  file renamed over it. Exporters racing for one pick set: the first writes it; the other, once it holds the lock,
  reads what is there and, unless that is what it would write, refuses naming the pick set (nothing written).
- **Symlinks**: a run folder, ``Picks/`` folder or pick file that is a symlink resolving outside the overlay root
  is refused, naming it (a link inside the overlay is followed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from byu.copick.ingest import copick_id, open_project
from byu.copick.picks import (
    LOCK_TIMEOUT_S,
    PickSetData,
    check_inside,
    is_local,
    load_pick_set,
    locked,
    pick_file_bytes,
    read_pick_file,
    same_positions,
    write_pick_file,
)
from byu.errors import ByuError, InputError, InputErrors
from byu.labels.classes import ParticleClass
from byu.labels.model import TRANSFORM_COLUMN, LabelSet, parse_transform
from byu.paths import DataRoot
from byu.tomo.io import read_meta, tomo_dir

RunsMissing = Literal["error", "create", "skip"]
REVIEW_SOURCE = "review:"  # provenance of picks a review moved, added or relabelled
CARRY_TOLERANCE_A = 1e-3  # a version's pick is the project's pick when its centre is this close


@dataclass
class PickSetWrite:
    run: str
    tomo_id: str
    object: str
    user_id: str
    session_id: str
    n: int
    status: str  # written | replaced | updated | unchanged
    trust_orientation: bool = False
    carries: list[str] = field(default_factory=list)  # user/session of the project's sets whose picks it carries


@dataclass
class CopickExportReport:
    config: Path
    user_id: str
    session_id: str
    written: list[PickSetWrite] = field(default_factory=list)
    created_runs: list[str] = field(default_factory=list)
    skipped_runs: list[str] = field(default_factory=list)  # runs_missing="skip": tomo_ids left out
    added_objects: list[str] = field(default_factory=list)

    @property
    def picks(self) -> int:
        return sum(w.n for w in self.written)


def _objects(root: Any, labels: LabelSet, names: list[str], *, config: Path,
             add_objects: bool) -> tuple[dict[str, str], list[ParticleClass]]:
    """class name -> copick object name, and the classes to add to the project."""
    particles = [o for o in root.pickable_objects if o.is_particle]
    by_name = {o.name: o for o in root.pickable_objects}
    out: dict[str, str] = {}
    missing: list[ParticleClass] = []
    problems: list[InputError] = []
    for name in names:
        cls = labels.cls(name)
        if name in by_name:
            if not by_name[name].is_particle:
                problems.append(InputError(f"class {name!r}: the project's object of that name is not a particle "
                                           "(is_particle false)", file=config, field="pickable_objects"))
            out[name] = name
            continue
        same_id = [o for o in particles if cls.go_id and (o.identifier or "").lower() == cls.go_id.lower()]
        if len(same_id) == 1:
            out[name] = same_id[0].name
        else:
            missing.append(cls)
    if missing and add_objects:
        from copick.util.escape import sanitize_name

        bad = [c.name for c in missing if sanitize_name(c.name, suppress_warnings=True) != c.name]
        if bad:
            problems.append(InputError(f"class(es) {bad} cannot be copick objects (copick names have no '_', "
                                       "spaces or '/'): rename the class or add an object to the config by hand",
                                       file=config, field="pickable_objects"))
    if missing and not add_objects:
        problems.append(InputError(
            f"class(es) {[c.name for c in missing]} of the version are not among the project's pickable objects "
            f"{sorted(by_name)}; add them to the copick config (or pass --add-objects)", file=config,
            field="pickable_objects"))
    if problems:
        raise problems[0] if len(problems) == 1 else InputErrors(problems)
    for cls in missing:
        out[cls.name] = cls.name
    return out, missing


def _run_name(tomo_id: str, run_names: Mapping[str, str] | None, data: DataRoot | None) -> str:
    if run_names and tomo_id in run_names:
        return str(run_names[tomo_id])
    if data is not None:
        try:
            meta = read_meta(tomo_dir(data.tomograms, tomo_id))
        except ByuError:
            meta = None
        run = ((meta.source.get("copick") or {}).get("run") if meta is not None else None)
        if run:
            return str(run)
    return tomo_id


@dataclass
class _Group:
    tomo_id: str
    run: str
    object: str
    user: str
    rows: np.ndarray  # the picks' rows
    centres: np.ndarray  # (n, 3) Å, x, y, z
    transforms: np.ndarray  # (n, 4, 4): kept, else the identity
    trust: bool
    note: dict[str, Any]
    path: str = ""
    status: str = ""


def _transforms(picks: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Every pick's transform to write (kept, else the identity) and whether it is known."""
    text = picks[TRANSFORM_COLUMN].astype(str).to_numpy() if TRANSFORM_COLUMN in picks.columns \
        else np.full(len(picks), "", dtype=object)
    reviewed = picks["source"].astype(str).str.startswith(REVIEW_SOURCE).to_numpy()
    known = (text != "") & ~reviewed
    out = np.repeat(np.eye(4)[None], len(picks), axis=0)
    for i in np.flatnonzero(known):
        out[i] = parse_transform(text[i])
    return out, known


def _status(existing: PickSetData | None, g: _Group, *, overwrite: bool) -> str | None:
    """written / unchanged / updated / replaced, or ``None``: a different set is there (refused)."""
    if existing is None:
        return "written"
    same_centres = same_positions(existing.centres, g.centres)
    locations = g.centres - g.transforms[:, :3, 3]
    same_rest = (same_centres and existing.trust_orientation == g.trust and existing.note == g.note
                 and same_positions(existing.locations, locations)
                 and same_positions(existing.transforms, g.transforms, atol=1e-9))
    if existing.note is None:  # not byu's (the project's own, or an older byu's): the same positions are left alone
        if same_centres and (same_rest or not overwrite):
            return "unchanged"
        return "replaced" if overwrite else None
    if not (same_centres and same_positions(existing.transforms[:, :3, :3], g.transforms[:, :3, :3], atol=1e-9)):
        return "replaced" if overwrite else None
    return "unchanged" if same_rest else "updated"


def _carried(centres: np.ndarray, there: np.ndarray) -> bool:
    """Whether every centre is one of ``there`` (the project's pick set)."""
    if not len(centres):
        return True
    if not len(there):
        return False
    from scipy.spatial import cKDTree

    d, _ = cKDTree(there).query(centres, distance_upper_bound=CARRY_TOLERANCE_A)
    return bool(np.isfinite(d).all())


def export_copick(
    labels: LabelSet,
    config_path: str | Path,
    *,
    user_id: str = "byu",
    session_id: str | None = None,
    version_name: str | None = None,
    by_reviewer: bool = False,
    runs_missing: RunsMissing = "error",
    data_root: str | Path | DataRoot | None = None,
    run_names: Mapping[str, str] | None = None,
    overwrite: bool = False,
    add_objects: bool = False,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> CopickExportReport:
    """Write every pick of ``labels`` into the copick project of ``config_path`` (see the module docstring)."""
    config = Path(config_path)
    if runs_missing not in ("error", "create", "skip"):
        raise InputError(f"runs_missing must be error, create or skip, got {runs_missing!r}", field="runs_missing")
    if session_id is None:
        if version_name is None:
            raise InputError("give a session id (or the version name, its default)", field="session_id")
        session_id = version_name
    session = copick_id(session_id, what="session_id")
    default_user = copick_id(user_id, what="user_id")
    data = (data_root if isinstance(data_root, DataRoot) else DataRoot.from_env(data_root)) \
        if data_root is not None else None
    root = open_project(config)
    report = CopickExportReport(config=config, user_id=default_user, session_id=session)

    picks = labels.picks.reset_index(drop=True)
    used = [c for c in labels.class_names if (picks["particle"] == c).any()]
    object_of, to_add = _objects(root, labels, used, config=config, add_objects=add_objects)

    runs = {r.name: r for r in root.runs}
    tomo_ids = list(dict.fromkeys(picks["tomo_id"]))
    run_of = {t: _run_name(t, run_names, data) for t in tomo_ids}
    absent = [t for t in tomo_ids if run_of[t] not in runs]
    if absent and runs_missing == "error":
        shown = ", ".join(f"{run_of[t]!r}" + (f" (tomo_id {t!r})" if run_of[t] != t else "") for t in absent[:20])
        raise InputError(f"{len(absent)} run(s) of the version are not in the project: {shown}"
                         f"{' ...' if len(absent) > 20 else ''}; pass --runs-missing create (or skip)",
                         file=config, field="runs")
    if runs_missing == "skip":
        report.skipped_runs = absent
        keep = set(tomo_ids) - set(absent)
        picks = picks[picks["tomo_id"].isin(keep)].reset_index(drop=True)

    spacing = picks["tomo_id"].map(labels.spacing_of()).to_numpy(dtype=float)
    xyz_all = (picks[["x", "y", "z"]].to_numpy(dtype=float) * spacing[:, None]) if len(picks) else np.zeros((0, 3))
    transforms_all, known_all = _transforms(picks)

    if by_reviewer:
        users = picks["user_id"].map(lambda u: copick_id(u, what="user_id") if str(u).strip() else default_user)
    else:
        users = picks["particle"].map(lambda _: default_user)
    picks = picks.assign(_user=users.to_numpy(dtype=object))

    version = version_name or session
    source_tag = f"copick:{config.name}"
    cache: dict[tuple[str, str, str, str], PickSetData | None] = {}

    def project_set(run_name: str, obj: str, user: str, sess: str) -> PickSetData | None:
        """The project's (readable) pick set of these ids, if there is exactly one."""
        key = (run_name, obj, user, sess)
        if key not in cache:
            run = runs.get(run_name)
            try:
                found = run.get_picks(object_name=obj, user_id=user, session_id=sess) if run is not None else []
                cache[key] = load_pick_set(found[0]) if len(found) == 1 else None
            except (InputError, IndexError, ValueError):
                cache[key] = None
        return cache[key]

    groups: list[_Group] = []
    for (tid, particle, user), part in picks.groupby(["tomo_id", "particle", "_user"], sort=False):
        rows = part.index.to_numpy()
        run_name, obj = run_of[tid], object_of[particle]
        carries = []
        prov = part[(part["source"] == source_tag) & (part["user_id"] != "") & (part["session_id"] != "")]
        for (u, sess), sub in prov.groupby(["user_id", "session_id"], sort=True):
            if (u, sess) == (user, session):
                continue
            there = project_set(run_name, obj, str(u), str(sess))
            if there is not None and _carried(xyz_all[sub.index.to_numpy()], there.centres):
                carries.append({"user_id": str(u), "session_id": str(sess), "picks": len(there.centres),
                                "fingerprint": there.fingerprint()})
        groups.append(_Group(tomo_id=tid, run=run_name, object=obj, user=user, rows=rows, centres=xyz_all[rows],
                             transforms=transforms_all[rows], trust=bool(len(rows)) and bool(known_all[rows].all()),
                             note={"version": version, "supersedes": carries}))

    conflicts: list[InputError] = []
    first: dict[tuple[str, str, str], str] = {}
    for g in groups:
        other = first.setdefault((g.run, g.object, g.user), g.tomo_id)
        if other != g.tomo_id:
            conflicts.append(InputError(f"tomograms {other!r} and {g.tomo_id!r} of the version both go to run "
                                        f"{g.run!r}", file=config, field="runs"))

    fs = root.fs_overlay
    local = is_local(fs)
    overlay_root = getattr(root, "root_overlay", None)
    for g in groups:
        run = runs.get(g.run)
        run_dir = run.overlay_path if run is not None else f"{overlay_root}/ExperimentRuns/{g.run}"
        g.path = f"{run_dir}/Picks/{g.user}_{session}_{g.object}.json"
        if local and overlay_root:
            try:
                check_inside(g.path, overlay_root)
            except InputError as exc:
                conflicts.append(exc)
                continue
        try:
            existing = read_pick_file(fs, g.path)
            if existing is None and run is not None:  # a read-only (static) set of the same ids
                static = [s for s in run.get_picks(object_name=g.object, user_id=g.user, session_id=session)
                          if getattr(s, "read_only", False)]
                if static:
                    existing = load_pick_set(static[0])
                    if not same_positions(existing.centres, g.centres):
                        conflicts.append(InputError(
                            f"run {g.run!r} has a different read-only pick set {g.user}_{session}_{g.object} (in "
                            "the project's static root: it cannot be replaced); use another --session-id",
                            file=existing.where, field="session_id"))
                        continue
                    g.status = "unchanged"
                    continue
        except InputError as exc:
            if overwrite:  # an unreadable (damaged, half-written) set: --overwrite replaces it
                g.status = "replaced"
                continue
            conflicts.extend(exc.errors if isinstance(exc, InputErrors) else [exc])
            continue
        status = _status(existing, g, overwrite=overwrite)
        if status is None:
            conflicts.append(InputError(
                f"run {g.run!r} already has a different pick set {g.user}_{session}_{g.object} "
                f"({len(existing.centres) if existing is not None else 0} picks, the version has {len(g.rows)}); "
                "use another --session-id, or --overwrite", file=config, field="session_id"))
            continue
        g.status = status
    if conflicts:
        raise conflicts[0] if len(conflicts) == 1 else InputErrors(conflicts)

    for cls in to_add:
        labels_used = [int(o.label) for o in root.pickable_objects if o.label is not None]
        root.new_object(cls.name, is_particle=True, radius=float(cls.radius), identifier=cls.go_id or None,
                        label=max(labels_used, default=0) + 1)
        report.added_objects.append(cls.name)
    if to_add:
        root.save_config(str(config))
    for g in groups:
        if g.status != "unchanged" and g.run not in runs:
            runs[g.run] = root.new_run(g.run)
            report.created_runs.append(g.run)

    todo = [g for g in groups if g.status != "unchanged"]
    if local and todo:
        for g in todo:
            Path(g.path).parent.mkdir(parents=True, exist_ok=True)
            if overlay_root:
                check_inside(g.path, overlay_root)  # again, now that the folders exist
        with locked([g.path for g in todo], timeout_s=lock_timeout_s):
            _recheck(todo, fs, session=session, overwrite=overwrite)
            _write(todo, fs, session=session)
    else:
        _write(todo, fs, session=session)
    for g in groups:
        report.written.append(PickSetWrite(
            run=g.run, tomo_id=g.tomo_id, object=g.object, user_id=g.user, session_id=session, n=len(g.rows),
            status=g.status, trust_orientation=g.trust,
            carries=[f"{c['user_id']}/{c['session_id']}" for c in g.note["supersedes"]]))
    return report


def _recheck(todo: list[_Group], fs: Any, *, session: str, overwrite: bool) -> None:
    """Under the locks: what another exporter wrote meanwhile decides again (all or nothing)."""
    refused: list[InputError] = []
    for g in todo:
        try:
            existing = read_pick_file(fs, g.path)
        except InputError:
            if overwrite:
                g.status = "replaced"
                continue
            raise
        status = _status(existing, g, overwrite=overwrite)
        if status is None:
            refused.append(InputError(
                f"run {g.run!r}: pick set {g.user}_{session}_{g.object} was written by another export meanwhile "
                f"({len(existing.centres) if existing is not None else 0} picks, this version has {len(g.rows)}); "
                "nothing was written: use another --session-id, or --overwrite", file=g.path, field="session_id"))
        else:
            g.status = status
    if refused:
        raise refused[0] if len(refused) == 1 else InputErrors(refused)


def _write(todo: list[_Group], fs: Any, *, session: str) -> None:
    for g in todo:
        if g.status == "unchanged":
            continue
        data = pick_file_bytes(object_name=g.object, user_id=g.user, session_id=session, run_name=g.run,
                               locations=g.centres - g.transforms[:, :3, 3], transforms=g.transforms,
                               trust_orientation=g.trust, note=g.note)
        write_pick_file(fs, g.path, data)


__all__ = ["CopickExportReport", "PickSetWrite", "RunsMissing", "export_copick"]

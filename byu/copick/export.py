"""A label version into a copick project, as copick picks (written to the project's overlay).

- **Pick sets**: one per run, object and copick user: ``<user>_<session>_<object>`` with the version's picks of
  that class in that run, positions in Å, ``x, y, z`` (``voxel x the tomogram's spacing``; identity transforms).
  Only (run, object) pairs holding picks get a set. Writing is all or nothing as far as checks go: every problem
  (unknown object, missing run, an existing different pick set) is found before the first file is written.
- **Ids**: ``user_id`` (default ``byu``) and ``session_id`` (default: the version name) made valid the way copick
  requires (``sanitize_name``: ``_`` and other characters it refuses become ``-``). With ``by_reviewer`` every pick
  goes under its own ``user_id`` provenance (the copick user it came from, or the reviewer who added or moved it),
  picks without one under ``user_id``.
- **Objects**: a class maps to the project's pickable object of the same name, else to the one particle object
  with the class's identifier (``go_id``). A class with neither is an error naming it, unless ``add_objects``:
  then it is added to the config (name, radius, identifier; next free label) and the config file is saved.
- **Runs**: a tomogram's run is ``run_names[tomo_id]``, else the run recorded in its stored ``meta.json``
  (``data_root``; tomograms from :func:`byu.copick.ingest_copick`), else the tomo_id itself. A run that is not in
  the project is an error (``runs_missing="error"``), created (``"create"``) or left out (``"skip"``).
- **Existing pick sets** of the same run, object, user and session: identical positions are left as they are
  (``unchanged``: exporting twice is a no-op); different ones are an error unless ``overwrite``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from byu.copick.ingest import copick_id, open_project
from byu.errors import ByuError, InputError, InputErrors
from byu.labels.classes import ParticleClass
from byu.labels.model import LabelSet
from byu.paths import DataRoot
from byu.tomo.io import read_meta, tomo_dir

RunsMissing = Literal["error", "create", "skip"]


@dataclass
class PickSetWrite:
    run: str
    tomo_id: str
    object: str
    user_id: str
    session_id: str
    n: int
    status: str  # written | replaced | unchanged


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


def _same(existing: Any, xyz: np.ndarray) -> bool:
    old = np.asarray(existing.full_positions(), dtype=float).reshape(-1, 3)
    return old.shape == xyz.shape and bool(np.allclose(old, xyz, rtol=0.0, atol=1e-6))


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

    if by_reviewer:
        users = picks["user_id"].map(lambda u: copick_id(u, what="user_id") if str(u).strip() else default_user)
    else:
        users = picks["particle"].map(lambda _: default_user)
    picks = picks.assign(_user=users.to_numpy(dtype=object))

    groups: list[tuple[str, str, str, str, np.ndarray]] = []  # (tomo_id, run, object, user, xyz)
    for (tid, particle, user), part in picks.groupby(["tomo_id", "particle", "_user"], sort=False):
        groups.append((tid, run_of[tid], object_of[particle], user, xyz_all[part.index.to_numpy()]))

    conflicts: list[InputError] = []
    first: dict[tuple[str, str, str], str] = {}
    for tid, run_name, obj, user, _ in groups:
        other = first.setdefault((run_name, obj, user), tid)
        if other != tid:
            conflicts.append(InputError(f"tomograms {other!r} and {tid!r} of the version both go to run "
                                        f"{run_name!r}", file=config, field="runs"))
    status: list[str] = []
    for _tid, run_name, obj, user, xyz in groups:
        run = runs.get(run_name)
        existing = run.get_picks(object_name=obj, user_id=user, session_id=session) if run is not None else []
        if not existing:
            status.append("written")
        elif _same(existing[0], xyz):
            status.append("unchanged")
        elif overwrite:
            status.append("replaced")
        else:
            conflicts.append(InputError(
                f"run {run_name!r} already has a different pick set {user}_{session}_{obj} "
                f"({len(existing[0].points)} picks, the version has {len(xyz)}); use another --session-id, or "
                "--overwrite", file=config, field="session_id"))
    if conflicts:
        raise conflicts[0] if len(conflicts) == 1 else InputErrors(conflicts)

    for cls in to_add:
        labels_used = [int(o.label) for o in root.pickable_objects if o.label is not None]
        root.new_object(cls.name, is_particle=True, radius=float(cls.radius), identifier=cls.go_id or None,
                        label=max(labels_used, default=0) + 1)
        report.added_objects.append(cls.name)
    if to_add:
        root.save_config(str(config))

    for (tid, run_name, obj, user, xyz), st in zip(groups, status, strict=True):
        if st != "unchanged":
            run = runs.get(run_name)
            if run is None:
                run = root.new_run(run_name)
                runs[run_name] = run
                report.created_runs.append(run_name)
            pick_set = run.new_picks(obj, session_id=session, user_id=user, exist_ok=True)
            pick_set.from_numpy(xyz)  # stores
        report.written.append(PickSetWrite(run=run_name, tomo_id=tid, object=obj, user_id=user, session_id=session,
                                           n=len(xyz), status=st))
    return report


__all__ = ["CopickExportReport", "PickSetWrite", "RunsMissing", "export_copick"]

"""What to fetch from the CryoET Data Portal: runs, one tomogram per run, and point annotations.

Selections come from dataset ids, run names, or an external point CSV (``dataset_id,tomo_id`` + coordinates,
where ``tomo_id`` is the portal run name). Everything crosses into files as pydantic models
(:class:`Selection` is what ``byu portal find`` writes and the later steps read).

Decisions (see :func:`choose_tomogram` and :func:`make_tomo_id`):

* **tomo_id** of a portal run: ``<dataset_id>_<run name>`` with every character outside ``[A-Za-z0-9._-]``
  replaced by ``_`` (run names repeat across datasets; the dataset prefix keeps ids unique).
* **Tomogram choice**: among the run's tomograms that offer the wanted file format, the voxel spacing
  closest to the target on the preferred side (default ``"below"``: the largest spacing that is at most the
  target, so the stack can be resampled to exactly the working spacing with the smallest download; with
  ``side="above"``: the smallest spacing at least the target). When no tomogram is on that side, the
  closest one on the other side is taken. Ties at the same spacing go by ``prefer`` (default: portal
  canonical first, then processing ``raw``, ``filtered``, ``denoised``), then the lowest tomogram id.
* **Objects → classes**: ``objects`` lists what to take, each a byu class name (``motor``, ``ribosome``, a classes
  file's), a portal object name or a GO/UniProt id; each resolves to a byu class of the registry
  (:meth:`~byu.labels.classes.ClassRegistry.by_portal_object`). Annotations are found by the class's object name
  pattern (SQL ``ILIKE``; motors: ``%flagell%motor%``, which matches the portal's "bacterial-type flagellum motor"
  as well as "flagellar motor") and by its GO id, with ``Point``/``OrientedPoint`` shapes in ``ndjson`` files
  (oriented points are read as points); every point file carries its class.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from byu.atomic import write_json
from byu.errors import ByuError, InputError, NotFoundError
from byu.labels.classes import MOTOR, ClassRegistry, ParticleClass
from byu.paths import check_id
from byu.portal.points import read_external_points

DEFAULT_PORTAL_URL = "https://graphql.cryoetdataportal.czscience.com/graphql"
DEFAULT_OBJECT_NAME = "%flagell%motor%"
DEFAULT_PREFER: tuple[str, ...] = ("canonical", "raw", "filtered", "denoised")
POINT_SHAPES: tuple[str, ...] = ("Point", "OrientedPoint")
SPACING_TOLERANCE = 1e-3  # Å: spacings closer than this are "the same"
_BATCH = 200  # ids per `_in` filter (the client inlines them into the query text)

Format = Literal["mrc", "zarr", "auto"]
Side = Literal["below", "above"]


class PortalTomogram(BaseModel):
    """The tomogram chosen for one run, with everything the later steps need."""

    tomo_id: str
    dataset_id: int
    run_id: int
    run_name: str
    tomogram_id: int
    voxel_spacing: float = Field(gt=0)
    shape: tuple[int, int, int] = Field(description="Z, Y, X (sizeZ, sizeY, sizeX)")
    processing: str | None = None
    is_portal_standard: bool | None = None
    alignment_id: int | None = None
    tomogram_voxel_spacing_id: int | None = None
    https_mrc_file: str | None = None
    s3_mrc_file: str | None = None
    file_size_mrc: float | None = None
    s3_omezarr_dir: str | None = None
    https_omezarr_dir: str | None = None
    file_size_omezarr: float | None = None

    def portal_ids(self) -> dict[str, Any]:
        """The ids recorded in ``meta.json`` and label manifests."""
        return {"dataset_id": self.dataset_id, "run_id": self.run_id, "run_name": self.run_name,
                "tomogram_id": self.tomogram_id, "voxel_spacing": self.voxel_spacing}


class PointFile(BaseModel):
    """One ndjson point file of a matching annotation."""

    tomo_id: str
    run_id: int
    annotation_id: int
    annotation_file_id: int
    object_name: str
    object_id: str | None = None
    shape_type: str
    format: str
    https_path: str | None = None
    s3_path: str | None = None
    voxel_spacing: float = Field(gt=0, description="Å per voxel of the point coordinates")
    alignment_id: int | None = None
    ground_truth_status: bool | None = None
    method_type: str | None = None
    particle: str = Field(default="motor", description="the byu class of the annotation's object")


class Skipped(BaseModel):
    """A run (or requested name) that will not be ingested, and why."""

    dataset_id: int | None = None
    run_name: str | None = None
    run_id: int | None = None
    reason: str


class Selection(BaseModel):
    """What ``byu portal find`` resolved: written as JSON, read by download / preprocess / labels."""

    portal_url: str
    created_at: str = Field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    target_spacing: float
    side: str = "below"
    prefer: list[str] = Field(default_factory=lambda: list(DEFAULT_PREFER))
    format: str = "auto"
    object_name: str | None = DEFAULT_OBJECT_NAME  # what older selections recorded (one pattern: motors)
    classes: list[ParticleClass] = Field(default_factory=list, description="the byu classes asked for")
    points_csv: str | None = None
    tomograms: list[PortalTomogram] = Field(default_factory=list)
    point_files: list[PointFile] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)

    def write(self, path: str | Path) -> Path:
        """Write atomically as JSON."""
        write_json(path, self.model_dump(mode="json"))
        return Path(path)

    @classmethod
    def read(cls, path: str | Path) -> Selection:
        """Read a selection JSON (InputError naming the file when it is not one)."""
        p = Path(path)
        if not p.exists():
            raise NotFoundError(f"{p}: no selection file (run `byu portal find` first)")
        try:
            return cls.model_validate_json(p.read_text())
        except ValueError as exc:
            raise InputError(f"not a portal selection: {exc}", file=p) from exc

    def by_tomo_id(self) -> dict[str, PortalTomogram]:
        return {t.tomo_id: t for t in self.tomograms}

    @property
    def label_classes(self) -> list[ParticleClass]:
        """The classes the selection's labels hold (motor for selections from before classes)."""
        return list(self.classes) or [MOTOR]


def resolve_objects(objects: Sequence[str] | None, registry: ClassRegistry | None = None) -> list[ParticleClass]:
    """The byu classes for portal object specs (class names, portal object names or GO ids); motors by default."""
    registry = registry or ClassRegistry()
    if not objects:
        return [MOTOR]
    out: dict[str, ParticleClass] = {}
    errors = []
    for spec in objects:
        cls = registry.by_portal_object(spec) if spec.strip() else None
        if cls is None:
            errors.append(spec)
        else:
            out.setdefault(cls.name, cls)
    if errors:
        raise InputError(f"no byu class for portal object(s) {errors}: give a class name ({', '.join(registry)}), "
                         "a portal object name or a GO id, or describe the class in a classes file (name, radius, "
                         "portal_object, go_id)", field="objects")
    return list(out.values())


# ------------------------------------------------------------------------------------------------ naming
def make_tomo_id(dataset_id: int | str, run_name: str) -> str:
    """``<dataset_id>_<run name made safe>``: characters outside ``[A-Za-z0-9._-]`` become ``_``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(run_name)).strip("._") or "run"
    return check_id(f"{int(dataset_id)}_{safe}")


# ------------------------------------------------------------------------------------------ client calls
class PortalError(ByuError):
    """The portal's GraphQL API could not be reached or refused a query."""


def _find(model: Any, client: Any, filters: list[Any]) -> list[Any]:
    """``model.find(client, filters)`` with transport and query errors turned into :class:`PortalError`."""
    import requests
    from gql.transport.exceptions import TransportError
    from graphql import GraphQLError

    try:
        return list(model.find(client, filters))
    except (TransportError, GraphQLError, requests.RequestException) as exc:
        raise PortalError(f"portal {getattr(client, 'url', '?')}: {model.__name__} query failed: "
                          f"{type(exc).__name__}: {exc}") from exc


def _client(client_or_url: Any) -> Any:
    from cryoet_data_portal import Client

    if client_or_url is None or isinstance(client_or_url, str):
        return Client(url=client_or_url or DEFAULT_PORTAL_URL)
    return client_or_url


def _batches(values: Sequence[Any], n: int = _BATCH) -> Iterable[list[Any]]:
    values = list(values)
    for i in range(0, len(values), n):
        yield values[i:i + n]


def find_runs(client: Any, *, dataset_ids: Iterable[int] = (), run_names: Iterable[str] = (),
              pairs: Iterable[tuple[int, str]] = ()) -> tuple[list[Any], list[Skipped]]:
    """Runs of ``dataset_ids`` (all their runs, or only ``run_names`` when both are given), runs named
    ``run_names`` in any dataset, and exact ``(dataset_id, run_name)`` pairs. Returns ``(runs, not_found)``."""
    from cryoet_data_portal import Run

    client = _client(client)
    dataset_ids = sorted({int(d) for d in dataset_ids})
    run_names = sorted({str(n) for n in run_names})
    pairs = sorted({(int(d), str(n)) for d, n in pairs})
    if not dataset_ids and not run_names and not pairs:
        raise InputError("nothing to select: give dataset ids, run names or a point CSV", field="selection")
    found: dict[int, Any] = {}
    missing: list[Skipped] = []
    if dataset_ids:
        for batch in _batches(dataset_ids):
            filters = [Run.dataset_id._in(batch)]
            if run_names:
                filters.append(Run.name._in(run_names))
            for r in _find(Run, client, filters):
                found[r.id] = r
        have_ds = {r.dataset_id for r in found.values()}
        missing += [Skipped(dataset_id=d, reason="dataset not found or has no matching runs")
                    for d in dataset_ids if d not in have_ds]
    elif run_names:
        for batch in _batches(run_names):
            for r in _find(Run, client, [Run.name._in(batch)]):
                found[r.id] = r
    if run_names:
        have_names = {r.name for r in found.values()}
        missing += [Skipped(run_name=n, reason="run not found") for n in run_names if n not in have_names]
    by_ds: dict[int, list[str]] = defaultdict(list)
    for d, n in pairs:
        by_ds[d].append(n)
    for d, names in by_ds.items():
        got: set[str] = set()
        for batch in _batches(names):
            for r in _find(Run, client, [Run.dataset_id == d, Run.name._in(batch)]):
                found[r.id] = r
                got.add(r.name)
        missing += [Skipped(dataset_id=d, run_name=n, reason="run not found in dataset")
                    for n in names if n not in got]
    return sorted(found.values(), key=lambda r: (r.dataset_id, r.name, r.id)), missing


def find_tomograms(client: Any, run_ids: Iterable[int]) -> dict[int, list[Any]]:
    """All tomograms of ``run_ids`` (one query per batch of ids), grouped by run id."""
    from cryoet_data_portal import Tomogram

    client = _client(client)
    out: dict[int, list[Any]] = defaultdict(list)
    for batch in _batches(sorted(set(run_ids))):
        for t in _find(Tomogram, client, [Tomogram.run_id._in(batch)]):
            out[t.run_id].append(t)
    return dict(out)


def _has_format(t: Any, fmt: Format) -> bool:
    mrc = bool(getattr(t, "https_mrc_file", None))
    zarr = bool(getattr(t, "s3_omezarr_dir", None))
    return {"mrc": mrc, "zarr": zarr, "auto": mrc or zarr}[fmt]


def _preference_rank(t: Any, prefer: Sequence[str]) -> int:
    for i, key in enumerate(prefer):
        key = key.lower()
        if key == "canonical" and getattr(t, "is_portal_standard", None):
            return i
        if key == "author" and getattr(t, "is_author_submitted", None):
            return i
        if key == "visualization" and getattr(t, "is_visualization_default", None):
            return i
        if key == str(getattr(t, "processing", "") or "").lower():
            return i
    return len(prefer)


def choose_tomogram(tomograms: Sequence[Any], *, target_spacing: float = 16.0, side: Side = "below",
                    prefer: Sequence[str] = DEFAULT_PREFER, fmt: Format = "auto") -> Any | None:
    """Pick one tomogram of a run by the rule in the module docstring (``None`` when none is usable).

    ``tomograms`` are portal ``Tomogram`` objects (or anything with the same attributes).
    """
    usable = [t for t in tomograms if _has_format(t, fmt) and (t.voxel_spacing or 0) > 0]
    if not usable:
        return None
    tol = SPACING_TOLERANCE
    below = [t for t in usable if t.voxel_spacing <= target_spacing + tol]
    above = [t for t in usable if t.voxel_spacing >= target_spacing - tol]
    primary, secondary = (below, above) if side == "below" else (above, below)
    pool = primary or secondary
    best = min(abs(t.voxel_spacing - target_spacing) for t in pool)
    pool = [t for t in pool if abs(t.voxel_spacing - target_spacing) <= best + tol]
    return min(pool, key=lambda t: (_preference_rank(t, prefer), t.id))


def to_portal_tomogram(t: Any, run: Any) -> PortalTomogram:
    """Our record of a chosen portal ``Tomogram`` of ``run``."""
    return PortalTomogram(
        tomo_id=make_tomo_id(run.dataset_id, run.name), dataset_id=run.dataset_id, run_id=run.id,
        run_name=run.name, tomogram_id=t.id, voxel_spacing=float(t.voxel_spacing),
        shape=(int(t.size_z), int(t.size_y), int(t.size_x)), processing=t.processing,
        is_portal_standard=t.is_portal_standard, alignment_id=t.alignment_id,
        tomogram_voxel_spacing_id=t.tomogram_voxel_spacing_id, https_mrc_file=t.https_mrc_file,
        s3_mrc_file=t.s3_mrc_file, file_size_mrc=t.file_size_mrc, s3_omezarr_dir=t.s3_omezarr_dir,
        https_omezarr_dir=t.https_omezarr_dir, file_size_omezarr=t.file_size_omezarr,
    )


def find_point_files(client: Any, runs: Sequence[Any], *, classes: Sequence[ParticleClass] = (MOTOR,),
                     shape_types: Sequence[str] = POINT_SHAPES) -> list[PointFile]:
    """ndjson point files of the annotations of ``runs`` whose object is one of ``classes`` (object name pattern or
    GO id), each tagged with its class."""
    from cryoet_data_portal import Annotation, AnnotationFile, AnnotationShape, TomogramVoxelSpacing

    client = _client(client)
    run_by_id = {r.id: r for r in runs}
    annotations: dict[int, Any] = {}
    particle: dict[int, str] = {}
    for batch in _batches(sorted(run_by_id)):
        for cls in classes:
            found: list[Any] = []
            if cls.portal_object:
                found += _find(Annotation, client, [Annotation.run_id._in(batch),
                                                    Annotation.object_name.ilike(cls.portal_object)])
            if cls.go_id:
                found += _find(Annotation, client, [Annotation.run_id._in(batch), Annotation.object_id == cls.go_id])
            for a in found:
                annotations[a.id] = a
                particle.setdefault(a.id, cls.name)  # the first class asked for wins
    if not annotations:
        return []
    shapes: dict[int, Any] = {}
    for batch in _batches(sorted(annotations)):
        for s in _find(AnnotationShape, client, [AnnotationShape.annotation_id._in(batch),
                                               AnnotationShape.shape_type._in(list(shape_types))]):
            shapes[s.id] = s
    files: list[Any] = []
    for batch in _batches(sorted(shapes)):
        files += _find(AnnotationFile, client, [AnnotationFile.annotation_shape_id._in(batch),
                                              AnnotationFile.format == "ndjson"])
    spacing: dict[int, float] = {}
    vs_ids = sorted({f.tomogram_voxel_spacing_id for f in files if f.tomogram_voxel_spacing_id is not None}
                    | {a.tomogram_voxel_spacing_id for a in annotations.values()
                       if a.tomogram_voxel_spacing_id is not None})
    for batch in _batches(vs_ids):
        for v in _find(TomogramVoxelSpacing, client, [TomogramVoxelSpacing.id._in(batch)]):
            spacing[v.id] = float(v.voxel_spacing)
    out: list[PointFile] = []
    for f in sorted(files, key=lambda f: f.id):
        shape = shapes[f.annotation_shape_id]
        ann = annotations[shape.annotation_id]
        run = run_by_id[ann.run_id]
        vs = spacing.get(f.tomogram_voxel_spacing_id) or spacing.get(ann.tomogram_voxel_spacing_id)
        if not vs:
            continue  # points without a known spacing cannot be placed
        out.append(PointFile(
            tomo_id=make_tomo_id(run.dataset_id, run.name), run_id=run.id, annotation_id=ann.id,
            annotation_file_id=f.id, object_name=ann.object_name, object_id=ann.object_id,
            shape_type=shape.shape_type, format=f.format, https_path=f.https_path, s3_path=f.s3_path,
            voxel_spacing=vs, alignment_id=f.alignment_id, ground_truth_status=ann.ground_truth_status,
            method_type=ann.method_type, particle=particle[ann.id],
        ))
    return out


def select(client: Any, *, dataset_ids: Iterable[int] = (), run_names: Iterable[str] = (),
           points_csv: str | Path | None = None, target_spacing: float = 16.0, side: Side = "below",
           prefer: Sequence[str] = DEFAULT_PREFER, fmt: Format = "auto",
           object_name: str | None = DEFAULT_OBJECT_NAME, objects: Sequence[str] | None = None,
           registry: ClassRegistry | None = None) -> Selection:
    """Resolve runs, choose one tomogram per run and list the point files of the chosen objects.

    ``objects``: class names, portal object names or GO ids (see the module docstring); ``object_name`` is the
    older single-pattern form (``None`` with no ``objects``: no annotations). With ``points_csv`` the runs named
    in the CSV (``dataset_id`` + ``tomo_id`` = run name) are added.
    """
    specs = list(objects) if objects else ([object_name] if object_name else [])
    classes = resolve_objects(specs, registry) if specs else []

    client = _client(client)
    pairs: list[tuple[int, str]] = []
    if points_csv is not None:
        ext = read_external_points(points_csv)
        pairs = sorted({(int(d), str(n)) for d, n in zip(ext["dataset_id"], ext["run_name"], strict=True)})
    runs, skipped = find_runs(client, dataset_ids=dataset_ids, run_names=run_names, pairs=pairs)
    tomos_by_run = find_tomograms(client, [r.id for r in runs])
    chosen: list[PortalTomogram] = []
    kept_runs = []
    seen_ids: dict[str, int] = {}
    for run in runs:
        t = choose_tomogram(tomos_by_run.get(run.id, []), target_spacing=target_spacing, side=side,
                            prefer=prefer, fmt=fmt)
        if t is None:
            n = len(tomos_by_run.get(run.id, []))
            skipped.append(Skipped(dataset_id=run.dataset_id, run_name=run.name, run_id=run.id,
                                   reason=f"no tomogram with a {fmt} file ({n} tomogram(s) listed)"))
            continue
        pt = to_portal_tomogram(t, run)
        if pt.tomo_id in seen_ids:
            skipped.append(Skipped(dataset_id=run.dataset_id, run_name=run.name, run_id=run.id,
                                   reason=f"tomo_id {pt.tomo_id!r} collides with run {seen_ids[pt.tomo_id]}"))
            continue
        seen_ids[pt.tomo_id] = run.id
        chosen.append(pt)
        kept_runs.append(run)
    point_files = find_point_files(client, kept_runs, classes=classes) if classes else []
    return Selection(
        portal_url=str(getattr(client, "url", "")), target_spacing=target_spacing, side=side,
        prefer=list(prefer), format=fmt, object_name=", ".join(specs) or None, classes=classes,
        points_csv=str(points_csv) if points_csv is not None else None,
        tomograms=chosen, point_files=point_files, skipped=skipped,
    )

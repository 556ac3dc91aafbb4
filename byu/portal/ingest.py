"""The portal ingestion steps over a data root: select -> download -> preprocess -> labels.

Each step is a public function (the CLI verbs and the ``external`` flow call them); :func:`ingest` runs them all.
Tomograms stream one by one (:func:`ingest_tomogram`): download → verify → preprocess → delete the raw file
(unless ``keep_raw``), at most ``max_inflight`` at once, so the raw files on disk never exceed ``max_inflight``
whatever the number of tomograms. Every step can be rerun: a tomogram already stored from the same portal
tomogram with the same settings is skipped without downloading, an interrupted download resumes, and storing an
identical label version again is a no-op; a killed run redoes only the unfinished tomograms. A stored tomogram whose
content a label version pins (:mod:`byu.labels.store`) is never replaced by other content (another portal tomogram or
other settings) unless ``replace_pinned``: that tomogram fails, before its download, with a
:class:`~byu.errors.PinnedTomogramError` saying what to do.

Label versions are immutable, so the labels of a selection are stored only once every selected tomogram is
stored; with ``allow_partial`` what is there is stored as ``NAME-partial`` (a version of its own), and a rerun
once the rest is stored completes ``NAME`` itself (its parent: the partial version).

Layout (``DataRoot``): ``raw/selection.json`` (default selection file), ``raw/<tomo_id>.mrc|.zarr`` +
``raw/<tomo_id>.download.json``, ``raw/annotations/<tomo_id>/<file id>.ndjson``, ``tomograms/<tomo_id>/``,
``labels/<version>.*``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from byu.errors import ByuError, InputError
from byu.labels.model import LabelSet
from byu.labels.store import LabelStore, Manifest
from byu.paths import DataRoot
from byu.portal.convert import DEFAULT_MERGE_FRACTION, ConversionNotes, check_merge, portal_labels, store_portal_labels
from byu.portal.download import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    DEFAULT_WORKERS,
    DownloadError,
    DownloadFailure,
    DownloadReport,
    ProgressFn,
    download_point_files,
    download_tomogram,
    download_tomograms,
    read_record,
)
from byu.portal.points import read_external_points
from byu.portal.query import DEFAULT_OBJECT_NAME, DEFAULT_PREFER, Selection, select
from byu.tomo.io import TomoMeta, read_meta, tomo_dir
from byu.tomo.preprocess import DEFAULT_CLIP_PERCENTILES, preprocess_tomogram

DEFAULT_LABEL_VERSION = "external_gt_v0"
SELECTION_NAME = "selection.json"
DEFAULT_MAX_INFLIGHT = 4
PARTIAL_SUFFIX = "-partial"


def partial_name(name: str) -> str:
    """The version name under which an incomplete label set is stored (``NAME-partial``)."""
    return f"{name}{PARTIAL_SUFFIX}"


def selection_path(data: DataRoot) -> Path:
    """The default selection file: ``raw/selection.json``."""
    return data.raw / SELECTION_NAME


@dataclass
class PreprocessReport:
    done: list[TomoMeta] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already stored from the same download and settings
    missing: list[str] = field(default_factory=list)  # not downloaded (yet)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (tomo_id, error)


@dataclass
class TomogramResult:
    """What happened to one tomogram in a streamed ingest."""

    tomo_id: str
    status: str  # "stored" | "skipped" (already stored from the same source) | "failed"
    error: str | None = None
    download_s: float = 0.0
    preprocess_s: float = 0.0
    raw_bytes: int = 0
    meta: TomoMeta | None = None


@dataclass
class LabelsReport:
    manifest: Manifest | None
    labels: LabelSet
    notes: ConversionNotes
    failures: list[DownloadFailure] = field(default_factory=list)
    without_tomogram: list[str] = field(default_factory=list)  # selected but not stored (yet)
    stored_as: str | None = None  # the version written (NAME, or NAME-partial)
    withheld: list[str] = field(default_factory=list)  # missing tomograms that kept NAME from being stored


@dataclass
class IngestReport:
    selection: Selection
    tomograms: list[TomogramResult]
    labels: LabelsReport | None
    peak_raw_files: int = 0

    @property
    def failures(self) -> list[TomogramResult]:
        return [r for r in self.tomograms if r.status == "failed"]

    @property
    def labels_withheld(self) -> list[str]:
        return self.labels.withheld if self.labels is not None else []

    @property
    def ok(self) -> bool:
        return not (self.failures or self.labels_withheld or (self.labels is not None and self.labels.failures))


# ----------------------------------------------------------------------------------------------- steps
def find_step(portal: Any, data: DataRoot, *, out: str | Path | None = None, dataset_ids: Iterable[int] = (),
              run_names: Iterable[str] = (), points_csv: str | Path | None = None, target_spacing: float = 16.0,
              side: str = "below", prefer: Sequence[str] = DEFAULT_PREFER, fmt: str = "auto",
              object_name: str | None = DEFAULT_OBJECT_NAME, objects: Sequence[str] | None = None,
              registry: Any = None) -> tuple[Selection, Path]:
    """Resolve the selection and write it (default ``raw/selection.json``)."""
    sel = select(portal, dataset_ids=dataset_ids, run_names=run_names, points_csv=points_csv,
                 target_spacing=target_spacing, side=side, prefer=prefer, fmt=fmt,  # type: ignore[arg-type]
                 object_name=object_name, objects=objects, registry=registry)
    path = Path(out) if out is not None else selection_path(data)
    return sel, sel.write(path)


def download_step(selection: Selection, data: DataRoot, *, fmt: str | None = None, workers: int = DEFAULT_WORKERS,
                  force: bool = False, retries: int = DEFAULT_RETRIES,
                  timeout: tuple[float, float] = DEFAULT_TIMEOUT, backoff: float = 0.5,
                  s3_endpoint_url: str | None = None, progress: ProgressFn | None = None,
                  on_done: Callable[[str, Any], None] | None = None) -> DownloadReport:
    """Download the selected tomograms into ``raw/`` (bounded concurrency, failures collected)."""
    return download_tomograms(selection.tomograms, data.raw, fmt=fmt or selection.format, workers=workers,
                              force=force, retries=retries, timeout=timeout, backoff=backoff,
                              s3_endpoint_url=s3_endpoint_url, progress=progress, on_done=on_done)


def _is_current(data: DataRoot, tomo_id: str, sha256: str | None, target_spacing: float,
                clip_percentiles: tuple[float, float], tomogram_id: int | None = None) -> bool:
    """Whether ``tomograms/<tomo_id>`` was made from this download (sha256) or, without one, from this portal
    tomogram, with these settings."""
    d = tomo_dir(data.tomograms, tomo_id)
    try:
        meta = read_meta(d)
    except ByuError:
        return False
    wanted_spacing = max(target_spacing, meta.original_spacing)
    same = meta.sha256 == sha256 if sha256 is not None else \
        (meta.source.get("portal") or {}).get("tomogram_id") == tomogram_id
    return (same and abs(meta.voxel_spacing - wanted_spacing) < 1e-6
            and tuple(meta.clip_percentiles or ()) == tuple(clip_percentiles))


def preprocess_step(selection: Selection, data: DataRoot, *, target_spacing: float | None = None,
                    clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES, force: bool = False,
                    on_done: Callable[[str, str], None] | None = None, replace_pinned: bool = False,
                    **options: Any) -> PreprocessReport:
    """Preprocess every downloaded tomogram of the selection into ``tomograms/`` (one at a time; the
    kernel is already multi-threaded). A corrupt input is reported and skipped; nothing is written for it, nor for
    one that would replace content a label version pins (unless ``replace_pinned``)."""
    spacing = float(target_spacing if target_spacing is not None else selection.target_spacing)
    report = PreprocessReport()
    store = LabelStore(data.labels)
    for t in selection.tomograms:
        rec = read_record(data.raw, t.tomo_id)
        if rec is None:
            report.missing.append(t.tomo_id)
            continue
        current = _is_current(data, t.tomo_id, rec.sha256, spacing, clip_percentiles)
        if current and not force:
            report.skipped.append(t.tomo_id)
            if on_done:
                on_done(t.tomo_id, "skipped")
            continue
        try:
            if not current:
                store.check_replace(t.tomo_id, doing=_portal_doing(t, spacing), replace_pinned=replace_pinned)
            meta = preprocess_tomogram(
                data.raw / rec.path, data.tomograms, tomo_id=t.tomo_id, original_spacing=t.voxel_spacing,
                target_spacing=spacing, clip_percentiles=clip_percentiles, sha256=rec.sha256,
                source={"portal": t.portal_ids(), "url": rec.url, "raw": rec.path},
                guard=store.replace_guard(replace_pinned=replace_pinned), **options)
        except (ByuError, OSError) as exc:  # OSError: local trouble (disk full...), reported like the rest
            report.failures.append((t.tomo_id, str(exc)))
            if on_done:
                on_done(t.tomo_id, "failed")
            continue
        report.done.append(meta)
        if on_done:
            on_done(t.tomo_id, "done")
    return report


def ingest_tomogram(t: Any, data: DataRoot, *, fmt: str = "auto", target_spacing: float = 16.0,
                    clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES, keep_raw: bool = False,
                    force: bool = False, retries: int = DEFAULT_RETRIES,
                    timeout: tuple[float, float] = DEFAULT_TIMEOUT, backoff: float = 0.5,
                    s3_endpoint_url: str | None = None, progress: ProgressFn | None = None,
                    replace_pinned: bool = False) -> TomogramResult:
    """Download → verify → preprocess → delete the raw file, for one selected tomogram (``t``, a
    :class:`~byu.portal.query.PortalTomogram`). Failures are returned, never raised; nothing half-done is left
    under a final name (a partial download stays as ``.part`` to resume). A stored tomogram whose content a label
    version pins is not replaced by other content (a failure, before the download) unless ``replace_pinned``."""
    import shutil
    import time

    current = _is_current(data, t.tomo_id, None, target_spacing, clip_percentiles, t.tomogram_id)
    if current and not force:
        return TomogramResult(t.tomo_id, "skipped")
    store = LabelStore(data.labels)
    if not current:
        try:
            store.check_replace(t.tomo_id, doing=_portal_doing(t, target_spacing), replace_pinned=replace_pinned)
        except InputError as exc:
            return TomogramResult(t.tomo_id, "failed", error=str(exc))
    t0 = time.perf_counter()
    try:
        rec, _ = download_tomogram(t, data.raw, fmt=fmt, force=force, retries=retries, timeout=timeout,
                                   backoff=backoff, s3_endpoint_url=s3_endpoint_url, progress=progress)
    except (DownloadError, OSError) as exc:
        return TomogramResult(t.tomo_id, "failed", error=str(exc))
    t1 = time.perf_counter()
    raw = data.raw / rec.path
    try:
        meta = preprocess_tomogram(raw, data.tomograms, tomo_id=t.tomo_id, original_spacing=t.voxel_spacing,
                                   target_spacing=target_spacing, clip_percentiles=clip_percentiles,
                                   sha256=rec.sha256, source={"portal": t.portal_ids(), "url": rec.url,
                                                              "raw": rec.path},
                                   guard=store.replace_guard(replace_pinned=replace_pinned))
    except (ByuError, OSError) as exc:
        return TomogramResult(t.tomo_id, "failed", error=str(exc), download_s=t1 - t0, raw_bytes=rec.size)
    t2 = time.perf_counter()
    if not keep_raw:
        shutil.rmtree(raw, ignore_errors=True) if raw.is_dir() else raw.unlink(missing_ok=True)
    return TomogramResult(t.tomo_id, "stored", download_s=t1 - t0, preprocess_s=t2 - t1, raw_bytes=rec.size,
                          meta=meta)


def _portal_doing(t: Any, target_spacing: float) -> str:
    return (f"portal tomogram {t.tomogram_id} (run {t.run_name}, {t.voxel_spacing:g} Å, "
            f"target {target_spacing:g} Å)")


def ingest_tomograms(selection: Selection, data: DataRoot, *, max_inflight: int = DEFAULT_MAX_INFLIGHT,
                     on_done: Callable[[TomogramResult], None] | None = None, **options: Any) -> list[TomogramResult]:
    """:func:`ingest_tomogram` for every selected tomogram, at most ``max_inflight`` at once (so at most that many
    raw files exist at a time); results in selection order."""
    from concurrent.futures import ThreadPoolExecutor

    data.raw.mkdir(parents=True, exist_ok=True)
    spacing = float(options.pop("target_spacing", selection.target_spacing))

    def one(t: Any) -> TomogramResult:
        result = ingest_tomogram(t, data, fmt=options.get("fmt") or selection.format, target_spacing=spacing,
                                 **{k: v for k, v in options.items() if k != "fmt"})
        if on_done:
            on_done(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, max_inflight)) as pool:
        return list(pool.map(one, selection.tomograms))


def labels_step(selection: Selection, data: DataRoot, *, name: str | None = DEFAULT_LABEL_VERSION,
                points_csv: str | Path | None = None, portal_annotations: bool = True,
                include_empty: bool = False, require_stored: bool = True, parents: Sequence[str] = (),
                producer: str = "byu portal labels", allow_partial: bool = False, workers: int = DEFAULT_WORKERS,
                retries: int = DEFAULT_RETRIES, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                backoff: float = 0.5, merge_distance_A: float | None = None,
                merge_fraction: float = DEFAULT_MERGE_FRACTION) -> LabelsReport:
    """Build the labels (portal point files of the selection's objects and/or an external CSV, default the
    selection's) of the stored tomograms and store them as version ``name`` (``None``: build only). Points of a
    class closer than ``merge_fraction`` x its radius (or ``merge_distance_A``) are kept once
    (:mod:`byu.portal.convert`); ``notes.merges`` says what was merged.

    The version is stored only when every selected tomogram is stored (``withheld`` lists the others); with
    ``allow_partial`` the labels of what is there go to ``NAME-partial`` instead, and once everything is stored
    ``NAME`` itself is stored with the partial version as its parent.
    """
    check_merge(merge_distance_A, merge_fraction)  # before any download
    failures: list[DownloadFailure] = []
    paths = None
    sources = []
    if portal_annotations and selection.point_files:
        paths, failures = download_point_files(selection.point_files, data.raw, workers=workers, retries=retries,
                                               timeout=timeout, backoff=backoff)
        sources.append("portal annotations of " + ", ".join(c.name for c in selection.label_classes))
    csv = points_csv if points_csv is not None else selection.points_csv
    external = read_external_points(csv) if csv else None
    if csv:
        sources.append(f"external points {Path(csv).name}")
    labels, notes = portal_labels(selection, data.tomograms, point_paths=paths, external=external,
                                  external_source=str(csv) if csv else "external", include_empty=include_empty,
                                  require_stored=require_stored, merge_distance_A=merge_distance_A,
                                  merge_fraction=merge_fraction)
    without = missing_tomograms(selection, data)
    report = LabelsReport(manifest=None, labels=labels, notes=notes, failures=failures, without_tomogram=without)
    if name is None:
        return report
    store = LabelStore(data.labels)
    incomplete = bool(without or failures)
    if incomplete and not allow_partial:
        report.withheld = without or [f.key for f in failures]
        return report
    target = partial_name(name) if incomplete else name
    parents = list(parents)
    if not incomplete and store.exists(partial_name(name)) and not parents:
        parents = [partial_name(name)]
    extra = {"partial": True, "missing": without} if incomplete else {}
    report.manifest = store_portal_labels(store, target, labels, selection=selection, parents=parents,
                                          producer=producer, notes=notes, sources=sources, extra=extra)
    report.stored_as = target
    return report


def ingest(portal: Any, data: DataRoot, *, dataset_ids: Iterable[int] = (), run_names: Iterable[str] = (),
           points_csv: str | Path | None = None, target_spacing: float = 16.0, side: str = "below",
           prefer: Sequence[str] = DEFAULT_PREFER, fmt: str = "auto", object_name: str | None = DEFAULT_OBJECT_NAME,
           objects: Sequence[str] | None = None, registry: Any = None,
           label_version: str | None = DEFAULT_LABEL_VERSION, include_empty: bool = False,
           allow_partial: bool = False, max_inflight: int = DEFAULT_MAX_INFLIGHT, keep_raw: bool = False,
           workers: int = DEFAULT_WORKERS, retries: int = DEFAULT_RETRIES,
           timeout: tuple[float, float] = DEFAULT_TIMEOUT, backoff: float = 0.5,
           clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES, s3_endpoint_url: str | None = None,
           selection_out: str | Path | None = None, progress: ProgressFn | None = None,
           on_tomogram: Callable[[TomogramResult], None] | None = None, merge_distance_A: float | None = None,
           merge_fraction: float = DEFAULT_MERGE_FRACTION, replace_pinned: bool = False) -> IngestReport:
    """All steps: find, stream the tomograms (download → preprocess → delete raw, ``max_inflight`` at once),
    labels (``label_version=None`` skips them; see :func:`labels_step` for the partial-version gate and the merge
    distance; ``replace_pinned``: see :func:`ingest_tomogram`)."""
    check_merge(merge_distance_A, merge_fraction)
    selection, _ = find_step(portal, data, out=selection_out, dataset_ids=dataset_ids, run_names=run_names,
                             points_csv=points_csv, target_spacing=target_spacing, side=side, prefer=prefer,
                             fmt=fmt, object_name=object_name, objects=objects, registry=registry)
    results = ingest_tomograms(selection, data, max_inflight=max_inflight, on_done=on_tomogram,
                               clip_percentiles=clip_percentiles, keep_raw=keep_raw, retries=retries,
                               timeout=timeout, backoff=backoff, s3_endpoint_url=s3_endpoint_url, progress=progress,
                               replace_pinned=replace_pinned)
    labels = None
    if label_version is not None:
        labels = labels_step(selection, data, name=label_version, include_empty=include_empty,
                             allow_partial=allow_partial, workers=workers, retries=retries, timeout=timeout,
                             backoff=backoff, merge_distance_A=merge_distance_A, merge_fraction=merge_fraction)
    return IngestReport(selection=selection, tomograms=results, labels=labels)


def missing_tomograms(selection: Selection, data: DataRoot) -> list[str]:
    """Selected tomograms that are not stored under ``tomograms/`` (yet)."""
    return [t.tomo_id for t in selection.tomograms if not (tomo_dir(data.tomograms, t.tomo_id) / "meta.json").exists()]

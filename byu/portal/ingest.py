"""The portal ingestion steps over a data root: select -> download -> preprocess -> labels.

Each step is a public function (the CLI verbs and the ``external`` flow call them one by one); :func:`ingest`
runs them all. Every step can be rerun: downloads resume, stored tomograms whose source sha256 and settings
match are skipped, and storing an identical label version again is a no-op.

Layout (``DataRoot``): ``raw/selection.json`` (default selection file), ``raw/<tomo_id>.mrc|.zarr`` +
``raw/<tomo_id>.download.json``, ``raw/annotations/<tomo_id>/<file id>.ndjson``, ``tomograms/<tomo_id>/``,
``labels/<version>.*``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from byu.errors import ByuError
from byu.labels.store import LabelStore, Manifest
from byu.paths import DataRoot
from byu.portal.convert import ConversionNotes, portal_label_table, read_external_points, store_portal_labels
from byu.portal.download import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    DEFAULT_WORKERS,
    DownloadFailure,
    DownloadReport,
    ProgressFn,
    download_point_files,
    download_tomograms,
    read_record,
)
from byu.portal.query import DEFAULT_OBJECT_NAME, DEFAULT_PREFER, Selection, select
from byu.tomo.io import TomoMeta, read_meta, tomo_dir
from byu.tomo.preprocess import DEFAULT_CLIP_PERCENTILES, preprocess_tomogram

DEFAULT_LABEL_VERSION = "external_gt_v0"
SELECTION_NAME = "selection.json"


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
class LabelsReport:
    manifest: Manifest | None
    table: pd.DataFrame
    notes: ConversionNotes
    failures: list[DownloadFailure] = field(default_factory=list)
    without_tomogram: list[str] = field(default_factory=list)  # selected but not stored: no row


@dataclass
class IngestReport:
    selection: Selection
    downloads: DownloadReport
    preprocess: PreprocessReport
    labels: LabelsReport | None
    labels_withheld: list[str] = field(default_factory=list)  # tomograms missing, so no label version stored

    @property
    def ok(self) -> bool:
        return not (self.downloads.failures or self.preprocess.failures or self.labels_withheld
                    or (self.labels is not None and self.labels.failures))


# ----------------------------------------------------------------------------------------------- steps
def find_step(portal: Any, data: DataRoot, *, out: str | Path | None = None, dataset_ids: Iterable[int] = (),
              run_names: Iterable[str] = (), points_csv: str | Path | None = None, target_spacing: float = 16.0,
              side: str = "below", prefer: Sequence[str] = DEFAULT_PREFER, fmt: str = "auto",
              object_name: str | None = DEFAULT_OBJECT_NAME) -> tuple[Selection, Path]:
    """Resolve the selection and write it (default ``raw/selection.json``)."""
    sel = select(portal, dataset_ids=dataset_ids, run_names=run_names, points_csv=points_csv,
                 target_spacing=target_spacing, side=side, prefer=prefer, fmt=fmt,  # type: ignore[arg-type]
                 object_name=object_name)
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


def _is_current(data: DataRoot, tomo_id: str, sha256: str, target_spacing: float,
                clip_percentiles: tuple[float, float]) -> bool:
    d = tomo_dir(data.tomograms, tomo_id)
    try:
        meta = read_meta(d)
    except ByuError:
        return False
    wanted_spacing = max(target_spacing, meta.original_spacing)
    return (meta.sha256 == sha256 and abs(meta.voxel_spacing - wanted_spacing) < 1e-6
            and tuple(meta.clip_percentiles or ()) == tuple(clip_percentiles))


def preprocess_step(selection: Selection, data: DataRoot, *, target_spacing: float | None = None,
                    clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES, force: bool = False,
                    on_done: Callable[[str, str], None] | None = None, **options: Any) -> PreprocessReport:
    """Preprocess every downloaded tomogram of the selection into ``tomograms/`` (one at a time; the
    kernel is already multi-threaded). A corrupt input is reported and skipped; nothing is written for it."""
    spacing = float(target_spacing if target_spacing is not None else selection.target_spacing)
    report = PreprocessReport()
    for t in selection.tomograms:
        rec = read_record(data.raw, t.tomo_id)
        if rec is None:
            report.missing.append(t.tomo_id)
            continue
        if not force and _is_current(data, t.tomo_id, rec.sha256, spacing, clip_percentiles):
            report.skipped.append(t.tomo_id)
            if on_done:
                on_done(t.tomo_id, "skipped")
            continue
        try:
            meta = preprocess_tomogram(
                data.raw / rec.path, data.tomograms, tomo_id=t.tomo_id, original_spacing=t.voxel_spacing,
                target_spacing=spacing, clip_percentiles=clip_percentiles, sha256=rec.sha256,
                source={"portal": t.portal_ids(), "url": rec.url, "raw": rec.path}, **options)
        except (ByuError, OSError) as exc:  # OSError: local trouble (disk full...), reported like the rest
            report.failures.append((t.tomo_id, str(exc)))
            if on_done:
                on_done(t.tomo_id, "failed")
            continue
        report.done.append(meta)
        if on_done:
            on_done(t.tomo_id, "done")
    return report


def labels_step(selection: Selection, data: DataRoot, *, name: str | None = DEFAULT_LABEL_VERSION,
                points_csv: str | Path | None = None, portal_annotations: bool = True,
                include_empty: bool = False, require_stored: bool = True, parents: Sequence[str] = (),
                producer: str = "byu portal labels", workers: int = DEFAULT_WORKERS,
                retries: int = DEFAULT_RETRIES, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                backoff: float = 0.5) -> LabelsReport:
    """Build the label table (portal point files and/or an external CSV, default the selection's) in the
    stored tomograms' frames and store it as version ``name`` (``None``: build only)."""
    failures: list[DownloadFailure] = []
    paths = None
    sources = []
    if portal_annotations and selection.point_files:
        paths, failures = download_point_files(selection.point_files, data.raw, workers=workers, retries=retries,
                                               timeout=timeout, backoff=backoff)
        sources.append(f"portal annotations matching {selection.object_name!r}")
    csv = points_csv if points_csv is not None else selection.points_csv
    external = read_external_points(csv) if csv else None
    if csv:
        sources.append(f"external points {Path(csv).name}")
    table, notes = portal_label_table(selection, data.tomograms, point_paths=paths, external=external,
                                      include_empty=include_empty, require_stored=require_stored)
    stored = set(table["tomo_id"])
    without = [t.tomo_id for t in selection.tomograms
               if t.tomo_id not in stored and not (data.tomograms / t.tomo_id / "meta.json").exists()]
    manifest = None
    if name is not None:
        manifest = store_portal_labels(LabelStore(data.labels), name, table, selection=selection, parents=parents,
                                       producer=producer, notes=notes, sources=sources)
    return LabelsReport(manifest=manifest, table=table, notes=notes, failures=failures, without_tomogram=without)


def ingest(portal: Any, data: DataRoot, *, dataset_ids: Iterable[int] = (), run_names: Iterable[str] = (),
           points_csv: str | Path | None = None, target_spacing: float = 16.0, side: str = "below",
           prefer: Sequence[str] = DEFAULT_PREFER, fmt: str = "auto", object_name: str | None = DEFAULT_OBJECT_NAME,
           label_version: str | None = DEFAULT_LABEL_VERSION, include_empty: bool = False,
           allow_partial: bool = False,
           workers: int = DEFAULT_WORKERS, retries: int = DEFAULT_RETRIES,
           timeout: tuple[float, float] = DEFAULT_TIMEOUT, backoff: float = 0.5,
           clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES, s3_endpoint_url: str | None = None,
           selection_out: str | Path | None = None, progress: ProgressFn | None = None,
           on_download: Callable[[str, Any], None] | None = None,
           on_preprocess: Callable[[str, str], None] | None = None) -> IngestReport:
    """All steps: find, download, preprocess, labels (``label_version=None`` skips the labels).

    Label versions are immutable, so the version is stored only once every selected tomogram is stored
    (a rerun resumes the rest first); ``allow_partial=True`` stores it from what is there.
    """
    selection, _ = find_step(portal, data, out=selection_out, dataset_ids=dataset_ids, run_names=run_names,
                             points_csv=points_csv, target_spacing=target_spacing, side=side, prefer=prefer,
                             fmt=fmt, object_name=object_name)
    downloads = download_step(selection, data, workers=workers, retries=retries, timeout=timeout, backoff=backoff,
                              s3_endpoint_url=s3_endpoint_url, progress=progress, on_done=on_download)
    pre = preprocess_step(selection, data, clip_percentiles=clip_percentiles, on_done=on_preprocess)
    labels = None
    withheld = missing_tomograms(selection, data)
    if label_version is not None and (allow_partial or not withheld):
        labels = labels_step(selection, data, name=label_version, include_empty=include_empty, workers=workers,
                             retries=retries, timeout=timeout, backoff=backoff)
        withheld = []
    return IngestReport(selection=selection, downloads=downloads, preprocess=pre, labels=labels,
                        labels_withheld=withheld if label_version is not None else [])


def missing_tomograms(selection: Selection, data: DataRoot) -> list[str]:
    """Selected tomograms that are not stored under ``tomograms/`` (yet)."""
    return [t.tomo_id for t in selection.tomograms if not (tomo_dir(data.tomograms, t.tomo_id) / "meta.json").exists()]

"""``byu portal ...``: find, download, preprocess, labels, ingest (CryoET Data Portal ingestion).

Configuration by flags or environment: ``--data-dir`` / ``BYU_DATA`` (data root), ``--url`` /
``BYU_PORTAL_URL`` (GraphQL endpoint), ``BOTO_ENDPOINT_URL`` (S3 endpoint for OME-Zarr, as the portal client).
``--objects`` names what to take (byu classes such as ``motor,ribosome``, portal object names or GO ids).
Every verb is a thin wrapper over :mod:`byu.portal.ingest`; the selection (``raw/selection.json`` by default)
carries the choices of ``find`` to the later verbs. Exit status: 0 when everything asked for succeeded,
1 when some tomograms failed (they are listed; the others are done), 2 on a usage/input error.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from byu.cli.util import ClassesFile, DataDir, ReplacePinned, console, make_app, say
from byu.paths import DataRoot, guard_output
from byu.portal.convert import DEFAULT_MERGE_FRACTION
from byu.portal.download import DEFAULT_RETRIES, DEFAULT_WORKERS, DownloadFailure, DownloadReport
from byu.portal.ingest import (
    DEFAULT_LABEL_VERSION,
    DEFAULT_MAX_INFLIGHT,
    LabelsReport,
    PreprocessReport,
    download_step,
    find_step,
    ingest_tomograms,
    labels_step,
    preprocess_step,
    selection_path,
)
from byu.portal.query import DEFAULT_OBJECT_NAME, DEFAULT_PORTAL_URL, DEFAULT_PREFER, Selection
from byu.tomo.preprocess import DEFAULT_CLIP_PERCENTILES, DEFAULT_TARGET_SPACING

app = make_app(help="Ingest tomograms and point labels from the CryoET Data Portal.", no_args_is_help=True)

Url = Annotated[str, typer.Option("--url", envvar="BYU_PORTAL_URL", help="portal GraphQL endpoint")]
SelectionOpt = Annotated[Path | None, typer.Option("--selection",
                                                     help="selection JSON (default raw/selection.json)")]
Datasets = Annotated[list[int] | None, typer.Option("--dataset", "-d", help="portal dataset id (repeatable)")]
Runs = Annotated[list[str] | None, typer.Option("--run", "-r", help="portal run name (repeatable)")]
Points = Annotated[Path | None, typer.Option(
    "--points", help="external point CSV: dataset_id,tomo_id(run name),z,y,x[,voxel_spacing]")]
Spacing = Annotated[float, typer.Option("--spacing", help="target (working) voxel spacing in Å")]
Side = Annotated[str, typer.Option("--side", help="tomogram choice: 'below' (closest spacing <= target) or 'above'")]
Prefer = Annotated[str, typer.Option(
    "--prefer", help="tie-break order at equal spacing: canonical, author, raw, filtered, denoised")]
Fmt = Annotated[str, typer.Option("--format", help="mrc (HTTPS), zarr (OME-Zarr over S3) or auto")]
ObjectName = Annotated[str | None, typer.Option("--object", help="older form of --objects: one annotation "
                                                   "objectName ILIKE pattern ('' = none)")]
Objects = Annotated[str | None, typer.Option("--objects", help="what to take, comma-separated: byu classes "
                                                "(motor, ribosome, ...), portal object names or GO ids "
                                                "(default: motor)")]
Workers = Annotated[int, typer.Option("--workers", help="concurrent downloads")]
Retries = Annotated[int, typer.Option("--retries", help="retries per file (exponential backoff)")]
Timeout = Annotated[float, typer.Option("--timeout", help="seconds without a byte before retrying")]
ClipLow = Annotated[float, typer.Option("--clip-low", help="lower clip percentile (percent)")]
ClipHigh = Annotated[float, typer.Option("--clip-high", help="upper clip percentile (percent)")]
Version = Annotated[str, typer.Option("--label-version", help="label version to store")]
IncludeEmpty = Annotated[bool, typer.Option("--include-empty",
                                            help="rows (no motors) for tomograms without annotation")]
Force = Annotated[bool, typer.Option("--force", help="redo even when already complete")]
MergeDistance = Annotated[float | None, typer.Option(
    "--merge-distance", help="keep once the points of a class closer than this many Å (every class; 0: merge "
    "nothing); default: --merge-fraction of each class's radius")]
MergeFraction = Annotated[float | None, typer.Option(
    "--merge-fraction", help=f"keep once the points of a class closer than this fraction of its radius (default "
    f"{DEFAULT_MERGE_FRACTION:g}: two particles' centres are about two radii apart)")]


def _load(selection: Path | None, data: DataRoot) -> Selection:
    return Selection.read(selection or selection_path(data))


def _mark(word: str, style: str, rest: str) -> None:
    """``word`` in a style, then ``rest`` literally (user data is never markup)."""
    console.print(Text(word, style=style) + Text(" " + rest), highlight=False)


def _print_selection(sel: Selection, path: Path) -> None:
    t = Table(title=Text(f"{len(sel.tomograms)} tomogram(s) selected → {path}"))
    for c in ("tomo_id", "tomogram", "spacing Å", "shape ZYX", "processing", "canonical", "point files"):
        t.add_column(c)
    files: dict[str, int] = {}
    for pf in sel.point_files:
        files[pf.tomo_id] = files.get(pf.tomo_id, 0) + 1
    for x in sel.tomograms:
        t.add_row(*[Text(v) for v in (x.tomo_id, str(x.tomogram_id), f"{x.voxel_spacing:g}",
                                      "x".join(map(str, x.shape)), str(x.processing),
                                      str(bool(x.is_portal_standard)), str(files.get(x.tomo_id, 0)))])
    console.print(t)
    if sel.classes:
        say("objects → classes: " + ", ".join(f"{c.name} ({c.portal_object or c.go_id})" for c in sel.classes))
    for s_ in sel.skipped:
        _mark("skipped", "yellow", f"dataset={s_.dataset_id} run={s_.run_name!r}: {s_.reason}")


class _RichProgress:
    """Thread-safe bridge from the download callbacks to rich: one bar per active file, a line per finished
    tomogram (so thousands of tomograms do not leave thousands of bars)."""

    def __init__(self, progress: Progress, n_tomograms: int) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}
        self.lock = threading.Lock()
        self.n = n_tomograms
        self.finished = 0

    def __call__(self, key: str, done: int, total: int | None) -> None:
        with self.lock:
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(key, total=total)
            self.progress.update(self.tasks[key], completed=done, total=total)

    def done(self, key: str, result: Any) -> None:
        with self.lock:
            task = self.tasks.pop(key, None)
            if task is not None:
                self.progress.remove_task(task)
            self.finished += 1
            failed = isinstance(result, DownloadFailure) or getattr(result, "status", "") == "failed"
            status = Text("failed", style="red") if failed else Text(getattr(result, "status", "ok"))
            self.progress.console.print(Text(f"[{self.finished}/{self.n}] {key}: ") + status, highlight=False)


def _columns() -> tuple:
    return (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn())


def _download(sel: Selection, data: DataRoot, *, fmt: str | None, workers: int, retries: int, timeout: float,
              force: bool) -> DownloadReport:
    with Progress(*_columns(), console=console, transient=False) as progress:
        bridge = _RichProgress(progress, len(sel.tomograms))
        report = download_step(sel, data, fmt=fmt, workers=workers, retries=retries, timeout=(10.0, timeout),
                               force=force, progress=bridge, on_done=bridge.done)
    for f in report.failures:
        _print_failure(f)
    say(f"downloads: {len(report.records) - len(report.skipped)} new, {len(report.skipped)} already "
        f"complete, {len(report.failures)} failed → {data.raw}")
    return report


def _print_failure(f: DownloadFailure) -> None:
    kept = f" ({f.part_bytes} bytes kept for resume)" if f.part_bytes else ""
    _mark("failed", "red", f"{f.key}: {f.error}{kept}")


def _preprocess(sel: Selection, data: DataRoot, *, spacing: float | None, clip: tuple[float, float],
                force: bool, replace_pinned: bool = False) -> PreprocessReport:
    with console.status("preprocessing…") as status:
        report = preprocess_step(sel, data, target_spacing=spacing, clip_percentiles=clip, force=force,
                                 replace_pinned=replace_pinned,
                                 on_done=lambda tid, what: status.update(Text(f"preprocessing… {tid}: {what}")))
    for m in report.done:
        say(f"stored {m.tomo_id}: {'x'.join(map(str, m.original_shape))} @ {m.original_spacing:g} Å → "
            f"{'x'.join(map(str, m.shape))} @ {m.voxel_spacing:g} Å")
    for tid, err in report.failures:
        _mark("failed", "red", f"{tid}: {err}")
    if report.missing:
        _mark("not downloaded:", "yellow", ", ".join(report.missing))
    say(f"preprocess: {len(report.done)} stored, {len(report.skipped)} up to date, "
        f"{len(report.failures)} failed → {data.tomograms}")
    return report


def _merge(distance: float | None, fraction: float | None) -> dict[str, Any]:
    """The merge options for :func:`labels_step`, each checked and named when wrong (before any work)."""
    import math

    from byu.errors import InputError

    if distance is not None and fraction is not None:
        raise InputError("give --merge-distance (Å, every class) or --merge-fraction (of each class's radius), not "
                         "both", field="--merge-distance")
    for what, v in (("--merge-distance", distance), ("--merge-fraction", fraction)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise InputError(f"must be a finite number >= 0 (0: merge nothing), got {v!r}", field=what)
    return {"merge_distance_A": distance,
            "merge_fraction": DEFAULT_MERGE_FRACTION if fraction is None else fraction}


def _labels(sel: Selection, data: DataRoot, *, version: str, points: Path | None, include_empty: bool,
            allow_partial: bool, workers: int, retries: int, merge: dict[str, Any] | None = None) -> LabelsReport:
    report = labels_step(sel, data, name=version, points_csv=points, include_empty=include_empty,
                         allow_partial=allow_partial, workers=workers, retries=retries, **(merge or {}))
    for f in report.failures:
        _print_failure(f)
    for mg in report.notes.merges:
        _mark("merged", "yellow", f"{mg.merged} {mg.particle} point(s) in {mg.tomo_id} (closer than "
              f"{mg.distance_A:g} Å to another)")
    for tid, pts in report.notes.dropped.items():
        _mark("dropped", "yellow", f"{len(pts)} point(s) outside {tid}: {pts}")
    if report.notes.unmatched_rows:
        _mark("CSV rows without a selected run:", "yellow", str(report.notes.unmatched_rows))
    if report.withheld:
        _mark(f"label version {version!r} not stored:", "yellow",
              f"{len(report.withheld)} selected tomogram(s) are not stored yet ({', '.join(report.withheld[:10])}); "
              "rerun (it resumes), or pass --allow-partial to store what is there as "
              f"{version}-partial (a later complete run then stores {version})")
    m = report.manifest
    if m is not None:
        counts = ", ".join(f"{n} {c}" for c, n in m.class_counts.items())
        done = "stored" if m.created else "already stored (identical)"
        say(f"labels: version {m.name!r} {done}: {m.counts['tomograms']} tomogram(s), {counts} → {data.labels}")
    return report


def _exit(failed: bool) -> None:
    if failed:
        raise typer.Exit(code=1)


def _prefer(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _objects(objects: str | None, object_name: str | None) -> tuple[list[str] | None, str | None]:
    """``--objects`` wins; the older ``--object`` pattern is kept; '' means no annotations."""
    if objects is not None:
        return [o.strip() for o in objects.split(",") if o.strip()], None
    if object_name is not None:
        return None, object_name or None
    return None, DEFAULT_OBJECT_NAME


@app.command("find")
def find_cmd(dataset: Datasets = None, run: Runs = None, points: Points = None,
             spacing: Spacing = DEFAULT_TARGET_SPACING, side: Side = "below", prefer: Prefer = ",".join(DEFAULT_PREFER),
             fmt: Fmt = "auto", objects: Objects = None, object_name: ObjectName = None,
             out: Annotated[Path | None, typer.Option("--out", help="selection JSON to write")] = None,
             url: Url = DEFAULT_PORTAL_URL, classes_file: ClassesFile = None, data_dir: DataDir = None) -> None:
    """Resolve runs, choose one tomogram per run, list the chosen objects' point annotations; write the selection."""
    from byu.labels.classes import ClassRegistry

    data = DataRoot.from_env(data_dir)
    if out is not None and out.resolve() != selection_path(data).resolve():  # the default is find's own file
        guard_output(out, data.root)
    objs, pattern = _objects(objects, object_name)
    sel, path = find_step(url, data, out=out, dataset_ids=dataset or [], run_names=run or [], points_csv=points,
                          target_spacing=spacing, side=side, prefer=_prefer(prefer), fmt=fmt, object_name=pattern,
                          objects=objs, registry=ClassRegistry.from_file(classes_file))
    _print_selection(sel, path)


@app.command("download")
def download_cmd(selection: SelectionOpt = None, fmt: Annotated[str | None, typer.Option(
                     "--format", help="override the selection's format: mrc, zarr or auto")] = None,
                 workers: Workers = DEFAULT_WORKERS, retries: Retries = DEFAULT_RETRIES, timeout: Timeout = 60.0,
                 force: Force = False, data_dir: DataDir = None) -> None:
    """Download the selected tomograms into raw/ (resumable, verified, 4 at a time by default)."""
    data = DataRoot.from_env(data_dir)
    report = _download(_load(selection, data), data, fmt=fmt, workers=workers, retries=retries, timeout=timeout,
                       force=force)
    _exit(bool(report.failures))


@app.command("preprocess")
def preprocess_cmd(selection: SelectionOpt = None,
                   spacing: Annotated[float | None, typer.Option(
                       "--spacing", help="target spacing in Å (default: the selection's)")] = None,
                   clip_low: ClipLow = DEFAULT_CLIP_PERCENTILES[0], clip_high: ClipHigh = DEFAULT_CLIP_PERCENTILES[1],
                   force: Force = False, replace_pinned: ReplacePinned = False, data_dir: DataDir = None) -> None:
    """Clip, normalize and resample the downloaded tomograms into tomograms/<tomo_id>/ (chunked along Z)."""
    data = DataRoot.from_env(data_dir)
    report = _preprocess(_load(selection, data), data, spacing=spacing, clip=(clip_low, clip_high), force=force,
                         replace_pinned=replace_pinned)
    _exit(bool(report.failures))


AllowPartial = Annotated[bool, typer.Option("--allow-partial", help="store the labels of the tomograms that are "
                                            "there as VERSION-partial when some are missing")]


@app.command("labels")
def labels_cmd(selection: SelectionOpt = None, version: Version = DEFAULT_LABEL_VERSION, points: Points = None,
               include_empty: IncludeEmpty = False, allow_partial: AllowPartial = False,
               workers: Workers = DEFAULT_WORKERS, retries: Retries = DEFAULT_RETRIES,
               merge_distance: MergeDistance = None, merge_fraction: MergeFraction = None,
               data_dir: DataDir = None) -> None:
    """Convert the portal point annotations (and/or an external CSV) of the stored tomograms into a label version."""
    merge = _merge(merge_distance, merge_fraction)
    data = DataRoot.from_env(data_dir)
    report = _labels(_load(selection, data), data, version=version, points=points, include_empty=include_empty,
                     allow_partial=allow_partial, workers=workers, retries=retries, merge=merge)
    _exit(bool(report.failures or report.withheld))


@app.command("ingest")
def ingest_cmd(dataset: Datasets = None, run: Runs = None, points: Points = None,
               spacing: Spacing = DEFAULT_TARGET_SPACING, side: Side = "below",
               prefer: Prefer = ",".join(DEFAULT_PREFER),
               fmt: Fmt = "auto", objects: Objects = None, object_name: ObjectName = None,
               version: Version = DEFAULT_LABEL_VERSION,
               no_labels: Annotated[bool, typer.Option("--no-labels", help="stop after preprocessing")] = False,
               allow_partial: AllowPartial = False, include_empty: IncludeEmpty = False,
               max_inflight: Annotated[int, typer.Option("--max-inflight", min=1, help="tomograms downloaded and "
                                                         "preprocessed at once (raw files on disk at most)")]
               = DEFAULT_MAX_INFLIGHT,
               keep_raw: Annotated[bool, typer.Option("--keep-raw", help="keep raw downloads after preprocessing")]
               = False,
               workers: Workers = DEFAULT_WORKERS, retries: Retries = DEFAULT_RETRIES, timeout: Timeout = 60.0,
               clip_low: ClipLow = DEFAULT_CLIP_PERCENTILES[0], clip_high: ClipHigh = DEFAULT_CLIP_PERCENTILES[1],
               merge_distance: MergeDistance = None, merge_fraction: MergeFraction = None,
               replace_pinned: ReplacePinned = False,
               url: Url = DEFAULT_PORTAL_URL, classes_file: ClassesFile = None, data_dir: DataDir = None) -> None:
    """find + (download → preprocess → delete raw, per tomogram) + labels in one go (rerun to resume)."""
    from byu.labels.classes import ClassRegistry

    merge = _merge(merge_distance, merge_fraction)
    data = DataRoot.from_env(data_dir)
    objs, pattern = _objects(objects, object_name)
    sel, path = find_step(url, data, dataset_ids=dataset or [], run_names=run or [], points_csv=points,
                          target_spacing=spacing, side=side, prefer=_prefer(prefer), fmt=fmt, object_name=pattern,
                          objects=objs, registry=ClassRegistry.from_file(classes_file))
    _print_selection(sel, path)
    with Progress(*_columns(), console=console, transient=False) as progress:
        bridge = _RichProgress(progress, len(sel.tomograms))
        results = ingest_tomograms(sel, data, max_inflight=max_inflight, keep_raw=keep_raw, retries=retries,
                                   timeout=(10.0, timeout), clip_percentiles=(clip_low, clip_high),
                                   progress=bridge, on_done=lambda r: bridge.done(r.tomo_id, r),
                                   replace_pinned=replace_pinned)
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        _mark("failed", "red", f"{r.tomo_id}: {r.error}")
    stored = [r for r in results if r.status == "stored"]
    say(f"tomograms: {len(stored)} stored, {sum(r.status == 'skipped' for r in results)} up to date, "
        f"{len(failed)} failed → {data.tomograms}"
        + (f" ({sum(r.download_s + r.preprocess_s for r in stored) / len(stored):.1f} s per tomogram)"
           if stored else ""))
    bad = bool(failed)
    if not no_labels:
        labels = _labels(sel, data, version=version, points=None, include_empty=include_empty,
                         allow_partial=allow_partial, workers=workers, retries=retries, merge=merge)
        bad = bad or bool(labels.failures or labels.withheld)
    _exit(bad)

"""``byu copick ...``: ingest a copick project (tomograms + picks → a label version), export a version back.

Thin wrappers over :mod:`byu.copick`. Exit status: 0 when everything asked for succeeded, 1 when some tomograms
failed to preprocess (they are listed; the version is then not stored: rerun to resume), 2 on a usage/input error.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from byu.cli.util import ClassesFile, DataDir, ReplacePinned, console, make_app, say
from byu.paths import DataRoot
from byu.tomo.preprocess import DEFAULT_TARGET_SPACING

app = make_app(help="copick projects: ingest tomograms + picks as a label version, export a version as picks.",
               no_args_is_help=True)

Config = Annotated[Path, typer.Argument(metavar="CONFIG", help="the copick project's config JSON")]


def _list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def _mark(word: str, style: str, rest: str) -> None:
    console.print(Text(word + " ", style=style) + Text(rest), highlight=False)


@app.command("ingest")
def ingest_cmd(
    config: Config,
    version: Annotated[str, typer.Option("--version", help="label version to store the picks as")],
    user_id: Annotated[str | None, typer.Option("--user-id", help="only picks of these copick users "
                                                   "(comma-separated)")] = None,
    session_id: Annotated[str | None, typer.Option("--session-id", help="only picks of these sessions "
                                                      "(comma-separated)")] = None,
    objects: Annotated[str | None, typer.Option("--objects", help="pickable objects to take, comma-separated "
                                                   "(default: every particle object)")] = None,
    voxel_spacing: Annotated[float | None, typer.Option("--voxel-spacing", help="tomograms at this voxel "
                                                           "spacing in Å (default: the largest <= --spacing)")] = None,
    tomo_type: Annotated[str | None, typer.Option("--tomo-type", help="tomogram type (default: wbp, then "
                                                     "denoised, ctfdeconvolved, ...)")] = None,
    runs: Annotated[str | None, typer.Option("--runs", help="only these runs (comma-separated)")] = None,
    spacing: Annotated[float, typer.Option("--spacing", help="target (working) voxel spacing of the stored "
                                           "tomograms in Å")] = DEFAULT_TARGET_SPACING,
    include_empty: Annotated[bool, typer.Option("--include-empty", help="also list runs without picks in the "
                                                "version (as tomograms known to hold none)")] = False,
    force: Annotated[bool, typer.Option("--force", help="preprocess again even when already stored")] = False,
    keep_raw: Annotated[bool, typer.Option("--keep-raw", help="keep the raw copies of tomograms read from a "
                                           "remote backend (raw/<tomo_id>.copick.zarr)")] = False,
    replace_pinned: ReplacePinned = False,
    classes_file: ClassesFile = None,
    data_dir: DataDir = None,
) -> None:
    """Preprocess every run's tomogram into tomograms/ and store the picks as label version --version."""
    from byu.copick.ingest import check_spacing, ingest_copick
    from byu.labels.classes import ClassRegistry

    spacing = check_spacing(spacing, what="--spacing")  # refused before anything is read or written
    if voxel_spacing is not None:
        voxel_spacing = check_spacing(voxel_spacing, what="--voxel-spacing")
    data = DataRoot.from_env(data_dir)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("tomograms", total=None)

        started: dict[str, float] = {}

        def on_progress(tomo_id: str, done: int, total: int, status: str) -> None:
            progress.update(task, completed=done, total=total, description=f"{tomo_id}: {status}")
            if status == "preprocessing":
                started[tomo_id] = time.perf_counter()
                return
            took = f" in {time.perf_counter() - started[tomo_id]:.1f} s" if tomo_id in started else ""
            progress.console.print(Text(f"[{done}/{total}] {tomo_id}: ") +
                                   Text(status, style="red" if status == "failed" else "") + Text(took),
                                   highlight=False)

        report = ingest_copick(config, data, version=version, user_id=_list(user_id), session_id=_list(session_id),
                               objects=_list(objects), voxel_spacing=voxel_spacing, tomo_type=tomo_type,
                               target_spacing=spacing, registry=ClassRegistry.from_file(classes_file),
                               progress=on_progress, runs=_list(runs), include_empty=include_empty, force=force,
                               keep_raw=keep_raw, replace_pinned=replace_pinned)
    for note in report.radii:
        _mark("class", "yellow", str(note))
    for left in report.superseded:
        _mark("left out:", "yellow", str(left))
    for t in report.tomograms:
        if t.status == "failed":
            _mark("failed", "red", f"{t.tomo_id} (run {t.run}): {t.error}")
    for tid, pts in report.dropped.items():
        _mark("dropped", "yellow", f"{len(pts)} pick(s) outside {tid}: "
              + ", ".join(f"{p} ({x:.1f}, {y:.1f}, {z:.1f}) Å" for p, x, y, z in pts[:5])
              + (" ..." if len(pts) > 5 else ""))
    if report.without_picks:
        _mark("runs without picks (left out):", "yellow", ", ".join(report.without_picks[:20])
              + (f" ... ({len(report.without_picks)})" if len(report.without_picks) > 20 else ""))
    if report.without_tomogram:
        _mark("runs without a tomogram (no picks either):", "yellow", ", ".join(report.without_tomogram[:20]))
    coarser = [t for t in report.tomograms if t.voxel_spacing > spacing + 1e-6]
    if coarser:
        _mark(f"kept at their own spacing (coarser than --spacing {spacing:g} Å; byu does not upsample):", "yellow",
              ", ".join(f"{t.tomo_id} ({t.voxel_spacing:g} Å)" for t in coarser[:20])
              + (f" ... ({len(coarser)})" if len(coarser) > 20 else ""))
    stored = report.stored
    per = report.seconds_per_tomogram
    say(f"tomograms: {len(stored)} stored, {sum(t.status == 'skipped' for t in report.tomograms)} up to date, "
        f"{sum(t.status == 'failed' for t in report.tomograms)} failed → {data.tomograms}"
        + (f" ({per:.1f} s per tomogram)" if per is not None else ""))
    m = report.manifest
    if m is not None:
        counts = ", ".join(f"{n} {c}" for c, n in m.class_counts.items())
        done = "stored" if m.created else "already stored (identical)"
        say(f"labels: version {m.name!r} {done}: {m.counts['tomograms']} tomogram(s), {counts} → {data.labels}")
    else:
        _mark(f"label version {version!r} not stored:", "yellow",
              f"{len(report.withheld)} tomogram(s) failed ({', '.join(report.withheld[:10])}); fix and rerun "
              "(stored tomograms are skipped), or leave those runs out with --runs")
    if not report.ok:
        raise typer.Exit(code=1)


@app.command("export")
def export_cmd(
    version: Annotated[str, typer.Argument(help="stored label version (or a label file)")],
    config: Config,
    user_id: Annotated[str, typer.Option("--user-id", help="copick user id of the written picks")] = "byu",
    session_id: Annotated[str | None, typer.Option("--session-id", help="copick session id (default: the "
                                                      "version name, '_' → '-')")] = None,
    by_reviewer: Annotated[bool, typer.Option("--by-reviewer", help="one copick user per pick's user_id "
                                              "provenance (its picker or reviewer); the rest under --user-id")]
    = False,
    runs_missing: Annotated[str, typer.Option("--runs-missing", help="a tomogram whose run is not in the project: "
                                              "error, create (the run) or skip")] = "error",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing, different pick set of the "
                                            "same user, session and object")] = False,
    add_objects: Annotated[bool, typer.Option("--add-objects", help="add classes the project lacks to its "
                                              "pickable objects (saves the config)")] = False,
    classes_file: ClassesFile = None,
    data_dir: DataDir = None,
) -> None:
    """Write every pick of VERSION into the copick project as picks (Å, x/y/z), one pick set per run and object."""
    from byu.copick.export import export_copick
    from byu.labels.classes import ClassRegistry
    from byu.labels.store import LabelStore

    if runs_missing not in ("error", "create", "skip"):
        raise typer.BadParameter("--runs-missing must be error, create or skip")
    data = DataRoot.from_env(data_dir)
    store = LabelStore(data.labels)
    labels, name = store.resolve(version, data_root=data, registry=ClassRegistry.from_file(classes_file))
    report = export_copick(labels, config, user_id=user_id, session_id=session_id,
                           version_name=name or Path(version).stem, by_reviewer=by_reviewer,
                           runs_missing=runs_missing, data_root=data, overwrite=overwrite,  # type: ignore[arg-type]
                           add_objects=add_objects)
    for obj in report.added_objects:
        _mark("added object", "yellow", f"{obj} to {config}")
    for run in report.created_runs:
        _mark("created run", "yellow", run)
    if report.skipped_runs:
        _mark("not in the project (skipped):", "yellow", ", ".join(report.skipped_runs[:20]))
    for status in ("written", "replaced", "updated", "unchanged"):
        sets = [w for w in report.written if w.status == status]
        if sets:
            users = sorted({w.user_id for w in sets})
            say(f"{status}: {len(sets)} pick set(s), {sum(w.n for w in sets)} picks (users {', '.join(users)}, "
                f"session {report.session_id})")
    untrusted = [w for w in report.written if not w.trust_orientation]
    if untrusted:
        say(f"orientations: {len(untrusted)} of {len(report.written)} pick set(s) hold picks of unknown orientation "
            "(identity, trust_orientation false)")
    say(f"exported version {version!r} → {config} ({report.picks} picks in {len({w.run for w in report.written})} "
        "run(s))")

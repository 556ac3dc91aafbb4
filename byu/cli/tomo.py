"""``byu tomo ...``: your own tomograms (a folder of MRC / OME-Zarr files) and picks (CSV or RELION STAR) in.

A thin wrapper over :func:`byu.importer.import_tomograms`. Exit status: 0 when everything asked for succeeded, 1 when
some tomograms failed to preprocess (they are listed; the version is then not stored: rerun to resume), 2 on a
usage/input error (every bad row listed, naming file, line and field; nothing stored).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from byu.cli.util import ClassesFile, DataDir, ReplacePinned, console, make_app, say
from byu.paths import DataRoot
from byu.tomo.grid import DEFAULT_TARGET_SPACING

app = make_app(help="your own tomograms: import a folder of MRC / OME-Zarr files and their picks (CSV or STAR).",
               no_args_is_help=True)


def _mark(word: str, style: str, rest: str) -> None:
    console.print(Text(word + " ", style=style) + Text(rest), highlight=False)


@app.command("import")
def import_cmd(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="folder of *.mrc / *.mrcs / *.rec / *.map files "
                                              "and *.zarr (OME-Zarr) folders")],
    picks: Annotated[Path | None, typer.Option("--picks", help="picks file: CSV (tomo_id,x,y,z[,particle]) or "
                                               "RELION 4/5 STAR")] = None,
    version: Annotated[str | None, typer.Option("--version", help="label version to store the picks as "
                                                "(required with --picks)")] = None,
    particle: Annotated[str | None, typer.Option("--particle", help="the class of every pick (a built-in class or "
                                                 "one of --classes-file)")] = None,
    class_map: Annotated[str | None, typer.Option("--class-map", help="class column values to classes, e.g. "
                                                  "1=ribosome,2=apo-ferritin (rlnClassNumber)")] = None,
    coordinates: Annotated[str, typer.Option("--coordinates", help="auto, voxel (voxels of the original "
                                             "tomogram) or angstrom (CSV only)")] = "auto",
    voxel_spacing: Annotated[float | None, typer.Option("--voxel-spacing", help="Å per voxel for files whose "
                                                        "header gives none")] = None,
    spacing: Annotated[float, typer.Option("--spacing", help="target (working) voxel spacing of the stored "
                                           "tomograms in Å")] = DEFAULT_TARGET_SPACING,
    pattern: Annotated[str, typer.Option("--pattern", help="only files whose name matches this glob")] = "*",
    picks_format: Annotated[str, typer.Option("--picks-format", help="auto (by suffix / content), csv or "
                                              "star")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="preprocess again even when already stored (and replace "
                                        "a tomogram of the same id stored from elsewhere)")] = False,
    replace_pinned: ReplacePinned = False,
    classes_file: ClassesFile = None,
    data_dir: DataDir = None,
) -> None:
    """Preprocess every tomogram of DIR into tomograms/ and store the picks as label version --version."""
    from byu.importer import import_tomograms

    if coordinates not in ("auto", "voxel", "angstrom"):
        raise typer.BadParameter("choose auto, voxel or angstrom", param_hint="--coordinates")
    if picks_format not in ("auto", "csv", "star"):
        raise typer.BadParameter("choose auto, csv or star", param_hint="--picks-format")
    data = DataRoot.from_env(data_dir)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    progress = Progress(*columns, console=console, transient=False)  # started at the first tomogram: a problem
    tasks: list[TaskID] = []  # found before any work prints alone, without an empty bar
    started: dict[str, float] = {}

    def on_progress(tomo_id: str, done: int, total: int, status: str) -> None:
        if not tasks:
            progress.start()
            tasks.append(progress.add_task("tomograms", total=total))
        progress.update(tasks[0], completed=done, total=total, description=f"{tomo_id}: {status}")
        if status == "preprocessing":
            started[tomo_id] = time.perf_counter()
            return
        took = f" in {time.perf_counter() - started[tomo_id]:.1f} s" if tomo_id in started else ""
        progress.console.print(Text(f"[{done}/{total}] {tomo_id}: ") +
                               Text(status, style="red" if status == "failed" else "") + Text(took),
                               highlight=False)

    try:
        report = import_tomograms(data, directory, picks=picks, picks_format=picks_format, version=version,
                                  classes_file=classes_file, particle=particle, class_map=class_map,
                                  coordinates=coordinates, pattern=pattern, target_spacing=spacing,
                                  voxel_spacing=voxel_spacing, force=force, progress=on_progress,
                                  replace_pinned=replace_pinned)
    finally:
        progress.stop()
    for w in report.warnings:
        _mark("note:", "yellow", w)
    for t in report.failed:
        _mark("failed", "red", f"{t.tomo_id} ({t.path.name}): {t.error}")
    say(f"tomograms: {len(report.stored)} stored, {len(report.skipped)} up to date, {len(report.failed)} failed "
        f"→ {data.tomograms}")
    m = report.manifest
    if m is not None:
        counts = ", ".join(f"{n} {c}" for c, n in m.class_counts.items())
        empty = len(report.without_picks)
        done = "stored" if m.created else "already stored (identical)"
        say(f"labels: version {m.name!r} {done}: {m.counts['tomograms']} tomogram(s)"
            + (f" ({empty} without picks)" if empty else "") + f", {counts} (coordinates: {report.convention}) "
            f"→ {data.labels}")
    elif report.withheld:
        _mark(f"label version {version!r} not stored:", "yellow",
              f"{len(report.withheld)} tomogram(s) failed ({', '.join(report.withheld[:10])}); fix and rerun "
              "(stored tomograms are skipped)")
    if not report.ok:
        raise typer.Exit(code=1)

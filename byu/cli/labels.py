"""``byu labels ...``: list, show, diff, compare, split, convert, combine, export, classes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from byu.cli.util import ClassesFile, DataDir, console, make_app, print_frame, say
from byu.labels.classes import ClassRegistry
from byu.labels.combine import combine_labels, store_or_write
from byu.labels.diff import changes_by_class, diff_labels, diff_summary, diff_versions
from byu.labels.formats import FORMS, write_export
from byu.labels.splits import carry_split, class_balance, fresh_split, read_split, write_split, write_split_new
from byu.labels.store import LabelStore
from byu.paths import DataRoot, guard_output, managed_folder

app = make_app(help="Label versions: list, show, diff, compare, CV splits, conversions, exports.",
                  no_args_is_help=True)


def _store(data_dir: Path | None) -> LabelStore:
    return LabelStore(DataRoot.from_env(data_dir).labels)


def _resolve(store: LabelStore, ref: str, data_dir: Path | None, classes_file: Path | None = None,
             tomograms: Path | None = None, strict_counts: bool = False):
    """A version or label file; a file's warnings (e.g. a competition table's counts) are printed to stderr."""
    notes: list[str] = []
    found = store.resolve(ref, data_root=DataRoot.from_env(data_dir), tomograms=tomograms,
                          registry=ClassRegistry.from_file(classes_file), notes=notes, strict_counts=strict_counts)
    for note in notes:
        say(f"warning: {note}", style="yellow", err=True)
    return found


@app.command("list")
def list_cmd(data_dir: DataDir = None) -> None:
    """List stored label versions with their parents, classes and counts."""
    store = _store(data_dir)
    rows: list[dict[str, object]] = []
    unreadable = []
    for entry in store.versions():
        m = entry.manifest
        if m is None:  # one unreadable version never hides the others
            unreadable.append(entry)
            rows.append({"version": entry.name, "parents": "", "tomograms": "", "picks": "",
                         "created_at": "", "producer": "UNREADABLE (see below)"})
            continue
        rows.append({"version": entry.name, "parents": ",".join(m.parents), "tomograms": m.counts.get("tomograms", ""),
                     "picks": ", ".join(f"{n} {c}" for c, n in m.class_counts.items()) or m.counts.get("motors", 0),
                     "created_at": m.created_at, "producer": m.producer})
    print_frame(pd.DataFrame(rows, columns=["version", "parents", "tomograms", "picks", "created_at", "producer"]),
                title=f"label versions in {store.dir}")
    for entry in unreadable:
        say(f"version {entry.name} is unreadable: {entry.problem} ({store.manifest_path(entry.name)})",
            style="yellow")


@app.command("show")
def show_cmd(version: str, data_dir: DataDir = None) -> None:
    """Show a version's manifest and its changes per class and action."""
    store = _store(data_dir)
    manifest = store.manifest(version)
    console.print_json(manifest.model_dump_json())
    ch = store.changes(version)
    if len(ch):
        print_frame(changes_by_class(ch), title="label changes vs parent (per class)")
    left = (manifest.extra.get("errors_left") or {}).get("classes") or {}
    if left:
        print_frame(pd.DataFrame([{"class": c, "estimate": v.get("estimate"),
                                   "90% interval": "{}..{}".format(*v.get("interval_90", ["?", "?"])),
                                   **{k.replace("_", " "): p for k, p in (v.get("parts") or {}).items()}}
                                  for c, v in left.items()]),
                    title="label errors probably left (estimate; see the manifest's errors_left.assumptions)")


@app.command("diff")
def diff_cmd(
    a: Annotated[str, typer.Argument(help="old: version name or label file")],
    b: Annotated[str, typer.Argument(help="new: version name or label file")],
    radius: Annotated[float | None, typer.Option(help="match radius in Å for every class (default: each "
                                                    "class's own; with it the diff is always computed)")] = None,
    csv: Annotated[bool, typer.Option("--csv", help="print every change as CSV instead of a table")] = False,
    plot: Annotated[Path | None, typer.Option(help="also draw the changes per tomogram to this PNG")] = None,
    data_dir: DataDir = None,
) -> None:
    """Added / removed / moved / relabeled picks per tomogram and class between two versions.

    When B descends from A, this is B's audit trail (the same add/remove/move/relabel as its changes file).
    """
    store = _store(data_dir)
    if plot is not None:
        guard_output(plot, DataRoot.from_env(data_dir).root, option="--plot")
    if store.exists(a) if "/" not in a and not a.endswith(".csv") else False:
        stored_b = "/" not in b and not b.endswith(".csv") and store.exists(b)
    else:
        stored_b = False
    if stored_b:
        changes = diff_versions(store, a, b, radius_A=radius)
    else:
        old, _ = _resolve(store, a, data_dir)
        new, _ = _resolve(store, b, data_dir)
        changes = diff_labels(old, new, radius_A=radius, source=f"diff {a} {b}")
    if plot is not None:
        from byu.plots import plot_label_diff

        plot_label_diff(changes, title=f"{a} → {b}", out=plot)
    if csv:
        typer.echo(changes.to_csv(index=False, lineterminator="\n"), nl=False)
        return
    print_frame(diff_summary(changes), title=f"{a} → {b}")


@app.command("compare")
def compare_cmd(
    candidate: Annotated[str, typer.Argument(help="version (or file) to score")],
    reference: Annotated[str, typer.Argument(help="version (or file) taken as the truth")],
    plot: Annotated[Path | None, typer.Option(help="also draw per-class precision / recall / F to this PNG")] = None,
    data_dir: DataDir = None,
) -> None:
    """Per-class precision, recall and F-beta of one version against another (BYU F2 for motors, CZII F4 with the
    classes' weights otherwise)."""
    from byu.metrics import compare_versions, scores_table

    store = _store(data_dir)
    if plot is not None:
        guard_output(plot, DataRoot.from_env(data_dir).root, option="--plot")
    cand, _ = _resolve(store, candidate, data_dir)
    ref, _ = _resolve(store, reference, data_dir)
    scores = compare_versions(cand, ref)
    _print_scores(scores)
    if plot is not None:
        from byu.plots import plot_class_scores

        plot_class_scores(scores_table(scores), title=f"{candidate} vs {reference}", out=plot)


def _print_scores(scores) -> None:
    from byu.metrics import scores_table

    for s in scores:
        table = scores_table([s]).drop(columns=["metric", "score"])
        for c in ("precision", "recall", "fbeta"):
            table[c] = table[c].map(lambda v: f"{v:.4f}")
        params = ", ".join(f"{k}={v:g}" for k, v in s.params.items())
        print_frame(table, title=f"{s.metric}: {s.score:.4f} over {s.n_tomograms} tomograms ({params})")


@app.command("split")
def split_cmd(
    labels: Annotated[str, typer.Argument(help="version name or label file")],
    out: Annotated[Path, typer.Option(help="output split JSON")],
    folds: Annotated[int | None, typer.Option(help="number of folds (fresh split)")] = None,
    seed: Annotated[int, typer.Option(help="random_state of the fresh split")] = 42,
    carry: Annotated[Path | None, typer.Option(help="previous split JSON to carry forward")] = None,
    max_val_motors: Annotated[int, typer.Option(help="val tomograms with more motors move to train")] = 1,
    assign_new: Annotated[bool, typer.Option(help="with --carry: spread new tomograms over folds")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="replace an existing, different split file")] = False,
    plot: Annotated[Path | None, typer.Option(help="also draw the split balance to this PNG")] = None,
    data_dir: DataDir = None,
) -> None:
    """Write a fresh (--folds K --seed S) or carried-forward (--carry PREV.json) CV split."""
    store = _store(data_dir)
    root = DataRoot.from_env(data_dir).root
    # a NEW split into cv/ is this command's job (write_split_new refuses a different one there); never a replace
    guard_output(out, root, exclusive=not replace and managed_folder(out, root) == "cv")
    if plot is not None:
        guard_output(plot, root, option="--plot")
    df, _ = _resolve(store, labels, data_dir)
    if carry is not None:
        split = carry_split(df, read_split(carry), max_val_motors=max_val_motors, assign_new=assign_new)
    elif folds is not None:
        split = fresh_split(df, folds=folds, seed=seed, max_val_motors=max_val_motors)
    else:
        raise typer.BadParameter("give --folds K (fresh split) or --carry PREV.json")
    (write_split if replace else write_split_new)(split, out)
    if plot is not None:
        from byu.plots import plot_split_balance

        plot_split_balance(df, split, title=out.name, out=plot)
    sizes = ", ".join(f"{len(f['train'])}/{len(f['val'])}" for f in split["folds"])
    say(f"wrote {out} ({split['num_folds']} folds, train/val: {sizes})")
    if not df.is_motor_only:
        bal = class_balance(df, split)
        print_frame(bal[bal["part"] == "val"].pivot(index="fold", columns="particle", values="tomograms")
                    .reset_index(), title="validation tomograms holding each class")


@app.command("convert")
def convert_cmd(
    inp: Annotated[Path, typer.Argument(metavar="IN.csv", help="any readable label form")],
    out: Annotated[Path | None, typer.Option(help="label file to write")] = None,
    version: Annotated[str | None, typer.Option(help="also store as this label version")] = None,
    form: Annotated[str | None, typer.Option(help=f"form of --out: {', '.join(FORMS)} (default: canonical for "
                                                "motors, picks otherwise)")] = None,
    tomograms: Annotated[Path | None, typer.Option(help="picks form: tomograms table tomo_id,Z,Y,X,voxel_spacing "
                                                      "(default: the stored tomograms' original frames)")] = None,
    strict_counts: Annotated[bool, typer.Option("--strict-counts", help="competition form: refuse a 'Number of "
                                                "motors' that disagrees with the tomogram's motor rows (default: "
                                                "the rows are the truth, with a warning)")] = False,
    classes_file: ClassesFile = None,
    data_dir: DataDir = None,
) -> None:
    """Convert any readable label form (canonical, wide, competition, picks) and/or store it as a version."""
    store = _store(data_dir)
    labels, _ = _resolve(store, str(inp), data_dir, classes_file, tomograms, strict_counts=strict_counts)
    say(store_or_write(labels, out=out, version=version, store=store, inputs=[inp], producer="byu labels convert",
                       form=form))


@app.command("combine")
def combine_cmd(
    inputs: Annotated[list[str], typer.Argument(help="versions or label files to concatenate")],
    out: Annotated[Path | None, typer.Option(help="label file to write")] = None,
    version: Annotated[str | None, typer.Option(help="also store as this label version")] = None,
    data_dir: DataDir = None,
) -> None:
    """Concatenate versions; a tomo_id present twice is an error."""
    store = _store(data_dir)
    labels = combine_labels([(ref, _resolve(store, ref, data_dir)[0]) for ref in inputs])
    say(store_or_write(labels, out=out, version=version, store=store, inputs=inputs, producer="byu labels combine"))


@app.command("export")
def export_cmd(
    version: Annotated[str, typer.Argument(help="stored version")],
    out: Annotated[Path, typer.Option(help="file to write")],
    form: Annotated[str, typer.Option(help=f"{', '.join(FORMS)} (canonical and competition: motors only)")] = "picks",
    data_dir: DataDir = None,
) -> None:
    """Write a stored version in one of the forms (the picks form: tomo_id,particle,z,y,x,voxel_spacing)."""
    store = _store(data_dir)
    guard_output(out, DataRoot.from_env(data_dir).root)
    labels = store.get(version)
    write_export(labels, form, out)
    say(f"wrote {out}: version {version} in the {form} form ({len(labels.picks)} picks, "
        f"{len(labels.tomograms)} tomograms)")


@app.command("classes")
def classes_cmd(classes_file: ClassesFile = None) -> None:
    """The particle classes byu knows (built-in, plus a classes file's)."""
    rows = [c.model_dump() for c in ClassRegistry.from_file(classes_file).values()]
    print_frame(pd.DataFrame(rows), title="particle classes")

"""``byu labels ...``: list, show, diff, split, convert, combine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.console import Console

from byu.labels.combine import combine_tables, store_or_write
from byu.labels.diff import diff_summary, diff_tables
from byu.labels.formats import read_labels
from byu.labels.splits import carry_split, fresh_split, read_split, write_split
from byu.labels.store import LabelStore
from byu.cli_util import DataDir, print_frame
from byu.paths import DataRoot

app = typer.Typer(help="Label tables: versions, diffs, CV splits, conversions.", no_args_is_help=True)
console = Console()



def _store(data_dir: Path | None) -> LabelStore:
    return LabelStore(DataRoot.from_env(data_dir).labels)


@app.command("list")
def list_cmd(data_dir: DataDir = None) -> None:
    """List stored label versions with their parents and counts."""
    store = _store(data_dir)
    rows = []
    for name in store.names():
        m = store.manifest(name)
        rows.append({"version": name, "parents": ",".join(m.parents), "tomograms": m.counts["tomograms"],
                     "motors": m.counts["motors"], "created_at": m.created_at, "producer": m.producer})
    print_frame(console, pd.DataFrame(rows, columns=["version", "parents", "tomograms", "motors", "created_at", "producer"]),
                 title=f"label versions in {store.dir}")


@app.command("show")
def show_cmd(version: str, data_dir: DataDir = None) -> None:
    """Show a version's manifest and a summary of its changes."""
    store = _store(data_dir)
    m = store.manifest(version)
    console.print_json(m.model_dump_json())
    ch = store.changes(version)
    if len(ch):
        print_frame(console, ch["action"].value_counts().rename_axis("action").reset_index(), title="changes vs parent")


@app.command("diff")
def diff_cmd(
    a: Annotated[str, typer.Argument(help="old: version name or CSV path")],
    b: Annotated[str, typer.Argument(help="new: version name or CSV path")],
    radius: Annotated[float, typer.Option(help="match radius in Å; farther is remove + add")] = 1000.0,
    csv: Annotated[bool, typer.Option("--csv", help="print every change as CSV instead of a table")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="also draw the changes per tomogram to this PNG")] = None,
    data_dir: DataDir = None,
) -> None:
    """Added / removed / moved motors per tomogram between two tables."""
    store = _store(data_dir)
    old, _ = store.resolve(a)
    new, _ = store.resolve(b)
    changes = diff_tables(old, new, radius_A=radius, source=f"diff {a} {b}")
    if plot is not None:
        from byu.plots import plot_label_diff

        plot_label_diff(changes, title=f"{a} → {b}", out=plot)
    if csv:
        typer.echo(changes.to_csv(index=False, lineterminator="\n"), nl=False)
        return
    print_frame(console, diff_summary(changes), title=f"{a} → {b}")


@app.command("split")
def split_cmd(
    labels: Annotated[str, typer.Argument(help="version name or CSV path")],
    out: Annotated[Path, typer.Option(help="output split JSON")],
    folds: Annotated[Optional[int], typer.Option(help="number of folds (fresh split)")] = None,
    seed: Annotated[int, typer.Option(help="StratifiedKFold random_state (fresh split)")] = 42,
    carry: Annotated[Optional[Path], typer.Option(help="previous split JSON to carry forward")] = None,
    max_val_motors: Annotated[int, typer.Option(help="val tomograms with more motors move to train")] = 1,
    assign_new: Annotated[bool, typer.Option(help="with --carry: spread new tomograms over folds")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="also draw the split balance to this PNG")] = None,
    data_dir: DataDir = None,
) -> None:
    """Write a fresh (--folds K --seed S) or carried-forward (--carry PREV.json) CV split."""
    df, _ = _store(data_dir).resolve(labels)
    if carry is not None:
        split = carry_split(df, read_split(carry), max_val_motors=max_val_motors, assign_new=assign_new)
    elif folds is not None:
        split = fresh_split(df, folds=folds, seed=seed, max_val_motors=max_val_motors)
    else:
        raise typer.BadParameter("give --folds K (fresh split) or --carry PREV.json")
    write_split(split, out)
    if plot is not None:
        from byu.plots import plot_split_balance

        plot_split_balance(df, split, title=out.name, out=plot)
    sizes = ", ".join(f"{len(f['train'])}/{len(f['val'])}" for f in split["folds"])
    console.print(f"wrote {out} ({split['num_folds']} folds, train/val: {sizes})")


@app.command("convert")
def convert_cmd(
    inp: Annotated[Path, typer.Argument(metavar="IN.csv", help="any readable label form")],
    out: Annotated[Optional[Path], typer.Option(help="canonical CSV to write")] = None,
    version: Annotated[Optional[str], typer.Option(help="also store as this label version")] = None,
    data_dir: DataDir = None,
) -> None:
    """Convert any readable label form to the canonical one."""
    df = read_labels(inp)
    msg = store_or_write(df, out=out, version=version, store=_store(data_dir), inputs=[inp], producer="byu labels convert")
    console.print(msg)


@app.command("combine")
def combine_cmd(
    inputs: Annotated[list[str], typer.Argument(help="tables (paths or version names) to concatenate")],
    out: Annotated[Optional[Path], typer.Option(help="canonical CSV to write")] = None,
    version: Annotated[Optional[str], typer.Option(help="also store as this label version")] = None,
    data_dir: DataDir = None,
) -> None:
    """Concatenate tables; a tomo_id present twice is an error."""
    store = _store(data_dir)
    df = combine_tables([(ref, store.resolve(ref)[0]) for ref in inputs])
    msg = store_or_write(df, out=out, version=version, store=store, inputs=inputs, producer="byu labels combine")
    console.print(msg)

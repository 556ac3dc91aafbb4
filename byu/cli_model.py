"""``byu train``, ``byu predict``, ``byu score``: thin wrappers over byu.model and byu.metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from byu.cli_util import DataDir
from byu.paths import DataRoot

app = typer.Typer(help="Train models, predict particles, score predictions.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)



def _split_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@app.command("train")
def train_cmd(
    labels: Annotated[str, typer.Option("--labels", help="label version name or CSV path")],
    split: Annotated[Path, typer.Option("--split", help="CV split JSON (data/cv/<version>/skf<K>_rd<S>.json)")],
    fold: Annotated[str, typer.Option("--fold", help="fold number(s), comma-separated, or 'all'")] = "all",
    config: Annotated[str, typer.Option("--config", help="tiny | full | micro | path to a YAML/JSON config")] = "tiny",
    run: Annotated[Optional[str], typer.Option("--run", help="run name (default <labels>_<config>_s<seed>)")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="override the config's epochs")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="override steps per epoch")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option(
        "--set", help="override any config field: --set lr=0.001 --set patch_size=[32,64,64] (YAML values)")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
    data_dir: DataDir = None,
) -> None:
    """Train one model per fold; checkpoints go to models/<run>/fold<k>.pt (resumes an interrupted run)."""
    import yaml

    from byu.model.train import train_folds

    extra = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        extra[key.strip()] = yaml.safe_load(value)
    if epochs is not None:
        extra["epochs"] = epochs
    if steps is not None:
        extra["steps_per_epoch"] = steps

    root = DataRoot.from_env(data_dir)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=err_console, transient=False) as bar:
        tasks: dict[int, int] = {}

        def progress(e: dict) -> None:
            if e["stage"] == "step":
                k = e["fold"]
                if k not in tasks:
                    tasks[k] = bar.add_task(f"fold {k}", total=e["epochs"] * e["steps"], info="")
                bar.update(tasks[k], completed=e["epoch"] * e["steps"] + e["step"],
                           info=f"epoch {e['epoch'] + 1}/{e['epochs']} loss {e['loss']:.4f}")
            elif e["stage"] == "epoch" and "val_fbeta" in e:
                bar.console.print(f"fold {e['fold']} epoch {e['epoch'] + 1}: loss {e['loss']:.4f}  "
                                  f"val F2 {e['val_fbeta']:.3f} (best {e['val_best_fbeta']:.3f} at "
                                  f"{e['val_best_threshold']:.2f})")

        paths = train_folds(root, labels, split, folds=fold, config=config, run_name=run, seed=seed,
                            device=device, progress=progress, **extra)
    for p in paths:
        console.print(str(p))


@app.command("predict")
def predict_cmd(
    models: Annotated[list[str], typer.Option("--models", help="run directory or run name; repeat to ensemble")],
    mode: Annotated[str, typer.Option("--mode", help="oof: only models that did not train on a tomogram; all")] = "oof",
    tta: Annotated[str, typer.Option("--tta", help="none | flips (Y, X, YX) | flips8 (all axes)")] = "flips",
    threshold: Annotated[float, typer.Option("--threshold", help="keep peaks at or above this")] = 0.05,
    tomos: Annotated[Optional[list[str]], typer.Option("--tomos", help="tomo ids (comma-separated or repeated)")] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="restrict to this label version's tomograms")] = None,
    max_motors: Annotated[Optional[int], typer.Option("--max-motors", help="with --labels: at most N motors")] = None,
    allow_seen: Annotated[bool, typer.Option("--allow-seen", help="oof: predict tomograms every model saw")] = False,
    out: Annotated[Optional[str], typer.Option("--out", help="name of predictions/<out>.csv")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
    data_dir: DataDir = None,
) -> None:
    """Predict particles with one or more model runs; writes predictions/<name>.csv."""
    from byu.model.infer import predict

    root = DataRoot.from_env(data_dir)
    with Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=err_console) as bar:
        task = bar.add_task("predict", total=None, info="")

        def progress(e: dict) -> None:
            bar.update(task, total=e["total"], completed=e["done"], info=f"{e['tomo_id']}: {e['peaks']} peaks")

        path = predict(root, models, mode=mode, tta=tta, threshold=threshold, tomo_ids=_split_list(tomos),
                       labels=labels, max_motors=max_motors, allow_seen=allow_seen, out_name=out, device=device,
                       progress=progress)
    console.print(str(path))


@app.command("score")
def score_cmd(
    predictions: Annotated[Path, typer.Argument(help="predictions CSV")],
    labels: Annotated[str, typer.Argument(help="label version name or CSV path (picks form for CZII)")],
    metric: Annotated[str, typer.Option("--metric", help="auto | byu | multi | czii")] = "auto",
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", help="ignore predictions below this (default 0.5 for byu/multi, 0 for czii)")] = None,
    beta: Annotated[Optional[float], typer.Option("--beta", help="default 2 (byu, multi) or 4 (czii)")] = None,
    tomos: Annotated[Optional[list[str]], typer.Option("--tomos", help="score only these tomograms")] = None,
    all_labels: Annotated[bool, typer.Option("--all-labels", help="score every labelled tomogram, not only the "
                                             "ones the predictions' manifest lists")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDir = None,
) -> None:
    """Score predictions against labels (BYU F2 top-1, multi-motor F2, or the CZII F4)."""
    from byu.labels.formats import _read_raw, detect_form
    from byu.labels.store import LabelStore
    from byu.metrics import CZII_RADII, score_byu, score_czii, score_multi
    from byu.model.decode import read_predictions
    from byu.model.train import read_picks_frame

    root = DataRoot.from_env(data_dir)
    pred = read_predictions(predictions)
    path = Path(labels)
    picks = path.is_file() and detect_form(list(_read_raw(path).columns)) == "picks"
    scope = _split_list(tomos)
    manifest = predictions.with_suffix(".json")
    if scope is None and not all_labels and manifest.exists():
        scope = json.loads(manifest.read_text()).get("tomo_ids")
        if scope:
            err_console.print(f"scoring the {len(scope)} tomograms listed in {manifest} (--all-labels for all)")
    results = []
    if picks:
        table = read_picks_frame(path)
        if scope is not None:
            scope = [t for t in scope if t in set(table["tomo_id"])]
        kw = {"threshold": threshold or 0.0, "beta": beta or 4.0, "tomo_ids": scope}
        if metric in ("auto", "czii"):
            results.append(score_czii(pred, table, **kw))
        else:  # one-to-one matching within half the CZII radius of each class (1000 Å for other classes)
            radius = {c: CZII_RADII[c] * 0.5 if c in CZII_RADII else 1000.0
                      for c in set(table["particle"]) | set(pred["particle"])}
            results.append(score_multi(pred, table, radius=radius, **{**kw, "beta": beta or 2.0}))
    else:
        table, _ = LabelStore(root.labels).resolve(labels)
        kw = {"beta": beta or 2.0, "tomo_ids": scope}
        if metric in ("auto", "byu"):
            results.append(score_byu(pred, table, threshold=threshold if threshold is not None else 0.5, **kw))
        if metric in ("auto", "multi"):
            results.append(score_multi(pred, table, threshold=threshold if threshold is not None else 0.5, **kw))
        if metric == "czii":
            raise typer.BadParameter("the CZII metric needs multi-class picks labels (tomo_id,particle,z,y,x)")
    if as_json:
        console.print_json(json.dumps([r.as_dict() for r in results]))
        return
    for r in results:
        t = Table(title=f"{r.metric}: {r.score:.4f} over {r.n_tomograms} tomograms "
                        f"({', '.join(f'{k}={v:g}' for k, v in r.params.items())})")
        for c in ("class", "fbeta", "precision", "recall", "tp", "fp", "fn"):
            t.add_column(c)
        for row in r.table().itertuples(index=False):
            t.add_row(str(row[0]), f"{row.fbeta:.4f}", f"{row.precision:.4f}", f"{row.recall:.4f}", str(row.tp),
                      str(row.fp), str(row.fn))
        console.print(t)

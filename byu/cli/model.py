"""``byu train``, ``byu predict``, ``byu score``: thin wrappers over byu.model and byu.metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from byu.cli.util import DataDir, console, err_console, make_app, say
from byu.paths import DataRoot, guard_output
from byu.predictions import PREDICT_MODES

app = make_app(help="Train models, predict particles, score predictions.", no_args_is_help=True)


def _split_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@app.command("train")
def train_cmd(
    labels: Annotated[str, typer.Option("--labels", help="label version name or CSV path")],
    split: Annotated[Path, typer.Option("--split", help="CV split JSON (data/cv/<version>/skf<K>_rd<S>.json)")],
    fold: Annotated[str, typer.Option("--fold", help="fold number(s), comma-separated, or 'all'")] = "all",
    config: Annotated[str, typer.Option("--config", help="tiny (CPU, motors) | small (CPU, small particles) | "
                                        "crowded (CPU, crowded tomograms of many species) | full (GPU) | micro | "
                                        "a YAML/JSON config file")] = "tiny",
    run: Annotated[str | None, typer.Option("--run", help="run name (default <labels>_<config>_s<seed>)")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    epochs: Annotated[int | None, typer.Option("--epochs", help="override the config's epochs")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="override steps per epoch")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
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
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err_console,
                  transient=False) as bar:
        tasks: dict[int, TaskID] = {}

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
        say(str(p))


@app.command("predict")
def predict_cmd(
    models: Annotated[list[str], typer.Option("--models", help="run directory or run name; repeat to ensemble")],
    mode: Annotated[str, typer.Option("--mode", help="oof: only models that did not train on a tomogram; all")] = "oof",
    tta: Annotated[str, typer.Option("--tta", help="none | flips (Y, X, YX) | flips8 (all axes)")] = "flips",
    threshold: Annotated[float, typer.Option("--threshold", help="keep peaks at or above this")] = 0.05,
    tomos: Annotated[list[str] | None, typer.Option("--tomos", help="tomo ids (comma-separated or repeated)")] = None,
    labels: Annotated[str | None, typer.Option("--labels", help="restrict to this label version's tomograms")] = None,
    max_motors: Annotated[int | None, typer.Option("--max-motors", help="with --labels: at most N motors")] = None,
    allow_seen: Annotated[bool, typer.Option("--allow-seen", help="oof: predict tomograms every model saw")] = False,
    out: Annotated[str | None, typer.Option("--out", help="name of predictions/<out>.csv")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
    precision: Annotated[str, typer.Option(
        "--precision", help="auto (bf16 autocast on CUDA GPUs with native bf16, fp16 on other CUDA GPUs, fp32 on "
        "CPU) | fp32 | bf16 | fp16")] = "auto",
    batch_tta: Annotated[bool | None, typer.Option(
        "--batch-tta/--no-batch-tta", help="run every window's TTA flips through the network as one batch (one "
        "sliding-window pass); default: on a GPU, not on a CPU (where it is faster but rounds differently)",
        show_default=False)] = None,
    channels_last: Annotated[str, typer.Option(
        "--channels-last", help="channels_last_3d memory format: auto (on CUDA) | on | off")] = "auto",
    compile_net: Annotated[str, typer.Option(
        "--compile", help="torch.compile the network: auto (on CUDA) | on | off; a failure runs it eager")] = "auto",
    window_batch: Annotated[int | None, typer.Option(
        "--window-batch", help="windows x TTA views per network call (default: the config's sw_batch_size x the "
        "views batched); lower it if the GPU runs out of memory")] = None,
    data_dir: DataDir = None,
) -> None:
    """Predict particles with one or more model runs; writes predictions/<name>.csv (and the .json sidecar: what
    was predicted with what, the inference settings included)."""
    from byu.model.infer import InferenceSettings, predict

    if mode not in PREDICT_MODES:
        raise typer.BadParameter(f"choose one of {', '.join(PREDICT_MODES)}", param_hint="--mode")

    fields: dict[str, object] = {"precision": precision, "channels_last": channels_last, "compile": compile_net,
                                 "window_batch": window_batch}
    if batch_tta is not None:
        fields["batch_tta"] = batch_tta
    inference = InferenceSettings.parse(fields)
    root = DataRoot.from_env(data_dir)
    with Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=err_console) as bar:
        task = bar.add_task("predict", total=None, info="")

        def progress(e: dict) -> None:
            bar.update(task, total=e["total"], completed=e["done"], info=f"{e['tomo_id']}: {e['peaks']} peaks")

        path = predict(root, models, mode=mode, tta=tta, threshold=threshold, tomo_ids=_split_list(tomos),
                       labels=labels, max_motors=max_motors, allow_seen=allow_seen, out_name=out, device=device,
                       inference=inference, progress=progress)
    say(str(path))


@app.command("score")
def score_cmd(
    predictions: Annotated[Path, typer.Argument(help="predictions CSV")],
    labels: Annotated[str, typer.Argument(help="label version name or label file (bare picks: the CZII metric)")],
    metric: Annotated[str, typer.Option("--metric", help="auto | byu | multi | czii")] = "auto",
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="ignore predictions below this (default 0.5 for byu/multi, 0 for czii)")] = None,
    beta: Annotated[float | None, typer.Option("--beta", help="default 2 (byu, multi) or 4 (czii)")] = None,
    tomos: Annotated[list[str] | None, typer.Option("--tomos", help="score only these tomograms")] = None,
    all_labels: Annotated[bool, typer.Option("--all-labels", help="score every labelled tomogram, not only the "
                                             "ones the predictions' manifest lists")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="also draw per-class precision / recall / F")] = None,
    data_dir: DataDir = None,
) -> None:
    """Score predictions against labels per class (BYU F2 top-1 and multi-motor F2 for motors, CZII F4 with the
    classes' weights otherwise)."""
    from byu.labels.formats import _read_raw, detect_form
    from byu.labels.store import LabelStore
    from byu.metrics import read_picks_table, score_picks, score_predictions, scores_table
    from byu.predictions import read_predictions

    root = DataRoot.from_env(data_dir)
    if plot is not None:
        guard_output(plot, root.root, option="--plot")
    pred = read_predictions(predictions)
    scope = _split_list(tomos)
    manifest = predictions.with_suffix(".json")
    if scope is None and not all_labels and manifest.exists():
        scope = json.loads(manifest.read_text()).get("tomo_ids")
        if scope:
            say(f"scoring the {len(scope)} tomograms listed in {manifest} (--all-labels for all)", err=True)
    path = Path(labels)
    if path.is_file() and detect_form([c for c in _read_raw(path).columns if c != "__line__"]) == "picks":
        results = score_picks(pred, read_picks_table(path), metric=metric, threshold=threshold, beta=beta,
                              tomo_ids=scope)
    else:
        truth, _ = LabelStore(root.labels).resolve(labels, data_root=root)
        results = score_predictions(pred, truth, metric=metric, threshold=threshold, beta=beta, tomo_ids=scope)
    if plot is not None:
        from byu.plots import plot_class_scores

        plot_class_scores(scores_table(results), title=f"{predictions.name} vs {labels}", out=plot)
    if as_json:
        console.print_json(json.dumps([r.as_dict() for r in results]))
        return
    from byu.cli.labels import _print_scores

    _print_scores(results)

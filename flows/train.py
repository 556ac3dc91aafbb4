"""Train fold models on a label version + split, so a round can start from its own models."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from byu.errors import InputError
from flows.artifacts import artifact_key, train_artifact
from flows.base import data_path, data_root, required_path
from flows.model_tasks import train_task
from flows.task_runners import refresh_unless, submit_in_order, task_runner_from_env


class TrainParams(BaseModel):
    """What to train: one model per fold of a split, on a label version, with a model config."""

    data_dir: str | None = Field(default=None, title="Data root",
                                 description="default: env BYU_DATA, else ./data; relative paths below are under it")
    labels: str = Field(default="gt", title="Labels", description="label version name, or a label file")
    split: str = Field(default="v1/skf4_rd42.json", title="CV split", description="split JSON under cv/ (or a path)")
    folds: str = Field(default="all", title="Folds", description="a fold index, comma-separated indices, or 'all'")
    config: str = Field(default="tiny", title="Model config",
                        description="tiny (CPU, motors), small (CPU, small particles), crowded (CPU, crowded "
                        "tomograms of many species), full (GPU), or a YAML/JSON file")
    run_name: str = Field(default="round1", title="Run name",
                          description="checkpoints go to `models/RUN/fold<k>.pt`; a finished fold with the same "
                          "settings is kept, other settings under an existing run name are refused")
    seed: int = Field(default=42, title="Seed",
                      description="random seed of the weights and the patch sampling (each fold draws its own from "
                      "it): the same seed retrains the same models")
    overrides: dict = Field(default_factory=dict, title="Config overrides",
                            description="model config fields to change, e.g. {\"epochs\": 2}")


def fold_indices(folds: str, split: Path) -> list[int]:
    """The folds ``folds`` names ('all', one index, or comma-separated indices) in the split, in order."""
    from byu.labels.splits import read_split

    num_folds = int(read_split(split)["num_folds"])
    if folds.strip().lower() == "all":
        return list(range(num_folds))
    try:
        items = [int(f) for f in folds.split(",") if f.strip()]
    except ValueError:
        raise InputError(f"folds must be 'all' or fold numbers, got {folds!r}", field="folds") from None
    bad = [f for f in items if not 0 <= f < num_folds]
    if bad or not items:
        raise InputError(f"fold(s) {bad or items} not in the split's 0..{num_folds - 1}", file=split, field="folds")
    return list(dict.fromkeys(items))


@flow(name="train", log_prints=True, task_runner=task_runner_from_env())
def train(params: TrainParams = Field(default=TrainParams(), description="what to train and where it goes",
                                      json_schema_extra={"title": "Training settings"})) -> list[str]:
    """One model per fold (one task each, through the flow's task runner); checkpoints carry their split and label
    metadata. Logs each fold (epochs, validation score, checkpoint) and ends with a ``train-<run>`` markdown
    artifact, a table of the folds. Returns the checkpoint paths in fold order."""
    p = params
    root = data_root(p.data_dir)
    data_dir = str(root.root)
    split = required_path(data_dir, p.split, field="split")
    if not split.exists():
        split = root.cv / p.split
    if not split.exists():
        raise InputError(f"split file not found (looked in {data_path(data_dir, p.split, field='split')} and "
                         f"{root.cv / p.split}); write one with `byu labels split`", field="split")
    labels_file = data_path(data_dir, p.labels, field="labels")
    labels = str(labels_file) if labels_file is not None and labels_file.is_file() else p.labels
    run_dir = root.models / p.run_name
    calls = [(refresh_unless(train_task, [run_dir / f"fold{k}.pt"]),  # a cached fold whose checkpoint is gone reruns
              (data_dir, labels, str(split), str(k), p.config, p.run_name, p.seed),
              {"overrides": p.overrides})
             for k in fold_indices(p.folds, split)]
    checkpoints = [path for paths in submit_in_order(calls) for path in paths]
    from byu.model.train import fold_summary  # torch: imported once the folds are trained

    summaries = [fold_summary(c) for c in checkpoints]
    train_artifact(data_dir, p.run_name, summaries, labels=labels, split=str(split), config=p.config)
    get_run_logger().info("train run %s: %d fold model(s); see the '%s' artifact", p.run_name, len(summaries),
                          artifact_key("train", p.run_name))
    return checkpoints


if __name__ == "__main__":
    from flows.local_api import temporary_api

    with temporary_api():
        train()

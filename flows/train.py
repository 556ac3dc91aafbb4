"""Train fold models on a label version + split, so a round can start from its own models."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from byu.errors import InputError
from byu.labels.store import LabelStore
from flows.common import cached, data_path, data_root, fingerprint
from flows.model_tasks import train_task
from flows.task_runners import task_runner_from_env


class TrainParams(BaseModel):
    data_dir: str | None = Field(default=None, title="Data root",
                                 description="default: env BYU_DATA, else ./data; relative paths below are under it")
    labels: str = Field(default="gt", title="Labels", description="label version name, or a label file")
    split: str = Field(default="v1/skf4_rd42.json", title="CV split", description="split JSON under cv/ (or a path)")
    folds: str = Field(default="all", title="Folds", description="a fold index, comma-separated indices, or 'all'")
    config: str = Field(default="tiny", title="Model config",
                        description="tiny (CPU, motors), small (CPU, small particles), full (GPU), or a YAML/JSON "
                        "file")
    run_name: str = Field(default="round1", title="Run name", description="checkpoints go to models/RUN/fold<k>.pt")
    seed: int = Field(default=42, title="Seed")
    overrides: dict = Field(default_factory=dict, title="Config overrides",
                            description="model config fields to change, e.g. {\"epochs\": 2}")


@flow(name="train", log_prints=True, task_runner=task_runner_from_env())
def train(params: TrainParams = TrainParams()) -> list[str]:
    """One model per fold; checkpoints carry their split and label metadata."""
    p = params
    root = data_root(p.data_dir)
    data_dir = str(root.root)
    split = data_path(data_dir, p.split, field="split")
    if not split.exists():
        split = root.cv / p.split
    if not split.exists():
        raise InputError(f"split file not found (looked in {data_path(data_dir, p.split, field='split')} and "
                         f"{root.cv / p.split}); write one with `byu labels split`", field="split")
    store = LabelStore(root.labels)
    labels_file = data_path(data_dir, p.labels, field="labels")
    labels = str(labels_file) if labels_file is not None and labels_file.is_file() else p.labels
    inputs = [split, labels_file if labels_file is not None and labels_file.is_file() else store.path(p.labels)]
    run_dir = root.models / p.run_name
    fit = cached(train_task, [run_dir] if p.folds == "all" else [run_dir / f"fold{p.folds}.pt"])
    return fit(data_dir, labels, str(split), p.folds, p.config, p.run_name, p.seed, overrides=p.overrides,
               inputs_fingerprint=fingerprint(inputs))


if __name__ == "__main__":
    train()

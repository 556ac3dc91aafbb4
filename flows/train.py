"""Train fold models on a label version + split, so a round can start from its own models."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import BaseModel, Field

from byu.errors import InputError
from byu.labels.store import LabelStore
from flows.common import cached, data_root, fingerprint
from flows.model_tasks import train_task


class TrainParams(BaseModel):
    data_dir: str | None = Field(default=None, description="data root (default: env BYU_DATA or ./data)")
    labels: str = Field(default="gt", description="label version (or CSV path) to train on")
    split: str = Field(default="v1/skf4_rd42.json", description="split JSON under cv/ (or a path)")
    folds: str = Field(default="all", description="fold index, or 'all'")
    config: str = Field(default="tiny", description="model config name (tiny, full) or a YAML/JSON path")
    run_name: str = Field(default="round1", description="checkpoints go to models/<run_name>/fold<k>.pt")
    seed: int = Field(default=42)
    overrides: dict = Field(default_factory=dict, description="config field overrides, e.g. {'epochs': 2}")


@flow(name="train", log_prints=True)
def train(params: TrainParams = TrainParams()) -> list[str]:
    """One model per fold; checkpoints carry their split and label metadata."""
    p = params
    root = data_root(p.data_dir)
    split = Path(p.split) if Path(p.split).is_absolute() or Path(p.split).exists() else root.cv / p.split
    if not split.exists():
        raise InputError("split file not found (write one with `byu labels split`)", file=split)
    store = LabelStore(root.labels)
    labels_file = Path(p.labels) if Path(p.labels).exists() else store.path(p.labels)
    inputs = [split, labels_file]
    run_dir = root.models / p.run_name
    train = cached(train_task, [run_dir] if p.folds == "all" else [run_dir / f"fold{p.folds}.pt"])
    return train(str(root.root), p.labels, str(split), p.folds, p.config, p.run_name, p.seed,
                      overrides=p.overrides, inputs_fingerprint=fingerprint(inputs))


if __name__ == "__main__":
    train()

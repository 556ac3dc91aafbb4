"""Tasks over the model library: train fold models, predict (OOF or all) with an ensemble."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from flows.common import CACHE, cached, data_root, fingerprint


def _checkpoints(model_dirs: list[str]) -> list[Path]:
    paths = sorted(p for d in model_dirs for p in Path(d).glob("fold*.pt") if not p.name.endswith(".last.pt"))
    if not paths:
        raise FileNotFoundError(f"no fold checkpoints (fold<k>.pt) in {model_dirs}")
    return paths


@task(name="train-folds", cache_policy=CACHE, persist_result=True)
def train_task(data_dir: str, labels: str, split: str, folds: str, config: str, run_name: str, seed: int,
               overrides: dict | None = None, inputs_fingerprint: str = "") -> list[str]:
    from byu.model.train import train_folds

    paths = train_folds(data_root(data_dir), labels, split, folds=folds, config=config, run_name=run_name,
                        seed=seed, **(overrides or {}))
    get_run_logger().info("trained %d fold model(s) in run %s", len(paths), run_name)
    return [str(p) for p in paths]


@task(name="predict", cache_policy=CACHE, persist_result=True)
def predict_task(data_dir: str, model_dirs: list[str], mode: str, tta: str, threshold: float,
                 tomo_ids: list[str] | None, out_name: str, allow_seen: bool = False,
                 models_fingerprint: str = "") -> str:
    from byu.model.infer import predict

    out = predict(data_root(data_dir), [Path(d) for d in model_dirs], mode=mode, tta=tta, threshold=threshold,
                  tomo_ids=tomo_ids, allow_seen=allow_seen, out_name=out_name)
    get_run_logger().info("predictions written to %s", out)
    return str(out)


def predict_with_fingerprint(data_dir: str, model_dirs: list[str], **kwargs) -> str:
    """Run ``predict_task`` keyed also on the checkpoints' content (a retrained model is not a cache hit)."""
    out = data_root(data_dir).predictions / f"{kwargs['out_name']}.csv"
    return cached(predict_task, [out])(data_dir, model_dirs, models_fingerprint=fingerprint(_checkpoints(model_dirs)),
                                       **kwargs)

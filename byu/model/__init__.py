"""Heatmap models for particle picking: configs, networks, patches, training, inference, decoding.

Public API (used by the CLI and the Prefect flows): :func:`train_folds`, :func:`predict`, :func:`resolve_config`,
:data:`CONFIGS`, :func:`load_models`, :func:`read_predictions`.
"""


from byu.model.config import CONFIGS, ModelConfig, ParticleClass, resolve_config
from byu.model.decode import read_predictions, write_predictions
from byu.model.infer import load_models, predict
from byu.model.train import train_folds

__all__ = ["CONFIGS", "ModelConfig", "ParticleClass", "load_models", "predict", "read_predictions",
           "resolve_config", "train_folds", "write_predictions"]

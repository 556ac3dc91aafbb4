"""Heatmap models for particle picking: configs, networks, patches, training, inference, decoding.

Public API (used by the CLI and the Prefect flows): :func:`train_folds`, :func:`predict`, :func:`resolve_config`,
:data:`CONFIGS`, :func:`load_models`, :func:`read_predictions`.
"""

import os

# OpenMP threads that spin while waiting make PyTorch several times slower on a busy 2-core machine (measured:
# a tiny training step 0.5 s spinning vs 0.28 s passive). This only takes effect when set before torch is first
# imported, which is why it sits here, ahead of the imports below; an explicit setting is respected.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from byu.model.config import CONFIGS, ModelConfig, ParticleClass, resolve_config  # noqa: E402
from byu.model.decode import read_predictions, write_predictions  # noqa: E402
from byu.model.infer import load_models, predict  # noqa: E402
from byu.model.train import train_folds  # noqa: E402

__all__ = ["CONFIGS", "ModelConfig", "ParticleClass", "load_models", "predict", "read_predictions",
           "resolve_config", "train_folds", "write_predictions"]

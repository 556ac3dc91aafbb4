"""Model configurations: one pydantic object says what network, at what spacing, trained how.

Named configs (``tiny`` for CPU, ``full`` for a GPU, ``micro`` for tests) live in ``CONFIGS``; a config can also
be read from a YAML/JSON file, and any field can be overridden (``resolve_config("tiny", epochs=2)``).

Every length that has a physical meaning is in Å (particle radii, Gaussian width); patch and window sizes are in
voxels of the network's input grid (``spacing`` Å/voxel), so changing a tomogram's spacing changes nothing
physically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from byu.errors import InputError, NotFoundError
from byu.labels.classes import BUILTIN_CLASSES, CZII_CLASSES, ParticleClass  # noqa: F401 (re-exported)

MOTOR = BUILTIN_CLASSES["motor"]


class ModelConfig(BaseModel):
    """Everything that defines a model run (stored in every checkpoint)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    classes: list[ParticleClass] = Field(default_factory=lambda: [MOTOR], min_length=1,
                                         description="one heatmap channel per class (training takes them from "
                                         "the label version unless overridden)")
    spacing: float = Field(gt=0, description="Å per voxel of the network input (tomograms are resampled to it)")

    # network
    arch: Literal["heatmapnet", "basicunet", "segresnet"] = "heatmapnet"
    channels: tuple[int, ...] = Field(default=(8, 16, 24, 32), description="heatmapnet: channels per level")
    res_units: int | tuple[int, ...] = Field(default=1, description="heatmapnet: residual units per level (one "
                                             "number for every level, or one per level)")
    stem_stride: int = Field(default=1, description="heatmapnet: patchify stem stride (1, 2 or 4)")
    output_stride: int = Field(default=2, description="heatmapnet: heatmap voxel = output_stride input voxels")
    norm: Literal["batch", "instance", "group"] = "batch"
    features: tuple[int, int, int, int, int, int] = Field(default=(32, 32, 64, 128, 256, 32),
                                                          description="basicunet features")
    init_filters: int = Field(default=8, description="segresnet init filters")

    # heatmap target and loss
    sigma: float = Field(default=0.5, gt=0, description="Gaussian sigma as a fraction of the particle radius")
    min_sigma: float = Field(default=0.0, ge=0, description="the Gaussian's sigma is at least this many heatmap "
                             "voxels (small particles at a coarse heatmap still get a learnable target)")
    pos_weight: float = Field(default=5.0, ge=0, description="BCE weight added in proportion to the target")

    # sampling and training
    patch_size: tuple[int, int, int] = (48, 96, 96)
    batch_size: int = Field(default=2, ge=1)
    epochs: int = Field(default=6, ge=1)
    steps_per_epoch: int = Field(default=20, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    pos_fraction: float = Field(default=0.6, ge=0, le=1, description="share of patches centred near a particle")
    hard_fraction: float = Field(default=0.0, ge=0, le=1, description="share of patches centred on hard "
                                 "negatives: peaks >= hard_threshold of the model in training far from any label")
    hard_threshold: float = Field(default=0.3, gt=0, lt=1)
    hard_every: int = Field(default=1, ge=1, description="mine hard negatives after every N epochs")
    flips: bool = True
    rot90: bool = True
    intensity: float = Field(default=0.1, ge=0, description="intensity scale/shift jitter amplitude")
    noise: float = Field(default=0.05, ge=0, description="std of additive Gaussian noise (normalized units)")
    val_every: int = Field(default=1, ge=1, description="validate every N epochs (and always at the end)")
    val_threshold: float = Field(default=0.5, gt=0, lt=1)
    cache_gb: float = Field(default=8.0, gt=0, description="in-memory volume cache for training")

    # inference
    roi_size: tuple[int, int, int] = (64, 128, 128)
    overlap: float = Field(default=0.25, ge=0, lt=1)
    sw_batch_size: int = Field(default=1, ge=1)
    max_peaks: int | None = Field(default=None, ge=1, description="per tomogram and class, after NMS (empty: every "
                                  "peak the NMS keeps; its radius bounds them by how many particles fit)")
    nms_factor: float = Field(default=2.0, gt=0, description="peaks closer than nms_factor x radius (at most the "
                              "class's match radius) are merged")
    peak_window: Literal["inscribed", "enclosing"] = Field(
        default="inscribed", description="local maxima over the cube inside the NMS ball, or the cube around it "
        "(byu.model.decode.find_peaks)")

    # runtime
    num_threads: int = Field(default=0, ge=0, description="torch CPU threads (0 = leave as is)")
    amp: bool = Field(default=False, description="bfloat16 autocast on CUDA")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        s = self.stride
        if self.arch == "heatmapnet":
            levels = len(self.channels)
            if levels < 2:
                raise ValueError("heatmapnet needs at least 2 levels of channels")
            units = self.res_units if isinstance(self.res_units, tuple) else (self.res_units,) * levels
            if len(units) != levels or min(units) < 0:
                raise ValueError(f"res_units must be one non-negative number or one per level ({levels})")
            if self.stem_stride not in (1, 2, 4):
                raise ValueError(f"stem_stride must be 1, 2 or 4, got {self.stem_stride}")
            allowed = [self.stem_stride * 2 ** i for i in range(levels)]
            if s not in allowed:
                raise ValueError(f"output_stride must be one of {allowed} (stem_stride x 2**level), got {s}")
        need = self.size_multiple
        for field in ("patch_size", "roi_size"):
            size = getattr(self, field)
            if any(v <= 0 or v % need for v in size):
                raise ValueError(f"{field} {size} must be positive multiples of {need} for arch {self.arch}")
        if self.pos_fraction + self.hard_fraction > 1:
            raise ValueError("pos_fraction + hard_fraction must not exceed 1")
        if self.rot90 and self.patch_size[1] != self.patch_size[2]:
            raise ValueError("rot90 augmentation needs a square in-plane patch (patch_size Y == X)")
        return self

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def stride(self) -> int:
        """Heatmap voxels per input voxel along each axis (1 for the full-resolution UNets)."""
        return self.output_stride if self.arch == "heatmapnet" else 1

    @property
    def size_multiple(self) -> int:
        """Patch/window sizes must be multiples of this."""
        if self.arch == "heatmapnet":
            return self.stem_stride * 2 ** (len(self.channels) - 1)
        if self.arch == "basicunet":
            return 16
        return 8

    @property
    def heatmap_spacing(self) -> float:
        return self.spacing * self.stride

    def nms_radii_A(self) -> list[float]:
        """Per class, the distance within which peaks are merged: ``nms_factor`` radii, but never more than the
        class's match radius. Two peaks farther apart than that are two particles to the metric; small particles
        pack (an apo-ferritin touching a gold bead, centres 2 radii apart, was merged away at 2 radii). A motor
        keeps 2 radii (500 Å, inside its 1000 Å match radius)."""
        return [min(c.radius * self.nms_factor, c.match_radius_A) for c in self.classes]


CONFIGS: dict[str, ModelConfig] = {
    # CPU: works at 32 Å (a motor is ~12 voxels across), heatmap at 64 Å; ~0.36M parameters, ~4 kFLOP per
    # input voxel (almost all of it at 64 Å and coarser: the stem is a 2x2x2 patchify convolution).
    "tiny": ModelConfig(
        name="tiny", spacing=32.0, channels=(16, 24, 32, 48), res_units=(0, 1, 1, 1), stem_stride=2,
        output_stride=2,
        patch_size=(48, 96, 96), batch_size=2, epochs=6, steps_per_epoch=20, lr=3e-3,
        roi_size=(64, 128, 128), overlap=0.25, num_threads=2,
        # the motor recovery figures were measured with it: the inscribed window adds a few faint peaks (7 below
        # 0.12 in 40 tomograms), and they were enough to flip one false label across the verifier's bar
        peak_window="enclosing",
    ),
    # GPU: works at 16 Å, heatmap at 32 Å; ~12.6M parameters, ~27 kFLOP per input voxel.
    "full": ModelConfig(
        name="full", spacing=16.0, channels=(24, 48, 96, 192, 256), res_units=(1, 1, 2, 2, 1), stem_stride=2,
        output_stride=2,
        patch_size=(96, 192, 192), batch_size=4, epochs=40, steps_per_epoch=200, lr=1e-3,
        roi_size=(128, 256, 256), overlap=0.25, sw_batch_size=2, amp=True,
    ),
    # CPU, small particles: works at 16 Å (a 120 Å apo-ferritin is 7.5 voxels across), heatmap at 32 Å; the same
    # network as tiny, so a tomogram costs 8x tiny's per voxel of the same physical size. A 60 Å particle's target
    # is ~1 heatmap voxel: its sigma is floored at 1.5 heatmap voxels and positives weigh 20x, and it trains 2.7x
    # longer than tiny (measured on multi-class cohorts: apo-ferritin recall 0 -> 0.93 at 0.3).
    "small": ModelConfig(
        name="small", spacing=16.0, channels=(16, 24, 32, 48), res_units=(0, 1, 1, 1), stem_stride=2,
        output_stride=2, min_sigma=1.5, pos_weight=20.0,
        patch_size=(48, 96, 96), batch_size=2, epochs=8, steps_per_epoch=40, lr=3e-3, val_every=4,
        roi_size=(64, 128, 128), overlap=0.25, num_threads=2,
    ),
    # CPU, crowded tomograms of many species (look-alikes of the labeled classes among them): small's network
    # trained 3x longer, with a fifth of the patches on the current model's confident peaks far from any label.
    # Measured on a crowded cohort (fold 0, two held-out tomograms) against small: recall at 0.3 rose from 0.28 to
    # 0.70 (ribosome), 0.51 to 0.67 (thyroglobulin) and 0.90 to 0.97 (apo-ferritin), with half the ribosome peaks.
    "crowded": ModelConfig(
        name="crowded", spacing=16.0, channels=(16, 24, 32, 48), res_units=(0, 1, 1, 1), stem_stride=2,
        output_stride=2, min_sigma=1.5, pos_weight=20.0,
        patch_size=(48, 96, 96), batch_size=2, epochs=16, steps_per_epoch=60, lr=3e-3, val_every=4,
        hard_fraction=0.2, roi_size=(64, 128, 128), overlap=0.25, num_threads=2,
    ),
    # Tests: trains in seconds.
    "micro": ModelConfig(
        name="micro", spacing=32.0, channels=(8, 12, 16), res_units=1, stem_stride=2, output_stride=2,
        patch_size=(32, 48, 48), batch_size=2, epochs=3, steps_per_epoch=8, lr=1e-2,
        roi_size=(32, 64, 64), overlap=0.25, num_threads=2,
    ),
}


def resolve_config(config: str | Path | ModelConfig, **overrides: Any) -> ModelConfig:
    """A ``ModelConfig`` from a name in ``CONFIGS``, a YAML/JSON file or an instance, with field overrides."""
    if isinstance(config, ModelConfig):
        base = config.model_dump()
    elif str(config) in CONFIGS:
        base = CONFIGS[str(config)].model_dump()
    else:
        path = Path(config)
        if not path.exists():
            raise NotFoundError(f"unknown config {str(config)!r}: not one of {sorted(CONFIGS)} and no such file")
        try:
            text = path.read_text()
            base = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise InputError(f"cannot read config: {exc}", file=path) from exc
        if not isinstance(base, dict):
            raise InputError("a config file must hold a mapping of fields", file=path)
        base.setdefault("name", path.stem)
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ModelConfig.model_validate(base)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or None
        raise InputError(f"invalid model config: {first.get('msg')}", file=str(config) if not isinstance(
            config, ModelConfig) else None, field=field) from exc

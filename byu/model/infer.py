"""Inference: sliding windows, flip TTA, ensembles of fold models and runs, out-of-fold selection.

``predict(data_root, model_dirs, mode="oof", tta="flips", threshold=0.05)`` writes ``predictions/<name>.csv``
(see :mod:`byu.model.decode`) and ``predictions/<name>.json`` (what was predicted with what).

- ``oof``: each tomogram is predicted only by the models that did not train on it (from the checkpoints'
  split metadata); a tomogram every model trained on is an error unless ``allow_seen``. Default tomograms: the
  union of the checkpoints' validation sets.
- ``all``: every model on every tomogram (default: every tomogram on disk).

Sharded (scaled-out) prediction takes the same path in pieces: :func:`plan_predictions` checks everything and
fixes the tomograms, their order and their models; :func:`predict_shard` predicts any batch of them (whole
tomograms with all their models, since an ensemble averages heatmaps) into a table, on any machine that sees the
data root; :func:`merge_predictions` writes the CSV and sidecar from the tables, rows in the plan's tomogram
order, so the files are the same however the tomograms were sharded. :func:`predict` is the one-shard case.

Heatmaps are averaged over TTA flips (each un-flipped first) and over models; models of different output
strides are brought to the finest grid by trilinear resampling (``align_corners=False``, the same voxel-centre
convention as everywhere else) before averaging.

How fast the network runs is :class:`InferenceSettings` (``predict(..., inference=...)``, ``byu predict
--precision/--batch-tta/--channels-last/--compile``); it changes the speed, not what is computed:

- ``batch_tta``: the flipped views of the volume are stacked along the batch dimension and go through MONAI's
  sliding-window inferer once, so every network call carries all the views of ``sw_batch_size`` windows. Each
  view keeps the windows it has when run alone, so the heatmap equals the one-pass-per-flip heatmap up to float
  rounding (max |difference| 1.5e-6 measured in fp32 on a CPU). It holds one copy of the padded volume and of
  the heatmap per view. ``auto``: on CUDA (and any other accelerator), not on a CPU: there a batched call runs
  other oneDNN kernels, faster but rounding differently, which moves the last printed digit of about 1 in 70
  values of the CSV; the CPU default keeps today's bytes.
- ``precision``: ``auto`` is bf16 autocast on CUDA devices with native bf16 (compute capability 8.0+), fp16
  autocast on other CUDA devices and fp32 elsewhere. Heatmaps are accumulated in fp32 whatever the precision.
- ``channels_last``: channels_last_3d memory format for weights and windows (``auto``: on CUDA; on a CPU it is
  often faster too, with float-rounding differences like ``batch_tta``'s).
- ``compile``: ``torch.compile`` of the network (``auto``: on CUDA); a network that fails to compile runs
  eager, with one warning.

The defaults leave a CPU run exactly as it was (fp32, eager, contiguous, one pass per flip: a byte-identical
CSV). The settings asked for go into the plan and the sidecar (``inference``), and what each shard resolved them
to on its device (``inference_used``) into the sidecar, so predictions at another precision are other
predictions (a flow's cached shard is keyed on them too). Training (validation, hard-negative mining) passes no
settings: eager, contiguous, fp32 or bf16 autocast on CUDA as ``config.amp`` says, as the training loop runs the
network.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.inferers import SlidingWindowInferer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from byu import __version__
from byu.atomic import atomic_open, sha256_bytes, sha256_file, write_json
from byu.errors import InputError, NotFoundError
from byu.model.config import ModelConfig
from byu.model.data import VolumeCache, load_volume, read_stored
from byu.model.decode import config_peaks, empty_predictions, peaks_to_frame, write_predictions
from byu.model.net import build_network
from byu.paths import DataRoot, check_id
from byu.predictions import PredictMode
from byu.tomo.io import content_digest

CHECKPOINT_FORMAT = "byu-model/1"
TTA_FLIPS: dict[str, list[tuple[int, ...]]] = {
    "none": [()],
    # in-plane flips (Y, X and both); the missing wedge is symmetric under them
    "flips": [(), (3,), (4,), (3, 4)],
    # all eight Z/Y/X flip combinations
    "flips8": [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)],
}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


Precision = Literal["fp32", "bf16", "fp16"]
_AUTOCAST: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


class InferenceSettings(BaseModel):
    """How fast the network runs at prediction time (not what it computes: see the module docstring).

    Each ``auto`` is decided per device by :meth:`resolve`; on a CPU the defaults compute exactly what the code
    before them did (fp32, eager, contiguous, one pass per flip).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="autocast dtype of the network; auto: bf16 on CUDA devices that support it, "
        "fp16 on other CUDA devices, fp32 elsewhere")
    batch_tta: bool | Literal["auto"] = Field(
        default="auto", description="run the TTA views of every window as one batch (one sliding-window pass) "
        "instead of one pass per flip; auto: on accelerators, not on a CPU (where it changes float rounding)")
    channels_last: bool | Literal["auto"] = Field(default="auto", description="channels_last_3d memory format "
                                                  "for weights and windows; auto: on CUDA")
    compile: Literal["auto", "off", "on"] = Field(default="auto", description="torch.compile the network; auto: "
                                                  "on CUDA; a failure falls back to eager with one warning")
    window_batch: int | None = Field(default=None, ge=1, description="windows (x views) per network call; "
                                     "default the config's sw_batch_size times the TTA views batched")

    @classmethod
    def parse(cls, value: InferenceSettings | Mapping[str, Any] | None) -> InferenceSettings:
        """Settings from an instance, a mapping (a plan's ``inference``) or ``None`` (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, InferenceSettings):
            return value
        try:
            return cls.model_validate(dict(value))
        except ValidationError as exc:
            first = exc.errors()[0]
            field_name = ".".join(str(p) for p in first.get("loc", ())) or None
            raise InputError(f"invalid inference settings: {first.get('msg')}", field=field_name) from exc

    def resolve(self, device: str | torch.device) -> ResolvedInference:
        """What these settings mean on ``device`` (every ``auto`` decided)."""
        dev = torch.device(device)
        cuda = dev.type == "cuda"
        precision: Precision
        if self.precision != "auto":
            precision = self.precision
        elif cuda:
            precision = "bf16" if _cuda_bf16(dev) else "fp16"
        else:
            precision = "fp32"
        channels_last = cuda if self.channels_last == "auto" else bool(self.channels_last)
        compile_net = cuda if self.compile == "auto" else self.compile == "on"
        batch_tta = dev.type != "cpu" if self.batch_tta == "auto" else bool(self.batch_tta)
        return ResolvedInference(device=str(dev), precision=precision, batch_tta=batch_tta,
                                 channels_last=channels_last, compile=compile_net, window_batch=self.window_batch)


def _cuda_bf16(device: torch.device) -> bool:
    """Native bf16 on this CUDA device (compute capability 8.0 or later; emulation does not count)."""
    try:
        return torch.cuda.get_device_capability(device)[0] >= 8
    except (AssertionError, RuntimeError):  # a CPU-only torch build asked about a CUDA device
        return False


@dataclass(frozen=True)
class ResolvedInference:
    """:class:`InferenceSettings` decided for one device; also what the sidecar records as ``inference_used``."""

    device: str
    precision: Precision
    batch_tta: bool
    channels_last: bool
    compile: bool
    window_batch: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _training_inference(config: ModelConfig, device: torch.device) -> ResolvedInference:
    """How the training loop runs the network (validation, hard-negative mining): eager, contiguous, one pass
    per flip, bf16 autocast on CUDA when ``config.amp``, else fp32 (exactly the inference before the settings)."""
    return ResolvedInference(device=str(device), precision="bf16" if config.amp and device.type == "cuda" else "fp32",
                             batch_tta=False, channels_last=False, compile=False)


def _compiled(net: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``torch.compile(net)``, made once per network (``None`` after it failed on this network)."""
    state = net.__dict__  # not a submodule: nothing of it enters the state dict
    if state.get("_byu_compile_failed"):
        return None
    compiled = state.get("_byu_compiled")
    if compiled is None:
        try:
            compiled = torch.compile(net)
        except Exception as exc:  # no compiler backend for this platform, an unsupported Python
            _compile_failed(net, exc)
            return None
        state["_byu_compiled"] = compiled
    return compiled


def _compile_failed(net: nn.Module, exc: BaseException) -> None:
    net.__dict__["_byu_compile_failed"] = True
    net.__dict__.pop("_byu_compiled", None)
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    warnings.warn(f"torch.compile failed for {type(net).__name__} ({type(exc).__name__}: {first}); running it "
                  "eager", RuntimeWarning, stacklevel=3)


def compile_failed(net: nn.Module) -> bool:
    """Whether ``torch.compile`` failed on ``net`` (it then runs eager)."""
    return bool(net.__dict__.get("_byu_compile_failed"))


@dataclass
class LoadedModel:
    """A checkpoint's network (eval mode, on its device) and metadata."""

    path: Path
    run: str
    fold: int
    config: ModelConfig
    net: nn.Module
    meta: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.run}/fold{self.fold}"

    @property
    def train_ids(self) -> set[str]:
        return set(self.meta.get("train_ids", []))

    @property
    def val_ids(self) -> set[str]:
        return set(self.meta.get("val_ids", []))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's dict (tensors on CPU), checked for the format marker."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise InputError(f"cannot read checkpoint: {exc}", file=path) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"not a byu model checkpoint (format {CHECKPOINT_FORMAT!r} expected)", file=path)
    return ckpt


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Build the network a checkpoint describes and load its weights."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    config = ModelConfig.model_validate(ckpt["config"])
    net = build_network(config)
    net.load_state_dict(ckpt["state_dict"])
    net.to(resolve_device(device)).eval()
    return LoadedModel(path=path, run=str(ckpt.get("run", path.parent.name)), fold=int(ckpt["fold"]),
                       config=config, net=net, meta=ckpt)


def model_files(model_dir: str | Path) -> list[Path]:
    """The finished fold checkpoints (``fold<k>.pt``) of a run directory."""
    d = Path(model_dir)
    files = sorted(p for p in d.glob("fold*.pt") if not p.name.endswith(".last.pt"))
    if not files:
        raise NotFoundError(f"no finished fold checkpoints (fold<k>.pt) in {d}")
    return files


def load_models(model_dirs: Sequence[str | Path], *, device: str | torch.device = "cpu") -> list[LoadedModel]:
    """All finished fold models of one or more runs; they must agree on classes and input spacing."""
    if not model_dirs:
        raise InputError("no model directories given", field="models")
    models = [load_checkpoint(p, device=device) for d in model_dirs for p in model_files(d)]
    check_compatible(models)
    return models


def check_compatible(models: Sequence[LoadedModel]) -> None:
    """Models can be ensembled when they predict the same classes at the same input spacing."""
    ref = models[0]
    for m in models[1:]:
        if m.config.class_names != ref.config.class_names:
            raise InputError(f"classes {m.config.class_names} differ from {ref.config.class_names} of {ref.path}; "
                             "only models of the same classes can be ensembled", file=m.path, field="classes")
        if abs(m.config.spacing - ref.config.spacing) > 1e-6:
            raise InputError(f"input spacing {m.config.spacing} Å differs from {ref.config.spacing} Å of "
                             f"{ref.path}; only models at the same spacing can be ensembled",
                             file=m.path, field="spacing")


# ----------------------------------------------------------------------------------------------------------------
# one volume


def _window(config: ModelConfig, padded: Sequence[int]) -> tuple[list[int], list[float]]:
    """ROI size (no larger than the padded volume) and per-axis overlap making every window start a multiple
    of the output stride (so each window's heatmap lands on the global heatmap grid exactly)."""
    s = config.stride
    roi = [min(r, n) for r, n in zip(config.roi_size, padded, strict=True)]
    overlaps = []
    for r, n in zip(roi, padded, strict=True):
        if r >= n:
            overlaps.append(0.0)
            continue
        step = max(s, int(r * (1 - config.overlap)) // s * s)
        overlaps.append(max(0.0, 1.0 - (step + 0.5) / r))
    return roi, overlaps


def _memory_format(net: nn.Module, fmt: torch.memory_format) -> None:
    """Put the 4-D/5-D weights of ``net`` in memory format ``fmt`` (in place: values unchanged)."""
    to: Any = net.to  # torch's stubs lack the memory_format overload of Module.to
    to(memory_format=fmt)


def _predictor(net: nn.Module, run: ResolvedInference, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function MONAI's inferer calls on a batch of windows: probabilities in fp32, run as ``run`` says."""
    if run.channels_last:
        _memory_format(net, torch.channels_last_3d)
    elif any(p.dim() == 5 and not p.is_contiguous() for p in net.parameters()):
        _memory_format(net, torch.contiguous_format)  # an earlier call left it channels_last
    compiled = _compiled(net) if run.compile else None
    dtype = _AUTOCAST.get(run.precision)

    def autocast() -> AbstractContextManager[Any]:
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def forward(patch: torch.Tensor) -> torch.Tensor:
        nonlocal compiled
        if compiled is not None:
            try:
                return compiled(patch)
            except Exception as exc:  # the compiler failed on first use: eager from now on
                _compile_failed(net, exc)
                compiled = None
        return net(patch)

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        if run.channels_last:
            patch = patch.contiguous(memory_format=torch.channels_last_3d)
        with autocast():
            return torch.sigmoid(forward(patch).float())

    return predictor


def sliding_window_heatmap(net: nn.Module, image: torch.Tensor, config: ModelConfig, *,
                           flips: Sequence[tuple[int, ...]] = ((),), device: torch.device | None = None,
                           inference: InferenceSettings | ResolvedInference | None = None) -> torch.Tensor:
    """Probability heatmap (C, ceil(Z/s), ceil(Y/s), ceil(X/s)) of a normalized net-grid volume (Z, Y, X).

    The volume is padded at the far end to a multiple of ``size_multiple`` (and of the stride), windows are
    blended with a Gaussian by MONAI's ``SlidingWindowInferer``, and flips are averaged after un-flipping.
    ``inference`` (see :class:`InferenceSettings`): with ``batch_tta`` the flipped volumes are one batch of the
    inferer, each flip keeping the windows of its own pass; ``None``: as the training loop runs the network.
    """
    device = device or next(net.parameters()).device
    if isinstance(inference, InferenceSettings):
        run = inference.resolve(device)
    else:
        run = inference or _training_inference(config, device)
    views = [tuple(a) for a in flips]
    if not views:
        raise InputError("no test-time augmentation views to run", field="tta")
    s = config.stride
    m = config.size_multiple
    shape = list(image.shape[-3:])
    padded = [max(math.ceil(n / m) * m, m) for n in shape]
    x = image.reshape(1, 1, *shape).float()
    x = F.pad(x, (0, padded[2] - shape[2], 0, padded[1] - shape[1], 0, padded[0] - shape[0]))
    roi, overlaps = _window(config, padded)
    batched = run.batch_tta and len(views) > 1
    windows = run.window_batch or config.sw_batch_size * (len(views) if batched else 1)
    inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=windows, overlap=overlaps,
                                   mode="gaussian", sigma_scale=0.125, padding_mode="constant", cval=0.0,
                                   sw_device=device, device=device)
    predictor = _predictor(net, run, device)

    def passes(x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Per view, its heatmap (1, C, ...) in the view's own (flipped) frame."""
        if batched:  # one inferer pass over the views stacked along the batch: (V, 1, Z, Y, X)
            p = inferer(torch.cat([torch.flip(x, a) if a else x for a in views]), predictor)
            assert isinstance(p, torch.Tensor)  # one output head
            yield from p.split(1)
            return
        for axes in views:
            p = inferer(torch.flip(x, axes) if axes else x, predictor)
            assert isinstance(p, torch.Tensor)
            yield p

    total: torch.Tensor | None = None
    with torch.inference_mode():
        x = x.to(device)
        for axes, p in zip(views, passes(x), strict=True):
            p = torch.flip(p, axes) if axes else p
            total = p if total is None else total + p
    assert total is not None
    out = total[0] / len(views)
    return out[:, : math.ceil(shape[0] / s), : math.ceil(shape[1] / s), : math.ceil(shape[2] / s)]


def ensemble_heatmap(models: Sequence[LoadedModel], image: np.ndarray | torch.Tensor, *, tta: str = "flips",
                     device: torch.device | None = None,
                     inference: InferenceSettings | ResolvedInference | None = None) -> tuple[torch.Tensor, int]:
    """Average heatmap of ``models`` on one net-grid volume, on the finest stride among them: (heatmap, stride).

    The heatmap stays on ``device``. ``inference``: as in :func:`sliding_window_heatmap`."""
    if tta not in TTA_FLIPS:
        raise InputError(f"unknown TTA {tta!r}; choose one of {sorted(TTA_FLIPS)}", field="tta")
    if not models:
        raise InputError("no models to run", field="models")
    stride = min(m.config.stride for m in models)
    img = torch.as_tensor(image)
    target = [math.ceil(n / stride) for n in img.shape]
    total: torch.Tensor | None = None
    for m in models:
        h = sliding_window_heatmap(m.net, img, m.config, flips=TTA_FLIPS[tta], device=device,
                                   inference=inference).float()
        if m.config.stride != stride:
            # the coarse grid covers ceil(n/s_c)*s_c input voxels: resample that extent, then crop to target
            f = m.config.stride // stride
            full = [d * f for d in h.shape[1:]]
            h = F.interpolate(h[None], size=full, mode="trilinear", align_corners=False)[0]
            h = h[:, : target[0], : target[1], : target[2]]
        total = h if total is None else total + h
    assert total is not None
    return total / len(models), stride


# ----------------------------------------------------------------------------------------------------------------
# a cohort


def _select_tomos(cache: VolumeCache, models: Sequence[LoadedModel], *, mode: str, tomo_ids: Sequence[str] | None,
                  labels: Any, max_motors: int | None) -> list[str]:
    if tomo_ids:
        chosen = [check_id(t) for t in tomo_ids]
    elif labels is not None:
        chosen = list(labels.tomo_ids)
    elif mode == "oof":
        chosen = sorted(set().union(*(m.val_ids for m in models)))
    else:
        root = cache.root.tomograms
        chosen = sorted({p.name for p in root.iterdir() if p.is_dir() and (p / "meta.json").exists()} |
                        {p.stem for p in root.glob("*.mrc")}) if root.exists() else []
    if labels is not None:
        known = set(labels.tomo_ids)
        counts = labels.motor_counts()
        if tomo_ids:
            chosen = [t for t in chosen if t in known]
        if max_motors is not None:
            chosen = [t for t in chosen if counts.get(t, 0) <= max_motors]
    chosen = list(dict.fromkeys(chosen))
    if not chosen:
        raise InputError("no tomograms to predict (check --tomos / --labels / --max-motors)", field="tomos")
    return chosen


def assign_models(models: Sequence[LoadedModel], tomo_ids: Sequence[str], *, mode: str,
                  allow_seen: bool = False) -> dict[str, list[LoadedModel]]:
    """Which models predict which tomogram (``oof``: only those that did not train on it)."""
    if mode not in ("oof", "all"):
        raise InputError(f"mode must be 'oof' or 'all', got {mode!r}", field="mode")
    out: dict[str, list[LoadedModel]] = {}
    seen_by_all = []
    for t in tomo_ids:
        if mode == "all":
            out[t] = list(models)
            continue
        unseen = [m for m in models if t not in m.train_ids]
        if not unseen:
            seen_by_all.append(t)
            unseen = list(models)
        out[t] = unseen
    if seen_by_all and not allow_seen:
        raise InputError(f"{len(seen_by_all)} tomogram(s) are in no validation fold (every model trained on them), "
                         f"so they have no out-of-fold prediction: {', '.join(seen_by_all[:10])}"
                         f"{' ...' if len(seen_by_all) > 10 else ''}; pass --allow-seen to predict them anyway",
                         field="tomos")
    return out


@dataclass(frozen=True)
class PredictionPlan:
    """One prediction run, checked and fixed before anything is computed: its output name, settings (the
    inference settings included), the fold checkpoints (in order), the tomograms (in output order) and which models
    predict each one.

    Plain data (strings, numbers, lists, dicts), so it travels to other processes or machines
    (:meth:`as_dict` / ``PredictionPlan(**d)``). :func:`predict_shard` predicts any slice of ``tomo_ids`` with
    ``checkpoints``; :func:`merge_predictions` writes the files from the shards' tables.
    """

    root: str
    name: str
    mode: str
    tta: str
    threshold: float
    allow_seen: bool
    checkpoints: list[str]
    models: list[dict[str, Any]]
    tomo_ids: list[str]
    assignment: dict[str, list[str]]
    #: the :class:`InferenceSettings` asked for (each shard resolves them on its own device)
    inference: dict[str, Any] = field(default_factory=lambda: InferenceSettings().model_dump(mode="json"))

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    def shards(self, size: int) -> list[list[str]]:
        """``tomo_ids`` in consecutive batches of at most ``size`` (the output order)."""
        if size < 1:
            raise InputError(f"shard size must be at least 1, got {size}", field="batch_size")
        return [list(self.tomo_ids[i:i + size]) for i in range(0, len(self.tomo_ids), size)]

    @property
    def csv(self) -> Path:
        return DataRoot(Path(self.root)).predictions / f"{self.name}.csv"

    @property
    def sidecar(self) -> Path:
        return DataRoot(Path(self.root)).predictions / f"{self.name}.json"


def _check_settings(tta: str, threshold: float, mode: str | None = None) -> None:
    if not 0 < threshold < 1:
        raise InputError(f"threshold must be in (0, 1), got {threshold}", field="threshold")
    if tta not in TTA_FLIPS:
        raise InputError(f"unknown TTA {tta!r}; choose one of {sorted(TTA_FLIPS)}", field="tta")
    if mode is not None and mode not in ("oof", "all"):
        raise InputError(f"mode must be 'oof' or 'all', got {mode!r}", field="mode")


def _as_root(data_root: str | Path | DataRoot) -> DataRoot:
    return data_root if isinstance(data_root, DataRoot) else DataRoot.from_env(data_root)


def _load_for_prediction(root: DataRoot, models: Sequence[str | Path], device: torch.device) -> list[LoadedModel]:
    """Fold models from run directories (``models/<run>`` or a run name under the data root) or checkpoint files
    (``fold<k>.pt``), in the order given; they must be compatible."""
    if not models:
        raise InputError("no model directories given", field="models")
    paths: list[Path] = []
    for d in models:
        p = Path(d)
        if p.is_file() and p.suffix == ".pt":
            paths.append(p)
            continue
        run_dir = p if p.exists() or "/" in str(d) else root.models / check_id(str(d), what="run")
        paths.extend(model_files(run_dir))
    loaded = [load_checkpoint(p, device=device) for p in paths]
    check_compatible(loaded)
    return loaded


def _model_entry(m: LoadedModel) -> dict[str, Any]:
    return {"run": m.run, "fold": m.fold, "path": str(m.path), "config": m.config.name,
            "labels": m.meta.get("labels", {}).get("version")}


def _plan(root: DataRoot, models: Sequence[LoadedModel], *, mode: str, tta: str, threshold: float,
          tomo_ids: Sequence[str] | None, labels: Any, max_motors: int | None, allow_seen: bool,
          out_name: str | None, inference: InferenceSettings) -> PredictionPlan:
    table, version = None, None
    if labels is not None:
        from byu.labels.model import LabelSet

        if isinstance(labels, LabelSet):
            table = labels
        elif isinstance(labels, pd.DataFrame):
            table = LabelSet.from_canonical(labels)
        else:
            from byu.labels.store import LabelStore

            table, version = LabelStore(root.labels).resolve(labels, data_root=root)
    config = models[0].config
    cache = VolumeCache(root, config.spacing, max_bytes=config.cache_gb * 1e9)
    chosen = _select_tomos(cache, models, mode=mode, tomo_ids=tomo_ids, labels=table, max_motors=max_motors)
    cache.check(chosen)
    if version is not None:  # a stored version: its tomograms must still be those it was stored with
        from byu.labels.store import LabelStore

        LabelStore(root.labels).check_tomograms(version, chosen)
    assignment = assign_models(models, chosen, mode=mode, allow_seen=allow_seen)
    runs = list(dict.fromkeys(m.run for m in models))
    name = check_id(out_name or f"{'+'.join(runs)}_{mode}", what="prediction name")
    return PredictionPlan(root=str(root.root), name=name, mode=mode, tta=tta, threshold=float(threshold),
                          allow_seen=bool(allow_seen), checkpoints=[str(m.path) for m in models],
                          models=[_model_entry(m) for m in models], tomo_ids=list(chosen),
                          assignment={t: [m.name for m in ms] for t, ms in assignment.items()},
                          inference=inference.model_dump(mode="json"))


def plan_predictions(data_root: str | Path | DataRoot, model_dirs: Sequence[str | Path], *,
                     mode: PredictMode = "oof", tta: str = "flips", threshold: float = 0.05,
                     tomo_ids: Sequence[str] | None = None, labels: str | Path | pd.DataFrame | None = None,
                     max_motors: int | None = None, allow_seen: bool = False,
                     out_name: str | None = None,
                     inference: InferenceSettings | Mapping[str, Any] | None = None) -> PredictionPlan:
    """Check everything :func:`predict` checks (models, tomograms on disk, fold coverage) and return the plan,
    computing nothing (checkpoints are read on the CPU). Same arguments as :func:`predict`; ``inference`` is
    recorded in the plan (pass ``plan.inference`` on to :func:`predict_shard`)."""
    root = _as_root(data_root)
    _check_settings(tta, threshold, mode)
    settings = InferenceSettings.parse(inference)
    models = _load_for_prediction(root, model_dirs, torch.device("cpu"))
    return _plan(root, models, mode=mode, tta=tta, threshold=threshold, tomo_ids=tomo_ids, labels=labels,
                 max_motors=max_motors, allow_seen=allow_seen, out_name=out_name, inference=settings)


def _predict_with(models: Sequence[LoadedModel], root: DataRoot, tomo_ids: Sequence[str], *, mode: str, tta: str,
                  threshold: float, allow_seen: bool, device: torch.device, inference: InferenceSettings,
                  progress: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """The rows of ``tomo_ids`` (in that order), each tomogram's heatmap averaged over its assigned models.

    ``attrs["inference"]`` of the table: the settings as resolved on ``device`` (``compile`` false when the
    compiler failed and the networks ran eager)."""
    config = models[0].config
    cache = VolumeCache(root, config.spacing, max_bytes=config.cache_gb * 1e9)
    ids = [check_id(t) for t in tomo_ids]
    cache.check(ids)
    assignment = assign_models(models, ids, mode=mode, allow_seen=allow_seen)
    threads = torch.get_num_threads()
    if config.num_threads and device.type == "cpu":
        torch.set_num_threads(config.num_threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    run = inference.resolve(device)
    frames = []
    try:
        for i, (t, image) in enumerate(_prefetched(cache, ids, device)):
            ms = assignment[t]
            geom = cache.geometry(t)
            heat, stride = ensemble_heatmap(ms, image, tta=tta, device=device, inference=run)
            peaks = config_peaks(heat, config, threshold=threshold, stride=stride)
            frames.append(peaks_to_frame(peaks, geometry=geom, stride=stride, class_names=config.class_names,
                                         models=";".join(m.name for m in ms)))
            if progress:
                progress({"stage": "predict", "tomo_id": t, "done": i + 1, "total": len(ids),
                          "peaks": int(sum(len(p) for p in peaks))})
    finally:
        torch.set_num_threads(threads)
    if run.compile and any(compile_failed(m.net) for m in models):
        run = replace(run, compile=False)
    frames = [f for f in frames if len(f)]
    table = pd.concat(frames, ignore_index=True) if frames else empty_predictions()
    table.attrs["inference"] = run.as_dict()
    return table


def predict_shard(data_root: str | Path | DataRoot, models: Sequence[str | Path], tomo_ids: Sequence[str], *,
                  mode: PredictMode = "oof", tta: str = "flips", threshold: float = 0.05,
                  allow_seen: bool = False, device: str | torch.device = "auto",
                  inference: InferenceSettings | Mapping[str, Any] | None = None,
                  progress: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Predictions of one shard, as a table (no files): the tomograms ``tomo_ids`` (in that order) predicted by
    ``models`` (run directories or names, or the checkpoint files of a :class:`PredictionPlan`).

    Each tomogram's heatmap is the average over every model assigned to it (all of them, or in ``oof`` mode those
    that did not train on it), so a shard holds whole tomograms with all their models; its rows are exactly
    those :func:`predict` writes for these tomograms. Concatenate shards with :func:`merge_predictions`.
    ``inference``: :class:`InferenceSettings` (or a plan's ``inference``); the table's ``attrs["inference"]`` says
    what they resolved to on this shard's device.
    """
    root = _as_root(data_root)
    _check_settings(tta, threshold, mode)
    settings = InferenceSettings.parse(inference)
    dev = resolve_device(device)
    loaded = _load_for_prediction(root, models, dev)
    return _predict_with(loaded, root, tomo_ids, mode=mode, tta=tta, threshold=threshold, allow_seen=allow_seen,
                         device=dev, inference=settings, progress=progress)


def merge_predictions(plan: PredictionPlan | dict[str, Any], tables: Sequence[pd.DataFrame]) -> Path:
    """Write ``predictions/<plan.name>.csv`` and ``.json`` from the shard tables of ``plan``.

    Rows are put in the plan's tomogram order (a stable sort: rows of one tomogram keep their order), so the
    files do not depend on how the tomograms were sharded nor on the order the shards come in; they are those a
    single :func:`predict` call writes (the sidecar's ``created_at`` aside). Rows of a tomogram outside the plan,
    or predicted by other models than the plan assigns, are an error. Returns the CSV path.

    The sidecar records the inference settings asked for (``inference``, the plan's) and, from the tables'
    ``attrs["inference"]``, the distinct settings the shards resolved them to (``inference_used``: device,
    precision, TTA batching, memory format, compile).
    """
    plan = plan if isinstance(plan, PredictionPlan) else PredictionPlan(**plan)
    used = {json.dumps(t.attrs["inference"], sort_keys=True): t.attrs["inference"] for t in tables
            if isinstance(t.attrs.get("inference"), dict)}
    frames = [t for t in tables if len(t)]
    df = pd.concat(frames, ignore_index=True) if frames else empty_predictions()
    if len(df):
        position = {t: i for i, t in enumerate(plan.tomo_ids)}
        stray = sorted(set(df["tomo_id"]) - set(position))
        if stray:
            raise InputError(f"shard rows of tomograms outside the plan {plan.name!r}: {', '.join(stray[:10])}",
                             field="tomo_ids")
        expected = {t: ";".join(ms) for t, ms in plan.assignment.items()}
        wrong = sorted({t for t, m in zip(df["tomo_id"], df["models"], strict=True) if expected[t] != m})
        if wrong:
            raise InputError(f"shard rows of {', '.join(wrong[:10])} come from other models than plan "
                             f"{plan.name!r} assigns", field="models")
        order = np.argsort(df["tomo_id"].map(position).to_numpy(), kind="stable")
        if (order != np.arange(len(df))).any():
            df = df.iloc[order].reset_index(drop=True)
    path = plan.csv
    write_predictions(df, path)
    write_json(plan.sidecar, {
        "name": plan.name, "mode": plan.mode, "tta": plan.tta, "threshold": plan.threshold,
        "allow_seen": plan.allow_seen, "models": plan.models, "tomo_ids": plan.tomo_ids,
        "assignment": plan.assignment, "rows": int(len(df)), "inference": plan.inference,
        "inference_used": [used[k] for k in sorted(used)],
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "byu_version": __version__,
    })
    return path


def predict(data_root: str | Path | DataRoot, model_dirs: Sequence[str | Path], *,
            mode: PredictMode = "oof", tta: str = "flips", threshold: float = 0.05,
            tomo_ids: Sequence[str] | None = None, labels: str | Path | pd.DataFrame | None = None,
            max_motors: int | None = None, allow_seen: bool = False, out_name: str | None = None,
            device: str | torch.device = "auto", inference: InferenceSettings | Mapping[str, Any] | None = None,
            progress: Callable[[dict], None] | None = None) -> Path:
    """Predict particles in tomograms with one or more model runs; write ``predictions/<out_name>.csv``.

    ``model_dirs``: run directories (``models/<run>``) or run names under the data root. ``tomo_ids`` restricts
    the tomograms; ``labels`` (a version name, CSV path or table) with ``max_motors`` restricts them to the
    labelled ones with at most that many motors. Everything is checked (models, tomograms on disk, fold
    coverage, and for a stored version that its tomograms are still those it pins:
    :class:`~byu.errors.TomogramChangedError`) before anything is computed; nothing is written on error. Returns the
    CSV path.
    ``inference``: how fast the network runs (:class:`InferenceSettings`; default: every ``auto`` decided for
    ``device``; on a CPU: fp32, eager, one pass per flip, exactly as before the settings), recorded in the sidecar.

    The same path as a sharded run, in one shard: :func:`plan_predictions` → :func:`predict_shard` per slice of
    the plan's tomograms (anywhere) → :func:`merge_predictions`.
    """
    root = _as_root(data_root)
    _check_settings(tta, threshold, mode)
    settings = InferenceSettings.parse(inference)
    dev = resolve_device(device)
    models = _load_for_prediction(root, model_dirs, dev)
    plan = _plan(root, models, mode=mode, tta=tta, threshold=threshold, tomo_ids=tomo_ids, labels=labels,
                 max_motors=max_motors, allow_seen=allow_seen, out_name=out_name, inference=settings)
    table = _predict_with(models, root, plan.tomo_ids, mode=mode, tta=tta, threshold=threshold,
                          allow_seen=allow_seen, device=dev, inference=settings, progress=progress)
    return merge_predictions(plan, [table])


def _prefetched(cache: VolumeCache, tomo_ids: Sequence[str], device: torch.device, *,
                resample_on_device: bool | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Net-grid volumes in order, the next one read while this one is predicted.

    On a CPU the background thread also resamples and normalizes; on a GPU (``resample_on_device``) it only
    reads the stored stack and the resampling and normalization run on the device.
    """
    on_device = device.type != "cpu" if resample_on_device is None else resample_on_device

    def read(t: str):
        g = cache.geometry(t)
        return read_stored(cache.path(t), 0, g.stored_shape[0]) if on_device else load_volume(cache.path(t), g)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, tomo_ids[0]) if tomo_ids else None
        for i, t in enumerate(tomo_ids):
            assert pending is not None  # one read is always in flight for the next tomogram
            data = pending.result()
            pending = pool.submit(read, tomo_ids[i + 1]) if i + 1 < len(tomo_ids) else None
            yield t, (load_volume(data, cache.geometry(t), device=device) if on_device else data)


def predict_tomograms(models: Sequence[LoadedModel], cache: VolumeCache, tomo_ids: Sequence[str], *,
                      tta: str = "none", threshold: float = 0.05, device: torch.device | None = None,
                      inference: InferenceSettings | ResolvedInference | None = None) -> pd.DataFrame:
    """Predictions of ``models`` (ensembled) on ``tomo_ids``, as a table (no files): used for validation
    (``inference`` ``None``: as the training loop runs the network)."""
    config = models[0].config
    frames = []
    for t in tomo_ids:
        heat, stride = ensemble_heatmap(models, cache.get(t), tta=tta, device=device, inference=inference)
        peaks = config_peaks(heat, config, threshold=threshold, stride=stride)
        frames.append(peaks_to_frame(peaks, geometry=cache.geometry(t), stride=stride,
                                     class_names=config.class_names, models=";".join(m.name for m in models)))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_predictions()


def stored_heatmaps(data_root: str | Path | DataRoot, predictions: str | Path, *,
                    device: str | torch.device = "auto",
                    cache_dir: str | Path | None = None) -> Callable[[str], dict[str, np.ndarray] | None]:
    """What the models saw, for review images: a function from a tomo_id to its heatmap per class
    (``{class: (Z, Y, X) float32 in [0, 1]}`` on the *stored* grid), computed with the models the predictions run
    ``predictions`` assigned to that tomogram (its sidecar: out of fold, the same TTA), or None for a tomogram the
    run did not predict or whose models are gone. Models are loaded on first use; each call computes one tomogram
    (the caller keeps what it needs).

    The heatmaps run at the precision the run asked for, with the TTA views batched and a channels-last layout
    (about 3.6x faster on a CPU; they differ from one pass per flip by float rounding, ~1e-6, which an 8-bit
    overlay does not show).

    ``cache_dir``: each tomogram's heatmap (on the network's grid, float16) is kept there as ``<tomo_id>.npz``,
    keyed by what it is computed from (the run's sidecar, the checkpoints' bytes, the tomogram's content digest
    and byu's version): a round rendered in many batches computes each tomogram's heatmap once. A file whose key
    differs, or that cannot be read, is computed again and replaced. The float16 rounding (~5e-4) applies with or
    without the cache, so a cached heatmap draws the same image as a fresh one."""
    import torch.nn.functional as F

    root = _as_root(data_root)
    sidecar = Path(predictions).with_suffix(".json")
    try:
        plan = json.loads(sidecar.read_text())
        assignment = {str(t): list(ms) for t, ms in (plan.get("assignment") or {}).items()}
        paths = {e.get("path") for e in plan.get("models") or []}
        asked = InferenceSettings.parse(plan.get("inference"))
        sidecar_digest = sha256_file(sidecar)
    except (OSError, ValueError, AttributeError, TypeError, InputError):
        return lambda tomo_id: None
    dev = resolve_device(device)
    fast = asked.model_copy(update={"batch_tta": True, "channels_last": True, "compile": "off"}).resolve(dev)
    loaded: dict[str, LoadedModel] = {}
    caches: dict[float, VolumeCache] = {}

    def models_for(tomo_id: str) -> list[LoadedModel]:
        if not loaded:
            for p in sorted(str(p) for p in paths if p):
                if Path(p).exists():
                    m = load_checkpoint(p, device=dev)
                    loaded[m.name] = m
        return [loaded[n] for n in assignment.get(tomo_id, []) if n in loaded]

    digests: dict[str, str] = {}

    def key_for(tomo_id: str, ms: list[LoadedModel]) -> str:
        for m in ms:
            if m.name not in digests:
                digests[m.name] = sha256_file(m.path)
        parts = {"byu": __version__, "sidecar": sidecar_digest, "tomogram": content_digest(root.tomograms / tomo_id),
                 "models": [[m.name, digests[m.name]] for m in ms]}
        return sha256_bytes(json.dumps(parts, sort_keys=True).encode())

    def net_heatmap(tomo_id: str, ms: list[LoadedModel], cache: VolumeCache) -> torch.Tensor:
        """The ensemble's heatmap of ``tomo_id`` on the network's grid, float16: from ``cache_dir`` when it holds
        this one, else computed (and kept there)."""
        path = key = None
        if cache_dir is not None:
            path, key = Path(cache_dir) / f"{check_id(tomo_id)}.npz", key_for(tomo_id, ms)
            try:
                with np.load(path, allow_pickle=False) as kept:
                    if str(kept["key"]) == key:
                        return torch.from_numpy(kept["heat"].astype(np.float16, copy=False))
            except (OSError, KeyError, ValueError, EOFError):
                pass  # not there, or unreadable: compute it
        heat, _ = ensemble_heatmap(ms, cache.get(tomo_id), tta=str(plan.get("tta", "flips")), device=dev,
                                   inference=fast)
        heat = heat.detach().to("cpu", torch.float16)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, "wb") as fh:
                np.savez(fh, heat=heat.numpy(), key=np.array(key))
        return heat

    def heatmaps(tomo_id: str) -> dict[str, np.ndarray] | None:
        ms = models_for(tomo_id)
        if not ms:
            return None
        config = ms[0].config
        cache = caches.setdefault(config.spacing, VolumeCache(root, config.spacing, max_bytes=2e9))
        heat = net_heatmap(tomo_id, ms, cache)
        stored = cache.geometry(tomo_id).stored_shape
        heat = F.interpolate(heat[None].float(), size=tuple(stored), mode="trilinear", align_corners=False)[0]
        out = heat.clamp(0, 1).cpu().numpy().astype(np.float32)
        return {name: out[c] for c, name in enumerate(config.class_names)}

    return heatmaps

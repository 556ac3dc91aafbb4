"""Inference: sliding windows, flip TTA, ensembles of fold models and runs, out-of-fold selection.

``predict(data_root, model_dirs, mode="oof", tta="flips", threshold=0.05)`` writes ``predictions/<name>.csv``
(see :mod:`byu.model.decode`) and ``predictions/<name>.json`` (what was predicted with what).

- ``oof``: each tomogram is predicted only by the models that did not train on it (from the checkpoints'
  split metadata); a tomogram every model trained on is an error unless ``allow_seen``. Default tomograms: the
  union of the checkpoints' validation sets.
- ``all``: every model on every tomogram (default: every tomogram on disk).

Heatmaps are averaged over TTA flips (each un-flipped first) and over models; models of different output
strides are brought to the finest grid by trilinear resampling (``align_corners=False``, the same voxel-centre
convention as everywhere else) before averaging.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.inferers import SlidingWindowInferer
from torch import nn

from byu import __version__
from byu.atomic import write_json
from byu.errors import InputError, NotFoundError
from byu.model.config import ModelConfig
from byu.model.data import VolumeCache, read_stored, load_volume
from byu.model.decode import empty_predictions, find_peaks, peaks_to_frame, write_predictions
from byu.model.net import build_network
from byu.paths import DataRoot, check_id

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
    roi = [min(r, n) for r, n in zip(config.roi_size, padded)]
    overlaps = []
    for r, n in zip(roi, padded):
        if r >= n:
            overlaps.append(0.0)
            continue
        step = max(s, int(r * (1 - config.overlap)) // s * s)
        overlaps.append(max(0.0, 1.0 - (step + 0.5) / r))
    return roi, overlaps


def sliding_window_heatmap(net: nn.Module, image: torch.Tensor, config: ModelConfig, *,
                           flips: Sequence[tuple[int, ...]] = ((),), device: torch.device | None = None
                           ) -> torch.Tensor:
    """Probability heatmap (C, ceil(Z/s), ceil(Y/s), ceil(X/s)) of a normalized net-grid volume (Z, Y, X).

    The volume is padded at the far end to a multiple of ``size_multiple`` (and of the stride), windows are
    blended with a Gaussian by MONAI's ``SlidingWindowInferer``, and flips are averaged after un-flipping.
    """
    device = device or next(net.parameters()).device
    s = config.stride
    m = config.size_multiple
    shape = list(image.shape[-3:])
    padded = [max(math.ceil(n / m) * m, m) for n in shape]
    x = image.reshape(1, 1, *shape).float()
    x = F.pad(x, (0, padded[2] - shape[2], 0, padded[1] - shape[1], 0, padded[0] - shape[0]))
    roi, overlaps = _window(config, padded)
    inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=config.sw_batch_size, overlap=overlaps,
                                   mode="gaussian", sigma_scale=0.125, padding_mode="constant", cval=0.0,
                                   sw_device=device, device=device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if config.amp and device.type == "cuda"
                else nullcontext())

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        with autocast:
            return torch.sigmoid(net(patch).float())

    total = None
    with torch.inference_mode():
        x = x.to(device)
        for axes in flips:
            xi = torch.flip(x, axes) if axes else x
            p = inferer(xi, predictor)
            p = torch.flip(p, axes) if axes else p
            total = p if total is None else total + p
    out = total[0] / len(flips)
    return out[:, : math.ceil(shape[0] / s), : math.ceil(shape[1] / s), : math.ceil(shape[2] / s)]


def ensemble_heatmap(models: Sequence[LoadedModel], image: np.ndarray | torch.Tensor, *, tta: str = "flips",
                     device: torch.device | None = None) -> tuple[torch.Tensor, int]:
    """Average heatmap of ``models`` on one net-grid volume, on the finest stride among them: (heatmap, stride).

    The heatmap stays on ``device``."""
    if tta not in TTA_FLIPS:
        raise InputError(f"unknown TTA {tta!r}; choose one of {sorted(TTA_FLIPS)}", field="tta")
    stride = min(m.config.stride for m in models)
    img = torch.as_tensor(image)
    target = [math.ceil(n / stride) for n in img.shape]
    total = None
    for m in models:
        h = sliding_window_heatmap(m.net, img, m.config, flips=TTA_FLIPS[tta], device=device).float()
        if m.config.stride != stride:
            # the coarse grid covers ceil(n/s_c)*s_c input voxels: resample that extent, then crop to target
            f = m.config.stride // stride
            full = [d * f for d in h.shape[1:]]
            h = F.interpolate(h[None], size=full, mode="trilinear", align_corners=False)[0]
            h = h[:, : target[0], : target[1], : target[2]]
        total = h if total is None else total + h
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


def predict(data_root: str | Path | DataRoot, model_dirs: Sequence[str | Path], *,
            mode: Literal["oof", "all"] = "oof", tta: str = "flips", threshold: float = 0.05,
            tomo_ids: Sequence[str] | None = None, labels: str | Path | pd.DataFrame | None = None,
            max_motors: int | None = None, allow_seen: bool = False, out_name: str | None = None,
            device: str | torch.device = "auto", progress: Callable[[dict], None] | None = None) -> Path:
    """Predict particles in tomograms with one or more model runs; write ``predictions/<out_name>.csv``.

    ``model_dirs``: run directories (``models/<run>``) or run names under the data root. ``tomo_ids`` restricts
    the tomograms; ``labels`` (a version name, CSV path or table) with ``max_motors`` restricts them to the
    labelled ones with at most that many motors. Everything is checked (models, tomograms on disk, fold
    coverage) before anything is computed; nothing is written on error. Returns the CSV path.
    """
    root = data_root if isinstance(data_root, DataRoot) else DataRoot.from_env(data_root)
    if not 0 < threshold < 1:
        raise InputError(f"threshold must be in (0, 1), got {threshold}", field="threshold")
    if tta not in TTA_FLIPS:
        raise InputError(f"unknown TTA {tta!r}; choose one of {sorted(TTA_FLIPS)}", field="tta")
    dev = resolve_device(device)
    dirs = [Path(d) if Path(d).exists() or "/" in str(d) else root.models / check_id(str(d), what="run")
            for d in model_dirs]
    models = load_models(dirs, device=dev)
    table = None
    if labels is not None:
        from byu.labels.model import LabelSet

        if isinstance(labels, LabelSet):
            table = labels
        elif isinstance(labels, pd.DataFrame):
            table = LabelSet.from_canonical(labels)
        else:
            from byu.labels.store import LabelStore

            table, _ = LabelStore(root.labels).resolve(labels, data_root=root)
    config = models[0].config
    cache = VolumeCache(root, config.spacing, max_bytes=config.cache_gb * 1e9)
    chosen = _select_tomos(cache, models, mode=mode, tomo_ids=tomo_ids, labels=table, max_motors=max_motors)
    cache.check(chosen)
    assignment = assign_models(models, chosen, mode=mode, allow_seen=allow_seen)
    runs = list(dict.fromkeys(m.run for m in models))
    name = check_id(out_name or f"{'+'.join(runs)}_{mode}", what="prediction name")

    threads = torch.get_num_threads()
    if config.num_threads and dev.type == "cpu":
        torch.set_num_threads(config.num_threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    frames = []
    try:
        for i, (t, image) in enumerate(_prefetched(cache, chosen, dev)):
            ms = assignment[t]
            geom = cache.geometry(t)
            heat, stride = ensemble_heatmap(ms, image, tta=tta, device=dev)
            radius = [c.radius * config.nms_factor / (config.spacing * stride) for c in config.classes]
            peaks = find_peaks(heat, threshold=threshold, nms_radius=radius, max_peaks=config.max_peaks)
            frames.append(peaks_to_frame(peaks, geometry=geom, stride=stride, class_names=config.class_names,
                                         models=";".join(m.name for m in ms)))
            if progress:
                progress({"stage": "predict", "tomo_id": t, "done": i + 1, "total": len(chosen),
                          "peaks": int(sum(len(p) for p in peaks))})
    finally:
        torch.set_num_threads(threads)
    frames = [f for f in frames if len(f)]
    df = pd.concat(frames, ignore_index=True) if frames else empty_predictions()
    path = root.predictions / f"{name}.csv"
    write_predictions(df, path)
    write_json(root.predictions / f"{name}.json", {
        "name": name, "mode": mode, "tta": tta, "threshold": threshold, "allow_seen": allow_seen,
        "models": [{"run": m.run, "fold": m.fold, "path": str(m.path), "config": m.config.name,
                    "labels": m.meta.get("labels", {}).get("version")} for m in models],
        "tomo_ids": chosen, "assignment": {t: [m.name for m in ms] for t, ms in assignment.items()},
        "rows": int(len(df)), "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "byu_version": __version__,
    })
    return path


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
            data = pending.result()
            pending = pool.submit(read, tomo_ids[i + 1]) if i + 1 < len(tomo_ids) else None
            yield t, (load_volume(data, cache.geometry(t), device=device) if on_device else data)


def predict_tomograms(models: Sequence[LoadedModel], cache: VolumeCache, tomo_ids: Sequence[str], *,
                      tta: str = "none", threshold: float = 0.05, device: torch.device | None = None
                      ) -> pd.DataFrame:
    """Predictions of ``models`` (ensembled) on ``tomo_ids``, as a table (no files): used for validation."""
    config = models[0].config
    frames = []
    for t in tomo_ids:
        heat, stride = ensemble_heatmap(models, cache.get(t), tta=tta, device=device)
        radius = [c.radius * config.nms_factor / (config.spacing * stride) for c in config.classes]
        peaks = find_peaks(heat, threshold=threshold, nms_radius=radius, max_peaks=config.max_peaks)
        frames.append(peaks_to_frame(peaks, geometry=cache.geometry(t), stride=stride,
                                     class_names=config.class_names, models=";".join(m.name for m in models)))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_predictions()

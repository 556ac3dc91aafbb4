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
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from byu.model.data import VolumeCache, load_volume, read_stored
from byu.model.decode import config_peaks, empty_predictions, peaks_to_frame, write_predictions
from byu.model.net import build_network
from byu.paths import DataRoot, check_id
from byu.predictions import PredictMode

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
    roi = [min(r, n) for r, n in zip(config.roi_size, padded, strict=True)]
    overlaps = []
    for r, n in zip(roi, padded, strict=True):
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

    total: torch.Tensor | None = None
    with torch.inference_mode():
        x = x.to(device)
        for axes in flips:
            xi = torch.flip(x, axes) if axes else x
            p = inferer(xi, predictor)
            assert isinstance(p, torch.Tensor)  # one output head
            p = torch.flip(p, axes) if axes else p
            total = p if total is None else total + p
    if total is None:
        raise InputError("no test-time augmentation views to run", field="tta")
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
    if not models:
        raise InputError("no models to run", field="models")
    total: torch.Tensor | None = None
    for m in models:
        h = sliding_window_heatmap(m.net, img, m.config, flips=TTA_FLIPS[tta], device=device).float()
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
    """One prediction run, checked and fixed before anything is computed: its output name, settings, the fold
    checkpoints (in order), the tomograms (in output order) and which models predict each one.

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
          out_name: str | None) -> PredictionPlan:
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
    return PredictionPlan(root=str(root.root), name=name, mode=mode, tta=tta, threshold=float(threshold),
                          allow_seen=bool(allow_seen), checkpoints=[str(m.path) for m in models],
                          models=[_model_entry(m) for m in models], tomo_ids=list(chosen),
                          assignment={t: [m.name for m in ms] for t, ms in assignment.items()})


def plan_predictions(data_root: str | Path | DataRoot, model_dirs: Sequence[str | Path], *,
                     mode: PredictMode = "oof", tta: str = "flips", threshold: float = 0.05,
                     tomo_ids: Sequence[str] | None = None, labels: str | Path | pd.DataFrame | None = None,
                     max_motors: int | None = None, allow_seen: bool = False,
                     out_name: str | None = None) -> PredictionPlan:
    """Check everything :func:`predict` checks (models, tomograms on disk, fold coverage) and return the plan,
    computing nothing (checkpoints are read on the CPU). Same arguments as :func:`predict`."""
    root = _as_root(data_root)
    _check_settings(tta, threshold, mode)
    models = _load_for_prediction(root, model_dirs, torch.device("cpu"))
    return _plan(root, models, mode=mode, tta=tta, threshold=threshold, tomo_ids=tomo_ids, labels=labels,
                 max_motors=max_motors, allow_seen=allow_seen, out_name=out_name)


def _predict_with(models: Sequence[LoadedModel], root: DataRoot, tomo_ids: Sequence[str], *, mode: str, tta: str,
                  threshold: float, allow_seen: bool, device: torch.device,
                  progress: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """The rows of ``tomo_ids`` (in that order), each tomogram's heatmap averaged over its assigned models."""
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
    frames = []
    try:
        for i, (t, image) in enumerate(_prefetched(cache, ids, device)):
            ms = assignment[t]
            geom = cache.geometry(t)
            heat, stride = ensemble_heatmap(ms, image, tta=tta, device=device)
            peaks = config_peaks(heat, config, threshold=threshold, stride=stride)
            frames.append(peaks_to_frame(peaks, geometry=geom, stride=stride, class_names=config.class_names,
                                         models=";".join(m.name for m in ms)))
            if progress:
                progress({"stage": "predict", "tomo_id": t, "done": i + 1, "total": len(ids),
                          "peaks": int(sum(len(p) for p in peaks))})
    finally:
        torch.set_num_threads(threads)
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_predictions()


def predict_shard(data_root: str | Path | DataRoot, models: Sequence[str | Path], tomo_ids: Sequence[str], *,
                  mode: PredictMode = "oof", tta: str = "flips", threshold: float = 0.05,
                  allow_seen: bool = False, device: str | torch.device = "auto",
                  progress: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Predictions of one shard, as a table (no files): the tomograms ``tomo_ids`` (in that order) predicted by
    ``models`` (run directories or names, or the checkpoint files of a :class:`PredictionPlan`).

    Each tomogram's heatmap is the average over every model assigned to it (all of them, or in ``oof`` mode those
    that did not train on it), so a shard holds whole tomograms with all their models; its rows are exactly
    those :func:`predict` writes for these tomograms. Concatenate shards with :func:`merge_predictions`.
    """
    root = _as_root(data_root)
    _check_settings(tta, threshold, mode)
    dev = resolve_device(device)
    loaded = _load_for_prediction(root, models, dev)
    return _predict_with(loaded, root, tomo_ids, mode=mode, tta=tta, threshold=threshold, allow_seen=allow_seen,
                         device=dev, progress=progress)


def merge_predictions(plan: PredictionPlan | dict[str, Any], tables: Sequence[pd.DataFrame]) -> Path:
    """Write ``predictions/<plan.name>.csv`` and ``.json`` from the shard tables of ``plan``.

    Rows are put in the plan's tomogram order (a stable sort: rows of one tomogram keep their order), so the
    files do not depend on how the tomograms were sharded nor on the order the shards come in; they are those a
    single :func:`predict` call writes (the sidecar's ``created_at`` aside). Rows of a tomogram outside the plan,
    or predicted by other models than the plan assigns, are an error. Returns the CSV path.
    """
    plan = plan if isinstance(plan, PredictionPlan) else PredictionPlan(**plan)
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
        "assignment": plan.assignment, "rows": int(len(df)),
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "byu_version": __version__,
    })
    return path


def predict(data_root: str | Path | DataRoot, model_dirs: Sequence[str | Path], *,
            mode: PredictMode = "oof", tta: str = "flips", threshold: float = 0.05,
            tomo_ids: Sequence[str] | None = None, labels: str | Path | pd.DataFrame | None = None,
            max_motors: int | None = None, allow_seen: bool = False, out_name: str | None = None,
            device: str | torch.device = "auto", progress: Callable[[dict], None] | None = None) -> Path:
    """Predict particles in tomograms with one or more model runs; write ``predictions/<out_name>.csv``.

    ``model_dirs``: run directories (``models/<run>``) or run names under the data root. ``tomo_ids`` restricts
    the tomograms; ``labels`` (a version name, CSV path or table) with ``max_motors`` restricts them to the
    labelled ones with at most that many motors. Everything is checked (models, tomograms on disk, fold
    coverage) before anything is computed; nothing is written on error. Returns the CSV path.

    The same path as a sharded run, in one shard: :func:`plan_predictions` → :func:`predict_shard` per slice of
    the plan's tomograms (anywhere) → :func:`merge_predictions`.
    """
    root = _as_root(data_root)
    _check_settings(tta, threshold, mode)
    dev = resolve_device(device)
    models = _load_for_prediction(root, model_dirs, dev)
    plan = _plan(root, models, mode=mode, tta=tta, threshold=threshold, tomo_ids=tomo_ids, labels=labels,
                 max_motors=max_motors, allow_seen=allow_seen, out_name=out_name)
    table = _predict_with(models, root, plan.tomo_ids, mode=mode, tta=tta, threshold=threshold,
                          allow_seen=allow_seen, device=dev, progress=progress)
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
                      tta: str = "none", threshold: float = 0.05, device: torch.device | None = None
                      ) -> pd.DataFrame:
    """Predictions of ``models`` (ensembled) on ``tomo_ids``, as a table (no files): used for validation."""
    config = models[0].config
    frames = []
    for t in tomo_ids:
        heat, stride = ensemble_heatmap(models, cache.get(t), tta=tta, device=device)
        peaks = config_peaks(heat, config, threshold=threshold, stride=stride)
        frames.append(peaks_to_frame(peaks, geometry=cache.geometry(t), stride=stride,
                                     class_names=config.class_names, models=";".join(m.name for m in models)))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_predictions()

"""Training: one model per CV fold, checkpoints that say exactly what they were trained on.

``train_folds(data_root, "gt", "data/cv/gt/skf4_rd42.json", folds="all", config="tiny", run_name="r1")`` writes
``models/r1/fold<k>.pt`` for each fold. Each checkpoint carries the config, the label version and its sha256,
the split file and its sha256, the fold, its train/val tomo_ids, the input spacing, the class names and the
per-epoch metrics (training loss; validation F-beta on the fold's validation tomograms).

Every epoch ends with an atomic ``fold<k>.last.pt`` (with optimizer and scheduler state); a rerun resumes from it,
and a finished ``fold<k>.pt`` with the same settings is kept as is (a different one is an error: runs are
immutable). Randomness is drawn per (seed, fold, epoch), so a resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from byu import __version__
from byu.atomic import atomic_open, sha256_file
from byu.errors import InputError, InputErrors, VersionExistsError
from byu.labels.formats import to_canonical
from byu.labels.model import LabelSet
from byu.metrics import BYU_RADIUS, best_threshold, score_byu, score_multi
from byu.model.config import ModelConfig, resolve_config
from byu.model.data import PatchSampler, VolumeCache, particles_from_labels
from byu.model.infer import CHECKPOINT_FORMAT, LoadedModel, predict_tomograms, read_checkpoint, resolve_device
from byu.model.net import build_network, count_parameters
from byu.paths import DataRoot, check_id

ProgressFn = Callable[[dict], None]


@dataclass
class LabelSource:
    """Labels to train on (any class) and where they came from."""

    labels: LabelSet
    ref: str
    version: str | None
    path: Path | None
    sha256: str

    @property
    def form(self) -> str:
        """``canonical`` for motor labels (validated with the BYU metric too), ``picks`` otherwise."""
        return "canonical" if self.labels.is_motor_only else "picks"


def load_label_source(data_root: DataRoot, labels: str | Path | pd.DataFrame | LabelSet, *,
                      classes: Sequence[Any] = ()) -> LabelSource:
    """A stored version name, a label file in any form, a LabelSet, or a table (canonical motor table, or picks
    ``tomo_id,particle,z,y,x[,voxel_spacing]`` placed in the stored tomograms' frames). ``classes`` (e.g. a model
    config's) are known besides the built-in ones when reading picks."""
    from byu.labels.classes import ClassRegistry

    registry = ClassRegistry().with_classes(classes)
    from byu.atomic import sha256_bytes
    from byu.labels.formats import labels_from_picks, picks_bytes, read_version_file, tomograms_bytes
    from byu.labels.store import LabelStore

    def digest(ls: LabelSet) -> str:
        return sha256_bytes(picks_bytes(ls) + tomograms_bytes(ls))

    if isinstance(labels, LabelSet):
        return LabelSource(labels, "<labels>", None, None, digest(labels))
    if isinstance(labels, pd.DataFrame):
        ls = LabelSet.from_canonical(labels) if "motor_zyx" in labels.columns else \
            labels_from_picks(labels, data_root=data_root, registry=registry)
        return LabelSource(ls, "<table>", None, None, digest(ls))
    ref = str(labels)
    path = Path(ref)
    if path.exists() and path.is_file():
        return LabelSource(read_version_file(path, data_root=data_root, registry=registry), ref, None, path,
                           sha256_file(path))
    store = LabelStore(data_root.labels)
    ls, version = store.resolve(ref, data_root=data_root, registry=registry)
    if version is None:  # a path that is not a file: resolve read it as one, or raised
        return LabelSource(ls, ref, None, None, digest(ls))
    return LabelSource(ls, ref, version, store.path(version), store.manifest(version).sha256)


def check_frames(table: pd.DataFrame, cache: VolumeCache, tomo_ids: Sequence[str], *,
                 source: str | Path | None = None, tolerance: float = 0.05) -> None:
    """Each label row's physical extent (shape x spacing) must match its tomogram's (original shape x spacing).

    A mismatch means the coordinates are in some other frame (wrong spacing or shape): every such row is listed.
    """
    wanted = set(tomo_ids)
    errs = []
    for i, r in enumerate(table.itertuples(index=False)):
        if r.tomo_id not in wanted:
            continue
        g = cache.geometry(r.tomo_id)
        label_a = np.array([r.Z, r.Y, r.X], dtype=float) * float(r.voxel_spacing)
        tomo_a = np.asarray(g.original_shape, dtype=float) * g.original_spacing
        if np.any(np.abs(label_a - tomo_a) > tolerance * tomo_a):
            errs.append(InputError(
                f"tomogram {r.tomo_id!r}: the label frame {r.Z}x{r.Y}x{r.X} at {r.voxel_spacing} Å spans "
                f"{label_a.round(0).tolist()} Å but the tomogram on disk spans {tomo_a.round(0).tolist()} Å "
                f"({g.original_shape} at {g.original_spacing} Å)", file=source, row=i + 2, field="voxel_spacing"))
    if errs:
        raise InputErrors(errs)


def _folds(folds: str | int | Sequence[int], num_folds: int, split_path: Path) -> list[int]:
    if isinstance(folds, str) and folds.strip().lower() == "all":
        return list(range(num_folds))
    try:
        if isinstance(folds, str):
            items = [int(f) for f in folds.split(",") if f.strip()]
        else:
            items = [int(folds)] if isinstance(folds, int) else [int(f) for f in folds]
    except ValueError as exc:
        raise InputError(f"--fold must be 'all' or fold numbers, got {folds!r}", field="fold") from exc
    bad = [f for f in items if not 0 <= f < num_folds]
    if bad or not items:
        raise InputError(f"fold(s) {bad or items} not in the split's 0..{num_folds - 1}", file=split_path,
                         field="fold")
    return list(dict.fromkeys(items))


def heatmap_loss(logits: torch.Tensor, target: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Binary cross-entropy against the Gaussian heatmap, weighted up near particles (``1 + pos_weight * y``)."""
    return F.binary_cross_entropy_with_logits(logits, target, weight=1.0 + config.pos_weight * target)


def _validate(net: torch.nn.Module, config: ModelConfig, cache: VolumeCache, labels: LabelSource,
              val_ids: Sequence[str], device: torch.device) -> dict[str, float]:
    net.eval()
    model = LoadedModel(path=Path("."), run="val", fold=0, config=config, net=net, meta={})
    pred = predict_tomograms([model], cache, val_ids, tta="none", threshold=0.05, device=device)
    radius: Any = BYU_RADIUS if config.class_names == ["motor"] else {
        c.name: c.radius * 0.5 for c in config.classes}
    if labels.form == "canonical":
        table = to_canonical(labels.labels.select(val_ids))
        scope = [t for t in val_ids if t in set(table["tomo_id"])]
    else:
        table = particles_from_labels(labels.labels.select(val_ids), config.class_names)
        scope = [t for t in val_ids if t in set(labels.labels.tomo_ids)]
    s = score_multi(pred, table, threshold=config.val_threshold, radius=radius, tomo_ids=scope)
    th, best = best_threshold(pred, table, metric="multi", radius=radius, tomo_ids=scope)
    out = {"val_fbeta": s.score, "val_precision": s.total.precision, "val_recall": s.total.recall,
           "val_best_fbeta": best.score, "val_best_threshold": th, "val_tomograms": len(scope)}
    if labels.form == "canonical":
        out["val_byu_fbeta"] = score_byu(pred, table, threshold=config.val_threshold, tomo_ids=scope).score
    return {k: (int(v) if isinstance(v, (int, np.integer)) else float(v)) for k, v in out.items()}


def mine_hard_negatives(net: torch.nn.Module, config: ModelConfig, cache: VolumeCache, sampler: PatchSampler,
                        device: torch.device) -> dict[str, np.ndarray]:
    """Peaks >= ``hard_threshold`` of the current model on the training tomograms that lie farther than twice
    the NMS distance from every label of their class: net-voxel centres per tomogram."""
    from byu.model.decode import config_peaks
    from byu.model.infer import sliding_window_heatmap

    net.eval()
    s = config.stride
    nms = [r / config.heatmap_spacing for r in config.nms_radii_A()]
    out: dict[str, np.ndarray] = {}
    for t in sampler.tomo_ids:
        heat = sliding_window_heatmap(net, torch.as_tensor(cache.get(t)), config, device=device)
        labels = sampler.points[t]
        found = []
        for c, peaks in enumerate(config_peaks(heat, config, threshold=config.hard_threshold)):
            if not len(peaks):
                continue
            centres = (peaks[:, :3] + 0.5) * s - 0.5
            near = labels[labels[:, 0] == c, 1:]
            if len(near):
                far = np.min(np.linalg.norm(centres[:, None] - near[None], axis=-1), axis=1) > 2 * nms[c] * s
                centres = centres[far]
            found.append(centres)
        if found and sum(len(f) for f in found):
            out[t] = np.vstack(found)
    net.train()
    return out


def _save(obj: dict[str, Any], path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def _identity(ckpt: dict[str, Any]) -> dict[str, Any]:
    config = ckpt.get("config")
    if isinstance(config, dict):  # normalized, so checkpoints from before a field was added still compare equal
        config = ModelConfig.model_validate(config).model_dump(mode="json")
    return {"config": config, "labels_sha256": ckpt.get("labels", {}).get("sha256"),
            "split_sha256": ckpt.get("split", {}).get("sha256"), "fold": ckpt.get("fold"), "seed": ckpt.get("seed"),
            "train_ids": ckpt.get("train_ids"), "val_ids": ckpt.get("val_ids")}


def _fold_meta(*, config: ModelConfig, labels: LabelSource, split_info: dict[str, Any], fold: int,
               train_ids: Sequence[str], val_ids: Sequence[str], run_name: str, seed: int) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT, "run": run_name, "fold": fold, "seed": seed,
        "config": config.model_dump(mode="json"), "classes": config.class_names, "spacing": config.spacing,
        "stride": config.stride,
        "labels": {"ref": labels.ref, "version": labels.version, "path": str(labels.path) if labels.path else None,
                   "sha256": labels.sha256},
        "split": split_info, "train_ids": list(train_ids), "val_ids": list(val_ids),
        "byu_version": __version__, "torch_version": str(torch.__version__),
    }


def _check_existing(final: Path, last: Path, want: dict[str, Any]) -> bool:
    """True when ``final`` is this fold already trained; error when ``final``/``last`` hold other settings."""
    if final.exists():
        if _identity(read_checkpoint(final)) == want:
            return True
        raise VersionExistsError(f"{final} exists with different settings (config, labels, split, fold or seed); "
                                 "runs are immutable: choose a new run name")
    if last.exists() and _identity(read_checkpoint(last)) != want:
        raise VersionExistsError(f"{last} (an unfinished fold) was written with different settings; choose a new "
                                 "run name or delete the partial run")
    return False


def train_fold(*, cache: VolumeCache, config: ModelConfig, labels: LabelSource, particles: pd.DataFrame,
               split_info: dict[str, Any], fold: int, train_ids: Sequence[str], val_ids: Sequence[str],
               run_dir: Path, run_name: str, seed: int, device: torch.device,
               progress: ProgressFn | None = None) -> Path:
    """Train (or resume, or keep) one fold's model; returns ``run_dir/fold<k>.pt``."""
    final, last = run_dir / f"fold{fold}.pt", run_dir / f"fold{fold}.last.pt"
    meta = _fold_meta(config=config, labels=labels, split_info=split_info, fold=fold, train_ids=train_ids,
                      val_ids=val_ids, run_name=run_name, seed=seed)
    want = _identity(meta)
    if _check_existing(final, last, want):
        return final
    torch.manual_seed(seed * 1009 + fold)
    net = build_network(config).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * config.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total_steps, pct_start=0.15)
    history: list[dict[str, Any]] = []
    hard: dict[str, Any] = {}
    start = 0
    if last.exists():
        ck = read_checkpoint(last)
        net.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        history = list(ck["metrics"]["history"])
        hard = ck.get("hard_negatives", {})
        start = int(ck["epoch"]) + 1
    sampler = PatchSampler(cache, train_ids, particles, config)
    sampler.set_hard_negatives(hard)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if config.amp and device.type == "cuda"
                else nullcontext())
    started = time.perf_counter()
    for epoch in range(start, config.epochs):
        rng = np.random.default_rng([seed, fold, epoch])
        sampler.seed_transforms(int(rng.integers(2**31)))
        net.train()
        losses = []
        for step in range(config.steps_per_epoch):
            batch = sampler.batch(rng, config.batch_size)
            with autocast:
                logits = net(batch["image"].to(device, non_blocking=True))
            loss = heatmap_loss(logits.float(), batch["target"].to(device), config)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if progress:
                progress({"stage": "step", "fold": fold, "epoch": epoch, "epochs": config.epochs, "step": step + 1,
                          "steps": config.steps_per_epoch, "loss": losses[-1]})
        metrics: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses)), "lr": float(sched.get_last_lr()[0])}
        if val_ids and ((epoch + 1) % config.val_every == 0 or epoch == config.epochs - 1):
            metrics.update(_validate(net, config, cache, labels, val_ids, device))
        if config.hard_fraction > 0 and epoch < config.epochs - 1 and (epoch + 1) % config.hard_every == 0:
            sampler.set_hard_negatives(mine_hard_negatives(net, config, cache, sampler, device))
            metrics["hard_negatives"] = sampler.hard_count
        metrics["seconds"] = round(time.perf_counter() - started, 3)
        history.append(metrics)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        _save({**meta, "epoch": epoch, "finished": False, "state_dict": state, "optimizer": opt.state_dict(),
               "scheduler": sched.state_dict(), "metrics": {"history": history},
               "hard_negatives": {t: v.tolist() for t, v in sampler.hard.items()}}, last)
        if progress:
            progress({"stage": "epoch", "fold": fold, **metrics})
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    _save({**meta, "epoch": config.epochs - 1, "finished": True, "state_dict": state,
           "parameters": count_parameters(net),
           "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
           "metrics": {"history": history, "final": history[-1] if history else {}}}, final)
    last.unlink(missing_ok=True)
    return final


def train_folds(data_root: str | Path | DataRoot, labels: str | Path | pd.DataFrame, split_path: str | Path, *,
                folds: str | int | Sequence[int] = "all", config: str | Path | ModelConfig = "tiny",
                run_name: str | None = None, seed: int = 0, device: str | torch.device = "auto",
                progress: ProgressFn | None = None, **overrides: Any) -> list[Path]:
    """Train one model per requested fold of ``split_path`` on ``labels``; returns the checkpoint paths.

    ``labels``: a stored version name, a CSV path or a table. ``config``: a name in ``CONFIGS``, a YAML/JSON file
    or a ``ModelConfig``; ``overrides`` replace config fields (``epochs=2``). Inputs (labels, split, folds,
    tomograms on disk, existing checkpoints) are all checked before training starts; nothing is written on error.
    """
    from byu.labels.splits import read_split

    root = data_root if isinstance(data_root, DataRoot) else DataRoot.from_env(data_root)
    cfg = resolve_config(config, **overrides)
    dev = resolve_device(device)
    src = load_label_source(root, labels, classes=cfg.classes)
    split_path = Path(split_path)
    split = read_split(split_path)
    fold_list = _folds(folds, int(split["num_folds"]), split_path)
    if "classes" not in overrides and [c.name for c in src.labels.classes] != cfg.class_names:
        cfg = cfg.model_copy(update={"classes": list(src.labels.classes)})  # one heatmap channel per label class
    particles = particles_from_labels(src.labels, cfg.class_names)
    labelled = set(src.labels.tomo_ids)
    plan = []
    for k in fold_list:
        part = split["folds"][k]
        unknown = [t for t in part["train"] + part["val"] if t not in labelled]
        if unknown:
            raise InputError(f"fold {k} names {len(unknown)} tomogram(s) missing from labels {src.ref!r}: "
                             f"{', '.join(unknown[:5])}; the split belongs to another label version",
                             file=split_path, field=f"folds[{k}]")
        if not part["train"]:
            raise InputError(f"fold {k} has no training tomograms", file=split_path, field=f"folds[{k}].train")
        plan.append((k, list(part["train"]), list(part["val"])))
    cache = VolumeCache(root, cfg.spacing, max_bytes=cfg.cache_gb * 1e9)
    used = sorted({t for _, tr, va in plan for t in tr + va})
    cache.check(used)
    check_frames(src.labels.tomograms, cache, used, source=src.path or src.ref)
    name = check_id(run_name or f"{src.version or Path(src.ref).stem}_{cfg.name}_s{seed}", what="run")
    run_dir = root.models / name
    split_info = {"path": str(split_path), "sha256": sha256_file(split_path), "num_folds": int(split["num_folds"]),
                  "random_state": split.get("random_state")}
    for k, tr, va in plan:  # refuse before training anything if any fold's files disagree
        meta = _fold_meta(config=cfg, labels=src, split_info=split_info, fold=k, train_ids=tr, val_ids=va,
                          run_name=name, seed=seed)
        _check_existing(run_dir / f"fold{k}.pt", run_dir / f"fold{k}.last.pt", _identity(meta))
    threads = torch.get_num_threads()
    if cfg.num_threads and dev.type == "cpu":
        torch.set_num_threads(cfg.num_threads)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return [train_fold(cache=cache, config=cfg, labels=src, particles=particles, split_info=split_info, fold=k,
                           train_ids=tr, val_ids=va, run_dir=run_dir, run_name=name, seed=seed, device=dev,
                           progress=progress)
                for k, tr, va in plan]
    finally:
        torch.set_num_threads(threads)


def fold_summary(path: str | Path) -> dict[str, Any]:
    """What a fold checkpoint records of its training: ``fold``, ``run``, ``epochs`` trained, ``metric`` (the
    validation score's name: ``val_fbeta``, F-beta at the config's ``val_threshold``), ``score`` (its last value),
    ``best_score`` and ``best_epoch`` (over the validated epochs; None without validation tomograms), ``finished``
    and ``checkpoint``."""
    ck = read_checkpoint(path)
    history = list((ck.get("metrics") or {}).get("history") or [])
    scored = [(float(h["val_fbeta"]), int(h["epoch"])) for h in history if h.get("val_fbeta") is not None]
    best = max(scored, key=lambda s: s[0]) if scored else None
    epochs = len(history) if history else int(ck.get("epoch", -1)) + 1
    return {"fold": ck.get("fold"), "run": ck.get("run"), "epochs": epochs, "metric": "val_fbeta",
            "score": scored[-1][0] if scored else None, "best_score": best[0] if best else None,
            "best_epoch": best[1] if best else None, "finished": bool(ck.get("finished")), "checkpoint": str(path)}

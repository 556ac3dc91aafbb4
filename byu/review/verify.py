"""How much a round's own data verifies each label: a small crop classifier, cross-fitted by tomogram.

The fold models' out-of-fold support is a poor judge of one kind of error: a false label on a decoy that looks like
the particle (a blob beside a motor). Those models learn from dense heatmaps over random patches, see decoys only as
background, and learn from the other folds' false labels. A classifier trained on *centred* crops with explicit
negatives sees the confusion directly.

Every class of the round is verified by one small network with a head per class (the trunk is shared, the crops of
each class at its own scale), cross-fitted by tomogram; the examples, per class, in the round's tomograms:

- **positives**: the version's labels of the class;
- **negatives**: predictions of the class (at the round's threshold) farther than ``negative_distance`` particle
  radii from every label of the class: what the fold models find that nobody labeled, mostly decoys;
- crops of ``crop``³ voxels centred on each, at the spacing that makes the crop ``2 × context`` particle radii wide
  (the stored spacing at least; mean-pooled by an integer factor), intensities as stored;
- ``folds`` folds grouped by tomogram; a label is scored by the model that did not see its tomogram (flip
  test-time augmentation), averaged over ``seeds`` runs (each with its own fold assignment).

A **second stage** (a cascade) then looks only at what the first one finds hard. Its negatives are the
``hard_negatives`` × positives unlabeled predictions that the fold models *and* the first stage believe most (the
product of the two): the decoys that mimic the class. A decoy of the class's size (a single blob beside two-lobed
ribosomes) is rare among the many easy negatives (background, beads, other classes), so the first stage barely sees
it, and the fold models believe it more than the particles; the second stage is trained on labels against these
confusers alone, on the central ``hard_crop``³ voxels (the particle, not its neighbours), cross-fitted the same way.

The **verification** of a label is the product of the two stages' out-of-fold probabilities: low when either stage
doubts it (a label on background, or one that looks like the decoys). It is a ranking, not a calibrated probability
(positives are noisy, negatives hold the missed particles): mining reviews the labels it ranks lowest
(:func:`byu.review.match.find_cases`, ``verify_quantile``).

Every prediction of the class is scored the same way (the negatives as they are; the predictions near a label are
scored without being trained on), so mining can offer a reviewer the unlabeled predictions that look most like the
class's labels first: a missed particle among gold beads and decoys the fold models believe as much.

The verifier measures how well it works: per class, its first stage's out-of-fold ROC AUC of the labels against the
unlabeled predictions it learned them from (``Verification.separation``), which mining uses to give it review
budget in proportion (:func:`byu.review.match.verifier_weight`). Cost: each stage trains ``seeds`` x ``folds``
networks whatever the number of classes (each step sees ``batch`` x ceil(sqrt(classes)) crops); scoring grows with
the examples (in chunks of ``SCORE_CHUNK`` crops, each with its four views in one pass). On 2 CPU cores the three
classes of a 24-tomogram cohort (~4,800 crops) take 2–3 minutes (``benchmarks/mining.py``).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy.spatial.distance import cdist

from byu.labels.model import LabelSet
from byu.tomo.io import read_meta, read_volume, tomo_dir

#: the classifier's architecture and training recipe; a ``verification.csv`` made by another is recomputed
VERIFIER_VERSION = 6


class VerifierSettings(BaseModel):
    """The label verifier's settings (defaults measured with ``benchmarks/recovery.py --replay``: 16-voxel crops and
    two seeds separate as well as 24-voxel crops and three seeds did, at about a third of the cost)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop: int = Field(default=16, ge=8, le=96, title="Crop side (voxels)",
                      description="crop side in voxels (a multiple of 8)")
    context: float = Field(default=1.5, gt=0, title="Crop context (radii)",
                           description="crop half-width in particle radii")
    negative_distance: float = Field(default=2.0, gt=0, title="Negative distance (radii)",
                                     description="a prediction this many particle radii from every label of its "
                                     "class is a negative")
    folds: int = Field(default=4, ge=2, title="Cross-fitting folds",
                       description="cross-fitting folds, grouped by tomogram")
    seeds: int = Field(default=2, ge=1, title="Seeds",
                       description="runs averaged (each with its own folds and initialisation)")
    steps: int = Field(default=150, ge=1, title="Steps per fold", description="optimiser steps per fold")
    batch: int = Field(default=16, ge=2, title="Batch size", description="crops per optimiser step")
    lr: float = Field(default=2e-3, gt=0, title="Learning rate", description="the optimiser's learning rate")
    min_examples: int = Field(default=8, ge=1, title="Minimum examples",
                              description="a class with fewer positives or negatives is not verified")
    hard_negatives: float = Field(default=0.25, ge=0, title="Hard negatives",
                                  description="second stage: its negatives, as a fraction of the positives (0: no "
                                  "second stage)")
    hard_crop: int = Field(default=16, ge=8, le=96, title="Second-stage crop side (voxels)",
                           description="second stage: the central crop side in voxels (a multiple of 8, at most "
                           "crop)")
    device: str = Field(default="auto", title="Device", description="'auto' (cuda when available), 'cpu' or 'cuda'")

    @field_validator("crop", "hard_crop")
    @classmethod
    def _pools_evenly(cls, v: int) -> int:
        if v % 8:
            raise ValueError(f"a crop side must be a multiple of 8 (three 2x poolings), got {v}")
        return v

    @model_validator(mode="after")
    def _hard_crop_inside(self) -> VerifierSettings:
        if self.hard_crop > self.crop:
            raise ValueError(f"hard_crop ({self.hard_crop}) must be at most crop ({self.crop})")
        return self


@dataclass
class Examples:
    crops: np.ndarray  # (n, crop, crop, crop) float32
    target: np.ndarray  # (n,) 1 label, 0 unlabeled prediction (a negative, or not trained on)
    train: np.ndarray  # (n,) bool: trained on (labels and negatives) or only scored (predictions near a label)
    tomo: np.ndarray  # (n,) tomo_id
    pick: np.ndarray  # (n,) row index into the version's picks (-1 for a prediction)
    prediction: np.ndarray  # (n,) row index into the predictions (-1 for a label)
    position_A: np.ndarray  # (n, 3) z, y, x in Å
    confidence: np.ndarray  # (n,) the prediction's confidence (NaN for a label)
    cls: np.ndarray | None = None  # (n,) the class's index (one head per class); None: one class

    def __post_init__(self) -> None:
        if self.cls is None:
            self.cls = np.zeros(len(self.target), np.int64)

    @property
    def classes(self) -> np.ndarray:
        assert self.cls is not None
        return self.cls

    def subset(self, index: np.ndarray) -> Examples:
        return Examples(**{k: (v[index] if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()})


def merge_examples(parts: Sequence[Examples]) -> Examples:
    """One set of examples of several classes (class ``i`` of ``parts`` gets head ``i``); crops keep their
    class's scale, so one network with a head per class learns them together."""
    fields = [f for f in Examples.__dataclass_fields__ if f != "cls"]
    merged = {f: np.concatenate([getattr(p, f) for p in parts]) for f in fields}
    merged["cls"] = np.concatenate([np.full(len(p.target), i, np.int64) for i, p in enumerate(parts)])
    return Examples(**merged)


@dataclass
class Verification:
    """The verification of every label (index: rows of the version's picks) and of every prediction of a verified
    class (index: rows of the predictions); NaN where not verified. ``separation``: per verified class, the
    verifier's own out-of-fold ROC AUC of the labels against the unlabeled predictions its first stage learned them
    from (0.5: it cannot tell them apart; below: inverted; the unlabeled predictions hold the missed particles too,
    so this is a lower bound); ``hard_separation``: its second stage's out-of-fold AUC of the labels against the
    confusers it learned them from."""

    labels: pd.Series
    predictions: pd.Series
    separation: dict[str, float] = field(default_factory=dict)
    hard_separation: dict[str, float] = field(default_factory=dict)


def crop_spacing(radius_A: float, stored_spacing: float, settings: VerifierSettings) -> int:
    """Integer pooling factor from the stored spacing to the crop spacing."""
    target = settings.context * radius_A / (settings.crop / 2)
    return max(1, int(round(target / stored_spacing)))


def _crop(volume: np.ndarray, centre: np.ndarray, half: int, factor: int) -> np.ndarray:
    """A (2·half)³ crop of the stored ``volume`` at ``factor``× its spacing around ``centre`` (stored voxels);
    reflected at edges."""
    shape = volume.shape
    h = half * factor
    c = np.round(centre).astype(int)
    lo, hi = c - h, c + h
    z0, z1 = max(0, lo[0]), min(shape[0], hi[0])
    y0, y1 = max(0, lo[1]), min(shape[1], hi[1])
    x0, x1 = max(0, lo[2]), min(shape[2], hi[2])
    part = volume[z0:z1, y0:y1, x0:x1].astype(np.float32)
    if part.size == 0:
        part = np.full((1, 1, 1), 127.5, np.float32)
    pad = [(int(max(0, (z0 - lo[0]))), int(max(0, hi[0] - z1))), (int(max(0, y0 - lo[1])), int(max(0, hi[1] - y1))),
           (int(max(0, x0 - lo[2])), int(max(0, hi[2] - x1)))]
    if all(s > max(p) for s, p in zip(part.shape, pad, strict=True)):
        part = np.pad(part, pad, mode="reflect")
    else:
        part = np.pad(part, pad, mode="edge")
    if factor > 1:
        s = 2 * half
        part = part.reshape(s, factor, s, factor, s, factor).mean(axis=(1, 3, 5))
    return part


def collect_examples(labels: LabelSet, predictions: pd.DataFrame, tomograms: Path, *, particle: str,
                     tomo_ids: Sequence[str], threshold: float, settings: VerifierSettings) -> Examples:
    """Crops of a class's labels and of its predictions in ``tomo_ids`` (tomograms not stored are skipped): the
    labels and the predictions farther than ``negative_distance`` radii from every label are trained on, the
    predictions nearer only scored."""
    cls = labels.cls(particle)
    half = settings.crop // 2
    groups = labels.groups()
    frames = labels.spacing_of()
    preds = predictions[(predictions["particle"] == particle) & (predictions["conf"] >= threshold)]
    pred_groups = {t: g for t, g in preds.groupby("tomo_id", sort=False)}
    crops, target, train, tomo, pick, pred, where, conf = [], [], [], [], [], [], [], []
    for tid in tomo_ids:
        directory = tomo_dir(tomograms, tid)
        if not (directory / "meta.json").exists():
            continue
        meta = read_meta(directory)
        factor = crop_spacing(cls.radius, meta.voxel_spacing, settings)
        lab = groups[tid]
        lab = lab[lab["particle"] == particle]
        lab_A = lab[["z", "y", "x"]].to_numpy(float) * frames[tid]
        g = pred_groups.get(tid)
        pa, prow, far = np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0, bool)
        pconf = np.zeros(0)
        if g is not None:
            pa = g[["z", "y", "x"]].to_numpy(float) * g["voxel_spacing"].to_numpy(float)[:, None]
            prow = g.index.to_numpy()
            pconf = g["conf"].to_numpy(float)
            far = np.ones(len(pa), bool) if not len(lab_A) else \
                cdist(pa, lab_A).min(axis=1) > settings.negative_distance * cls.radius
        if not len(lab_A) and not len(pa):
            continue
        volume = read_volume(directory)  # once per tomogram: every crop of it comes from memory
        sets = ((1, True, lab.index.to_numpy(), np.full(len(lab_A), -1), lab_A, np.full(len(lab_A), np.nan)),
                (0, True, np.full(int(far.sum()), -1), prow[far], pa[far], pconf[far]),
                (0, False, np.full(int((~far).sum()), -1), prow[~far], pa[~far], pconf[~far]))
        for label, trained, rows, prows, pts, confs in sets:
            for row, prow_i, p, c in zip(rows, prows, pts, confs, strict=True):
                crop = _crop(volume, p / meta.voxel_spacing, half, factor)
                crops.append((crop - 127.5) / 64.0)  # stored tomograms are clipped and normalised to 0-255
                target.append(label)
                train.append(trained)
                tomo.append(tid)
                pick.append(int(row))
                pred.append(int(prow_i))
                where.append(p)
                conf.append(c)
    n = settings.crop
    return Examples(crops=np.stack(crops).astype(np.float32) if crops else np.zeros((0, n, n, n), np.float32),
                    target=np.asarray(target, dtype=np.int64), train=np.asarray(train, dtype=bool),
                    tomo=np.asarray(tomo, dtype=object), pick=np.asarray(pick, dtype=np.int64),
                    prediction=np.asarray(pred, dtype=np.int64),
                    position_A=np.asarray(where, dtype=float).reshape(-1, 3),
                    confidence=np.asarray(conf, dtype=float))


def _net(torch_nn, heads: int = 1):
    """The crop classifier: a small 3D CNN shared by every class, one logit (head) per class."""
    nn = torch_nn

    def block(i: int, o: int, convs: int):
        layers = []
        for k in range(convs):
            layers += [nn.Conv3d(i if k == 0 else o, o, 3, padding=1), nn.BatchNorm3d(o), nn.ReLU()]
        return nn.Sequential(*layers, nn.MaxPool3d(2))

    # one convolution at full resolution: a second one there cost 2/3 of a training step on a CPU
    return nn.Sequential(block(1, 8, 1), block(8, 16, 2), block(16, 32, 2), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                         nn.Dropout(0.3), nn.Linear(32, heads))


def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flips of each axis and a Y/X swap (the missing wedge keeps Z apart)."""
    for axis in (0, 1, 2):
        if rng.random() < 0.5:
            x = np.flip(x, axis)
    if rng.random() < 0.5:
        x = np.swapaxes(x, 1, 2)
    return np.ascontiguousarray(x)


def _batch_size(settings: VerifierSettings, n_classes: int) -> int:
    """Examples per step of the shared network: ``batch`` x the ceiling of the square root of the classes (the
    trunk is shared, so each class needs fewer than when trained alone: the cost grows sublinearly)."""
    return settings.batch * int(math.ceil(math.sqrt(max(1, n_classes))))


def cross_fitted_scores(ex: Examples, settings: VerifierSettings, *, seed: int,
                        progress: Callable[[], None] | None = None) -> np.ndarray:
    """Out-of-fold probability of every example (one run: folds by tomogram, one initialisation; only the examples
    marked ``train`` are trained on). One network learns every class at once (a head per class, each class's
    positives and negatives weighted equally, every class equally); an example is scored by its class's head of the
    model that did not see its tomogram. A class without positives or negatives in a fold's training part leaves
    that fold's examples of it unscored (NaN)."""
    import torch
    from sklearn.model_selection import GroupKFold

    device = torch.device("cuda" if settings.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if settings.device == "auto" else settings.device))
    layout = torch.channels_last_3d  # about 2x faster than contiguous for these 3D convolutions on a CPU
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    scores = np.full(len(ex.target), np.nan)
    cls = ex.classes
    heads = int(cls.max()) + 1 if len(cls) else 1
    batch = _batch_size(settings, heads)
    n_groups = len(set(ex.tomo))
    splitter = GroupKFold(n_splits=min(settings.folds, n_groups), shuffle=True, random_state=seed)
    for train, test in splitter.split(ex.crops, ex.target, groups=ex.tomo):
        train = train[ex.train[train]]
        w = np.zeros(len(train))
        taught: list[int] = []
        for c in range(heads):
            mine = cls[train] == c
            yt = ex.target[train][mine]
            if not len(yt) or yt.min() == yt.max():
                continue  # this class lacks a side in this fold: its tomograms stay unscored in this run
            taught.append(c)
            w[mine] = np.where(yt == 1, 0.5 / yt.sum(), 0.5 / (len(yt) - yt.sum()))
        if not taught:
            if progress:
                progress()
            continue
        w = w / w.sum()
        model = _net(torch.nn, heads).to(device).to(memory_format=layout)
        opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        model.train()
        for _ in range(settings.steps):
            idx = train[rng.choice(len(train), batch, p=w)]
            xb = torch.from_numpy(np.stack([_augment(ex.crops[i], rng) for i in idx])[:, None]).to(device)
            yb = torch.from_numpy(ex.target[idx].astype(np.float32)).to(device)
            head = torch.from_numpy(cls[idx]).to(device)
            opt.zero_grad()
            logits = model(xb.to(memory_format=layout)).gather(1, head[:, None])[:, 0]
            loss_fn(logits, yb).backward()
            opt.step()
        model.eval()
        test = test[np.isin(cls[test], taught)]
        scores[test] = _score(model, ex.crops[test], cls[test], device=device, layout=layout)
        if progress:
            progress()
    return scores


SCORE_CHUNK = 16  # crops per scoring pass (x 4 views): on a CPU, passes of 64 score twice as fast per crop as 1,000


def _score(model, crops: np.ndarray, cls: np.ndarray, *, device, layout) -> np.ndarray:
    """Each crop's probability by its class's head, the mean over the identity and the three axis flips, in
    chunks of ``SCORE_CHUNK`` crops (each chunk's four views in one forward pass)."""
    import torch

    out = np.empty(len(crops))
    with torch.inference_mode():
        for lo in range(0, len(crops), SCORE_CHUNK):
            x = torch.from_numpy(crops[lo:lo + SCORE_CHUNK])[:, None].to(device)
            n = len(x)
            views = torch.cat([x, x.flip(2), x.flip(3), x.flip(4)]).contiguous(memory_format=layout)
            head = torch.from_numpy(cls[lo:lo + SCORE_CHUNK]).to(device).repeat(4)[:, None]
            probs = torch.sigmoid(model(views).gather(1, head))[:, 0].reshape(4, n).mean(0)
            out[lo:lo + n] = probs.cpu().numpy()
    return out


def hard_negatives(ex: Examples, first: np.ndarray, settings: VerifierSettings) -> np.ndarray:
    """Indexes of the second stage's negatives, per class: the trained-on unlabeled predictions with the highest
    product of fold-model confidence and first-stage verification, ``hard_negatives`` × the class's positives of
    them (at least ``min_examples``); none for a class with fewer than ``min_examples`` such predictions, or when
    the stage is off."""
    if settings.hard_negatives <= 0:
        return np.zeros(0, np.int64)
    out = []
    for c in np.unique(ex.classes):
        mine = ex.classes == c
        negatives = np.flatnonzero(mine & ex.train & (ex.target == 0) & np.isfinite(first))
        if len(negatives) < settings.min_examples:
            continue
        positives = int((mine & ex.train & (ex.target == 1)).sum())
        n = max(settings.min_examples, int(round(settings.hard_negatives * positives)))
        belief = first[negatives] * ex.confidence[negatives]  # negatives are predictions at or above the threshold
        out.append(negatives[np.argsort(-belief, kind="stable")[:n]])
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def second_stage(ex: Examples, hard: np.ndarray, settings: VerifierSettings) -> Examples:
    """The examples the second stage learns from and scores: every example on its central ``hard_crop``³ voxels,
    trained on the labels and the ``hard`` negatives only."""
    lo = (settings.crop - settings.hard_crop) // 2
    hi = lo + settings.hard_crop
    train = ex.train & (ex.target == 1)
    train[hard] = True
    return Examples(crops=np.ascontiguousarray(ex.crops[:, lo:hi, lo:hi, lo:hi]), target=ex.target, train=train,
                    tomo=ex.tomo, pick=ex.pick, prediction=ex.prediction, position_A=ex.position_A,
                    confidence=ex.confidence, cls=ex.cls)


def _mean_runs(runs: list[np.ndarray]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an example no run scored stays NaN
        return np.nanmean(np.stack(runs), axis=0)


def label_verification(labels: LabelSet, predictions: pd.DataFrame, tomograms: str | Path, *,
                       tomo_ids: Sequence[str], threshold: float = 0.05,
                       settings: VerifierSettings | None = None,
                       progress: Callable[[str, int, int], None] | None = None) -> Verification:
    """The verification of every label and prediction (at ``threshold``) of ``tomo_ids``; NaN where a class has
    fewer than ``min_examples`` positives or negatives, or a tomogram is not stored.

    Every class is verified by the same runs: each stage trains one network per fold and run for all classes
    together (a head per class), so the cost grows with the number of examples, not with the classes.
    ``progress(what, done, total)`` is called after each fold model (``what``: the classes being verified)."""
    settings = settings or VerifierSettings()
    out = pd.Series(np.nan, index=labels.picks.index, dtype=float)
    out_pred = pd.Series(np.nan, index=predictions.index, dtype=float)
    separation: dict[str, float] = {}
    hard_separation: dict[str, float] = {}
    parts, names = [], []
    for name in labels.class_names:
        ex = collect_examples(labels, predictions, Path(tomograms), particle=name, tomo_ids=tomo_ids,
                              threshold=threshold, settings=settings)
        positives = int((ex.target[ex.train] == 1).sum())
        if min(positives, int(ex.train.sum()) - positives) >= settings.min_examples:
            parts.append(ex)
            names.append(name)
    if not parts:
        return Verification(labels=out, predictions=out_pred)
    ex = merge_examples(parts)
    stages = 2 if settings.hard_negatives > 0 else 1
    total, done = stages * settings.seeds * settings.folds, itertools.count(1)
    what = ", ".join(names)

    def tick() -> None:
        step = next(done)
        if progress:
            progress(what, step, total)

    mean = _mean_runs([cross_fitted_scores(ex, settings, seed=s, progress=tick) for s in range(settings.seeds)])
    for c, name in enumerate(names):
        # the first stage's own separation: labels against every unlabeled prediction it learned them from (those
        # hold the missed particles too, so it is a lower bound of how well it tells particles from the rest)
        mine = ex.classes == c
        separation[name] = out_of_fold_auc(mean, np.flatnonzero(mine & ex.train & (ex.pick >= 0)),
                                           np.flatnonzero(mine & ex.train & (ex.target == 0)))
    if stages == 2:
        hard = hard_negatives(ex, mean, settings)
        if len(hard):
            second = second_stage(ex, hard, settings)
            s2 = _mean_runs([cross_fitted_scores(second, settings, seed=1000 + s, progress=tick)
                             for s in range(settings.seeds)])
            for c, name in enumerate(names):
                mine = ex.classes == c
                if (mine[hard]).any():  # labels vs the confusers the second stage learned them from
                    hard_separation[name] = out_of_fold_auc(s2, np.flatnonzero(mine & ex.train & (ex.pick >= 0)),
                                                            hard[mine[hard]])
            mean = mean * np.where(np.isfinite(s2), s2, 1.0)  # an example the second stage left unscored: first
        else:
            for _ in range(settings.seeds * settings.folds):
                tick()
    pos = ex.pick >= 0
    out.loc[ex.pick[pos]] = mean[pos]
    out_pred.loc[ex.prediction[~pos]] = mean[~pos]
    return Verification(labels=out, predictions=out_pred, separation=separation, hard_separation=hard_separation)


def out_of_fold_auc(scores: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> float:
    """ROC AUC of ``scores[positives]`` against ``scores[negatives]`` (NaN scores left out; NaN when a side is
    empty): how well out-of-fold scores separate the two."""
    from sklearn.metrics import roc_auc_score

    p = scores[positives]
    n = scores[negatives]
    p, n = p[np.isfinite(p)], n[np.isfinite(n)]
    if not len(p) or not len(n):
        return float("nan")
    return round(float(roc_auc_score(np.r_[np.ones(len(p)), np.zeros(len(n))], np.r_[p, n])), 6)


VERIFICATION_COLUMNS = ["source", "row", "tomo_id", "particle", "z", "y", "x", "verification"]


def verification_table(verification: Verification, labels: LabelSet, predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per label (``source`` ``label``, ``row`` its row in the version's picks, in that order, NaN where
    not verified), then one per verified prediction (``prediction``, ``row`` its row in the predictions)."""
    lab = labels.picks.assign(source="label", row=labels.picks.index,
                              verification=verification.labels.reindex(labels.picks.index))
    v = verification.predictions.dropna()
    pred = predictions.loc[v.index].assign(source="prediction", row=v.index, verification=v)
    return pd.concat([lab[VERIFICATION_COLUMNS], pred[VERIFICATION_COLUMNS]], ignore_index=True)


def write_verification(path: Path, table: pd.DataFrame, inputs: dict,
                       verification: Verification | None = None) -> None:
    """``verification.csv`` (:func:`verification_table`) and its ``.json`` sidecar (``inputs``: what it was made
    from; the verifier's separation per class), each written atomically; the sidecar last, so a half-written pair is
    never reused."""
    from byu.atomic import write_bytes, write_json

    path.with_suffix(".json").unlink(missing_ok=True)
    write_bytes(path, table[VERIFICATION_COLUMNS].to_csv(index=False, lineterminator="\n").encode())
    measured = {} if verification is None else {"separation": verification.separation,
                                                "hard_separation": verification.hard_separation}
    write_json(path.with_suffix(".json"), {"inputs": inputs, **measured})


def read_verification(path: Path) -> pd.DataFrame:
    """A round's ``verification.csv`` with its inputs in ``attrs["inputs"]`` (empty, without inputs, when it or
    its sidecar is missing or unreadable, or has other columns: the file is then recomputed, never trusted)."""
    import json

    try:
        table = pd.read_csv(path, dtype={"source": str, "tomo_id": str, "particle": str})
        sidecar = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError, pd.errors.ParserError):
        return pd.DataFrame(columns=VERIFICATION_COLUMNS)
    if list(table.columns) != VERIFICATION_COLUMNS or not isinstance(sidecar, dict) or "inputs" not in sidecar:
        return pd.DataFrame(columns=VERIFICATION_COLUMNS)
    table.attrs["inputs"] = sidecar["inputs"]
    for key in ("separation", "hard_separation"):
        table.attrs[key] = {str(k): float(v) for k, v in (sidecar.get(key) or {}).items()}
    return table


def verification_from_table(table: pd.DataFrame, labels_index: pd.Index, predictions_index: pd.Index) -> Verification:
    """The :class:`Verification` a ``verification.csv`` holds (rows that are not in the indexes are left out)."""
    def series(source: str, index: pd.Index) -> pd.Series:
        part = table[table["source"] == source]
        return pd.Series(part["verification"].to_numpy(float), index=part["row"].to_numpy(np.int64)) \
            .reindex(index).astype(float)

    return Verification(labels=series("label", labels_index), predictions=series("prediction", predictions_index),
                        separation=dict(table.attrs.get("separation", {})),
                        hard_separation=dict(table.attrs.get("hard_separation", {})))


__all__ = ["VERIFICATION_COLUMNS", "VERIFIER_VERSION", "Examples", "Verification", "VerifierSettings",
           "collect_examples", "cross_fitted_scores", "hard_negatives", "label_verification", "merge_examples",
           "out_of_fold_auc",
           "read_verification", "second_stage", "verification_from_table", "verification_table",
           "write_verification"]

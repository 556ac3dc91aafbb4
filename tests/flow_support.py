"""A tiny data root for flow tests: a 6-tomogram synthetic cohort, ``gt`` (with planted errors), a 2-fold split
and two micro fold models. Built once per session (~20 s on 2 cores) and copied into each test."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from byu.labels.formats import read_labels
from byu.labels.splits import fresh_split, write_split
from byu.labels.store import LabelStore
from byu.paths import DataRoot

SPLIT = "v1/skf2_rd42.json"


def build_micro_root(root: Path) -> Path:
    from byu.model.train import train_folds
    from byu.synth import make_cohort

    dr = DataRoot(Path(root))
    cohort = make_cohort(dr.root, classes=["motor"], n=6, seed=0, z_range=(64, 80), yx_range=(128, 160))
    noisy = read_labels(cohort.noisy_path)  # the motor cohort's canonical synth/labels_noisy.csv
    LabelStore(dr.labels).put("gt", noisy, producer="test fixture")
    split = dr.cv / SPLIT
    with warnings.catch_warnings():  # a motor-count class smaller than the number of folds (tiny cohort)
        warnings.simplefilter("ignore", UserWarning)
        write_split(fresh_split(noisy, folds=2, seed=42), split)
    train_folds(dr, "gt", split, folds="all", config="micro", run_name="round1", seed=0, device="cpu",
                epochs=1, steps_per_epoch=2)
    return dr.root


def copy_root(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".prefect*"))
    return dst

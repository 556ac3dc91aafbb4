"""CV splits: the reference StratifiedKFold recipe, fresh and carried forward."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from byu.errors import InputError
from byu.labels.splits import carry_split, fresh_split, read_split, write_split
from byu.labels.table import make_table


def cohort(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in rng.permutation(n):  # unsorted on purpose: the recipe sorts by tomo_id
        k = int(rng.choice([0, 1, 1, 2, 3], p=[0.3, 0.3, 0.2, 0.1, 0.1]))
        rows.append((f"tomo_{i:03d}", (100, 100, 100), 10.0, [[10.0 * (j + 1)] * 3 for j in range(k)]))
    return make_table(rows)


def test_fresh_split_follows_the_recipe():
    df = cohort(40)
    split = fresh_split(df, folds=4, seed=42, max_val_motors=1)
    assert split["splitter"] == "sklearn.model_selection.StratifiedKFold"
    assert (split["num_folds"], split["random_state"], len(split["folds"])) == (4, 42, 4)
    srt = df.sort_values("tomo_id").reset_index(drop=True)
    ids = srt["tomo_id"].to_numpy()
    counts = dict(zip(srt.tomo_id, srt.num_motors, strict=True))
    skf = StratifiedKFold(n_splits=4, shuffle=True, random_state=42)
    for fold, (_, val_idx) in zip(split["folds"], skf.split(ids, srt["num_motors"]), strict=True):
        expected_val = sorted(t for t in ids[val_idx] if counts[t] <= 1)
        assert fold["val"] == expected_val
        assert fold["train"] == sorted(set(ids) - set(expected_val))
    vals = [t for f in split["folds"] for t in f["val"]]
    assert len(vals) == len(set(vals)) == sum(1 for c in counts.values() if c <= 1)


def test_split_ignores_row_order_and_is_deterministic():
    df = cohort(30)
    a = fresh_split(df, folds=5, seed=42)
    b = fresh_split(df.sample(frac=1.0, random_state=1), folds=5, seed=42)
    assert a == b
    assert fresh_split(df, folds=5, seed=7) != a


def test_carry_forward_keeps_folds_and_reapplies_rule():
    df = cohort(40)
    prev = fresh_split(df, folds=4, seed=42)
    # one val tomogram gains motors, one train-only (multi-motor) loses them, one is new, one is dropped
    val0 = prev["folds"][0]["val"][0]
    multi = df[df.num_motors > 1].tomo_id.iloc[0]
    dropped = prev["folds"][1]["val"][0]
    rows = []
    for r in df.itertuples(index=False):
        if r.tomo_id == dropped:
            continue
        motors = r.motor_zyx
        if r.tomo_id == val0:
            motors = [[1.0, 1.0, 1.0], [50.0, 50.0, 50.0]]
        if r.tomo_id == multi:
            motors = motors[:1]
        rows.append((r.tomo_id, (r.Z, r.Y, r.X), r.voxel_spacing, motors))
    rows.append(("zz_new", (100, 100, 100), 10.0, [[5.0, 5.0, 5.0]]))
    new = make_table(rows)
    carried = carry_split(new, prev, max_val_motors=1)
    assert carried["num_folds"] == 4 and carried["random_state"] == 42
    assert val0 not in carried["folds"][0]["val"] and val0 in carried["folds"][0]["train"]
    for k, f in enumerate(carried["folds"]):
        assert "zz_new" in f["train"]
        assert dropped not in f["train"] + f["val"]
        assert multi not in f["val"]  # it had no fold: stays in train
        assert set(f["val"]) <= set(prev["folds"][k]["val"])
        assert set(f["train"]) | set(f["val"]) == set(new.tomo_id)
    assigned = carry_split(new, prev, assign_new=False)
    assert assigned == carried


def test_split_io_and_errors(tmp_path):
    df = cohort(12)
    p = write_split(fresh_split(df, folds=3, seed=0), tmp_path / "cv" / "skf3_rd0.json")
    assert read_split(p)["num_folds"] == 3
    with pytest.raises(InputError, match="from 2 to"):
        fresh_split(df, folds=1, seed=0)
    few = make_table([(f"t{i}", (10, 10, 10), 10.0, [[1.0, 1.0, 1.0]] * (i % 3)) for i in range(6)])
    with pytest.raises(InputError, match="cannot stratify 3 folds"):
        fresh_split(few, folds=3, seed=0)
    with pytest.raises(InputError, match="cannot make"):
        fresh_split(cohort(3), folds=4, seed=0)
    bad = tmp_path / "bad.json"
    bad.write_text('{"num_folds": 2, "random_state": 0, "folds": [{"train": ["a"], "val": ["a"]}, {"train": [], "val": []}]}')
    with pytest.raises(InputError, match="both train and val"):
        read_split(bad)
    bad.write_text("{not json")
    with pytest.raises(InputError, match="JSON"):
        read_split(bad)

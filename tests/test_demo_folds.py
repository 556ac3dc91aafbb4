"""Issue #27, item 15: ``byu demo --n 8`` works: the demo's split fold counts (a 4-fold split of the cohort, round 1's
4- and 5-fold splits) are checked against the cohort size before any work, and reduced (and said so) where a
small cohort cannot be stratified into that many folds."""

from __future__ import annotations

import pytest

from byu.errors import InputError
from byu.labels.formats import read_labels
from byu.labels.splits import fresh_split
from byu.synth import make_cohort
from flows.demo import demo_config, demo_folds, run_demo


def test_the_default_cohorts_keep_the_demo_folds():
    for n in (12, 24, 40):
        folds = demo_folds(n, classes=["motor"])
        assert (folds.first, folds.round1, folds.note) == (4, [4, 5], None)
    assert demo_folds(24, classes=["motor", "ribosome"]).round1 == [4, 5]
    assert demo_folds(8, classes=["ribosome", "apo-ferritin"], world="crowded").round1 == [4, 5]


def test_the_demo_trains_the_config_of_its_world():
    assert demo_config(["motor"]) == "tiny"
    assert demo_config(["motor", "ribosome", "apo-ferritin"]) == "small"
    assert demo_config(["motor"], world="crowded") == "crowded"  # the crowded world's default classes
    assert demo_config(["ribosome"], world="crowded") == "crowded"


def test_a_small_motor_cohort_gets_fewer_folds_and_says_so():
    folds = demo_folds(8, classes=["motor"])
    assert folds.first <= 4 and max(folds.round1) <= 4 and min(folds.round1) >= 2
    assert folds.note is not None and "8" in folds.note and "fold" in folds.note
    for n in range(4, 41):  # every n the command allows gets folds from 2 up
        f = demo_folds(n, classes=["motor"])
        assert 2 <= f.first <= 4 and f.round1 and all(2 <= k <= 5 for k in f.round1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_the_reduced_folds_split_a_real_8_tomogram_cohort(tmp_path, seed):
    """The planted errors move tomograms between motor counts: the folds must split the noisy labels (the demo's
    first split) and the truth (what the reviewed gt_v2 comes back to) alike; round 1's 5 folds never could."""
    cohort = make_cohort(tmp_path / "data", n=8, seed=seed, z_range=(64, 96), yx_range=(160, 192))
    truth, noisy = read_labels(cohort.truth_canonical_path), read_labels(cohort.noisy_path)
    with pytest.raises(InputError, match="cannot stratify 5 folds"):  # what `byu demo --n 8` died of
        fresh_split(truth, folds=5, seed=42)
    folds = demo_folds(8, classes=["motor"])
    fresh_split(noisy, folds=folds.first, seed=42)
    for k in folds.round1:
        fresh_split(truth, folds=k, seed=42)
        fresh_split(noisy, folds=k, seed=42)


def test_run_demo_refuses_a_too_small_cohort_before_any_work(tmp_path):
    data = tmp_path / "demo"
    with pytest.raises(InputError, match="at least 4") as info:
        run_demo(data, n=3, log=lambda *_: None)
    assert info.value.field == "n" and not data.exists()  # refused before the cohort (and training) was made
    with pytest.raises(InputError, match="at least"):
        demo_folds(0, classes=["motor"])

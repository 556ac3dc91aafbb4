"""The flows' cache keys (#27 item 2): every cached task is keyed on the content it reads (tomograms, checkpoints,
label versions, predictions, cases, tables) and on the byu code it calls, not only on its inputs and own source."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import byu
import flows.base
from byu.labels.store import LabelStore
from byu.labels.table import make_table
from byu.paths import DataRoot
from byu.tomo.io import TomoMeta, read_meta, slice_path, write_tomogram
from flows.base import byu_code_key
from flows.common import mine_task, render_task, tomograms_to_review
from flows.model_tasks import merge_task, predict_shard_task, train_task


def _key(task, **inputs) -> str:
    """The cache key Prefect computes for ``task(**inputs)`` (inputs bound to the signature, defaults included)."""
    bound = inspect.signature(task.fn).bind(**inputs)
    bound.apply_defaults()
    key = task.cache_policy.compute_key(task_ctx=None, inputs=dict(bound.arguments), flow_parameters={})
    assert key is not None
    return key


def _tomogram(root: Path, tid: str, seed: int = 0, shape=(6, 20, 24)) -> Path:
    vol = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    meta = TomoMeta(tomo_id=tid, shape=shape, voxel_spacing=16.0, original_shape=shape, original_spacing=16.0)
    return write_tomogram(root / "tomograms" / tid, vol, meta)


def invert(directory: Path) -> None:
    """Every stored slice inverted in place, ``meta.json`` left as it was (what the issue did)."""
    from PIL import Image

    for z in range(read_meta(directory).shape[0]):
        p = slice_path(directory, z)
        with Image.open(p) as im:
            a = np.asarray(im.convert("L"))
        Image.fromarray(255 - a).save(p, quality=95)


@pytest.fixture
def root(tmp_path) -> DataRoot:
    dr = DataRoot(tmp_path / "data")
    for i, t in enumerate(("t0", "t1", "t2")):
        _tomogram(dr.root, t, seed=i)
    table = make_table([(t, (6, 20, 24), 16.0, [[3.0, 10.0, 12.0]]) for t in ("t0", "t1", "t2")])
    LabelStore(dr.labels).put("gt", table, producer="test")
    ckpt = dr.models / "r" / "fold0.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights v1")
    return dr


def test_the_prediction_batch_is_keyed_on_its_tomograms_checkpoints_and_the_byu_code(root, monkeypatch):
    ckpt = root.models / "r" / "fold0.pt"
    inputs = dict(data_dir=str(root.root), checkpoints=[str(ckpt)], tomo_ids=["t0", "t1"], mode="all", tta="none",
                  threshold=0.05)
    key = _key(predict_shard_task, **inputs)
    assert _key(predict_shard_task, **inputs) == key  # unchanged: the same key (a cache hit)
    invert(root.tomogram("t2"))  # a tomogram outside the batch: the same key
    assert _key(predict_shard_task, **inputs) == key
    invert(root.tomogram("t1"))  # the batch's tomogram edited in place (meta.json as it was): another key
    edited = _key(predict_shard_task, **inputs)
    assert edited != key
    _tomogram(root.root, "t1", seed=9)  # stored again by an ingest: another key
    assert _key(predict_shard_task, **inputs) not in (key, edited)
    stored = _key(predict_shard_task, **inputs)
    ckpt.write_bytes(b"weights v2")  # a retrained checkpoint: another key
    assert _key(predict_shard_task, **inputs) != stored
    retrained = _key(predict_shard_task, **inputs)
    monkeypatch.setattr(flows.base, "byu_code_key", lambda: "0.1.0+another-byu")  # same inputs, other byu code
    assert _key(predict_shard_task, **inputs) != retrained
    monkeypatch.undo()
    assert _key(predict_shard_task, **inputs) == retrained


def test_the_byu_code_key_is_the_version_and_a_hash_of_the_package_sources(tmp_path, monkeypatch):
    key = byu_code_key()
    assert key.startswith(byu.__version__ + "+") and byu_code_key() == key  # computed once per process
    copy = tmp_path / "byu"
    shutil.copytree(Path(byu.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        monkeypatch.setattr(byu, "__file__", str(copy / "__init__.py"))
        byu_code_key.cache_clear()
        assert byu_code_key() == key  # the same sources elsewhere: the same key
        decode = copy / "model" / "decode.py"
        decode.write_text(decode.read_text() + "\n# another decoding\n")
        byu_code_key.cache_clear()
        assert byu_code_key() != key  # an upgrade of byu that changes decoding
    finally:
        monkeypatch.undo()
        byu_code_key.cache_clear()
    assert byu_code_key() == key


def test_merge_is_keyed_on_the_rows_not_only_the_plan(root):
    plan = {"name": "p", "tomo_ids": ["t0"]}
    rows = pd.DataFrame({"tomo_id": ["t0"], "conf": [0.5]})
    key = _key(merge_task, plan=plan, tables=[rows])
    assert _key(merge_task, plan=plan, tables=[rows.copy()]) == key
    assert _key(merge_task, plan=plan, tables=[rows.assign(conf=[0.25])]) != key


def test_mine_render_train_and_snapshot_are_keyed_on_what_they_read(root):
    data_dir = str(root.root)
    preds = root.predictions / "p.csv"
    preds.parent.mkdir(parents=True)
    preds.write_text("tomo_id,particle,z,y,x,conf,models,voxel_spacing\nt0,motor,3,10,12,0.9,r/fold0,16\n")
    mine = dict(data_dir=data_dir, round_name="r1", labels_version="gt", predictions=str(preds), threshold=0.05,
                review=flows.base.ReviewSettings(), tomo_ids=["t0"])
    key = _key(mine_task, **mine)
    invert(root.tomogram("t0"))
    assert _key(mine_task, **mine) != key
    key = _key(mine_task, **mine)
    preds.write_text(preds.read_text().replace("0.9", "0.8"))
    assert _key(mine_task, **mine) != key

    snapshot = _key(tomograms_to_review, data_dir=data_dir, version="gt", max_labeled_motors=None)
    split = root.cv / "s.json"
    split.parent.mkdir(parents=True)
    split.write_text(json.dumps({"num_folds": 2}))
    train = dict(data_dir=data_dir, labels="gt", split=str(split), folds="0", config="micro", run_name="m", seed=0)
    trained = _key(train_task, **train)
    invert(root.tomogram("t2"))  # training reads every tomogram of the labels
    assert _key(train_task, **train) != trained
    trained = _key(train_task, **train)
    split.write_text(json.dumps({"num_folds": 3}))
    assert _key(train_task, **train) != trained
    assert _key(tomograms_to_review, data_dir=data_dir, version="gt", max_labeled_motors=None) == snapshot

    from byu.review.cases import cases_csv_bytes

    cases = root.review / "r1" / "cases.csv"  # a round without cases yet: keyed on the (missing) cases file
    render = dict(data_dir=data_dir, round_name="r1", images=None)
    missing = _key(render_task, **render)
    cases.parent.mkdir(parents=True)
    cases.write_bytes(cases_csv_bytes([]))
    assert _key(render_task, **render) != missing


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_inverted_slices_are_predicted_again_and_an_unchanged_rerun_is_cached(micro_root: Path, monkeypatch):
    """The round's prediction step (``predict_with_fingerprint``, one batch per tomogram) through Prefect: rerun
    unchanged it is served from the cache; with one tomogram's slices inverted, that batch is predicted again
    and the predictions change."""
    from prefect import flow

    import byu.model.infer as infer
    from flows.model_tasks import predict_with_fingerprint

    @flow(name="predict-cached")
    def predict_only(data_dir: str) -> str:
        return predict_with_fingerprint(data_dir, [str(Path(data_dir) / "models" / "round1")], mode="oof",
                                        tta="none", threshold=0.01, tomo_ids=None, out_name="cached", batch=1)

    calls: list[list[str]] = []
    real = infer.predict_shard

    def counting(data_root, models, tomo_ids, **kwargs):
        calls.append(list(tomo_ids))
        return real(data_root, models, tomo_ids, **kwargs)

    monkeypatch.setattr(infer, "predict_shard", counting)
    csv = Path(predict_only(str(micro_root)))
    first = csv.read_bytes()
    ids = json.loads(csv.with_suffix(".json").read_text())["tomo_ids"]
    assert sorted(calls) == sorted([t] for t in ids) and len(ids) >= 2

    calls.clear()
    assert Path(predict_only(str(micro_root))).read_bytes() == first
    assert calls == []  # unchanged: every batch (and the merge) from the cache

    changed = ids[0]
    invert(DataRoot(micro_root).tomogram(changed))
    again = Path(predict_only(str(micro_root))).read_bytes()
    assert calls == [[changed]]  # only the changed tomogram's batch recomputed
    before, after = (pd.read_csv(pd.io.common.BytesIO(b), dtype={"tomo_id": str}) for b in (first, again))
    assert not before[before.tomo_id == changed].reset_index(drop=True).equals(
        after[after.tomo_id == changed].reset_index(drop=True))
    assert before[before.tomo_id != changed].reset_index(drop=True).equals(
        after[after.tomo_id != changed].reset_index(drop=True))

"""Label versions pin their tomograms' content (#27 item 1): a stored tomogram records the digest of what is stored,
a version records the digests of its tomograms, an ingest of other content for the same tomo id never replaces what
a version pins, and prediction, mining (with the verifier) and rendering say when a tomogram is not what the
version was stored with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from byu.errors import InputError, TomogramChangedError, VersionExistsError
from byu.labels.store import LabelStore
from byu.labels.table import make_table
from byu.paths import DataRoot
from byu.tomo.io import (
    TomoMeta,
    content_digest,
    content_stamp,
    digest_stored,
    read_meta,
    read_volume,
    slice_path,
    write_tomogram,
)

copick = pytest.importorskip("copick")
from tests.test_copick import build_project, copy_project  # noqa: E402


def _tomogram(root: Path, tid: str, seed: int = 0, shape=(6, 20, 24)) -> Path:
    vol = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    meta = TomoMeta(tomo_id=tid, shape=shape, voxel_spacing=16.0, original_shape=shape, original_spacing=16.0)
    return write_tomogram(root / "tomograms" / tid, vol, meta)


def _invert(directory: Path) -> None:
    """What the issue did by hand: every stored slice inverted in place (meta.json untouched)."""
    from PIL import Image

    for z in range(read_meta(directory).shape[0]):
        p = slice_path(directory, z)
        with Image.open(p) as im:
            a = np.asarray(im.convert("L"))
        Image.fromarray(255 - a).save(p, quality=95)


def _labels(*tids: str):
    return make_table([(t, (6, 20, 24), 16.0, [[3.0, 10.0, 12.0]]) for t in tids])


# ------------------------------------------------------------------------------------------------ digest
def test_the_writer_records_the_stored_contents_digest_and_it_reads_back(tmp_path):
    d = _tomogram(tmp_path, "t0")
    meta = read_meta(d)
    assert meta.content_sha256 == digest_stored(d, meta) == content_digest(d) == content_digest(d, from_files=True)
    assert meta.content_sha256 != meta.sha256  # not the source's digest
    stamp = content_stamp(d)
    _invert(d)
    assert content_digest(d) == meta.content_sha256  # as recorded ...
    assert content_digest(d, from_files=True) != meta.content_sha256  # ... but the files say otherwise
    assert content_stamp(d) != stamp
    # the same slices at another spacing are other content (the geometry is part of it)
    other = meta.model_copy(update={"voxel_spacing": 20.0})
    assert digest_stored(d, other) != digest_stored(d, meta)


# ------------------------------------------------------------------------------------------------ the store
def test_label_only_versions_have_no_pins_and_manifests_as_before(tmp_path):
    store = LabelStore(tmp_path / "labels")
    m = store.put("v1", _labels("t0", "t1"), producer="test")
    assert m.tomograms == {}
    assert "tomograms" not in json.loads(store.manifest_path("v1").read_text())  # the file as before pins
    store.check_tomograms("v1")  # nothing pinned: nothing to check


def test_a_version_pins_its_stored_tomograms_and_says_when_one_changes(tmp_path):
    root = DataRoot(tmp_path)
    _tomogram(tmp_path, "t0", seed=0)
    _tomogram(tmp_path, "t1", seed=1)
    store = LabelStore(root.labels)
    m = store.put("v1", _labels("t0", "t1", "t2"), producer="test")  # t2 is not stored: no pin
    pins = {t: content_digest(root.tomogram(t)) for t in ("t0", "t1")}
    assert m.tomograms == pins == store.manifest("v1").tomograms
    store.check_tomograms("v1")
    assert not store.put("v1", _labels("t0", "t1", "t2"), producer="test").created  # the same again: a no-op

    _tomogram(tmp_path, "t1", seed=7)  # t1 replaced by other content
    now = content_digest(root.tomogram("t1"))
    with pytest.raises(TomogramChangedError) as e:
        store.check_tomograms("v1")
    assert "'t1'" in str(e.value) and "'v1'" in str(e.value) and pins["t1"][:16] in str(e.value) \
        and now[:16] in str(e.value) and "'t0'" not in str(e.value)
    store.check_tomograms("v1", ["t0"])  # only the tomograms asked about
    with pytest.raises(VersionExistsError, match="other content of tomogram"):
        store.put("v1", _labels("t0", "t1", "t2"), producer="test")
    assert store.put("v2", _labels("t0", "t1", "t2"), producer="test").tomograms["t1"] == now


def test_the_writer_never_replaces_pinned_content_with_other_content(tmp_path):
    from byu.errors import PinnedTomogramError
    from byu.tomo.io import TomogramWriter

    root = DataRoot(tmp_path)
    d = _tomogram(tmp_path, "t0", seed=0)
    store = LabelStore(root.labels)
    store.put("v1", _labels("t0"), producer="test")
    pinned, meta = content_digest(d), read_meta(d)

    def rewrite(volume: np.ndarray, **kwargs) -> None:
        with TomogramWriter(d, guard=store.replace_guard(**kwargs)) as w:
            w.write_slices(volume)
            w.commit(meta.model_copy(update={"content_sha256": None}))

    same = np.random.default_rng(0).integers(0, 255, meta.shape, dtype=np.uint8)  # what _tomogram wrote
    rewrite(same)  # the same content again (a forced re-ingest): allowed
    assert content_digest(d) == pinned
    with pytest.raises(PinnedTomogramError, match="'v1'"):
        rewrite(255 - same)
    assert content_digest(d, from_files=True) == pinned and not list(d.parent.glob(".t0.*"))  # nothing changed
    store.check_tomograms("v1")
    rewrite(255 - same, replace_pinned=True)
    with pytest.raises(TomogramChangedError):
        store.check_tomograms("v1")


def test_a_version_stored_before_pins_keeps_working(tmp_path):
    store = LabelStore(DataRoot(tmp_path).labels)
    store.put("old", _labels("t0"), producer="test")  # stored when no tomogram was there: no pins
    _tomogram(tmp_path, "t0")
    store.check_tomograms("old")
    assert not store.put("old", _labels("t0"), producer="test").created  # re-put: a no-op, pins or not


# ------------------------------------------------------------------------------------------------ the issue
@pytest.fixture(scope="module")
def two_types(tmp_path_factory):
    """The copick test project, with a second tomogram type (denoised) of TS_1 at the same spacing."""
    d = tmp_path_factory.mktemp("copick-two-types")
    build_project(d)
    root = copick.from_file(str(d / "cfg.json"))
    vs = root.get_run("TS_1").get_voxel_spacing(10.0)
    rng = np.random.default_rng(5)
    vs.new_tomogram("denoised").from_numpy(rng.standard_normal((24, 40, 56)).astype(np.float32), levels=1)
    return d


def _predictions(labels, path: Path) -> Path:
    rows = [{"tomo_id": r.tomo_id, "particle": r.particle, "z": r.z + 1, "y": r.y, "x": r.x, "conf": 0.9,
             "models": "m/fold0", "voxel_spacing": labels.spacing_of()[r.tomo_id]}
            for r in labels.picks.itertuples(index=False)]
    for t in labels.tomo_ids:  # and one prediction far from every label: a case to review
        rows.append({**rows[0], "tomo_id": t, "z": 2.0, "y": 3.0, "x": 4.0, "conf": 0.8,
                     "voxel_spacing": labels.spacing_of()[t]})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _checkpoint(root: DataRoot, val_ids: list[str]) -> Path:
    """An untrained micro model (enough to plan a prediction)."""
    from byu.model.config import resolve_config
    from byu.model.infer import CHECKPOINT_FORMAT
    from byu.model.net import build_network

    config = resolve_config("micro")
    path = root.models / "m" / "fold0.pt"
    path.parent.mkdir(parents=True)
    torch.save({"format": CHECKPOINT_FORMAT, "run": "m", "fold": 0, "config": config.model_dump(mode="json"),
                "state_dict": build_network(config).state_dict(), "train_ids": [], "val_ids": val_ids}, path)
    return path


def test_another_tomogram_type_never_replaces_what_a_version_was_stored_with(two_types, tmp_path):
    from byu.copick import ingest_copick
    from byu.model.infer import plan_predictions
    from byu.review.round import ReviewRound
    from byu.review.settings import MiningSettings

    cfg = copy_project(two_types, tmp_path / "project")
    data = DataRoot(tmp_path / "data")
    first = ingest_copick(cfg, data, version="cp_v1", objects="ribosome", runs=["TS_1"])  # wbp: ranked first
    assert first.tomograms[0].tomo_type == "wbp"
    store = LabelStore(data.labels)
    pinned = content_digest(data.tomogram("TS_1"))
    assert store.manifest("cp_v1").tomograms == {"TS_1": pinned}
    stack = {p.name: p.read_bytes() for p in data.tomogram("TS_1").iterdir()}
    labels = store.get("cp_v1")
    preds = _predictions(labels, tmp_path / "preds.csv")
    settings = MiningSettings(verify=False, fp_threshold=None)
    mined = ReviewRound(data, "r1").mine(labels_version="cp_v1", predictions=preds, settings=settings)
    assert mined.cases and ReviewRound(data, "r1").render(workers=1)

    # the same runs as another tomogram type: refused before any work, saying what to do; nothing changed
    with pytest.raises(InputError) as e:
        ingest_copick(cfg, data, version="cp_v2", objects="ribosome", runs=["TS_1"], tomo_type="denoised")
    msg = str(e.value)
    assert "tomograms/TS_1" in msg and "'cp_v1'" in msg and pinned[:16] in msg and "--tomo-type wbp" in msg \
        and "--replace-pinned" in msg, msg
    assert {p.name: p.read_bytes() for p in data.tomogram("TS_1").iterdir()} == stack
    assert not store.exists("cp_v2")
    # the earlier version works exactly as before
    store.check_tomograms("cp_v1")
    plan_predictions(data, [_checkpoint(data, ["TS_1"]).parent], labels="cp_v1")
    ReviewRound(data, "r2").mine(labels_version="cp_v1", predictions=preds, settings=settings)

    # asked to replace it: stored, and cp_v1 now says, wherever it reads TS_1, that it is not its tomogram
    second = ingest_copick(cfg, data, version="cp_v2", objects="ribosome", runs=["TS_1"], tomo_type="denoised",
                           replace_pinned=True)
    assert second.ok and second.tomograms[0].status == "stored"
    now = content_digest(data.tomogram("TS_1"))
    assert now != pinned and store.manifest("cp_v2").tomograms == {"TS_1": now}

    def says_changed(call) -> None:
        with pytest.raises(TomogramChangedError) as e:
            call()
        assert "'TS_1'" in str(e.value) and "'cp_v1'" in str(e.value) and pinned[:16] in str(e.value) \
            and now[:16] in str(e.value), str(e.value)

    says_changed(lambda: plan_predictions(data, [data.models / "m"], labels="cp_v1"))
    says_changed(lambda: ReviewRound(data, "r3").mine(labels_version="cp_v1", predictions=preds, settings=settings))
    says_changed(lambda: ReviewRound(data, "r3").mine(labels_version="cp_v1", predictions=preds))  # verifier on
    says_changed(lambda: ReviewRound(data, "r1").render(workers=1))  # r1 was mined against cp_v1
    assert not (data.review / "r3" / "cases.csv").exists()
    # the new version is used as usual
    plan_predictions(data, [data.models / "m"], labels="cp_v2")
    ReviewRound(data, "r4").mine(labels_version="cp_v2", predictions=preds, settings=settings)
    ReviewRound(data, "r4").render(workers=1)
    assert read_volume(data.tomogram("TS_1")).shape == read_meta(data.tomogram("TS_1")).shape

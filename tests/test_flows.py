"""The Prefect flows end to end on a tiny trained cohort: round1 (scripted and through CVAT), a killed flow
rerun, round2, train and external (real portal client against the loopback fake portal)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from byu.errors import VersionExistsError
from byu.labels.store import LabelStore
from byu.paths import DataRoot
from byu.review.cases import read_cases
from byu.review.scripted import scripted_decisions
from byu.review.settings import MiningSettings, WaitSettings
from byu.review.tags import split_tags
from flows.base import ReviewSettings
from flows.round1 import Round1Params, round1

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


#: every unlabeled prediction shown: the micro model's predictions are faint, and these tests are about the flow
FAINT = MiningSettings(fp_threshold=None)


def round1_params(root: Path, wait: WaitSettings | None = None, **review) -> Round1Params:
    review = {"reviewer": "scripted", "truth": str(root / "synth" / "truth.csv"), "mining": FAINT, **review}
    return Round1Params(data_dir=str(root), model_dirs=[str(root / "models" / "round1")], split_folds=[2, 3],
                        review=ReviewSettings(**review, wait=wait or WaitSettings()))


def test_round1_scripted_writes_gt_v2_splits_and_is_rerunnable(micro_root: Path):
    summary = round1(round1_params(micro_root))
    root = DataRoot(micro_root)
    store = LabelStore(root.labels)
    m = store.manifest("gt_v2")
    assert m.parents == ["gt"] and m.extra["round"] == "round1"
    changes = store.changes("gt_v2")
    moves = changes[changes.action.isin(["add", "remove", "move"])]
    assert moves["case_id"].notna().all() and (moves["source"] == "review:round1").all()
    assert sorted(Path(p).name for p in summary["splits"]) == ["skf2_rd42.json", "skf3_rd42.json"]
    assert json.loads((root.cv / "v2" / "skf2_rd42.json").read_text())["num_folds"] == 2
    cases = read_cases(root.review / "round1" / "cases.csv")
    assert len(list((root.review / "round1" / "images").glob("*.jpg"))) == len(cases) == summary["cases"]
    # single-particle images show what the fold models saw beside the raw panels (a sixth, model panel)
    from PIL import Image

    from byu.review.render import Layout
    from byu.review.round import ReviewRound
    from byu.review.settings import RenderSettings

    singles = ReviewRound(root, "singles")
    mined = singles.mine(labels_version="gt", predictions=summary["predictions"],
                         settings=MiningSettings(galleries=False, verify=False, fp_threshold=None))
    assert mined.cases
    for path in singles.render():
        with Image.open(path) as im:
            assert im.size[0] == Layout(n_rows=1, panel_px=RenderSettings().panel_px, n_cols=6).width
    # only tomograms with at most one labeled motor were reviewed
    counts = store.get("gt").motor_counts()
    assert {t for c in cases for t in c.tomo_ids} <= {t for t, n in counts.items() if n <= 1}
    before = store.path("gt_v2").read_bytes()
    round1(round1_params(micro_root))  # rerun: cached, same version, nothing rewritten
    assert store.path("gt_v2").read_bytes() == before
    with pytest.raises(VersionExistsError):  # another round may not write over gt_v2
        round1(round1_params(micro_root).model_copy(update={"round_name": "round1b"}))


def _annotate_when_pushed(url: str, root: Path, stop: threading.Event, done: list) -> None:
    """A person in CVAT: once the round's tasks exist, tag every image as the truth says and complete the jobs."""
    from cvat_sdk import Client, Config

    from byu.labels.formats import read_version_file
    from tests.fakes.cvat import tag_images_as_annotator

    record = root / "review" / "round1" / "cvat" / "tasks.json"
    while not stop.is_set():
        if record.exists():
            tasks = json.loads(record.read_text()).get("tasks", [])
            if tasks and all(t.get("state") == "uploaded" for t in tasks):
                break
        time.sleep(0.2)
    else:
        return
    cases = read_cases(root / "review" / "round1" / "cases.csv")
    tags = scripted_decisions(cases, read_version_file(root / "synth" / "truth.csv"))
    by_image = {r.image: split_tags(r.tags) for r in tags.itertuples(index=False)}
    client = Client(url, config=Config(status_check_period=0.05))
    client.login(("annotator", "pw"))
    for t in tasks:
        tag_images_as_annotator(client, t["id"], {i: by_image[i] for i in t["images"]}, assignee="annotator")
    done.append(len(by_image))


def test_round1_through_cvat_polls_then_pulls(micro_root: Path, monkeypatch):
    from tests.fakes.cvat import start_fake_cvat

    with start_fake_cvat(users={"operator": "op-secret", "annotator": "pw"}) as (url, server):
        monkeypatch.setenv("BYU_CVAT_USER", "operator")
        monkeypatch.setenv("BYU_CVAT_PASSWORD", "op-secret")
        stop, done = threading.Event(), []
        worker = threading.Thread(target=_annotate_when_pushed, args=(url, micro_root, stop, done), daemon=True)
        worker.start()
        params = round1_params(micro_root, reviewer="cvat", wait=WaitSettings(mode="poll", poll_interval_s=0.5),
                               cvat_url=url, batch_size=2)
        try:
            round1(params)
        finally:
            stop.set()
            worker.join(timeout=30)
        assert done, "the annotator never saw the pushed tasks"
        store = LabelStore(DataRoot(micro_root).labels)
        changes = store.changes("gt_v2")
        assert set(changes.reviewer.dropna()) == {"annotator"}
        n_tasks = server.count("POST", "/api/tasks")
        assert (DataRoot(micro_root).review / "round1" / "cvat").glob("*.xml")
        round1(params)  # rerun: no new CVAT task, same version
        assert server.count("POST", "/api/tasks") == n_tasks
    secrets_seen = [p for p in DataRoot(micro_root).root.rglob("*") if p.is_file() and p.suffix in {".json", ".csv"}
                    and "op-secret" in p.read_text(errors="ignore")]
    assert not secrets_seen, f"CVAT password written to {secrets_seen}"


KILL_SCRIPT = """
import sys
from flows.round1 import Round1Params, round1
from byu.review.settings import MiningSettings
from flows.base import ReviewSettings
root = sys.argv[1]
round1(Round1Params(data_dir=root, model_dirs=[root + "/models/round1"], split_folds=[2, 3],
                    review=ReviewSettings(reviewer="scripted", truth=root + "/synth/truth.csv",
                                          mining=MiningSettings(fp_threshold=None))))
"""


def test_killed_flow_rerun_resumes_and_writes_the_same_version(micro_root: Path, tmp_path: Path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"
    root = DataRoot(micro_root)
    marker = root.predictions / "round1_oof.csv"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(micro_root)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the flow never wrote its predictions"
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have ended already: the assertion above says why
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    store = LabelStore(root.labels)
    assert "gt_v2" not in store.names()  # killed before the version: nothing half-written
    preds_before = marker.read_bytes()
    rerun = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(micro_root)], env=env, capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert marker.read_bytes() == preds_before
    assert store.manifest("gt_v2").parents == ["gt"]
    # the same flow on an untouched copy writes a byte-identical version
    fresh = micro_root.parent / "fresh"
    from tests.flow_support import copy_root

    copy_root(micro_root, fresh)
    for p in (fresh / "labels").glob("gt_v2*"):
        p.unlink()
    import shutil

    shutil.rmtree(fresh / "review", ignore_errors=True)
    round1(round1_params(fresh))
    assert (fresh / "labels" / "gt_v2.csv").read_bytes() == store.path("gt_v2").read_bytes()


def test_round2_carries_the_split_and_train_flow_trains(micro_root: Path):
    from flows.round2 import Round2Params, round2
    from flows.train import TrainParams, train

    round1(round1_params(micro_root))
    ckpts = train(TrainParams(data_dir=str(micro_root), labels="gt_v2", split="v2/skf2_rd42.json",
                              config="micro", run_name="round2", overrides={"epochs": 1, "steps_per_epoch": 2}))
    assert sorted(Path(c).name for c in ckpts) == ["fold0.pt", "fold1.pt"]
    summary = round2(Round2Params(data_dir=str(micro_root), model_dirs=[str(micro_root / "models" / "round2")],
                                  carry_split="v2/skf2_rd42.json",
                                  review=ReviewSettings(reviewer="scripted",
                                                        truth=str(micro_root / "synth" / "truth.csv"))))
    root = DataRoot(micro_root)
    store = LabelStore(root.labels)
    assert store.manifest("gt_v3").parents == ["gt_v2"]
    v2 = json.loads((root.cv / "v2" / "skf2_rd42.json").read_text())
    v3 = json.loads((root.cv / "v3" / "skf2_rd42.json").read_text())
    for a, b in zip(v2["folds"], v3["folds"], strict=True):
        assert set(b["val"]) <= set(a["val"])  # tomograms keep their folds
    assert summary["combined"] is None  # no external_gt yet


def test_external_flow_ingests_reviews_and_combines(micro_root: Path, tmp_path: Path):
    from flows.external import ExternalParams, external
    from tests.fakes.portal import default_seed, start_fake_portal

    round1(round1_params(micro_root))
    with start_fake_portal(default_seed(tmp_path / "portal")) as portal:
        params = ExternalParams(data_dir=str(micro_root), portal_url=portal.graphql_url, dataset_ids=[10001],
                                model_dirs=[str(micro_root / "models" / "round1")],
                                review=ReviewSettings(reviewer="import",
                                                      decisions_csv=str(tmp_path / "decisions.csv")))
        # review done outside CVAT: a decisions CSV that decides nothing (every case stays unreviewed)
        root = DataRoot(micro_root)
        pd.DataFrame(columns=["case_id", "tags"]).to_csv(tmp_path / "decisions.csv", index=False)
        summary = external(params)
    store = LabelStore(root.labels)
    assert store.exists("external_gt_v0") and store.exists("external_gt")
    assert store.manifest("external_gt").parents == ["external_gt_v0"]
    assert store.get("external_gt").equals(store.get("external_gt_v0"))  # nothing decided: nothing changed
    all_gt = store.get("all_gt")
    assert set(all_gt.tomo_ids) == set(store.get("gt_v2").tomo_ids) | set(store.get("external_gt").tomo_ids)
    assert summary["portal_labels"]["tomograms"] >= 1

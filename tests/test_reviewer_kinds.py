"""The same review, whoever reviews: every test body here runs once per reviewer kind (scripted, a decisions CSV
imported, people tagging in the fake CVAT), as copick runs its tests over every storage backend.

The answers are the same in every kind (the scripted reviewer's, from the truth); what differs is how they reach
``decisions.csv``: written by the scripted reviewer, read from a CSV by the import reviewer, or tagged image by
image through the real ``cvat-sdk`` by an annotator (alice) and pulled as CVAT XML. A gallery with nothing to
change is left untagged in its completed CVAT job, as a person would."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from byu.labels.store import LabelStore
from byu.paths import DataRoot
from byu.report import errors_against_truth
from byu.review.round import CvatReviewer, ImportReviewer, Reviewer, ReviewRound, ScriptedReviewer
from byu.review.settings import MiningSettings, QualitySettings
from byu.review.tags import OK, split_tags
from byu.tomo.io import TomoMeta, write_tomogram
from tests.fakes.cvat import start_fake_cvat, tag_images_as_annotator
from tests.test_review_galleries import crowd

KINDS = ("scripted", "import", pytest.param("cvat", marks=pytest.mark.slow))  # slow: it starts a server
USERS = {"operator": "op-pass-1", "alice": "alice-pass-2"}
# a confirm threshold above most predictions: true labels are confirmed in galleries too, so some gallery has
# nothing to change (untagged in CVAT)
SETTINGS = MiningSettings(verify=False, confirm_threshold=0.875, fp_threshold=None, known_rate=0.25, gallery_size=4)
STORED = 16.0


@dataclass
class Review:
    """A mined, rendered round and how its reviewer kind delivers the truth's answers."""

    kind: str
    root: DataRoot
    rnd: ReviewRound
    truth: object
    reviewer: Reviewer
    deliver: object  # () -> None: the people's part (nothing for scripted, the CSV, tagging in CVAT)


def _world(tmp_path):
    """The crowded ribosome round of the gallery tests (missed, false and shifted labels), with its tomograms
    stored (blobs at the true particles) so the round's images can be rendered and pushed."""
    truth, noisy, preds = crowd(n_tomos=6)
    root = DataRoot(tmp_path / "data")
    for t in truth.tomograms.itertuples():
        frame = (int(t.Z), int(t.Y), int(t.X))
        shape = tuple(int(round(n * t.voxel_spacing / STORED)) for n in frame)
        vol = np.full(shape, 90, np.uint8)
        for p in truth.picks[truth.picks.tomo_id == t.tomo_id].itertuples():
            z, y, x = (int(round(c * t.voxel_spacing / STORED)) for c in (p.z, p.y, p.x))
            vol[max(z - 3, 0):z + 4, max(y - 3, 0):y + 4, max(x - 3, 0):x + 4] = 240
        write_tomogram(root.tomograms / t.tomo_id, vol, TomoMeta(
            tomo_id=t.tomo_id, shape=shape, voxel_spacing=STORED, original_shape=frame,
            original_spacing=float(t.voxel_spacing)))
    LabelStore(root.labels).put("gt", noisy)
    root.predictions.mkdir(parents=True)
    preds.to_csv(root.predictions / "oof.csv", index=False)
    rnd = ReviewRound(root, "r1")
    rnd.mine(labels_version="gt", predictions=root.predictions / "oof.csv", settings=SETTINGS)
    rnd.render()
    return truth, root, rnd


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The world, mined and rendered once; each test reviews its own copy."""
    where = tmp_path_factory.mktemp("kinds")
    truth, _, _ = _world(where)
    return truth, where / "data"


@pytest.fixture(params=KINDS)
def review(request, tmp_path, built):
    truth, data = built
    shutil.copytree(data, tmp_path / "data", symlinks=True)
    root = DataRoot(tmp_path / "data")
    rnd = ReviewRound(root, "r1")
    answers = ScriptedReviewer(truth=truth, name="alice").decide(rnd).decisions
    kind = request.param
    if kind == "scripted":
        yield Review(kind, root, rnd, truth, ScriptedReviewer(truth=truth, name="alice"), lambda: None)
    elif kind == "import":
        csv = tmp_path / "alice.csv"
        yield Review(kind, root, rnd, truth, ImportReviewer(csv=csv),
                     lambda: answers[["case_id", "tags", "reviewer"]].to_csv(csv, index=False))
    else:
        from cvat_sdk import Client, models
        from cvat_sdk.core.client import Config

        from byu.review.cvat import CvatConfig, load_record

        with start_fake_cvat(users=USERS, page_size=3) as (url, server):
            config = CvatConfig(url=url, user="operator", password=USERS["operator"], status_check_period=0.01,
                                backoff_initial=0.01, backoff_max=0.05, max_attempts=3)
            reviewer = CvatReviewer(config=config, batch_size=5)
            client = Client(url, config=Config(status_check_period=0.01), check_server_version=not server.legacy)
            client.login(("alice", USERS["alice"]))

            def tag_in_cvat() -> None:
                tags = {r.image: [t for t in split_tags(r.tags) if t != OK] for r in answers.itertuples()}
                for task in load_record(rnd.paths.dir)["tasks"]:
                    mine = {i: t for i, t in tags.items() if i in set(task["images"])}
                    tag_images_as_annotator(client, task["id"], mine, assignee="alice")
                    for job in client.tasks.retrieve(task["id"]).get_jobs():  # every job done, tagged or not
                        job.update(models.PatchedJobWriteRequest(state="completed"))

            try:
                yield Review(kind, root, rnd, truth, reviewer, tag_in_cvat)
            finally:
                client.close()


def _collect(review: Review) -> pd.DataFrame:
    review.reviewer.start(review.rnd)
    review.deliver()
    assert review.reviewer.finished(review.rnd)
    review.rnd.collect_review(review.reviewer)
    return review.rnd.decisions()


def test_a_review_gives_the_true_version_whoever_reviews(review):
    decisions = _collect(review)
    assert set(decisions.reviewer) == {"alice"}
    kinds = {c.case_id: c.kind for c in review.rnd.cases()}
    assert {kinds[c] for c in decisions.case_id} >= {"FN", "GL", "GP"}  # single cases and both gallery kinds
    manifest, applied = review.rnd.apply(from_version="gt", to_version="gt_v2")
    fixed = LabelStore(review.root.labels).get("gt_v2")
    assert errors_against_truth(fixed, review.truth) == {"ribosome": 0}
    assert applied.label_changes > 0 and set(applied.changes.reviewer) == {"alice"}
    assert manifest.parents == ["gt"]


def test_the_same_answers_make_the_same_decisions_and_version_in_every_kind(review, tmp_path):
    """The decisions, compared tag by tag with the scripted reviewer's: an untagged gallery in a completed CVAT
    job is read as ``ok``, as the scripted reviewer says it."""
    decisions = _collect(review).set_index("case_id")
    reference = ScriptedReviewer(truth=review.truth, name="alice").decide(review.rnd).decisions.set_index("case_id")
    assert sorted(decisions.index) == sorted(reference.index)
    assert (reference.tags == OK).any()  # a gallery with nothing to change (left untagged in CVAT)
    for case_id, row in reference.iterrows():
        assert sorted(split_tags(decisions.at[case_id, "tags"])) == sorted(split_tags(row.tags)), case_id
    src = set(decisions.source)
    assert src == {"scripted"} if review.kind == "scripted" else all(
        s.startswith("cvat:" if review.kind == "cvat" else "import:") for s in src)


def test_collecting_again_changes_nothing_and_the_version_is_stored_once(review):
    _collect(review)
    before = review.rnd.paths.decisions.read_bytes()
    review.rnd.collect_review(review.reviewer)
    assert review.rnd.paths.decisions.read_bytes() == before
    first, _ = review.rnd.apply(from_version="gt", to_version="gt_v2")
    again, _ = review.rnd.apply(from_version="gt", to_version="gt_v2")
    assert again.files == first.files  # the same content again: a no-op, never a second version


def test_reviewer_accuracy_is_measured_from_every_kind_of_review(review):
    _collect(review)
    report = review.rnd.assess(QualitySettings(min_known=1))
    acc = report["accuracy"]["alice"]
    assert acc["n"] >= 1 and acc["accuracy"] == 1.0  # the truth's answers on the known-answer items
    assert report["second_review"] == {}  # nobody flagged, nothing unsure, no sample asked for

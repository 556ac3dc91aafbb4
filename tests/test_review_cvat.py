"""The CVAT adapter driven through the real cvat-sdk against the loopback fake, with faults injected."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from cvat_sdk import Client, Config, models
from cvat_sdk.core.exceptions import BackgroundRequestException
from typer.testing import CliRunner

from byu.errors import InputError
from byu.review import cvat as rc
from byu.review.cvat import CvatConfig, CvatError, pull_round, push_round, push_second_review, round_status
from byu.review.decisions import decisions_from_round, read_decisions, write_decisions
from tests.cvat_support import make_round, multiclass_world, round_root, write_images
from tests.fakes.cvat import (
    CVAT_VERSIONS,
    FAKE_CVAT_VERSION,
    LEGACY_CVAT_VERSION,
    start_fake_cvat,
    tag_images_as_annotator,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]
USERS = {"operator": "op-pass-1", "alice": "alice-pass-2"}
TOKEN = "pat-0123456789"


SKIPPED_CHECK = "skipped the server version check"


@pytest.fixture(autouse=True)
def _fresh_version_warnings(monkeypatch):
    monkeypatch.setattr(rc, "_version_warned", set())  # warnings are once per process and URL


@pytest.fixture
def fake(request):
    """The fake CVAT; ``@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)`` picks its version."""
    version = getattr(request, "param", FAKE_CVAT_VERSION)
    with start_fake_cvat(users=USERS, tokens={TOKEN: "operator"}, page_size=3, version=version) as (url, server):
        yield url, server


def make_config(url: str, **kw) -> CvatConfig:
    base = dict(url=url, user="operator", password=USERS["operator"], status_check_period=0.01,
                backoff_initial=0.01, backoff_max=0.05, max_attempts=4)
    base.update(kw)
    return CvatConfig(**base)


@pytest.fixture
def config(fake) -> CvatConfig:
    return make_config(fake[0])


@pytest.fixture
def annotator(fake):
    # a plain SDK client, as an annotator's script would open it (on CVAT 2.23 it must skip the check)
    client = Client(fake[0], config=Config(status_check_period=0.01), check_server_version=not fake[1].legacy)
    client.login(("alice", USERS["alice"]))
    yield client
    client.close()


@pytest.fixture
def round_dir(tmp_path) -> Path:
    # 5 cases: FN k=0..3, FP k=1..2, FN k=0, FP k=1, FN k=0..1  -> K = 3
    return make_round(tmp_path / "data" / "review", "r1", [3, 2, 0, 1, 1])


def images_of(rd: Path) -> list[str]:
    return pd.read_csv(rd / "cases.csv", dtype=str)["image"].tolist()


def record(rd: Path) -> dict:
    return json.loads((rd / "cvat" / "tasks.json").read_text())


def server_tasks(server) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    with server.state.lock:
        for t in server.state.tasks.values():
            out.setdefault(t["name"], []).append(t["id"])
    return out


# ----------------------------------------------------------------------------------------------
# Configuration


def test_config_never_shows_secrets(fake):
    url = fake[0]
    cfg = make_config(url)
    tok = CvatConfig(url=url, token=TOKEN)
    for text in (repr(cfg), str(cfg), cfg.model_dump_json(), repr(tok), str(tok)):
        assert USERS["operator"] not in text and TOKEN not in text
    with pytest.raises(ValueError) as info:
        CvatConfig(url=url, password="hunter2-secret")
    assert "hunter2-secret" not in str(info.value) and "credentials missing" in str(info.value)
    with pytest.raises(ValueError, match="not in the url"):
        CvatConfig(url="http://u:p@127.0.0.1:1", token="t")
    env = {"BYU_CVAT_URL": url + "/", "BYU_CVAT_USER": "operator", "BYU_CVAT_PASSWORD": "x"}
    from_env = CvatConfig.from_env(env, status_check_period=0.5)
    assert (from_env.url, from_env.user, from_env.password.get_secret_value(), from_env.status_check_period) == \
        (url, "operator", "x", 0.5)
    with pytest.raises(InputError, match="BYU_CVAT_URL"):
        CvatConfig.from_env({})


def test_check_version_can_be_switched_off_from_the_environment(fake):
    base = {"BYU_CVAT_URL": fake[0], "BYU_CVAT_TOKEN": TOKEN}
    assert CvatConfig.from_env(base).check_server_version is True
    for off in ("0", "false", "No", " off "):
        assert CvatConfig.from_env(dict(base, BYU_CVAT_CHECK_VERSION=off)).check_server_version is False, off
    for on in ("1", "true", "YES", ""):
        assert CvatConfig.from_env(dict(base, BYU_CVAT_CHECK_VERSION=on)).check_server_version is True, on
    assert CvatConfig.from_env(dict(base, BYU_CVAT_CHECK_VERSION="0"),
                               check_server_version=True).check_server_version is True  # an override wins
    with pytest.raises(InputError, match="BYU_CVAT_CHECK_VERSION"):
        CvatConfig.from_env(dict(base, BYU_CVAT_CHECK_VERSION="maybe"))


@pytest.mark.parametrize("fake", [LEGACY_CVAT_VERSION], indirect=True)
def test_old_server_with_the_check_switched_off(fake, round_dir, caplog):
    caplog.set_level(logging.DEBUG, logger="byu.review.cvat")
    url, server = fake
    cfg = CvatConfig.from_env({"BYU_CVAT_URL": url, "BYU_CVAT_USER": "operator",
                               "BYU_CVAT_PASSWORD": USERS["operator"], "BYU_CVAT_CHECK_VERSION": "0"},
                              status_check_period=0.01)
    entries = push_round(round_dir, config=cfg, batch_size=2)
    assert [e["state"] for e in entries] == ["uploaded"] * 3
    assert len(pull_round(round_dir, config=cfg).exports) == 3
    assert server.count("GET", r"/api/server/about/?") == 0  # not even asked
    assert not [r for r in caplog.records if "version" in r.getMessage()]


def test_the_sdk_alone_cannot_read_an_old_servers_about():
    """Why connect() checks the version itself: the SDK's own check crashes on CVAT 2.23."""
    with start_fake_cvat(version=LEGACY_CVAT_VERSION) as (url, server):
        with pytest.raises(TypeError, match="logo_url"):
            Client(url)
        rc.connect(CvatConfig(url=url, user="admin", password="admin-pass")).close()


NOT_CVAT = {
    "html": (200, "text/html; charset=utf-8", b"<!doctype html><html><body>Welcome to nginx!</body></html>"),
    "404": (404, "text/html", b"<html><body><h1>404 Not Found</h1></body></html>"),
    "json without version": (200, "application/json", b'{"name": "some other service", "status": "ok"}'),
    "json list": (200, "application/json", b'["not", "an", "object"]'),
}


@pytest.mark.parametrize("reply", list(NOT_CVAT), ids=list(NOT_CVAT))
@pytest.mark.parametrize("auth", ["password", "token"])
def test_a_server_that_is_not_cvat_is_a_clear_error(fake, reply, auth, caplog):
    url, server = fake
    server.about_reply = NOT_CVAT[reply]
    cfg = make_config(url) if auth == "password" else CvatConfig(url=url, token=TOKEN, max_attempts=3)
    with pytest.raises(CvatError) as info:
        rc.connect(cfg)
    text = str(info.value)
    assert "does not look like a CVAT server" in text and url in text and "/api/server/about" in text
    for secret in ("Set-Cookie", "HTTPHeaderDict", "headers", USERS["operator"], TOKEN, "Traceback"):
        assert secret not in text and secret not in caplog.text
    shown = info.value.__cause__ or (None if info.value.__suppress_context__ else info.value.__context__)
    assert shown is None  # no SDK exception (its text holds response headers) rides along in a traceback
    assert server.count("POST", r"/api/auth/login/?") == 0  # credentials never sent
    assert server.count("GET", r"/api/server/about/?") == 2  # the SDK's try, then ours; not retried


@pytest.mark.parametrize("fake", [LEGACY_CVAT_VERSION], indirect=True)
def test_cli_on_an_old_server(fake, round_dir):
    """The issue: ``byu review push`` died with a TypeError on CVAT 2.23.1."""
    from byu.cli.review import app

    url, server = fake
    env = {"BYU_CVAT_URL": url, "BYU_CVAT_USER": "operator", "BYU_CVAT_PASSWORD": USERS["operator"]}
    common = ["--data-dir", str(round_dir.parents[1]), "--status-check-period", "0.01"]
    runner = CliRunner()
    res = runner.invoke(app, ["push", "r1", "--batch-size", "3", *common], env=env)
    assert res.exit_code == 0, res.output
    assert "r1-001" in res.output and "Traceback" not in res.output
    abouts = server.count("GET", r"/api/server/about/?")
    assert abouts >= 1
    res = runner.invoke(app, ["push", "r1", "--batch-size", "3", *common], env=dict(env, BYU_CVAT_CHECK_VERSION="no"))
    assert res.exit_code == 0, res.output
    assert server.count("GET", r"/api/server/about/?") == abouts  # the check was skipped
    assert server.count("POST", r"/api/tasks/?") == 2


@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)
def test_fake_jobs_errors_and_lists_behave_like_cvat(fake, config, round_dir):
    """The fake's job transitions, errors and pagination, as the real 2.23.1 server showed them."""
    from cvat_sdk.api_client.exceptions import ApiException

    url, server = fake
    push_round(round_dir, config=config, batch_size=2)
    with rc.cvat_client(config) as client:
        (job,) = client.tasks.retrieve(1).get_jobs()
        assert (job.state, job.stage, job.status) == ("new", "annotation", "annotation")
        job.update(models.PatchedJobWriteRequest(state="completed"))
        assert (job.state, job.stage, job.status) == ("completed", "annotation", "annotation")
        assert client.tasks.retrieve(1).status == "annotation"
        job.update(models.PatchedJobWriteRequest(stage="acceptance", state="completed"))
        assert (job.state, job.stage, job.status) == ("completed", "acceptance", "completed")
        assert client.tasks.retrieve(1).status == "completed"
        job.update(models.PatchedJobWriteRequest(stage="validation"))  # a new stage alone resets the state
        assert (job.state, job.stage, job.status) == ("new", "validation", "validation")
        assert client.tasks.retrieve(1).status == "validation"

        import urllib3  # the SDK refuses a bad state itself: send it raw, as a token user

        resp = urllib3.request("PATCH", f"{url}/api/jobs/{job.id}", json={"state": "bogus"},
                               headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status == 400 and resp.json() == {"state": ['"bogus" is not a valid choice.']}
        with pytest.raises(ApiException) as info:
            client.tasks.retrieve(999)
        assert info.value.status == 404
        assert json.loads(info.value.body) == {"detail": "No Task matches the given query."}

        page, _ = client.api_client.tasks_api.list(page_size=1)
        assert page.count == 3 and page.next.startswith(url + "/api/tasks?") and "page=2" in page.next
        assert len(client.tasks.list()) == 3  # the SDK walks the pages


def test_a_proxy_asking_for_credentials_is_named(fake):
    url, server = fake
    server.about_reply = (401, "text/html", b"<html>401 Authorization Required</html>")
    with pytest.raises(CvatError, match="proxy in front of it"):
        rc.connect(make_config(url))
    assert server.count("POST", r"/api/auth/login/?") == 0


def test_a_server_that_is_not_cvat_in_the_cli(fake, round_dir):
    from byu.cli.review import app

    url, server = fake
    server.about_reply = NOT_CVAT["html"]
    env = {"BYU_CVAT_URL": url, "BYU_CVAT_USER": "operator", "BYU_CVAT_PASSWORD": USERS["operator"]}
    res = CliRunner().invoke(app, ["push", "r1", "--data-dir", str(round_dir.parents[1])], env=env)
    assert res.exit_code == 2 and "does not look like a CVAT server" in res.output
    assert "Traceback" not in res.output and USERS["operator"] not in res.output


def test_wrong_password_is_a_clear_error_without_the_password(fake):
    with pytest.raises(CvatError) as info:
        rc.connect(make_config(fake[0], password="wrong-secret-pw"))
    assert "operator" in str(info.value) and "wrong-secret-pw" not in str(info.value)


def test_retries_are_bounded_and_only_for_transient_errors(fake):
    import urllib3
    from cvat_sdk.api_client.exceptions import ApiException

    cfg = make_config(fake[0], max_attempts=3)
    calls = []

    def flaky(exc):
        calls.append(1)
        raise exc

    for exc, attempts in ((urllib3.exceptions.ProtocolError("connection broken"), 3),
                          (ApiException(status=503), 3), (ApiException(status=429), 3),
                          (ApiException(status=400), 1), (ValueError("bug"), 1)):
        calls.clear()
        with pytest.raises(type(exc)):
            rc._retry(cfg, flaky, exc, what="test")
        assert len(calls) == attempts, exc


# ----------------------------------------------------------------------------------------------
# Full cycle


@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)
def test_full_cycle_push_tag_status_pull_decisions(fake, config, annotator, round_dir, caplog):
    """A whole round with the default config (version check on), on CVAT 2.80 and on CVAT 2.23.1
    (whose about answer cvat-sdk 2.80 cannot read: one warning, then the same round)."""
    caplog.set_level(logging.WARNING, logger="byu.review.cvat")
    url, server = fake
    assert config.check_server_version
    entries = push_round(round_dir, config=config, batch_size=2)
    again = push_round(round_dir, config=config, batch_size=2)  # re-push: no duplicates, no re-upload
    assert [e["id"] for e in again] == [e["id"] for e in entries]
    assert server.count("POST", r"/api/tasks/?") == 3
    assert server.count("POST", r"/api/tasks/\d+/data/?", header="Upload-Multiple") == 3
    assert all(len(ids) == 1 for ids in server_tasks(server).values())
    imgs = images_of(round_dir)
    assert [e["name"] for e in entries] == ["r1-001", "r1-002", "r1-003"]
    assert [e["images"] for e in entries] == [imgs[0:2], imgs[2:4], imgs[4:5]]
    for e in entries:
        assert server.frame_names(e["id"]) == e["images"]  # frames keep names and cases.csv order

    rec = record(round_dir)
    assert rec["labels"] == ["0", "1", "2", "3", "none", "unsure", "ok"]
    assert rec["project"]["name"] == f"r1-{data_root_id(round_dir)}" and rec["batch_size"] == 2
    with server.state.lock:
        labels = {lab["name"]: lab["type"] for lab in server.state.labels.values()}
    assert labels == {name: "tag" for name in rec["labels"]}

    # a human (simulated through the SDK) tags three of the five images
    tagged = {imgs[0]: ["3", "1"], imgs[1]: ["0"], imgs[3]: ["none"]}
    for e in entries:
        mine = {k: v for k, v in tagged.items() if k in e["images"]}
        if mine:
            tag_images_as_annotator(annotator, e["id"], mine, assignee="alice")

    status = round_status(round_dir, config=config)
    assert status[["task", "jobs", "new", "completed", "assignees", "remote"]].values.tolist() == [
        ["r1-001", 1, 0, 1, "alice", "ok"], ["r1-002", 1, 0, 1, "alice", "ok"], ["r1-003", 1, 1, 0, "", "ok"]]

    paths = pull_round(round_dir, config=config).exports
    assert [p.name for p in paths] == ["r1-001.xml", "r1-002.xml", "r1-003.xml"]
    assert not [p for p in (round_dir / "cvat").iterdir() if p.name.startswith(".")]  # no temp leftovers
    result = decisions_from_round(round_dir)
    assert result.errors == []
    write_decisions(result, round_dir / "decisions.csv")
    d = read_decisions(round_dir / "decisions.csv")
    assert d[["case_id", "image", "tags", "reviewer", "source"]].values.tolist() == [
        ["FN-0001", imgs[0], "1;3", "alice", "cvat:r1-001.xml"],
        ["FP-0002", imgs[1], "0", "alice", "cvat:r1-001.xml"],
        ["FP-0004", imgs[3], "none", "alice", "cvat:r1-002.xml"],
    ]
    assert record(round_dir)["tasks"][0]["job_assignee"] == "alice"

    # push, re-push, status, pull: four connections, each asked the version
    assert server.count("GET", r"/api/server/about/?") >= 4
    skipped = [r for r in caplog.records if SKIPPED_CHECK in r.getMessage()]
    if server.legacy:
        assert len(skipped) == 1 and skipped[0].levelno == logging.WARNING
        assert LEGACY_CVAT_VERSION in skipped[0].getMessage()
        # the server's own request ids, polled URL-encoded; the export fetched at 2.23's result_url
        assert ("GET", "/api/requests/create%3Atask-1") in server.raw_paths
        assert server.count("GET", r"/api/requests/export:task-1-annotations-in-CVAT_for_images_1@1-format-by-1") >= 1
        assert server.count("GET", r"/api/tasks/\d+/annotations/?") == 3
        assert server.count("GET", r"/api/tasks/\d+/dataset/download/?") == 0
        xml = (round_dir / "cvat" / "r1-001.xml").read_text()
        assert '<tag label="3" source="manual">\n' in xml and "/>" not in xml
    else:
        assert skipped == [] and not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert server.count("GET", r"/api/tasks/\d+/dataset/download/?") == 3


def test_token_auth_works(fake, round_dir):
    url, server = fake
    entries = push_round(round_dir, config=CvatConfig(url=url, token=TOKEN, status_check_period=0.01),
                         batch_size=10)
    assert len(entries) == 1 and server.count("POST", r"/api/auth/login/?") == 0


# ----------------------------------------------------------------------------------------------
# Idempotency and faults


def test_rerun_neither_duplicates_nor_reuploads(fake, config, round_dir):
    url, server = fake
    first = push_round(round_dir, config=config, batch_size=2)
    creates = server.count("POST", r"/api/tasks/?")
    uploads = server.count("POST", r"/api/tasks/\d+/data/?", header="Upload-Multiple")
    second = push_round(round_dir, config=config, batch_size=2)
    assert [e["id"] for e in second] == [e["id"] for e in first]
    assert server.count("POST", r"/api/tasks/?") == creates == 3
    assert server.count("POST", r"/api/tasks/\d+/data/?", header="Upload-Multiple") == uploads == 3
    assert server.count("POST", r"/api/projects/?") == 1
    assert all(len(ids) == 1 for ids in server_tasks(server).values())
    # a lost record is rebuilt from the server by task name
    (round_dir / "cvat" / "tasks.json").unlink()
    third = push_round(round_dir, config=config, batch_size=2)
    assert [e["id"] for e in third] == [e["id"] for e in first]
    assert server.count("POST", r"/api/tasks/?") == 3


def test_a_500_on_upload_is_retried_by_recreating_the_task(fake, config, round_dir):
    url, server = fake
    server.faults.upload_500 = 1
    entries = push_round(round_dir, config=config, batch_size=2)
    assert server.faults.upload_500 == 0
    tasks = server_tasks(server)
    assert sorted(tasks) == ["r1-001", "r1-002", "r1-003"] and all(len(v) == 1 for v in tasks.values())
    assert server.count("DELETE", r"/api/tasks/\d+/?") == 1  # the half-uploaded first task
    assert entries[0]["id"] == tasks["r1-001"][0] != 1
    for e in entries:
        assert server.frame_names(e["id"]) == e["images"]


def test_failed_processing_then_rerun_completes_the_round(fake, config, round_dir):
    url, server = fake
    server.faults.fail_processing = 1
    with pytest.raises(BackgroundRequestException):
        push_round(round_dir, config=make_config(url, max_attempts=1), batch_size=2)
    assert record(round_dir)["tasks"][0]["state"] == "created"
    broken = server.task_by_name("r1-001")
    assert len(broken) == 1 and broken[0]["data"] is not None and broken[0]["frames"] == []

    entries = push_round(round_dir, config=config, batch_size=2)
    tasks = server_tasks(server)
    assert all(len(v) == 1 for v in tasks.values()) and len(tasks) == 3
    assert tasks["r1-001"][0] != broken[0]["id"]  # deleted and recreated
    assert [e["state"] for e in entries] == ["uploaded"] * 3
    assert all(server.frame_names(e["id"]) == e["images"] for e in entries)


@pytest.mark.slow
@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)
def test_crash_between_task_creation_and_upload(fake, round_dir):
    url, server = fake
    server.faults.hang_upload_start = True
    env = dict(os.environ, BYU_CVAT_URL=url, BYU_CVAT_USER="operator", BYU_CVAT_PASSWORD=USERS["operator"],
               PYTHONPATH=str(REPO))
    code = ("from byu.review.cvat import CvatConfig, push_round; import sys; "
            "push_round(sys.argv[1], config=CvatConfig.from_env(status_check_period=0.01), batch_size=2)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(round_dir)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(server.events["upload_start"].is_set, timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    server.faults.hang_upload_start = False
    server.events["release"].set()

    created = server.task_by_name("r1-001")
    assert len(created) == 1 and created[0]["data"] is None  # created, no data: the process died in between
    entry = record(round_dir)["tasks"][0]
    assert (entry["name"], entry["state"], entry["id"]) == ("r1-001", "created", created[0]["id"])

    entries = push_round(round_dir, config=make_config(url), batch_size=2)
    assert entries[0]["id"] == created[0]["id"]  # the existing task got its data
    assert server.count("POST", r"/api/tasks/?") == 3 and server.count("DELETE", r"/api/tasks/\d+/?") == 0
    assert all(server.frame_names(e["id"]) == e["images"] for e in entries)


def test_dropped_connection_during_export_is_retried(fake, config, round_dir):
    url, server = fake
    push_round(round_dir, config=config, batch_size=10)
    server.faults.drop_export_download = 1
    paths = pull_round(round_dir, config=config).exports
    assert server.faults.drop_export_download == 0
    assert server.count("POST", r"/api/tasks/\d+/dataset/export/?") == 2  # one retry
    assert len(paths) == 1 and paths[0].read_bytes().startswith(b"<?xml")
    assert not [p for p in (round_dir / "cvat").iterdir() if p.name.startswith(".")]


def test_a_500_on_export_is_retried(fake, config, round_dir):
    url, server = fake
    push_round(round_dir, config=config, batch_size=10)
    server.faults.export_500 = 2
    assert len(pull_round(round_dir, config=config).exports) == 1


def test_changed_round_is_refused_without_touching_the_server(fake, config, round_dir):
    url, server = fake
    push_round(round_dir, config=config, batch_size=2)
    cases = pd.read_csv(round_dir / "cases.csv")
    cases.iloc[::-1].to_csv(round_dir / "cases.csv", index=False)  # same images, other batches
    with pytest.raises(CvatError, match="the round changed after it was pushed"):
        push_round(round_dir, config=config, batch_size=2)
    assert server.count("DELETE", r"/api/.*") == 0
    with pytest.raises(InputError, match="batch size 2"):
        push_round(round_dir, config=config, batch_size=3)


def test_missing_image_fails_before_contacting_the_server(fake, config, round_dir):
    url, server = fake
    (round_dir / "images" / images_of(round_dir)[2]).unlink()
    with pytest.raises(InputError, match="image file not found"):
        push_round(round_dir, config=config)
    assert server.calls == []


def test_existing_project_gets_missing_labels(fake, config, round_dir):
    """A project of this data root (the id in its name) that lacks some of the round's labels gets them."""
    url, server = fake
    name = rc.default_project_name(round_dir)  # makes the data root's id (<data root>/.byu-id)
    with rc.cvat_client(config) as client:
        client.projects.create(models.ProjectWriteRequest(
            name=name, labels=[models.PatchedLabelRequest(name=n, type="tag") for n in ("0", "none", "unsure")]))
    push_round(round_dir, config=config)
    with server.state.lock:
        names = sorted(lab["name"] for lab in server.state.labels.values())
    assert names == ["0", "1", "2", "3", "none", "ok", "unsure"]
    assert server.count("POST", r"/api/projects/?") == 1


# ----------------------------------------------------------------------------------------------
# Second review, status, zip guards, CLI


def test_unsure_cases_go_to_a_second_review(fake, config, annotator, round_dir):
    url, server = fake
    imgs = images_of(round_dir)
    (first,) = push_round(round_dir, config=config)
    tag_images_as_annotator(annotator, first["id"], {imgs[0]: ["unsure"], imgs[1]: ["1"], imgs[4]: ["unsure"]})
    pull_round(round_dir, config=config)
    write_decisions(decisions_from_round(round_dir), round_dir / "decisions.csv")

    review2 = push_second_review(round_dir, config=config)
    assert [(e["name"], e["images"]) for e in review2] == [("r1-review2-001", [imgs[0], imgs[4]])]
    assert push_second_review(round_dir, config=config)[0]["id"] == review2[0]["id"]  # idempotent
    assert server.count("POST", r"/api/tasks/?") == 2
    with server.state.lock:
        assert {t["project_id"] for t in server.state.tasks.values()} == {1}

    tag_images_as_annotator(annotator, review2[0]["id"], {imgs[0]: ["2"]}, assignee="alice")
    pull_round(round_dir, config=config)
    result = decisions_from_round(round_dir)
    assert result.errors == []
    assert result.decisions[["case_id", "tags", "source"]].values.tolist() == [
        ["FN-0001", "2", "cvat:r1-review2-001.xml"],  # second review replaces 'unsure'
        ["FP-0002", "1", "cvat:r1-001.xml"],
        ["FN-0005", "unsure", "cvat:r1-001.xml"],  # not yet reviewed again
    ]


def test_task_level_tags_reach_the_export(fake, config, annotator, round_dir):
    from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction

    imgs = images_of(round_dir)
    (entry,) = push_round(round_dir, config=config)
    task = annotator.tasks.retrieve(entry["id"])
    label = {lab.name: lab.id for lab in task.get_labels()}
    task.update_annotations(models.PatchedLabeledDataRequest(tags=[
        models.LabeledImageRequest(frame=entry["images"].index(imgs[4]), label_id=label["1"], source="manual",
                                   attributes=[])]), action=AnnotationUpdateAction.CREATE)
    assert [t.label_id for t in task.get_annotations().tags] == [label["1"]]
    report = pull_round(round_dir, config=config)  # the job is not completed: its tags are left out, and said so
    assert report.written and report.result.decisions.empty and report.result.left_out == ["FN-0005"]
    assert record(round_dir)["tasks"][0]["jobs"][0]["state"] == "new"
    pull_round(round_dir, config=config, include_incomplete=True)
    assert decisions_from_round(round_dir, include_incomplete=True).decisions[["case_id", "tags", "job_state"]] \
        .values.tolist() == [["FN-0005", "1", "new"]]


def test_status_reports_tasks_deleted_on_the_server(fake, config, round_dir):
    url, server = fake
    entries = push_round(round_dir, config=config, batch_size=3)
    with rc.cvat_client(config) as client:
        client.tasks.retrieve(entries[1]["id"]).remove()
        (job,) = client.tasks.retrieve(entries[0]["id"]).get_jobs()
        job.update(models.PatchedJobWriteRequest(state="in progress"))
    status = round_status(round_dir, config=config)
    assert status[["task", "remote", "jobs", "new", "in progress", "completed"]].values.tolist() == [
        ["r1-001", "ok", 1, 0, 1, 0], ["r1-002", "missing", 0, 0, 0, 0]]


def test_export_zip_guards(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations.xml", b"<a>" + b" " * 5000 + b"</a>")
    with pytest.raises(InputError, match="more than the 1000-byte limit"):
        rc._annotations_from_zip(bomb, 1000)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("../annotations.xml", b"<a/>")
    with pytest.raises(CvatError, match="no annotations.xml"):
        rc._annotations_from_zip(other, 1000)
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(CvatError, match="not a zip"):
        rc._annotations_from_zip(junk, 1000)


def test_cli_push_status_pull_import(fake, annotator, round_dir, tmp_path):
    from byu.cli.review import app

    url, server = fake
    data_dir = round_dir.parents[1]
    env = {"BYU_CVAT_URL": url, "BYU_CVAT_USER": "operator", "BYU_CVAT_PASSWORD": USERS["operator"]}
    runner = CliRunner()
    common = ["--data-dir", str(data_dir)]

    res = runner.invoke(app, ["push", "r1", "--batch-size", "3", "--status-check-period", "0.01", *common], env=env)
    assert res.exit_code == 0, res.output
    assert "r1-001" in res.output and "r1-002" in res.output and USERS["operator"] not in res.output

    imgs = images_of(round_dir)
    task_id = record(round_dir)["tasks"][0]["id"]
    tag_images_as_annotator(annotator, task_id, {imgs[0]: ["1"], imgs[1]: ["0", "none"]})

    res = runner.invoke(app, ["status", "r1", *common], env=env)
    assert res.exit_code == 0 and "1/2 jobs completed" in res.output

    res = runner.invoke(app, ["pull", "r1", "--status-check-period", "0.01", *common], env=env)
    assert res.exit_code == 1 and "contradictory" in res.output
    assert not (round_dir / "decisions.csv").exists()
    res = runner.invoke(app, ["pull", "r1", "--allow-errors", "--status-check-period", "0.01", *common], env=env)
    assert res.exit_code == 0, res.output
    assert read_decisions(round_dir / "decisions.csv")["case_id"].tolist() == ["FN-0001"]

    outside = tmp_path / "outside.csv"
    outside.write_text("case_id,tags,reviewer\nFN-0001,0,hal\nFP-0002,2,hal\n")
    res = runner.invoke(app, ["import", "r1", str(outside), *common])
    assert res.exit_code == 2 and "already has other decisions" in res.output  # never replaced silently
    assert read_decisions(round_dir / "decisions.csv")["case_id"].tolist() == ["FN-0001"]
    res = runner.invoke(app, ["import", "r1", str(outside), "--replace", *common])
    assert res.exit_code == 0, res.output
    assert read_decisions(round_dir / "decisions.csv")["tags"].tolist() == ["0", "2"]

    outside.write_text("case_id,tags\nFN-0001,9\n")
    res = runner.invoke(app, ["import", "r1", str(outside), *common])
    assert res.exit_code == 1 and "candidate 9" in res.output

    res = runner.invoke(app, ["push", "../etc", *common], env=env)
    assert res.exit_code == 2 and "not allowed" in res.output


@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)
def test_a_multiclass_round_through_cvat(fake, config, annotator, tmp_path):
    """Ribosomes and apo-ferritin: mined per class into single cases and galleries, pushed with the per-candidate
    class tags and the gallery tags, tagged by a person (``0:apo-ferritin`` where the label has another class,
    ``x<k>`` on a gallery crop that is no particle), pulled, applied: the new version is the truth, the relabel
    recorded."""
    from byu.labels.store import LabelStore
    from byu.review.round import CvatReviewer, ReviewRound
    from byu.review.scripted import scripted_decisions
    from byu.review.settings import MiningSettings
    from byu.review.tags import split_tags

    url, server = fake
    truth, noisy, preds = multiclass_world()
    root, _ = round_root(tmp_path, noisy, preds)
    rnd = ReviewRound(root, "mc1")
    cases = rnd.mine(labels_version="gt", predictions=root.predictions / "oof.csv",
                     settings=MiningSettings(verify=False)).cases
    assert {c.kind for c in cases} == {"FN", "GL", "GP"}
    write_images(rnd.paths.images, [c.image for c in cases])
    reviewer = CvatReviewer(config=config, batch_size=2)
    assert "CVAT task(s)" in rnd.start_review(reviewer)
    rec = record(rnd.paths.dir)
    assert set(rec["labels"]) >= {"0:apo-ferritin", "1:ribosome", "x1", "0", "none", "unsure", "ok"}
    with server.state.lock:
        assert {lab["name"] for lab in server.state.labels.values()} == set(rec["labels"])

    # the person tags what is true (the scripted reviewer's answers, clicked through the SDK)
    answers = scripted_decisions(cases, truth, labeled=noisy)
    tagged = {c.image: split_tags(t) for c, t in zip(cases, answers.tags, strict=True)}
    assert ["0:apo-ferritin"] in tagged.values()
    assert any(t.startswith("x") for tags in tagged.values() for t in tags)  # a gallery crop that is no particle
    known = [k for c in cases if c.is_gallery for k in c.candidates if k.known]
    assert known  # known-answer items are mixed in and, applied, change nothing (the version below is the truth)
    for e in rec["tasks"]:
        tag_images_as_annotator(annotator, e["id"], {k: v for k, v in tagged.items() if k in e["images"]},
                                assignee="alice")
    assert rnd.review_finished(reviewer)
    result = rnd.collect_review(reviewer)
    assert result.errors == [] and len(result.decisions) == len(cases)
    manifest, applied = rnd.apply(from_version="gt", to_version="gt_v2")
    got = {(r.tomo_id, r.particle, r.z, r.y, r.x) for r in LabelStore(root.labels).get("gt_v2").picks.itertuples()}
    assert got == {(r.tomo_id, r.particle, float(r.z), float(r.y), float(r.x)) for r in truth.picks.itertuples()}
    changes = LabelStore(root.labels).changes("gt_v2")
    assert sorted(changes[changes.action != "keep"].action) == ["add", "move", "relabel", "remove"]
    assert set(changes.reviewer) == {"alice"}


# ----------------------------------------------------------------------------------------------
# What a real CVAT 2.23.1 server showed (issue #27, item 16)


def data_root_id(rd: Path) -> str:
    """The short id of the data root holding round ``rd`` (``<root>/.byu-id``, made by the first push)."""
    import uuid

    return uuid.UUID((rd.parents[1] / ".byu-id").read_text(encoding="utf-8").strip()).hex[:8]


def project_labels(server, project_id: int) -> list[str]:
    with server.state.lock:
        return sorted(lab["name"] for lab in server.state.labels.values() if lab["project_id"] == project_id)


@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)
def test_fake_negotiates_content_like_cvat(fake):
    """CVAT's only renderer is application/vnd.cvat+json: ``Accept: application/json`` alone is a 406, on about as
    on every API endpoint, and before authentication."""
    import urllib3

    url, server = fake
    with urllib3.PoolManager(retries=False) as http:
        for path in ("/api/server/about", "/api/tasks", "/api/auth/login"):
            resp = http.request("GET" if "login" not in path else "POST", url + path,
                                headers={"Accept": "application/json"})
            assert resp.status == 406, path
            assert json.loads(resp.data) == {"detail": "Could not satisfy the request Accept header."}
        for accept in ("application/vnd.cvat+json", "*/*", "application/*",
                       "text/html, application/vnd.cvat+json; version=2.0", None):
            resp = http.request("GET", url + "/api/server/about", headers={"Accept": accept} if accept else {})
            assert resp.status == 200, accept
            assert resp.headers["Content-Type"] == "application/vnd.cvat+json"
            assert json.loads(resp.data)["version"] == server.version
        assert http.request("GET", url + "/api/tasks", headers={"Accept": "*/*"}).status == 401


@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)
def test_own_version_read_sends_an_accept_cvat_renders(fake):
    url, server = fake
    assert rc._raw_about(make_config(url))["version"] == server.version
    rc.connect(make_config(url)).close()  # the default path: version check on


@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)
def test_wrong_credentials_are_named_not_hidden_by_a_406(fake, round_dir):
    from byu.cli.review import app

    url, server = fake
    with pytest.raises(CvatError) as info:
        rc.connect(make_config(url, password="wrong-secret-pw"))
    text = str(info.value)
    assert "refused the credentials of user 'operator' (HTTP 400" in text, text
    assert "Unable to log in with provided credentials" in text
    # the URL carries a random port, which may itself contain "406"
    assert "406" not in text.replace(url, "<url>") and "does not look like" not in text
    assert "wrong-secret-pw" not in text
    with pytest.raises(CvatError, match=r"refused the access token \(HTTP 401: Invalid token"):
        rc.connect(CvatConfig(url=url, token="not-the-token", max_attempts=2))

    env = {"BYU_CVAT_URL": url, "BYU_CVAT_USER": "operator", "BYU_CVAT_PASSWORD": "wrong-secret-pw"}
    res = CliRunner().invoke(app, ["push", "r1", "--data-dir", str(round_dir.parents[1])], env=env)
    assert res.exit_code == 2 and "refused the credentials" in res.output, res.output
    assert "Traceback" not in res.output and "wrong-secret-pw" not in res.output
    assert not (round_dir / "cvat").exists()  # nothing stored


@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)
def test_repush_completes_a_task_created_without_data(fake, config, round_dir):
    """A push that died between creating a task and uploading its data: on CVAT 2.23 such a task has no ``size``
    and no ``data`` (the SDK raised ApiAttributeError on ``task.size``); status and a re-push handle it."""
    from cvat_sdk.api_client.exceptions import ApiException

    url, server = fake
    server.faults.upload_start_500 = 1
    with pytest.raises(ApiException):
        push_round(round_dir, config=make_config(url, max_attempts=1), batch_size=2)
    (created,) = server.task_by_name("r1-001")
    assert created["data"] is None
    with rc.cvat_client(config) as client:
        _, resp = client.api_client.tasks_api.retrieve(created["id"], _parse_response=False)
        raw = json.loads(resp.data)
    if server.legacy:
        assert "size" not in raw and "data" not in raw
    else:
        assert (raw["size"], raw["data"]) == (0, None)
    assert round_status(round_dir, config=config)[["task", "remote"]].values.tolist() == [["r1-001", "no data"]]

    entries = push_round(round_dir, config=config, batch_size=2)
    assert entries[0]["id"] == created["id"]  # the existing task got its data
    assert server.count("POST", r"/api/tasks/?") == 3 and server.count("DELETE", r"/api/tasks/\d+/?") == 0
    assert [e["state"] for e in entries] == ["uploaded"] * 3
    assert all(server.frame_names(e["id"]) == e["images"] for e in entries)


def _reopen(client, task_id: int, state: str = "in progress") -> None:
    for job in client.tasks.retrieve(task_id).get_jobs():
        job.update(models.PatchedJobWriteRequest(state=state))


@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)
def test_a_pull_never_silently_drops_decisions(fake, config, annotator, round_dir):
    """A pull while jobs are in progress again (reopened) kept nothing: decisions.csv went from 5 rows to 0. Now a
    decision whose job is not completed now is kept from the previous pull (and reported); a decision a person
    took back in a completed job (the image untagged) is dropped, and reported."""
    from byu.cli.review import app

    url, server = fake
    imgs = images_of(round_dir)
    entries = push_round(round_dir, config=config, batch_size=2)
    tagged = {imgs[0]: ["1"], imgs[1]: ["0"], imgs[2]: ["none"], imgs[3]: ["1"], imgs[4]: ["0"]}
    for e in entries:
        tag_images_as_annotator(annotator, e["id"], {k: v for k, v in tagged.items() if k in e["images"]},
                                assignee="alice")
    first = pull_round(round_dir, config=config)
    assert len(first.result.decisions) == 5
    before = (round_dir / "decisions.csv").read_bytes()
    case_ids = read_decisions(round_dir / "decisions.csv")["case_id"].tolist()

    for e in entries:  # every job reopened: the pull collects nothing
        _reopen(annotator, e["id"])
    env = {"BYU_CVAT_URL": url, "BYU_CVAT_USER": "operator", "BYU_CVAT_PASSWORD": USERS["operator"]}
    res = CliRunner().invoke(app, ["pull", "r1", "--status-check-period", "0.01", "--data-dir",
                                   str(round_dir.parents[1])], env=env)
    assert res.exit_code == 0, res.output
    assert (round_dir / "decisions.csv").read_bytes() == before  # was: the header alone
    assert first.changed and first.kept == [] and first.withdrawn == []
    assert "kept 5 decision(s) from the previous decisions.csv" in res.output and "decisions.csv unchanged" in res.output
    report = pull_round(round_dir, config=config)
    assert report.written and not report.changed and report.kept == case_ids
    assert report.result.decisions["case_id"].tolist() == case_ids

    # r1-001: imgs[0] re-tagged and completed; r1-002 still in progress; r1-003: the tag taken back, completed
    job1 = annotator.tasks.retrieve(entries[0]["id"]).get_jobs()[0]
    job1.remove_annotations(ids=[t.id for t in job1.get_annotations().tags if t.frame == 0])
    tag_images_as_annotator(annotator, entries[0]["id"], {imgs[0]: ["2"]})
    job3 = annotator.tasks.retrieve(entries[2]["id"]).get_jobs()[0]
    job3.remove_annotations(ids=[t.id for t in job3.get_annotations().tags])
    _reopen(annotator, entries[2]["id"], "completed")
    report = pull_round(round_dir, config=config)
    assert report.changed and report.kept == case_ids[2:4] and report.withdrawn == [case_ids[4]]
    d = read_decisions(round_dir / "decisions.csv")
    assert d[["case_id", "tags", "job_state"]].values.tolist() == [
        [case_ids[0], "2", "completed"], [case_ids[1], "0", "completed"],
        [case_ids[2], "none", "completed"], [case_ids[3], "1", "completed"]]  # the kept two as pulled before


@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)
def test_a_first_pull_of_jobs_in_progress_keeps_decisions_made_elsewhere(fake, config, annotator, round_dir):
    """decisions.csv imported by hand (or from an earlier pull with --include-incomplete) is not emptied by a pull
    that collects nothing."""
    imgs = images_of(round_dir)
    (entry,) = push_round(round_dir, config=config)
    tag_images_as_annotator(annotator, entry["id"], {imgs[0]: ["1"], imgs[1]: ["2"]}, complete=False)
    assert len(pull_round(round_dir, config=config, include_incomplete=True).result.decisions) == 2
    before = (round_dir / "decisions.csv").read_bytes()
    report = pull_round(round_dir, config=config)
    assert (round_dir / "decisions.csv").read_bytes() == before
    assert report.kept == ["FN-0001", "FP-0002"] and not report.changed


def test_a_reopened_second_review_keeps_its_decision(fake, config, annotator, round_dir):
    """A second-review job reopened: its decision stands over the first review's 'unsure' until it is completed
    again (the pull took 'unsure' back)."""
    imgs = images_of(round_dir)
    (first,) = push_round(round_dir, config=config)
    tag_images_as_annotator(annotator, first["id"], {imgs[0]: ["unsure"], imgs[1]: ["1"]})
    pull_round(round_dir, config=config)
    (review2,) = push_second_review(round_dir, config=config)
    tag_images_as_annotator(annotator, review2["id"], {imgs[0]: ["2"]})
    pull_round(round_dir, config=config)
    decided = read_decisions(round_dir / "decisions.csv")[["case_id", "tags", "source"]].values.tolist()
    assert decided == [["FN-0001", "2", "cvat:r1-review2-001.xml"], ["FP-0002", "1", "cvat:r1-001.xml"]]
    _reopen(annotator, review2["id"])
    report = pull_round(round_dir, config=config)
    assert read_decisions(round_dir / "decisions.csv")[["case_id", "tags", "source"]].values.tolist() == decided
    assert report.kept == ["FN-0001"] and not report.changed
    _reopen(annotator, review2["id"], "completed")
    assert pull_round(round_dir, config=config).kept == []


@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)
def test_rounds_of_two_data_roots_never_meet_on_one_server(fake, config, tmp_path):
    url, server = fake
    a = make_round(tmp_path / "a" / "review", "round1", [3, 2, 0, 1, 1])
    b = make_round(tmp_path / "b" / "review", "round1", [5, 1], seed=1)  # other cases, tags 0..5
    ea = push_round(a, config=config, batch_size=2)
    a_labels = project_labels(server, record(a)["project"]["id"])
    eb = push_round(b, config=config, batch_size=2)  # was: found a's project 'round1', added labels, then refused
    ra, rb = record(a), record(b)
    assert ra["project"]["id"] != rb["project"]["id"]
    assert project_labels(server, ra["project"]["id"]) == a_labels == sorted(ra["labels"])  # no "4"/"5" from b
    assert project_labels(server, rb["project"]["id"]) == sorted(rb["labels"])
    assert data_root_id(a) != data_root_id(b)
    assert ra["project"]["name"] == f"round1-{data_root_id(a)}" and rb["project"]["name"] == f"round1-{data_root_id(b)}"
    for entries, rec in ((ea, ra), (eb, rb)):
        with server.state.lock:
            assert {server.state.tasks[e["id"]]["project_id"] for e in entries} == {rec["project"]["id"]}
        assert all(server.frame_names(e["id"]) == e["images"] for e in entries)
    ids = (a.parents[1] / ".byu-id").read_text()
    assert [e["id"] for e in push_round(a, config=config, batch_size=2)] == [e["id"] for e in ea]
    (a / "cvat" / "tasks.json").unlink()  # a lost record: found again by the name, which holds the id
    assert [e["id"] for e in push_round(a, config=config, batch_size=2)] == [e["id"] for e in ea]
    assert (a.parents[1] / ".byu-id").read_text() == ids and server.count("POST", r"/api/projects/?") == 2


@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)
def test_a_project_of_another_data_root_is_refused_before_any_change(fake, config, tmp_path):
    url, server = fake
    a = make_round(tmp_path / "a" / "review", "round1", [3, 2])
    b = make_round(tmp_path / "b" / "review", "round1", [5, 1], seed=1)
    push_round(a, config=config)
    a_project = record(a)["project"]
    a2 = make_round(tmp_path / "a" / "review", "round2", [1])
    push_round(a2, config=config, project_name="lab-round2")  # a name without the data root's id
    labels = {p: project_labels(server, p) for p in (1, 2)}
    calls = len(server.calls)
    for name, pid in ((a_project["name"], a_project["id"]), ("lab-round2", 2)):
        with pytest.raises(CvatError) as info:
            push_round(b, config=config, project_name=name)
        text = str(info.value)
        assert f"CVAT project {name!r} (id {pid})" in text and "not made by this data root" in text, text
        assert not (b / "cvat").exists()  # no tasks.json pointing there
    from byu.cli.review import app

    env = {"BYU_CVAT_URL": url, "BYU_CVAT_USER": "operator", "BYU_CVAT_PASSWORD": USERS["operator"]}
    res = CliRunner().invoke(app, ["push", "round1", "--project-name", "lab-round2", "--data-dir",
                                   str(b.parents[1])], env=env)
    assert res.exit_code == 2 and "not made by this data root" in res.output and "Traceback" not in res.output
    assert not (b / "cvat").exists()
    assert {p: project_labels(server, p) for p in (1, 2)} == labels
    assert not [c for c in server.calls[calls:] if c[0] != "GET" and "/auth/" not in c[1]]  # only reads
    # the data root that made it goes on using it (its record says so)
    assert push_round(a2, config=config)[0]["id"] == record(a2)["tasks"][0]["id"]
    assert record(a2)["project"] == {"id": 2, "name": "lab-round2"}


@pytest.mark.parametrize("fake", CVAT_VERSIONS, indirect=True)
def test_a_task_deleted_on_the_server_is_named(fake, config, round_dir):
    from byu.cli.review import app

    url, server = fake
    entries = push_round(round_dir, config=config, batch_size=3)
    pull_round(round_dir, config=config)
    kept = {p.name: p.read_bytes() for p in (round_dir / "cvat").iterdir() if p.is_file()}
    kept["decisions.csv"] = (round_dir / "decisions.csv").read_bytes()
    with rc.cvat_client(config) as client:
        client.tasks.retrieve(entries[1]["id"]).remove()
    with pytest.raises(CvatError) as info:
        pull_round(round_dir, config=config)
    text = str(info.value)
    assert f"CVAT task 'r1-002' (id {entries[1]['id']}) is gone from the server" in text, text
    assert "push again" in text and "annotations" in text
    env = {"BYU_CVAT_URL": url, "BYU_CVAT_USER": "operator", "BYU_CVAT_PASSWORD": USERS["operator"]}
    res = CliRunner().invoke(app, ["pull", "r1", "--status-check-period", "0.01", "--data-dir",
                                   str(round_dir.parents[1])], env=env)
    assert res.exit_code == 2 and "'r1-002'" in res.output and "after retries" not in res.output, res.output
    assert "Traceback" not in res.output
    now = {p.name: p.read_bytes() for p in (round_dir / "cvat").iterdir() if p.is_file()}
    now["decisions.csv"] = (round_dir / "decisions.csv").read_bytes()
    assert now == kept  # nothing stored changed
    again = push_round(round_dir, config=config, batch_size=3)
    assert again[0]["id"] == entries[0]["id"] and again[1]["id"] != entries[1]["id"]
    assert pull_round(round_dir, config=config).written

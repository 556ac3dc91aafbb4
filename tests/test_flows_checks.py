"""Issue #27 items 17-20: the round flows check their form before any heavy work (reviewer, target versions,
round name), a paused review waits again when resumed too early and after a retry, splits say whether they were
written, every form field has a title and a description, and the train flow leaves a table of its folds."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from byu.errors import InputError, VersionExistsError
from byu.labels.store import LabelStore
from byu.paths import DataRoot
from byu.review.settings import MiningSettings, WaitSettings
from flows.base import ReviewSettings

FAINT = MiningSettings(fp_threshold=None)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ 17: the reviewer


def test_cvat_reviewer_without_a_server_names_the_field(tmp_path, monkeypatch):
    from flows.checks import review_problems

    monkeypatch.delenv("BYU_CVAT_URL", raising=False)
    ok, problems = review_problems(str(tmp_path), "r1", ReviewSettings(reviewer="cvat"))
    assert not ok and len(problems) == 1
    assert str(problems[0]).startswith("'CVAT URL' (review.cvat_url): no CVAT server configured")
    assert problems[0].field == "review.cvat_url"


@pytest.mark.slow
def test_cvat_reviewer_unreachable_or_refusing_fails_in_seconds(tmp_path, monkeypatch):
    from flows.checks import review_problems
    from tests.fakes.cvat import start_fake_cvat

    monkeypatch.setenv("BYU_CVAT_USER", "operator")
    monkeypatch.setenv("BYU_CVAT_PASSWORD", "wrong")
    started = time.monotonic()
    _, problems = review_problems(str(tmp_path), "r1", ReviewSettings(
        reviewer="cvat", cvat_url=f"http://127.0.0.1:{_closed_port()}"))
    assert time.monotonic() - started < 20
    assert len(problems) == 1 and str(problems[0]).startswith("'CVAT URL' (review.cvat_url): cannot reach")
    with start_fake_cvat(users={"operator": "op-secret"}) as (url, _server):
        _, problems = review_problems(str(tmp_path), "r1", ReviewSettings(reviewer="cvat", cvat_url=url))
        assert len(problems) == 1 and "refused the credentials of user 'operator'" in str(problems[0])
        assert "wrong" not in str(problems[0])
        monkeypatch.setenv("BYU_CVAT_PASSWORD", "op-secret")
        ok, problems = review_problems(str(tmp_path), "r1", ReviewSettings(reviewer="cvat", cvat_url=url))
        assert not problems and "answers and takes the credentials" in ok[0]
    monkeypatch.delenv("BYU_CVAT_PASSWORD")
    _, problems = review_problems(str(tmp_path), "r1", ReviewSettings(reviewer="cvat", cvat_url="http://x:1"))
    assert len(problems) == 1 and "credentials missing" in str(problems[0])


def test_scripted_and_import_reviewers_are_checked(tmp_path, small_table):
    from flows.checks import review_problems

    LabelStore(DataRoot(tmp_path).labels).put("truth", small_table, producer="test")
    _, problems = review_problems(str(tmp_path), "r1", ReviewSettings(reviewer="scripted"))
    assert str(problems[0]).startswith("'Truth labels (scripted)' (review.truth): the scripted reviewer")
    _, problems = review_problems(str(tmp_path), "r1", ReviewSettings(reviewer="scripted", truth="nope.csv"))
    assert str(problems[0]).startswith("'Truth labels (scripted)' (review.truth): cannot read the truth table")
    ok, problems = review_problems(str(tmp_path), "r1", ReviewSettings(reviewer="scripted", truth="truth"))
    assert not problems and "3 pick(s)" in ok[0]

    ok, problems = review_problems(str(tmp_path), "r1", ReviewSettings(reviewer="import"))
    assert not problems and "can be written" in ok[0]  # review/r1/outside_decisions.csv, its folder to be made
    (tmp_path / "blocker").write_text("a file")
    _, problems = review_problems(str(tmp_path), "r1", ReviewSettings(reviewer="import",
                                                                     decisions_csv="blocker/sub/d.csv"))
    assert str(problems[0]).startswith("'Decisions CSV (import)' (review.decisions_csv): the decisions CSV cannot")
    (tmp_path / "d.csv").mkdir()
    _, problems = review_problems(str(tmp_path), "r1", ReviewSettings(reviewer="import", decisions_csv="d.csv"))
    assert "is a folder, not a decisions CSV" in str(problems[0])
    _, problems = review_problems(str(tmp_path), "r1", ReviewSettings(
        reviewer="import", wait=WaitSettings(mode="suspend")))
    assert str(problems[0]).startswith("'How to wait for people' (review.wait.mode): suspend needs a run from a "
                                       "deployment")


def test_an_existing_target_version_names_its_field(tmp_path, small_table):
    from flows.checks import ExistingTargetError, review_problems, target_versions
    from flows.round1 import Round1Params
    from flows.round2 import Round2Params

    store = LabelStore(DataRoot(tmp_path).labels)
    store.put("gt_v2", small_table, producer="someone else")
    review = ReviewSettings(reviewer="import")
    params = Round1Params(data_dir=str(tmp_path))
    _, problems = review_problems(str(tmp_path), "round1", review, target_versions(params, "to_version"))
    assert len(problems) == 1 and isinstance(problems[0], ExistingTargetError)
    assert isinstance(problems[0], VersionExistsError) and isinstance(problems[0], InputError)
    assert str(problems[0]).startswith("'New label version' (to_version): label version 'gt_v2' already exists")
    # a version this round made (a rerun after a crash) is fine
    store.put("gt_v3", small_table, producer="prefect flow round2", extra={"round": "round2"})
    p2 = Round2Params(data_dir=str(tmp_path), to_version="gt_v3")
    ok, problems = review_problems(str(tmp_path), "round2", review, target_versions(p2, "to_version"))
    assert not problems
    # the combined version is checked only when it will be made (its other part exists)
    store.put("all_gt_v3", small_table, producer="someone else")
    combined = target_versions(p2, "all_version", made_of=[p2.external_version])
    assert not review_problems(str(tmp_path), "round2", review, combined)[1]
    store.put("external_gt", small_table, producer="someone else")
    _, problems = review_problems(str(tmp_path), "round2", review, combined)
    assert str(problems[0]).startswith("'Combined version' (all_version): label version 'all_gt_v3' already")


def test_check_task_lists_every_problem(tmp_path, small_table, monkeypatch):
    from byu.errors import InputErrors
    from flows.checks import check_review_ready, target_versions
    from flows.round1 import Round1Params

    monkeypatch.delenv("BYU_CVAT_URL", raising=False)
    LabelStore(DataRoot(tmp_path).labels).put("gt_v2", small_table, producer="someone else")
    params = Round1Params(data_dir=str(tmp_path))
    with pytest.raises(InputErrors, match="2 problem") as err:
        check_review_ready.fn(str(tmp_path), "round1", params.review, target_versions(params, "to_version"))
    assert {e.field for e in err.value.errors} == {"review.cvat_url", "to_version"}


# ------------------------------------------------------------------------------------------ 19: round names


@pytest.mark.parametrize("name", ["", "   ", "a/b", "..", " round1"])
def test_round_names_are_ids_and_never_empty(name):
    from flows.external import ExternalParams
    from flows.round1 import Round1Params
    from flows.round2 import Round2Params

    for model in (Round1Params, Round2Params, ExternalParams):
        with pytest.raises(ValidationError, match=r"'Round name' \(round_name\)"):
            model(round_name=name)
    assert Round1Params(round_name="round1b").round_name == "round1b"


@pytest.mark.slow
def test_splits_say_whether_this_run_wrote_them(micro_root: Path):
    from flows.artifacts import result_markdown
    from flows.common import splits_task

    first = splits_task.fn(str(micro_root), "gt", "v9", [2], 42)
    assert [Path(p).name for p in first["splits"]] == ["skf2_rd42.json"] and first["splits_written"] == first["splits"]
    again = splits_task.fn(str(micro_root), "gt", "v9", [2], 42)
    assert again["splits"] == first["splits"] and again["splits_written"] == []
    text = result_markdown(str(micro_root), again, title="t")
    assert "Splits already there (identical, nothing written)" in text and "Splits written" not in text
    assert "Splits written" in result_markdown(str(micro_root), first, title="t")


# ------------------------------------------------------------------------------------------ 20: form text


def _properties(node, definitions, path, seen):
    """Every (path, property) of a JSON schema, through $ref, anyOf/allOf and array items."""
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if ref:
        name = ref.split("/")[-1]
        if name not in seen:
            yield from _properties(definitions[name], definitions, f"{path}<{name}>", seen | {name})
    for key in ("anyOf", "allOf", "oneOf"):
        for sub in node.get(key) or []:
            yield from _properties(sub, definitions, path, seen)
    if isinstance(node.get("items"), dict):
        yield from _properties(node["items"], definitions, f"{path}[]", seen)
    for name, prop in (node.get("properties") or {}).items():
        yield f"{path}.{name}", prop
        yield from _properties(prop, definitions, f"{path}.{name}", seen)


def test_every_form_field_has_a_title_and_a_description_that_shows():
    from flows import serve as serve_mod

    for d in serve_mod.build_deployments():
        schema = d._parameter_openapi_schema.model_dump_for_openapi()
        top = schema["properties"]["params"]
        assert top["title"] != "params" and top.get("description"), (d.name, top)
        props = list(_properties(schema, schema.get("definitions", {}), d.name, frozenset()))
        assert len(props) > 5
        for path, prop in props:
            assert prop.get("title"), f"{path}: no title"
            assert prop.get("description"), f"{path}: no description"
            # the UI renders descriptions as markdown: a bare <tag> is dropped; inside backticks it shows
            assert "<" not in re.sub(r"`[^`]*`", "", prop["description"]), f"{path}: {prop['description']!r}"
        if d.name != "train":  # the form asks for a round name (the UI drops an emptied field)
            params = next(v for k, v in schema["definitions"].items() if k.endswith("Params"))
            assert "round_name" in params["required"] and params["properties"]["round_name"]["minLength"] == 1


# ------------------------------------------------------------------------------------------ flows (Prefect)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_round1_with_cvat_and_no_server_fails_in_its_first_task(micro_root: Path, monkeypatch):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.round1 import Round1Params, round1

    monkeypatch.delenv("BYU_CVAT_URL", raising=False)
    params = Round1Params(data_dir=str(micro_root), model_dirs=[str(micro_root / "models" / "round1")],
                          split_folds=[2], review=ReviewSettings(reviewer="cvat", mining=FAINT))
    state = round1(params, return_state=True)
    assert state.is_failed()
    with pytest.raises(InputError, match=r"^'CVAT URL' \(review\.cvat_url\): no CVAT server configured"):
        state.result()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert [r.name.rsplit("-", 1)[0] for r in runs] == ["check-review-ready"]  # the first task, and the only one
    root = DataRoot(micro_root)
    assert not root.predictions.exists() or not any(root.predictions.iterdir()), "predictions were made"
    assert not (root.review / "round1").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_round1_into_an_existing_version_names_the_field_before_predicting(micro_root: Path):
    from flows.round1 import Round1Params, round1

    store = LabelStore(DataRoot(micro_root).labels)
    store.put("taken", store.get("gt"), producer="someone else")
    params = Round1Params(data_dir=str(micro_root), model_dirs=[str(micro_root / "models" / "round1")],
                          to_version="taken", split_folds=[2],
                          review=ReviewSettings(reviewer="scripted", truth="synth/truth.csv", mining=FAINT))
    with pytest.raises(VersionExistsError, match=r"^'New label version' \(to_version\): label version 'taken'"):
        round1(params)
    root = DataRoot(micro_root)
    assert not root.predictions.exists() or not any(root.predictions.iterdir())


# --- 18: waiting for people

_RUNS: list = []
_WAIT = WaitSettings(mode="pause", poll_interval_s=1, timeout_days=180 / 86400)  # a pause gives up after 3 min


def _waiting_flow():
    from prefect import flow
    from prefect.runtime import flow_run

    from flows.base import make_reviewer
    from flows.rounds import wait_for_review

    @flow(name="wait-for-import-review")
    def waiting(data_dir: str, review: ReviewSettings, fail_after_wait: bool = False) -> bool:
        _RUNS.append(flow_run.id)
        wait_for_review(data_dir, "r1", review)
        if fail_after_wait:
            raise RuntimeError("the step after the review failed (test)")
        return Path(make_reviewer(data_dir, "r1", review).csv).exists()

    return waiting


def _wait_for(client, run_id, predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fr = client.read_flow_run(run_id)
        if fr.state is not None and predicate(fr):
            return fr
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {fr.state} run_count={fr.run_count} "
                         f"key={fr.state.state_details.pause_key if fr.state else None}")


def _in_thread(fn, *args, **kwargs):
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _paused(fr) -> bool:
    return fr.state.is_paused()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("prefect_harness")
def test_paused_import_round_resumed_before_its_csv_pauses_again(tmp_path: Path):
    from prefect import get_client
    from prefect.flow_runs import resume_flow_run

    waiting = _waiting_flow()
    data = tmp_path / "data"
    data.mkdir()
    csv = tmp_path / "decisions.csv"
    review = ReviewSettings(reviewer="import", decisions_csv=str(csv), wait=_WAIT)
    _RUNS.clear()
    thread, out = _in_thread(waiting, str(data), review)
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 60
        while not _RUNS and time.monotonic() < deadline:
            time.sleep(0.1)
        run_id = _RUNS[0]
        first = _wait_for(client, run_id, _paused, "the first pause")
        resume_flow_run(run_id, run_input={"note": "too early"})  # before the CSV exists
        second = _wait_for(client, run_id, lambda fr: _paused(fr) and fr.state.state_details.pause_key
                           != first.state.state_details.pause_key, "a second pause after a resume without the CSV")
        csv.write_text("case_id,tags\n")
        resume_flow_run(run_id, run_input={"note": "done"})
    thread.join(timeout=60)
    assert not thread.is_alive(), "the flow still waits"
    assert "error" not in out, out.get("error")
    assert out["value"] is True
    assert second.state.state_details.pause_key.startswith("review-r1-w2")


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("prefect_harness")
def test_a_retried_paused_run_can_wait_again(tmp_path: Path):
    from prefect import get_client
    from prefect.flow_engine import run_flow
    from prefect.flow_runs import resume_flow_run

    waiting = _waiting_flow()
    data = tmp_path / "data"
    data.mkdir()
    csv = tmp_path / "decisions.csv"
    review = ReviewSettings(reviewer="import", decisions_csv=str(csv), wait=_WAIT)
    _RUNS.clear()
    thread, out = _in_thread(waiting, str(data), review, fail_after_wait=True, return_state=True)
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 60
        while not _RUNS and time.monotonic() < deadline:
            time.sleep(0.1)
        run_id = _RUNS[0]
        first = _wait_for(client, run_id, _paused, "the first pause").state.state_details.pause_key
        csv.write_text("case_id,tags\n")
        resume_flow_run(run_id, run_input={"note": "done"})
        thread.join(timeout=60)
        assert out["value"].is_failed()  # the step after the wait failed: the run is retried
        csv.unlink()  # and, say, the CSV was withdrawn: the retried run waits for it again
        # "Retry" runs the same flow run again (its run count goes up), as a runner does
        retry, rout = _in_thread(run_flow, waiting, flow_run=client.read_flow_run(run_id),
                                 parameters={"data_dir": str(data), "review": review, "fail_after_wait": False},
                                 return_type="state")
        paused = _wait_for(client, run_id, lambda fr: _paused(fr) and fr.state.state_details.pause_key != first,
                           "the retried run's pause")
        csv.write_text("case_id,tags\n")
        resume_flow_run(run_id, run_input={"note": "again"})
    retry.join(timeout=60)
    assert not retry.is_alive()
    assert "error" not in rout, rout.get("error")
    assert rout["value"].is_completed(), rout["value"]
    # its run count went up (a resume of a blocking pause counts a run too): the wait's key is new
    assert first == "review-r1-w1" and paused.state.state_details.pause_key == f"review-r{paused.run_count}-w1"


# --- 20: the train flow's folds


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_train_flow_leaves_a_table_of_its_folds(micro_root: Path):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.train import TrainParams, train
    from tests.flow_support import SPLIT

    state = train(TrainParams(data_dir=str(micro_root), labels="gt", split=SPLIT, config="micro", run_name="t27",
                              overrides={"epochs": 1, "steps_per_epoch": 2}), return_state=True)
    assert state.is_completed(), state
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    by_key = {a.key: a for a in artifacts}
    assert "train-t27" in by_key, sorted(by_key)
    text = by_key["train-t27"].data
    rows = [line for line in text.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert len(rows) == 2, text  # one row per fold of the 2-fold split
    for k, row in enumerate(rows):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == str(k) and cells[1] == "1" and cells[-1] == f"`models/t27/fold{k}.pt`"
        assert re.fullmatch(r"\d\.\d{3}|–", cells[2])


def test_fold_line_names_fold_epochs_score_and_checkpoint(tmp_path):
    from flows.artifacts import fold_line

    line = fold_line({"fold": 2, "epochs": 8, "metric": "val_fbeta", "score": 0.5, "checkpoint":
                      str(tmp_path / "models" / "r" / "fold2.pt")}, tmp_path)
    assert line == "fold 2: trained 8 epoch(s), val score 0.500 (val_fbeta), checkpoint models/r/fold2.pt"


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_deployment_refuses_a_run_without_a_round_name():
    """What the UI sends for an emptied 'Round name': the params without it (the server checks the form)."""
    from prefect import get_client

    from flows import serve as serve_mod

    deployment_id = serve_mod.build_deployments(["round1"])[0].apply()
    with get_client(sync_client=True) as client:
        with pytest.raises(Exception, match="round_name"):
            client.create_flow_run_from_deployment(deployment_id, parameters={"params": {"to_version": "gt_v9"}})
        with pytest.raises(Exception, match="round_name"):
            client.create_flow_run_from_deployment(deployment_id, parameters={"params": {"round_name": ""}})
        run = client.create_flow_run_from_deployment(deployment_id, parameters={})  # the defaults: fine
        assert run.parameters == {}
        client.delete_flow_run(run.id)

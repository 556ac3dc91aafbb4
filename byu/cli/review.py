"""``byu review ...``: a review round from the command line (thin wrappers over :class:`byu.review.round.ReviewRound`).

CVAT credentials come from the environment only (``BYU_CVAT_URL``, ``BYU_CVAT_USER`` + ``BYU_CVAT_PASSWORD`` or
``BYU_CVAT_TOKEN``; ``BYU_CVAT_CHECK_VERSION=0`` skips the server version check), so they never show in a process
list; ``--url`` and ``--user`` may override.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
import urllib3
from rich.progress import Progress

from byu.cli.util import DataDir, console, fail, make_app, print_frame, problems, say
from byu.errors import ByuError
from byu.paths import DataRoot
from byu.review.round import CvatReviewer, ImportReviewer, ReviewRound
from byu.review.settings import MiningSettings, QualitySettings

app = make_app(help="Review rounds: mine cases, render images, CVAT push/status/pull, import, reviewer quality, "
                    "second review, resolve, apply.",
                  no_args_is_help=True)

Round = Annotated[str, typer.Argument(metavar="ROUND")]
Url = Annotated[str | None, typer.Option("--url", help="CVAT URL (default $BYU_CVAT_URL)")]
User = Annotated[str | None, typer.Option("--user", help="CVAT user (default $BYU_CVAT_USER)")]
Period = Annotated[float | None, typer.Option("--status-check-period", help="seconds between polls")]


def _round(data_dir: Path | None, name: str) -> ReviewRound:
    return ReviewRound(DataRoot.from_env(data_dir), name)


def _cvat(url: str | None, user: str | None, period: float | None, **kwargs) -> CvatReviewer:
    from byu.review.cvat import CvatConfig

    try:
        config = CvatConfig.from_env(url=url, user=user, status_check_period=period)
    except ValueError as exc:  # pydantic validation (inputs are hidden from the message)
        raise typer.BadParameter(str(exc)) from None
    return CvatReviewer(config=config, **kwargs)


def _remote(fn):
    """Run a CVAT call; server trouble becomes one clear line (no response headers, no traceback)."""
    from cvat_sdk.api_client.exceptions import ApiException
    from cvat_sdk.core.exceptions import BackgroundRequestException

    try:
        return fn()
    except ApiException as exc:  # its text carries response headers: keep it short
        status = exc.status or 0
        reason = f" {exc.reason}" if exc.reason else ""
        retried = " (after retries)" if status == 429 or status >= 500 else ""  # only those are retried
        fail(f"CVAT answered HTTP {status}{reason}{retried}")
    except BackgroundRequestException as exc:
        fail(f"CVAT could not process the request: {exc}")
    except (urllib3.exceptions.HTTPError, ConnectionError) as exc:
        fail(f"cannot reach CVAT: {type(exc).__name__} (after retries)")
    except ByuError as exc:
        fail(str(exc))


MINING = MiningSettings()


def _help(field: str) -> str:
    return MiningSettings.model_fields[field].description or ""


@app.command("mine")
def mine_cmd(
    round_name: Round,
    labels: Annotated[str, typer.Option(help="label version the predictions are compared with")],
    predictions: Annotated[Path, typer.Option(help="predictions CSV (data/predictions/<run>.csv)")],
    threshold: Annotated[float, typer.Option(help=_help("threshold"))] = MINING.threshold,
    radius: Annotated[float | None, typer.Option(help=_help("radius_A"))] = MINING.radius_A,
    max_candidates: Annotated[int, typer.Option(help=_help("max_candidates"))] = MINING.max_candidates,
    confirm_threshold: Annotated[str, typer.Option(help=_help("confirm_threshold") + " ('none' to switch off)")]
    = str(MINING.confirm_threshold),
    fp_threshold: Annotated[str, typer.Option(help=_help("fp_threshold") + " ('none' to switch off)")]
    = str(MINING.fp_threshold),
    verify: Annotated[bool, typer.Option(help=_help("verify") + " (review/ROUND/verification.csv; a few minutes "
                                         "on a CPU)")] = MINING.verify,
    verify_quantile: Annotated[float, typer.Option(help=_help("verify_quantile"))] = MINING.verify_quantile,
    galleries: Annotated[bool, typer.Option(help=_help("galleries"))] = MINING.galleries,
    gallery_size: Annotated[int, typer.Option(help=_help("gallery_size"))] = MINING.gallery_size,
    budget: Annotated[str, typer.Option(help=_help("budget"))] = str(MINING.budget),
    offer_recall: Annotated[float, typer.Option(help=_help("offer_recall"))] = MINING.offer_recall,
    max_fp_cases: Annotated[int | None, typer.Option(help=_help("max_fp_cases"))] = MINING.max_fp_cases,
    max_labeled_motors: Annotated[int | None, typer.Option(help="only tomograms with ≤ this many motors")] = None,
    render: Annotated[bool, typer.Option(help="also render the case images")] = True,
    data_dir: DataDir = None,
) -> None:
    """Mine a round's review cases (review/ROUND/cases.csv, mining.json) and render their images."""
    from pydantic import ValidationError

    rnd = _round(data_dir, round_name)
    tomo_ids = None
    if max_labeled_motors is not None:
        counts = rnd.store.get(labels).motor_counts()
        tomo_ids = sorted(t for t, n in counts.items() if n <= max_labeled_motors)
    try:
        settings = MiningSettings.model_validate({
            "threshold": threshold, "radius_A": radius, "max_candidates": max_candidates,
            "confirm_threshold": confirm_threshold, "fp_threshold": fp_threshold, "verify": verify,
            "verify_quantile": verify_quantile, "galleries": galleries, "gallery_size": gallery_size,
            "budget": budget, "offer_recall": offer_recall, "max_fp_cases": max_fp_cases})
    except ValidationError as exc:
        err = exc.errors()[0]
        option = "--" + str(err["loc"][0]).replace("_A", "").replace("_", "-") if err.get("loc") else "options"
        raise typer.BadParameter(str(err["msg"]).removeprefix("Value error, "), param_hint=option) from None
    with Progress(console=console) as progress:
        bars: dict[str, Any] = {}

        def step(particle: str, done: int, total: int) -> None:
            if particle not in bars:
                bars[particle] = progress.add_task(f"verifying {particle} labels", total=total)
            progress.update(bars[particle], completed=done)

        result = rnd.mine(labels_version=labels, predictions=predictions, settings=settings, tomo_ids=tomo_ids,
                          progress=step)
    kinds = pd.Series([c.kind for c in result.cases], dtype=object).value_counts().to_dict()
    say(f"{len(result.cases)} case(s) in {rnd.paths.cases}: {kinds}")
    for name, info in result.summary().items():
        auc = info.get("verifier_auc")
        say(f"  {name}: labels reviewed {info.get('labels_reviewed') or {}}, predictions offered "
            f"{info.get('offered', 0)} (beyond the budget: {info.get('hidden', 0)})"
            + (f", verifier separation AUC {auc:.2f}" if isinstance(auc, float) else ""))
    if render:
        render_cmd(round_name, data_dir=data_dir)


@app.command("render")
def render_cmd(round_name: Round, data_dir: DataDir = None) -> None:
    """Render one JPEG per case into review/ROUND/images/."""
    rnd = _round(data_dir, round_name)
    cases = rnd.cases()
    with Progress(console=console) as progress:
        bar = progress.add_task("rendering cases", total=len(cases))
        images = rnd.render(progress=lambda *_: progress.advance(bar), cases=cases)
    say(f"{len(images)} image(s) in {rnd.paths.images}")


@app.command("push")
def push_cmd(
    round_name: Round,
    batch_size: Annotated[int, typer.Option(min=1, help="images per CVAT task")] = 100,
    second_review: Annotated[bool, typer.Option("--second-review", help="push the 'unsure' cases of decisions.csv "
                                                                        "as <round>-review2-<batch> tasks")] = False,
    project_name: Annotated[str | None, typer.Option(
        "--project-name", help="CVAT project (default: ROUND-<id of the data root>, so that rounds of two data "
                               "roots never share a project; a project by this name that this data root did not "
                               "make is refused)")] = None,
    data_dir: DataDir = None, url: Url = None, user: User = None, status_check_period: Period = None,
) -> None:
    """Push a round's case images to CVAT (safe to rerun: completes, never duplicates)."""
    from byu.review.cvat import push_second_review

    if project_name is not None and not project_name.strip():
        raise typer.BadParameter("must not be empty", param_hint="--project-name")
    reviewer = _cvat(url, user, status_check_period, batch_size=batch_size, project_name=project_name)
    rnd = _round(data_dir, round_name)
    if second_review:
        entries = _remote(lambda: push_second_review(rnd.paths.dir, config=reviewer.config, batch_size=batch_size))
        df = pd.DataFrame([{"task": e["name"], "task_id": e["id"], "images": len(e["images"]), "state": e["state"]}
                           for e in entries], columns=["task", "task_id", "images", "state"])
        print_frame(df, f"second-review CVAT tasks of round {round_name}")
        return
    say(_remote(lambda: rnd.start_review(reviewer)))


@app.command("status")
def status_cmd(round_name: Round, data_dir: DataDir = None, url: Url = None, user: User = None) -> None:
    """Jobs per task of a round: new / in progress / completed."""
    reviewer = _cvat(url, user, None)
    df = _remote(lambda: reviewer.status(_round(data_dir, round_name)))
    print_frame(df, f"review round {round_name}")
    if len(df):
        say(f"{int(df['completed'].sum())}/{int(df['jobs'].sum())} jobs completed")


@app.command("pull")
def pull_cmd(
    round_name: Round,
    allow_errors: Annotated[bool, typer.Option("--allow-errors", help="write decisions.csv for the valid images "
                                                                      "even if some images have errors")] = False,
    include_incomplete: Annotated[bool, typer.Option("--include-incomplete", help="also take tags from jobs that "
                                                     "are not marked completed")] = False,
    data_dir: DataDir = None, url: Url = None, user: User = None, status_check_period: Period = None,
) -> None:
    """Export the round's tasks (CVAT for images 1.1), validate them and write decisions.csv.

    A pull that does not validate changes nothing: the previous exports and decisions stay, and what was fetched
    is kept in review/ROUND/cvat/rejected/ for inspection.
    """
    from byu.review.cvat import pull_round

    reviewer = _cvat(url, user, status_check_period)
    rnd = _round(data_dir, round_name)
    report = _remote(lambda: pull_round(rnd.paths.dir, config=reviewer.config, include_incomplete=include_incomplete,
                                        allow_errors=allow_errors))
    problems(report.result.errors)
    if not report.written:
        say(f"nothing changed: the pull does not validate; the previous exports and decisions are kept, what was "
            f"fetched is in {report.rejected_dir}", err=True)
        raise typer.Exit(1)
    say(f"exported {len(report.exports)} task(s) to {rnd.paths.cvat}")

    def _some(ids: list[str], n: int = 10) -> str:
        return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")

    if report.result.left_out:
        say(f"{len(report.result.left_out)} tagged case(s) left out: their CVAT job is not completed "
            "(--include-incomplete takes them)", err=True)
    if report.kept:
        say(f"kept {len(report.kept)} decision(s) from the previous decisions.csv that this pull did not collect "
            f"(their CVAT job is not completed now): {_some(report.kept)}", err=True)
    if report.withdrawn:
        say(f"dropped {len(report.withdrawn)} decision(s) taken back in CVAT (untagged in a completed job): "
            f"{_some(report.withdrawn)}", err=True)
    if not report.changed:
        say(f"decisions.csv unchanged: the pull collected nothing new ({len(report.result.decisions)} reviewed "
            f"case(s) in {rnd.paths.decisions})")
        return
    say(f"{len(report.result.decisions)} reviewed case(s) -> {rnd.paths.decisions}")


@app.command("import")
def import_cmd(
    round_name: Round,
    csv_path: Annotated[Path, typer.Argument(metavar="DECISIONS_CSV", help="case_id or image, tags[, reviewer]")],
    replace: Annotated[bool, typer.Option("--replace", help="replace the round's existing, different "
                                          "decisions")] = False,
    data_dir: DataDir = None,
) -> None:
    """Import decisions made outside CVAT (same vocabulary and checks) as the round's decisions.csv."""
    rnd = _round(data_dir, round_name)
    from byu.review.decisions import import_decisions_csv

    result = import_decisions_csv(csv_path, rnd.cases())
    if problems(result.errors):
        say("decisions.csv not written", err=True)
        raise typer.Exit(1)
    _remote(lambda: rnd.collect_review(ImportReviewer(csv=csv_path, replace=replace)))
    say(f"{len(result.decisions)} reviewed case(s) -> {rnd.paths.decisions}")


def _quality(min_accuracy: float | None, min_known: int | None, second_rate: float | None,
             confidence: float | None = None) -> QualitySettings:
    given: dict[str, float | int | None] = {"min_accuracy": min_accuracy, "min_known": min_known,
                                             "second_rate": second_rate, "confidence": confidence}
    return QualitySettings.model_validate({k: v for k, v in given.items() if v is not None})


def _qhelp(field: str) -> str:
    return QualitySettings.model_fields[field].description or ""


MinAccuracy = Annotated[float | None, typer.Option("--min-accuracy", min=0.0, max=1.0, help=_qhelp("min_accuracy"))]
MinKnown = Annotated[int | None, typer.Option("--min-known", min=1, help=_qhelp("min_known"))]
SecondRate = Annotated[float | None, typer.Option("--second-rate", min=0.0, max=1.0, help=_qhelp("second_rate"))]
Confidence = Annotated[float | None, typer.Option("--confidence", min=0.5, max=0.999, help=_qhelp("confidence"))]


@app.command("quality")
def quality_cmd(round_name: Round, min_accuracy: MinAccuracy = None, min_known: MinKnown = None,
                second_rate: SecondRate = None, confidence: Confidence = None, data_dir: DataDir = None) -> None:
    """How far the round's review can be trusted: each reviewer's accuracy on the known-answer items (a Wilson
    95 % interval), who is not shown above --min-accuracy at --confidence, and the images a second reviewer
    should see (unsure, every image a flagged reviewer decided, and a --second-rate sample of the others).
    Writes review/ROUND/quality.json; `byu review second ROUND` hands those images to the second reviewer."""
    from byu.review.quality import flagged_reviewers, known_accuracy

    settings = _quality(min_accuracy, min_known, second_rate, confidence)
    rnd = _round(data_dir, round_name)
    report = rnd.assess(settings)
    accuracy = known_accuracy(rnd.cases(), rnd.reviews()[0])
    flagged = flagged_reviewers(accuracy, min_accuracy=settings.min_accuracy, min_known=settings.min_known,
                                confidence=settings.confidence)
    rows = [{"reviewer": who or "(unnamed)", "right": a.correct, "known items": a.n,
             "accuracy": "" if a.rate is None else f"{a.rate:.2f}",
             "95% interval": "" if a.interval is None else f"{a.interval[0]:.2f}-{a.interval[1]:.2f}",
             "flagged": "yes" if who in flagged else ("too few items" if a.n < settings.min_known else "")}
            for who, a in sorted(accuracy.items())]
    if rows:
        print_frame(pd.DataFrame(rows), title=f"round {round_name}: reviewers on known-answer items")
    else:
        say(f"round {round_name}: no known-answer item decided yet (they are in gallery images)")
    why = pd.Series(list(report["second_review"].values()), dtype=object).value_counts().to_dict()
    if why:
        say(f"{len(report['second_review'])} image(s) for a second review ("
            + ", ".join(f"{n} {w}" for w, n in why.items()) + f"): `byu review second {round_name} ...`")
    else:
        say("no image needs a second review")
    say(f"-> {rnd.paths.quality}")


@app.command("second")
def second_cmd(
    round_name: Round,
    push: Annotated[bool, typer.Option("--push", help="create second-review tasks in the round's CVAT project "
                                       "(assign them to someone other than the first reviewer)")] = False,
    csv_path: Annotated[Path | None, typer.Option("--import", help="the second reviewer's decisions CSV "
                                                  "(case_id or image, tags[, reviewer]) for those images")] = None,
    data_dir: DataDir = None, url: Url = None, user: User = None,
) -> None:
    """Hand the images `byu review quality ROUND` chose to a second reviewer: --push sends them to CVAT (pull them
    with `byu review pull` when done), --import reads the second reviewer's CSV. Then `byu review resolve ROUND`."""
    rnd = _round(data_dir, round_name)
    if push == (csv_path is not None):
        fail("give exactly one of --push (CVAT) and --import CSV")
    if not rnd.paths.quality.exists():
        fail(f"no second-review list yet: run `byu review quality {round_name}` first")
    import json

    images = list(json.loads(rnd.paths.quality.read_text()).get("second_review") or {})
    if not images:
        say("no image needs a second review; nothing to do")
        return
    if push:
        from byu.review.cvat import push_second_review

        reviewer = _cvat(url, user, None)
        tasks = _remote(lambda: push_second_review(rnd.paths.dir, config=reviewer.config, images=images,
                                                   batch_size=reviewer.batch_size))
        say(f"{len(images)} image(s) in {len(tasks)} second-review task(s); pull them with "
            f"`byu review pull {round_name}` when done")
        return
    from byu.review.decisions import import_decisions_csv

    assert csv_path is not None
    wanted = set(images)
    result = import_decisions_csv(csv_path, [c for c in rnd.cases() if c.image in wanted])
    if problems(result.errors):
        say("second_decisions.csv not written (the CSV may only hold the images listed in quality.json)", err=True)
        raise typer.Exit(1)
    path = _remote(lambda: rnd.collect_second(result))
    say(f"{len(result.decisions)} second-review decision(s) -> {path}")


@app.command("resolve")
def resolve_cmd(round_name: Round, min_accuracy: MinAccuracy = None, min_known: MinKnown = None,
                confidence: Confidence = None, data_dir: DataDir = None) -> None:
    """One decision per image from the first and second review: where they agree, theirs; where they disagree,
    the items answered alike keep that answer and each item they split on takes the answer of
    review/ROUND/resolution.csv when someone wrote one (case_id or image, tags, reviewer), else of the more accurate
    reviewer on the known-answer items, else the image is held (not applied). Lists the images the reviews split on
    and their items. Writes resolved_decisions.csv, which `byu review apply` then applies, and agreement (Cohen's
    kappa per class) to quality.json."""
    rnd = _round(data_dir, round_name)
    out = rnd.resolve(_quality(min_accuracy, min_known, None, confidence))
    images = {c.case_id: c.image for c in rnd.cases()}
    for cid, split in sorted((out.get("disputed") or {}).items()):
        say(f"{images.get(cid, cid)}: the reviews split on item(s) {', '.join(map(str, split['items']))}; "
            f"{split['decider']} decided them")
    for cls, a in sorted((out.get("agreement") or {}).items()):
        kappa = a.get("kappa")
        say(f"{cls}: {a.get('agree', 0)} of {a.get('items', 0)} item(s) both reviews decided agree, Cohen's kappa "
            + ("n/a (one answer only)" if kappa is None else f"{kappa:.2f}"))
    decided = ", ".join(f"{n} {how}" for how, n in (out.get("decided_by") or {}).items())
    say(f"decided: {decided or 'nothing'}; {len(out.get('held') or [])} image(s) held (not applied) -> "
        f"{rnd.paths.resolved}")


@app.command("apply")
def apply_cmd(
    round_name: Round,
    from_version: Annotated[str, typer.Option("--from", help="parent label version")],
    to_version: Annotated[str, typer.Option("--to", help="new label version")],
    overrides: Annotated[Path | None, typer.Option(
        help="CSV tomo_id,action(add|remove|clear),z,y,x[,particle],note")] = None,
    data_dir: DataDir = None,
) -> None:
    """Apply review/ROUND/decisions.csv to --from and store --to (parent + exactly the reviewed changes)."""
    manifest, result = _round(data_dir, round_name).apply(from_version=from_version, to_version=to_version,
                                                          overrides=overrides)
    done = "stored" if manifest.created else "already stored with identical content, nothing written:"
    say(f"{done} {manifest.name}: {result.label_changes} label change(s) from {len(result.applied_cases)} decided "
        f"case(s); {len(result.unsure_cases)} unsure, {len(result.unreviewed_cases)} not reviewed")


@app.command("resume")
def resume_cmd(round_name: Round, data_dir: DataDir = None) -> None:
    """Tell a flow polling CVAT to collect the review now, without waiting for every job."""
    flag = _round(data_dir, round_name).request_pull()
    say(f"flagged {flag}; the flow pulls at its next status check")


@app.command("wait")
def wait_cmd(
    round_name: Round,
    interval: Annotated[float, typer.Option(min=1.0, help="seconds between status checks")] = 60.0,
    data_dir: DataDir = None, url: Url = None, user: User = None,
) -> None:
    """Wait (polling CVAT) until every job of the round is completed or `byu review resume` is run."""
    reviewer = _cvat(url, user, None)
    rnd = _round(data_dir, round_name)
    while not _remote(lambda: rnd.review_finished(reviewer)):
        time.sleep(interval)
    say(f"round {round_name}: review finished; run `byu review pull {round_name}`")


@app.command("summary")
def summary_cmd(round_name: Round, data_dir: DataDir = None) -> None:
    """Cases of a round by kind and class, and how many are decided."""
    console.print_json(data=_round(data_dir, round_name).summary())

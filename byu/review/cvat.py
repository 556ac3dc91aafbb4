"""CVAT adapter for review rounds: push case images as tag tasks, watch progress, pull exports.

Targets cvat-sdk 2.80 and CVAT servers 2.80.x / 2.81.x (a warning, and carry on, for other
versions unless ``check_server_version=False``). Older servers (e.g. 2.23) answer
``/api/server/about`` without fields this SDK requires; :func:`connect` then reads the version
from the raw answer, logs one warning that the check was skipped, and carries on (a whole round
works on CVAT 2.23.1). That read asks for ``application/vnd.cvat+json`` first (CVAT's only
renderer: 2.23 answers ``Accept: application/json`` alone with 406), then plain JSON or anything.
``BYU_CVAT_CHECK_VERSION=0`` skips the check. A URL that does not answer ``/api/server/about``
like CVAT is a :class:`CvatError`; so are refused credentials ("refused the credentials of user
'u' (HTTP 400: Unable to log in ...)"; an access token is checked at connect, too).

One CVAT **project per round**, named ``<round>-<data root id>`` (``round1-3f2a9c1e``: the first 8
hex digits of the random UUID in ``<data root>/.byu-id``, made once by the first push) unless told
otherwise (``project_name``), so that rounds of two data roots never share a project on a shared
server. A project found by name is used only if this data root made it (the id in its name, or
the round's ``tasks.json`` records pushing to it); any other is refused before anything changes
on the server and before ``tasks.json`` is written. The project has tag labels
``0``..``K``, ``none`` and ``unsure`` (label type ``tag``; K = the most candidates any case
shows) and, when the round's single-particle images have their panel geometry
(``review/<round>/geometry/``), the click labels ``here`` (``here:<class>`` per class in a
multi-class round; label type ``points``: a point placed where the particle is). Case images
(``review/<round>/images/``, in ``cases.csv`` order) go into **tasks of at most N images**
(default 100) named ``<round>-<batch>`` with the batch 1-based and zero-padded to 3
(``r1-001``); a second review of ``unsure`` cases goes into ``<round>-review2-<batch>``
tasks in the same project. Frames keep the image names (``sorting_method=predefined``).

**Idempotent push.** Every run reconciles the server with the round instead of assuming a
clean slate; tasks are found by name in the round's project:

- a task with data (size > 0) whose frames are the batch's images is kept: no duplicate, no
  re-upload; if its frames differ, ``CvatError`` (the round changed after the push; nothing on
  the server is touched);
- a task that exists but never got data (``data`` is null: the run died between creating the
  task and uploading) gets its data uploaded;
- a task whose data upload started but did not finish (``data`` attached, size 0: an upload or
  server-side processing that failed or was interrupted) is **deleted and recreated**, because
  CVAT appends a second upload to the files of the first one (duplicates) and cannot detach
  data; nothing is lost, as such a task has no frames to annotate;
- extra empty tasks of the same name are deleted; extra tasks *with* data are left alone (they
  may hold annotations) and reported in the log;
- a task deleted on the server is created again (its annotations are gone with it).

On CVAT 2.23 a task that never got data has no ``size`` and no ``data`` at all; it is read as size
0 without data.

Pushes of the same round must not run concurrently. If ``cvat/tasks.json`` is lost, rerun
``push``: it finds the project and tasks by name and writes the record again (for a project
named without the data root's id, restore ``tasks.json`` instead: such a name does not show
whose project it is, and is refused).

**Record.** ``review/<round>/cvat/tasks.json`` (written atomically after every change) holds the
server URL, the project, the labels, the batch size and one entry per task: ``name``, ``id``,
``kind`` (``review`` or ``review2``), ``batch``, ``images`` (the batch's image names),
``state`` (``created`` / ``uploaded``), ``size``, and after a pull ``job_assignee``,
``exported_at``, ``export_sha256``; ``data_root`` is the short id of the data root that pushed.

**Pull.** Each task is exported as "CVAT for images 1.1" without images; ``annotations.xml`` is
taken out of the zip (size-capped, by name only) and written atomically to
``cvat/<task name>.xml``. Turning those into ``decisions.csv`` is
:func:`byu.review.decisions.decisions_from_round`. A pull never loses a person's decision
silently: a decision of the previous ``decisions.csv`` that the pull does not collect again (its
job was reopened or is in progress, or it was made outside CVAT) is kept and reported; only a CVAT
decision whose image a person untagged in a completed job is dropped, and reported. A task
deleted on the server is an error that names it (push again to create it anew).

**Retries.** Connection errors, 429 and 5xx answers are retried with exponential backoff and
jitter (tenacity, bounded by ``CvatConfig.max_attempts``) around whole steps that are safe to
repeat (connect, ensure project, ensure task, status of a task, export of a task); a failed
server-side data processing request is retried the same way (the task is recreated).

**Credentials.** ``CvatConfig`` holds the URL and either a user + password or a personal access
token, as ``SecretStr`` (hidden in ``repr``, in validation errors and in logs). Build one with
arguments (e.g. from a Prefect Secret block) or :meth:`CvatConfig.from_env` (``BYU_CVAT_URL``,
``BYU_CVAT_USER``, ``BYU_CVAT_PASSWORD``, ``BYU_CVAT_TOKEN``, ``BYU_CVAT_CHECK_VERSION``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import urllib3
from cvat_sdk import Client, Config, models
from cvat_sdk.api_client.exceptions import ApiException
from cvat_sdk.core.client import AccessTokenCredentials
from cvat_sdk.core.exceptions import BackgroundRequestException
from cvat_sdk.core.proxies.projects import Project
from cvat_sdk.core.proxies.tasks import ResourceType, Task
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from byu.atomic import file_mode, sha256_bytes, write_bytes, write_json
from byu.errors import ByuError, InputError, InputErrors
from byu.paths import check_id
from byu.review.cases import Case
from byu.review.decisions import (
    DEFAULT_MAX_XML_BYTES,
    DecisionsResult,
    combine_results,
    decisions_bytes,
    decisions_from_round,
    has_geometry,
    load_cases,
    read_decisions,
    tag_vocabulary,
    unsure_images,
    write_decisions,
)
from byu.review.paths import RoundPaths
from byu.review.tags import label_type

log = logging.getLogger(__name__)
_sdk_log = logging.getLogger(__name__ + ".sdk")

ENV_URL, ENV_USER, ENV_PASSWORD, ENV_TOKEN = "BYU_CVAT_URL", "BYU_CVAT_USER", "BYU_CVAT_PASSWORD", "BYU_CVAT_TOKEN"
ENV_CHECK_VERSION = "BYU_CVAT_CHECK_VERSION"
ABOUT_PATH = "/api/server/about"
# CVAT's REST framework renders only application/vnd.cvat+json and answers 406 to ``Accept: application/json``
# alone (CVAT 2.23.1); plain JSON and anything else stay acceptable for other servers
ABOUT_ACCEPT = "application/vnd.cvat+json, application/json;q=0.9, */*;q=0.5"
EXPORT_FORMAT = "CVAT for images 1.1"
DEFAULT_BATCH_SIZE = 100
KIND_REVIEW, KIND_REVIEW2 = "review", "review2"

T = TypeVar("T")

__all__ = [
    "CvatConfig", "CvatError", "PullReport", "connect", "cvat_client", "push_round", "push_second_review",
    "round_status", "pull_round", "task_name", "load_record", "EXPORT_FORMAT", "data_root_id", "default_project_name",
]


class CvatError(ByuError):
    """The CVAT server is in a state we will not reconcile automatically, or refused us."""


class CvatConfig(BaseModel):
    """Where CVAT is, how to log in, and how patient to be. Secrets never show in repr/logs."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    url: str
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    organization: str | None = None
    status_check_period: float = Field(default=2.0, gt=0, description="seconds between polls of a request")
    max_attempts: int = Field(default=5, ge=1, description="tries per step on connection errors and 5xx")
    backoff_initial: float = Field(default=1.0, ge=0, description="first backoff, seconds")
    backoff_max: float = Field(default=30.0, ge=0, description="longest backoff, seconds")
    check_server_version: bool = Field(
        default=True, description="ask the server its version and warn if this SDK is not made for it")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        scheme, sep, rest = v.partition("://")
        if not sep or scheme not in ("http", "https") or not rest:
            raise ValueError("CVAT url must start with http:// or https://")
        if "@" in rest.split("/", 1)[0]:
            raise ValueError("put credentials in user/password or token, not in the url")
        return v

    @model_validator(mode="after")
    def _credentials(self) -> CvatConfig:
        if self.token is None and not (self.user and self.password is not None):
            raise ValueError(f"CVAT credentials missing: set {ENV_TOKEN}, or {ENV_USER} and {ENV_PASSWORD}")
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> CvatConfig:
        """Build from ``BYU_CVAT_*`` variables; keyword overrides (non-None) win.

        ``BYU_CVAT_CHECK_VERSION`` = ``0``/``false``/``no``/``off`` skips the server version check
        (``1``/``true``/``yes``/``on`` or unset: check).
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {key: env.get(var) for key, var in
                                  (("url", ENV_URL), ("user", ENV_USER), ("password", ENV_PASSWORD),
                                   ("token", ENV_TOKEN))}
        values = {k: v for k, v in values.items() if v}
        check = _env_flag(env, ENV_CHECK_VERSION)
        if check is not None:
            values["check_server_version"] = check
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "url" not in values:
            raise InputError(f"CVAT url missing: set {ENV_URL} or pass --url")
        return cls(**values)


def _env_flag(env: Mapping[str, str], var: str) -> bool | None:
    raw = (env.get(var) or "").strip().lower()
    if not raw:
        return None
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise InputError(f"{var} must be 0/false/no or 1/true/yes, not {raw[:20]!r}")


# ----------------------------------------------------------------------------------------------
# Retries and connection


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status == 429 or (exc.status or 0) >= 500
    if isinstance(exc, urllib3.exceptions.SSLError):
        return False
    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def _transient_or_failed_processing(exc: BaseException) -> bool:
    return _transient(exc) or isinstance(exc, BackgroundRequestException)


def _retry(config: CvatConfig, fn: Callable[..., T], *args: Any,
           what: str, predicate: Callable[[BaseException], bool] = _transient, **kwargs: Any) -> T:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        # type and HTTP status only: SDK exception texts carry response headers (cookies)
        why = type(exc).__name__ if exc else "?"
        if isinstance(exc, ApiException):
            why += f" (HTTP {exc.status})"
        log.warning("%s failed (attempt %d/%d): %s; retrying", what, state.attempt_number,
                    config.max_attempts, why)

    retrying = Retrying(
        stop=stop_after_attempt(config.max_attempts),
        wait=wait_exponential_jitter(initial=config.backoff_initial, max=config.backoff_max,
                                     jitter=config.backoff_initial),
        retry=retry_if_exception(predicate),
        reraise=True,
        before_sleep=before_sleep,
    )
    return retrying(fn, *args, **kwargs)


_version_warned: set[tuple[str, str]] = set()  # (url, version): version warnings once per process


def _warn_version_once(url: str, version: str, msg: str, *args: Any) -> None:
    key = (url, version)
    if key in _version_warned:
        log.debug("CVAT at %s is version %.40s (warned before)", url, version)
        return
    _version_warned.add(key)
    log.warning(msg, *args)


def _not_cvat(config: CvatConfig, what: str) -> CvatError:
    return CvatError(f"{config.url} does not look like a CVAT server: GET {ABOUT_PATH} {what}. "
                     f"Check {ENV_URL} (the server's root URL, without /api).")


def _raw_about(config: CvatConfig) -> dict[str, Any]:
    """``GET /api/server/about`` without the SDK's model (no credentials are sent).

    Returns the JSON object of a CVAT server (it has a ``version``). Raises :class:`CvatError`
    when the answer is not CVAT's, ``ApiException`` (429/5xx, retried) or urllib3 errors.
    """
    url = config.url + ABOUT_PATH
    with urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=10, read=30)) as http:
        # the Accept CVAT renders first; a 406 anyway (a server that negotiates otherwise): once without Accept
        for headers in ({"Accept": ABOUT_ACCEPT}, {}):
            resp = http.request("GET", url, headers=headers, preload_content=False)
            try:
                status = resp.status
                kind = (resp.headers.get("Content-Type") or "no content type").split(";")[0].strip()[:60]
                body = resp.read(64 * 1024 + 1)
            finally:
                resp.release_conn()
            if status != 406:
                break
    if status == 429 or status >= 500:
        raise ApiException(status=status, reason=f"{ABOUT_PATH} answered HTTP {status}")
    if status in (401, 403):  # CVAT answers about without login: something in front of it wants some
        raise CvatError(f"{config.url} refused GET {ABOUT_PATH} (HTTP {status}), which CVAT answers "
                        "without login: is a proxy in front of it asking for credentials?")
    if status != 200:
        raise _not_cvat(config, f"answered HTTP {status} ({kind})")
    try:
        about = json.loads(body)
    except ValueError:
        raise _not_cvat(config, f"answered {kind}, not JSON") from None
    version = about.get("version") if isinstance(about, dict) else None
    if not isinstance(version, str) or not version.strip():
        raise _not_cvat(config, "answered JSON without a version")
    return about


def _server_detail(exc: ApiException) -> str:
    """The server's own short reason in an error answer (``detail`` or the first ``non_field_errors`` entry of
    its JSON body), never headers; '' when there is none."""
    body = exc.body
    try:
        data = json.loads(body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or ""))
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    detail = data.get("detail")
    if not isinstance(detail, str):
        errors = data.get("non_field_errors")
        detail = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], str) else ""
    return " ".join(detail.split())[:200]


def _sdk_cannot_read(exc: BaseException) -> bool:
    """True if the SDK failed to turn the server's answer into its model (TypeError/ValueError,
    e.g. ``About._from_openapi_data() missing ... 'logo_url'``), also when wrapped."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if _transient(e):
            return False
        if isinstance(e, (TypeError, ValueError)):
            return True
        e = e.__cause__ or e.__context__
    return False


def _check_server(client: Client, config: CvatConfig) -> None:
    """The SDK's server version check, which survives servers whose about answer it cannot read."""
    refused: int | None = None
    try:
        version = client.get_server_version()
    except ApiException as exc:  # its text carries response headers: keep only the status
        if _transient(exc):
            raise
        refused, version = exc.status, None
    except Exception as exc:
        if not _sdk_cannot_read(exc):
            raise
        version = None
    if version is None:  # outside the except blocks: no SDK exception (headers) in the context
        about = _raw_about(config)  # the CvatError for a server that is not CVAT
        if refused is not None:
            raise CvatError(f"CVAT at {config.url} did not tell its version "
                            f"(HTTP {refused} on {ABOUT_PATH})")
        _warn_version_once(
            config.url, str(about["version"]),
            "CVAT at %s is version %.40s, whose %s answer cvat-sdk %s cannot read (it is made for "
            "CVAT %s); skipped the server version check and carrying on. Set %s=0 to skip the "
            "check without this warning.", config.url, about["version"], ABOUT_PATH, _sdk_version(),
            _supported_versions(), ENV_CHECK_VERSION)
        return
    if not any(version.release[:2] == v.release[:2] and version.epoch == v.epoch
               for v in Client.SUPPORTED_SERVER_VERSIONS):
        _warn_version_once(config.url, str(version),
                           "CVAT at %s is version %s; cvat-sdk %s is made for CVAT %s. Carrying on.",
                           config.url, version, _sdk_version(), _supported_versions())


def _sdk_version() -> str:
    from cvat_sdk.version import VERSION

    return str(VERSION)


def _supported_versions() -> str:
    return " / ".join(f"{v}.x" for v in Client.SUPPORTED_SERVER_VERSIONS)


def connect(config: CvatConfig) -> Client:
    """A logged-in ``cvat_sdk.Client`` (close it, or use :func:`cvat_client`).

    With ``config.check_server_version`` the server's version is checked first (a warning if
    this SDK is not made for it); a server whose ``/api/server/about`` the SDK cannot read (CVAT
    before 2.80 lacks ``logo_url``/``subtitle``) gets one warning and the check is skipped; a URL
    that is not a CVAT server is a :class:`CvatError`.
    """
    sdk_config = Config(status_check_period=config.status_check_period)

    def _open() -> Client:
        # the check is done here, not by the SDK's constructor: that one crashes on old servers
        # and only warns when about is missing (a URL that is not CVAT)
        client = Client(config.url, config=sdk_config, logger=_sdk_log, check_server_version=False)
        try:
            if config.check_server_version:
                _check_server(client, config)
            if config.token is not None:
                client.login(AccessTokenCredentials(config.token.get_secret_value()))
                client.users.retrieve_current_user()  # a token is only sent, never checked, by login()
            else:
                assert config.user and config.password is not None
                client.login((config.user, config.password.get_secret_value()))
        except ApiException as exc:
            client.close()
            if _transient(exc):
                raise
            status, detail = exc.status, _server_detail(exc)
        except BaseException:
            client.close()
            raise
        else:
            if config.organization:
                client.organization_slug = config.organization
            return client
        # outside the except block, so that no SDK exception (it carries headers) rides along
        if status not in (400, 401, 403):
            _raw_about(config)  # a CvatError if this is not CVAT at all
        if config.token is None:
            who, check = f"the credentials of user {config.user!r}", f"{ENV_USER} and {ENV_PASSWORD}"
        else:
            who, check = "the access token", ENV_TOKEN
        why = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
        raise CvatError(f"CVAT at {config.url} refused {who} ({why}); check {check}")

    return _retry(config, _open, what=f"connect to {config.url}")


@contextlib.contextmanager
def cvat_client(config: CvatConfig, client: Client | None = None) -> Iterator[Client]:
    """Yield ``client`` if given (left open), else a new logged-in client closed on exit."""
    if client is not None:
        yield client
        return
    own = connect(config)
    try:
        yield own
    finally:
        own.close()


# ----------------------------------------------------------------------------------------------
# Record (cvat/tasks.json)


def load_record(round_dir: str | Path) -> dict[str, Any]:
    """The round's ``cvat/tasks.json`` (an empty record if there is none yet)."""
    path = RoundPaths(Path(round_dir)).tasks
    if not path.is_file():
        return {"tasks": []}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc}", file=path) from None
    record.setdefault("tasks", [])
    return record


def _save_record(round_dir: Path, record: dict[str, Any]) -> None:
    write_json(RoundPaths(round_dir).tasks, record)


def _entry(record: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((t for t in record["tasks"] if t["name"] == name), None)


def _put_entry(round_dir: Path, record: dict[str, Any], entry: dict[str, Any]) -> None:
    old = _entry(record, entry["name"])
    if old is None:
        record["tasks"].append(entry)
    elif old is not entry:
        record["tasks"][record["tasks"].index(old)] = entry
    _save_record(round_dir, record)


def task_name(round_name: str, batch: int, *, kind: str = KIND_REVIEW) -> str:
    """``<round>-<batch:03d>`` or ``<round>-review2-<batch:03d>``."""
    return f"{round_name}-{batch:03d}" if kind == KIND_REVIEW else f"{round_name}-{kind}-{batch:03d}"


# ----------------------------------------------------------------------------------------------
# Push


def _round_inputs(round_dir: Path) -> tuple[str, dict[str, Case]]:
    round_name = check_id(round_dir.name, what="round")
    return round_name, load_cases(RoundPaths(round_dir).cases)


def _image_paths(round_dir: Path, images: Sequence[str]) -> list[Path]:
    errors: list[InputError] = []
    paths = []
    for name in images:
        p = RoundPaths(round_dir).image(name)
        if not p.is_file():
            errors.append(InputError("image file not found", file=p))
        elif p.resolve().name != name:  # the SDK uploads resolved paths; a renaming symlink would change the frame name
            errors.append(InputError(f"image is a link to {p.resolve().name!r}; frame names must equal case images",
                                     file=p))
        paths.append(p)
    if errors:
        raise InputErrors(errors)
    return paths


# ----------------------------------------------------------------------------------------------
# Whose project: the data root's id


ROOT_ID_FILE = ".byu-id"


def data_root_of(round_dir: str | Path) -> Path:
    """The data root of a round directory (``<data root>/review/<round>``)."""
    return Path(round_dir).absolute().parent.parent


def data_root_id(root: str | Path) -> str:
    """The data root's stable id: a random UUID in ``<root>/.byu-id``, made once, on first use.

    It tells this data root's CVAT projects from those of every other data root on a shared server (see
    :func:`default_project_name`). Keep the file with the data root (a copy of the data root is the same root to
    CVAT); a data root that lost it gets a new id, and its next push makes new projects.
    """
    path = Path(root) / ROOT_ID_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{ROOT_ID_FILE}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, file_mode())  # mkstemp makes 0600: follow the umask like every stored file
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(f"{uuid.uuid4()}\n")
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first: theirs wins
                os.link(tmp, path)  # creates, never replaces
        finally:
            os.unlink(tmp)
    try:
        text = path.read_text(encoding="utf-8").strip()
        return str(uuid.UUID(text))
    except (ValueError, UnicodeDecodeError):
        raise InputError("not a data root id (one UUID); restore the file, or delete it if this data root never "
                         "pushed to CVAT", file=path) from None


def short_root_id(root: str | Path) -> str:
    """The first 8 hex digits of :func:`data_root_id` (what project names carry)."""
    return uuid.UUID(data_root_id(root)).hex[:8]


def default_project_name(round_dir: str | Path) -> str:
    """``<round>-<short data root id>`` (``round1-3f2a9c1e``): two data roots' rounds never share a project."""
    return f"{Path(round_dir).name}-{short_root_id(data_root_of(round_dir))}"


def _made_here(name: str, record: Mapping[str, Any], project_id: int, root_id: str) -> bool:
    """Whether this data root made the project: its name carries the data root's id, or the round's record says
    this data root pushed tasks into it (a record made before the id existed: tasks with ids, no ``data_root``)."""
    if name.endswith(f"-{root_id}"):
        return True
    recorded = record.get("project") or {}
    if recorded.get("id") != project_id or recorded.get("name") != name:
        return False
    if record.get("data_root"):
        return record["data_root"] == root_id
    return any(t.get("id") for t in record.get("tasks", []))


def _ensure_project(client: Client, name: str, labels: Sequence[str], record: dict[str, Any], *,
                    root_id: str, root: Path, own_name: str) -> Project:
    """Find (or create) the round's project, check that this data root made it, then add missing labels.

    Everything is checked before anything on the server changes: a project of another data root is refused
    before a label is added (and before the caller writes the record)."""
    project = None
    pid = (record.get("project") or {}).get("id")
    if pid:
        try:
            project = client.projects.retrieve(pid)
        except ApiException as exc:
            if exc.status != 404:
                raise
        if project is not None and project.name != name:
            project = None
    if project is None:
        found = [p for p in client.projects.list(name=name) if p.name == name]
        if len(found) > 1:
            raise CvatError(f"{len(found)} CVAT projects are named {name!r} (ids {[p.id for p in found]}); "
                            "delete the extra ones or push with another project name")
        if found:
            project = found[0]
        else:
            project = client.projects.create(models.ProjectWriteRequest(
                name=name, labels=[models.PatchedLabelRequest(name=lab, type=label_type(lab)) for lab in labels]))
            log.info("created CVAT project %s (id %s)", name, project.id)
            return project
    if not _made_here(name, record, project.id, root_id):
        raise CvatError(
            f"CVAT project {name!r} (id {project.id}) was not made by this data root ({root}, id {root_id}): its "
            "name does not carry that id and the round's tasks.json does not record pushing to it. A CVAT server "
            "is shared by many people: push with another project name (--project-name; this data root's own is "
            f"{own_name!r}); if the project is this data root's and {root / ROOT_ID_FILE} was replaced, restore "
            "that file. Nothing was changed on the server.")
    have = {lab.name: getattr(lab, "type", None) for lab in project.get_labels()}
    missing = [lab for lab in labels if lab not in have]
    wrong = [lab for lab in labels if lab in have and have[lab] not in (label_type(lab), "any", None)]
    if wrong:
        log.warning("CVAT project %s has label(s) %s of another type than this round uses (%s)", name, wrong,
                    ", ".join(f"{lab}: {label_type(lab)}" for lab in wrong))
    if missing:
        project.update(models.PatchedProjectWriteRequest(
            labels=[models.PatchedLabelRequest(name=lab, type=label_type(lab)) for lab in missing]))
        log.info("added labels %s to CVAT project %s", missing, name)
    return project


def _task_size(task: Task) -> int:
    """Frames of a task; 0 for a task without data (CVAT 2.23 then leaves ``size`` out of the task)."""
    size = getattr(task, "size", None)  # the SDK's ApiAttributeError is an AttributeError
    return int(size) if size is not None else 0


def _has_data(task: Task) -> bool:
    """Whether a data upload was ever started into the task (CVAT 2.23 leaves ``data`` out while there is none)."""
    return getattr(task, "data", None) is not None


def _frame_names(task: Task) -> list[str]:
    return [f.name for f in task.get_frames_info()]


def _ensure_task(client: Client, round_dir: Path, record: dict[str, Any], *, project_id: int,
                 name: str, kind: str, batch: int, paths: Sequence[Path], image_quality: int) -> dict[str, Any]:
    """Make task ``name`` exist with exactly ``paths`` as its frames; return its record entry."""
    images = [p.name for p in paths]
    entry = {"name": name, "id": None, "kind": kind, "batch": batch, "images": images,
             "state": "created", "size": 0}
    existing = sorted((t for t in client.tasks.list(project_id=project_id, name=name) if t.name == name),
                      key=lambda t: t.id)
    with_data = [t for t in existing if _task_size(t) > 0]
    if with_data:
        keep = with_data[0]
        frames = _frame_names(keep)
        if sorted(frames) != sorted(images):
            raise CvatError(
                f"CVAT task {name!r} (id {keep.id}) holds {len(frames)} images that differ from batch {batch} "
                f"of cases.csv ({len(images)} images); the round changed after it was pushed. "
                "Push it under a new round name, or delete the task in CVAT first.")
        for extra in with_data[1:]:
            log.warning("CVAT task %s has a duplicate with data (id %s); left alone", name, extra.id)
        for empty in (t for t in existing if _task_size(t) == 0):
            log.info("deleting empty duplicate CVAT task %s (id %s)", name, empty.id)
            empty.remove()
        entry.update(id=keep.id, state="uploaded", size=_task_size(keep), images=frames)
        _put_entry(round_dir, record, entry)
        return entry

    recorded = _entry(record, name)
    if recorded and recorded.get("id") and recorded["id"] not in {t.id for t in existing}:
        log.warning("CVAT task %s (id %s in tasks.json) is gone from the server; creating it again (the "
                    "annotations made in it are gone with it)", name, recorded["id"])
    task = None
    for t in existing:
        if task is None and not _has_data(t):
            task = t  # created, never given data: upload into it
            continue
        log.info("deleting CVAT task %s (id %s): its data upload did not complete", name, t.id)
        t.remove()
    if task is None:
        task = client.tasks.create(models.TaskWriteRequest(name=name, project_id=project_id))
        log.info("created CVAT task %s (id %s)", name, task.id)
    entry["id"] = task.id
    _put_entry(round_dir, record, entry)

    task.upload_data(resources=list(paths), resource_type=ResourceType.LOCAL,
                     params={"image_quality": image_quality, "sorting_method": "predefined"})
    task.fetch()
    frames = _frame_names(task)
    if sorted(frames) != sorted(images):
        raise CvatError(f"CVAT task {name!r} (id {task.id}) ended up with frames {frames[:5]}... "
                        f"instead of the {len(images)} uploaded images")
    entry.update(state="uploaded", size=_task_size(task), images=frames)
    _put_entry(round_dir, record, entry)
    log.info("uploaded %d images to CVAT task %s (id %s)", len(frames), name, task.id)
    return entry


def _push_batches(client: Client, config: CvatConfig, round_dir: Path, record: dict[str, Any], *,
                  project_id: int, kind: str, batches: Sequence[tuple[int, Sequence[str]]],
                  image_quality: int) -> list[dict[str, Any]]:
    round_name = round_dir.name
    out = []
    for batch, images in batches:
        name = task_name(round_name, batch, kind=kind)
        paths = _image_paths(round_dir, images)
        out.append(_retry(config, _ensure_task, client, round_dir, record, project_id=project_id,
                          name=name, kind=kind, batch=batch, paths=paths, image_quality=image_quality,
                          what=f"push task {name}", predicate=_transient_or_failed_processing))
    return out


def _prepare(client: Client, config: CvatConfig, round_dir: Path, cases: Mapping[str, Case], *,
             project_name: str | None, batch_size: int) -> tuple[dict[str, Any], Project]:
    record = load_record(round_dir)
    if record.get("batch_size") not in (None, batch_size) and record["tasks"]:
        raise InputError(f"round was pushed with batch size {record['batch_size']}, not {batch_size}",
                         file=RoundPaths(round_dir).tasks, field="batch_size")
    labels = tag_vocabulary(cases.values(), points=has_geometry(cases.values(), RoundPaths(round_dir).geometry))
    root = data_root_of(round_dir)
    root_id = short_root_id(root)
    name = project_name or (record.get("project") or {}).get("name") or default_project_name(round_dir)
    project = _retry(config, _ensure_project, client, name, labels, record, root_id=root_id, root=root,
                     own_name=default_project_name(round_dir), what=f"ensure project {name}")
    record.update(round=round_dir.name, server=config.url, project={"id": project.id, "name": project.name},
                  data_root=root_id, labels=labels, batch_size=batch_size)
    RoundPaths(round_dir).cvat.mkdir(parents=True, exist_ok=True)
    _save_record(round_dir, record)
    return record, project


def push_round(
    round_dir: str | Path,
    *,
    config: CvatConfig,
    client: Client | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    image_quality: int = 95,
    project_name: str | None = None,
) -> list[dict[str, Any]]:
    """Push a round's case images to CVAT (idempotent; see the module doc). Returns the task entries.

    Reads ``cases.csv`` and ``images/`` of ``round_dir`` (``review/<round>``); the round name is
    the directory name. All images are checked before anything is sent.
    """
    round_dir = Path(round_dir)
    if batch_size < 1:
        raise InputError("batch size must be at least 1", field="batch_size")
    _, cases = _round_inputs(round_dir)
    images = list(cases)
    _image_paths(round_dir, images)  # fail early, before touching the server
    batches = [(i // batch_size + 1, images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    with cvat_client(config, client) as c:
        record, project = _prepare(c, config, round_dir, cases, project_name=project_name, batch_size=batch_size)
        return _push_batches(c, config, round_dir, record, project_id=project.id, kind=KIND_REVIEW,
                             batches=batches, image_quality=image_quality)


def push_second_review(
    round_dir: str | Path,
    *,
    config: CvatConfig,
    client: Client | None = None,
    images: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    image_quality: int = 95,
) -> list[dict[str, Any]]:
    """Route ``unsure`` cases to a second review: ``<round>-review2-<batch>`` tasks in the round's project.

    ``images`` defaults to the images whose decision in ``decisions.csv`` includes ``unsure``.
    Images already in a second-review task are not sent again; unfinished second-review tasks
    are completed first. Returns the entries of all second-review tasks.
    """
    round_dir = Path(round_dir)
    paths = RoundPaths(round_dir)
    _, cases = _round_inputs(round_dir)
    if images is None:
        wanted = unsure_images(read_decisions(paths.decisions))
        images = [img for img in cases if img in wanted]
    unknown = [img for img in images if img not in cases]
    if unknown:
        raise InputErrors([InputError(f"image {img!r} is not a case of this round", file=paths.cases)
                           for img in unknown])
    _image_paths(round_dir, images)
    record = load_record(round_dir)
    if not record.get("project"):
        raise InputError("round has not been pushed yet (no project in the record)", file=paths.tasks)
    with cvat_client(config, client) as c:
        record, project = _prepare(c, config, round_dir, cases, project_name=None,
                                   batch_size=record.get("batch_size") or batch_size)
        old = sorted((t for t in record["tasks"] if t.get("kind") == KIND_REVIEW2), key=lambda t: t["batch"])
        batches: list[tuple[int, Sequence[str]]] = [(t["batch"], list(t["images"])) for t in old]
        sent = {img for _, imgs in batches for img in imgs}
        new = [img for img in images if img not in sent]
        nxt = max((b for b, _ in batches), default=0) + 1
        for i in range(0, len(new), batch_size):
            batches.append((nxt, new[i:i + batch_size]))
            nxt += 1
        return _push_batches(c, config, round_dir, record, project_id=project.id, kind=KIND_REVIEW2,
                             batches=batches, image_quality=image_quality)


# ----------------------------------------------------------------------------------------------
# Status


STATUS_COLUMNS = ["task", "task_id", "kind", "images", "jobs", "new", "in progress", "completed",
                  "rejected", "assignees", "remote"]


def _task_status(client: Client, entry: dict[str, Any]) -> dict[str, Any]:
    row = {"task": entry["name"], "task_id": entry.get("id"), "kind": entry.get("kind", KIND_REVIEW),
           "images": len(entry.get("images", [])), "jobs": 0, "new": 0, "in progress": 0,
           "completed": 0, "rejected": 0, "assignees": "", "remote": "ok"}
    if not entry.get("id"):
        row["remote"] = "not created"
        return row
    try:
        task = client.tasks.retrieve(entry["id"])
    except ApiException as exc:
        if exc.status == 404:
            row["remote"] = "missing"
            return row
        raise
    if _task_size(task) == 0:
        row["remote"] = "no data"
    jobs = task.get_jobs()
    row["jobs"] = len(jobs)
    names = set()
    for job in jobs:
        state = str(job.state)
        if state in ("new", "in progress", "completed", "rejected"):  # CVAT job states
            row[state] += 1
        if job.assignee:
            names.add(job.assignee.username)
    row["assignees"] = ";".join(sorted(names))
    return row


def round_status(round_dir: str | Path, *, config: CvatConfig, client: Client | None = None) -> pd.DataFrame:
    """One row per task of the round: job counts by state (new / in progress / completed / rejected).

    ``remote`` is ``ok``, ``no data`` (push again), ``missing`` (deleted on the server) or
    ``not created``.
    """
    round_dir = Path(round_dir)
    record = load_record(round_dir)
    with cvat_client(config, client) as c:
        rows = [_retry(config, _task_status, c, entry, what=f"status of {entry['name']}")
                for entry in record["tasks"]]
    return pd.DataFrame(rows, columns=STATUS_COLUMNS)


# ----------------------------------------------------------------------------------------------
# Pull


def _annotations_from_zip(path: Path, max_bytes: int) -> bytes:
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                info = zf.getinfo("annotations.xml")
            except KeyError:
                raise CvatError(f"export {path.name} holds no annotations.xml") from None
            if info.file_size > max_bytes:
                raise InputError(f"annotations.xml is {info.file_size} bytes, more than the {max_bytes}-byte limit",
                                 file=path)
            with zf.open(info) as fh:
                data = fh.read(max_bytes + 1)
    except zipfile.BadZipFile as exc:
        raise CvatError(f"export is not a zip file: {exc}") from None
    if len(data) > max_bytes:
        raise InputError(f"annotations.xml is more than the {max_bytes}-byte limit", file=path)
    return data


def _export_task(client: Client, task_id: int, cvat_dir: Path, max_bytes: int, name: str) -> bytes:
    task = client.tasks.retrieve(task_id)
    with tempfile.TemporaryDirectory(dir=cvat_dir, prefix=".export-") as tmp:
        out = Path(tmp) / "export.zip"
        task.export_dataset(EXPORT_FORMAT, out, include_images=False)
        if not out.is_file():
            raise CvatError(f"CVAT gave no export file for task {task.name!r} (id {task_id})")
        try:
            return _annotations_from_zip(out, max_bytes)
        except InputError as exc:  # name the task, not the temp file that is about to be deleted
            raise InputError(f"export of CVAT task {name!r} (id {task_id}): {exc.reason}") from None


def _task_gone(config: CvatConfig, record: Mapping[str, Any], name: str, task_id: int) -> CvatError:
    where = ""
    if record.get("server") and record["server"] != config.url:
        where = f" (the round was pushed to {record['server']}, not {config.url}: check {ENV_URL})"
    return CvatError(
        f"CVAT task {name!r} (id {task_id}) is gone from the server (HTTP 404){where}: it was deleted in CVAT, and "
        "the annotations made in it are gone with it. Run push again to create it anew (its images are sent "
        "again, to be tagged again); the exports pulled before (cvat/*.xml) and decisions.csv are kept. "
        "Nothing was changed.")


def _jobs(client: Client, task_id: int) -> list[dict[str, Any]]:
    jobs = client.tasks.retrieve(task_id).get_jobs()
    return [{"id": j.id, "state": str(j.state), "stage": str(getattr(j, "stage", "") or ""),
             "start_frame": int(j.start_frame), "stop_frame": int(j.stop_frame),
             "assignee": j.assignee.username if j.assignee else ""} for j in sorted(jobs, key=lambda j: j.start_frame)]


@dataclass
class PullReport:
    """What a pull did: the exports it took, the decisions, and where a rejected export was put aside.

    ``result`` holds the decisions now in ``decisions.csv``: those the pull collected, plus ``kept``, the cases
    whose decision in the previous ``decisions.csv`` the pull did not collect again because their CVAT job is not
    completed now (reopened, in progress; or the decision was made outside CVAT), kept as they were.
    ``withdrawn``: cases whose earlier CVAT decision a person took back (the image untagged in a job that is
    completed), dropped. ``changed``: whether ``decisions.csv`` changed.
    """

    exports: list[Path]
    result: DecisionsResult
    written: bool
    rejected_dir: Path | None = None
    kept: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)
    changed: bool = False


def _job_states_by_task(record: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Per task name, per image, the state of the job holding it (frame i is ``images[i]``)."""
    out: dict[str, dict[str, str]] = {}
    for t in record["tasks"]:
        jobs = t.get("jobs") or []
        out[str(t["name"])] = {
            image: next((str(j.get("state", "")) for j in jobs if int(j["start_frame"]) <= i <= int(j["stop_frame"])),
                        "")
            for i, image in enumerate(t.get("images", []))}
    return out


def _source_task(source: Any) -> str | None:
    """``cvat:<task name>.xml`` -> the task name (None for decisions made outside CVAT)."""
    text = str(source or "")
    return text[len("cvat:"):-len(".xml")] if text.startswith("cvat:") and text.endswith(".xml") else None


def _with_previous(result: DecisionsResult, previous: pd.DataFrame, record: Mapping[str, Any],
                   cases: Mapping[str, Case]) -> tuple[DecisionsResult, list[str], list[str]]:
    """The pull's decisions plus the previous ones it must not lose; returns (merged, kept, withdrawn).

    A previous decision is kept when the pull has none for its case and the decision was made outside CVAT, or
    some job holding its image is not completed now (reopened, in progress), or the pull has errors; else (a
    CVAT decision, every job holding the image completed, the image untagged now) a person took it back: it is
    dropped (withdrawn). A previous second-review decision also stands over the first review's decision while
    its second-review job is not completed again."""
    states = _job_states_by_task(record)
    order = {str(t["name"]): (t.get("kind", KIND_REVIEW) != KIND_REVIEW, t.get("batch", 0)) for t in record["tasks"]}
    new_source = {str(c): src for c, src in zip(result.decisions.get("case_id", []), result.decisions.get(
        "source", []), strict=True)}
    before, over, kept, withdrawn = [], [], [], []
    for row in previous.to_dict("records"):
        case_id, image = str(row["case_id"]), str(row["image"])
        task = _source_task(row.get("source"))
        if case_id in new_source:
            newer = _source_task(new_source[case_id])
            if (task in order and newer in order and order[task] > order[newer]
                    and states[task].get(image) != "completed"):
                over.append(row)  # e.g. a second review reopened: its decision stands over the first review's
                kept.append(case_id)
            continue
        held = [by_image[image] for by_image in states.values() if image in by_image]
        if task is not None and not result.errors and held and all(s == "completed" for s in held):
            withdrawn.append(case_id)
            continue
        before.append(row)
        kept.append(case_id)
    if not (before or over):
        return result, kept, withdrawn
    merged = combine_results([DecisionsResult(pd.DataFrame(before, columns=previous.columns)), result,
                              DecisionsResult(pd.DataFrame(over, columns=previous.columns))], cases)
    order_of = {c.case_id: i for i, c in enumerate(cases.values())}
    return merged, sorted(kept, key=lambda c: order_of.get(c, len(order_of))), withdrawn


def pull_round(
    round_dir: str | Path,
    *,
    config: CvatConfig,
    client: Client | None = None,
    max_bytes: int = DEFAULT_MAX_XML_BYTES,
    include_incomplete: bool = False,
    allow_errors: bool = False,
) -> PullReport:
    """Export every task of the round ("CVAT for images 1.1", no images) and turn the exports into decisions.

    Everything is fetched into a staging folder first and validated there; only a valid pull (or one with
    ``allow_errors``) replaces ``cvat/<task name>.xml``, the task record and ``decisions.csv``. A pull that does not
    validate leaves the previous exports, record and decisions exactly as they were and keeps what it fetched in
    ``cvat/rejected/<time>/`` (with ``problems.txt``) for inspection. Decisions from jobs that are not completed
    are left out (and counted) unless ``include_incomplete``. The record gains per task ``jobs`` (id, state,
    frames, assignee), ``job_assignee``, ``exported_at`` and ``export_sha256``.

    No decision a person made is lost silently: a case of the previous ``decisions.csv`` that this pull does not
    collect (its job was reopened or is in progress; a decision imported from outside CVAT) keeps its previous
    row, and is listed in ``PullReport.kept``; a CVAT decision whose image is now untagged in a completed job was
    taken back by a person and is dropped (``PullReport.withdrawn``). A pull that collects nothing new leaves
    ``decisions.csv`` as it was (``PullReport.changed`` is false). A task deleted on the server is a
    :class:`CvatError` naming it (push again to create it anew); nothing is changed then.
    """
    round_dir = Path(round_dir)
    paths = RoundPaths(round_dir)
    record = load_record(round_dir)
    if not record["tasks"]:
        raise InputError("round has no CVAT tasks yet (push first)", file=paths.tasks)
    cvat_dir = paths.cvat
    staged_record = json.loads(json.dumps(record))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    staging = cvat_dir / f".pull-{stamp}"
    staging.mkdir(parents=True)
    try:
        with cvat_client(config, client) as c:
            for entry in staged_record["tasks"]:
                name = check_id(str(entry["name"]), what="task name", file=paths.tasks)
                if not entry.get("id") or entry.get("state") != "uploaded":
                    raise CvatError(f"task {name} has no uploaded data yet; run push again")
                gone = False
                try:
                    jobs = _retry(config, _jobs, c, entry["id"], what=f"jobs of {name}")
                    xml = _retry(config, _export_task, c, entry["id"], cvat_dir, max_bytes, name,
                                 what=f"export {name}")
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    gone = True
                if gone:  # outside the except block: no SDK exception (it carries headers) rides along
                    raise _task_gone(config, record, name, entry["id"])
                write_bytes(staging / f"{name}.xml", xml)
                who = sorted({j["assignee"] for j in jobs if j["assignee"]})
                entry.update(jobs=jobs, job_assignee=who[0] if len(who) == 1 else "",
                             exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
                             export_sha256=sha256_bytes(xml))
        staged = RoundPaths(staging)  # the round's layout, so that the round's reader validates it
        shutil.copyfile(paths.cases, staged.cases)
        staged.cvat.mkdir()
        for entry in staged_record["tasks"]:
            os.replace(staging / f"{entry['name']}.xml", staged.export(entry["name"]))
        write_json(staged.tasks, staged_record)
        try:
            result = decisions_from_round(staging, include_incomplete=include_incomplete, max_bytes=max_bytes,
                                          geometry_dir=paths.geometry)
        except InputError as exc:  # a file-level problem (hostile XML, not an export, too big)
            result = DecisionsResult(decisions=pd.DataFrame(), errors=[str(exc)])
        if result.errors and not allow_errors:
            rejected = paths.rejected / stamp
            rejected.parent.mkdir(parents=True, exist_ok=True)
            (staged.cvat / "problems.txt").write_text("\n".join(result.errors) + "\n", encoding="utf-8")
            os.replace(staged.cvat, rejected)
            log.warning("pull of round %s rejected (%d problem(s)); the previous exports and decisions are kept; "
                        "what was fetched is in %s", round_dir.name, len(result.errors), rejected)
            return PullReport(exports=[], result=result, written=False, rejected_dir=rejected)
        # the previous decisions a person made are merged in before anything is replaced
        previous = read_decisions(paths.decisions) if paths.decisions.exists() else None
        kept: list[str] = []
        withdrawn: list[str] = []
        if previous is not None:
            result, kept, withdrawn = _with_previous(result, previous, staged_record, load_cases(paths.cases))
        changed = previous is None or paths.decisions.read_bytes() != decisions_bytes(result.decisions)
        exports = []
        for entry in staged_record["tasks"]:
            target = paths.export(entry["name"])
            os.replace(staged.export(entry["name"]), target)
            exports.append(target)
        _save_record(round_dir, staged_record)
        if changed:
            write_decisions(result, paths.decisions, allow_errors=allow_errors)
        for path in exports:
            log.info("exported CVAT task %s to %s", path.stem, path)
        if kept:
            log.warning("round %s: kept %d decision(s) from the previous decisions.csv that this pull did not "
                        "collect (their CVAT job is not completed now): %s", round_dir.name, len(kept),
                        ", ".join(kept[:20]) + (" ..." if len(kept) > 20 else ""))
        if withdrawn:
            log.warning("round %s: dropped %d decision(s) taken back in CVAT (untagged in a completed job): %s",
                        round_dir.name, len(withdrawn), ", ".join(withdrawn[:20]) + (" ..." if len(withdrawn) > 20
                                                                                      else ""))
        if not changed:
            log.info("round %s: decisions.csv unchanged (%d decision(s))", round_dir.name, len(result.decisions))
        return PullReport(exports=exports, result=result, written=True, kept=kept, withdrawn=withdrawn,
                          changed=changed)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

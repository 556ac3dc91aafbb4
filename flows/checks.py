"""What a round checks before any heavy work, and how a form's field is named in an error.

:func:`check_review_ready` is the first task of every round flow (round1, round2, external). It checks that the
reviewer can work (CVAT: a server is configured, answers and takes the credentials; scripted: the truth table reads;
import: the decisions CSV reads, or its folder can take one), that the run can wait the way the form says, and that
no target version belongs to someone else. A wrong form then fails in seconds, not after the predictions, naming
the field by the title the form shows (:class:`FormError`: ``'CVAT URL' (review.cvat_url): ...``).

:class:`RoundForm` is the base of the rounds' parameter models: the round name is checked like every id, and the
form asks for it (an emptied field is dropped by the Prefect UI, which would otherwise bring back the default and
reuse that round's review).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import deployment
from pydantic import BaseModel, ConfigDict, field_validator

from byu.errors import ByuError, InputError, InputErrors, VersionExistsError
from byu.labels.store import LabelStore
from byu.paths import check_id
from flows.base import ReviewSettings, data_root, make_reviewer, refuse_existing_version

ROUND_NAME_TITLE = "Round name"


class FormError(InputError):
    """An input error of one form field, named by the title the form shows and by its path in the parameters."""

    def __init__(self, message: str, field: str, title: str, file: str | Path | None = None) -> None:
        super().__init__(message, field=field, file=file)
        self.title = title
        Exception.__init__(self, f"'{title}' ({field}): {message}" + (f" [{self.file}]" if self.file else ""))

    def __reduce__(self):  # keyword-free rebuild (Prefect pickles the exceptions of failed runs)
        return type(self), (self.reason, self.field, self.title, self.file)


class ExistingTargetError(FormError, VersionExistsError):
    """A target version of the form exists and was made by something else than this round."""


def field_title(model: type[BaseModel], name: str) -> str:
    """The title a form shows for ``model``'s field ``name`` (the name itself when it has none)."""
    return model.model_fields[name].title or name


def review_field(name: str, message: str, *, file: str | Path | None = None) -> FormError:
    """A :class:`FormError` of the review settings' field ``name`` (``review.<name>``)."""
    return FormError(message, f"review.{name}", field_title(ReviewSettings, name), file=file)


# ------------------------------------------------------------------------------------------ round names


def valid_round_name(value: object) -> str:
    """``value`` if it is a round name (a non-empty id: letters, digits, '.', '_', '-'), else a :class:`FormError`."""
    if not isinstance(value, str) or not value.strip():
        raise FormError("empty: give the round a name (its files go to review/ROUND/; the name of an earlier "
                        "round would reuse that round's review)", "round_name", ROUND_NAME_TITLE)
    try:
        return check_id(value, what="round name")
    except InputError as exc:
        raise FormError(exc.reason, "round_name", ROUND_NAME_TITLE) from None


def _form_asks_for_round_name(schema: dict[str, Any]) -> None:
    """The form schema asks for the round name: the Prefect UI drops an emptied text field (its value becomes
    undefined), and a dropped field would silently be the default round's name again."""
    required = list(schema.get("required") or [])
    if "round_name" not in required:
        schema["required"] = [*required, "round_name"]
    schema.get("properties", {}).get("round_name", {})["minLength"] = 1


class RoundForm(BaseModel):
    """Base of the rounds' parameter models (they declare ``round_name`` with their own default)."""

    model_config = ConfigDict(json_schema_extra=_form_asks_for_round_name)

    @field_validator("round_name", mode="before", check_fields=False)
    @classmethod
    def _round_name(cls, value: object) -> str:
        return valid_round_name(value)


Target = tuple[str, str, str, tuple[str, ...]]  # field, title, version name, versions it is made of (if any)


def target_versions(params: BaseModel, *fields: str, made_of: Sequence[str] = ()) -> list[Target]:
    """The target-version fields of ``params`` for :func:`check_review_ready`. ``made_of``: a combined version is
    written only when these versions exist (the round's own new version aside), so it is checked only then."""
    return [(f, field_title(type(params), f), str(getattr(params, f)), tuple(made_of)) for f in fields]


# ------------------------------------------------------------------------------------------ the reviewer


def _cvat_ready(data_dir: str, round_name: str, review: ReviewSettings) -> str:
    from byu.review.cvat import ENV_URL, CvatError, connect

    if not (review.cvat_url or os.environ.get(ENV_URL)):
        raise review_field("cvat_url", f"no CVAT server configured: fill in the server's URL (http://HOST:8080) or "
                           f"set {ENV_URL} where the flow runs, or choose another 'Reviewer' (scripted, import)")
    try:
        config = make_reviewer(data_dir, round_name, review).config
    except InputError as exc:
        name = (exc.field or "review.cvat_url").removeprefix("review.")
        raise review_field(name if name in ReviewSettings.model_fields else "cvat_url", exc.reason) from None
    except Exception as exc:  # the Secret block: missing, or no access
        raise review_field("cvat_secret_block", f"cannot read the Prefect Secret block "
                           f"{review.cvat_secret_block!r}: {type(exc).__name__}: {str(exc)[:200]}") from None
    quick = config.model_copy(update={"max_attempts": min(config.max_attempts, 2), "backoff_max": 2.0})
    try:
        connect(quick).close()
    except CvatError as exc:
        raise review_field("cvat_url", str(exc)) from None
    except Exception as exc:
        from cvat_sdk.api_client.exceptions import ApiException

        # an SDK exception's text carries response headers (cookies): its status only
        why = f"HTTP {exc.status}" if isinstance(exc, ApiException) else f"{type(exc).__name__}: {str(exc)[:300]}"
        raise review_field("cvat_url", f"cannot reach the CVAT server at {config.url} ({why})") from None
    return f"CVAT at {config.url} answers and takes the credentials"


def _scripted_ready(data_dir: str, round_name: str, review: ReviewSettings) -> str:
    if not review.truth:
        raise review_field("truth", "the scripted reviewer answers from a truth table: fill in a label version "
                           "name or a labels file")
    try:
        reviewer = make_reviewer(data_dir, round_name, review)
    except (ByuError, OSError, ValueError, LookupError) as exc:
        reason = exc.reason if isinstance(exc, InputError) else str(exc)
        file = exc.file if isinstance(exc, InputError) else None
        raise review_field("truth", f"cannot read the truth table {review.truth!r}: {reason}", file=file) from None
    return f"truth table {review.truth!r} reads ({len(reviewer.truth.picks)} pick(s))"


def _import_ready(data_dir: str, round_name: str, review: ReviewSettings) -> str:
    csv = Path(make_reviewer(data_dir, round_name, review).csv)
    if csv.exists():
        if not csv.is_file():
            raise review_field("decisions_csv", f"{csv} is a folder, not a decisions CSV")
        try:
            with open(csv, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise review_field("decisions_csv", f"cannot read {csv}: {exc.strerror or exc}") from None
        return f"decisions CSV {csv} reads"
    folder = csv.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise review_field("decisions_csv", f"the decisions CSV cannot go to {csv}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise review_field("decisions_csv", f"the decisions CSV cannot go to {csv}: {folder} is not writable")
    return f"decisions CSV {csv} can be written"


READY = {"cvat": _cvat_ready, "scripted": _scripted_ready, "import": _import_ready}


def review_problems(data_dir: str, round_name: str, review: ReviewSettings,
                    targets: Sequence[Target] = ()) -> tuple[list[str], list[InputError]]:
    """What is ready (in words) and every problem found (see :func:`check_review_ready`)."""
    ok: list[str] = []
    problems: list[InputError] = []
    try:
        ok.append(READY[review.reviewer](data_dir, round_name, review))
    except InputError as exc:
        problems.append(exc)
    if review.reviewer != "scripted" and review.wait.mode == "suspend" and not deployment.id:
        problems.append(FormError("suspend needs a run from a deployment (the run restarts when resumed): choose "
                                  "auto, poll or pause", "review.wait.mode",
                                  field_title(type(review.wait), "mode")))
    root = data_root(data_dir)
    store = LabelStore(root.labels)
    for field, title, version, made_of in targets:
        try:
            if not all(store.exists(v) for v in made_of):
                continue  # not combined in this run
            refuse_existing_version(root, version, round_name)
        except VersionExistsError as exc:
            problems.append(ExistingTargetError(str(exc), field, title))
        except InputError as exc:  # not a valid version name
            problems.append(FormError(exc.reason, field, title))
        else:
            ok.append(f"{title} {version!r} can be written")
    return ok, problems


@task(name="check-review-ready", cache_policy=NO_CACHE)
def check_review_ready(data_dir: str, round_name: str, review: ReviewSettings,
                       targets: Sequence[Target] = ()) -> str:
    """Fail in seconds, naming the form's field, when the round could not finish: the reviewer cannot work or a
    target version (see :func:`target_versions`) exists and was not made by this round.
    Every problem is listed at once. Returns what was checked, in words."""
    ok, problems = review_problems(data_dir, round_name, review, targets)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise InputErrors(problems)
    text = f"round {round_name}: {review.reviewer} reviewer ready: " + "; ".join(ok)
    get_run_logger().info(text)
    return text


__all__ = ["ExistingTargetError", "FormError", "RoundForm", "check_review_ready", "field_title", "review_field",
           "review_problems", "target_versions", "valid_round_name"]

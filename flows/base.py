"""What every flow shares below its tasks: the review settings of a round's form, the data root and the paths typed
into forms, the cache policy, retries and the reviewer a form describes.

Paths given to a flow (model runs, truth tables, decisions CSVs, overrides, splits) are resolved against the data
root when relative (:func:`data_path`), so a deployment's defaults work wherever ``BYU_DATA`` points.

Caching: tasks that do real work persist their results in Prefect's local storage (``$PREFECT_HOME/storage``) under
a key of everything the result follows from (:func:`cache_on`):

- their inputs and their own source lines (Prefect's ``INPUTS + TASK_SOURCE``);
- the byu code they call (:class:`ByuCode`: ``byu.__version__`` and a hash of the byu package's source files,
  computed once per process, :func:`byu_code_key`), so another byu (another decoding, another renderer) recomputes;
- the content of what they read (:class:`Reads`: a function of the task's inputs names the files and stored
  tomograms it reads; :func:`content_key` keys a file on its sha256 and a tomogram on its recorded content digest
  plus its files' names, sizes and mtimes, :func:`byu.tomo.io.content_stamp`), so a retrained checkpoint, an edited
  label version or a re-ingested or edited tomogram recomputes, with no fingerprint among the task's arguments.

A cached result whose output files are gone is recomputed (:func:`cached`). Retries (with backoff) are for
transient failures only: a ``ByuError`` (bad input, a refused version) fails at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.input import RunInput
from prefect.utilities.hashing import hash_objects
from pydantic import BaseModel, Field

from byu.atomic import sha256_file
from byu.errors import ByuError, InputError, VersionExistsError
from byu.labels.store import LabelStore
from byu.paths import DataRoot
from byu.review.settings import MiningSettings, QualitySettings, RenderSettings, WaitSettings

RETRY_DELAYS: list[float] = [5.0, 30.0, 120.0]  # backoff for portal and CVAT calls
DAY_S = 24 * 3600


# ------------------------------------------------------------------------------------------ parameters


class ReviewSettings(BaseModel):
    """Who reviews the cases, and the mining, image and waiting settings of the round (the library's own)."""

    reviewer: Literal["cvat", "scripted", "import"] = Field(
        default="cvat", title="Reviewer",
        description="cvat: push tasks to CVAT and wait for annotators · scripted: answer from a truth table "
        "(demo, tests) · import: wait for a decisions CSV made outside CVAT")
    truth: str | None = Field(default=None, title="Truth labels (scripted)",
                              description="scripted reviewer: a label version name or a file (relative paths are "
                              "under the data root)")
    decisions_csv: str | None = Field(
        default=None, title="Decisions CSV (import)",
        description="import reviewer: the CSV people fill outside CVAT (case_id or image, tags, reviewer); "
        "relative paths are under the data root; default review/ROUND/outside_decisions.csv")
    batch_size: int = Field(default=100, ge=1, title="Images per CVAT task",
                            description="case images per CVAT task (one job each)")
    cvat_url: str | None = Field(default=None, title="CVAT URL", description="default: env BYU_CVAT_URL")
    cvat_secret_block: str | None = Field(
        default=None, title="CVAT secret block",
        description="name of a Prefect Secret block holding the CVAT password or token (default: env "
        "BYU_CVAT_PASSWORD / BYU_CVAT_TOKEN)")
    overrides_csv: str | None = Field(default=None, title="Manual overrides CSV",
                                      description="applied after the review (relative: under the data root)")
    mining: MiningSettings = Field(default_factory=MiningSettings, title="Mining",
                                   description="how the round chooses what people review")
    render: RenderSettings = Field(default_factory=RenderSettings, title="Case images",
                                   description="how the case images are drawn")
    wait: WaitSettings = Field(default_factory=WaitSettings, title="Waiting for people",
                               description="how the run waits while people review")
    quality: QualitySettings = Field(default_factory=QualitySettings, title="Trusting the review",
                                     description="reviewer accuracy on known-answer items, a second reviewer and how "
                                     "disagreements are resolved")
    scripted_errors: float = Field(default=0.0, ge=0, le=1, title="Scripted reviewer errors",
                                   description="scripted reviewer: the share of its answers it gets wrong (to "
                                   "exercise the known-answer items, the second review and the errors-left "
                                   "estimate)")


class ReviewFinished(RunInput):
    """What a person answers in the Prefect UI when the flow waits for review."""

    note: str = Field(default="", title="Note", description="optional note kept in the run's logs")


# ------------------------------------------------------------------------------------------ helpers


def data_root(data_dir: str | None) -> DataRoot:
    return DataRoot(DataRoot.from_env(data_dir).root.resolve())


def data_path(data_dir: str, value: str | os.PathLike | None, *, field: str) -> Path | None:
    """``value`` as a path: absolute as given, relative ones under the data root (``None`` stays None)."""
    if value is None or str(value) == "":
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else data_root(data_dir).root / p


def required_path(data_dir: str, value: str | os.PathLike, *, field: str) -> Path:
    """:func:`data_path` of a value the flow cannot do without: an empty one is an error naming ``field``."""
    path = data_path(data_dir, value, field=field)
    if path is None:
        raise InputError("a path is needed here", field=field)
    return path


def model_run_dirs(data_dir: str, model_dirs: list[str], *, field: str = "model_dirs") -> list[Path]:
    """Model run directories (a run name, or a path relative to the data root); errors name every place searched."""
    root = data_root(data_dir)
    out, missing = [], []
    for d in model_dirs:
        candidates = [data_path(data_dir, d, field=field)]
        if "/" not in str(d):
            candidates.append(root.models / str(d))
        found = next((c for c in candidates if c is not None and any(c.glob("fold*.pt"))), None)
        if found is None:
            missing.append(f"{d!r} (looked in {', '.join(str(c) for c in candidates if c is not None)})")
        else:
            out.append(found)
    if missing:
        raise InputError("no fold checkpoints (fold<k>.pt) for " + "; ".join(missing) + ": train a model run first "
                         "(the train flow) or fix the model run paths", field=field)
    return out


def cached(task_fn, outputs: list[Path]):
    """``task_fn``, made to recompute when any of the files its cached result stands for is missing."""
    return task_fn.with_options(refresh_cache=not all(Path(p).exists() for p in outputs))


def transient(task, task_run, state) -> bool:
    """Retry condition: retry unless the failure is a byu error (bad input, refused version: retrying won't help)."""
    try:
        state.result()
    except ByuError:
        return False
    except Exception:
        return True
    return True


def refuse_existing_version(root: DataRoot, name: str, round_name: str) -> None:
    """A flow may complete its own version after a crash, but never overwrite another one."""
    store = LabelStore(root.labels)
    if store.exists(name):
        m = store.manifest(name)
        if m.extra.get("round") != round_name:
            raise VersionExistsError(
                f"label version {name!r} already exists (made by {m.producer!r}); versions are immutable — "
                "choose another target version name")


# ------------------------------------------------------------------------------------------ caching


@functools.cache
def byu_code_key() -> str:
    """``byu.__version__`` + a hash of the byu package's source files (relative path and bytes of every ``.py``, in
    path order): computed once per process (each Dask worker computes its own: the code it runs)."""
    import byu

    package = Path(byu.__file__).parent
    h = hashlib.sha256()
    for f in sorted(package.rglob("*.py")):
        h.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return f"{byu.__version__}+{h.hexdigest()[:20]}"


_FILE_DIGESTS: dict[Path, tuple[tuple[int, int], str]] = {}
_FILE_LOCK = threading.Lock()


def _file_digest(path: Path) -> str:
    """sha256 of a file, memoized per process while its size and mtime are unchanged."""
    st = path.stat()
    stamp, key = (st.st_size, st.st_mtime_ns), path.resolve()
    with _FILE_LOCK:
        known = _FILE_DIGESTS.get(key)
    if known is not None and known[0] == stamp:
        return known[1]
    digest = sha256_file(path)
    with _FILE_LOCK:
        _FILE_DIGESTS[key] = (stamp, digest)
    return digest


def content_key(item: Path | str) -> str:
    """What a cache key holds of one thing a task reads: a stored tomogram's folder →
    :func:`byu.tomo.io.content_stamp`; a file → its sha256; a missing path → ``missing``; a string (a digest the
    caller computed) → itself. Each is prefixed with the path's name."""
    if isinstance(item, str):
        return item
    from byu.tomo.io import META_NAME, content_stamp

    if (item / META_NAME).is_file():
        return f"tomogram {item.name}:{content_stamp(item)}"
    if item.is_file():
        return f"file {item.name}:{_file_digest(item)}"
    if item.is_dir():
        files = sorted(f for f in item.rglob("*") if f.is_file())
        return f"dir {item.name}:" + ";".join(f"{f.relative_to(item)}={_file_digest(f)}" for f in files)
    return f"missing {item.name}"


ReadsFn = Callable[[Mapping[str, Any]], Iterable[Path | str]]


@dataclass
class ByuCode(CachePolicy):
    """Cache-key part: the byu code the task calls (:func:`byu_code_key`)."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        return byu_code_key()


@dataclass
class Reads(CachePolicy):
    """Cache-key part: the content (:func:`content_key`) of every file and tomogram ``paths(inputs)`` names, the
    task's inputs bound to its parameters (defaults included)."""

    paths: ReadsFn | None = None

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        if self.paths is None:
            return None
        return hash_objects([content_key(p) for p in self.paths(inputs or {})], raise_on_failure=True)


def cache_on(reads: ReadsFn | None = None, *, exclude: Iterable[str] = ()) -> CachePolicy:
    """The cache policy of a task that does real work: ``INPUTS`` (less ``exclude``) + ``TASK_SOURCE`` +
    :class:`ByuCode` + :class:`Reads` of ``reads`` (see the module docstring)."""
    policy: CachePolicy = INPUTS
    for name in exclude:
        policy = policy - name
    policy = policy + TASK_SOURCE + ByuCode()
    return policy + Reads(paths=reads) if reads is not None else policy


#: tasks that read nothing but their inputs: inputs, source and the byu code
CACHE = cache_on()


def version_files(data_dir: str, version: str) -> list[Path]:
    """The files of a stored label version (manifest, tables, changes): what reading it reads."""
    return LabelStore(data_root(data_dir).labels).files(version)


def version_tomograms(data_dir: str, version: str) -> list[Path]:
    """The stored tomogram folders of a label version's tomograms (none when the version cannot be read)."""
    root = data_root(data_dir)
    try:
        ids = LabelStore(root.labels).get(version, verify=False).tomo_ids
    except (ByuError, OSError):
        return []
    return [root.tomogram(t) for t in ids]


def tomogram_dirs(data_dir: str, tomo_ids: Iterable[str]) -> list[Path]:
    root = data_root(data_dir)
    return [root.tomogram(t) for t in tomo_ids]


def table_digest(table: Any) -> str:
    """sha256 of a table's CSV and its ``attrs`` (a task's in-memory input, keyed by content)."""
    h = hashlib.sha256(table.to_csv(index=False, lineterminator="\n").encode())
    h.update(json.dumps(table.attrs, sort_keys=True, default=str).encode())
    return h.hexdigest()


def cvat_config(review: ReviewSettings):
    from byu.review.cvat import ENV_URL, CvatConfig

    overrides: dict = {"url": review.cvat_url}
    if review.cvat_secret_block:
        from prefect.blocks.system import Secret

        block = cast(Secret, Secret.load(review.cvat_secret_block))  # called from sync code: the block itself
        secret = block.get()
        key = "token" if os.environ.get("BYU_CVAT_USER") is None else "password"
        overrides[key] = secret
    if not (review.cvat_url or os.environ.get(ENV_URL)):
        raise InputError(f"no CVAT server: fill in 'CVAT URL' (review.cvat_url) or set {ENV_URL}",
                         field="review.cvat_url")
    try:
        return CvatConfig.from_env(**overrides)
    except ValueError as exc:
        raise InputError(f"CVAT settings: {exc}", field="review.cvat_secret_block") from None


def make_reviewer(data_dir: str, round_name: str, review: ReviewSettings, *, second: int = 0):
    """The byu reviewer the settings describe (built inside tasks: CVAT secrets never become task inputs);
    ``second`` 1: the second reviewer, 2: the resolver (a scripted reviewer with its own errors; an import
    reviewer reading the round's ``second_decisions.csv`` / ``resolution.csv``)."""
    from byu.review.round import CvatReviewer, ImportReviewer, ScriptedReviewer, round_paths

    root = data_root(data_dir)
    if review.reviewer == "scripted":
        if not review.truth:
            raise InputError("the scripted reviewer needs a truth table: fill in 'Truth labels' (review.truth)",
                             field="review.truth")
        store = LabelStore(root.labels)
        try:
            is_version = "/" not in review.truth and not review.truth.lower().endswith(".csv") \
                and store.exists(review.truth)
        except InputError:
            is_version = False
        ref = review.truth if is_version else required_path(data_dir, review.truth, field="review.truth")
        labels, _ = store.resolve(ref, data_root=root)
        name = ("scripted", review.quality.second_reviewer, "resolver")[second]
        return ScriptedReviewer(truth=labels, name=name, error_rate=review.scripted_errors, seed=second)
    if review.reviewer == "import":
        paths = round_paths(root, round_name)
        if second:
            return ImportReviewer(csv=paths.second_decisions if second == 1 else paths.resolution)
        csv = data_path(data_dir, review.decisions_csv, field="review.decisions_csv") or paths.outside_decisions
        return ImportReviewer(csv=csv)
    return CvatReviewer(config=cvat_config(review), batch_size=review.batch_size,
                        include_incomplete=review.wait.include_incomplete)

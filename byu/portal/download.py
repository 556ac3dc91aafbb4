"""Downloads from the portal into ``<data>/raw/``: MRC over HTTPS, OME-Zarr over S3.

We do not call the client's ``download_mrcfile``: it never checks the status code (a 404 page would be
saved as the ``.mrc``), cannot resume and does not retry. Instead, per file:

* stream with ``requests`` into ``<name>.part``; when a ``.part`` exists, ask for the rest with
  ``Range: bytes=N-`` and append on ``206`` (start checked against ``Content-Range``), restart on ``200``;
* check the status code: 408/425/429/5xx and connection errors, timeouts, bodies cut short are
  *transient* and retried with exponential backoff and jitter (``tenacity``), resuming each time; other
  4xx are final;
* verify the size against the portal's ``fileSizeMrc`` (else the server's total), hash with sha256, and only
  then rename ``.part`` to the final name and write the sidecar record ``<tomo_id>.download.json``;
* check the file is what it claims (:func:`validate_volume`: an MRC header and data of the size it announces,
  an OME-Zarr with its metadata): an HTML page served with 200 is not a tomogram. An invalid file is deleted and
  fetched once more; if that is invalid too the tomogram fails with a message saying what arrived.

A failed tomogram is reported (:class:`DownloadFailure`) and skipped; nothing ever appears under the final
name unverified. A ``.part`` holding a verified-so-far prefix is kept so a rerun resumes where it stopped; a
``.part`` known to be wrong (longer than expected, or a final HTTP error) is deleted.

OME-Zarr stores are listed and fetched with boto3 (its own retry policy, ``mode="standard"``) into
``<tomo_id>.zarr.part/``; objects already there with the listed size are skipped on a rerun. The endpoint
follows the portal client's convention: anonymous unless ``BOTO_ENDPOINT_URL`` (and optionally
``BOTO_SIGNATURE_VERSION``) is set, or ``s3_endpoint_url`` is passed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
from pydantic import BaseModel
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter
from urllib3.exceptions import HTTPError

from byu import __version__
from byu.atomic import sha256_file, write_json
from byu.errors import ByuError
from byu.portal.query import PointFile, PortalTomogram

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = f"byu/{__version__}"
DEFAULT_WORKERS = 4
DEFAULT_RETRIES = 5
DEFAULT_TIMEOUT = (10.0, 60.0)  # connect, read (seconds without a byte)

ProgressFn = Callable[[str, int, int | None], None]  # (key, bytes done, total or None)


class DownloadError(ByuError):
    """A download that failed for good (after retries, or a final HTTP error)."""


class _Transient(Exception):
    """A failure worth retrying (resuming from the ``.part``)."""


class DownloadRecord(BaseModel):
    """The sidecar ``raw/<tomo_id>.download.json`` of a finished, verified download."""

    tomo_id: str
    format: str  # mrc | zarr
    url: str
    path: str  # relative to the raw directory
    size: int
    sha256: str
    portal: dict[str, Any]
    completed_at: str
    byu_version: str = __version__


@dataclass
class DownloadFailure:
    """A tomogram (or file) that could not be downloaded, and why."""

    key: str
    url: str | None
    error: str
    part_bytes: int = 0  # bytes kept in the .part for a later resume


@dataclass
class DownloadReport:
    records: list[DownloadRecord] = field(default_factory=list)
    failures: list[DownloadFailure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already complete


# ------------------------------------------------------------------------------------------------ helpers
def _content_range(header: str | None) -> tuple[int | None, int | None, int | None]:
    """``bytes a-b/N`` -> (a, b, N); ``bytes */N`` -> (None, None, N)."""
    if not header:
        return None, None, None
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", header)
    if not m:
        return None, None, None
    a = int(m.group(1)) if m.group(1) else None
    b = int(m.group(2)) if m.group(2) else None
    n = int(m.group(3)) if m.group(3) and m.group(3) != "*" else None
    return a, b, n


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _attempt(session: requests.Session, url: str, part: Path, *, expected_size: int | None,
             timeout: tuple[float, float], chunk_size: int, key: str, progress: ProgressFn | None) -> int:
    """One GET (resuming from ``part``); returns the verified size or raises ``_Transient``/``DownloadError``."""
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()
        have = 0
    if expected_size is not None and have == expected_size and have > 0:
        return have
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    with resp:
        code = resp.status_code
        if code == 416 and have:
            _, _, server_total = _content_range(resp.headers.get("Content-Range"))
            if server_total == have and expected_size in (None, have):
                return have
            part.unlink(missing_ok=True)
            raise _Transient(f"HTTP 416 for bytes={have}- (server total {server_total}); restarting from 0")
        if code in RETRY_STATUS:
            raise _Transient(f"HTTP {code} {resp.reason}")
        if code not in (200, 206):
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: HTTP {code} {resp.reason}")
        total: int | None
        if code == 206:
            start, _, total = _content_range(resp.headers.get("Content-Range"))
            if start != have:
                part.unlink(missing_ok=True)
                raise _Transient(f"asked for bytes {have}- but the server sent {resp.headers.get('Content-Range')}")
            mode = "ab"
        else:
            have, mode = 0, "wb"  # no range support (or none asked): start over
            cl = resp.headers.get("Content-Length")
            total = int(cl) if cl and cl.isdigit() else None
        want = expected_size if expected_size is not None else total
        done = have
        if progress:
            progress(key, done, want)
        with open(part, mode) as fh:  # a local write error (disk full...) is not retried: it propagates
            while True:
                # read1: every byte that arrived is written before a broken connection raises, so a resume
                # asks only for what is really missing (iter_content would drop a partly filled chunk)
                try:
                    block = resp.raw.read1(chunk_size, decode_content=False)
                except (requests.RequestException, HTTPError, OSError) as exc:
                    raise _Transient(f"connection broken at byte {done}: {type(exc).__name__}: {exc}") from exc
                if not block:
                    break
                fh.write(block)
                done += len(block)
                if progress:
                    progress(key, done, want)
                if want is not None and done > want:
                    break
    size = part.stat().st_size
    if want is not None and size > want:
        part.unlink()
        raise _Transient(f"received {size} bytes, more than the expected {want}; restarting")
    if want is not None and size < want:
        raise _Transient(f"body ended at byte {size} of {want}")
    return size


def download_file(url: str, dest: str | Path, *, expected_size: int | None = None,
                  session: requests.Session | None = None, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                  retries: int = DEFAULT_RETRIES, backoff: float = 0.5, max_backoff: float = 30.0,
                  chunk_size: int = 1 << 20, key: str | None = None,
                  progress: ProgressFn | None = None) -> tuple[int, str]:
    """Download ``url`` to ``dest`` (resumable ``.part``, retried, verified). Returns ``(size, sha256)``.

    ``expected_size`` (bytes, e.g. the portal's ``fileSizeMrc``) is checked when given; otherwise the
    server's announced total is. Raises :class:`DownloadError` when it gives up.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    own = session is None
    sess = session or requests.Session()
    retrying = Retrying(stop=stop_after_attempt(retries + 1),
                        wait=wait_exponential_jitter(initial=backoff, max=max_backoff, jitter=backoff),
                        retry=retry_if_exception_type(_Transient), reraise=True)
    try:
        size = retrying(_attempt, sess, url, part, expected_size=expected_size, timeout=timeout,
                        chunk_size=chunk_size, key=key or dest.name, progress=progress)
    except _Transient as exc:
        kept = part.stat().st_size if part.exists() else 0
        raise DownloadError(f"{url}: gave up after {retries + 1} attempt(s): {exc}"
                            + (f" ({kept} bytes kept in {part.name} for a resume)" if kept else "")) from exc
    except RetryError as exc:  # pragma: no cover - reraise=True makes this unreachable
        raise DownloadError(f"{url}: {exc}") from exc
    finally:
        if own:
            sess.close()
    digest = sha256_file(part)
    os.replace(part, dest)
    return size, digest


# ----------------------------------------------------------------------------------------------------- S3
def s3_client(endpoint_url: str | None = None, *, retries: int = DEFAULT_RETRIES,
              timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> Any:
    """A boto3 S3 client: anonymous for the public bucket; ``endpoint_url`` / ``BOTO_ENDPOINT_URL`` for others."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    endpoint = endpoint_url or os.environ.get("BOTO_ENDPOINT_URL") or None
    signature = os.environ.get("BOTO_SIGNATURE_VERSION") if endpoint else None
    config = Config(signature_version=signature or UNSIGNED, user_agent_extra=USER_AGENT,
                    retries={"max_attempts": retries + 1, "mode": "standard"},
                    connect_timeout=timeout[0], read_timeout=timeout[1])
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def _parse_s3(url: str) -> tuple[str, str]:
    p = urlparse(url)
    if p.scheme != "s3" or not p.netloc:
        raise DownloadError(f"not an s3:// URL: {url!r}")
    return p.netloc, p.path.lstrip("/")


def download_s3_dir(s3_url: str, dest: str | Path, *, client: Any = None, endpoint_url: str | None = None,
                    retries: int = DEFAULT_RETRIES, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                    key: str | None = None, progress: ProgressFn | None = None) -> tuple[int, str]:
    """Fetch every object under ``s3_url`` into directory ``dest`` (via ``dest.part``), sizes verified.

    Returns ``(total bytes, sha256 of the sorted "path size sha256" listing)``.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    dest = Path(dest)
    part = _part_path(dest)
    s3 = client or s3_client(endpoint_url, retries=retries, timeout=timeout)
    bucket, prefix = _parse_s3(s3_url)
    prefix = prefix.rstrip("/") + "/"
    label = key or dest.name
    try:
        objects: list[tuple[str, int]] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            objects += [(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
        if not objects:
            raise DownloadError(f"{s3_url}: no objects under this prefix")
        total = sum(s for _, s in objects)
        done = 0
        for obj_key, size in objects:
            rel = obj_key[len(prefix):]
            if not rel or rel.startswith("/") or ".." in Path(rel).parts:
                raise DownloadError(f"{s3_url}: refusing object key {obj_key!r}")
            local = part / rel
            if not (local.exists() and local.stat().st_size == size):
                local.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj_key, str(local))
                if local.stat().st_size != size:
                    local.unlink()
                    raise DownloadError(f"s3://{bucket}/{obj_key}: got {local.stat().st_size} bytes, listed {size}")
            done += size
            if progress:
                progress(label, done, total)
    except (ClientError, BotoCoreError) as exc:
        raise DownloadError(f"{s3_url}: {type(exc).__name__}: {exc}") from exc
    listing = hashlib.sha256()
    for obj_key, size in sorted(objects):
        rel = obj_key[len(prefix):]
        listing.update(f"{rel}\t{size}\t{sha256_file(part / rel)}\n".encode())
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(part, dest)
    return total, listing.hexdigest()


# --------------------------------------------------------------------------------------------- tomograms
def record_path(raw_dir: str | Path, tomo_id: str) -> Path:
    return Path(raw_dir) / f"{tomo_id}.download.json"


def read_record(raw_dir: str | Path, tomo_id: str) -> DownloadRecord | None:
    """The finished download of ``tomo_id`` (``None`` when absent, unreadable or its file is gone)."""
    p = record_path(raw_dir, tomo_id)
    if not p.exists():
        return None
    try:
        rec = DownloadRecord.model_validate_json(p.read_text())
    except ValueError:
        return None
    return rec if (Path(raw_dir) / rec.path).exists() else None


def resolve_format(t: PortalTomogram, fmt: str) -> str:
    """``mrc`` / ``zarr`` for ``fmt`` ``auto`` (MRC when offered), else ``fmt`` if the tomogram offers it."""
    if fmt == "auto":
        return "mrc" if t.https_mrc_file else "zarr"
    return fmt


def download_tomogram(t: PortalTomogram, raw_dir: str | Path, *, fmt: str = "auto", force: bool = False,
                      retries: int = DEFAULT_RETRIES, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                      backoff: float = 0.5, s3_endpoint_url: str | None = None,
                      progress: ProgressFn | None = None) -> tuple[DownloadRecord, bool]:
    """Download one chosen tomogram; returns ``(record, downloaded_now)`` (``False``: was complete)."""
    raw_dir = Path(raw_dir)
    kind = resolve_format(t, fmt)
    existing = read_record(raw_dir, t.tomo_id)
    if existing is not None and not force and existing.format == kind:
        return existing, False
    if kind == "mrc":
        if not t.https_mrc_file:
            raise DownloadError(f"{t.tomo_id}: the portal lists no MRC file for tomogram {t.tomogram_id}")
        url = t.https_mrc_file
        dest = raw_dir / f"{t.tomo_id}.mrc"
        expected = int(t.file_size_mrc) if t.file_size_mrc else None
        size, digest = download_file(url, dest, expected_size=expected, timeout=timeout, retries=retries,
                                     backoff=backoff, key=t.tomo_id, progress=progress)
    elif kind == "zarr":
        if not t.s3_omezarr_dir:
            raise DownloadError(f"{t.tomo_id}: the portal lists no OME-Zarr for tomogram {t.tomogram_id}")
        url = t.s3_omezarr_dir
        dest = raw_dir / f"{t.tomo_id}.zarr"
        size, digest = download_s3_dir(url, dest, endpoint_url=s3_endpoint_url, retries=retries,
                                       timeout=timeout, key=t.tomo_id, progress=progress)
    else:
        raise DownloadError(f"unknown format {fmt!r} (mrc, zarr or auto)")
    problem = validate_volume(dest)
    if problem is not None:  # not a tomogram (an error page served with 200, a truncated file): fetch again once
        _remove(dest)
        if kind == "mrc":
            size, digest = download_file(url, dest, expected_size=expected, timeout=timeout, retries=retries,
                                         backoff=backoff, key=t.tomo_id, progress=progress)
        else:
            size, digest = download_s3_dir(url, dest, endpoint_url=s3_endpoint_url, retries=retries,
                                           timeout=timeout, key=t.tomo_id, progress=progress)
        problem = validate_volume(dest)
        if problem is not None:
            _remove(dest)
            raise DownloadError(f"{t.tomo_id}: {url} did not give a tomogram, twice: {problem}")
    record = DownloadRecord(
        tomo_id=t.tomo_id, format=kind, url=url, path=dest.name, size=size, sha256=digest,
        portal=t.portal_ids(), completed_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    write_json(record_path(raw_dir, t.tomo_id), record.model_dump(mode="json"))
    return record, True


def validate_volume(path: Path) -> str | None:
    """Why a downloaded file is not a readable tomogram (``None`` when it is one)."""
    from byu.tomo.preprocess import open_volume

    if path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(512).lstrip().lower()
        if head.startswith((b"<!doctype", b"<html", b"<?xml", b"{")):
            return f"the server sent a {'web page' if b'html' in head[:64] else 'text document'}, not an MRC file"
    try:
        with open_volume(path) as src:
            if len(src.shape) != 3 or min(src.shape) < 1:
                return f"not a 3-D volume (shape {src.shape})"
    except ByuError as exc:
        return str(exc)
    except (OSError, ValueError) as exc:
        return f"unreadable: {type(exc).__name__}"
    return None


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def download_tomograms(tomograms: Sequence[PortalTomogram], raw_dir: str | Path, *, fmt: str = "auto",
                       workers: int = DEFAULT_WORKERS, force: bool = False, retries: int = DEFAULT_RETRIES,
                       timeout: tuple[float, float] = DEFAULT_TIMEOUT, backoff: float = 0.5,
                       s3_endpoint_url: str | None = None, progress: ProgressFn | None = None,
                       on_done: Callable[[str, DownloadRecord | DownloadFailure], None] | None = None,
                       ) -> DownloadReport:
    """Download many tomograms, at most ``workers`` at once; failures are collected, never raised."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    report = DownloadReport()
    lock = threading.Lock()

    def one(t: PortalTomogram) -> tuple[str, DownloadRecord | DownloadFailure, bool]:
        try:
            rec, fresh = download_tomogram(t, raw_dir, fmt=fmt, force=force, retries=retries, timeout=timeout,
                                           backoff=backoff, s3_endpoint_url=s3_endpoint_url, progress=progress)
            return t.tomo_id, rec, fresh
        except (DownloadError, OSError) as exc:  # OSError: local trouble (disk full, permissions)
            kind = resolve_format(t, fmt)
            part = _part_path(raw_dir / f"{t.tomo_id}.{kind}")
            kept = part.stat().st_size if part.is_file() else 0
            url = t.https_mrc_file if kind == "mrc" else t.s3_omezarr_dir
            return t.tomo_id, DownloadFailure(t.tomo_id, url, str(exc), kept), False

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(one, t) for t in tomograms]
        for fut in as_completed(futures):
            tomo_id, result, fresh = fut.result()
            with lock:
                if isinstance(result, DownloadFailure):
                    report.failures.append(result)
                elif fresh:
                    report.records.append(result)
                else:
                    report.records.append(result)
                    report.skipped.append(tomo_id)
            if on_done:
                on_done(tomo_id, result)
    order = {t.tomo_id: i for i, t in enumerate(tomograms)}
    report.records.sort(key=lambda r: order.get(r.tomo_id, 0))
    report.failures.sort(key=lambda f: order.get(f.key, 0))
    return report


# ------------------------------------------------------------------------------------------- point files
def point_file_path(raw_dir: str | Path, pf: PointFile) -> Path:
    return Path(raw_dir) / "annotations" / pf.tomo_id / f"{pf.annotation_file_id}.ndjson"


def download_point_files(point_files: Sequence[PointFile], raw_dir: str | Path, *,
                         workers: int = DEFAULT_WORKERS, retries: int = DEFAULT_RETRIES,
                         timeout: tuple[float, float] = DEFAULT_TIMEOUT, backoff: float = 0.5,
                         force: bool = False) -> tuple[dict[int, Path], list[DownloadFailure]]:
    """Fetch the ndjson point files (small, HTTPS) to ``raw/annotations/<tomo_id>/<file id>.ndjson``."""
    paths: dict[int, Path] = {}
    failures: list[DownloadFailure] = []

    def one(pf: PointFile) -> tuple[PointFile, Path | DownloadFailure]:
        dest = point_file_path(raw_dir, pf)
        if dest.exists() and not force:
            return pf, dest
        if not pf.https_path:
            return pf, DownloadFailure(pf.tomo_id, None, f"annotation file {pf.annotation_file_id} has no https path")
        try:
            download_file(pf.https_path, dest, timeout=timeout, retries=retries, backoff=backoff,
                          key=f"{pf.tomo_id}/{pf.annotation_file_id}")
        except (DownloadError, OSError) as exc:
            return pf, DownloadFailure(pf.tomo_id, pf.https_path, str(exc))
        return pf, dest

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for pf, res in pool.map(one, point_files):
            if isinstance(res, DownloadFailure):
                failures.append(res)
            else:
                paths[pf.annotation_file_id] = res
    return paths, failures

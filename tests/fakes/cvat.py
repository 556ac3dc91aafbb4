"""A loopback fake of the CVAT REST API, good enough for the real ``cvat-sdk`` 2.80 client.

Usage (context manager; the server listens on 127.0.0.1 on a free port)::

    from cvat_sdk import Client, Config
    from tests.fakes.cvat import start_fake_cvat, tag_images_as_annotator

    # start_fake_cvat(..., version=LEGACY_CVAT_VERSION) behaves like a real CVAT 2.23.1 (see below)
    with start_fake_cvat(users={"alice": "secret"}, tokens={"tok-1": "alice"}) as (url, server):
        client = Client(url, config=Config(status_check_period=0.01))
        client.login(("alice", "secret"))          # or AccessTokenCredentials("tok-1")
        ...
        server.faults.upload_500 = 1               # the next Upload-Multiple answers 500
        server.faults.upload_start_500 = 1         # the next Upload-Start answers 500 (no data attached)
        server.faults.fail_processing = 1          # the next data processing request fails
        server.faults.drop_export_download = 1     # the next export download is cut mid-body
        server.faults.hang_upload_start = True     # Upload-Start blocks (see ``events``)
        server.count("POST", "/api/tasks")         # how many requests hit a route
        server.about_reply = (200, "text/html", b"<html>")  # about answers like a non-CVAT server

The server answers as CVAT 2.80.x (``/api/server/about`` reports ``FAKE_CVAT_VERSION``) by
default, or, with ``version=LEGACY_CVAT_VERSION`` ("2.23.1"), like the real CVAT 2.23.1 server that
the SDK was driven against (what differs is listed under *Legacy mode*). It
implements what the SDK calls for tag-review rounds:

- ``GET /api/server/about``; ``POST /api/auth/login`` (``sessionid`` + ``csrftoken`` cookies and
  ``{"key"}``), ``POST /api/auth/logout``; personal access tokens (``Authorization: Bearer T``);
  ``GET /api/users/self``, ``GET /api/users``.
- ``POST/GET /api/projects``, ``GET/PATCH/DELETE /api/projects/{id}``; ``GET /api/labels``.
- ``POST/GET /api/tasks``, ``GET/PATCH/DELETE /api/tasks/{id}``; ``POST /api/tasks/{id}/data/``
  with ``Upload-Start`` / ``Upload-Multiple`` / ``Upload-Finish``; ``GET /api/tasks/{id}/data/meta``.
- ``GET /api/requests/{rq_id}`` (background requests: task data processing and exports).
- ``GET /api/jobs?task_id=``, ``GET/PATCH /api/jobs/{id}`` (``state``, ``stage``, ``assignee``).
- ``GET/PATCH /api/jobs/{id}/annotations/`` and ``GET/PATCH /api/tasks/{id}/annotations/``
  (``?action=create|update|delete``; tags and ``points`` shapes are stored and read back as CVAT
  returns them; other shape types and tracks are accepted and ignored).
- ``POST /api/tasks/{id}/dataset/export?format=CVAT+for+images+1.1&save_images=False`` → poll →
  download a zip holding ``annotations.xml`` (CVAT for images 1.1 layout, every frame listed).

In both modes: content is negotiated as CVAT's Django REST framework does it, before
authentication, on every ``/api`` endpoint (the real 2.23.1 server showed it on
``/api/server/about``): the only renderer is ``application/vnd.cvat+json`` (JSON answers carry
that content type), so a request whose ``Accept`` names no range that matches it (``*/*``,
``application/*``, ``application/vnd.cvat+json``), e.g. ``Accept: application/json`` alone, is
answered 406 ``{"detail": "Could not satisfy the request Accept header."}``; no ``Accept`` is
fine. Lists have absolute ``next``/``previous`` URLs; a missing object is 404
``{"detail": "No Task matches the given query."}`` (Job, Project likewise); jobs carry ``state``,
``stage`` and the legacy ``status`` with CVAT's transitions (a PATCH of ``state`` alone keeps the
stage; a PATCH of ``stage`` alone resets ``state`` to ``new``; ``status`` is ``annotation`` in
stage annotation, ``completed`` in stage acceptance with state completed, else ``validation``;
a task's ``status`` is derived from its jobs'); a bad choice is 400
``{"state": ["\"bogus\" is not a valid choice."]}``.

*Legacy mode* (``version="2.23.1"``), as the real 2.23.1 server did:

- ``/api/server/about`` answers only ``name``, ``description`` and ``version`` (cvat-sdk 2.80's
  default version check then raises ``TypeError``);
- a task created without data (``data`` is null: a push interrupted between ``POST /api/tasks``
  and ``Upload-Start``) has no ``size`` and no ``data`` key (seen), nor the other fields its
  serializer reads from the data (``image_quality``, ``data_chunk_size``, the chunk types,
  ``data_cloud_storage_id``: DRF skips them the same way); the SDK then raises
  ``ApiAttributeError`` on ``task.size`` (2.80 mode: ``size`` 0, ``data`` null);
- request ids are the server's own: ``create:task-N`` and
  ``export:task-N-annotations-in-CVAT_for_images_1@1-format-by-U`` (U: the user id); the SDK
  polls them URL-encoded (``/api/requests/create%3Atask-N``, see ``server.raw_paths``);
- the export's ``result_url`` is ``/api/tasks/N/annotations?format=…&save_images=False&action=download``
  (2.80 mode: ``/api/tasks/N/dataset/download?rq_id=…``), with the real ``Content-Disposition``;
- the export XML is laid out as CVAT writes it: indented, no self-closing elements, tags as an
  open/close pair with a newline, untagged frames as empty ``<image>`` elements (2.80 mode: the
  compact ElementTree form, ``<tag …/>``); tags and shapes read back with ``"group": null``.

Point shapes are exported as CVAT's writer does (both modes): per image the shapes first, then the
tags; ``<points label=… source=… occluded="0" points="x,y[;x,y]" z_order="0">`` in that attribute
order, coordinates with 2 decimals, ``group_id`` only when non-zero (in legacy mode an open/close pair
with a newline, like tags; the fake writes no attributes).

Faults are counters on ``server.faults`` that are consumed as they fire. State lives in memory
and is guarded by one lock; handler threads are daemons. Nothing here touches the network
beyond the loopback socket.

``tag_images_as_annotator`` plays a human annotator through the SDK (it works against a real
CVAT too): it tags frames by image name with ``job.update_annotations(..., action=CREATE)``;
``click_images_as_annotator`` places points (``LabeledShapeRequest(type="points")``) the same way.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import io
import json
import re
import secrets
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

FAKE_CVAT_VERSION = "2.80.0"
RENDERER = "application/vnd.cvat+json"  # CVAT's only REST framework renderer
NOT_ACCEPTABLE = {"detail": "Could not satisfy the request Accept header."}
LEGACY_CVAT_VERSION = "2.23.1"
CVAT_VERSIONS = (FAKE_CVAT_VERSION, LEGACY_CVAT_VERSION)
EXPORT_FORMAT = "CVAT for images 1.1"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _is_legacy(version: str) -> bool:
    """True for 2.23.x (the legacy mode), False for 2.80 and later; other versions are refused."""
    parts = version.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise ValueError(f"not a CVAT version: {version!r}") from None
    if (major, minor) == (2, 23):
        return True
    if (major, minor) >= (2, 80):
        return False
    raise ValueError(f"the fake CVAT knows 2.23.x ({LEGACY_CVAT_VERSION}) and 2.80 or later, not {version!r}")


def _acceptable(accept: str | None) -> bool:
    """Whether CVAT's renderer satisfies an ``Accept`` header (DRF's negotiation: any listed range that
    matches ``application/vnd.cvat+json`` wins, parameters and q-values aside; no header: the renderer)."""
    if accept is None or not accept.strip():
        return True
    for item in accept.split(","):
        media = item.split(";", 1)[0].strip().lower()
        if media in ("*/*", "*", "application/*", RENDERER):
            return True
    return False


def _not_found(model: str) -> HttpError:
    return HttpError(404, {"detail": f"No {model} matches the given query."})


def _bad_choice(field_name: str, value: Any) -> HttpError:
    return HttpError(400, {field_name: [f'"{value}" is not a valid choice.']})


JOB_STATES = ("new", "in progress", "completed", "rejected")
JOB_STAGES = ("annotation", "validation", "acceptance")


def _job_status(stage: str, state: str) -> str:
    """CVAT's legacy job ``status`` from stage and state (as its JobWriteSerializer.update sets it)."""
    if stage == "annotation":
        return "annotation"
    if stage == "acceptance" and state == "completed":
        return "completed"
    return "validation"


def _task_status(jobs: Sequence[Mapping[str, Any]]) -> str:
    """CVAT derives a task's status from its jobs': annotation, else validation, else completed."""
    statuses = {j["status"] for j in jobs}
    if not jobs or "annotation" in statuses:
        return "annotation"
    return "validation" if "validation" in statuses else "completed"


class HttpError(Exception):
    """Raised inside a handler to answer with an error status and a JSON/text body."""

    def __init__(self, status: int, detail: Any = None) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail if detail is not None else {"detail": f"HTTP {status}"}


@dataclass
class Faults:
    """Fault injection counters (each fires once per unit and counts down)."""

    upload_500: int = 0
    """Answer the next N ``Upload-Multiple`` requests with 500 (after ``Upload-Start`` attached data)."""
    upload_start_500: int = 0
    """Answer the next N ``Upload-Start`` requests with 500 before any data is attached (the task
    stays as created: ``data`` null, like a push killed between creating the task and uploading)."""
    fail_processing: int = 0
    """Make the next N data processing requests (after ``Upload-Finish``) end as ``failed``."""
    drop_export_download: int = 0
    """Cut the next N export downloads after half the body (connection closed)."""
    export_500: int = 0
    """Answer the next N ``POST .../dataset/export`` with 500."""
    hang_upload_start: bool = False
    """Block ``Upload-Start`` until ``server.events['release']`` is set (or 10 s), then answer 500.

    ``server.events['upload_start']`` is set when an ``Upload-Start`` arrives, so a test can kill
    the pushing process there; clear ``release`` (and ``upload_start``) to hang again later."""
    processing_polls: int = 1
    """How many ``GET /api/requests/{id}`` polls answer ``started`` before ``finished``."""


@dataclass
class _Upload:
    files: dict[str, bytes] = field(default_factory=dict)  # basename -> bytes, in arrival order


class FakeCvatState:
    """Everything the fake server knows; mutate only while holding ``lock``."""

    def __init__(self, users: Mapping[str, str], tokens: Mapping[str, str], page_size: int) -> None:
        self.lock = threading.RLock()
        self.page_size = page_size
        self.users: dict[str, dict[str, Any]] = {}
        self.passwords: dict[str, str] = dict(users)
        for i, name in enumerate(users, start=1):
            self.users[name] = {"id": i, "username": name, "first_name": "", "last_name": "",
                                "email": f"{name}@example.org"}
        self.tokens: dict[str, str] = dict(tokens)  # token -> username (PAT)
        self.sessions: dict[str, tuple[str, str]] = {}  # sessionid -> (username, csrftoken)
        self.keys: dict[str, str] = {}  # legacy login key -> username
        self._ids = {"project": 0, "task": 0, "job": 0, "label": 0, "data": 0, "ann": 0}
        self.projects: dict[int, dict[str, Any]] = {}
        self.labels: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.jobs: dict[int, dict[str, Any]] = {}
        self.uploads: dict[int, _Upload] = {}
        self.requests: dict[str, dict[str, Any]] = {}
        self.exports: dict[str, bytes] = {}
        self.tags: dict[int, list[dict[str, Any]]] = {}  # task id -> tags (frame is task-relative)
        self.shapes: dict[int, list[dict[str, Any]]] = {}  # task id -> point shapes (frame is task-relative)

    def next_id(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]


class FakeCvatServer(ThreadingHTTPServer):
    """The HTTP server; ``state``, ``faults``, ``events`` and the request log are public."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *, users: Mapping[str, str], tokens: Mapping[str, str], page_size: int,
                 version: str = FAKE_CVAT_VERSION) -> None:
        self.version = version
        self.legacy = _is_legacy(version)
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = FakeCvatState(users, tokens, page_size)
        self.about_reply: tuple[int, str, bytes] | None = None
        """If set, ``/api/server/about`` answers this (status, content type, body): a non-CVAT server."""
        self.faults = Faults()
        self.events: dict[str, threading.Event] = {
            "upload_start": threading.Event(),  # set when an Upload-Start arrives
            "release": threading.Event(),  # set by a test to let a hung Upload-Start answer
        }
        self.calls: list[tuple[str, str, dict[str, str]]] = []  # (method, path, selected headers)
        self.raw_paths: list[tuple[str, str]] = []  # (method, path as sent, still URL-encoded)
        self._calls_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, method: str, path_regex: str, *, header: str | None = None) -> int:
        """How many requests matched ``method`` and the full-path regex (and carried ``header``)."""
        rx = re.compile(path_regex)
        with self._calls_lock:
            return sum(1 for m, p, h in self.calls
                       if m == method and rx.fullmatch(p) and (header is None or header in h))

    def log_call(self, method: str, path: str, headers: dict[str, str], raw_path: str | None = None) -> None:
        with self._calls_lock:
            self.calls.append((method, path, headers))
            self.raw_paths.append((method, path if raw_path is None else raw_path))

    # Convenience views for assertions -----------------------------------------------------
    def task_by_name(self, name: str) -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(t) for t in self.state.tasks.values() if t["name"] == name]

    def frame_names(self, task_id: int) -> list[str]:
        with self.state.lock:
            return [f["name"] for f in self.state.tasks[task_id]["frames"]]


@contextlib.contextmanager
def start_fake_cvat(
    *,
    users: Mapping[str, str] | None = None,
    tokens: Mapping[str, str] | None = None,
    page_size: int = 10,
    version: str = FAKE_CVAT_VERSION,
) -> Iterator[tuple[str, FakeCvatServer]]:
    """Run a fake CVAT on 127.0.0.1 in a background thread; yield ``(url, server)``.

    ``users`` maps username -> password (default ``{"admin": "admin-pass"}``), ``tokens`` maps
    a personal access token -> username. ``page_size`` is the default list page size (CVAT: 10).
    ``version``: ``FAKE_CVAT_VERSION`` (2.80.x, any 2.80 or later) or ``LEGACY_CVAT_VERSION``
    (behave like the real CVAT 2.23.1; see the module doc).
    """
    server = FakeCvatServer(users=users or {"admin": "admin-pass"}, tokens=tokens or {},
                            page_size=page_size, version=version)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="fake-cvat", daemon=True)
    thread.start()
    try:
        yield server.url, server
    finally:
        server.events["release"].set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ----------------------------------------------------------------------------------------------
# JSON views


def _user_ref(state: FakeCvatState, base: str, username: str | None) -> dict[str, Any] | None:
    if not username:
        return None
    u = state.users[username]
    return {"url": f"{base}/api/users/{u['id']}", "id": u["id"], "username": u["username"],
            "first_name": u["first_name"], "last_name": u["last_name"]}


def _project_json(state: FakeCvatState, base: str, p: dict[str, Any]) -> dict[str, Any]:
    n_tasks = sum(1 for t in state.tasks.values() if t["project_id"] == p["id"])
    return {
        "url": f"{base}/api/projects/{p['id']}", "id": p["id"], "name": p["name"],
        "owner": _user_ref(state, base, p["owner"]), "assignee": None, "guide_id": None,
        "bug_tracker": "", "task_subsets": [], "created_date": p["created"],
        "updated_date": p["updated"], "status": "annotation", "dimension": "2d" if n_tasks else None,
        "organization": None, "organization_id": None, "target_storage": None,
        "source_storage": None, "assignee_updated_date": None,
        "tasks": {"count": n_tasks, "url": f"{base}/api/tasks?project_id={p['id']}"},
        "labels": {"url": f"{base}/api/labels?project_id={p['id']}"},
    }


def _label_json(lab: dict[str, Any]) -> dict[str, Any]:
    return {"id": lab["id"], "name": lab["name"], "color": lab["color"], "attributes": [],
            "type": lab["type"], "sublabels": [], "project_id": lab["project_id"],
            "task_id": lab["task_id"], "parent_id": None, "has_parent": False}


# what CVAT's TaskReadSerializer reads from the task's data (``source="data.…"``): 2.23 leaves these keys out
# of a task that has no data at all (seen for ``size`` and ``data``)
_DATA_FIELDS = ("size", "data", "image_quality", "data_chunk_size", "data_compressed_chunk_type",
                "data_original_chunk_type", "data_cloud_storage_id")


def _task_json(state: FakeCvatState, base: str, t: dict[str, Any], *, legacy: bool = False) -> dict[str, Any]:
    out = _task_json_full(state, base, t)
    if legacy and t["data"] is None:
        for key in _DATA_FIELDS:
            out.pop(key)
    return out


def _task_json_full(state: FakeCvatState, base: str, t: dict[str, Any]) -> dict[str, Any]:
    jobs = [j for j in state.jobs.values() if j["task_id"] == t["id"]]
    project = state.projects.get(t["project_id"]) if t["project_id"] else None
    return {
        "url": f"{base}/api/tasks/{t['id']}", "id": t["id"], "name": t["name"],
        "project_id": t["project_id"], "project_name": project["name"] if project else None,
        "owner": _user_ref(state, base, t["owner"]), "assignee": _user_ref(state, base, t["assignee"]),
        "bug_tracker": "", "created_date": t["created"], "updated_date": t["updated"],
        "overlap": None, "segment_size": t["segment_size"], "initial_replicas": 0,
        "status": _task_status(jobs),
        "data_chunk_size": 36 if t["data"] else None,
        "data_original_chunk_type": "imageset", "data_compressed_chunk_type": "imageset",
        "data_cloud_storage_id": None, "guide_id": None, "size": len(t["frames"]),
        "image_quality": t["image_quality"], "data": t["data"], "dimension": "2d",
        "mode": "annotation" if t["frames"] else "", "media_type": "image", "subset": "",
        "organization": None, "organization_id": None, "target_storage": None,
        "source_storage": None, "assignee_updated_date": None, "validation_mode": None,
        "labels": {"url": f"{base}/api/labels?task_id={t['id']}"},
        "jobs": {"count": len(jobs), "completed": sum(j["state"] == "completed" for j in jobs),
                 "validation": sum(j["stage"] == "validation" for j in jobs),
                 "url": f"{base}/api/jobs?task_id={t['id']}"},
    }


def _job_json(state: FakeCvatState, base: str, j: dict[str, Any]) -> dict[str, Any]:
    t = state.tasks[j["task_id"]]
    project = state.projects.get(t["project_id"]) if t["project_id"] else None
    return {
        "url": f"{base}/api/jobs/{j['id']}", "id": j["id"], "task_id": t["id"],
        "task_name": t["name"], "project_id": t["project_id"],
        "project_name": project["name"] if project else None,
        "assignee": _user_ref(state, base, j["assignee"]), "guide_id": None, "dimension": "2d",
        "mode": "annotation", "media_type": "image", "bug_tracker": None,
        "status": j["status"], "stage": j["stage"], "state": j["state"],
        "frame_count": j["stop"] - j["start"] + 1, "start_frame": j["start"], "stop_frame": j["stop"],
        "data_chunk_size": 36, "data_compressed_chunk_type": "imageset",
        "data_original_chunk_type": "imageset", "created_date": j["created"],
        "updated_date": j["updated"], "type": "annotation", "organization": None,
        "target_storage": None, "source_storage": None, "assignee_updated_date": None,
        "parent_job_id": None, "replicas_count": 0,
        "issues": {"url": f"{base}/api/issues?job_id={j['id']}", "count": 0},
        "labels": {"url": f"{base}/api/labels?job_id={j['id']}"},
    }


def _request_json(state: FakeCvatState, rq: dict[str, Any], *, advance: bool) -> dict[str, Any]:
    if advance and rq["status"] == "started":
        rq["polls_left"] -= 1
        if rq["polls_left"] < 0:
            rq["status"] = rq["final_status"]
            rq["finished"] = _now()
            if rq["final_status"] == "finished" and rq.get("on_finish"):
                rq.pop("on_finish")()
    done = rq["status"] in ("finished", "failed")
    return {
        "id": rq["id"], "status": rq["status"], "message": rq["message"] if done else "",
        "progress": 1.0 if done else 0.5,
        "operation": {"type": rq["type"], "target": rq["target"], "project_id": None,
                      "task_id": rq.get("task_id"), "job_id": None, "org_id": None,
                      "format": rq.get("format"), "function_id": None, "lightweight": None},
        "created_date": rq["created"], "started_date": rq["created"],
        "finished_date": rq.get("finished"), "expiry_date": None,
        "owner": {"id": state.users[rq["owner"]]["id"], "username": rq["owner"]},
        "result_url": rq.get("result_url") if rq["status"] == "finished" else None,
        "result_id": rq.get("result_id"),
    }


# ----------------------------------------------------------------------------------------------
# Export


def _export_xml(state: FakeCvatState, base: str, t: dict[str, Any], *, legacy: bool = False) -> bytes:
    """CVAT for images 1.1 for one task: meta, then one <image> per frame with its tags.

    ``legacy``: lay it out as CVAT's own writer does (indented, no self-closing elements; an
    element without children or text is an open/close pair holding a newline and the indent).
    """
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    meta = ET.SubElement(root, "meta")
    task = ET.SubElement(meta, "task")
    n = len(t["frames"])
    for key, value in (("id", t["id"]), ("name", t["name"]), ("size", n), ("mode", "annotation"),
                       ("overlap", 0), ("bugtracker", ""), ("created", t["created"]),
                       ("updated", t["updated"]), ("subset", "default"), ("start_frame", 0),
                       ("stop_frame", max(n - 1, 0)), ("frame_filter", "")):
        ET.SubElement(task, key).text = str(value)
    segments = ET.SubElement(task, "segments")
    for j in sorted((j for j in state.jobs.values() if j["task_id"] == t["id"]), key=lambda j: j["id"]):
        seg = ET.SubElement(segments, "segment")
        for key, value in (("id", j["id"]), ("start", j["start"]), ("stop", j["stop"]),
                           ("url", f"{base}/api/jobs/{j['id']}")):
            ET.SubElement(seg, key).text = str(value)
    for role in ("owner", "assignee"):
        el = ET.SubElement(task, role)
        name = t[role]
        if name:
            ET.SubElement(el, "username").text = name
            ET.SubElement(el, "email").text = state.users[name]["email"]
    labels_el = ET.SubElement(task, "labels")
    project_labels = [lab for lab in state.labels.values() if lab["project_id"] == t["project_id"]]
    for lab in sorted(project_labels, key=lambda x: x["id"]):
        le = ET.SubElement(labels_el, "label")
        ET.SubElement(le, "name").text = lab["name"]
        ET.SubElement(le, "color").text = lab["color"]
        ET.SubElement(le, "type").text = lab["type"]
        ET.SubElement(le, "attributes")
    ET.SubElement(meta, "dumped").text = _now()
    by_frame: dict[int, list[dict[str, Any]]] = {}
    for tag in state.tags.get(t["id"], []):
        by_frame.setdefault(tag["frame"], []).append(tag)
    shapes_by_frame: dict[int, list[dict[str, Any]]] = {}
    for shape in state.shapes.get(t["id"], []):
        shapes_by_frame.setdefault(shape["frame"], []).append(shape)
    for i, frame in enumerate(t["frames"]):
        img = ET.SubElement(root, "image", {"id": str(i), "name": frame["name"],
                                            "width": str(frame["width"]), "height": str(frame["height"])})
        for shape in shapes_by_frame.get(i, []):  # CVAT writes an image's shapes before its tags
            pairs = zip(shape["points"][0::2], shape["points"][1::2], strict=True)
            attrs = {"label": state.labels[shape["label_id"]]["name"], "source": shape["source"],
                     "occluded": str(int(shape["occluded"])),
                     "points": ";".join(f"{x:.2f},{y:.2f}" for x, y in pairs),
                     "z_order": str(shape["z_order"])}
            if shape.get("group"):
                attrs["group_id"] = str(shape["group"])
            ET.SubElement(img, "points", attrs)
        for tag in by_frame.get(i, []):
            attrs = {"label": state.labels[tag["label_id"]]["name"], "source": tag["source"]}
            if tag.get("group"):
                attrs["group_id"] = str(tag["group"])
            ET.SubElement(img, "tag", attrs)
    if not legacy:
        return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8")
    ET.indent(root, space="  ")
    _open_close(root, 0, {"image", "tag", "points", "attributes", "segments", "labels", "owner", "assignee"})
    return (b'<?xml version="1.0" encoding="utf-8"?>\n'
            + ET.tostring(root, encoding="utf-8", xml_declaration=False, short_empty_elements=False) + b"\n")


def _open_close(el: ET.Element, level: int, containers: set[str]) -> None:
    """Give empty container elements CVAT's ``<x ...>\\n<indent></x>`` form."""
    for child in el:
        if child.tag in containers and len(child) == 0 and not child.text:
            child.text = "\n" + "  " * (level + 1)
        _open_close(child, level + 1, containers)


def _zip_annotations(xml: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations.xml", xml)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Handler


def _image_size(data: bytes) -> tuple[int, int]:
    from PIL import Image  # pillow is a byu dependency

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception as exc:  # noqa: BLE001 - a bad image fails the processing request
        raise ValueError(f"not an image: {exc}") from exc


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms Nagle/delayed-ACK stalls per response
    wbufsize = 1 << 16  # headers and body leave in one write (flushed after each request)
    server: FakeCvatServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        return

    # plumbing ---------------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return self.server.url

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", *, content_type: str = RENDERER,
              headers: Mapping[str, str] | None = None, cookies: Sequence[str] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        for c in cookies:
            self.send_header("Set-Cookie", c)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, **kw: Any) -> None:
        self._send(status, json.dumps(obj).encode(), **kw)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        body = self._read_body()
        marks = {h: "" for h in ("Upload-Start", "Upload-Multiple", "Upload-Finish") if h in self.headers}
        self.server.log_call(self.command, path, marks, raw_path=parts.path)
        try:
            for method, rx, fn, auth in _ROUTES:
                if method != self.command:
                    continue
                m = rx.fullmatch(path)
                if m:
                    negotiates = not (fn is _Handler.about and self.server.about_reply is not None)
                    if negotiates and not _acceptable(self.headers.get("Accept")):
                        raise HttpError(406, dict(NOT_ACCEPTABLE))  # DRF negotiates before it authenticates
                    user = self._auth() if auth else None
                    fn(self, m, query, body, user)
                    return
            raise HttpError(404, {"detail": "Not found."})
        except HttpError as e:
            self._json(e.status, e.detail)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _handle

    def _auth(self) -> str:
        st = self.server.state
        authz = self.headers.get("Authorization", "")
        with st.lock:
            if authz.startswith("Bearer "):
                user = st.tokens.get(authz[len("Bearer "):].strip())
                if user:
                    return user
                raise HttpError(401, {"detail": "Invalid token."})
            if authz.startswith("Token "):
                user = st.keys.get(authz[len("Token "):].strip())
                if user:
                    return user
                raise HttpError(401, {"detail": "Invalid token."})
            cookies = {}
            for part in (self.headers.get("Cookie") or "").split(";"):
                if "=" in part:
                    k, v = part.strip().split("=", 1)
                    cookies[k] = v
            sess = st.sessions.get(cookies.get("sessionid", ""))
            if not sess:
                raise HttpError(401, {"detail": "Authentication credentials were not provided."})
            user, csrf = sess
            if self.command not in ("GET", "HEAD", "OPTIONS") and self.headers.get("X-CSRFToken") != csrf:
                raise HttpError(403, {"detail": "CSRF Failed: CSRF token missing or incorrect."})
            return user

    def _page(self, items: list[dict[str, Any]], query: dict[str, str], path: str) -> None:
        size = int(query.get("page_size") or self.server.state.page_size)
        page = int(query.get("page") or 1)
        start = (page - 1) * size
        chunk = items[start:start + size]
        nxt = None
        if start + size < len(items):
            q = dict(query, page=str(page + 1))
            nxt = f"{self.base}{path}?{urlencode(q)}"
        prev = None
        if page > 1:
            prev = f"{self.base}{path}?{urlencode(dict(query, page=str(page - 1)))}"
        self._json(200, {"count": len(items), "next": nxt, "previous": prev, "results": chunk})

    # server / auth ------------------------------------------------------------------------------
    def about(self, m, query, body, user) -> None:
        if self.server.about_reply is not None:
            status, content_type, data = self.server.about_reply
            self._send(status, data, content_type=content_type)
            return
        about = {"name": "Computer Vision Annotation Tool (fake)", "description": "loopback fake",
                 "version": self.server.version}
        if not self.server.legacy:  # 2.23 sends only name, description and version
            about.update(logo_url=f"{self.base}/static/logo.svg", subtitle="byu tests")
        self._json(200, about)

    def login(self, m, query, body, user) -> None:
        st = self.server.state
        try:
            creds = json.loads(body or b"{}")
        except json.JSONDecodeError:
            raise HttpError(400, {"detail": "bad json"}) from None
        name = creds.get("username") or ""
        with st.lock:
            if st.passwords.get(name) is None or st.passwords[name] != creds.get("password"):
                raise HttpError(400, {"non_field_errors": ["Unable to log in with provided credentials."]})
            sid, csrf, key = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(20)
            st.sessions[sid] = (name, csrf)
            st.keys[key] = name
        self._json(200, {"key": key}, cookies=[f"sessionid={sid}; Path=/",
                                               f"csrftoken={csrf}; Path=/"])

    def logout(self, m, query, body, user) -> None:
        self._json(200, {"detail": "Successfully logged out."})

    def users_self(self, m, query, body, user) -> None:
        u = self.server.state.users[user]
        self._json(200, dict(u, url=f"{self.base}/api/users/{u['id']}", groups=["admin"],
                             is_staff=True, is_superuser=True, is_active=True,
                             last_login=None, date_joined=_now(), has_analytics_access=True))

    def users_list(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            items = [{"url": f"{self.base}/api/users/{u['id']}", "id": u["id"], "username": u["username"],
                      "first_name": "", "last_name": ""}
                     for u in st.users.values()
                     if not query.get("username") or u["username"] == query["username"]]
        self._page(items, query, "/api/users")

    # projects / labels ------------------------------------------------------------------------
    def projects_create(self, m, query, body, user) -> None:
        st = self.server.state
        spec = json.loads(body or b"{}")
        if not spec.get("name"):
            raise HttpError(400, {"name": ["This field is required."]})
        with st.lock:
            pid = st.next_id("project")
            st.projects[pid] = {"id": pid, "name": spec["name"], "owner": user,
                                "created": _now(), "updated": _now()}
            seen = set()
            for lab in spec.get("labels") or []:
                if not lab.get("name") or lab["name"] in seen:
                    raise HttpError(400, {"labels": ["bad or duplicate label name"]})
                seen.add(lab["name"])
                lid = st.next_id("label")
                st.labels[lid] = {"id": lid, "name": lab["name"], "type": lab.get("type") or "any",
                                  "color": lab.get("color") or f"#{lid * 2654435761 % 0xFFFFFF:06x}",
                                  "project_id": pid, "task_id": None}
            self._json(201, _project_json(st, self.base, st.projects[pid]))

    def projects_list(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            items = [_project_json(st, self.base, p) for p in sorted(st.projects.values(), key=lambda p: p["id"])
                     if not query.get("name") or p["name"] == query["name"]]
        self._page(items, query, "/api/projects")

    def _project(self, pid: int) -> dict[str, Any]:
        p = self.server.state.projects.get(pid)
        if p is None:
            raise _not_found("Project")
        return p

    def projects_get(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            self._json(200, _project_json(st, self.base, self._project(int(m["id"]))))

    def projects_patch(self, m, query, body, user) -> None:
        st = self.server.state
        spec = json.loads(body or b"{}")
        with st.lock:
            p = self._project(int(m["id"]))
            if "name" in spec:
                p["name"] = spec["name"]
            for lab in spec.get("labels") or []:
                if any(x["project_id"] == p["id"] and x["name"] == lab.get("name") for x in st.labels.values()):
                    continue
                lid = st.next_id("label")
                st.labels[lid] = {"id": lid, "name": lab["name"], "type": lab.get("type") or "any",
                                  "color": lab.get("color") or "#888888", "project_id": p["id"], "task_id": None}
            p["updated"] = _now()
            self._json(200, _project_json(st, self.base, p))

    def projects_delete(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            p = self._project(int(m["id"]))
            for tid in [t["id"] for t in st.tasks.values() if t["project_id"] == p["id"]]:
                self._delete_task(tid)
            for lid in [lab["id"] for lab in st.labels.values() if lab["project_id"] == p["id"]]:
                del st.labels[lid]
            del st.projects[p["id"]]
        self._send(204)

    def labels_list(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            pid = None
            if query.get("project_id"):
                pid = int(query["project_id"])
            elif query.get("task_id"):
                pid = self._task(int(query["task_id"]))["project_id"]
            elif query.get("job_id"):
                pid = self._task(self._job(int(query["job_id"]))["task_id"])["project_id"]
            items = [_label_json(lab) for lab in sorted(st.labels.values(), key=lambda x: x["id"])
                     if pid is None or lab["project_id"] == pid]
        self._page(items, query, "/api/labels")

    # tasks ------------------------------------------------------------------------------------
    def _task_view(self, t: dict[str, Any]) -> dict[str, Any]:
        return _task_json(self.server.state, self.base, t, legacy=self.server.legacy)

    def _task(self, tid: int) -> dict[str, Any]:
        t = self.server.state.tasks.get(tid)
        if t is None:
            raise _not_found("Task")
        return t

    def _job(self, jid: int) -> dict[str, Any]:
        j = self.server.state.jobs.get(jid)
        if j is None:
            raise _not_found("Job")
        return j

    def tasks_create(self, m, query, body, user) -> None:
        st = self.server.state
        spec = json.loads(body or b"{}")
        if not spec.get("name"):
            raise HttpError(400, {"name": ["This field is required."]})
        with st.lock:
            pid = spec.get("project_id")
            if pid is not None:
                self._project(int(pid))
                if spec.get("labels"):
                    raise HttpError(400, {"labels": ["tasks in a project use the project's labels"]})
            elif not spec.get("labels"):
                raise HttpError(400, {"label_set": ["Label set must not be empty"]})
            tid = st.next_id("task")
            st.tasks[tid] = {"id": tid, "name": spec["name"], "project_id": pid, "owner": user,
                             "assignee": None, "segment_size": int(spec.get("segment_size") or 0),
                             "created": _now(), "updated": _now(), "data": None, "frames": [],
                             "image_quality": 70, "processing": False}
            self._json(201, self._task_view(st.tasks[tid]))

    def tasks_list(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            items = [self._task_view(t) for t in sorted(st.tasks.values(), key=lambda t: t["id"])
                     if (not query.get("name") or t["name"] == query["name"])
                     and (not query.get("project_id") or t["project_id"] == int(query["project_id"]))]
        self._page(items, query, "/api/tasks")

    def tasks_get(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            self._json(200, self._task_view(self._task(int(m["id"]))))

    def tasks_patch(self, m, query, body, user) -> None:
        st = self.server.state
        spec = json.loads(body or b"{}")
        with st.lock:
            t = self._task(int(m["id"]))
            if "name" in spec:
                t["name"] = spec["name"]
            if "assignee_id" in spec:
                t["assignee"] = self._username(spec["assignee_id"])
            t["updated"] = _now()
            self._json(200, self._task_view(t))

    def _username(self, uid: int | None) -> str | None:
        if uid is None:
            return None
        for u in self.server.state.users.values():
            if u["id"] == int(uid):
                return u["username"]
        raise HttpError(400, {"assignee": ["unknown user"]})

    def _delete_task(self, tid: int) -> None:
        st = self.server.state
        st.tasks.pop(tid, None)
        st.uploads.pop(tid, None)
        st.tags.pop(tid, None)
        st.shapes.pop(tid, None)
        for jid in [j["id"] for j in st.jobs.values() if j["task_id"] == tid]:
            del st.jobs[jid]

    def tasks_delete(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            self._task(int(m["id"]))
            self._delete_task(int(m["id"]))
        self._send(204)

    def tasks_data(self, m, query, body, user) -> None:
        st = self.server.state
        tid = int(m["id"])
        with st.lock:
            t = self._task(tid)
            if t["frames"]:
                raise HttpError(400, "Adding more data is not supported")
        if "Upload-Start" in self.headers:
            self.server.events["upload_start"].set()
            with st.lock:
                if self.server.faults.upload_start_500 > 0:
                    self.server.faults.upload_start_500 -= 1
                    raise HttpError(500, {"detail": "injected upload start failure"})
            if self.server.faults.hang_upload_start:
                self.server.events["release"].wait(timeout=10)
                raise HttpError(500, {"detail": "upload start aborted"})
            with st.lock:
                if t["data"] is None:
                    t["data"] = st.next_id("data")
                st.uploads[tid] = _Upload()
            self._send(202, b"")
            return
        if "Upload-Multiple" in self.headers:
            with st.lock:
                if self.server.faults.upload_500 > 0:
                    self.server.faults.upload_500 -= 1
                    raise HttpError(500, {"detail": "injected upload failure"})
                upload = st.uploads.get(tid)
                if upload is None:
                    raise HttpError(400, {"detail": "upload was not started"})
            files = _parse_multipart(self.headers.get("Content-Type", ""), body)
            with st.lock:
                for key, (filename, data) in files.items():
                    if key.startswith("client_files["):
                        name = filename.replace("\\", "/").rsplit("/", 1)[-1]
                        upload.files[name] = data
            self._send(200, b"")
            return
        if "Upload-Finish" in self.headers:
            params = json.loads(body or b"{}")
            with st.lock:
                upload = st.uploads.pop(tid, None)
                if upload is None or not upload.files:
                    raise HttpError(400, {"detail": "no files were uploaded"})
                rq_id = f"create:task-{tid}" if self.server.legacy else f"create:task-{tid}-{uuid.uuid4().hex[:8]}"
                fail = self.server.faults.fail_processing > 0
                if fail:
                    self.server.faults.fail_processing -= 1
                names = list(upload.files)
                method = str(params.get("sorting_method") or "lexicographical")
                if method == "predefined" and params.get("upload_file_order"):
                    order = list(params["upload_file_order"])
                    if sorted(order) != sorted(names):
                        raise HttpError(400, {"detail": "upload_file_order does not match the files"})
                    names = order
                elif method in ("lexicographical", "natural"):
                    names = sorted(names)
                t["image_quality"] = int(params.get("image_quality") or 70)
                rq = {"id": rq_id, "status": "started", "final_status": "finished", "message": "",
                      "type": "create:task", "target": "task", "task_id": tid, "owner": user,
                      "created": _now(), "polls_left": self.server.faults.processing_polls,
                      "result_id": tid}
                try:
                    frames = []
                    for name in names:
                        w, h = _image_size(upload.files[name])
                        frames.append({"name": name, "width": w, "height": h})
                    if fail:
                        raise ValueError("injected processing failure")
                except ValueError as exc:
                    rq["final_status"] = "failed"
                    rq["message"] = f"Failed to create the task: {exc}"
                else:
                    rq["on_finish"] = lambda t=t, frames=frames: self._attach_frames(t, frames)
                st.requests[rq_id] = rq
            self._json(202, {"rq_id": rq_id})
            return
        raise HttpError(400, {"detail": "use the Upload-Start / Upload-Multiple / Upload-Finish protocol"})

    def _attach_frames(self, t: dict[str, Any], frames: list[dict[str, Any]]) -> None:
        st = self.server.state
        if st.tasks.get(t["id"]) is not t:  # deleted meanwhile
            return
        t["frames"] = frames
        t["updated"] = _now()
        n = len(frames)
        seg = t["segment_size"] or n
        for start in range(0, n, seg):
            jid = st.next_id("job")
            st.jobs[jid] = {"id": jid, "task_id": t["id"], "start": start, "stop": min(start + seg, n) - 1,
                            "state": "new", "stage": "annotation", "status": "annotation", "assignee": None,
                            "created": _now(), "updated": _now()}

    def tasks_data_meta(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            t = self._task(int(m["id"]))
            n = len(t["frames"])
            self._json(200, {
                "chunk_size": 36, "size": n, "image_quality": t["image_quality"], "start_frame": 0,
                "stop_frame": max(n - 1, 0), "frame_filter": "", "chunks_updated_date": t["updated"],
                "frames": [{"name": f["name"], "width": f["width"], "height": f["height"],
                            "related_files": 0, "has_related_context": False} for f in t["frames"]],
                "deleted_frames": [], "included_frames": None, "chapters": None,
                "storage": "local", "cloud_storage_id": None,
            })

    def requests_get(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            rq = st.requests.get(m["rq_id"])
            if rq is None:
                raise HttpError(404, {"detail": "Not found."})
            self._json(200, _request_json(st, rq, advance=True))

    # jobs -------------------------------------------------------------------------------------
    def jobs_list(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            items = [_job_json(st, self.base, j) for j in sorted(st.jobs.values(), key=lambda j: j["id"])
                     if not query.get("task_id") or j["task_id"] == int(query["task_id"])]
        self._page(items, query, "/api/jobs")

    def jobs_get(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            self._json(200, _job_json(st, self.base, self._job(int(m["id"]))))

    def jobs_patch(self, m, query, body, user) -> None:
        st = self.server.state
        spec = json.loads(body or b"{}")
        with st.lock:
            j = self._job(int(m["id"]))
            for key, choices in (("state", JOB_STATES), ("stage", JOB_STAGES)):
                if key in spec and spec[key] not in choices:
                    raise _bad_choice(key, spec[key])
            # CVAT's JobWriteSerializer.update: a new stage without a state resets the state
            stage = spec.get("stage", j["stage"])
            state = spec.get("state", "new" if stage != j["stage"] else j["state"])
            if "stage" in spec or "state" in spec:
                j["status"] = _job_status(stage, state)
            j["stage"], j["state"] = stage, state
            if "assignee" in spec:
                j["assignee"] = self._username(spec["assignee"])
            j["updated"] = _now()
            self._json(200, _job_json(st, self.base, j))

    # annotations ------------------------------------------------------------------------------
    def _patch_tags(self, t: dict[str, Any], lo: int, hi: int, query: dict[str, str], body: bytes) -> dict:
        """Create, update or delete tags and point shapes of frames ``lo..hi`` of task ``t``."""
        st = self.server.state
        action = query.get("action")
        if action not in ("create", "update", "delete"):
            raise HttpError(400, {"detail": "Please specify a correct 'action' for the request"})
        data = json.loads(body or b"{}")
        labels = {lab["id"] for lab in st.labels.values() if lab["project_id"] == t["project_id"]}
        group = None if self.server.legacy else 0

        def frame_of(item: Mapping[str, Any]) -> int:
            frame = int(item["frame"])
            if not lo <= frame <= hi:
                raise HttpError(400, {"detail": f"frame {frame} is outside [{lo}, {hi}]"})
            return frame

        def label_of(item: Mapping[str, Any]) -> int:
            if int(item["label_id"]) not in labels:
                raise HttpError(400, {"detail": f"label {item['label_id']} does not belong to the task"})
            return int(item["label_id"])

        tags = st.tags.setdefault(t["id"], [])
        out = []
        for tag in data.get("tags") or []:
            frame = frame_of(tag)
            if action == "delete":
                tags[:] = [x for x in tags if x["id"] != tag.get("id")]
                continue
            label_id = label_of(tag)
            if action == "update" and tag.get("id") is not None:
                tags[:] = [x for x in tags if x["id"] != tag["id"]]
            new = {"id": tag.get("id") if action == "update" and tag.get("id") else st.next_id("ann"),
                   "frame": frame, "label_id": label_id, "group": tag.get("group") or group,
                   "source": tag.get("source") or "manual", "attributes": tag.get("attributes") or []}
            tags.append(new)
            out.append(new)
        shapes = st.shapes.setdefault(t["id"], [])
        out_shapes = []
        for shape in data.get("shapes") or []:
            if shape.get("type") != "points":
                continue  # only point shapes (clicks) are kept
            frame = frame_of(shape)
            if action == "delete":
                shapes[:] = [x for x in shapes if x["id"] != shape.get("id")]
                continue
            label_id = label_of(shape)
            points = [float(v) for v in shape.get("points") or []]
            if not points or len(points) % 2:
                raise HttpError(400, {"points": ["a points shape needs x, y pairs"]})
            if action == "update" and shape.get("id") is not None:
                shapes[:] = [x for x in shapes if x["id"] != shape["id"]]
            new = {"type": "points", "occluded": bool(shape.get("occluded", False)),
                   "outside": bool(shape.get("outside", False)), "z_order": int(shape.get("z_order") or 0),
                   "rotation": float(shape.get("rotation") or 0.0), "points": points,
                   "id": shape.get("id") if action == "update" and shape.get("id") else st.next_id("ann"),
                   "frame": frame, "label_id": label_id, "group": shape.get("group") or group,
                   "source": shape.get("source") or "manual", "attributes": shape.get("attributes") or [],
                   "elements": []}
            shapes.append(new)
            out_shapes.append(new)
        t["updated"] = _now()
        return {"version": 0, "tags": out, "shapes": out_shapes, "tracks": []}

    def _tags_in(self, t: dict[str, Any], lo: int, hi: int) -> dict[str, Any]:
        st = self.server.state
        tags = [x for x in st.tags.get(t["id"], []) if lo <= x["frame"] <= hi]
        shapes = [x for x in st.shapes.get(t["id"], []) if lo <= x["frame"] <= hi]
        return {"version": 0, "tags": tags, "shapes": shapes, "tracks": []}

    def job_annotations_patch(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            j = self._job(int(m["id"]))
            out = self._patch_tags(st.tasks[j["task_id"]], j["start"], j["stop"], query, body)
            self._json(200, out)

    def job_annotations_get(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            j = self._job(int(m["id"]))
            self._json(200, self._tags_in(st.tasks[j["task_id"]], j["start"], j["stop"]))

    def task_annotations_patch(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            t = self._task(int(m["id"]))
            self._json(200, self._patch_tags(t, 0, len(t["frames"]) - 1, query, body))

    def task_annotations_get(self, m, query, body, user) -> None:
        st = self.server.state
        if self.server.legacy and query.get("action") == "download":  # 2.23's export result_url
            if query.get("format") != EXPORT_FORMAT:
                raise HttpError(400, {"detail": f"Unknown format {query.get('format')!r}"})
            self._send_export(int(m["id"]), _legacy_export_rq_id(int(m["id"]), EXPORT_FORMAT,
                                                                  st.users[user]["id"]))
            return
        with st.lock:
            t = self._task(int(m["id"]))
            self._json(200, self._tags_in(t, 0, len(t["frames"]) - 1))

    # export -----------------------------------------------------------------------------------
    def task_export(self, m, query, body, user) -> None:
        st = self.server.state
        with st.lock:
            t = self._task(int(m["id"]))
            if self.server.faults.export_500 > 0:
                self.server.faults.export_500 -= 1
                raise HttpError(500, {"detail": "injected export failure"})
            if query.get("format") != EXPORT_FORMAT:
                raise HttpError(405, {"detail": f"Unknown format {query.get('format')!r}"})
            if query.get("save_images", "false").lower() not in ("false", "0"):
                raise HttpError(400, {"detail": "the fake exports annotations only (save_images=False)"})
            if not t["frames"]:
                raise HttpError(400, {"detail": "Exporting a task without data is not allowed"})
            legacy = self.server.legacy
            if legacy:  # the 2.23 server's deterministic id; the result is fetched by format
                rq_id = _legacy_export_rq_id(t["id"], EXPORT_FORMAT, st.users[user]["id"])
                result_url = f"{self.base}/api/tasks/{t['id']}/annotations?" + urlencode(
                    {"format": EXPORT_FORMAT, "save_images": "False", "action": "download"})
            else:
                rq_id = f"export:task-{t['id']}-{uuid.uuid4().hex[:8]}"
                result_url = f"{self.base}/api/tasks/{t['id']}/dataset/download?{urlencode({'rq_id': rq_id})}"
            st.exports[rq_id] = _zip_annotations(_export_xml(st, self.base, t, legacy=legacy))
            st.requests[rq_id] = {
                "id": rq_id, "status": "started", "final_status": "finished", "message": "",
                "type": "export:annotations", "target": "task", "task_id": t["id"], "owner": user,
                "format": EXPORT_FORMAT, "created": _now(), "polls_left": self.server.faults.processing_polls,
                "result_url": result_url,
            }
        self._json(202, {"rq_id": rq_id})

    def task_export_download(self, m, query, body, user) -> None:
        if self.server.legacy:
            raise HttpError(404, {"detail": "Not found."})  # 2.23 downloads via /annotations?action=download
        self._send_export(int(m["id"]), query.get("rq_id", ""))

    def _send_export(self, tid: int, rq_id: str) -> None:
        st = self.server.state
        with st.lock:
            t = self._task(tid)
            data = st.exports.get(rq_id)
            if data is None:
                raise HttpError(404, {"detail": "Not found."})
            drop = self.server.faults.drop_export_download > 0
            if drop:
                self.server.faults.drop_export_download -= 1
            stamp = datetime.now(UTC).strftime("%Y_%m_%d_%H_%M_%S")
            if self.server.legacy:
                name = f"task_{t['name']}_annotations_{stamp}_{EXPORT_FORMAT.lower()}.zip"
            else:
                name = f"task_{tid}_annotations.zip"
        if not drop:
            self._send(200, data, content_type="application/zip",
                       headers={"Content-Disposition": f'attachment; filename="{name}"'})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Disposition", f'attachment; filename="{name}"')
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _legacy_export_rq_id(task_id: int, fmt: str, user_id: int) -> str:
    """``export:task-2-annotations-in-CVAT_for_images_1@1-format-by-1``, as CVAT 2.23 names it."""
    slug = fmt.replace(" ", "_").replace(".", "@")
    return f"export:task-{task_id}-annotations-in-{slug}-format-by-{user_id}"


def _parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str, bytes]]:
    """Parse a multipart/form-data body into ``{field: (filename, bytes)}`` (stdlib email parser)."""
    if not content_type.startswith("multipart/form-data"):
        raise HttpError(400, {"detail": "expected multipart/form-data"})
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    out: dict[str, tuple[str, bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename() or ""
        out[str(name)] = (filename, part.get_payload(decode=True) or b"")
    return out


_R = _Handler
_ROUTES: list[tuple[str, re.Pattern[str], Any, bool]] = [
    (meth, re.compile(rx), fn, auth) for meth, rx, fn, auth in [
        ("GET", r"/api/server/about/?", _R.about, False),
        ("POST", r"/api/auth/login/?", _R.login, False),
        ("POST", r"/api/auth/logout/?", _R.logout, True),
        ("GET", r"/api/users/self/?", _R.users_self, True),
        ("GET", r"/api/users/?", _R.users_list, True),
        ("POST", r"/api/projects/?", _R.projects_create, True),
        ("GET", r"/api/projects/?", _R.projects_list, True),
        ("GET", r"/api/projects/(?P<id>\d+)/?", _R.projects_get, True),
        ("PATCH", r"/api/projects/(?P<id>\d+)/?", _R.projects_patch, True),
        ("DELETE", r"/api/projects/(?P<id>\d+)/?", _R.projects_delete, True),
        ("GET", r"/api/labels/?", _R.labels_list, True),
        ("POST", r"/api/tasks/?", _R.tasks_create, True),
        ("GET", r"/api/tasks/?", _R.tasks_list, True),
        ("GET", r"/api/tasks/(?P<id>\d+)/?", _R.tasks_get, True),
        ("PATCH", r"/api/tasks/(?P<id>\d+)/?", _R.tasks_patch, True),
        ("DELETE", r"/api/tasks/(?P<id>\d+)/?", _R.tasks_delete, True),
        ("POST", r"/api/tasks/(?P<id>\d+)/data/?", _R.tasks_data, True),
        ("GET", r"/api/tasks/(?P<id>\d+)/data/meta/?", _R.tasks_data_meta, True),
        ("GET", r"/api/requests/(?P<rq_id>[^/]+)/?", _R.requests_get, True),
        ("GET", r"/api/jobs/?", _R.jobs_list, True),
        ("GET", r"/api/jobs/(?P<id>\d+)/?", _R.jobs_get, True),
        ("PATCH", r"/api/jobs/(?P<id>\d+)/?", _R.jobs_patch, True),
        ("GET", r"/api/jobs/(?P<id>\d+)/annotations/?", _R.job_annotations_get, True),
        ("PATCH", r"/api/jobs/(?P<id>\d+)/annotations/?", _R.job_annotations_patch, True),
        ("GET", r"/api/tasks/(?P<id>\d+)/annotations/?", _R.task_annotations_get, True),
        ("PATCH", r"/api/tasks/(?P<id>\d+)/annotations/?", _R.task_annotations_patch, True),
        ("POST", r"/api/tasks/(?P<id>\d+)/dataset/export/?", _R.task_export, True),
        ("GET", r"/api/tasks/(?P<id>\d+)/dataset/download/?", _R.task_export_download, True),
    ]
]


# ----------------------------------------------------------------------------------------------
# Simulated annotator (SDK only; not part of the product)


def tag_images_as_annotator(
    client: Any,
    task_id: int,
    tags_by_image: Mapping[str, Sequence[str]],
    *,
    complete: bool = True,
    assignee: str | None = None,
) -> int:
    """Tag frames of a CVAT task by image name through the SDK, as a human annotator would.

    ``tags_by_image`` maps an image name (as uploaded) to tag label names. Each tag goes to the
    job holding that frame via ``job.update_annotations(..., action=CREATE)``. With
    ``complete`` the touched jobs are marked ``completed``; with ``assignee`` (a username) the
    jobs are assigned first. Returns the number of tags created.
    """
    from cvat_sdk import models
    from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction

    task = client.tasks.retrieve(task_id)
    frames = {f.name: i for i, f in enumerate(task.get_frames_info())}
    label_ids = {lab.name: lab.id for lab in task.get_labels()}
    unknown = [n for n in tags_by_image if n not in frames]
    if unknown:
        raise KeyError(f"images not in task {task_id}: {unknown}")
    assignee_id = None
    if assignee is not None:
        users = client.users.list(username=assignee)
        assignee_id = next(u.id for u in users if u.username == assignee)
    created = 0
    for job in task.get_jobs():
        lo, hi = job.start_frame, job.stop_frame
        tags = [models.LabeledImageRequest(frame=frames[name], label_id=label_ids[tag], source="manual",
                                           attributes=[])
                for name, names in tags_by_image.items() if lo <= frames[name] <= hi
                for tag in names]
        if assignee_id is not None:
            job.update(models.PatchedJobWriteRequest(assignee=assignee_id))
        if tags:
            job.update_annotations(models.PatchedLabeledDataRequest(tags=tags),
                                   action=AnnotationUpdateAction.CREATE)
            created += len(tags)
            if complete:
                job.update(models.PatchedJobWriteRequest(state="completed"))
    return created


def click_images_as_annotator(
    client: Any,
    task_id: int,
    points_by_image: Mapping[str, Sequence[tuple[str, float, float]]],
    *,
    complete: bool = True,
    assignee: str | None = None,
) -> int:
    """Place points on frames of a CVAT task by image name through the SDK, as a human annotator would.

    ``points_by_image`` maps an image name (as uploaded) to ``(label name, x, y)`` points in image pixels. Each
    point becomes one ``LabeledShapeRequest(type="points", points=[x, y])`` of the job holding that frame, sent
    with ``job.update_annotations(..., action=CREATE)``. With ``complete`` the touched jobs are marked
    ``completed``; with ``assignee`` (a username) the jobs are assigned first. Returns the number of points placed.
    """
    from cvat_sdk import models
    from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction

    task = client.tasks.retrieve(task_id)
    frames = {f.name: i for i, f in enumerate(task.get_frames_info())}
    label_ids = {lab.name: lab.id for lab in task.get_labels()}
    unknown = [n for n in points_by_image if n not in frames]
    if unknown:
        raise KeyError(f"images not in task {task_id}: {unknown}")
    assignee_id = None
    if assignee is not None:
        users = client.users.list(username=assignee)
        assignee_id = next(u.id for u in users if u.username == assignee)
    placed = 0
    for job in task.get_jobs():
        lo, hi = job.start_frame, job.stop_frame
        shapes = [models.LabeledShapeRequest(type="points", frame=frames[name], label_id=label_ids[label],
                                             points=[float(x), float(y)], occluded=False, z_order=0,
                                             source="manual", attributes=[])
                  for name, points in points_by_image.items() if lo <= frames[name] <= hi
                  for label, x, y in points]
        if assignee_id is not None:
            job.update(models.PatchedJobWriteRequest(assignee=assignee_id))
        if shapes:
            job.update_annotations(models.PatchedLabeledDataRequest(shapes=shapes),
                                   action=AnnotationUpdateAction.CREATE)
            placed += len(shapes)
            if complete:
                job.update(models.PatchedJobWriteRequest(state="completed"))
    return placed


def wait_until(predicate: Any, *, timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll ``predicate()`` until it is truthy or ``timeout`` seconds pass; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return bool(value)
        time.sleep(interval)

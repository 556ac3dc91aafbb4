"""Review decisions: CVAT XML exports (or a CSV made outside CVAT) -> ``decisions.csv``.

Images are mapped back to cases through ``cases.csv`` (column ``image``), never by parsing coordinates out of the
name, and every tag set goes through the one validator (:func:`byu.review.tags.check_tags`). Every problem is
reported per image, all at once: a tag outside the vocabulary, a candidate the image did not show, contradictory
tags, an image we never sent (or not in the task the XML came from), an image we sent that the export lacks, an
image listed twice.

XML is parsed incrementally (``lxml.etree.iterparse``: memory stays flat in the export's size) with entity
resolution, DTD loading and network access off and a size cap checked before parsing (default 64 MiB); a DOCTYPE
that declares entities or points at an external DTD is rejected, as is any entity reference left in the tree.

Clicks: a ``<points label="here" points="x,y[;x,y...]">`` shape on an image (``here:<class>`` in a multi-class
round) is a reviewer's "the particle is here". Each point is mapped to the label frame of the case's tomogram
through the image's panel geometry (``review/<round>/geometry/<image>.json``: the panel holding the pixel, then
:func:`byu.review.render.point_to_frame`) and becomes the tag ``at:<z>/<y>/<x>[:<class>]``
(:mod:`byu.review.tags`, which also says what it means and when it contradicts other tags); a CSV may carry ``at:``
tags directly. A point outside every panel, on an image without a (readable) geometry file, on a gallery
("place clicks on single-particle images"), with a label that is not a click label, or any other shape (box,
polygon, ...) is an error naming the image (and the pixel).

Reviewer (column ``reviewer``): the ``<assignee><username>`` of the export's ``<meta><task>`` (or ``<meta><job>``);
else the ``fallback_reviewer`` the caller passes (``pull`` passes the assignee of the task's single job); else the
``<owner><username>``; else empty. ``job_state`` is the CVAT state of the job the image was tagged in
(``completed``, ``in progress``, ...; empty when not known, e.g. for imported decisions).

``decisions.csv`` columns: ``case_id,image,tags,reviewer,source,job_state``; ``tags`` is the ``;``-joined canonical
tag list; ``source`` is ``cvat:<xml file name>`` or ``import:<csv name>`` (or ``scripted``). Rows follow the order
of ``cases.csv``. Text from outside (reviewer names) is written spreadsheet-safe.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from lxml import etree

from byu.atomic import atomic_open
from byu.errors import InputError, InputErrors
from byu.paths import check_id
from byu.review.cases import Case, load_case_rows, read_cases, round_classes
from byu.review.paths import RoundPaths
from byu.review.render import PanelGeometry, point_to_frame, read_geometry
from byu.review.tags import (
    GALLERY_CLICK,
    OK,
    UNSURE,
    check_tags,
    click_tag,
    point_label_class,
    point_labels,
    tag_labels,
)
from byu.textsafe import safe_columns

DEFAULT_MAX_XML_BYTES = 64 * 2**20
DEFAULT_MAX_CSV_BYTES = 16 * 2**20
MAX_GEOMETRY_BYTES = 4 * 2**20
SHAPES = ("box", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton")  # CVAT for images 1.1
DECISION_COLUMNS = ["case_id", "image", "tags", "reviewer", "source", "job_state"]
COMPLETED = "completed"

__all__ = [
    "COMPLETED", "DEFAULT_MAX_XML_BYTES", "DECISION_COLUMNS", "DecisionsResult", "combine_results",
    "decisions_from_round", "has_geometry", "import_decisions_csv", "load_cases", "parse_cvat_xml", "read_decisions",
    "tag_vocabulary", "write_decisions",
]


@dataclass
class DecisionsResult:
    """Decisions (``DECISION_COLUMNS``), the per-image error messages, and the cases left out because their job
    was not completed."""

    decisions: pd.DataFrame
    errors: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# ----------------------------------------------------------------------------------------------
# Cases


def load_cases(cases: Iterable[Case] | pd.DataFrame | str | Path) -> dict[str, Case]:
    """Cases by image name (file order) from a list of cases, a ``cases.csv`` path or its table."""
    if isinstance(cases, (str, Path)):
        out = read_cases(cases)
    elif isinstance(cases, pd.DataFrame):
        out = load_case_rows(cases.to_dict("records"))
    else:
        out = list(cases)
    return {c.image: c for c in out}


def tag_vocabulary(cases: Iterable[Case], *, points: bool = False) -> list[str]:
    """The CVAT labels of a round (:func:`byu.review.tags.tag_labels`: ``0..K``, ``x1..xN`` with galleries,
    ``none``, ``unsure``, ``ok``, and ``k:<class>`` when several classes; with ``points`` the click labels ``here``
    / ``here:<class>``)."""
    cases = list(cases)
    max_k = max((max(c.ks) for c in cases if c.ks and not c.is_gallery), default=0)
    crops = max((len(c.candidates) for c in cases if c.is_gallery), default=0)
    return tag_labels(max_k, round_classes(cases), gallery_size=crops, points=points)


def has_geometry(cases: Iterable[Case], geometry_dir: str | Path) -> bool:
    """Whether a single-particle case image of the round has its panel geometry file (a click on it maps back)."""
    geometry_dir = Path(geometry_dir)
    return any((geometry_dir / f"{c.image}.json").is_file() for c in cases if not c.is_gallery)


def _frame(rows: list[dict[str, str]], cases: Mapping[str, Case]) -> pd.DataFrame:
    order = {name: i for i, name in enumerate(cases)}
    rows = sorted(rows, key=lambda r: order.get(r["image"], len(order)))
    if not rows:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in DECISION_COLUMNS})
    return pd.DataFrame(rows, columns=DECISION_COLUMNS).astype(object)


# ----------------------------------------------------------------------------------------------
# CVAT XML


def _check_size(path: Path, max_bytes: int) -> int:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    if size > max_bytes:
        raise InputError(f"file is {size} bytes, more than the {max_bytes}-byte limit", file=path)
    return size


def _read_capped(path: Path, max_bytes: int) -> bytes:
    _check_size(path, max_bytes)
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew since stat
        raise InputError(f"file is more than the {max_bytes}-byte limit", file=path)
    return data


class _Capped:
    """A binary file that refuses to yield more than ``limit`` bytes (the file may grow while we read)."""

    def __init__(self, fh: Any, limit: int, path: Path) -> None:
        self.fh, self.left, self.path, self.limit = fh, limit, path, limit

    def read(self, n: int = -1) -> bytes:
        n = 1 << 16 if n is None or n < 0 else n
        data = self.fh.read(min(n, self.left + 1))
        self.left -= len(data)
        if self.left < 0:
            raise InputError(f"file is more than the {self.limit}-byte limit", file=self.path)
        return data


def _username(meta_obj: etree._Element | None, role: str) -> str:
    if meta_obj is None:
        return ""
    el = meta_obj.find(f"{role}/username")
    return (el.text or "").strip() if el is not None else ""


def _check_doctype(root: etree._Element, path: Path) -> None:
    docinfo = root.getroottree().docinfo
    dtd = docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise InputError("DOCTYPE declares entities; refusing to read it", file=path)
    if docinfo.system_url or docinfo.public_id:
        raise InputError("DOCTYPE refers to an external DTD; refusing to read it", file=path)


def _no_entities(el: etree._Element, path: Path) -> None:
    if any(isinstance(node, etree._Entity) for node in el.iter()):
        raise InputError("document holds entity references; refusing to read it", file=path)


def _iter_export(path: Path, max_bytes: int):
    """``("meta", element)`` then ``("image", element)`` per frame, parsed incrementally and cleared after use."""
    _check_size(path, max_bytes)
    with open(path, "rb") as fh:
        context = etree.iterparse(_Capped(fh, max_bytes, path), events=("start", "end"), resolve_entities=False,
                                  no_network=True, load_dtd=False, huge_tree=False, remove_comments=True)
        root = None
        try:
            for event, el in context:
                if root is None:
                    root = el
                    _check_doctype(root, path)
                    if root.tag != "annotations":
                        raise InputError(f"root element is <{root.tag}>, expected <annotations> (CVAT for images "
                                         "1.1)", file=path)
                    continue
                if event != "end" or el.getparent() is not root:
                    continue
                _no_entities(el, path)
                if el.tag in ("meta", "image"):
                    yield el.tag, el
                el.clear()
                while el.getprevious() is not None:  # drop processed siblings: memory stays flat
                    del root[0]
        except etree.XMLSyntaxError as exc:
            raise InputError(f"not well-formed XML (entities and DTDs are not allowed): {exc}", file=path) from None
        if root is None:
            raise InputError("empty document", file=path)
        _no_entities(root, path)


def _panels(geometry_dir: Path | None, case: Case) -> tuple[list[PanelGeometry], str]:
    """The panels of a case image's geometry file, or a problem."""
    if geometry_dir is None:
        return [], "no panel geometry to map it with (the image's geometry file was not given)"
    path = geometry_dir / f"{case.image}.json"  # case.image passed check_id: no path outside geometry_dir
    if not path.is_file():
        return [], f"the image has no geometry file ({geometry_dir.name}/{path.name}): a point cannot be mapped back"
    try:
        _check_size(path, MAX_GEOMETRY_BYTES)
        panels = read_geometry(path)
    except (InputError, OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        return [], f"its geometry file {path.name} is unreadable ({type(exc).__name__})"
    if any(p.tomo_id != case.tomo_id for p in panels):
        return [], f"its geometry file {path.name} is of another tomogram than {case.tomo_id!r}"
    return panels, ""


def _clicks(points: Sequence[etree._Element], case: Case, geometry_dir: Path | None,
            classes: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(at: tags, problems)`` of the ``<points>`` shapes of a single-particle case image."""
    tags: list[str] = []
    problems: list[str] = []
    panels: list[PanelGeometry] | None = None
    why = ""
    for shape in points:
        label = shape.get("label") or ""
        is_click, particle = point_label_class(label)
        if not is_click:
            problems.append(f"a point labelled {label!r}: a click uses the point label "
                            f"{' or '.join(repr(n) for n in point_labels(classes))}")
            continue
        for pair in (shape.get("points") or "").split(";"):
            try:
                x, y = (float(v) for v in pair.split(","))
            except ValueError:
                problems.append(f"point {pair!r} is not 'x,y'")
                continue
            if not (math.isfinite(x) and math.isfinite(y)):
                problems.append(f"point {pair!r} is not a finite pixel")
                continue
            if panels is None:
                panels, why = _panels(geometry_dir, case)
            at = f"point at pixel ({x:.2f}, {y:.2f})"
            if why:
                problems.append(f"{at}: {why}")
                continue
            panel = next((p for p in panels if p.box[0] <= x < p.box[2] and p.box[1] <= y < p.box[3]), None)
            if panel is None:
                problems.append(f"{at} is outside every panel of the image (click on an XY, XZ or YZ panel)")
                continue
            tags.append(click_tag(point_to_frame(panel, x, y), particle))
    return tags, problems


def parse_cvat_xml(
    path: str | Path,
    cases: Iterable[Case] | Mapping[str, Case] | pd.DataFrame | str | Path,
    *,
    sent_images: Sequence[str] | None = None,
    fallback_reviewer: str | None = None,
    job_states: Mapping[int, str] | None = None,
    max_bytes: int = DEFAULT_MAX_XML_BYTES,
    geometry_dir: str | Path | None = None,
) -> DecisionsResult:
    """Decisions from one "CVAT for images 1.1" export (``annotations.xml`` of a task or job).

    ``sent_images`` is the list of images the task was given: images outside it are errors, and images of it that
    the export lacks are errors. ``job_states`` maps a frame index (``<image id>``) to the state of its job.
    ``geometry_dir`` holds the images' panel geometry (``<image>.json``), through which clicks (``<points>``) map
    back to the tomogram; without it a click is an error. File-level problems (too big, not XML, DOCTYPE with
    entities, not a CVAT export) raise ``InputError``; per-image problems are listed in ``errors``.
    """
    geometry = Path(geometry_dir) if geometry_dir is not None else None
    path = Path(path)
    by_image = dict(cases) if isinstance(cases, Mapping) else load_cases(cases)
    classes = round_classes(by_image.values())
    source = f"cvat:{path.name}"
    sent = set(sent_images) if sent_images is not None else None
    errors: list[str] = []
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    reviewer = fallback_reviewer or ""
    n = 0
    for kind, el in _iter_export(path, max_bytes):
        if kind == "meta":
            meta_obj = el.find("task") if el.find("task") is not None else el.find("job")
            reviewer = _username(meta_obj, "assignee") or (fallback_reviewer or "") or _username(meta_obj, "owner")
            continue
        n += 1
        name = el.get("name")
        if not name:
            errors.append(f"{path.name}: <image> #{n} has no name")
            continue
        where = f"{path.name}: image {name!r}"
        if name in seen:
            errors.append(f"{where}: listed twice")
            continue
        seen.add(name)
        raw = [t.get("label") or "" for t in el.findall("tag")]
        points = el.findall("points")
        others = sorted({child.tag for child in el if child.tag in SHAPES and child.tag != "points"})
        case = by_image.get(name)
        if case is None or (sent is not None and name not in sent):
            if raw or points or others:  # an untagged stray frame changes nothing; a tagged one is an error
                why = "not in cases.csv" if case is None else "not sent in this task"
                what = f"tags {sorted(set(raw))}" if raw else "annotations"
                errors.append(f"{where}: {what} on an image we never sent ({why})")
            continue
        if others:
            errors.append(f"{where} (case {case.case_id}): {', '.join(f'<{o}>' for o in others)} shape(s): only "
                          "tags and points (clicks) are read")
            continue
        if points and case.is_gallery:
            pixels = "; ".join(p.get("points") or "" for p in points)
            errors.append(f"{where} (case {case.case_id}): point(s) at pixel(s) {pixels}: {GALLERY_CLICK} (a "
                          "gallery's crops are tagged x<k>, k or k:<class>)")
            continue
        if points:
            clicked, problems = _clicks(points, case, geometry, classes)
            if problems:
                errors.extend(f"{where} (case {case.case_id}): {p}" for p in problems)
                continue
            raw += clicked
        frame = el.get("id")
        state = ""
        if job_states is not None and frame is not None and frame.isdigit():
            state = job_states.get(int(frame), "")
        if not raw and case.is_gallery and state == COMPLETED:
            raw = [OK]  # an untagged gallery in a completed job: the reviewer found nothing to change
        if not raw:
            continue  # not reviewed
        tags, problems = check_tags(raw, case, classes)
        if problems:
            errors.extend(f"{where} (case {case.case_id}): {p}" for p in problems)
            continue
        if not tags:
            continue
        rows.append({"case_id": case.case_id, "image": name, "tags": ";".join(tags), "reviewer": "",
                     "source": source, "job_state": state})
    for r in rows:  # the meta block comes first in CVAT exports, but a reordered file must not lose the reviewer
        r["reviewer"] = reviewer
    if sent is not None:
        order = {name: i for i, name in enumerate(by_image)}
        for name in sorted(sent - seen, key=lambda x: order.get(x, 0)):
            errors.append(f"{path.name}: image {name!r} was sent but is missing from the export")
    return DecisionsResult(_frame(rows, by_image), errors)


# ----------------------------------------------------------------------------------------------
# CSV import (review done outside CVAT)


def import_decisions_csv(
    path: str | Path,
    cases: Iterable[Case] | Mapping[str, Case] | pd.DataFrame | str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_CSV_BYTES,
) -> DecisionsResult:
    """Decisions from a CSV with ``case_id`` or ``image``, ``tags`` (``;``-separated), optional ``reviewer``.

    Same vocabulary and checks as the CVAT path; rows with empty ``tags`` are "not reviewed". Errors name the file
    line (header = line 1) and the case.
    """
    path = Path(path)
    by_image = dict(cases) if isinstance(cases, Mapping) else load_cases(cases)
    by_id = {c.case_id: c for c in by_image.values()}
    classes = round_classes(by_image.values())
    _read_capped(path, max_bytes)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError("empty file: expected a header with 'tags' and 'case_id' or 'image'", file=path) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read CSV: {type(exc).__name__}: {str(exc)[:200]}", file=path) from None
    if "tags" not in df.columns:
        raise InputError("missing column 'tags'", file=path)
    if "case_id" not in df.columns and "image" not in df.columns:
        raise InputError("needs a 'case_id' or an 'image' column", file=path)
    source = f"import:{path.name}"
    errors: list[str] = []
    rows: list[dict[str, str]] = []
    done: dict[str, int] = {}
    for i, rec in enumerate(df.to_dict("records"), start=2):
        where = f"{path.name}: line {i}"
        case_id = (rec.get("case_id") or "").strip()
        image = (rec.get("image") or "").strip()
        case = by_id.get(case_id) if case_id else by_image.get(image) if image else None
        if case_id and image and case is not None and case.image != image:
            errors.append(f"{where}: case_id {case_id!r} and image {image!r} name different cases")
            continue
        if case is None:
            if not (case_id or image) and not (rec.get("tags") or "").strip():
                continue  # an empty row
            what = f"case_id {case_id!r}" if case_id else f"image {image!r}" if image else "no case_id/image"
            errors.append(f"{where}: {what} is not a case of this round (not in cases.csv)")
            continue
        raw = [t for t in (rec.get("tags") or "").replace(",", ";").split(";") if t.strip()]
        if not raw:
            continue
        if case.case_id in done:
            errors.append(f"{where} (case {case.case_id}): case already decided on line {done[case.case_id]}")
            continue
        done[case.case_id] = i
        tags, problems = check_tags(raw, case, classes)
        if problems:
            errors.extend(f"{where} (case {case.case_id}): {p}" for p in problems)
            continue
        rows.append({"case_id": case.case_id, "image": case.image, "tags": ";".join(tags),
                     "reviewer": (rec.get("reviewer") or "").strip(), "source": source, "job_state": ""})
    return DecisionsResult(_frame(rows, by_image), errors)


# ----------------------------------------------------------------------------------------------
# Combining and writing


def combine_results(results: Sequence[DecisionsResult],
                    cases: Iterable[Case] | Mapping[str, Case] | pd.DataFrame | str | Path) -> DecisionsResult:
    """Merge results in order: a later decision for a case replaces an earlier one (second review)."""
    by_image = dict(cases) if isinstance(cases, Mapping) else load_cases(cases)
    latest: dict[str, dict[str, str]] = {}
    errors: list[str] = []
    left_out: list[str] = []
    for r in results:
        errors.extend(r.errors)
        left_out.extend(r.left_out)
        for rec in r.decisions.to_dict("records"):
            latest[str(rec["case_id"])] = {k: ("" if pd.isna(v) else str(v)) for k, v in rec.items()}
    decided = set(latest)
    return DecisionsResult(_frame(list(latest.values()), by_image), errors,
                           [c for c in dict.fromkeys(left_out) if c not in decided])


def decisions_bytes(df: pd.DataFrame) -> bytes:
    import io

    out = safe_columns(df.reindex(columns=DECISION_COLUMNS).fillna(""), ["reviewer", "source", "job_state"])
    buf = io.StringIO()
    out.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def write_decisions(result: DecisionsResult | pd.DataFrame, path: str | Path, *,
                    allow_errors: bool = False) -> Path:
    """Write ``decisions.csv`` atomically. Refuses (``InputErrors``) a result with errors unless told."""
    if isinstance(result, DecisionsResult):
        if result.errors and not allow_errors:
            raise InputErrors([InputError(e) for e in result.errors])
        df = result.decisions
    else:
        df = result
    missing = [c for c in DECISION_COLUMNS if c not in df.columns and c != "job_state"]
    if missing:
        raise InputError(f"decisions lack column(s) {missing}", file=path)
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fh.write(decisions_bytes(df))
    return path


def read_decisions(path: str | Path) -> pd.DataFrame:
    """Read a ``decisions.csv`` back (all columns as strings; ``job_state`` empty in files from before it)."""
    path = Path(path)
    _check_size(path, DEFAULT_MAX_CSV_BYTES * 4)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError("empty file: a decisions file starts with the header "
                         f"{','.join(DECISION_COLUMNS)}", file=path) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable CSV: {type(exc).__name__}", file=path) from None
    if "job_state" not in df.columns:
        df["job_state"] = ""
    missing = [c for c in DECISION_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}", file=path)
    return df[DECISION_COLUMNS].astype(object)


def _job_states(task: Mapping[str, Any]) -> dict[int, str] | None:
    jobs = task.get("jobs")
    if not isinstance(jobs, list):
        return None
    out: dict[int, str] = {}
    for j in jobs:
        try:
            start, stop = int(j["start_frame"]), int(j["stop_frame"])
        except (KeyError, TypeError, ValueError):
            continue
        for f in range(start, stop + 1):
            out[f] = str(j.get("state", ""))
    return out


def decisions_from_round(round_dir: str | Path, *, include_incomplete: bool = False,
                         max_bytes: int = DEFAULT_MAX_XML_BYTES,
                         geometry_dir: str | Path | None = None,
                         kinds: Sequence[str] | None = None) -> DecisionsResult:
    """Decisions of a round from its exports: ``cvat/<task name>.xml`` for every task in ``cvat/tasks.json``.

    First-review tasks are read in batch order, then second-review (``review2``) tasks, so a second-review decision
    replaces the first one for the same case. A task without an export yet is an error (run ``pull``). Decisions
    made in jobs that are not completed are left out (``left_out``) unless ``include_incomplete``. Clicks map back
    through the images' geometry files in ``geometry_dir`` (default: the round's ``geometry/``; a pull's staging
    folder passes the round's). ``kinds`` reads only the tasks of those kinds (``("review",)``: the first review
    alone, ``("review2",)``: the second alone, each as its reviewer left it).
    """
    paths = RoundPaths(Path(round_dir))
    geometry = Path(geometry_dir) if geometry_dir is not None else paths.geometry
    cases = load_cases(paths.cases)
    tasks_path = paths.tasks
    try:
        record = json.loads(_read_capped(tasks_path, DEFAULT_MAX_CSV_BYTES))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"not valid JSON: {type(exc).__name__}", file=tasks_path) from None
    if not isinstance(record, dict) or not isinstance(record.get("tasks", []), list):
        raise InputError("not a task record (expected {\"tasks\": [...]})", file=tasks_path)
    tasks = sorted(record.get("tasks", []), key=lambda t: (t.get("kind") != "review", t.get("batch", 0)))
    if kinds is not None:
        tasks = [t for t in tasks if t.get("kind", "review") in kinds]
    results: list[DecisionsResult] = []
    errors: list[str] = []
    for t in tasks:
        name = check_id(str(t.get("name")), what="task name", file=tasks_path)
        xml = paths.export(name)
        if not xml.is_file():
            errors.append(f"task {name}: no export yet (run pull)")
            continue
        r = parse_cvat_xml(xml, cases, sent_images=list(t.get("images", [])),
                           fallback_reviewer=t.get("job_assignee") or None, job_states=_job_states(t),
                           max_bytes=max_bytes, geometry_dir=geometry)
        if not include_incomplete:
            states = r.decisions["job_state"]
            keep = (states == COMPLETED) | (states == "")
            r = DecisionsResult(r.decisions[keep].reset_index(drop=True), r.errors,
                                list(r.decisions.loc[~keep, "case_id"]))
        results.append(r)
    combined = combine_results(results, cases)
    combined.errors[:0] = errors
    return combined


def unsure_images(decisions: pd.DataFrame) -> set[str]:
    """Images whose decision includes ``unsure``."""
    return {img for img, tags in zip(decisions["image"], decisions["tags"], strict=True)
            if UNSURE in str(tags).split(";")}

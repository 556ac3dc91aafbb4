"""Review decisions: CVAT XML exports (or a hand-made CSV) -> ``decisions.csv``.

A reviewer tags each case image with labels from a fixed vocabulary (see the review contract):
``"0"`` keep as labeled, ``"1"``..``"K"`` candidate k is real (several allowed), ``"none"`` the
labeled particle is not real, ``"unsure"`` route to a second review. An image without tags is
"not reviewed" and does not appear in ``decisions.csv``.

Images are mapped back to cases through ``cases.csv`` (column ``image``), never by parsing
coordinates out of the name. Every problem is reported per image, all at once:

- a tag outside the vocabulary (unknown label), or ``k`` greater than the candidates the case
  showed (e.g. ``7`` when it showed 3);
- contradictory tags (``0`` with ``none``);
- an image we never sent (not in ``cases.csv``, or not in the task the XML came from);
- an image we sent that the export lacks (when the sent list is known);
- an image listed twice.

XML is parsed with lxml with entity resolution, DTD loading and network access off, no huge
trees, and a size cap checked before parsing (default 64 MiB); a DOCTYPE that declares entities
or points at an external DTD is rejected, as is any entity reference left in the tree.

Reviewer (column ``reviewer``): the ``<assignee><username>`` of the export's ``<meta><task>`` (or
``<meta><job>`` for a job export); else the ``fallback_reviewer`` the caller passes (``pull`` passes
the assignee of the task's single job, read from the API); else the ``<owner><username>`` (who
created the task, usually the operator who pushed the round); else empty.

``decisions.csv`` columns: ``case_id,image,tags,reviewer,source``; ``tags`` is the ``;``-joined
sorted tag list (numbers numerically first, then ``none``, then ``unsure``); ``source`` is
``cvat:<xml file name>`` or ``import:<csv name>``. Rows follow the order of ``cases.csv``.
"""

from __future__ import annotations

import json
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
from byu.review.tags import KEEP, NONE, UNSURE, join_tags, tag_labels

DEFAULT_MAX_XML_BYTES = 64 * 2**20
DEFAULT_MAX_CSV_BYTES = 16 * 2**20
DECISION_COLUMNS = ["case_id", "image", "tags", "reviewer", "source"]
CONTRADICTORY = frozenset({KEEP, NONE})

__all__ = [
    "DEFAULT_MAX_XML_BYTES", "DECISION_COLUMNS", "Case", "DecisionsResult", "load_cases",
    "parse_cvat_xml", "import_decisions_csv", "combine_results", "write_decisions",
    "read_decisions", "tag_vocabulary", "sort_tags", "decisions_from_round",
]


@dataclass(frozen=True)
class Case:
    """What decisions need of one row of ``cases.csv``."""

    case_id: str
    image: str
    kind: str
    ks: frozenset[int]  # candidate numbers k >= 1 the image showed
    order: int  # row position in cases.csv


@dataclass
class DecisionsResult:
    """Decisions (DataFrame with ``DECISION_COLUMNS``) and the per-image error messages."""

    decisions: pd.DataFrame
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# ----------------------------------------------------------------------------------------------
# Cases


def _parse_candidates(value: Any, *, file: str, row: int) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return value
    try:
        parsed = json.loads(value) if isinstance(value, str) and value.strip() else []
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc}", file=file, row=row, field="candidates") from None
    if not isinstance(parsed, list):
        raise InputError("must be a JSON list of candidates", file=file, row=row, field="candidates")
    return parsed


def load_cases(cases: pd.DataFrame | str | Path) -> dict[str, Case]:
    """Read ``cases.csv`` (a path or a DataFrame) into ``{image name: Case}``, in file order.

    Checks that ``case_id`` and ``image`` are present, unique and safe names, and that
    ``candidates`` is a JSON list of objects with an integer ``k``. Raises ``InputErrors``.
    """
    if isinstance(cases, (str, Path)):
        file = str(cases)
        try:
            df = pd.read_csv(cases, dtype=str, keep_default_na=False)
        except FileNotFoundError:
            raise InputError("cases file not found", file=file) from None
    else:
        file, df = "cases.csv", cases
    missing = [c for c in ("case_id", "image", "candidates") if c not in df.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}", file=file)
    out: dict[str, Case] = {}
    ids: set[str] = set()
    errors: list[InputError] = []
    kinds = df["kind"] if "kind" in df.columns else [""] * len(df)
    for i, (case_id, image, kind, cands) in enumerate(zip(df["case_id"], df["image"], kinds,
                                                          df["candidates"], strict=True)):
        row = i + 2  # file line, header = line 1
        try:
            check_id(str(case_id), what="case_id", file=file, row=row)
            check_id(str(image), what="image", file=file, row=row)
            if case_id in ids:
                raise InputError(f"duplicate case_id {case_id!r}", file=file, row=row, field="case_id")
            if image in out:
                raise InputError(f"duplicate image {image!r}", file=file, row=row, field="image")
            ks = set()
            for c in _parse_candidates(cands, file=file, row=row):
                k = c.get("k") if isinstance(c, dict) else None
                if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                    raise InputError(f"candidate without an integer k >= 0: {c!r}", file=file, row=row,
                                     field="candidates")
                if k >= 1:
                    ks.add(k)
        except InputError as exc:
            errors.append(exc)
            continue
        ids.add(str(case_id))
        out[str(image)] = Case(str(case_id), str(image), str(kind), frozenset(ks), i)
    if errors:
        raise InputErrors(errors)
    return out


def _as_cases(cases: Mapping[str, Case] | pd.DataFrame | str | Path) -> dict[str, Case]:
    if isinstance(cases, Mapping):
        return dict(cases)
    return load_cases(cases)


# ----------------------------------------------------------------------------------------------
# Tags


def tag_vocabulary(max_k: int) -> list[str]:
    """The CVAT tag labels of a round whose cases show at most ``max_k`` candidates."""
    return tag_labels(max_k)


def sort_tags(tags: Iterable[str]) -> list[str]:
    """Unique tags in contract order: numbers numerically, then ``none``, then ``unsure``.

    Only for validated tags (``byu.review.tags.join_tags`` order); anything else sorts last.
    """
    valid = [t for t in set(tags) if (t.isascii() and t.isdigit()) or t in (NONE, UNSURE)]
    rest = sorted(set(tags) - set(valid))
    joined = join_tags(valid)
    return (joined.split(";") if joined else []) + rest


def _check_tags(raw: Sequence[str], case: Case) -> tuple[list[str], list[str]]:
    """Return (sorted valid tags, problems) for one image's raw tag labels."""
    problems: list[str] = []
    tags: list[str] = []
    for t in raw:
        t = (t or "").strip()
        if t in (KEEP, NONE, UNSURE):
            tags.append(t)
        elif t.isascii() and t.isdigit() and str(int(t)) == t:
            k = int(t)
            if k not in case.ks:
                shown = f"1..{max(case.ks)}" if case.ks else "none"
                problems.append(f"tag {t!r}: candidate {k} was not shown (candidates shown: {shown})")
            else:
                tags.append(t)
        else:
            problems.append(f"unknown tag {t!r} (allowed: 0, 1..K, none, unsure)")
    if CONTRADICTORY <= set(tags):
        problems.append("contradictory tags '0' (keep) and 'none' (not real)")
    return sort_tags(tags), problems


def _frame(rows: list[dict[str, str]], cases: Mapping[str, Case]) -> pd.DataFrame:
    rows = sorted(rows, key=lambda r: cases[r["image"]].order)
    return pd.DataFrame(rows, columns=DECISION_COLUMNS).astype("string") if rows else \
        pd.DataFrame({c: pd.Series([], dtype="string") for c in DECISION_COLUMNS})


# ----------------------------------------------------------------------------------------------
# CVAT XML


_PARSER_OPTIONS = dict(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                       dtd_validation=False)


def _read_capped(path: Path, max_bytes: int) -> bytes:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    if size > max_bytes:
        raise InputError(f"file is {size} bytes, more than the {max_bytes}-byte limit", file=path)
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew since stat
        raise InputError(f"file is more than the {max_bytes}-byte limit", file=path)
    return data


def _safe_xml(data: bytes, *, file: Path) -> etree._Element:
    """Parse XML bytes with entities, DTDs and network off; reject entity declarations."""
    parser = etree.XMLParser(**_PARSER_OPTIONS)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise InputError(f"not well-formed XML (entities and DTDs are not allowed): {exc}", file=file) from None
    docinfo = root.getroottree().docinfo
    dtd = docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise InputError("DOCTYPE declares entities; refusing to read it", file=file)
    if docinfo.system_url or docinfo.public_id:
        raise InputError("DOCTYPE refers to an external DTD; refusing to read it", file=file)
    if any(isinstance(node, etree._Entity) for node in root.iter()):
        raise InputError("document holds entity references; refusing to read it", file=file)
    return root


def _username(meta_obj: etree._Element | None, role: str) -> str:
    if meta_obj is None:
        return ""
    el = meta_obj.find(f"{role}/username")
    return (el.text or "").strip() if el is not None else ""


def parse_cvat_xml(
    path: str | Path,
    cases: Mapping[str, Case] | pd.DataFrame | str | Path,
    *,
    sent_images: Sequence[str] | None = None,
    fallback_reviewer: str | None = None,
    max_bytes: int = DEFAULT_MAX_XML_BYTES,
) -> DecisionsResult:
    """Decisions from one "CVAT for images 1.1" export (``annotations.xml`` of a task or job).

    ``cases`` is ``cases.csv`` (path, DataFrame, or ``load_cases`` output). ``sent_images`` is the
    list of images the task was given: images outside it are errors, and images of it that the
    export lacks are errors. File-level problems (too big, not XML, DOCTYPE with entities, not a
    CVAT export) raise ``InputError``; per-image problems are listed in ``errors``.
    """
    path = Path(path)
    by_image = _as_cases(cases)
    root = _safe_xml(_read_capped(path, max_bytes), file=path)
    if root.tag != "annotations":
        raise InputError(f"root element is <{root.tag}>, expected <annotations> (CVAT for images 1.1)", file=path)
    meta = root.find("meta")
    meta_obj = None
    if meta is not None:
        meta_obj = meta.find("task") if meta.find("task") is not None else meta.find("job")
    reviewer = (_username(meta_obj, "assignee") or (fallback_reviewer or "")
                or _username(meta_obj, "owner"))
    source = f"cvat:{path.name}"
    sent = set(sent_images) if sent_images is not None else None
    errors: list[str] = []
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for n, image in enumerate(root.findall("image"), start=1):
        name = image.get("name")
        if not name:
            errors.append(f"{path.name}: <image> #{n} has no name")
            continue
        where = f"{path.name}: image {name!r}"
        if name in seen:
            errors.append(f"{where}: listed twice")
            continue
        seen.add(name)
        raw = [t.get("label") or "" for t in image.findall("tag")]
        case = by_image.get(name)
        if case is None or (sent is not None and name not in sent):
            if raw:  # an untagged stray frame changes nothing; a tagged one is an error
                why = "not in cases.csv" if case is None else "not sent in this task"
                errors.append(f"{where}: tags {sort_tags(raw)} on an image we never sent ({why})")
            continue
        if not raw:
            continue  # not reviewed
        tags, problems = _check_tags(raw, case)
        if problems:
            errors.extend(f"{where} (case {case.case_id}): {p}" for p in problems)
            continue
        rows.append({"case_id": case.case_id, "image": name, "tags": ";".join(tags),
                     "reviewer": reviewer, "source": source})
    if sent is not None:
        for name in sorted(sent - seen, key=lambda x: by_image[x].order if x in by_image else 0):
            errors.append(f"{path.name}: image {name!r} was sent but is missing from the export")
    return DecisionsResult(_frame(rows, by_image), errors)


# ----------------------------------------------------------------------------------------------
# CSV import (review done outside CVAT)


def import_decisions_csv(
    path: str | Path,
    cases: Mapping[str, Case] | pd.DataFrame | str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_CSV_BYTES,
) -> DecisionsResult:
    """Decisions from a CSV with ``case_id`` or ``image``, ``tags`` (``;``-separated), optional ``reviewer``.

    Same vocabulary and checks as the CVAT path; rows with empty ``tags`` are "not reviewed".
    Errors name the row (1-based data row) and the case/image.
    """
    path = Path(path)
    by_image = _as_cases(cases)
    by_id = {c.case_id: c for c in by_image.values()}
    _read_capped(path, max_bytes)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read CSV: {exc}", file=path) from None
    if "tags" not in df.columns:
        raise InputError("missing column 'tags'", file=path)
    if "case_id" not in df.columns and "image" not in df.columns:
        raise InputError("needs a 'case_id' or an 'image' column", file=path)
    source = f"import:{path.name}"
    errors: list[str] = []
    rows: list[dict[str, str]] = []
    done: dict[str, int] = {}
    for i, rec in enumerate(df.to_dict("records"), start=2):  # file lines, header = line 1
        where = f"{path.name}: line {i}"
        case_id = (rec.get("case_id") or "").strip()
        image = (rec.get("image") or "").strip()
        case = by_id.get(case_id) if case_id else by_image.get(image) if image else None
        if case_id and image and case is not None and case.image != image:
            errors.append(f"{where}: case_id {case_id!r} and image {image!r} name different cases")
            continue
        if case is None:
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
        tags, problems = _check_tags(raw, case)
        if problems:
            errors.extend(f"{where} (case {case.case_id}): {p}" for p in problems)
            continue
        rows.append({"case_id": case.case_id, "image": case.image, "tags": ";".join(tags),
                     "reviewer": (rec.get("reviewer") or "").strip(), "source": source})
    return DecisionsResult(_frame(rows, by_image), errors)


# ----------------------------------------------------------------------------------------------
# Combining and writing


def combine_results(results: Sequence[DecisionsResult],
                    cases: Mapping[str, Case] | pd.DataFrame | str | Path) -> DecisionsResult:
    """Merge results in order: a later decision for a case replaces an earlier one (second review)."""
    by_image = _as_cases(cases)
    latest: dict[str, dict[str, str]] = {}
    errors: list[str] = []
    for r in results:
        errors.extend(r.errors)
        for rec in r.decisions.to_dict("records"):
            latest[str(rec["case_id"])] = {k: ("" if pd.isna(v) else str(v)) for k, v in rec.items()}
    return DecisionsResult(_frame(list(latest.values()), by_image), errors)


def write_decisions(result: DecisionsResult | pd.DataFrame, path: str | Path, *,
                    allow_errors: bool = False) -> Path:
    """Write ``decisions.csv`` atomically. Refuses (``InputErrors``) a result with errors unless told."""
    if isinstance(result, DecisionsResult):
        if result.errors and not allow_errors:
            raise InputErrors([InputError(e) for e in result.errors])
        df = result.decisions
    else:
        df = result
    missing = [c for c in DECISION_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"decisions lack column(s) {missing}", file=path)
    path = Path(path)
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        df[DECISION_COLUMNS].to_csv(fh, index=False)
    return path


def read_decisions(path: str | Path) -> pd.DataFrame:
    """Read a ``decisions.csv`` back (all columns as strings, empty reviewer as "")."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in DECISION_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}", file=path)
    return df[DECISION_COLUMNS]


def decisions_from_round(round_dir: str | Path, *, max_bytes: int = DEFAULT_MAX_XML_BYTES) -> DecisionsResult:
    """Decisions of a round from its exports: ``cvat/<task name>.xml`` for every task in ``cvat/tasks.json``.

    First-review tasks are read in batch order, then second-review (``review2``) tasks, so a
    second-review decision replaces the first one for the same case. A task without an export
    yet is an error (run ``pull``).
    """
    round_dir = Path(round_dir)
    cases = load_cases(round_dir / "cases.csv")
    tasks_path = round_dir / "cvat" / "tasks.json"
    try:
        record = json.loads(_read_capped(tasks_path, DEFAULT_MAX_CSV_BYTES))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc}", file=tasks_path) from None
    tasks = sorted(record.get("tasks", []), key=lambda t: (t.get("kind") != "review", t.get("batch", 0)))
    results: list[DecisionsResult] = []
    errors: list[str] = []
    for t in tasks:
        name = check_id(str(t.get("name")), what="task name", file=tasks_path)
        xml = round_dir / "cvat" / f"{name}.xml"
        if not xml.is_file():
            errors.append(f"task {name}: no export yet (run pull)")
            continue
        results.append(parse_cvat_xml(xml, cases, sent_images=list(t.get("images", [])),
                                      fallback_reviewer=t.get("job_assignee") or None, max_bytes=max_bytes))
    combined = combine_results(results, cases)
    combined.errors[:0] = errors
    return combined

"""Turn review decisions into the next label version: the parent plus exactly the reviewed changes.

Meaning of the tags (:mod:`byu.review.tags`):

- FN case (candidate 0 is the labeled pick): ``0`` keep it; ``none`` remove it; ``k`` move it to candidate k (the
  first k; further k's are added); ``0`` + ``k`` keep it and add k; ``none`` + ``k`` remove it and add k (= move).
- FP case: ``k`` add candidate k; ``0`` or ``none`` change nothing.
- ``k:<class>``: candidate k is of that class (``0:<class>``: the kept label changes class, a ``relabel``; a
  moved or added pick gets it); ``as:<class>`` (earlier rounds' files) names the class of every tagged candidate.
- ``GL`` gallery (labels): ``x<k>`` removes crop k's label, ``k:<class>`` relabels it, every other crop is kept
  (a ``keep`` row each: the label was looked at); ``none`` removes every crop's label.
- ``GP`` gallery (unlabeled predictions): ``k`` / ``k:<class>`` add crop k; the others change nothing.
- Clicks ``at:<z>/<y>/<x>[:<class>]`` (a point the reviewer placed where the particle is, mapped back to the
  tomogram's label frame; or a position given in a decisions CSV), on single-particle images only: on an FN image
  a click without ``0`` moves the labeled pick there (the label moves to the first tagged candidate if there is
  one, then the clicks are added), ``0`` + a click keeps the label and adds one at the click, ``none`` + a click
  removes the label and adds one at the click (a ``move``); on an FP image a click adds a pick. Several clicks are
  several picks; a click without a class is of the case's class.
- ``unsure``, an empty tag cell, or no decision: nothing changes.

Every change is a row of the version's changes table with its class, case, reviewer and the candidate's
confidence. Picks the review moved or added carry provenance ``source = review:<round>``, ``user_id`` = the
reviewer, ``session_id`` = the round. A change that comes from a click has source ``review:<round>:click`` and the
click's coordinates as its new position (no confidence). Manual overrides
(``tomo_id,action,z,y,x[,particle],note``; action ``add``/``remove``/``clear``) are applied afterwards and recorded
with source ``override:<file>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from byu.errors import InputError, InputErrors
from byu.labels.diff import change_row, changes_frame, label_changes
from byu.labels.model import STORED_PICK_COLUMNS, LabelSet
from byu.review.cases import Case, round_classes
from byu.review.tags import (
    NONE,
    UNSURE,
    check_tags,
    classed,
    is_candidate,
    parse_click,
    rejected,
    split_tags,
    tag_class,
)
from byu.textsafe import safe_cell

OVERRIDE_ACTIONS = ("add", "remove", "clear")
REMOVE_TOLERANCE_A = 1000.0  # an override "remove z,y,x" takes the nearest pick only within this distance
MAX_OVERRIDES_BYTES = 16 << 20


class _ChangeMeta(TypedDict):
    source: str
    case_id: str
    reviewer: str


class _PickMeta(TypedDict):
    source: str
    user_id: str
    session_id: str


@dataclass
class ApplyResult:
    labels: LabelSet
    changes: pd.DataFrame
    applied_cases: list[str] = field(default_factory=list)
    unsure_cases: list[str] = field(default_factory=list)
    unreviewed_cases: list[str] = field(default_factory=list)

    @property
    def label_changes(self) -> int:
        return len(label_changes(self.changes))


def _nearest(picks: list[dict], particle: str, zyx, tol: float = 1e-3) -> int | None:
    best, best_d = None, tol
    for i, p in enumerate(picks):
        if p["particle"] != particle:
            continue
        d = float(np.linalg.norm(np.subtract([p["z"], p["y"], p["x"]], zyx)))
        if d <= best_d:
            best, best_d = i, d
    return best


def _in_bounds(zyx, shape) -> list[float]:
    return [float(min(max(v, 0.0), s - 1e-3)) for v, s in zip(zyx, shape, strict=True)]


def _pick(particle: str, zyx, *, source: str, user_id: str = "", session_id: str = "") -> dict[str, Any]:
    return {"particle": particle, "z": float(zyx[0]), "y": float(zyx[1]), "x": float(zyx[2]), "source": source,
            "user_id": user_id, "session_id": session_id}


def _working(labels: LabelSet) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in labels.tomo_ids}
    for rec in labels.picks.to_dict("records"):
        out[rec["tomo_id"]].append({k: rec[k] for k in STORED_PICK_COLUMNS if k != "tomo_id"})
    return out


def _rebuild(labels: LabelSet, picks: Mapping[str, list[dict[str, Any]]]) -> LabelSet:
    rows = [{"tomo_id": t, **p} for t in labels.tomo_ids for p in picks[t]]
    frame = pd.DataFrame(rows, columns=STORED_PICK_COLUMNS)
    return labels.replace(picks=frame)


@dataclass(frozen=True)
class Reading:
    """What one decided image says, item by item (from its validated tags)."""

    keep: bool  # FN: the labeled pick is real (``0`` or ``0:<class>``)
    label_class: str | None  # FN: the class the labeled pick really is (``0:<class>``, or ``0`` + ``as:<class>``)
    real: list[tuple[int, str]]  # candidates / crops that are real particles, with their class, by k
    wrong: set[int]  # gallery crops that are not particles (``x<k>``, or every crop with ``none``)
    none: bool
    relabel: dict[int, str]  # gallery crops given another class (``k:<class>``)
    clicks: list[tuple[list[float], str]] = field(default_factory=list)  # (label-frame z, y, x, class), in tag order


def read_tags(tags: list[str], case: Case) -> Reading:
    """The meaning of a validated tag list (:func:`byu.review.tags.check_tags`) on ``case``."""
    legacy = next((tag_class(t) for t in tags if tag_class(t) is not None), None)
    named = {kc[0]: kc[1] for t in tags if (kc := classed(t)) is not None}
    plain = {int(t) for t in tags if is_candidate(t)}
    none = NONE in tags
    wrong = {k for t in tags if (k := rejected(t)) is not None}
    if case.is_gallery:
        if none and case.kind == "GL":
            wrong |= set(case.ks) - set(named)
        real = sorted(plain | set(named)) if case.kind == "GP" else []
        relabel = {k: c for k, c in named.items() if c != case.candidate(k).particle} if case.kind == "GL" else {}
        return Reading(keep=False, label_class=None, real=[(k, named.get(k, case.particle)) for k in real],
                       wrong=wrong, none=none, relabel=relabel)
    keep = 0 in plain or 0 in named
    label_class = named.get(0) or (legacy if keep else None)
    real = sorted((plain | set(named)) - {0})
    clicks = [(c.zyx, c.particle or case.particle) for t in tags if (c := parse_click(t)) is not None]
    return Reading(keep=keep, label_class=label_class,
                   real=[(k, named.get(k) or legacy or case.candidate(k).particle) for k in real],
                   wrong=wrong, none=none, relabel={}, clicks=clicks)


def apply_decisions(parent: LabelSet, cases: Iterable[Case], decisions: pd.DataFrame, *,
                    round_name: str, overrides: pd.DataFrame | None = None,
                    overrides_source: str = "overrides", decisions_source: str = "decisions.csv") -> ApplyResult:
    """Apply ``decisions`` (``case_id,tags,reviewer``) about ``cases`` to ``parent``; nothing else changes."""
    cases = list(cases)
    by_case = {c.case_id: c for c in cases}
    classes = list(dict.fromkeys([*round_classes(cases), *parent.class_names]))  # any class of the version
    known_classes = set(parent.class_names)
    frames = {r.tomo_id: ((int(r.Z), int(r.Y), int(r.X)), float(r.voxel_spacing))
              for r in parent.tomograms.itertuples(index=False)}
    picks = _working(parent)
    rows: list[dict] = []
    errors: list[InputError] = []
    applied: list[str] = []
    unsure: list[str] = []
    decided: set[str] = set()
    source = f"review:{round_name}"
    for line, d in enumerate(decisions.to_dict("records"), start=2):
        case_id = str(d.get("case_id", ""))
        case = by_case.get(case_id)

        def err(msg: str, fld: str = "case_id", line: int = line) -> None:
            errors.append(InputError(msg, file=decisions_source, row=line, field=fld))

        if case is None:
            err(f"decision for unknown case {case_id!r}")
            continue
        if case_id in decided:
            err(f"second decision for case {case_id}")
            continue
        decided.add(case_id)
        raw = split_tags(d.get("tags", ""))
        if not raw:
            decided.discard(case_id)  # an empty tag cell is "not reviewed"
            continue
        tags, problems = check_tags(raw, case, classes)
        if problems:
            errors.extend(InputError(p, file=decisions_source, row=line, field="tags") for p in problems)
            continue
        if UNSURE in tags:
            unsure.append(case_id)
            continue
        missing = [t for t in case.tomo_ids if t not in picks]
        if missing:
            err(f"case {case_id}: tomogram(s) {missing} are not in the parent version")
            continue
        said = read_tags(tags, case)
        named = {c for _, c in said.real} | {c for _, c in said.clicks} | set(said.relabel.values()) | \
            ({said.label_class} if said.label_class else set())
        unknown = sorted(c for c in named if c not in known_classes)
        if unknown:
            err(f"case {case_id}: class(es) {unknown} are not classes of the parent version {sorted(known_classes)}",
                "tags")
            continue
        reviewer = str(safe_cell("" if pd.isna(d.get("reviewer")) else str(d.get("reviewer", ""))))
        meta: _ChangeMeta = {"source": source, "case_id": case_id, "reviewer": reviewer}
        click_meta: _ChangeMeta = {**meta, "source": f"{source}:click"}
        new_meta: _PickMeta = {"source": source, "user_id": reviewer, "session_id": round_name}
        if case.is_gallery:
            problem = _apply_gallery(case, said, picks, frames, rows, meta, new_meta)
            if problem:
                err(problem)
                continue
            applied.append(case_id)
            continue
        tid = case.tomo_id
        shape = frames[tid][0]
        current = picks[tid]
        # what the image calls real, in order: the tagged candidates (by k), then the clicks
        chosen = [(case.candidate(k).zyx, cls, case.candidate(k).conf, meta) for k, cls in said.real]
        chosen += [(zyx, cls, None, click_meta) for zyx, cls in said.clicks]
        label = case.label
        if case.kind == "FN" and label is not None:  # an FN case always shows its label (k = 0)
            i = _nearest(current, label.particle, label.zyx)
            if i is None:
                err(f"case {case_id}: the labeled {label.particle} {label.zyx} is not in the parent version "
                    "(were the cases mined against another version?)")
                continue
            if said.keep:
                if said.label_class is not None and said.label_class != label.particle:
                    current[i] = {**current[i], "particle": said.label_class, **new_meta}
                    rows.append(change_row(tid, "relabel", old=label.zyx, new=label.zyx, particle=said.label_class,
                                           old_particle=label.particle, **meta))
                else:
                    rows.append(change_row(tid, "keep", old=label.zyx, new=label.zyx, particle=label.particle,
                                           **meta))
            elif chosen:
                zyx, cls, conf, why = chosen.pop(0)
                new = _in_bounds(zyx, shape)
                current[i] = _pick(cls, new, **new_meta)
                action = "move" if cls == label.particle else "relabel"
                rows.append(change_row(tid, action, old=label.zyx, new=new, particle=cls,
                                       old_particle="" if action == "move" else label.particle,
                                       confidence=conf, **why))
            elif said.none:
                current.pop(i)
                rows.append(change_row(tid, "remove", old=label.zyx, particle=label.particle, **meta))
        for zyx, cls, conf, why in chosen:
            new = _in_bounds(zyx, shape)
            current.append(_pick(cls, new, **new_meta))
            rows.append(change_row(tid, "add", new=new, particle=cls, confidence=conf, **why))
        applied.append(case_id)
    if errors:
        raise InputErrors(errors)
    if overrides is not None and len(overrides):
        rows += _apply_overrides(overrides, picks, frames, parent.class_names, source=overrides_source)
    return ApplyResult(labels=_rebuild(parent, picks), changes=changes_frame(rows), applied_cases=applied,
                       unsure_cases=unsure, unreviewed_cases=[c.case_id for c in cases if c.case_id not in decided])


def _apply_gallery(case: Case, said: Reading, picks: dict[str, list[dict[str, Any]]], frames: dict,
                   rows: list[dict], meta: _ChangeMeta, new_meta: _PickMeta) -> str | None:
    """Apply a decided gallery: every crop of a ``GL`` gallery is kept, relabeled or removed; the real crops of a
    ``GP`` gallery are added. Returns a problem (nothing applied) or None."""
    if case.kind == "GL":
        found = []
        for c in case.candidates:
            if c.known is not None:
                continue  # a known-answer item measures the reviewer; it changes nothing

            tid = case.frame_of(c).tomo_id
            i = _nearest(picks[tid], c.particle, c.zyx)
            if i is None:
                return (f"case {case.case_id}: the labeled {c.particle} {c.zyx} of {tid} (crop {c.k}) is not in the "
                        "parent version (were the cases mined against another version?)")
            found.append((c, tid, i))
        gone: dict[str, list[int]] = {}
        for c, tid, i in found:
            if c.k in said.wrong:
                gone.setdefault(tid, []).append(i)
                rows.append(change_row(tid, "remove", old=c.zyx, particle=c.particle, **meta))
            elif c.k in said.relabel:
                cls = said.relabel[c.k]
                picks[tid][i] = {**picks[tid][i], "particle": cls, **new_meta}
                rows.append(change_row(tid, "relabel", old=c.zyx, new=c.zyx, particle=cls,
                                       old_particle=c.particle, **meta))
            else:
                rows.append(change_row(tid, "keep", old=c.zyx, new=c.zyx, particle=c.particle, **meta))
        for tid, idx in gone.items():
            for i in sorted(idx, reverse=True):
                picks[tid].pop(i)
        return None
    for k, cls in said.real:
        c = case.candidate(k)
        if c.known is not None:
            continue
        tid = case.frame_of(c).tomo_id
        new = _in_bounds(c.zyx, frames[tid][0])
        picks[tid].append(_pick(cls, new, **new_meta))
        rows.append(change_row(tid, "add", new=new, particle=cls, confidence=c.conf, **meta))
    return None


def _apply_overrides(overrides: pd.DataFrame, picks: dict[str, list[dict]], frames: dict, class_names: list[str],
                     *, source: str) -> list[dict]:
    rows, errors = [], []
    single = class_names[0] if len(class_names) == 1 else None
    for line, o in enumerate(overrides.to_dict("records"), start=2):
        tid, action = str(o.get("tomo_id", "")), str(o.get("action", "")).strip().lower()

        def err(msg: str, fld: str, line: int = line) -> None:
            errors.append(InputError(msg, file=source, row=line, field=fld))

        if tid not in picks:
            err(f"unknown tomo_id {tid!r}", "tomo_id")
            continue
        if action not in OVERRIDE_ACTIONS:
            err(f"unknown action {action!r} (expected {', '.join(OVERRIDE_ACTIONS)})", "action")
            continue
        raw_particle = o.get("particle")
        particle = str(raw_particle).strip() if isinstance(raw_particle, str) and raw_particle.strip() else None
        if particle is not None and particle not in class_names:
            err(f"class {particle!r} is not one of the version's classes {class_names}", "particle")
            continue
        note = str(safe_cell("" if pd.isna(o.get("note", "")) else str(o.get("note", ""))))
        meta: _ChangeMeta = {"source": f"override:{Path(source).name}", "case_id": "", "reviewer": note}
        if action == "clear":
            gone = [p for p in picks[tid] if particle is None or p["particle"] == particle]
            rows += [change_row(tid, "remove", old=[p["z"], p["y"], p["x"]], particle=p["particle"], **meta)
                     for p in gone]
            picks[tid] = [p for p in picks[tid] if not (particle is None or p["particle"] == particle)]
            continue
        values = {c: pd.to_numeric(o.get(c), errors="coerce") for c in ("z", "y", "x")}
        bad = [c for c, v in values.items() if pd.isna(v)]
        if bad:
            for c in bad:
                err(f"action {action} needs a number for {c}, got {o.get(c)!r}", c)
            continue
        zyx = [float(values[c]) for c in ("z", "y", "x")]
        shape, spacing = frames[tid]
        if any(not 0 <= v < s for v, s in zip(zyx, shape, strict=True)):
            err(f"coordinates {zyx} outside the volume {shape}", "z")
            continue
        if action == "add":
            cls = particle or single
            if cls is None:
                err(f"the version holds several classes {class_names}: say which in a 'particle' column",
                    "particle")
                continue
            picks[tid].append(_pick(cls, zyx, source=meta["source"], user_id=note))
            rows.append(change_row(tid, "add", new=zyx, particle=cls, **meta))
            continue
        candidates = [i for i, p in enumerate(picks[tid]) if particle is None or p["particle"] == particle]
        if not candidates:
            err(f"{tid} has no {particle or 'pick'} to remove", "action")
            continue
        d = [float(np.linalg.norm((np.subtract([picks[tid][i]["z"], picks[tid][i]["y"], picks[tid][i]["x"]], zyx))
                                  * spacing)) for i in candidates]
        j = int(np.argmin(d))
        if d[j] > REMOVE_TOLERANCE_A:
            err(f"no {particle or 'pick'} of {tid} within {REMOVE_TOLERANCE_A:g} Å of {zyx} (nearest: {d[j]:.0f} Å)",
                "z")
            continue
        old = picks[tid].pop(candidates[j])
        rows.append(change_row(tid, "remove", old=[old["z"], old["y"], old["x"]], particle=old["particle"], **meta))
    if errors:
        raise InputErrors(errors)
    return rows


def read_overrides(path: str | Path) -> pd.DataFrame:
    """An overrides CSV: ``tomo_id,action[,z,y,x,particle,note]``."""
    path = Path(path)
    if not path.is_file():
        raise InputError("overrides file not found", file=path)
    if path.stat().st_size > MAX_OVERRIDES_BYTES:
        raise InputError(f"overrides file is larger than {MAX_OVERRIDES_BYTES >> 20} MiB", file=path)
    try:
        df = pd.read_csv(path, dtype={"tomo_id": str, "action": str, "note": str, "particle": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable CSV: {type(exc).__name__}", file=path) from None
    missing = [c for c in ("tomo_id", "action") if c not in df.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}; expected tomo_id,action[,z,y,x,particle,note]", file=path)
    for c in ("z", "y", "x", "note", "particle"):
        if c not in df.columns:
            df[c] = np.nan
    return df

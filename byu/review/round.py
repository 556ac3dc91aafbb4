"""One review round on disk (``review/<round>/``): mine cases, record decisions, apply them as a new version.

These are the verbs the CLI and the Prefect flows call; each is safe to rerun.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from byu.atomic import write_bytes
from byu.errors import InputError
from byu.labels.store import LabelStore, Manifest
from byu.paths import DataRoot
from byu.review.apply import ApplyResult, apply_decisions, read_overrides
from byu.predictions import read_predictions
from byu.review.match import cases_csv_bytes, find_cases, read_cases
from byu.review.decisions import read_decisions


@dataclass(frozen=True)
class RoundPaths:
    dir: Path

    @property
    def cases(self) -> Path:
        return self.dir / "cases.csv"

    @property
    def images(self) -> Path:
        return self.dir / "images"

    @property
    def cvat(self) -> Path:
        return self.dir / "cvat"

    @property
    def decisions(self) -> Path:
        return self.dir / "decisions.csv"


def round_paths(root: DataRoot, round_name: str) -> RoundPaths:
    return RoundPaths(root.review_round(round_name))


def predicted_tomograms(predictions: str | Path) -> list[str] | None:
    """The tomograms a predictions run covered, from its ``.json`` sidecar (``None`` when there is none).

    A tomogram with no peak has no row in the CSV, so only the sidecar tells "predicted, nothing found" from
    "never predicted"; mining the latter would turn every labeled motor into an FN case.
    """
    sidecar = Path(predictions).with_suffix(".json")
    if not sidecar.exists():
        return None
    try:
        ids = json.loads(sidecar.read_text()).get("tomo_ids")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise InputError(f"not a predictions sidecar: {exc}", file=sidecar) from None
    return list(ids) if isinstance(ids, list) else None


def mine_round(root: DataRoot, round_name: str, *, labels_version: str, predictions: str | Path,
               threshold: float = 0.05, radius_A: float = 1000.0, max_candidates: int = 5,
               tomo_ids: list[str] | None = None, confirm_threshold: float | None = None) -> pd.DataFrame:
    """Mine FN/FP cases for a round and write ``cases.csv``.

    Rerunning with the same inputs rewrites nothing; different inputs for a round that already has cases is an
    error (its images may already be with annotators): start a new round instead.
    """
    store = LabelStore(root.labels)
    labels = store.get(labels_version)
    preds = read_predictions(predictions)
    if tomo_ids is None:
        tomo_ids = predicted_tomograms(predictions)
    cases = find_cases(labels, preds, label_version=labels_version, prediction_run=Path(predictions).stem,
                       threshold=threshold, radius_A=radius_A, max_candidates=max_candidates, tomo_ids=tomo_ids,
                       confirm_threshold=confirm_threshold)
    paths = round_paths(root, round_name)
    data = cases_csv_bytes(cases)
    if paths.cases.exists():
        if paths.cases.read_bytes() != data:
            raise InputError(f"round {round_name!r} already has different cases; use a new round name",
                             file=paths.cases)
        return read_cases(paths.cases)
    write_bytes(paths.cases, data)
    return read_cases(paths.cases)


def read_round_decisions(path: str | Path) -> pd.DataFrame:
    """A round's ``decisions.csv``; a clear error when the review has not been pulled or imported yet."""
    path = Path(path)
    if not path.exists():
        raise InputError("no decisions yet for this round (pull the review or import a decisions CSV)", file=path)
    return read_decisions(path)


def apply_round(root: DataRoot, round_name: str, *, from_version: str, to_version: str,
                overrides: str | Path | None = None, producer: str | None = None) -> tuple[Manifest, ApplyResult]:
    """Apply a round's decisions to ``from_version`` and store ``to_version`` with its audit trail."""
    store = LabelStore(root.labels)
    paths = round_paths(root, round_name)
    cases = read_cases(paths.cases)
    mined = set(cases["label_version"]) - {""}
    if mined and mined != {from_version}:
        raise InputError(f"cases of round {round_name!r} were mined against {sorted(mined)}, not {from_version!r}",
                         file=paths.cases, field="label_version")
    decisions = read_round_decisions(paths.decisions)
    ov = read_overrides(overrides) if overrides is not None else None
    result = apply_decisions(store.get(from_version), cases, decisions, round_name=round_name, overrides=ov,
                             overrides_source=str(overrides) if overrides else "overrides",
                             decisions_source=str(paths.decisions))
    manifest = store.put(
        to_version, result.table, parents=[from_version], producer=producer or f"byu review apply {round_name}",
        changes=result.changes,
        extra={"round": round_name, "cases": int(len(cases)), "decided": len(result.applied_cases),
               "unsure": result.unsure_cases, "unreviewed": len(result.unreviewed_cases),
               "label_changes": result.label_changes,
               "overrides": str(overrides) if overrides else None},
    )
    return manifest, result

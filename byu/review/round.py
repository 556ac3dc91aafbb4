"""A review round as one object: mine → render → review (CVAT, scripted or imported) → decisions → apply.

``ReviewRound(root, name)`` owns ``review/<name>/`` (:class:`RoundPaths` builds every path in it) and offers the
verbs the CLI and the Prefect flows call; each is safe to rerun:

- :meth:`ReviewRound.mine`: cases of a label version vs a predictions run → ``cases.csv`` (rerunning with the same
  inputs rewrites nothing; other inputs for a round that has cases are refused: its images may be with people);
- :meth:`ReviewRound.render`: one image per case → ``images/``;
- :meth:`ReviewRound.start_review`, :meth:`ReviewRound.review_finished`, :meth:`ReviewRound.collect_review`:
  hand the cases to a :class:`Reviewer` — :class:`CvatReviewer` (push tasks; finished when every job is completed
  or ``cvat/PULL_NOW`` exists; collect = a validated pull), :class:`ScriptedReviewer` (answers from a known truth at
  once) or :class:`ImportReviewer` (finished when its decisions CSV exists; collect = import it). Waiting between
  start and collect is the caller's: the CLI polls, a flow pauses or suspends;
- :meth:`ReviewRound.apply`: ``decisions.csv`` applied to the version the cases were mined against → a new
  version with its audit trail.

Mining (with the label verifier) and rendering read tomograms for a label version, so they first check that each
is still the content the version pins (:meth:`byu.labels.store.LabelStore.check_tomograms`: a
:class:`~byu.errors.TomogramChangedError` names the tomogram, the version and both digests); the verifier's reused
``verification.csv`` is keyed on the tomograms' content digests too.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from byu.atomic import sha256_file, write_bytes, write_json
from byu.errors import InputError
from byu.labels.classes import ParticleClass
from byu.labels.model import LabelSet
from byu.labels.store import LabelStore, Manifest
from byu.paths import DataRoot, check_id
from byu.predictions import read_predictions
from byu.review.apply import ApplyResult, apply_decisions, read_overrides
from byu.review.cases import Case, cases_csv_bytes, read_cases
from byu.review.decisions import (
    DecisionsResult,
    decisions_bytes,
    import_decisions_csv,
    read_decisions,
    write_decisions,
)
from byu.review.match import MiningResult, find_cases, predicted_tomograms
from byu.review.paths import RoundPaths, round_paths
from byu.review.settings import MiningSettings, QualitySettings, RenderSettings
from byu.review.verify import (
    VERIFIER_VERSION,
    Verification,
    VerifierSettings,
    label_verification,
    read_verification,
    verification_from_table,
    verification_table,
    write_verification,
)
from byu.tomo.io import META_NAME, content_digest


def _count_kinds(cases: Sequence[Case]) -> dict[str, int]:
    return {k: n for k in ("FN", "FP", "GL", "GP") if (n := sum(c.kind == k for c in cases))}


def write_round_decisions(path: Path, result: DecisionsResult | pd.DataFrame, *, replace: bool,
                          allow_errors: bool = False) -> bool:
    """Write a round's ``decisions.csv``; an existing file with other decisions is kept unless ``replace``.
    Returns whether the file changed."""
    df = result.decisions if isinstance(result, DecisionsResult) else result
    if isinstance(result, DecisionsResult) and result.errors and not allow_errors:
        write_decisions(result, path)  # raises, naming every problem
    new = decisions_bytes(df)
    if path.exists():
        if path.read_bytes() == new:
            return False
        if not replace:
            raise InputError("the round already has other decisions; they are kept. Replace them on purpose "
                             "(--replace), or review in a new round", file=path)
    write_bytes(path, new)
    return True


# ----------------------------------------------------------------------------------------------------------------
# reviewers


class Reviewer(ABC):
    """Who reviews a round's cases (see the module docstring)."""

    kind: str = "reviewer"

    @abstractmethod
    def start(self, rnd: ReviewRound) -> str:
        """Hand the cases over (idempotent); returns what was done, in words."""

    @abstractmethod
    def finished(self, rnd: ReviewRound) -> bool:
        """Whether the decisions can be collected now."""

    @abstractmethod
    def collect(self, rnd: ReviewRound) -> DecisionsResult:
        """Collect the decisions into ``decisions.csv`` (errors if they do not validate)."""

    def describe(self) -> str:
        return self.kind


@dataclass
class ScriptedReviewer(Reviewer):
    """Answers from a known truth (synthetic cohorts, demos, tests)."""

    truth: LabelSet
    name: str = "scripted"
    kind: str = "scripted"
    error_rate: float = 0.0  # the share of item answers it gets wrong (byu.review.scripted)
    seed: int = 0

    def start(self, rnd: ReviewRound) -> str:
        return "scripted review: answers come from the truth" + \
            (f" (wrong on {self.error_rate:.0%} of them)" if self.error_rate else "")

    def finished(self, rnd: ReviewRound) -> bool:
        return True

    def decide(self, rnd: ReviewRound, images: Sequence[str] | None = None) -> DecisionsResult:
        """Its decisions on the round's cases (or the cases of ``images``), written nowhere."""
        from byu.review.scripted import scripted_decisions

        version = rnd.label_version()
        labeled = rnd.store.get(version) if version and rnd.store.exists(version) else None
        cases = rnd.cases() if images is None else [c for c in rnd.cases() if c.image in set(images)]
        return DecisionsResult(scripted_decisions(cases, self.truth, reviewer=self.name, labeled=labeled,
                                                  error_rate=self.error_rate, seed=self.seed))

    def collect(self, rnd: ReviewRound) -> DecisionsResult:
        result = self.decide(rnd)
        write_round_decisions(rnd.paths.decisions, result, replace=True)
        return result


@dataclass
class ImportReviewer(Reviewer):
    """Decisions made outside CVAT, in a CSV (``case_id`` or ``image``, ``tags``, optional ``reviewer``)."""

    csv: Path
    replace: bool = False
    kind: str = "import"

    def start(self, rnd: ReviewRound) -> str:
        return (f"review outside CVAT: tag the images in {rnd.paths.images} and write {self.csv} "
                "(case_id or image, tags, reviewer)")

    def finished(self, rnd: ReviewRound) -> bool:
        return Path(self.csv).is_file()

    def collect(self, rnd: ReviewRound) -> DecisionsResult:
        if not Path(self.csv).is_file():
            raise InputError("decisions CSV not found (write it, then resume)", file=self.csv)
        result = import_decisions_csv(self.csv, rnd.cases())
        if result.errors:
            write_decisions(result, rnd.paths.decisions)  # raises, naming every problem; nothing written
        write_round_decisions(rnd.paths.decisions, result, replace=self.replace)
        return result


@dataclass
class CvatReviewer(Reviewer):
    """People tag the case images in CVAT (a project per round, tasks of ``batch_size`` images)."""

    config: Any  # byu.review.cvat.CvatConfig
    batch_size: int = 100
    include_incomplete: bool = False
    allow_errors: bool = False
    project_name: str | None = None  # default: <round>-<id of the data root> (byu.review.cvat.default_project_name)
    kind: str = "cvat"
    last_pull: Any = field(default=None, repr=False)

    def start(self, rnd: ReviewRound) -> str:
        from byu.review.cvat import push_round

        entries = push_round(rnd.paths.dir, config=self.config, batch_size=self.batch_size,
                             project_name=self.project_name)
        return f"pushed {len(entries)} CVAT task(s) to {self.config.url}: " + ", ".join(
            f"{e['name']} (id {e['id']})" for e in entries)

    def status(self, rnd: ReviewRound) -> pd.DataFrame:
        from byu.review.cvat import round_status

        return round_status(rnd.paths.dir, config=self.config)

    def finished(self, rnd: ReviewRound) -> bool:
        if rnd.paths.pull_now.exists():
            return True
        status = self.status(rnd)
        return bool(len(status)) and int(status["jobs"].sum()) == int(status["completed"].sum())

    def collect(self, rnd: ReviewRound) -> DecisionsResult:
        from byu.review.cvat import pull_round

        report = pull_round(rnd.paths.dir, config=self.config, include_incomplete=self.include_incomplete,
                            allow_errors=self.allow_errors)
        self.last_pull = report
        rnd.paths.pull_now.unlink(missing_ok=True)
        if not report.written:
            raise InputError(f"the pulled review does not validate ({len(report.result.errors)} problem(s); the "
                             f"previous exports and decisions are kept; what was fetched is in "
                             f"{report.rejected_dir}):\n" + "\n".join(f"  - {e}" for e in report.result.errors[:20]))
        return report.result


# ----------------------------------------------------------------------------------------------------------------
# the round


class ReviewRound:
    """One review round on disk (see the module docstring)."""

    def __init__(self, root: DataRoot | str | Path, name: str) -> None:
        self.root = root if isinstance(root, DataRoot) else DataRoot.from_env(root)
        self.name = check_id(name, what="round")
        self.paths = round_paths(self.root, self.name)
        self.store = LabelStore(self.root.labels)
        self._cases: tuple[tuple[int, int, int], list[Case]] | None = None

    # ------------------------------------------------------------------------------------------ cases
    def mine(self, *, labels_version: str, predictions: str | Path, settings: MiningSettings | None = None,
             tomo_ids: Sequence[str] | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> MiningResult:
        """Mine the round's cases (:func:`byu.review.match.find_cases`) and write ``cases.csv`` and ``mining.json``
        (the settings, and per class the bars, the verifier's separation and what was chosen). With
        ``settings.verify``, first score every label with the label verifier (``verification.csv``; a rerun with
        the same inputs reuses it)."""
        settings = settings or MiningSettings()
        labels = self.store.get(labels_version)
        preds = read_predictions(predictions)
        if tomo_ids is None:
            tomo_ids = predicted_tomograms(predictions)
        self.store.check_tomograms(labels_version, tomo_ids)  # the images reviewed must be those labelled
        verification = None
        if settings.verify:
            verification = self.verification(labels_version=labels_version, labels=labels, predictions=predictions,
                                             preds=preds, tomo_ids=tomo_ids, threshold=settings.threshold,
                                             settings=settings.verifier, progress=progress)
        result = find_cases(labels, preds, settings=settings, tomo_ids=tomo_ids, verification=verification,
                            label_version=labels_version, prediction_run=Path(predictions).stem)
        data = cases_csv_bytes(result.cases)
        if self.paths.cases.exists():
            if self.paths.cases.read_bytes() != data:
                raise InputError(f"round {self.name!r} already has other cases (mined from other labels, predictions "
                                 "or settings); they are kept: use a new round name", file=self.paths.cases)
            return result
        write_json(self.paths.mining, {"labels_version": labels_version, "predictions": str(predictions),
                                       "settings": settings.model_dump(mode="json"),
                                       "classes": result.summary(), "cases": len(result.cases),
                                       "cases_by_kind": _count_kinds(result.cases)})
        write_bytes(self.paths.cases, data)
        return result

    def verification(self, *, labels_version: str, labels: LabelSet, predictions: str | Path, preds: pd.DataFrame,
                     tomo_ids: Sequence[str] | None, threshold: float, settings: VerifierSettings,
                     progress: Callable[[str, int, int], None] | None = None) -> Verification:
        """Each label's and prediction's verification, from ``verification.csv`` when it was made from the same
        inputs, else computed and written there."""
        ids = list(tomo_ids) if tomo_ids is not None else labels.tomo_ids
        self.store.check_tomograms(labels_version, ids)
        inputs = {"labels_version": labels_version, "predictions_sha256": sha256_file(predictions),
                  "threshold": threshold, "tomo_ids": ids, "settings": settings.model_dump(),
                  "verifier": VERIFIER_VERSION, "tomograms": self._digests(ids)}
        path = self.paths.verification
        if path.exists():
            kept = read_verification(path)
            if kept.attrs.get("inputs") == inputs and int((kept["source"] == "label").sum()) == len(labels.picks):
                return verification_from_table(kept, labels.picks.index, preds.index)
        scores = label_verification(labels, preds, self.root.tomograms, tomo_ids=ids, threshold=threshold,
                                    settings=settings, progress=progress)
        scores = Verification(labels=scores.labels.round(6), predictions=scores.predictions.round(6),
                              separation=scores.separation, hard_separation=scores.hard_separation)
        write_verification(path, verification_table(scores, labels, preds), inputs, scores)
        return scores

    def _digests(self, tomo_ids: Sequence[str]) -> dict[str, str]:
        """The content digest of each stored tomogram of ``tomo_ids`` (what a reused result was computed from)."""
        out = {}
        for tid in tomo_ids:
            d = self.root.tomogram(tid)
            if (d / META_NAME).exists():
                out[tid] = content_digest(d)
        return out

    def cases(self) -> list[Case]:
        """The round's cases; read once while ``cases.csv`` stays the same file (a crowded round's is ~17 MB, and
        rendering a batch asks for its cases, label version and classes)."""
        try:
            st = self.paths.cases.stat()
        except OSError:
            return read_cases(self.paths.cases)  # names what is missing
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._cases is None or self._cases[0] != sig:
            self._cases = (sig, read_cases(self.paths.cases))
        return list(self._cases[1])

    def label_version(self) -> str | None:
        """The version the round's cases were mined against (None for a round without cases)."""
        versions = {c.label_version for c in self.cases()} - {""}
        if len(versions) > 1:
            raise InputError(f"cases were mined against several versions {sorted(versions)}", file=self.paths.cases,
                             field="label_version")
        return next(iter(versions), None)

    def classes(self) -> dict[str, ParticleClass]:
        """The classes of the version the cases were mined against (for ring radii and class tags)."""
        version = self.label_version()
        if version and self.store.exists(version):
            return {c.name: c for c in self.store.manifest(version).classes}
        return {}

    def render(self, *, settings: RenderSettings | None = None, progress: Callable[[int, int], None] | None = None,
               workers: int | None = None, cases: Sequence[Case] | None = None) -> list[Path]:
        """One JPEG per case (or per given case) into ``images/``, each with its panel geometry in ``geometry/``.
        The tomograms drawn must still be those the cases' label version pins (:class:`TomogramChangedError`)."""
        from byu.review.render import render_cases

        settings = settings or RenderSettings()
        cases = list(cases) if cases is not None else self.cases()
        version = self.label_version()
        if version and self.store.exists(version):
            self.store.check_tomograms(version, [t for c in cases for t in c.tomo_ids])
        heatmaps = None
        if settings.heatmap and any(not c.is_gallery for c in cases) and self.paths.mining.exists():
            from byu.model.infer import stored_heatmaps  # torch only when a round draws what the models saw

            run = json.loads(self.paths.mining.read_text()).get("predictions")
            heatmaps = stored_heatmaps(self.root, run, cache_dir=self.paths.heatmaps) if run else None
        return render_cases(cases, self.root.tomograms,
                            self.paths.images, progress=progress, workers=workers, classes=self.classes(),
                            panel_px=settings.panel_px, thumb_px=settings.thumb_px, quality=settings.quality,
                            geometry_dir=self.paths.geometry, heatmaps=heatmaps)

    # ------------------------------------------------------------------------------------------ review
    def start_review(self, reviewer: Reviewer) -> str:
        if not self.paths.cases.exists():
            raise InputError("no cases yet: mine the round first", file=self.paths.cases)
        return reviewer.start(self)

    def review_finished(self, reviewer: Reviewer) -> bool:
        return reviewer.finished(self)

    def collect_review(self, reviewer: Reviewer) -> DecisionsResult:
        if not self.cases():  # nothing to review: an empty decisions file
            result = DecisionsResult(pd.DataFrame(columns=["case_id", "image", "tags", "reviewer", "source",
                                                           "job_state"]))
            write_round_decisions(self.paths.decisions, result, replace=True)
            return result
        return reviewer.collect(self)

    def request_pull(self) -> Path:
        """Ask a waiting flow (CVAT, polling) to collect now, without waiting for every job."""
        self.paths.pull_now.parent.mkdir(parents=True, exist_ok=True)
        self.paths.pull_now.touch()
        return self.paths.pull_now

    def decisions(self) -> pd.DataFrame:
        if not self.paths.decisions.exists():
            raise InputError("no decisions yet for this round (pull the review or import a decisions CSV)",
                             file=self.paths.decisions)
        return read_decisions(self.paths.decisions)

    # ------------------------------------------------------------------------------------------ quality
    def reviews(self) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """The first review's decisions and the second's (None when there is none), each as its reviewer left it:
        from a CVAT round's first- and second-review exports, else ``decisions.csv`` and ``second_decisions.csv``."""
        from byu.review.decisions import decisions_from_round

        if self.paths.tasks.exists():
            record = json.loads(self.paths.tasks.read_text())
            first = decisions_from_round(self.paths.dir, kinds=("review",)).decisions
            second = decisions_from_round(self.paths.dir, kinds=("review2",)).decisions \
                if any(t.get("kind") == "review2" for t in record.get("tasks", [])) else None
            return first, second
        second = read_decisions(self.paths.second_decisions) if self.paths.second_decisions.exists() else None
        return self.decisions(), second

    def assess(self, settings: QualitySettings | None = None) -> dict[str, Any]:
        """Each reviewer's accuracy on the known-answer items and the images a second reviewer should see (why:
        unsure, held, sample); written to ``quality.json``."""
        from byu.review.quality import known_accuracy, second_review_images

        settings = settings or QualitySettings()
        cases = self.cases()
        first, _ = self.reviews()
        accuracy = known_accuracy(cases, first)
        second = second_review_images(cases, first, accuracy, min_accuracy=settings.min_accuracy,
                                      min_known=settings.min_known, rate=settings.second_rate,
                                      confidence=settings.confidence)
        report = {"settings": settings.model_dump(), "accuracy": {k: v.as_dict() for k, v in accuracy.items()},
                  "second_review": second}
        write_json(self.paths.quality, report)
        return report

    def collect_second(self, result: DecisionsResult) -> Path:
        """Store a second reviewer's decisions (scripted or imported) as ``second_decisions.csv``."""
        if result.errors:
            write_decisions(result, self.paths.second_decisions)  # raises, naming every problem
        write_round_decisions(self.paths.second_decisions, result, replace=True)
        return self.paths.second_decisions

    def resolve(self, settings: QualitySettings | None = None) -> dict[str, Any]:
        """One decision per image from the reviews (:func:`byu.review.quality.resolve`; ``resolution.csv`` where
        someone resolved disagreements) → ``resolved_decisions.csv``, which :meth:`apply` then applies; agreement
        per class (Cohen's kappa) and how each image was decided go to ``quality.json``."""
        from byu.review.quality import agreement, resolve

        settings = settings or QualitySettings()
        cases = self.cases()
        first, second = self.reviews()
        resolution = self.resolution()
        accuracy = self._accuracy(cases, first, second, resolution)
        out = resolve(cases, first, second, accuracy, min_accuracy=settings.min_accuracy,
                      min_known=settings.min_known, resolution=resolution, confidence=settings.confidence)
        write_round_decisions(self.paths.resolved, out.decisions, replace=True)
        report = json.loads(self.paths.quality.read_text()) if self.paths.quality.exists() else {}
        report.update({"resolved_from": self._reviews_digest(first, second),
                       "accuracy": {k: v.as_dict() for k, v in accuracy.items()},
                       "agreement": agreement(cases, first, second) if second is not None else {},
                       "decided_by": pd.Series(list(out.how.values()), dtype=object).value_counts().to_dict(),
                       "how": out.how, "held": out.held, "disputed": out.disputed})
        write_json(self.paths.quality, report)
        return report

    def resolution(self) -> pd.DataFrame | None:
        """The decisions of whoever resolved the disputed images (``resolution.csv``); None when nobody did."""
        return read_decisions(self.paths.resolution) if self.paths.resolution.exists() else None

    @staticmethod
    def _accuracy(cases: list[Case], *tables: pd.DataFrame | None) -> dict:
        """Each reviewer's accuracy on the known-answer items over every review given (the first, the second, the
        resolution)."""
        from byu.review.quality import known_accuracy

        return known_accuracy(cases, pd.concat([t for t in tables if t is not None]))

    def _reviews_digest(self, first: pd.DataFrame, second: pd.DataFrame | None) -> str:
        """What a resolution was made from: both reviews as read and the resolution file."""
        import hashlib

        h = hashlib.sha256(first.to_csv(index=False).encode())
        h.update(b"\0" + (b"" if second is None else second.to_csv(index=False).encode()))
        h.update(b"\0" + (self.paths.resolution.read_bytes() if self.paths.resolution.exists() else b""))
        return h.hexdigest()

    def _stale_resolution(self) -> bool:
        """True when ``resolved_decisions.csv`` was made from other reviews than those there now (a later pull,
        import or resolution): applying it would drop what changed."""
        report = json.loads(self.paths.quality.read_text()) if self.paths.quality.exists() else {}
        return report.get("resolved_from") != self._reviews_digest(*self.reviews())

    # ------------------------------------------------------------------------------------------ apply
    def apply(self, *, from_version: str, to_version: str, overrides: str | Path | None = None,
              producer: str | None = None) -> tuple[Manifest, ApplyResult]:
        """Apply ``decisions.csv`` to ``from_version`` and store ``to_version`` with its audit trail."""
        cases = self.cases()
        mined = {c.label_version for c in cases} - {""}
        if mined and mined != {from_version}:
            raise InputError(f"cases of round {self.name!r} were mined against {sorted(mined)}, not "
                             f"{from_version!r}", file=self.paths.cases, field="label_version")
        source = self.paths.resolved if self.paths.resolved.exists() else self.paths.decisions
        if source == self.paths.resolved and self._stale_resolution():
            raise InputError(f"the reviews changed since they were resolved: run `byu review resolve {self.name}` "
                             "again (or remove this file to apply the first review alone)", file=source)
        if not source.exists():
            raise InputError("no decisions yet for this round (pull the review or import a decisions CSV)",
                             file=self.paths.decisions)
        decisions = read_decisions(source)
        ov = read_overrides(overrides) if overrides is not None else None
        result = apply_decisions(self.store.get(from_version), cases, decisions, round_name=self.name, overrides=ov,
                                 overrides_source=str(overrides) if overrides else "overrides",
                                 decisions_source=str(source))
        left = self.errors_left(decisions)
        manifest = self.store.put(
            to_version, result.labels, parents=[from_version], producer=producer or f"byu review apply {self.name}",
            changes=result.changes,
            extra={"round": self.name, "cases": len(cases), "decided": len(result.applied_cases),
                   "unsure": result.unsure_cases, "unreviewed": len(result.unreviewed_cases),
                   "label_changes": result.label_changes,
                   "overrides": os.fspath(overrides) if overrides else None,
                   **({"errors_left": left} if left else {})},
        )
        return manifest, result

    def errors_left(self, applied: pd.DataFrame) -> dict[str, Any]:
        """Per class, the label errors the version made from ``applied`` probably still holds
        (:func:`byu.review.quality.errors_left`), with the assumptions; also kept in ``quality.json``."""
        from byu.review.quality import ASSUMPTIONS, errors_left

        if not self.paths.mining.exists():
            return {}
        mined = json.loads(self.paths.mining.read_text()).get("classes") or {}
        report = json.loads(self.paths.quality.read_text()) if self.paths.quality.exists() else {}
        first, second = self.reviews()
        cases = self.cases()
        reviews = first if second is None else pd.concat([first, second])
        accuracy = self._accuracy(cases, first, second, self.resolution())
        left = {"classes": errors_left(cases, applied, accuracy, mined, how=report.get("how"), reviews=reviews,
                                       disputed=report.get("disputed")),
                "assumptions": ASSUMPTIONS}
        report["errors_left"] = left
        write_json(self.paths.quality, report)
        return left

    def summary(self) -> dict[str, Any]:
        """Cases by kind and class, and how many were decided."""
        cases = self.cases() if self.paths.cases.exists() else []
        out: dict[str, Any] = {"round": self.name, "cases": len(cases),
                               "by_kind": pd.Series([c.kind for c in cases], dtype=object).value_counts().to_dict(),
                               "by_class": pd.Series([c.particle for c in cases],
                                                     dtype=object).value_counts().to_dict()}
        if self.paths.decisions.exists():
            out["decided"] = int(len(read_decisions(self.paths.decisions)))
        return out


__all__ = [
    "CvatReviewer", "ImportReviewer", "ReviewRound", "Reviewer", "RoundPaths", "ScriptedReviewer", "round_paths",
    "write_round_decisions",
]

"""Review cases: the one :class:`Case` model and the one reader and writer of ``review/<round>/cases.csv``.

A case is one image for a reviewer. Single-particle cases are about one tomogram, with its context:

- ``FN``: a labeled pick (candidate ``k = 0``) the model does not confirm (``reason`` ``unmatched``: no prediction
  of its class matched it; ``weak``: only one weaker than the confirm threshold; ``unverified``: the label verifier
  believes it least), with the predictions near it as candidates ``k = 1..K`` (a shift, a missed neighbour);
- ``FP``: predictions of one class that match no label (``reason`` ``unlabeled``), candidates ``k = 1..K``.

Gallery cases show many items of one class, each from its own tomogram, as small crops numbered ``k = 1..N``:

- ``GL``: labels to confirm (``source`` ``label``); the reviewer tags only the wrong ones;
- ``GP``: unlabeled predictions to look at (``source`` ``prediction``); the reviewer tags only the real ones.

Every candidate of a gallery carries its own frame (``tomo_id, Z, Y, X, voxel_spacing``); a single-particle
case's candidates share the case's. ``labels`` are a single-particle case's other labeled picks, drawn for
context. Coordinates are in the label frame of the item's tomogram.

``cases.csv`` columns: ``CASE_COLUMNS``; ``candidates`` and ``labels`` are JSON lists. Files written before
multi-class rounds (no ``reason``/``particle`` columns, ``labels`` as ``[[z, y, x], ...]``, candidates without a
class) are read as motor cases.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from byu.atomic import write_bytes
from byu.errors import InputError, InputErrors, NotFoundError
from byu.paths import check_id

CASE_COLUMNS = [
    "case_id", "kind", "index", "tomo_id", "image", "score", "reason", "particle", "label_version",
    "prediction_run", "Z", "Y", "X", "voxel_spacing", "radius_A", "focus_k", "candidates", "labels",
]
MAX_CASES_BYTES = 256 << 20

Finite = Annotated[float, Field(allow_inf_nan=False)]
CaseKind = Literal["FN", "FP", "GL", "GP"]
SINGLE_KINDS: tuple[CaseKind, ...] = ("FN", "FP")
GALLERY_KINDS: tuple[CaseKind, ...] = ("GL", "GP")


class Frame(BaseModel):
    """A tomogram's label frame: its id, shape and voxel spacing (Å)."""

    model_config = ConfigDict(frozen=True)

    tomo_id: str
    Z: int = Field(gt=0)
    Y: int = Field(gt=0)
    X: int = Field(gt=0)
    voxel_spacing: Finite = Field(gt=0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.Z, self.Y, self.X)


class Candidate(BaseModel):
    """One item of a case: ``k = 0`` the labeled pick of an FN case, ``k >= 1`` a prediction or (in a ``GL``
    gallery) a label. Gallery items carry their own frame (``tomo_id, Z, Y, X, voxel_spacing``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    k: int = Field(ge=0)
    particle: str = "motor"
    z: Finite
    y: Finite
    x: Finite
    conf: Finite | None = None
    source: Literal["label", "prediction"] = "prediction"
    tomo_id: str | None = None
    Z: int | None = Field(default=None, gt=0)
    Y: int | None = Field(default=None, gt=0)
    X: int | None = Field(default=None, gt=0)
    voxel_spacing: Finite | None = Field(default=None, gt=0)
    known: Literal["real", "not"] | None = None  # a known-answer item (byu.review.quality): never changes a label

    @field_validator("tomo_id")
    @classmethod
    def _safe_tomo(cls, v: str | None) -> str | None:
        if v is not None:
            check_id(v, what="tomo_id")
        return v

    @model_validator(mode="after")
    def _whole_frame(self) -> Candidate:
        given = [v is not None for v in (self.tomo_id, self.Z, self.Y, self.X, self.voxel_spacing)]
        if any(given) and not all(given):
            raise ValueError("candidates: a candidate's own frame needs tomo_id, Z, Y, X and voxel_spacing")
        return self

    @property
    def zyx(self) -> list[float]:
        return [self.z, self.y, self.x]

    @property
    def frame(self) -> Frame | None:
        """The candidate's own frame (gallery items), else None (it shares its case's)."""
        if self.tomo_id is None or self.Z is None or self.Y is None or self.X is None or self.voxel_spacing is None:
            return None
        return Frame(tomo_id=self.tomo_id, Z=self.Z, Y=self.Y, X=self.X, voxel_spacing=self.voxel_spacing)


class LabelPoint(BaseModel):
    """A labeled pick of the tomogram, shown for context."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    particle: str = "motor"
    z: Finite
    y: Finite
    x: Finite

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)) and len(value) == 3:  # files before multi-class rounds
            return {"particle": "motor", "z": value[0], "y": value[1], "x": value[2]}
        return value


class Case(BaseModel):
    """One review case (one row of ``cases.csv``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    case_id: str
    kind: CaseKind
    index: int = Field(ge=1)
    tomo_id: str = ""
    image: str
    score: Finite = 0.0
    reason: str = ""
    particle: str = "motor"
    label_version: str = ""
    prediction_run: str = ""
    Z: int | None = Field(default=None, gt=0)
    Y: int | None = Field(default=None, gt=0)
    X: int | None = Field(default=None, gt=0)
    voxel_spacing: Finite | None = Field(default=None, gt=0)
    radius_A: Finite = Field(default=1000.0, gt=0)
    focus_k: int = Field(ge=0)
    candidates: tuple[Candidate, ...]
    labels: tuple[LabelPoint, ...] = ()

    @field_validator("case_id", "image")
    @classmethod
    def _safe(cls, v: str, info) -> str:
        check_id(v, what=info.field_name)
        return v

    @field_validator("tomo_id")
    @classmethod
    def _safe_tomo(cls, v: str) -> str:
        if v:
            check_id(v, what="tomo_id")
        return v

    @field_validator("image")
    @classmethod
    def _jpeg(cls, v: str) -> str:
        if not v.lower().endswith((".jpg", ".jpeg")):
            raise ValueError(f"must end in .jpg, got {v!r}")
        return v

    @model_validator(mode="after")
    def _candidates(self) -> Case:
        if not self.candidates:
            raise ValueError("candidates: no candidates to show")
        ks = [c.k for c in self.candidates]
        if len(set(ks)) != len(ks):
            raise ValueError(f"candidates: duplicate k in {ks}")
        if self.focus_k not in ks:
            raise ValueError(f"focus_k: {self.focus_k} is not among the candidates' k {ks}")
        if self.kind == "FN" and not any(c.k == 0 and c.source == "label" for c in self.candidates):
            raise ValueError("candidates: an FN case needs its labeled pick as candidate k=0")
        if self.kind in SINGLE_KINDS:
            if not self.tomo_id or None in (self.Z, self.Y, self.X, self.voxel_spacing):
                raise ValueError(f"tomo_id: a {self.kind} case needs its tomogram's id, Z, Y, X and voxel_spacing")
        else:
            wanted = "label" if self.kind == "GL" else "prediction"
            if any(c.frame is None for c in self.candidates):
                raise ValueError(f"candidates: every item of a {self.kind} gallery needs its own frame")
            if any(c.k == 0 or c.source != wanted for c in self.candidates):
                raise ValueError(f"candidates: a {self.kind} gallery shows {wanted}s numbered from 1")
            if any(c.particle != self.particle for c in self.candidates):
                raise ValueError(f"candidates: a gallery shows one class ({self.particle})")
        return self

    @property
    def is_gallery(self) -> bool:
        return self.kind in GALLERY_KINDS

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of a single-particle case's tomogram (label frame)."""
        if self.Z is None or self.Y is None or self.X is None:
            raise ValueError(f"{self.case_id} is a gallery: its items have their own frames")
        return (self.Z, self.Y, self.X)

    def frame_of(self, c: Candidate) -> Frame:
        """The frame candidate ``c`` is in: its own (gallery items) or the case's."""
        own = c.frame
        if own is not None:
            return own
        if self.voxel_spacing is None:
            raise ValueError(f"{self.case_id}: candidate {c.k} has no frame")
        Z, Y, X = self.shape
        return Frame(tomo_id=self.tomo_id, Z=Z, Y=Y, X=X, voxel_spacing=self.voxel_spacing)

    @property
    def tomo_ids(self) -> list[str]:
        """Every tomogram the case shows, in first-shown order."""
        return list(dict.fromkeys(self.frame_of(c).tomo_id for c in self.candidates))

    @property
    def ks(self) -> frozenset[int]:
        """Candidate numbers ``k >= 1`` the image showed (predictions)."""
        return frozenset(c.k for c in self.candidates if c.k >= 1)

    def candidate(self, k: int) -> Candidate:
        for c in self.candidates:
            if c.k == k:
                return c
        raise KeyError(k)

    @property
    def label(self) -> Candidate | None:
        """The labeled pick of an FN case (``k = 0``)."""
        return next((c for c in self.candidates if c.k == 0 and c.source == "label"), None)

    @property
    def classes(self) -> list[str]:
        """Classes of the case's candidates and context labels, focus class first."""
        return list(dict.fromkeys([self.particle, *(c.particle for c in self.candidates),
                                   *(p.particle for p in self.labels)]))

    def row(self) -> dict[str, Any]:
        """The ``cases.csv`` row (JSON text for the lists)."""
        out = self.model_dump(mode="json")
        frame_keys = ("tomo_id", "Z", "Y", "X", "voxel_spacing", "known")  # gallery items only
        out["candidates"] = json.dumps([{k: v for k, v in c.items() if not (k in frame_keys and v is None)}
                                        for c in out["candidates"]])
        out["labels"] = json.dumps(out["labels"])
        return {c: out[c] for c in CASE_COLUMNS}


def image_name(kind: str, index: int, tomo_id: str, shape: Sequence[int], spacing: float) -> str:
    z, y, x = shape
    return f"{kind}-{index}-{tomo_id}-{z}x{y}x{x}-spacing{spacing:g}.jpg"


def gallery_image_name(kind: str, index: int, particle: str) -> str:
    """``GL-7-ribosome.jpg``: a gallery's image (the class made file-safe)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in particle)
    return f"{kind}-{index}-{safe}.jpg"


def cases_frame(cases: Iterable[Case]) -> pd.DataFrame:
    """The cases as a table (``CASE_COLUMNS``; JSON text for candidates and labels)."""
    return pd.DataFrame([c.row() for c in cases], columns=CASE_COLUMNS)


def cases_csv_bytes(cases: Iterable[Case]) -> bytes:
    buf = io.StringIO()
    cases_frame(cases).to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def write_cases(cases: Iterable[Case], path: str | Path) -> Path:
    write_bytes(path, cases_csv_bytes(cases))
    return Path(path)


def _parse_json_cell(value: Any, field: str) -> Any:
    if not isinstance(value, str):
        return value
    if not value.strip():
        return []
    try:
        return json.loads(value)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{field}: not valid JSON ({type(exc).__name__})") from None


def case_from_row(row: dict[str, Any], *, file: str | Path | None = None, line: int | None = None) -> Case:
    """Parse one ``cases.csv`` row; errors name file, line and field."""
    data = {k: v for k, v in row.items() if not (isinstance(v, str) and v == "" and k not in ("reason",))}
    try:
        for field in ("candidates", "labels"):
            if field in data:
                data[field] = _parse_json_cell(data[field], field)
        return Case.model_validate(data)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            err = exc.errors()[0]
            loc = err.get("loc", ())
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            field = str(loc[0]) if loc else "row"
            if not loc and ": " in msg:  # checks across fields name the field first ("focus_k: ...")
                field, msg = msg.split(": ", 1)
            if len(loc) > 1:
                msg = f"{msg} (at {'.'.join(str(p) for p in loc[1:])})"
        else:
            field, msg = str(exc).split(":", 1)[0], str(exc)
        raise InputError(msg, file=file, row=line, field=field) from None


def read_cases(path: str | Path) -> list[Case]:
    """Every case of a ``cases.csv``, checked; all bad rows are reported at once (file, line, field)."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: no cases for this round (mine it first)")
    if path.stat().st_size > MAX_CASES_BYTES:
        raise InputError(f"cases file is larger than {MAX_CASES_BYTES >> 20} MiB", file=path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return []
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable CSV: {type(exc).__name__}", file=path) from None
    required = ["case_id", "kind", "tomo_id", "image", "candidates", "focus_k", "voxel_spacing", "Z", "Y", "X"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}", file=path)
    return load_case_rows(df.to_dict("records"), file=path)


def load_case_rows(rows: Iterable[dict[str, Any]], *, file: str | Path | None = "cases.csv") -> list[Case]:
    """Cases from ``cases.csv`` rows (dicts of text or values); every bad row is reported at once."""
    cases, errors = [], []
    ids: dict[str, int] = {}
    images: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        row = {k: v for k, v in row.items() if not (not isinstance(v, str) and pd.isna(v))}
        row.setdefault("index", str(line - 1))
        try:
            case = case_from_row(row, file=file, line=line)
        except InputError as exc:
            errors.append(exc)
            continue
        if case.case_id in ids:
            errors.append(InputError(f"duplicate case_id {case.case_id!r} (first on line {ids[case.case_id]})",
                                     file=file, row=line, field="case_id"))
            continue
        if case.image in images:
            errors.append(InputError(f"duplicate image {case.image!r} (first on line {images[case.image]})",
                                     file=file, row=line, field="image"))
            continue
        ids[case.case_id] = line
        images[case.image] = line
        cases.append(case)
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(errors)
    return cases


def by_image(cases: Iterable[Case]) -> dict[str, Case]:
    return {c.image: c for c in cases}


def by_case_id(cases: Iterable[Case]) -> dict[str, Case]:
    return {c.case_id: c for c in cases}


def round_classes(cases: Iterable[Case]) -> list[str]:
    """Every class the cases of a round show, in first-seen order."""
    out: dict[str, None] = {}
    for c in cases:
        for name in c.classes:
            out.setdefault(name)
    return list(out)


__all__ = [
    "CASE_COLUMNS", "GALLERY_KINDS", "SINGLE_KINDS", "Candidate", "Case", "CaseKind", "Frame", "LabelPoint",
    "by_case_id", "by_image", "case_from_row", "cases_csv_bytes", "cases_frame", "gallery_image_name", "image_name",
    "load_case_rows", "read_cases", "round_classes", "write_cases",
]

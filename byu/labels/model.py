"""The model of a label version: its tomograms, its picks (any particle class) and its classes.

- **tomograms** (``TOMOGRAM_COLUMNS``): ``tomo_id, Z, Y, X, voxel_spacing``: the frame each tomogram's picks are
  given in (Å = voxel x spacing); tomograms without picks are listed too (a tomogram known to hold nothing).
- **picks** (``STORED_PICK_COLUMNS``): ``tomo_id, particle, z, y, x`` in the tomogram's frame, plus optional
  provenance per pick: ``source`` (where the pick came from: ``portal:…``, ``copick:…``, ``review:round1``),
  ``user_id`` and ``session_id`` (copick's). Empty strings where unknown. Optionally (``OPTIONAL_PICK_COLUMNS``)
  ``transform``: the pick's orientation as copick gives it, a 4x4 object-to-tomogram matrix in copick's ``x, y, z``
  order whose translation is a shift in Å already counted in the position (``location + shift``), as JSON
  ``[[r00, r01, r02, tx], ..., [0, 0, 0, 1]]``; empty where no orientation is known. A version's picks file has
  that column only when some pick has one, so versions without orientations are stored as before.
- **classes**: the :class:`~byu.labels.classes.ParticleClass` es the version covers (every pick's class is one).

Row order is meaningful and kept: tomograms in table order, picks in order within a tomogram (the canonical motor
form lists a tomogram's motors in that order). :class:`LabelSet` is immutable; every change makes a new one.
Validation is vectorised and lists every problem at once, naming file, line and field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from byu.errors import InputError, InputErrors
from byu.labels.classes import MOTOR, ClassRegistry, ParticleClass
from byu.paths import SAFE_ID

TOMOGRAM_COLUMNS = ["tomo_id", "Z", "Y", "X", "voxel_spacing"]
PICK_COLUMNS = ["tomo_id", "particle", "z", "y", "x"]
PROVENANCE_COLUMNS = ["source", "user_id", "session_id"]
TRANSFORM_COLUMN = "transform"
OPTIONAL_PICK_COLUMNS = [TRANSFORM_COLUMN]  # stored only when some pick has a value
STORED_PICK_COLUMNS = PICK_COLUMNS + PROVENANCE_COLUMNS + OPTIONAL_PICK_COLUMNS
MAX_SHAPE = 1_000_000  # voxels along one axis: anything larger is a corrupt header, not a tomogram
MAX_SPACING = 1_000_000.0  # Å per voxel
MAX_ERRORS = 50  # listed per problem kind, so a million bad rows don't make a million messages


def empty_tomograms() -> pd.DataFrame:
    return pd.DataFrame({"tomo_id": pd.Series(dtype=object), "Z": pd.Series(dtype="int64"),
                         "Y": pd.Series(dtype="int64"), "X": pd.Series(dtype="int64"),
                         "voxel_spacing": pd.Series(dtype="float64")})


def empty_picks() -> pd.DataFrame:
    out = {c: pd.Series(dtype=object) for c in ("tomo_id", "particle")}
    out.update({c: pd.Series(dtype="float64") for c in ("z", "y", "x")})
    out.update({c: pd.Series(dtype=object) for c in PROVENANCE_COLUMNS + OPTIONAL_PICK_COLUMNS})
    return pd.DataFrame(out)


def format_transform(matrix: np.ndarray | Sequence[Sequence[float]]) -> str:
    """The ``transform`` cell of a 4x4 matrix (JSON, every float exactly as Python writes it)."""
    return json.dumps([[float(v) for v in row] for row in np.asarray(matrix, dtype=float).reshape(4, 4)])


def parse_transform(text: str) -> np.ndarray:
    """The 4x4 matrix of a ``transform`` cell (``ValueError`` naming what is wrong)."""
    try:
        value = json.loads(text)
        arr = np.asarray(value, dtype=float)
    except (ValueError, TypeError):
        raise ValueError(f"not a 4x4 matrix as JSON: {text[:80]!r}") from None
    if arr.shape != (4, 4):
        raise ValueError(f"not a 4x4 matrix as JSON: {text[:80]!r}")
    if not np.isfinite(arr).all():
        raise ValueError(f"not finite numbers: {text[:80]!r}")
    if not np.allclose(arr[3], [0.0, 0.0, 0.0, 1.0], rtol=0.0, atol=1e-9):
        raise ValueError(f"the last row must be [0, 0, 0, 1]: {text[:80]!r}")
    return arr


def _transforms(df: pd.DataFrame, line: np.ndarray, problems: _Problems) -> np.ndarray:
    """The normalized ``transform`` column ('' where none; every bad cell reported)."""
    if TRANSFORM_COLUMN not in df.columns:
        return np.full(len(df), "", dtype=object)
    text = _text(df[TRANSFORM_COLUMN]).str.strip().to_numpy(dtype=object)
    out = np.full(len(df), "", dtype=object)
    for i in np.flatnonzero(text != ""):
        try:
            out[i] = format_transform(parse_transform(text[i]))
        except ValueError as exc:
            problems.add(str(exc), line=int(line[i]), field=TRANSFORM_COLUMN, kind="bad transform")
    return out


def _lines(n: int, lines: Sequence[int] | np.ndarray | None) -> np.ndarray:
    return np.asarray(lines, dtype=np.int64) if lines is not None else np.arange(2, n + 2, dtype=np.int64)


class _Problems:
    """Collects InputErrors, at most ``MAX_ERRORS`` per (field, reason) so huge bad files stay readable."""

    def __init__(self, source: str | Path | None) -> None:
        self.source = source
        self.errors: list[InputError] = []
        self._counts: dict[tuple[str, str], int] = {}

    def add(self, message: str, *, line: int | None, field: str, kind: str | None = None) -> None:
        key = (field, kind or message)
        n = self._counts.get(key, 0)
        self._counts[key] = n + 1
        if n < MAX_ERRORS:
            self.errors.append(InputError(message, file=self.source, row=line, field=field))
        elif n == MAX_ERRORS:
            self.errors.append(InputError(f"more rows with this problem ({kind or message}); fix the above first",
                                          file=self.source, field=field))

    def raise_if_any(self) -> None:
        if self.errors:
            raise self.errors[0] if len(self.errors) == 1 else InputErrors(self.errors)


def _numeric(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _text(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), "").map(lambda v: v if isinstance(v, str) else str(v))


def check_tomograms(df: pd.DataFrame, *, source: str | Path | None = None,
                    lines: Sequence[int] | None = None, problems: _Problems | None = None) -> pd.DataFrame:
    """The normalized tomograms table (``TOMOGRAM_COLUMNS``); every problem names line and field."""
    own = problems is None
    problems = problems or _Problems(source)
    missing = [c for c in TOMOGRAM_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}; expected {TOMOGRAM_COLUMNS}", file=source)
    line = _lines(len(df), lines)
    ids = _text(df["tomo_id"])
    seen: dict[str, int] = {}
    for i, tid in enumerate(ids):
        if not tid or tid in {".", ".."} or not SAFE_ID.fullmatch(tid) or len(tid) > 200:
            problems.add(f"tomo_id {tid!r} is not allowed: use 1-200 letters, digits, '.', '_' or '-' "
                         "(no '/', not '.' or '..')", line=int(line[i]), field="tomo_id", kind="bad tomo_id")
        elif tid in seen:
            problems.add(f"duplicate tomo_id {tid!r} (first at line {seen[tid]})", line=int(line[i]),
                         field="tomo_id", kind="duplicate tomo_id")
        else:
            seen[tid] = int(line[i])
    shape = {}
    for c in ("Z", "Y", "X"):
        raw = df[c]
        v = _numeric(raw)
        bad = ~np.isfinite(v) | (v < 1) | (v > MAX_SHAPE) | (np.floor(v) != v)
        for i in map(int, np.flatnonzero(bad)):
            problems.add(f"shape must be a whole number from 1 to {MAX_SHAPE}, got {raw.iloc[i]!r}",
                         line=int(line[i]), field=c, kind="bad shape")
        shape[c] = np.where(bad, 1, v).astype(np.int64)
    sp_raw = df["voxel_spacing"]
    sp = _numeric(sp_raw)
    bad = ~np.isfinite(sp) | (sp <= 0) | (sp > MAX_SPACING)
    for i in map(int, np.flatnonzero(bad)):
        problems.add(f"voxel spacing must be a positive number of Å, got {sp_raw.iloc[i]!r}", line=int(line[i]),
                     field="voxel_spacing", kind="bad spacing")
    if own:
        problems.raise_if_any()
    return pd.DataFrame({"tomo_id": ids.to_numpy(dtype=object), "Z": shape["Z"], "Y": shape["Y"], "X": shape["X"],
                         "voxel_spacing": np.where(bad, 1.0, sp)})


def check_picks(df: pd.DataFrame, tomograms: pd.DataFrame, class_names: Iterable[str], *,
                source: str | Path | None = None, lines: Sequence[int] | None = None,
                problems: _Problems | None = None) -> pd.DataFrame:
    """The normalized picks table (``STORED_PICK_COLUMNS``), checked against the tomograms' frames."""
    own = problems is None
    problems = problems or _Problems(source)
    missing = [c for c in PICK_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"missing column(s) {missing}; expected {PICK_COLUMNS}", file=source)
    line = _lines(len(df), lines)
    ids = _text(df["tomo_id"]).to_numpy(dtype=object)
    particle = _text(df["particle"]).str.strip().to_numpy(dtype=object)
    known = set(class_names)
    frame = tomograms.set_index("tomo_id")
    in_tomos = pd.Index(frame.index).get_indexer(ids)
    for i in np.flatnonzero(in_tomos < 0):
        problems.add(f"tomogram {ids[i]!r} is not in the version's tomograms", line=int(line[i]), field="tomo_id",
                     kind="unknown tomogram")
    for i in np.flatnonzero(~pd.Series(particle).isin(known).to_numpy()):
        what = "empty particle class" if not particle[i] else f"particle class {particle[i]!r} is not one of " \
            f"the version's classes {sorted(known)}"
        problems.add(what, line=int(line[i]), field="particle", kind="unknown class")
    coords = {}
    shapes = frame[["Z", "Y", "X"]].to_numpy(dtype=float)
    for axis, c in enumerate(("z", "y", "x")):
        raw = df[c]
        v = _numeric(raw)
        nonfinite = ~np.isfinite(v)
        for i in np.flatnonzero(nonfinite):
            problems.add(f"not a finite number: {raw.iloc[i]!r}", line=int(line[i]), field=c, kind="not a number")
        ok = (in_tomos >= 0) & ~nonfinite
        limit = np.full(len(v), np.inf)
        limit[in_tomos >= 0] = shapes[in_tomos[in_tomos >= 0], axis]
        outside = ok & ((v < 0) | (v >= limit))
        for i in np.flatnonzero(outside):
            problems.add(f"{c}={v[i]:g} is outside the tomogram [0, {int(limit[i])})", line=int(line[i]), field=c,
                         kind="outside the volume")
        coords[c] = np.where(nonfinite, 0.0, v)
    if own:
        problems.raise_if_any()
    out = pd.DataFrame({"tomo_id": ids, "particle": particle, "z": coords["z"], "y": coords["y"],
                        "x": coords["x"]})
    for c in PROVENANCE_COLUMNS:
        out[c] = (_text(df[c]).to_numpy(dtype=object) if c in df.columns
                  else np.full(len(out), "", dtype=object))
    out[TRANSFORM_COLUMN] = _transforms(df, line, problems)
    if own:
        problems.raise_if_any()
    return out


@dataclass(frozen=True, eq=False)
class LabelSet:
    """A label version's content: tomograms, picks and classes (see the module docstring)."""

    tomograms: pd.DataFrame
    picks: pd.DataFrame
    classes: tuple[ParticleClass, ...]

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def build(cls, tomograms: pd.DataFrame, picks: pd.DataFrame | None = None,
              classes: Iterable[ParticleClass | str] | None = None, *, registry: ClassRegistry | None = None,
              source: str | Path | None = None, tomogram_lines: Sequence[int] | None = None,
              pick_lines: Sequence[int] | None = None) -> LabelSet:
        """Validate and build. ``classes`` default to the picks' classes looked up in ``registry``
        (built-ins by default); class names are resolved there too."""
        registry = registry or ClassRegistry()
        picks = picks if picks is not None else empty_picks()
        problems = _Problems(source)
        tomos = check_tomograms(tomograms, source=source, lines=tomogram_lines, problems=problems)
        if classes is None:
            names = list(dict.fromkeys(_text(picks["particle"]).str.strip())) if len(picks) else ["motor"]
            resolved = [registry[n] for n in names if n in registry]
        else:
            resolved = [c if isinstance(c, ParticleClass) else registry[c] for c in classes]
        names = [c.name for c in resolved]
        if len(set(names)) != len(names):
            raise InputError(f"class names repeat: {names}", file=source, field="classes")
        pk = check_picks(picks, tomos, names, source=source, lines=pick_lines, problems=problems)
        problems.raise_if_any()
        return cls(tomograms=tomos, picks=pk, classes=tuple(resolved))

    @classmethod
    def from_canonical(cls, table: pd.DataFrame, *, source: str | Path | None = None) -> LabelSet:
        """A motor version from a canonical motor table (already validated: ``byu.labels.table``)."""
        tomos = table.loc[:, TOMOGRAM_COLUMNS].reset_index(drop=True)
        rows = [(r.tomo_id, m[0], m[1], m[2]) for r in table.itertuples(index=False) for m in r.motor_zyx]
        arr = np.asarray([r[1:] for r in rows], dtype=float).reshape(-1, 3)
        picks = pd.DataFrame({"tomo_id": np.asarray([r[0] for r in rows], dtype=object),
                              "particle": np.full(len(rows), "motor", dtype=object),
                              "z": arr[:, 0], "y": arr[:, 1], "x": arr[:, 2]})
        return cls.build(tomos, picks, [MOTOR], source=source)

    # ------------------------------------------------------------------------------------------ views
    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def cls(self, name: str) -> ParticleClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise InputError(f"class {name!r} is not one of this version's classes {self.class_names}", field="particle")

    @property
    def is_motor_only(self) -> bool:
        return self.class_names == ["motor"]

    @property
    def tomo_ids(self) -> list[str]:
        return list(self.tomograms["tomo_id"])

    def frame(self, tomo_id: str) -> tuple[tuple[int, int, int], float]:
        """``((Z, Y, X), voxel_spacing)`` of a tomogram's label frame."""
        row = self.tomograms[self.tomograms["tomo_id"] == tomo_id]
        if row.empty:
            raise InputError(f"tomogram {tomo_id!r} is not in this version", field="tomo_id")
        r = row.iloc[0]
        return (int(r.Z), int(r.Y), int(r.X)), float(r.voxel_spacing)

    def spacing_of(self) -> dict[str, float]:
        return dict(zip(self.tomograms["tomo_id"], self.tomograms["voxel_spacing"].astype(float), strict=True))

    def picks_angstrom(self) -> np.ndarray:
        """(n, 3) positions of every pick in Å (voxel x its tomogram's spacing), in picks order."""
        spacing = self.picks["tomo_id"].map(self.spacing_of()).to_numpy(dtype=float)
        return self.picks[["z", "y", "x"]].to_numpy(dtype=float) * spacing[:, None]

    def counts(self) -> dict[str, int]:
        """``tomograms``, ``picks``, ``motors`` and ``tomograms_with_motors`` (0 without a motor class)."""
        motors = self.picks[self.picks["particle"] == "motor"]
        return {"tomograms": int(len(self.tomograms)), "picks": int(len(self.picks)), "motors": int(len(motors)),
                "tomograms_with_motors": int(motors["tomo_id"].nunique())}

    def class_counts(self) -> dict[str, int]:
        """Picks per class (every class of the version, zero included)."""
        vc = self.picks["particle"].value_counts()
        return {c: int(vc.get(c, 0)) for c in self.class_names}

    def per_tomogram_counts(self) -> pd.DataFrame:
        """Picks per tomogram (rows in table order) and class (columns in class order), zeros included."""
        table = pd.crosstab(self.picks["tomo_id"], self.picks["particle"]) if len(self.picks) else pd.DataFrame()
        table = table.reindex(index=self.tomo_ids, columns=self.class_names, fill_value=0).fillna(0)
        return table.astype("int64")

    def motor_counts(self) -> dict[str, int]:
        """Motors per tomogram (every tomogram, zeros included)."""
        counts = self.picks.loc[self.picks["particle"] == "motor", "tomo_id"].value_counts()
        return {t: int(counts.get(t, 0)) for t in self.tomograms["tomo_id"]}

    def groups(self) -> dict[str, pd.DataFrame]:
        """Picks per tomogram (every tomogram; empty frames for those without picks), picks order kept."""
        g = {t: df for t, df in self.picks.groupby("tomo_id", sort=False)}
        return {t: g.get(t, self.picks.iloc[0:0]) for t in self.tomograms["tomo_id"]}

    # ------------------------------------------------------------------------------------------ changes
    def replace(self, *, tomograms: pd.DataFrame | None = None, picks: pd.DataFrame | None = None,
                classes: Iterable[ParticleClass] | None = None) -> LabelSet:
        """A new, validated LabelSet with the given parts replaced."""
        return LabelSet.build(self.tomograms if tomograms is None else tomograms,
                              self.picks if picks is None else picks,
                              self.classes if classes is None else tuple(classes))

    def select(self, tomo_ids: Iterable[str]) -> LabelSet:
        """Only these tomograms (in this version's order) and their picks."""
        keep = set(tomo_ids)
        return LabelSet(tomograms=self.tomograms[self.tomograms["tomo_id"].isin(keep)].reset_index(drop=True),
                        picks=self.picks[self.picks["tomo_id"].isin(keep)].reset_index(drop=True),
                        classes=self.classes)

    def equals(self, other: LabelSet) -> bool:
        return (self.class_names == other.class_names and self.tomograms.equals(other.tomograms)
                and self.picks.reset_index(drop=True).equals(other.picks.reset_index(drop=True)))


def merge_classes(*groups: Iterable[ParticleClass]) -> tuple[ParticleClass, ...]:
    """Classes of several versions in first-seen order; the same name with other settings is an error."""
    out: dict[str, ParticleClass] = {}
    for group in groups:
        for c in group:
            if c.name in out and out[c.name] != c:
                raise InputError(f"class {c.name!r} has different settings in the versions combined: "
                                 f"{out[c.name].model_dump()} vs {c.model_dump()}", field="classes")
            out.setdefault(c.name, c)
    return tuple(out.values())


__all__ = [
    "LabelSet", "OPTIONAL_PICK_COLUMNS", "PICK_COLUMNS", "PROVENANCE_COLUMNS", "STORED_PICK_COLUMNS",
    "TOMOGRAM_COLUMNS", "TRANSFORM_COLUMN", "check_picks", "check_tomograms", "empty_picks", "empty_tomograms",
    "format_transform", "merge_classes", "parse_transform",
]

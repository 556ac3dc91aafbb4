"""Picks of your own tomograms, as you have them: a CSV table or a RELION STAR file (RELION 4 or 5 style).

:func:`read_pick_rows` reads a file into :class:`PickRows`: per row the tomogram name and the class as written,
the three coordinates with the convention that turns them into voxels of the tomogram (:meth:`PickRows.to_voxels`),
and the file line, so every problem names file, line and field. Nothing is matched to tomograms here
(:mod:`byu.importer.ingest` does that, once the tomograms' shapes and spacings are known).

**CSV** (comma-separated, a header line): a tomogram column ``tomo_id`` (or ``tomogram``, ``rlnTomoName``,
``experiment``), the coordinate columns ``x``, ``y``, ``z`` (any order, any case), optionally a class column
``particle`` (or ``particle_type``). Coordinates (``coordinates``):

- ``voxel`` (the default): voxels of the ORIGINAL tomogram file, 0-based, a voxel's centre at a whole number
  (numpy / napari / mrcfile indexing: ``x`` is the fastest axis of the file);
- ``angstrom``: Å from the centre of the first voxel, ``voxel = Å / spacing`` (the portal's and copick's rule);
- with ``auto`` (the default), a ``voxel_spacing`` column (byu's own picks export) makes the coordinates voxels at
  that spacing (``Å = voxel x voxel_spacing``); without one, ``auto`` is ``voxel``.

**STAR** (RELION; read with teamtomo's ``starfile``): the ``data_particles`` loop (or the file's only loop), the
tomogram in ``rlnTomoName`` (a Warp ``.tomostar`` suffix is dropped when matching), the class in
``rlnClassNumber`` (mapped to byu classes by the caller). Coordinates, the first that applies:

- **RELION 5** ``rlnCenteredCoordinate{X,Y,Z}Angst``: Å from the tomogram centre. RELION decenters them as
  ``pixel = Å / pixel size + size / 2`` (``ParticleSet::getParticleCoordDecenteredPixel``: ``tomo_centre =
  (w, h, d) / 2.0``, 0-based pixel indices), and copick uses the same centre (``shape / 2 x spacing``). Applied to
  the tomogram file (size ``N`` voxels at ``spacing`` Å) that is ``voxel = Å / spacing + N / 2``: the origin is
  voxel ``N / 2``, the voxel RELION's reconstruction rotates about (``int(N / 2)``) whenever ``N`` is even, as
  RELION's tomograms are. (Not ``(N - 1) / 2``, the geometric centre of the grid, which RELION does not use: for an
  even ``N`` that reading would move every pick by half a voxel.)
- **RELION 4** ``rlnCoordinate{X,Y,Z}``: pixels. When the file states the tilt-series pixel size
  (``rlnTomoTiltSeriesPixelSize``, in the particle row or its optics group) the coordinates are pixels of that
  size, as RELION 4 and 5 define them (``Å = pixel x size``; picks made on a binned tomogram then still land right);
  otherwise (or with ``coordinates="voxel"``) they are voxels of the tomogram file. ``rlnDetectorPixelSize`` and
  ``rlnImagePixelSize`` (micrograph and subtomogram pixels) are ignored.

In both, RELION's refined shifts ``rlnOrigin{X,Y,Z}Angst`` are subtracted when present (RELION's own convention:
``position = coordinate - origin``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from byu.errors import InputError
from byu.labels.formats import LINE, MAX_PICKS_BYTES, _read_raw
from byu.labels.model import _Problems

COORDINATES = ("auto", "voxel", "angstrom")
PICK_FORMATS = ("auto", "csv", "star")

CSV_TOMOGRAM_COLUMNS = ("tomo_id", "tomogram", "rlnTomoName", "experiment")
CSV_CLASS_COLUMNS = ("particle", "particle_type")
STAR_BLOCK = "particles"
RELION5_COLUMNS = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst")
RELION4_COLUMNS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
ORIGIN_COLUMNS = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
TILT_SERIES_PIXEL = "rlnTomoTiltSeriesPixelSize"
STAR_NAME_SUFFIXES = (".tomostar",)


@dataclass
class PickRows:
    """Picks as a file gives them, before they are matched to tomograms (see the module docstring).

    ``xyz`` are the three coordinates as numbers (``NaN`` where a cell is not a finite number: that row is in
    ``problems``); ``unit_A`` is Å per coordinate unit per row (``NaN``: voxels of the tomogram itself);
    ``origin_A`` the shift (Å, x/y/z) subtracted; ``centered``: the origin is the tomogram centre (RELION 5).
    """

    path: Path
    format: str  # "csv" | "star"
    convention: str  # "voxel" | "angstrom" | "frame" | "relion4" | "relion4-tilt-series" | "relion5"
    tomogram_field: str
    names: list[str]
    class_field: str | None
    classes: list[str] | None  # the class column as text (None: the file has none)
    xyz_fields: tuple[str, str, str]
    xyz_text: list[tuple[str, str, str]]
    xyz: np.ndarray
    unit_A: np.ndarray
    origin_A: np.ndarray
    centered: bool
    lines: list[int | None]
    problems: list[InputError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def row_label(self, i: int) -> str:
        """``""``, or ``"particle k: "`` when the file line of row ``i`` is unknown."""
        return "" if self.lines[i] is not None else f"particle {i + 1}: "

    def to_voxels(self, rows: np.ndarray, shape_zyx: Sequence[int], spacing: float) -> np.ndarray:
        """``(len(rows), 3)`` voxel coordinates ``(z, y, x)`` of the tomogram (``shape_zyx`` at ``spacing`` Å)
        for rows ``rows``."""
        xyz = self.xyz[rows]
        unit = self.unit_A[rows]
        origin = self.origin_A[rows]
        own = np.isnan(unit)
        out = np.empty_like(xyz)
        # voxels of the tomogram itself: no round trip through Å, so whole voxels stay whole
        out[own] = xyz[own] - origin[own] / spacing
        out[~own] = (xyz[~own] * unit[~own, None] - origin[~own]) / spacing
        if self.centered:
            out += np.asarray(shape_zyx, dtype=float)[::-1] / 2.0
        return out[:, ::-1]

    def hint(self) -> str:
        """How the coordinates were read (for an "outside the tomogram" error)."""
        return {
            "voxel": "x, y, z are read as voxels of the original tomogram; if they are in Å, pass "
                     "--coordinates angstrom",
            "angstrom": "x, y, z are read as Å from the first voxel (voxel = Å / voxel spacing)",
            "frame": "x, y, z are read as voxels at the row's voxel_spacing",
            "relion4": "rlnCoordinateX/Y/Z are read as voxels of the tomogram file (the STAR file states no "
                       f"{TILT_SERIES_PIXEL})",
            "relion4-tilt-series": f"rlnCoordinateX/Y/Z are read as tilt-series pixels of {TILT_SERIES_PIXEL}; "
                                   "if they are voxels of the tomogram file, pass --coordinates voxel",
            "relion5": "rlnCenteredCoordinateX/Y/ZAngst are read as Å from the tomogram centre (voxel N/2)",
        }[self.convention]


# ------------------------------------------------------------------------------------------------ helpers
def _cell(value: Any, missing: str = "nan") -> str:
    """A cell as the user wrote it; a missing one (a short CSV row; a STAR ``nan`` that starfile read as NaN) as
    ``missing``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return str(value).strip()


def _numbers(texts: Sequence[str], *, fld: str, problems: _Problems,
             lines: Sequence[int | None]) -> np.ndarray:
    out = np.full(len(texts), np.nan)
    for i, text in enumerate(texts):
        try:
            v = float(text)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v):
            what = "empty" if text == "" else f"not a finite number: {text!r}"
            where = "" if lines[i] is not None else f"particle {i + 1}: "
            problems.add(where + what, line=lines[i], field=fld, kind="not a finite number")
            continue
        out[i] = v
    return out


def class_key(text: str) -> str:
    """A class cell or ``--class-map`` key as compared: stripped, and ``2.0`` read as ``2``."""
    t = str(text).strip()
    try:
        v = float(t)
    except ValueError:
        return t
    return str(int(v)) if math.isfinite(v) and v == int(v) else t


def parse_class_map(value: str | Mapping[Any, str] | None) -> dict[str, str] | None:
    """``"1=ribosome,2=apo-ferritin"`` (or a mapping) as ``{class cell: byu class name}``."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        items = [(class_key(str(k)), str(v).strip()) for k, v in value.items()]
    else:
        items = []
        for part in (p.strip() for p in str(value).split(",")):
            if not part:
                continue
            key, sep, name = part.partition("=")
            if not sep or not key.strip() or not name.strip():
                raise InputError(f"{part!r} is not KEY=CLASS (e.g. 1=ribosome,2=apo-ferritin)", field="--class-map")
            items.append((class_key(key), name.strip()))
    if not items:
        raise InputError("no KEY=CLASS pairs given (e.g. 1=ribosome,2=apo-ferritin)", field="--class-map")
    out: dict[str, str] = {}
    for key, name in items:
        if key in out and out[key] != name:
            raise InputError(f"key {key!r} is mapped twice ({out[key]!r} and {name!r})", field="--class-map")
        out[key] = name
    return out


def detect_format(path: Path, fmt: str = "auto") -> str:
    """``csv`` or ``star``: ``fmt`` when given, else by suffix (``.star``), else by content (a ``data_`` block)."""
    if fmt not in PICK_FORMATS:
        raise InputError(f"picks format must be one of {', '.join(PICK_FORMATS)}, got {fmt!r}",
                         field="picks_format")
    if fmt != "auto":
        return fmt
    if path.suffix.lower() == ".star":
        return "star"
    if path.suffix.lower() in (".csv", ".txt"):
        return "csv"
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return "csv"
    return "star" if re.search(r"^\s*data_", head, flags=re.MULTILINE) else "csv"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError("picks file not found", file=path)
    if path.is_dir():
        raise InputError("is a directory; give the picks file (CSV or STAR)", file=path)
    size = path.stat().st_size
    if size > MAX_PICKS_BYTES:
        raise InputError(f"a picks file of {size >> 20} MiB is larger than the {MAX_PICKS_BYTES >> 20} MiB byu "
                         "reads in one go; split it (by tomogram) and import the parts as versions", file=path)


def read_pick_rows(path: str | Path, *, fmt: str = "auto", coordinates: str = "auto") -> PickRows:
    """Read a CSV or STAR picks file (see the module docstring). File-level problems (unreadable, missing columns)
    raise an :class:`InputError`; row problems are collected in ``problems`` (so the caller reports them with its
    own, all at once)."""
    path = Path(path)
    if coordinates not in COORDINATES:
        raise InputError(f"coordinates must be one of {', '.join(COORDINATES)}, got {coordinates!r}",
                         field="--coordinates")
    _check_file(path)
    kind = detect_format(path, fmt)
    return _read_star(path, coordinates) if kind == "star" else _read_csv(path, coordinates)


# ------------------------------------------------------------------------------------------------ CSV
def _one_column(columns: Sequence[str], names: Sequence[str], *, path: Path, what: str,
                required: bool) -> str | None:
    lower = {n.lower() for n in names}
    found = [c for c in columns if c.lower() in lower]
    if len(found) > 1:
        raise InputError(f"several {what} columns {found}: keep one", file=path, row=1)
    if not found and required:
        raise InputError(f"no {what} column: expected one of {list(names)} (columns: {list(columns)})",
                         file=path, row=1)
    return found[0] if found else None


def _read_csv(path: Path, coordinates: str) -> PickRows:
    raw = _read_raw(path)
    columns = [c for c in raw.columns if c != LINE]
    tomo_col = _one_column(columns, CSV_TOMOGRAM_COLUMNS, path=path, what="tomogram", required=True)
    class_col = _one_column(columns, CSV_CLASS_COLUMNS, path=path, what="class", required=False)
    axes = [_one_column(columns, (a,), path=path, what=f"coordinate {a!r}", required=True) for a in "xyz"]
    xyz_fields = (str(axes[0]), str(axes[1]), str(axes[2]))
    spacing_col = _one_column(columns, ("voxel_spacing",), path=path, what="voxel_spacing", required=False)
    lines: list[int | None] = [int(v) for v in raw[LINE]]
    problems = _Problems(path)
    texts = {c: [_cell(v, "") for v in raw[c]] for c in (*xyz_fields, tomo_col)}
    xyz = np.column_stack([_numbers(texts[c], fld=c, problems=problems, lines=lines)
                           for c in xyz_fields]) if len(raw) else np.empty((0, 3))
    n = len(raw)
    unit = np.full(n, np.nan)
    convention = "voxel" if coordinates in ("auto", "voxel") else "angstrom"
    if coordinates == "angstrom":
        unit[:] = 1.0
    elif coordinates == "auto" and spacing_col is not None:
        convention = "frame"
        unit = _numbers([_cell(v, "") for v in raw[spacing_col]], fld=spacing_col, problems=problems,
                        lines=lines)
        for i in map(int, np.flatnonzero(np.isfinite(unit) & (unit <= 0))):
            problems.add(f"voxel spacing must be a positive number of Å, got {raw[spacing_col].iloc[i]!r}",
                         line=lines[i], field=spacing_col, kind="bad spacing")
            unit[i] = np.nan
        unit = np.where(np.isfinite(unit), unit, 1.0)  # a bad row is reported; any value keeps the rest going
    names = texts[str(tomo_col)]
    for i, name in enumerate(names):
        if not name:
            problems.add("empty tomogram name", line=lines[i], field=str(tomo_col), kind="empty tomogram")
    rows = PickRows(
        path=path, format="csv", convention=convention, tomogram_field=str(tomo_col), names=names,
        class_field=class_col, classes=[_cell(v, "") for v in raw[class_col]] if class_col else None,
        xyz_fields=xyz_fields, xyz_text=list(zip(*(texts[c] for c in xyz_fields), strict=True)), xyz=xyz,
        unit_A=unit, origin_A=np.zeros((n, 3)), centered=False, lines=lines, problems=problems.errors,
    )
    return rows


# ------------------------------------------------------------------------------------------------ STAR
def _star_blocks(path: Path, names: Sequence[str]) -> dict[str, Any]:
    import starfile

    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=list(names))
    except pd.errors.ParserError as exc:  # pandas counts the lines of the loop's rows, not of the file
        msg = str(exc).replace("Error tokenizing data. C error: ", "").strip()
        msg = re.sub(r" in line (\d+)", r" in row \1 of a loop (counted from its first row)", msg)
        raise InputError(f"not a readable STAR file: {msg[:200]}", file=path) from None
    except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable STAR file: {type(exc).__name__}: {str(exc)[:200]}", file=path) from None
    if not isinstance(blocks, dict):
        blocks = {getattr(blocks, "name", ""): blocks}
    return blocks


def _loop_lines(path: Path, block: str, n_rows: int) -> list[int | None]:
    """The file line of every row of loop ``data_<block>``, as ``starfile`` reads it: the lines after the loop's
    ``_label`` lines, up to the next ``data_``, that are neither blank nor a ``#`` comment. ``None`` for every row
    when that count is not the table's (a loop written across lines)."""
    lines: list[int] = []
    state = "seek"
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, raw in enumerate(fh, start=1):
            line = raw.strip()
            if state == "seek":
                if line.startswith("data_") and line[5:] == block:
                    state = "block"
            elif state == "block":
                if line.startswith("loop_"):
                    state = "labels"
                elif line.startswith("data_"):
                    break
            elif state == "labels":
                if line.startswith("_"):
                    continue
                state = "rows"
            if state == "rows":
                if line.startswith("data_"):
                    break
                if line and not line.startswith("#"):
                    lines.append(number)
    if len(lines) != n_rows:
        return [None] * n_rows
    return list(lines)


def _optics_pixel_sizes(blocks: Mapping[str, Any], table: pd.DataFrame, path: Path) -> np.ndarray | None:
    """Per particle, the tilt-series pixel size the file states (its own column, else its optics group's)."""
    n = len(table)
    if TILT_SERIES_PIXEL in table.columns:
        return pd.to_numeric(table[TILT_SERIES_PIXEL], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    optics = blocks.get("optics")
    if not isinstance(optics, pd.DataFrame) or TILT_SERIES_PIXEL not in optics.columns or optics.empty:
        return None
    sizes = pd.to_numeric(optics[TILT_SERIES_PIXEL], errors="coerce")
    if len(optics) == 1:
        return np.full(n, float(sizes.iloc[0]) if pd.notna(sizes.iloc[0]) else np.nan)
    if "rlnOpticsGroup" not in optics.columns or "rlnOpticsGroup" not in table.columns:
        raise InputError(f"the optics table has {len(optics)} groups but the particles do not say which is theirs "
                         "(rlnOpticsGroup)", file=path, field="rlnOpticsGroup")
    by_group = dict(zip(optics["rlnOpticsGroup"].map(class_key), sizes, strict=True))
    return np.array([by_group.get(class_key(_cell(g)), np.nan) for g in table["rlnOpticsGroup"]], dtype=float)


def _read_star(path: Path, coordinates: str) -> PickRows:
    if coordinates == "angstrom":
        raise InputError("--coordinates angstrom is for CSV files: a STAR file's columns state their own unit "
                         "(rlnCoordinateX/Y/Z pixels, rlnCenteredCoordinateX/Y/ZAngst Å)", file=path,
                         field="--coordinates")
    text_columns = ["rlnTomoName", "rlnClassNumber", *RELION5_COLUMNS, *RELION4_COLUMNS, *ORIGIN_COLUMNS]
    blocks = _star_blocks(path, text_columns)
    loops = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    if STAR_BLOCK in loops:
        block = STAR_BLOCK
    elif len(loops) == 1:
        block = next(iter(loops))
    else:
        shown = ", ".join(f"data_{k}" for k in blocks) or "none"
        raise InputError(f"no data_{STAR_BLOCK} loop (blocks: {shown})", file=path)
    table = loops[block].reset_index(drop=True)
    columns = [str(c) for c in table.columns]
    if "rlnTomoName" not in columns:
        raise InputError(f"data_{block} has no rlnTomoName column (columns: {columns})", file=path)
    if set(RELION5_COLUMNS) <= set(columns) and coordinates == "auto":
        convention, xyz_fields = "relion5", RELION5_COLUMNS
    elif set(RELION4_COLUMNS) <= set(columns):
        convention, xyz_fields = "relion4", RELION4_COLUMNS
    elif set(RELION5_COLUMNS) <= set(columns):
        raise InputError("--coordinates voxel reads rlnCoordinateX/Y/Z, which this file does not have (it has "
                         "rlnCenteredCoordinateX/Y/ZAngst: leave --coordinates out)", file=path,
                         field="--coordinates")
    else:
        raise InputError(f"data_{block} has neither rlnCenteredCoordinateX/Y/ZAngst (RELION 5) nor "
                         f"rlnCoordinateX/Y/Z (RELION 4) columns (columns: {columns})", file=path)
    n = len(table)
    lines = _loop_lines(path, block, n)
    problems = _Problems(path)
    texts = {c: [_cell(v) for v in table[c]] for c in (*xyz_fields, "rlnTomoName")}
    xyz = np.column_stack([_numbers(texts[c], fld=c, problems=problems, lines=lines)
                           for c in xyz_fields]) if n else np.empty((0, 3))
    origin = np.zeros((n, 3))
    if set(ORIGIN_COLUMNS) <= set(columns) and n:
        origin = np.column_stack([_numbers([_cell(v) for v in table[c]], fld=c, problems=problems,
                                           lines=lines) for c in ORIGIN_COLUMNS])
        origin = np.where(np.isfinite(origin), origin, 0.0)
    unit = np.full(n, np.nan)
    if convention == "relion5":
        unit[:] = 1.0
    elif coordinates == "auto":
        sizes = _optics_pixel_sizes(blocks, table, path)
        if sizes is not None:
            convention = "relion4-tilt-series"
            bad = ~np.isfinite(sizes) | (sizes <= 0)
            for i in map(int, np.flatnonzero(bad)):
                problems.add(f"{TILT_SERIES_PIXEL} of this particle is not a positive number of Å (pass "
                             "--coordinates voxel to read rlnCoordinateX/Y/Z as voxels of the tomogram)",
                             line=lines[i], field=TILT_SERIES_PIXEL, kind="bad pixel size")
            unit = np.where(bad, 1.0, sizes)
    names = []
    for name in texts["rlnTomoName"]:
        for suffix in STAR_NAME_SUFFIXES:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
        names.append(name)
    for i, name in enumerate(names):
        if not name or name == "nan":
            problems.add(("" if lines[i] is not None else f"particle {i + 1}: ") + "empty tomogram name",
                         line=lines[i], field="rlnTomoName", kind="empty tomogram")
    has_class = "rlnClassNumber" in columns
    return PickRows(
        path=path, format="star", convention=convention, tomogram_field="rlnTomoName", names=names,
        class_field="rlnClassNumber" if has_class else None,
        classes=[_cell(v) for v in table["rlnClassNumber"]] if has_class else None,
        xyz_fields=(xyz_fields[0], xyz_fields[1], xyz_fields[2]),
        xyz_text=list(zip(*(texts[c] for c in xyz_fields), strict=True)), xyz=xyz, unit_A=unit, origin_A=origin,
        centered=convention == "relion5", lines=lines, problems=problems.errors,
    )


__all__ = ["COORDINATES", "PICK_FORMATS", "PickRows", "class_key", "detect_format", "parse_class_map",
           "read_pick_rows"]

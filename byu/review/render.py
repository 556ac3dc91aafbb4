"""Case images for review: one JPEG per row of ``cases.csv``.

**Single-particle cases** (``FN``, ``FP``): a header naming the case, the tags to use and where to place a point
when no candidate is right, then one row per candidate (``k = 0`` the labeled pick of an FN case, ``k = 1..K``
predictions) with five panels around that candidate, in the stored (resampled) frame of the tomogram, and a sixth
when the model's heatmap is given:

    label | XY at z-dz | XY at z | XY at z+dz | XZ (x right, z down) | YZ (y right, z down) [| model: XY at z]

Rings mark the candidates at their class's particle radius: the case's focus candidate in yellow, the other
candidates in cyan, each with its number. A thick ring means the point lies in that panel's plane (within one
particle radius); a thin ring means it is inside the crop box but off the plane. The tomogram's other labeled picks
(context, not taggable) are small green squares holding their class's number from the legend, never text over the
image: a mark that would overlap one already drawn is a plain dot. Class names are written in full (row labels and
legend). The model panel is the central XY slice with the heatmap as a translucent colour map (what the model saw).

**Galleries** (``GL`` labels to confirm, ``GP`` unlabeled predictions): up to ``gallery_size`` crops of one class
in a grid, each three small views (XY, XZ, YZ through the item) with a ring at the class's radius and the crop's
number, its tomogram and the model's confidence below; the header says what an untagged crop means.

Voxels outside the volume are a flat dark purple. Crop sizes follow the largest particle shown (motors: 128 stored
voxels, 2048 Å at 16 Å; a 60 Å apo-ferritin: 46 voxels) unless ``crop`` is given. Coordinates in ``cases.csv`` are
in the item's label frame; they reach the stored grid through :func:`byu.tomo.grid.frame_to_stored`, the mapping
the resampling itself uses. Only the slices a case needs are decoded, through a small per-tomogram LRU cache.
Rendering is deterministic: same inputs, same bytes. With ``geometry_dir``, every image also gets
``<image>.json``: each panel's pixel box and the stored-voxel plane it shows, so a point placed on the image maps
back to the tomogram (:func:`point_to_frame`).
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from byu.atomic import write_bytes, write_json
from byu.errors import InputError, InputErrors, NotFoundError
from byu.labels.classes import BUILTIN_CLASSES, ParticleClass
from byu.review.cases import Candidate, Case, load_case_rows
from byu.tomo.grid import frame_to_stored, stored_to_frame
from byu.tomo.io import META_NAME, TomoMeta, read_meta, read_slice

# ----------------------------------------------------------------------------------------------
# Look

FOCUS_COLOUR = (255, 215, 0)  # yellow
OTHER_COLOUR = (0, 215, 255)  # cyan
LABEL_COLOUR = (90, 255, 90)  # green: labeled picks that are not candidates (context)
PAD_COLOUR = (48, 28, 64)  # outside the volume
BACKGROUND = (24, 24, 24)
TEXT_COLOUR = (235, 235, 235)
DIM_TEXT = (170, 170, 170)
TICK_COLOUR = (200, 200, 200)

JPEG_QUALITY = 85
DEFAULT_CROP = 128  # stored voxels (2048 Å at the 16 Å working spacing): the largest panel
MIN_CROP = 32
CROP_PER_RADIUS = 12.0  # panel width in particle radii (a motor: 3000 Å, capped at DEFAULT_CROP)
DEFAULT_PANEL_PX = 224
DEFAULT_THUMB_PX = 128
GALLERY_COLUMNS = 4
DEFAULT_DZ = 16  # stored slices between the three XY panels (at most crop / 8)
DEFAULT_RADIUS_A = 250.0  # ring radius of a class the case does not describe (a motor's)
HEATMAP_ALPHA = 0.55
MARK_PX = 13  # side of a context mark (a class number in a small square)

COLUMNS = ("z−{dz}", "z", "z+{dz}", "XZ  (x →, z ↓)", "YZ  (y →, z ↓)")
MODEL_COLUMN = "model (z)"


def instructions(case: Case, classes: Sequence[str]) -> str:
    """The tag line of a case image."""
    thing = "motor" if list(classes) == ["motor"] else case.particle if case.is_gallery else "particle"
    multi = len(classes) > 1
    if case.kind == "GL":
        return (f"Tags:  x<k> = crop k is not a real {thing}"
                + ("  ·  k:<class> = crop k is a <class>" if multi else "")
                + f"  ·  untagged crops are kept (ok = nothing to change)  ·  none = no crop is a {thing}"
                "  ·  unsure = second review")
    if case.kind == "GP":
        return (f"Tags:  k = crop k is a real {thing}" + ("  ·  k:<class> = it is a <class>" if multi else "")
                + "  ·  untagged crops are not particles (ok = nothing to add)  ·  unsure = second review")
    cls = "  ·  k:<class> = candidate k is a <class> (0:<class>: the label is)" if multi else ""
    if case.kind == "FN":
        return (f"Tags:  0 = keep the label as is  ·  k = candidate k is a real {thing} (several allowed){cls}  ·  "
                f"none = labeled {thing} 0 is not real  ·  unsure = second review")
    return (f"Tags:  k = candidate k is a real {thing} (several allowed){cls}  ·  0 or none = no {thing} here  ·  "
            "unsure = second review")


def click_instructions(case: Case, classes: Sequence[str]) -> str:
    """The second header line of a single-particle image: where no candidate is right, a click says where."""
    thing = "motor" if list(classes) == ["motor"] else "particle"
    label = "here" if len(classes) <= 1 else "here:<class>"
    what = {"FN": f"the labeled {thing} belongs there (0 + a point: keep it and add one there)",
            "FP": f"a real {thing} is there"}.get(case.kind, f"a {thing} is there")
    return (f"Where no candidate is right: place a '{label}' point on any panel = {what}  ·  "
            "several points = several particles")


def kind_text(case: Case) -> str:
    what = case.particle
    if case.kind == "GL":
        return f"{len(case.candidates)} labeled {what}s to confirm (most doubtful first)"
    if case.kind == "GP":
        return f"{len(case.candidates)} unlabeled {what} predictions (most believed first)"
    if case.kind == "FN":
        if case.reason == "unverified":
            return f"FN: labeled {what} (k=0) that looks least like the round's other {what} labels"
        why = "only a weak prediction" if case.reason == "weak" else "no prediction of its class"
        return f"FN: labeled {what} (k=0) the model does not confirm ({why})"
    return f"FP: predictions of {what} that match no label"


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans shipped with matplotlib (has Å, →, −); Pillow's bundled font otherwise.

    Cached per thread: render_cases draws from several threads and a FreeType face is not
    meant to be shared between them.
    """
    return _font_for_thread(size, bold, threading.get_ident())


@lru_cache(maxsize=128)
def _font_for_thread(size: int, bold: bool, _thread: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        import matplotlib

        name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
        return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size=size)


# ----------------------------------------------------------------------------------------------
# Classes and sizes


def class_radius(name: str, classes: Mapping[str, ParticleClass]) -> float:
    c = classes.get(name) or BUILTIN_CLASSES.get(name)
    return float(c.radius) if c is not None else DEFAULT_RADIUS_A


def case_crop(case: Case, classes: Mapping[str, ParticleClass], stored_spacing: float) -> tuple[int, int]:
    """``(crop, dz)`` in stored voxels for a case: ``CROP_PER_RADIUS`` radii of its largest class, even, between
    ``MIN_CROP`` and ``DEFAULT_CROP``; dz at most crop / 8."""
    largest = max(class_radius(n, classes) for n in case.classes)
    crop = int(round(CROP_PER_RADIUS * largest / stored_spacing / 2.0)) * 2
    crop = max(MIN_CROP, min(DEFAULT_CROP, crop))
    return crop, max(1, min(DEFAULT_DZ, crop // 8))


def row_label(candidate: Candidate, *, with_class: bool = False) -> str:
    """``"0: label (z,y,x)"`` for a labeled pick, ``"k: 0.87 (z,y,x)"`` for a prediction (label frame); with the
    class name after the number in multi-class rounds (``"2: ribosome 0.87 (z,y,x)"``)."""
    if candidate.source == "label":
        what = "label"
    else:
        what = "?" if candidate.conf is None else f"{candidate.conf:.2f}"
    if with_class:
        what = f"{candidate.particle} {what}"
    z, y, x = (int(round(v)) for v in (candidate.z, candidate.y, candidate.x))
    return f"{candidate.k}: {what} ({z},{y},{x})"


# ----------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class Layout:
    """Pixel geometry of a single-particle case image (public so tests and tools can find panels)."""

    n_rows: int
    panel_px: int = DEFAULT_PANEL_PX
    label_w: int = 230
    margin: int = 12
    gap: int = 6
    header_h: int = 142
    colhead_h: int = 26
    n_cols: int = 5  # 6 with the model panel

    @property
    def width(self) -> int:
        return self.margin * 2 + self.label_w + self.n_cols * self.panel_px + (self.n_cols - 1) * self.gap

    @property
    def height(self) -> int:
        return self.header_h + self.colhead_h + self.n_rows * (self.panel_px + self.gap) + self.margin

    def panel_origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left pixel of panel ``col`` (0..4, 5 the model panel) in candidate row ``row`` (0-based)."""
        x = self.margin + self.label_w + col * (self.panel_px + self.gap)
        y = self.header_h + self.colhead_h + row * (self.panel_px + self.gap)
        return x, y


@dataclass(frozen=True)
class GalleryLayout:
    """Pixel geometry of a gallery image: ``n`` crops in rows of ``columns``, three views each."""

    n: int
    thumb_px: int = DEFAULT_THUMB_PX
    columns: int = GALLERY_COLUMNS
    margin: int = 12
    gap: int = 4
    tile_gap: int = 14
    caption_h: int = 24
    header_h: int = 96

    @property
    def rows(self) -> int:
        return max(1, -(-self.n // self.columns))

    @property
    def tile_w(self) -> int:
        return 3 * self.thumb_px + 2 * self.gap

    @property
    def tile_h(self) -> int:
        return self.caption_h + self.thumb_px

    @property
    def width(self) -> int:
        return 2 * self.margin + self.columns * self.tile_w + (self.columns - 1) * self.tile_gap

    @property
    def height(self) -> int:
        return self.header_h + self.rows * (self.tile_h + self.tile_gap) + self.margin

    def view_origin(self, index: int, view: int) -> tuple[int, int]:
        """Top-left pixel of view ``view`` (0 XY, 1 XZ, 2 YZ) of crop ``index`` (0-based)."""
        r, c = divmod(index, self.columns)
        x = self.margin + c * (self.tile_w + self.tile_gap) + view * (self.thumb_px + self.gap)
        y = self.header_h + r * (self.tile_h + self.tile_gap) + self.caption_h
        return x, y


@dataclass(frozen=True)
class PanelGeometry:
    """What one panel of an image shows: its pixel box, the plane (``xy``, ``xz``, ``yz``) of a tomogram's stored
    grid, the stored voxel at the box's top-left corner (``origin``: z, y, x; the plane's own axis holds the
    plane's position) and the pixels per stored voxel."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels
    plane: str
    origin: tuple[float, float, float]
    scale: float
    k: int  # the candidate (row) or crop the panel belongs to
    tomo_id: str
    frame_spacing: float  # the label frame's Å per voxel (where clicks go back to)
    original_spacing: float
    stored_spacing: float


def point_to_frame(panel: PanelGeometry, x: float, y: float) -> np.ndarray:
    """The label-frame ``(z, y, x)`` of image pixel ``(x, y)`` inside ``panel`` (the inverse of drawing it)."""
    u = (x - panel.box[0]) / panel.scale - 0.5
    v = (y - panel.box[1]) / panel.scale - 0.5
    oz, oy, ox = panel.origin
    if panel.plane == "xy":
        stored = (oz, oy + v, ox + u)
    elif panel.plane == "xz":
        stored = (oz + v, oy, ox + u)
    else:
        stored = (oz + v, oy + u, ox)
    return stored_to_frame(stored, panel.frame_spacing, panel.original_spacing, panel.stored_spacing)


def read_geometry(path: str | Path) -> list[PanelGeometry]:
    """The panels of an image's geometry file (``<image>.json``)."""
    data = json.loads(Path(path).read_text())
    return [PanelGeometry(**{**p, "box": tuple(p["box"]), "origin": tuple(p["origin"])}) for p in data["panels"]]


def _window(center: int, half: int, size: int) -> tuple[slice, slice]:
    """Source and destination slices of a ``2*half`` window starting at ``center-half``, clipped."""
    lo, hi = center - half, center + half
    s0, s1 = max(lo, 0), min(hi, size)
    if s1 <= s0:
        return slice(0, 0), slice(0, 0)
    return slice(s0, s1), slice(s0 - lo, s1 - lo)


class SliceCache:
    """Z slices of one stored tomogram, decoded on demand, the last ``capacity`` kept (LRU).

    Share one between the cases of a tomogram (``render_case(..., slice_cache=...)``).
    """

    def __init__(self, directory: str | Path, meta: TomoMeta | None = None, *, capacity: int = 256) -> None:
        self.directory = Path(directory)
        meta = meta if meta is not None else read_meta(self.directory)
        self.meta = meta
        self.tomo_id = meta.tomo_id
        self.shape = meta.shape
        self.capacity = max(capacity, 1)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.reads = 0

    def get(self, z: int) -> np.ndarray:
        if z in self._cache:
            self._cache.move_to_end(z)
            return self._cache[z]
        plane = read_slice(self.directory, z)
        if plane.shape != tuple(self.shape[1:]):
            raise InputError(f"slice {z} has shape {plane.shape}, meta.json says {self.shape[1:]}",
                             file=self.directory / META_NAME, field="shape")
        self.reads += 1
        self._cache[z] = plane
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return plane


class _ArrayPlanes:
    """The same interface over an in-memory (or memory-mapped) (Z, Y, X) array."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = array.shape

    def get(self, z: int) -> np.ndarray:
        return self.array[z]


def _xy(planes: SliceCache | _ArrayPlanes, z: int, cy: int, cx: int, half: int) -> np.ndarray:
    out = np.full((2 * half, 2 * half), np.nan, dtype=np.float32)
    Z, Y, X = planes.shape
    if 0 <= z < Z:
        sy, dy = _window(cy, half, Y)
        sx, dx = _window(cx, half, X)
        out[dy, dx] = planes.get(z)[sy, sx]
    return out


def _xz(planes: SliceCache | _ArrayPlanes, cz: int, cy: int, cx: int, half: int, axis: int) -> np.ndarray:
    """Rows z = cz-half .. cz+half-1; ``axis`` 2: the XZ plane at y=cy, 1: the YZ plane at x=cx."""
    out = np.full((2 * half, 2 * half), np.nan, dtype=np.float32)
    Z, Y, X = planes.shape
    fixed, fixed_size = (cy, Y) if axis == 2 else (cx, X)
    if not 0 <= fixed < fixed_size:
        return out
    along, along_size = (cx, X) if axis == 2 else (cy, Y)
    src, dst = _window(along, half, along_size)
    sz, dz = _window(cz, half, Z)
    for i, z in zip(range(dz.start, dz.stop), range(sz.start, sz.stop), strict=True):
        plane = planes.get(z)
        out[i, dst] = plane[fixed, src] if axis == 2 else plane[src, fixed]
    return out


# ----------------------------------------------------------------------------------------------
# Drawing


def _stretch(panels: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Contrast-stretch panels together (1st..99.5th percentile of in-volume voxels) to RGB."""
    values = np.concatenate([p[np.isfinite(p)] for p in panels])
    lo, hi = (np.percentile(values, [1.0, 99.5]) if values.size else (0.0, 255.0))
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, lo + 0.5
    out = []
    for p in panels:
        valid = np.isfinite(p)
        grey = np.clip((np.where(valid, p, lo) - lo) * (255.0 / (hi - lo)), 0, 255)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        rgb[~valid] = PAD_COLOUR
        out.append(rgb.astype(np.float32))
    return out


def _overlay(rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Blend a [0, 1] heatmap crop over an RGB panel, alpha growing with the value."""
    from matplotlib import colormaps

    h = np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0)
    colours = colormaps["turbo"](0.1 + 0.8 * h)[..., :3] * 255.0  # blue..red, without turbo's dark ends
    alpha = (HEATMAP_ALPHA * h)[..., None]
    return rgb * (1.0 - alpha) + colours * alpha


@dataclass(frozen=True)
class _Mark:
    text: str  # the candidate's number (rings), or the class's number in the legend (context marks)
    zyx: np.ndarray  # stored frame
    colour: tuple[int, int, int]
    radius_vox: float  # ring radius in stored voxels (the class's particle radius)
    context: bool = False  # a labeled pick shown for context: a small numbered square, no ring


def _draw_ring(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, mark: _Mark, thick: bool,
               box: tuple[int, int, int, int], font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
               taken: list[tuple[float, float, float, float]]) -> None:
    x0, y0, x1, y1 = box
    width = 3 if thick else 1
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=mark.colour, width=width)
    # number at the ring's upper-right, kept inside the panel, never over another number
    tx = cx + r * 0.72 + 2
    ty = cy - r * 0.72 - getattr(font, "size", 10)
    bbox = draw.textbbox((0, 0), mark.text, font=font, stroke_width=2)
    tx = min(max(tx, x0 + 2), x1 - bbox[2] - 2)
    ty = min(max(ty, y0 + 2), y1 - bbox[3] - 2)
    here = (tx, ty, tx + bbox[2], ty + bbox[3])
    if any(_overlaps(here, t) for t in taken):
        return
    taken.append(here)
    draw.text((tx, ty), mark.text, font=font, fill=mark.colour, stroke_width=2, stroke_fill=(0, 0, 0))


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _draw_context(draw: ImageDraw.ImageDraw, cx: float, cy: float, mark: _Mark, thick: bool,
                  taken: list[tuple[float, float, float, float]]) -> None:
    """A labeled pick shown for context: a small square holding its class's legend number (a dot when off the
    plane, or where it would overlap a mark or number already drawn)."""
    h = MARK_PX / 2
    here = (cx - h, cy - h, cx + h, cy + h)
    if not thick or any(_overlaps(here, t) for t in taken):
        draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=mark.colour)
        return
    taken.append(here)
    draw.rectangle(here, fill=(0, 0, 0), outline=mark.colour, width=1)
    draw.text((cx, cy), mark.text, font=_font(MARK_PX - 3, bold=True), fill=mark.colour, anchor="mm")


def _composite(rgb: np.ndarray, panel_px: int) -> Image.Image:
    img = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")
    if img.size != (panel_px, panel_px):
        img = img.resize((panel_px, panel_px), Image.Resampling.BILINEAR)
    return img


def _check_options(*, crop: int | None, dz: int | None, panel_px: int) -> None:
    if crop is not None and (crop < 8 or crop % 2):
        raise ValueError(f"crop must be an even number of voxels >= 8, got {crop}")
    if panel_px < 32 or (dz is not None and dz < 1):
        raise ValueError(f"need panel_px >= 32 and dz >= 1, got {panel_px}, {dz}")


def _save(canvas: Image.Image, out_path: Path, quality: int, panels: list[PanelGeometry],
          geometry_dir: Path | None) -> Path:
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=quality, subsampling=0, optimize=False)
    write_bytes(out_path, buf.getvalue())
    if geometry_dir is not None:
        write_json(geometry_dir / f"{out_path.name}.json", {"image": out_path.name, "size": list(canvas.size),
                                                             "panels": [asdict(p) for p in panels]})
    return out_path


def _legend(names: Sequence[str]) -> dict[str, int]:
    """Each class's number on the context marks (1-based, in the order the case lists them)."""
    return {n: i + 1 for i, n in enumerate(names)}


def render_case(
    case_row: Mapping[str, Any] | Case,
    tomo_dir: str | Path,
    out_path: str | Path,
    *,
    heatmap: np.ndarray | None = None,
    crop: int | None = None,
    dz: int | None = None,
    panel_px: int = DEFAULT_PANEL_PX,
    classes: Mapping[str, ParticleClass] | None = None,
    quality: int = JPEG_QUALITY,
    slice_cache: SliceCache | None = None,
    geometry_dir: str | Path | None = None,
) -> Path:
    """Render one single-particle case (a ``cases.csv`` row) to a JPEG at ``out_path`` (written atomically).

    ``tomo_dir`` is the stored tomogram (``tomograms/<tomo_id>``). ``crop`` is the panel size in
    stored voxels (a cube of ``crop`` voxels around each candidate; XZ/YZ span ``z ± crop/2``;
    default from the classes shown, :func:`case_crop`), ``dz`` the stored-slice offset of the
    outer XY panels, ``panel_px`` the displayed panel size, ``classes`` the particle classes by
    name (ring radii; built-ins by default). ``heatmap`` is an optional (Z, Y, X) array in the stored
    frame with values in [0, 1], drawn as a sixth panel (the central slice under a translucent colour map).
    ``slice_cache`` lets the cases of one tomogram share decoded slices. Returns ``out_path``.

    Raises NotFoundError naming the tomo_id when the tomogram is not on disk, InputError for a
    bad row or a heatmap of the wrong shape.
    """
    case = case_row if isinstance(case_row, Case) else load_case_rows([dict(case_row)])[0]
    if case.is_gallery:
        raise ValueError(f"{case.case_id} is a gallery: render it with render_gallery")
    tomo_dir, out_path = Path(tomo_dir), Path(out_path)
    classes = dict(classes or {})
    _check_options(crop=crop, dz=dz, panel_px=panel_px)
    if not (tomo_dir / META_NAME).exists():
        raise NotFoundError(
            f"case {case.case_id}: tomogram {case.tomo_id!r} is not on disk ({tomo_dir} has no {META_NAME})"
        )
    meta = read_meta(tomo_dir)
    if meta.tomo_id != case.tomo_id:
        raise InputError(f"case {case.case_id} is about {case.tomo_id!r} but {tomo_dir} holds {meta.tomo_id!r}",
                         field="tomo_id")
    if heatmap is not None and tuple(heatmap.shape) != tuple(meta.shape):
        raise InputError(f"heatmap for {case.tomo_id!r} has shape {tuple(heatmap.shape)}, "
                         f"the stored tomogram {tuple(meta.shape)}", field="heatmap")
    if slice_cache is not None and slice_cache.tomo_id != meta.tomo_id:
        raise ValueError(f"slice_cache holds {slice_cache.tomo_id!r}, not {meta.tomo_id!r}")
    auto_crop, auto_dz = case_crop(case, classes, meta.voxel_spacing)
    crop = crop if crop is not None else auto_crop
    dz = dz if dz is not None else auto_dz
    planes = slice_cache if slice_cache is not None else SliceCache(tomo_dir, meta, capacity=crop + 2 * dz + 8)
    heat = _ArrayPlanes(heatmap) if heatmap is not None else None
    frame_spacing = float(case.voxel_spacing or meta.original_spacing)

    half = crop // 2
    scale = panel_px / crop
    names = case.classes
    multi = len(names) > 1
    legend = _legend(names)

    def to_stored(zyx: Sequence[float] | np.ndarray) -> np.ndarray:
        return frame_to_stored(zyx, frame_spacing, meta.original_spacing, meta.voxel_spacing)

    def ring(name: str) -> float:
        return class_radius(name, classes) / meta.voxel_spacing

    marks = [
        _Mark(str(c.k), to_stored(c.zyx), FOCUS_COLOUR if c.k == case.focus_k else OTHER_COLOUR, ring(c.particle))
        for c in case.candidates
    ]
    shown_labels = [(c.particle, np.array(c.zyx)) for c in case.candidates if c.source == "label"]
    for p in case.labels:  # labeled picks that are not already candidates: context only
        q = np.array([p.z, p.y, p.x])
        if all(name != p.particle or np.linalg.norm(q - r) * frame_spacing > 0.5 * class_radius(name, classes)
               for name, r in shown_labels):
            marks.append(_Mark(str(legend.get(p.particle, 0)), to_stored(q), LABEL_COLOUR, ring(p.particle),
                               context=True))

    n_cols = 6 if heat is not None else 5
    layout = Layout(n_rows=len(case.candidates), panel_px=panel_px, n_cols=n_cols)
    canvas = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    _draw_header(draw, case, meta, layout, crop=crop, dz=dz, classes=classes, legend=legend)
    geometry: list[PanelGeometry] = []

    ring_font = _font(max(10, min(17, panel_px // 8)), bold=True)
    for row, (cand, mark) in enumerate(zip(case.candidates, marks[:len(case.candidates)], strict=True)):
        cz, cy, cx = (int(round(v)) for v in mark.zyx)
        zs = (cz - dz, cz, cz + dz)
        raw = [_xy(planes, z, cy, cx, half) for z in zs]
        raw.append(_xz(planes, cz, cy, cx, half, axis=2))
        raw.append(_xz(planes, cz, cy, cx, half, axis=1))
        rgbs = _stretch(raw)
        if heat is not None:
            raw.append(raw[1])
            rgbs.append(_overlay(rgbs[1], _xy(heat, cz, cy, cx, half)))
        origin = np.array([cz - half, cy - half, cx - half], dtype=float)
        for col, rgb in enumerate(rgbs):
            # draw on the panel itself, so rings and numbers are clipped to it
            panel = _composite(rgb, panel_px)
            pdraw = ImageDraw.Draw(panel)
            box = (0, 0, panel_px, panel_px)
            empty = not np.isfinite(raw[col]).any()
            if empty:  # nothing to see: the text alone (no ring or number over it)
                text = "outside the volume"
                _centered(pdraw, box, text, _fitting_font(pdraw, text, panel_px - 8, 15), DIM_TEXT)
            if col in (3, 4):  # ticks on the XZ/YZ panels at the z of the three XY panels
                for i, z in enumerate(zs):
                    t = (z - origin[0] + 0.5) * scale
                    w = 10 if i == 1 else 6
                    pdraw.line((0, t, w, t), fill=TICK_COLOUR, width=2)
                    pdraw.line((panel_px - w, t, panel_px, t), fill=TICK_COLOUR, width=2)
            plane_z = zs[col] if col < 3 else cz
            taken: list[tuple[float, float, float, float]] = []
            for other in [] if empty else sorted(marks, key=lambda m: m.context):  # rings and numbers first
                r_vox = other.radius_vox
                rel = other.zyx - origin  # crop-box coordinates in stored voxels
                if np.any(rel < -r_vox) or np.any(rel > crop + r_vox):
                    continue  # not in this crop box
                if col in (0, 1, 2, 5):
                    off_plane, u, v = abs(other.zyx[0] - plane_z), rel[2], rel[1]
                elif col == 3:
                    off_plane, u, v = abs(other.zyx[1] - cy), rel[2], rel[0]
                else:
                    off_plane, u, v = abs(other.zyx[2] - cx), rel[1], rel[0]
                if other.context:
                    if 0 <= u < crop and 0 <= v < crop:
                        _draw_context(pdraw, (u + 0.5) * scale, (v + 0.5) * scale, other, off_plane <= r_vox, taken)
                    continue
                _draw_ring(pdraw, (u + 0.5) * scale, (v + 0.5) * scale, r_vox * scale, other,
                           off_plane <= r_vox, box, ring_font, taken)
            px, py = layout.panel_origin(row, col)
            canvas.paste(panel, (px, py))
            plane = "xz" if col == 3 else "yz" if col == 4 else "xy"
            o = (float(plane_z), origin[1], origin[2]) if plane == "xy" else \
                (origin[0], float(cy), origin[2]) if plane == "xz" else (origin[0], origin[1], float(cx))
            geometry.append(PanelGeometry(box=(px, py, px + panel_px, py + panel_px), plane=plane,
                                          origin=(float(o[0]), float(o[1]), float(o[2])), scale=scale, k=cand.k,
                                          tomo_id=case.tomo_id, frame_spacing=frame_spacing,
                                          original_spacing=meta.original_spacing,
                                          stored_spacing=meta.voxel_spacing))
        _draw_row_label(draw, layout, row, cand, mark, meta, case, with_class=multi)
        del raw, rgbs

    return _save(canvas, out_path, quality, geometry, Path(geometry_dir) if geometry_dir is not None else None)


def _centered(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str,
              font: ImageFont.FreeTypeFont | ImageFont.ImageFont, fill: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, font=font, fill=fill, anchor="mm")


def _fitting_font(draw: ImageDraw.ImageDraw, text: str, max_w: float, size: int,
                  bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The largest font of at most ``size`` px (at least 9) in which ``text`` fits ``max_w``."""
    font = _font(size, bold)
    while size > 9 and draw.textlength(text, font=font) > max_w:
        size -= 1
        font = _font(size, bold)
    return font


def _line(draw: ImageDraw.ImageDraw, xy: tuple[float, float], parts: Sequence[tuple[str, tuple[int, int, int]]],
          max_w: float, size: int, bold: bool = False) -> None:
    """Draw coloured ``parts`` one after the other, shrunk to fit ``max_w``."""
    font = _fitting_font(draw, "".join(t for t, _ in parts), max_w, size, bold)
    x, y = xy
    for text, colour in parts:
        draw.text((x, y), text, font=font, fill=colour)
        x += draw.textlength(text, font=font)


def _draw_header(draw: ImageDraw.ImageDraw, case: Case, meta: TomoMeta, layout: Layout, *,
                 crop: int, dz: int, classes: Mapping[str, ParticleClass], legend: Mapping[str, int]) -> None:
    m = layout.margin
    width = layout.width - 2 * m
    names = case.classes
    thing = "motor" if names == ["motor"] else "particle"
    score = f"   ·   score {case.score:.2f}" if case.score is not None else ""
    title = f"{case.case_id}   ·   {case.tomo_id}   ·   {kind_text(case)}{score}"
    _line(draw, (m, m), [(title, TEXT_COLOUR)], width, 22, bold=True)
    _line(draw, (m, m + 32), [(instructions(case, names), TEXT_COLOUR)], width, 16)
    _line(draw, (m, m + 56), [(click_instructions(case, names), TEXT_COLOUR)], width, 16)
    parts = [
        (f"yellow = case focus (k={case.focus_k})", FOCUS_COLOUR), ("   ", TEXT_COLOUR),
        ("cyan = other candidates", OTHER_COLOUR), ("   ", TEXT_COLOUR),
        ("green ▣n = other labeled " + (f"{thing}s" if len(names) == 1 else "picks, n = class: ")
         + (", ".join(f"{legend[n]} {n}" for n in names) if len(names) > 1 else " (not taggable)"), LABEL_COLOUR),
        ("   ·   thick ring: in this plane", TEXT_COLOUR),
    ]
    parts += [("   ·   ring radius: " + ", ".join(f"{n} {class_radius(n, classes):g} Å" for n in names),
               TEXT_COLOUR)]
    _line(draw, (m, m + 80), parts, width, 16)
    frame = f"{case.Z}×{case.Y}×{case.X} @ {case.voxel_spacing:g} Å"
    source = "".join(f"  ·  {name} {value}" for name, value in
                     (("labels", case.label_version), ("predictions", case.prediction_run)) if value)
    info = (f"coordinates (z,y,x) in the label frame {frame}  ·  panels: {crop} voxels = "
            f"{crop * meta.voxel_spacing:.0f} Å at {meta.voxel_spacing:g} Å/voxel, "
            f"Δz = {dz} slices ({dz * meta.voxel_spacing:.0f} Å){source}")
    _line(draw, (m, m + 104), [(info, DIM_TEXT)], width, 16)
    heads = [c.format(dz=dz) for c in COLUMNS] + ([MODEL_COLUMN] if layout.n_cols == 6 else [])
    for col, text in enumerate(heads):
        px, py = layout.panel_origin(0, col)
        font = _fitting_font(draw, text, layout.panel_px, 16, bold=True)
        draw.text((px + layout.panel_px / 2, py - 4), text, font=font, fill=TEXT_COLOUR, anchor="md")


def _draw_row_label(draw: ImageDraw.ImageDraw, layout: Layout, row: int, cand: Candidate, mark: _Mark,
                    meta: TomoMeta, case: Case, *, with_class: bool = False) -> None:
    _, py = layout.panel_origin(row, 0)
    x, y = layout.margin, py + 8
    max_w = layout.label_w - 8
    k_conf = row_label(cand).split(" (")[0]  # "k: 0.87" / "0: label"; the coordinates go below
    big, body = max(12, min(30, layout.panel_px // 6)), max(9, min(16, layout.panel_px // 10))
    _line(draw, (x, y), [(k_conf, mark.colour)], max_w, big, bold=True)
    z, y_, x_ = (int(round(v)) for v in (cand.z, cand.y, cand.x))
    lines = [f"(z,y,x) = ({z}, {y_}, {x_})"]
    if with_class:
        lines.insert(0, cand.particle)
    if cand.k == case.focus_k:
        lines.append("focus of this case")
    if cand.source == "label":
        lines.append(f"labeled {cand.particle}")
    if not all(0 <= v < s for v, s in zip(mark.zyx, meta.shape, strict=True)):
        lines.append("outside the stored volume!")
    for i, line in enumerate(lines):
        _line(draw, (x, y + big * 1.45 + i * (body + 6)), [(line, TEXT_COLOUR if i == 0 else DIM_TEXT)], max_w, body)


# ----------------------------------------------------------------------------------------------
# Galleries


def render_gallery(
    case: Case,
    tomograms_root: str | Path,
    out_path: str | Path,
    *,
    thumb_px: int = DEFAULT_THUMB_PX,
    classes: Mapping[str, ParticleClass] | None = None,
    quality: int = JPEG_QUALITY,
    caches: dict[str, SliceCache] | None = None,
    geometry_dir: str | Path | None = None,
) -> Path:
    """Render a gallery case (``GL``/``GP``): its crops in a grid, three views each (see the module docstring)."""
    if not case.is_gallery:
        raise ValueError(f"{case.case_id} is not a gallery")
    tomograms_root, out_path = Path(tomograms_root), Path(out_path)
    classes = dict(classes or {})
    caches = caches if caches is not None else {}
    layout = GalleryLayout(n=len(case.candidates), thumb_px=thumb_px)
    canvas = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    m = layout.margin
    width = layout.width - 2 * m
    names = list(dict.fromkeys([case.particle, *classes])) if classes else [case.particle]
    title = f"{case.case_id}   ·   {case.particle}   ·   {kind_text(case)}"
    _line(draw, (m, m), [(title, TEXT_COLOUR)], width, 22, bold=True)
    _line(draw, (m, m + 32), [(instructions(case, names), TEXT_COLOUR)], width, 16)
    what = "label" if case.kind == "GL" else "prediction"
    r_A = class_radius(case.particle, classes)
    _line(draw, (m, m + 58), [(f"each crop: XY, XZ, YZ through the {what} (yellow ring: {case.particle} radius "
                               f"{r_A:g} Å)  ·  below: crop number, tomogram, model confidence", DIM_TEXT)],
          width, 15)
    geometry: list[PanelGeometry] = []
    num_size, cap_size = max(14, thumb_px // 6), max(10, min(14, thumb_px // 9))
    num_font = _font(num_size, bold=True)
    for index, c in enumerate(case.candidates):
        frame = case.frame_of(c)
        cache = caches.get(frame.tomo_id)
        if cache is None:
            directory = tomograms_root / frame.tomo_id
            if not (directory / META_NAME).exists():
                raise NotFoundError(f"case {case.case_id}: tomogram {frame.tomo_id!r} is not on disk "
                                    f"({directory} has no {META_NAME})")
            cache = caches[frame.tomo_id] = SliceCache(directory, capacity=DEFAULT_CROP + 8)
        meta = cache.meta
        crop, _ = case_crop(case, classes, meta.voxel_spacing)
        half, scale = crop // 2, thumb_px / crop
        centre = frame_to_stored(c.zyx, frame.voxel_spacing, meta.original_spacing, meta.voxel_spacing)
        cz, cy, cx = (int(round(v)) for v in centre)
        raw = [_xy(cache, cz, cy, cx, half), _xz(cache, cz, cy, cx, half, axis=2), _xz(cache, cz, cy, cx, half, axis=1)]
        origin = np.array([cz - half, cy - half, cx - half], dtype=float)
        r_px = r_A / meta.voxel_spacing * scale
        for view, rgb in enumerate(_stretch(raw)):
            panel = _composite(rgb, thumb_px)
            pdraw = ImageDraw.Draw(panel)
            u = (centre[2] - origin[2] + 0.5) * scale if view < 2 else (centre[1] - origin[1] + 0.5) * scale
            v = (centre[1] - origin[1] + 0.5) * scale if view == 0 else (centre[0] - origin[0] + 0.5) * scale
            pdraw.ellipse((u - r_px, v - r_px, u + r_px, v + r_px), outline=FOCUS_COLOUR, width=2)
            px, py = layout.view_origin(index, view)
            canvas.paste(panel, (px, py))
            plane = ("xy", "xz", "yz")[view]
            o = (float(cz), origin[1], origin[2]) if plane == "xy" else \
                (origin[0], float(cy), origin[2]) if plane == "xz" else (origin[0], origin[1], float(cx))
            geometry.append(PanelGeometry(box=(px, py, px + thumb_px, py + thumb_px), plane=plane,
                                          origin=(float(o[0]), float(o[1]), float(o[2])), scale=scale, k=c.k,
                                          tomo_id=frame.tomo_id, frame_spacing=frame.voxel_spacing,
                                          original_spacing=meta.original_spacing,
                                          stored_spacing=meta.voxel_spacing))
        px, py = layout.view_origin(index, 0)
        cap_y = py - layout.caption_h
        draw.text((px, cap_y), str(c.k), font=num_font, fill=FOCUS_COLOUR)
        conf = "" if c.conf is None else f"  ·  model {c.conf:.2f}"
        _line(draw, (px + num_size * 1.6, cap_y + 4), [(f"{frame.tomo_id}{conf}", DIM_TEXT)],
              layout.tile_w - 2 * num_size, cap_size)
    return _save(canvas, out_path, quality, geometry, Path(geometry_dir) if geometry_dir is not None else None)


# ----------------------------------------------------------------------------------------------
# Many cases


Heatmap = np.ndarray | Mapping[str, np.ndarray]  # one (Z, Y, X) array, or one per class
HeatmapSource = Mapping[str, Heatmap] | Callable[[str], Heatmap | None]


def render_cases(
    cases_df: pd.DataFrame | Sequence[Case],
    tomograms_root: str | Path,
    out_dir: str | Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    heatmaps: HeatmapSource | None = None,
    crop: int | None = None,
    dz: int | None = None,
    panel_px: int = DEFAULT_PANEL_PX,
    thumb_px: int = DEFAULT_THUMB_PX,
    classes: Mapping[str, ParticleClass] | None = None,
    quality: int = JPEG_QUALITY,
    geometry_dir: str | Path | None = None,
) -> list[Path]:
    """Render every case (a list of :class:`Case`, or the ``cases.csv`` table) to ``out_dir/<image>``.

    All rows are checked first, and nothing is written when one is bad: InputError(s) name
    each bad row (its line in cases.csv, the header being line 1) and field. Every tomogram
    must be on disk under ``tomograms_root`` (else NotFoundError naming the missing tomo_ids).
    Images are always re-rendered, each written atomically; rendering is deterministic. The
    single-particle cases of one tomogram share a slice cache and run in one task; galleries run
    one task each; up to ``workers`` tasks render at once (threads; default ``min(4, cpus)``).
    ``progress(done, total)`` is called after each image. ``heatmaps`` maps tomo_id to a
    (Z, Y, X) [0, 1] array in the stored frame, or to one such array per class (or is a callable
    returning either or None; its shape is checked when that tomogram renders): single-particle
    cases of that tomogram get the model panel (of their class). Returns the image paths in row order.
    """
    _check_options(crop=crop, dz=dz, panel_px=panel_px)
    tomograms_root, out_dir = Path(tomograms_root), Path(out_dir)
    if isinstance(cases_df, pd.DataFrame):
        cases = load_case_rows(cases_df.to_dict(orient="records"))
    else:
        cases = list(cases_df)
    names = [c.image for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"image names repeat: {dupes[:5]}", file="cases.csv", field="image")
    needed = {t for c in cases for t in c.tomo_ids}
    missing = sorted(t for t in needed if not (tomograms_root / t / META_NAME).exists())
    if missing:
        raise NotFoundError(f"tomograms not on disk under {tomograms_root}: {', '.join(missing)}")
    geometry = Path(geometry_dir) if geometry_dir is not None else None

    jobs: dict[str, list[int]] = {}
    for i, c in enumerate(cases):
        jobs.setdefault(c.case_id if c.is_gallery else f"tomo:{c.tomo_id}", []).append(i)
    paths: list[Path | None] = [None] * len(cases)
    done = 0
    total = len(cases)
    lock = threading.Lock()

    def _tick() -> None:
        nonlocal done
        with lock:
            done += 1
            if progress is not None:
                progress(done, total)

    def one_job(key: str) -> None:
        idx = jobs[key]
        if not key.startswith("tomo:"):
            i = idx[0]
            paths[i] = render_gallery(cases[i], tomograms_root, out_dir / cases[i].image, thumb_px=thumb_px,
                                      classes=classes, quality=quality, geometry_dir=geometry)
            _tick()
            return
        tomo_id = key[len("tomo:"):]
        directory = tomograms_root / tomo_id
        meta = read_meta(directory)
        planes = SliceCache(directory, meta, capacity=(crop or DEFAULT_CROP) + 2 * (dz or DEFAULT_DZ) + 8)
        heat: Heatmap | None = None
        if heatmaps is not None:
            heat = heatmaps(tomo_id) if callable(heatmaps) else heatmaps.get(tomo_id)
        for i in sorted(idx, key=lambda i: cases[i].candidates[0].z):
            mine = heat.get(cases[i].particle) if isinstance(heat, Mapping) else heat  # the case's class's channel
            paths[i] = render_case(cases[i], directory, out_dir / cases[i].image, heatmap=mine, crop=crop, dz=dz,
                                   panel_px=panel_px, classes=classes, quality=quality, slice_cache=planes,
                                   geometry_dir=geometry)
            _tick()

    n_workers = max(1, min(workers or min(4, os.cpu_count() or 1), len(jobs) or 1))
    errors: list[BaseException] = []
    if n_workers == 1:
        for key in jobs:
            one_job(key)
    else:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            for fut in [pool.submit(one_job, key) for key in jobs]:
                exc = fut.exception()
                if exc is not None:
                    errors.append(exc)
    if errors:
        raise errors[0] if len(errors) == 1 or not all(isinstance(e, InputError) for e in errors) else \
            InputErrors([e for e in errors if isinstance(e, InputError)])
    return [p for p in paths if p is not None]


__all__ = [
    "FOCUS_COLOUR", "GalleryLayout", "LABEL_COLOUR", "Layout", "OTHER_COLOUR", "PAD_COLOUR", "PanelGeometry",
    "SliceCache", "case_crop", "class_radius", "point_to_frame", "read_geometry", "render_case", "render_cases",
    "render_gallery", "row_label",
]

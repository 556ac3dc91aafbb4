"""The particle-class registry: what a class is, the built-in ones, and user classes from a YAML/JSON file.

A class is data (:class:`ParticleClass`): a name, the particle radius in Å (rings in review images, heatmap width,
non-maximum suppression), the review **match radius** in Å (a prediction and a label of the class closer than this
are the same particle when mining review cases and when diffing versions), the metric weight (CZII) and optionally
the CryoET Data Portal object it corresponds to (annotation ``object_name`` and GO / UniProt identifier).

Built in (:data:`BUILTIN_CLASSES`): ``motor`` (bacterial flagellar motor; match radius 1000 Å as the BYU metric)
and the six CZII classes with their published radii and weights (apo-ferritin 60 Å weight 1, beta-amylase 65 Å 0,
beta-galactosidase 90 Å 2, ribosome 150 Å 1, thyroglobulin 130 Å 2, virus-like-particle 135 Å 1). Their match
radius is the particle radius: a prediction inside the particle is that particle.

A classes file (YAML or JSON) is a list of classes, or a mapping ``{"classes": [...]}``; each entry needs ``name``
and ``radius`` (Å), the rest is optional. A file class with a built-in name replaces the built-in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from byu.errors import InputError, InputErrors, NotFoundError

CLASS_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # \Z, not $ (no trailing newline)
MOTOR_MATCH_RADIUS_A = 1000.0
MAX_CLASSES_FILE_BYTES = 1 << 20


class ParticleClass(BaseModel):
    """One particle class (crosses file boundaries: version manifests, model checkpoints, classes files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="class name: letters, digits, '.', '_' or '-' (e.g. apo-ferritin)")
    # finite: a manifest stores classes as JSON, where inf/nan become null and the version could not be read again
    radius: float = Field(gt=0, allow_inf_nan=False, description="particle radius in Å")
    match_radius: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="review/diff match "
                                       "radius in Å (default: the particle radius)")
    weight: float = Field(default=1.0, ge=0, allow_inf_nan=False, description="metric weight (CZII F-beta)")
    portal_object: str | None = Field(default=None, description="CryoET Data Portal annotation object name, or an "
                                      "SQL ILIKE pattern of it ('%' any text, '_' one character)")
    go_id: str | None = Field(default=None, description="GO or UniProtKB identifier of the object")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not CLASS_NAME.fullmatch(v):
            raise ValueError(f"class name {v!r} must be 1-64 letters, digits, '.', '_' or '-' "
                             "(starting with a letter or digit)")
        return v

    @model_validator(mode="after")
    def _default_match(self) -> ParticleClass:
        if self.match_radius is None:
            object.__setattr__(self, "match_radius", float(self.radius))
        return self

    @property
    def match_radius_A(self) -> float:
        return float(self.match_radius)  # type: ignore[arg-type]

    def matches_portal(self, object_name: str | None, object_id: str | None = None) -> bool:
        """Whether a portal annotation object (its name and GO/UniProt id) is this class."""
        if self.go_id and object_id and self.go_id.lower() == object_id.strip().lower():
            return True
        return bool(self.portal_object and object_name and ilike(object_name, self.portal_object))


def ilike(text: str, pattern: str) -> bool:
    """SQL ``ILIKE``: case-insensitive, ``%`` any text, ``_`` one character."""
    parts = [".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern]
    return re.fullmatch("".join(parts), text, flags=re.IGNORECASE | re.DOTALL) is not None


MOTOR = ParticleClass(name="motor", radius=250.0, match_radius=MOTOR_MATCH_RADIUS_A, weight=1.0,
                      portal_object="%flagell%motor%", go_id="GO:0120100")  # the portal's "bacterial-type flagellum
#                                                                          motor" and other spellings

CZII_CLASSES: tuple[ParticleClass, ...] = (
    ParticleClass(name="apo-ferritin", radius=60.0, weight=1.0, portal_object="ferritin complex",
                  go_id="GO:0070288"),
    ParticleClass(name="beta-amylase", radius=65.0, weight=0.0, portal_object="beta-amylase",
                  go_id="UniProtKB:P10537"),
    ParticleClass(name="beta-galactosidase", radius=90.0, weight=2.0, portal_object="beta-galactosidase",
                  go_id="UniProtKB:P00722"),
    ParticleClass(name="ribosome", radius=150.0, weight=1.0, portal_object="cytosolic ribosome",
                  go_id="GO:0022626"),
    ParticleClass(name="thyroglobulin", radius=130.0, weight=2.0, portal_object="thyroglobulin",
                  go_id="UniProtKB:P01267"),
    ParticleClass(name="virus-like-particle", radius=135.0, weight=1.0, portal_object="virus-like capsid",
                  go_id="GO:0170047"),
)

BUILTIN_CLASSES: dict[str, ParticleClass] = {c.name: c for c in (MOTOR, *CZII_CLASSES)}


class ClassRegistry(Mapping[str, ParticleClass]):
    """Classes by name, in a fixed order (built-ins first, then a classes file's, in file order)."""

    def __init__(self, classes: Iterable[ParticleClass] = BUILTIN_CLASSES.values()) -> None:
        self._by_name: dict[str, ParticleClass] = {}
        for c in classes:
            self._by_name[c.name] = c

    def __getitem__(self, name: str) -> ParticleClass:
        try:
            return self._by_name[name]
        except KeyError:
            raise NotFoundError(f"unknown particle class {name!r}; known: {', '.join(self._by_name)} "
                                "(add others with a classes file)") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def resolve(self, names: str | Sequence[str]) -> list[ParticleClass]:
        """Classes for ``names`` (a list or a comma-separated string), in the given order, without repeats."""
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        if not names:
            raise InputError("no particle classes given", field="classes")
        missing = [n for n in names if n not in self._by_name]
        if missing:
            raise InputError(f"unknown particle class(es) {missing}; known: {', '.join(self._by_name)} "
                             "(add others with a classes file)", field="classes")
        return [self._by_name[n] for n in dict.fromkeys(names)]

    def by_portal_object(self, name_or_id: str) -> ParticleClass | None:
        """The class a portal object spec names: a class name, a GO/UniProt id, a portal object name (matched
        against each class's pattern) or a class's own pattern; None when no class does."""
        key = name_or_id.strip()
        for c in self._by_name.values():
            if key.lower() in {(c.portal_object or "").lower(), (c.go_id or "").lower(), c.name.lower()}:
                return c
        for c in self._by_name.values():
            if c.matches_portal(key, key):
                return c
        return None

    def for_annotation(self, object_name: str | None, object_id: str | None,
                       among: Sequence[ParticleClass] | None = None) -> ParticleClass | None:
        """The first class (of ``among``, default all) a portal annotation object is."""
        for c in among if among is not None else self._by_name.values():
            if c.matches_portal(object_name, object_id):
                return c
        return None

    def with_classes(self, classes: Iterable[ParticleClass]) -> ClassRegistry:
        """A registry with ``classes`` added (replacing classes of the same name)."""
        return ClassRegistry([*self._by_name.values(), *classes])

    @classmethod
    def from_file(cls, path: str | Path | None) -> ClassRegistry:
        """Built-ins plus the classes of a YAML/JSON file (``None``: built-ins only)."""
        base = cls()
        return base if path is None else base.with_classes(read_classes_file(path))


def read_classes_file(path: str | Path) -> list[ParticleClass]:
    """The classes of a YAML/JSON classes file; every bad entry is reported with its index and field."""
    path = Path(path)
    if not path.is_file():
        raise InputError("classes file not found", file=path)
    if path.stat().st_size > MAX_CLASSES_FILE_BYTES:
        raise InputError(f"classes file is larger than {MAX_CLASSES_FILE_BYTES >> 10} KiB", file=path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError, RecursionError) as exc:
        raise InputError(f"not a readable {'JSON' if path.suffix.lower() == '.json' else 'YAML'} file: "
                         f"{type(exc).__name__}", file=path) from None
    if isinstance(data, Mapping):
        data = data.get("classes")
    if not isinstance(data, list) or not data:
        raise InputError("expected a list of classes (or a mapping with a 'classes' list)", file=path)
    return parse_classes(data, source=path)


def parse_classes(entries: Sequence[Any], *, source: str | Path | None = None) -> list[ParticleClass]:
    """Validate class dicts; errors name the entry (``classes[i]``) and the field."""
    out: list[ParticleClass] = []
    errors: list[InputError] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if isinstance(entry, ParticleClass):
            out.append(entry)
            continue
        try:
            c = ParticleClass.model_validate(entry)
        except ValidationError as exc:
            name = entry.get("name") if isinstance(entry, Mapping) else None
            which = f"class {name!r}" if isinstance(name, str) else f"class {i + 1}"
            for e in exc.errors():
                loc = ".".join(str(p) for p in e.get("loc", ())) or "entry"
                value = e.get("input")
                shown = f" {loc} {value!r}:" if loc not in ("entry", "name") and not isinstance(value, Mapping) else ""
                errors.append(InputError(f"{which}:{shown} {e.get('msg', 'invalid')}", file=source,
                                         field=f"classes[{i}].{loc}"))
            continue
        if c.name in seen:
            errors.append(InputError(f"class {c.name!r} is listed twice", file=source, field=f"classes[{i}].name"))
            continue
        seen.add(c.name)
        out.append(c)
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(errors)
    return out


def class_dicts(classes: Iterable[ParticleClass]) -> list[dict[str, Any]]:
    """JSON-ready dicts of classes (for manifests and checkpoints)."""
    return [c.model_dump(mode="json") for c in classes]


__all__ = [
    "BUILTIN_CLASSES", "CZII_CLASSES", "ClassRegistry", "MOTOR", "MOTOR_MATCH_RADIUS_A", "ParticleClass",
    "class_dicts", "parse_classes", "read_classes_file",
]

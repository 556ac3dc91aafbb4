"""Label versions of any particle class: the class registry, the version model, its forms, the store, splits."""

from byu.labels.classes import BUILTIN_CLASSES, ClassRegistry, ParticleClass
from byu.labels.formats import read_labels, read_picks, read_version_file, to_canonical, write_labels, write_picks
from byu.labels.model import LabelSet
from byu.labels.store import LabelStore
from byu.labels.table import CANONICAL_COLUMNS, make_table, motor_points, validate_labels

__all__ = [
    "BUILTIN_CLASSES",
    "CANONICAL_COLUMNS",
    "ClassRegistry",
    "LabelSet",
    "LabelStore",
    "ParticleClass",
    "make_table",
    "motor_points",
    "read_labels",
    "read_picks",
    "read_version_file",
    "to_canonical",
    "validate_labels",
    "write_labels",
    "write_picks",
]

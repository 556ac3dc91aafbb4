"""Label tables: the canonical form, the forms we read, the versioned store and CV splits."""

from byu.labels.formats import read_labels, read_picks, write_labels, write_picks
from byu.labels.store import LabelStore
from byu.labels.table import CANONICAL_COLUMNS, make_table, motor_points, validate_labels

__all__ = [
    "CANONICAL_COLUMNS",
    "LabelStore",
    "make_table",
    "motor_points",
    "read_labels",
    "read_picks",
    "validate_labels",
    "write_labels",
    "write_picks",
]

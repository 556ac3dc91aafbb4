"""CryoET Data Portal ingestion: select (``query``), download (``download``), convert points (``convert``);
``ingest`` chains them with preprocessing (:mod:`byu.tomo.preprocess`) over a data root."""

from byu.portal.query import (
    DEFAULT_OBJECT_NAME,
    DEFAULT_PREFER,
    PointFile,
    PortalTomogram,
    Selection,
    choose_tomogram,
    make_tomo_id,
    select,
)

__all__ = [
    "DEFAULT_OBJECT_NAME", "DEFAULT_PREFER", "PointFile", "PortalTomogram", "Selection", "choose_tomogram",
    "make_tomo_id", "select",
]

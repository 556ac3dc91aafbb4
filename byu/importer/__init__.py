"""Your own data in: a folder of MRC / OME-Zarr tomograms and a CSV or RELION STAR picks file, brought into a data
root (``tomograms/`` + a label version) with the same preprocessing, pins and checks as the portal and copick
ingests (:func:`import_tomograms`; the CLI is ``byu tomo import``)."""

from byu.importer.ingest import ImportReport, TomogramResult, find_tomograms, import_tomograms, source_digest
from byu.importer.picks import PickRows, parse_class_map, read_pick_rows

__all__ = ["ImportReport", "PickRows", "TomogramResult", "find_tomograms", "import_tomograms", "parse_class_map",
           "read_pick_rows", "source_digest"]

"""byu: human-in-the-loop pseudo-labeling for cryo-ET particle picks.

The library never imports Prefect; orchestration lives in ``flows/``.
"""

__version__ = "0.1.0"

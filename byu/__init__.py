"""byu: human-in-the-loop pseudo-labeling for cryo-ET particle picks.

The library never imports Prefect; orchestration lives in ``flows/``.
"""

import os

# Idle OpenMP threads spin by default, which on a busy 2-core machine doubles a small training step; this only
# takes effect when set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

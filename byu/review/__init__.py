"""Review: mine FN/FP cases, render them, run CVAT tasks, turn decisions into the next label version."""

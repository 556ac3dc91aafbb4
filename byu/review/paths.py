"""Every path of a review round (``review/<round>/``), in one place: the round object, the CVAT adapter and the
decision readers build them here (a pull's staging folder has the same layout, so it is a ``RoundPaths`` too)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from byu.paths import DataRoot, check_id


@dataclass(frozen=True)
class RoundPaths:
    """Every path of a round (``review/<round>/``)."""

    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def cases(self) -> Path:
        return self.dir / "cases.csv"

    @property
    def mining(self) -> Path:
        return self.dir / "mining.json"

    @property
    def verification(self) -> Path:
        """Each label's verification (:mod:`byu.review.verify`), when the round verified its labels."""
        return self.dir / "verification.csv"

    @property
    def images(self) -> Path:
        return self.dir / "images"

    @property
    def geometry(self) -> Path:
        """Each image's panel geometry (``<image>.json``): where a point placed on it lies in the tomogram."""
        return self.dir / "geometry"

    @property
    def heatmaps(self) -> Path:
        """The models' heatmap of each reviewed tomogram (``<tomo_id>.npz``, keyed by what it came from), computed
        once for the round's images however many render batches draw that tomogram."""
        return self.dir / "heatmaps"

    @property
    def cvat(self) -> Path:
        return self.dir / "cvat"

    @property
    def tasks(self) -> Path:
        return self.cvat / "tasks.json"

    @property
    def pull_now(self) -> Path:
        return self.cvat / "PULL_NOW"

    @property
    def rejected(self) -> Path:
        return self.cvat / "rejected"

    @property
    def decisions(self) -> Path:
        return self.dir / "decisions.csv"

    @property
    def second_decisions(self) -> Path:
        """A second reviewer's decisions on some of the images (scripted and imported reviews; a CVAT round keeps
        them in its second-review tasks' exports)."""
        return self.dir / "second_decisions.csv"

    @property
    def resolution(self) -> Path:
        """Decisions of whoever resolves where the two reviews disagree (optional: else the more accurate one)."""
        return self.dir / "resolution.csv"

    @property
    def resolved(self) -> Path:
        """The decisions applied when the round had a second review: one per image, with who decided."""
        return self.dir / "resolved_decisions.csv"

    @property
    def quality(self) -> Path:
        """Reviewer accuracy, agreement, resolution and the errors left (``quality.json``)."""
        return self.dir / "quality.json"

    @property
    def outside_decisions(self) -> Path:
        """Where the ``import`` reviewer waits for decisions made outside CVAT (flows' default)."""
        return self.dir / "outside_decisions.csv"

    def image(self, name: str) -> Path:
        return self.images / check_id(name, what="image")

    def export(self, task_name: str) -> Path:
        """A CVAT task's export (``cvat/<task name>.xml``)."""
        return self.cvat / f"{task_name}.xml"


def round_paths(root: DataRoot, round_name: str) -> RoundPaths:
    return RoundPaths(root.review_round(round_name))


__all__ = ["RoundPaths", "round_paths"]

"""Round 1: out-of-fold predictions of the fold models → review → ``gt_v2`` + fresh CV splits."""

from __future__ import annotations

from prefect import flow
from pydantic import Field

from flows.artifacts import result_artifacts
from flows.base import ReviewSettings, data_root
from flows.checks import RoundForm, check_review_ready, target_versions
from flows.common import splits_task, tomograms_to_review
from flows.rounds import predict_review_apply
from flows.task_runners import task_runner_from_env


class Round1Params(RoundForm):
    """Round 1 as in the reference pipeline: OOF predictions at a low threshold on tomograms with ≤1 motor."""

    data_dir: str | None = Field(default=None, title="Data root",
                                 description="default: env BYU_DATA, else ./data; relative paths below are under it")
    round_name: str = Field(default="round1", title="Round name",
                            description="its files go to review/ROUND/ (letters, digits, '.', '_', '-'); the name "
                            "of an earlier round reuses that round's cases and review")
    from_version: str = Field(default="gt", title="Labels to review",
                              description="label version the fold models were trained on")
    to_version: str = Field(default="gt_v2", title="New label version",
                            description="the reviewed labels; refused if it exists and was not made by this round")
    model_dirs: list[str] = Field(default_factory=lambda: ["models/round1"], title="Fold model runs",
                                  description="run names or paths (relative: under the data root) whose fold "
                                  "models predict out of fold")
    threshold: float = Field(default=0.05, ge=0, le=1, title="Prediction threshold",
                             description="low, so every plausible miss shows up")
    tta: str = Field(default="flips", title="Test-time augmentation", description="none, flips or flips8")
    max_labeled_motors: int | None = Field(default=1, ge=0, title="Review tomograms with at most N motors",
                                           description="empty: every tomogram")
    split_dir: str = Field(default="v2", title="Split folder", description="splits go to cv/FOLDER/skfK_rdSEED.json")
    split_folds: list[int] = Field(default_factory=lambda: [4, 5], title="Fresh splits (folds)",
                                   description="one fresh cross-validation split of the new version per number of "
                                   "folds")
    split_seed: int = Field(default=42, title="Split seed", description="StratifiedKFold random_state")
    review: ReviewSettings = Field(default_factory=ReviewSettings, title="Review settings",
                                   description="who reviews the cases, and how they are chosen, drawn and waited for")


@flow(name="round1", log_prints=True, task_runner=task_runner_from_env())
def round1(params: Round1Params = Field(default=Round1Params(), description="every setting of the round",
                                        json_schema_extra={"title": "Round 1 settings"})) -> dict:
    """OOF predictions → cases → review → decisions → ``gt_v2`` + ``cv/v2`` splits."""
    p = params
    root = data_root(p.data_dir)
    data_dir = str(root.root)
    check_review_ready(data_dir, p.round_name, p.review, target_versions(p, "to_version"))  # before any heavy work
    tomo_ids = tomograms_to_review(data_dir, p.from_version, p.max_labeled_motors)
    result = predict_review_apply(data_dir, round_name=p.round_name, model_dirs=p.model_dirs, mode="oof", tta=p.tta,
                                  threshold=p.threshold, labels_version=p.from_version, to_version=p.to_version,
                                  review=p.review, tomo_ids=tomo_ids, allow_seen=False)
    result.update(splits_task(data_dir, p.to_version, p.split_dir, p.split_folds, p.split_seed))  # splits[_written]
    result_artifacts(data_dir, p.round_name, result, title=f"Round {p.round_name}: {p.from_version} → {p.to_version}")
    return result


if __name__ == "__main__":
    from flows.local_api import temporary_api

    with temporary_api():
        round1()

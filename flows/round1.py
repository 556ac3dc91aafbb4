"""Round 1: out-of-fold predictions of the fold models → FN/FP review → ``gt_v2`` + fresh CV splits."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from flows.common import (ReviewSettings, data_root, predict_review_apply, refuse_existing_version, splits_task,
                          tomograms_to_review)


class Round1Params(BaseModel):
    """Round 1 as in the reference pipeline: OOF predictions at a low threshold on tomograms with ≤1 motor."""

    data_dir: str | None = Field(default=None, description="data root (default: env BYU_DATA or ./data)")
    round_name: str = Field(default="round1", description="review round name (review/<round>/)")
    from_version: str = Field(default="gt", description="label version the fold models were trained on")
    to_version: str = Field(default="gt_v2", description="label version to create; refused if it exists")
    model_dirs: list[str] = Field(default_factory=lambda: ["data/models/round1"],
                                  description="fold model runs (data/models/<run>) predicting out of fold")
    threshold: float = Field(default=0.05, ge=0, le=1, description="confidence threshold: low to show every miss")
    tta: str = Field(default="flips", description="test-time augmentation: none or flips")
    max_labeled_motors: int = Field(default=1, ge=0, description="review only tomograms with at most this many "
                                    "labeled motors")
    split_dir: str = Field(default="v2", description="splits go to cv/<split_dir>/skf<K>_rd<seed>.json")
    split_folds: list[int] = Field(default_factory=lambda: [4, 5], description="fresh splits to write")
    split_seed: int = Field(default=42, description="StratifiedKFold random_state")
    review: ReviewSettings = Field(default_factory=ReviewSettings)


@flow(name="round1", log_prints=True)
def round1(params: Round1Params = Round1Params()) -> dict:
    """OOF predictions → cases → review → decisions → ``gt_v2`` + ``cv/v2`` splits."""
    p = params
    data_dir = str(data_root(p.data_dir).root)
    refuse_existing_version(data_root(data_dir), p.to_version, p.round_name)
    tomo_ids = tomograms_to_review(data_dir, p.from_version, p.max_labeled_motors)
    result = predict_review_apply(data_dir, round_name=p.round_name, model_dirs=p.model_dirs, mode="oof", tta=p.tta,
                                  threshold=p.threshold, labels_version=p.from_version, to_version=p.to_version,
                                  review=p.review, tomo_ids=tomo_ids, allow_seen=False)
    splits = splits_task(data_dir, p.to_version, p.split_dir, p.split_folds, p.split_seed)
    return {**result, "splits": splits}


if __name__ == "__main__":
    round1()

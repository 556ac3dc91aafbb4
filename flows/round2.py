"""Round 2: an ensemble of every given model run on all tomograms → review → ``gt_v3`` + carried CV split."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from flows.common import (ReviewSettings, combine_if_present, data_root, predict_review_apply,
                          refuse_existing_version, splits_task, tomograms_to_review)


class Round2Params(BaseModel):
    """Round 2 as in the reference: all folds of several architectures, flip TTA, every tomogram."""

    data_dir: str | None = Field(default=None, description="data root (default: env BYU_DATA or ./data)")
    round_name: str = Field(default="round2", description="review round name")
    from_version: str = Field(default="gt_v2", description="labels to refine")
    to_version: str = Field(default="gt_v3", description="label version to create; refused if it exists")
    model_dirs: list[str] = Field(default_factory=lambda: ["data/models/round2"],
                                  description="model runs to ensemble (all folds of each)")
    threshold: float = Field(default=0.05, ge=0, le=1)
    tta: str = Field(default="flips")
    carry_split: str = Field(default="v2/skf4_rd42.json", description="split to carry forward (under cv/)")
    split_dir: str = Field(default="v3", description="carried split goes to cv/<split_dir>/")
    external_version: str = Field(default="external_gt", description="if it exists: all_version = to + external")
    all_version: str = Field(default="all_gt_v3", description="combined version name")
    review: ReviewSettings = Field(default_factory=ReviewSettings)


@flow(name="round2", log_prints=True)
def round2(params: Round2Params = Round2Params()) -> dict:
    """Ensemble predictions (seen tomograms allowed) → cases → review → ``gt_v3`` (+ ``all_gt_v3``)."""
    p = params
    data_dir = str(data_root(p.data_dir).root)
    root = data_root(data_dir)
    refuse_existing_version(root, p.to_version, p.round_name)
    tomo_ids = tomograms_to_review(data_dir, p.from_version, None)
    result = predict_review_apply(data_dir, round_name=p.round_name, model_dirs=p.model_dirs, mode="all", tta=p.tta,
                                  threshold=p.threshold, labels_version=p.from_version, to_version=p.to_version,
                                  review=p.review, tomo_ids=tomo_ids, allow_seen=True)
    splits = splits_task(data_dir, p.to_version, p.split_dir, [], 0, carry_from=p.carry_split)
    combined = combine_if_present(data_dir, [p.to_version, p.external_version], p.all_version, p.round_name)
    return {**result, "splits": splits, "combined": combined}


if __name__ == "__main__":
    round2()

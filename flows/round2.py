"""Round 2: an ensemble of every given model run on all tomograms → review → ``gt_v3`` + carried CV split."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from byu.labels.store import LabelStore
from flows.common import (ReviewSettings, apply_task, combine_task, data_root, refuse_existing_version,
                          review_round, splits_task, tomograms_to_review)
from flows.model_tasks import predict_with_fingerprint


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
    predictions = predict_with_fingerprint(data_dir, p.model_dirs, mode="all", tta=p.tta, threshold=p.threshold,
                                           tomo_ids=tomo_ids, out_name=f"{p.round_name}_ensemble",
                                           allow_seen=True)
    n_cases = review_round(data_dir, p.round_name, labels_version=p.from_version, predictions=predictions,
                           threshold=p.threshold, review=p.review, tomo_ids=tomo_ids)
    applied = apply_task(data_dir, p.round_name, p.from_version, p.to_version, p.review.overrides_csv)
    splits = splits_task(data_dir, p.to_version, p.split_dir, [], 0, carry_from=p.carry_split)
    combined = None
    if LabelStore(root.labels).exists(p.external_version):
        refuse_existing_version(root, p.all_version, p.round_name)
        combined = combine_task(data_dir, [p.to_version, p.external_version], p.all_version, p.round_name)
    return {"round": p.round_name, "cases": n_cases, **applied, "splits": splits, "combined": combined}


if __name__ == "__main__":
    round2()

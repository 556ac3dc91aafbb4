"""Round 2: an ensemble of every given model run on all tomograms → review → ``gt_v3`` + carried CV split."""

from __future__ import annotations

from prefect import flow
from pydantic import Field

from flows.artifacts import result_artifacts
from flows.base import ReviewSettings, data_root
from flows.checks import RoundForm, check_review_ready, target_versions
from flows.common import splits_task, tomograms_to_review
from flows.rounds import combine_if_present, predict_review_apply
from flows.task_runners import task_runner_from_env


class Round2Params(RoundForm):
    """Round 2 as in the reference: all folds of several architectures, flip TTA, every tomogram."""

    data_dir: str | None = Field(default=None, title="Data root",
                                 description="default: env BYU_DATA, else ./data; relative paths below are under it")
    round_name: str = Field(default="round2", title="Round name",
                            description="its files go to review/ROUND/ (letters, digits, '.', '_', '-'); the name "
                            "of an earlier round reuses that round's cases and review")
    from_version: str = Field(default="gt_v2", title="Labels to review",
                              description="label version whose labels the ensemble checks (the first round's)")
    to_version: str = Field(default="gt_v3", title="New label version",
                            description="the reviewed labels; refused if it exists and was not made by this round")
    model_dirs: list[str] = Field(default_factory=lambda: ["models/round2"], title="Model runs to ensemble",
                                  description="run names or paths (relative: under the data root); all folds of each")
    threshold: float = Field(default=0.05, ge=0, le=1, title="Prediction threshold",
                             description="low, so every plausible miss shows up")
    tta: str = Field(default="flips", title="Test-time augmentation", description="none, flips or flips8")
    carry_split: str = Field(default="v2/skf4_rd42.json", title="Split to carry forward",
                             description="under cv/ (or a path)")
    split_dir: str = Field(default="v3", title="Split folder", description="the carried split goes to cv/FOLDER/")
    external_version: str = Field(default="external_gt", title="External labels",
                                  description="when this version exists: combined version = new + external")
    all_version: str = Field(default="all_gt_v3", title="Combined version",
                             description="new + external labels, written when the external version exists; refused "
                             "if it exists and was not made by this round")
    review: ReviewSettings = Field(default_factory=ReviewSettings, title="Review settings",
                                   description="who reviews the cases, and how they are chosen, drawn and waited for")


@flow(name="round2", log_prints=True, task_runner=task_runner_from_env())
def round2(params: Round2Params = Field(default=Round2Params(), description="every setting of the round",
                                        json_schema_extra={"title": "Round 2 settings"})) -> dict:
    """Ensemble predictions (seen tomograms allowed) → cases → review → ``gt_v3`` (+ ``all_gt_v3``)."""
    p = params
    root = data_root(p.data_dir)
    data_dir = str(root.root)
    check_review_ready(data_dir, p.round_name, p.review, target_versions(p, "to_version") + target_versions(
        p, "all_version", made_of=[p.external_version]))  # before any heavy work
    tomo_ids = tomograms_to_review(data_dir, p.from_version, None)
    result = predict_review_apply(data_dir, round_name=p.round_name, model_dirs=p.model_dirs, mode="all", tta=p.tta,
                                  threshold=p.threshold, labels_version=p.from_version, to_version=p.to_version,
                                  review=p.review, tomo_ids=tomo_ids, allow_seen=True)
    result.update(splits_task(data_dir, p.to_version, p.split_dir, [], 0, carry_from=p.carry_split))
    result["combined"] = combine_if_present(data_dir, [p.to_version, p.external_version], p.all_version,
                                            p.round_name)
    result_artifacts(data_dir, p.round_name, result, title=f"Round {p.round_name}: {p.from_version} → {p.to_version}")
    return result


if __name__ == "__main__":
    from flows.local_api import temporary_api

    with temporary_api():
        round2()

"""One settings object per review stage, with the defaults the product runs.

The library owns them; the CLI builds its options from their fields (defaults and help texts), and the Prefect
flows show them as parts of their forms, so ``byu review mine``, :meth:`byu.review.round.ReviewRound.mine` and a
``round1`` run from the UI mine the same way unless a person changes a field.

- :class:`MiningSettings`: how a round's review items are scored and chosen (:mod:`byu.review.match`);
- :class:`~byu.review.verify.VerifierSettings`: the label verifier (part of the mining settings);
- :class:`RenderSettings`: how case images are drawn (:mod:`byu.review.render`);
- :class:`WaitSettings`: how a flow waits for people (the flows' review step).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from byu.review.verify import VerifierSettings

#: an unlabeled prediction is shown when the models believe it at least this fraction of the class's confirm bar
FP_FRACTION = 0.5
#: a label supported less than this fraction of its class's median support is reviewed (``confirm_threshold=auto``)
SUPPORT_FRACTION = 0.75


def _number_or_auto(value: Any, field: str) -> float | str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text in ("", "none", "off"):
            return None
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{field} must be a number, 'auto' or empty, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} must be a number, 'auto' or empty, got {value!r}")
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{field} must be between 0 and 1, got {v}")
    return v


class MiningSettings(BaseModel):
    """How a round chooses what people review: score every label and unlabeled prediction, then choose by class."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(default=0.05, ge=0, le=1, title="Prediction threshold",
                             description="predictions below this confidence are not looked at")
    radius_A: float | None = Field(default=None, gt=0, title="Match radius override (Å)",
                                   description="empty: each class's own match radius (motor 1000 Å)")
    max_candidates: int = Field(default=5, ge=1, le=20, title="Candidates per case image",
                                description="predictions shown with one label in a single-particle case")
    confirm_threshold: float | Literal["auto"] | None = Field(
        default="auto", title="Confirm threshold",
        description="also review labels whose matching prediction is weaker than this: a number, 'auto' (per "
        "class, below 3/4 of the median of how strongly the models support that class's labels), or empty: only "
        "unmatched labels")
    fp_threshold: float | Literal["auto"] | None = Field(
        default="auto", title="Unlabeled prediction threshold",
        description="show unlabeled predictions only when at least this confident: a number, 'auto' (per class, "
        "half the confirm threshold) or empty: every one above the prediction threshold")
    verify: bool = Field(default=True, title="Verify labels",
                         description="train a small crop classifier on the round's labels against its unlabeled "
                         "predictions (cross-fitted by tomogram) and also review the labels it believes least")
    verify_quantile: float = Field(default=0.7, ge=0, le=1, title="Verification quantile",
                                   description="with a verifier that separates its class perfectly, review the "
                                   "labels verified below this quantile of their class; the fraction shrinks with "
                                   "the verifier's own out-of-fold separation (none below AUC 0.6)")
    audit_load: float | None = Field(
        default=3.0, ge=0, title="Audit load (images per label in doubt)",
        description="in galleries: when a class's labels were verified and the verifier ranks them no better than "
        "chance (no score says which of them are wrong), review all of that class's labels if the extra gallery "
        "images are at most this many per label of the class already in doubt (no prediction, a weak one); empty: "
        "never")
    galleries: bool = Field(default=True, title="Galleries",
                            description="show labels to confirm and unlabeled predictions many to an image "
                            "(crops of one class); off: one image per tomogram and class, as single cases")
    gallery_size: int = Field(default=16, ge=2, le=36, title="Crops per gallery image",
                              description="labels or predictions shown in one gallery image")
    budget: int | Literal["auto"] = Field(
        default="auto", title="Review budget per class",
        description="unlabeled predictions shown per class, best first: a number of items, or 'auto' (those above "
        "the unlabeled prediction threshold that the models believe at least as much as the 'Missed particles "
        "reached' share of the class's supported labels; at least one per labeled particle)")
    offer_recall: float = Field(
        default=0.9, gt=0, le=1, title="Missed particles reached",
        description="with budget 'auto': a particle the labels missed looks to the models like the labeled ones, "
        "so offering every unlabeled prediction believed at least as much as this share of the class's supported "
        "labels reaches about this share of the missed particles the models found (a class the models cannot tell "
        "from its look-alikes gets a large budget, one they rank well a small one)")
    known_rate: float = Field(default=0.1, ge=0, le=0.5, title="Known-answer items",
                              description="share of each gallery's crops whose answer is known (a label an earlier "
                              "round decided or the round believes most, or empty background): they measure each "
                              "reviewer's accuracy and never change a label; 0: none")
    max_fp_cases: int | None = Field(default=1, ge=1, title="FP cases per tomogram and class (no galleries)",
                                     description="without galleries: single FP case images per tomogram and "
                                     "class; empty: as many as needed")
    verifier: VerifierSettings = Field(default_factory=VerifierSettings, title="Label verifier",
                                       description="the crop classifier of 'Verify labels' (crops, training, "
                                       "device)")

    @field_validator("confirm_threshold", "fp_threshold", mode="before")
    @classmethod
    def _auto(cls, value: Any, info) -> Any:
        return _number_or_auto(value, info.field_name)

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError(f"budget must be a whole number or 'auto', got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"budget must be a whole number ≥ 0 or 'auto', got {value!r}")
        return value


class RenderSettings(BaseModel):
    """How case images are drawn."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    panel_px: int = Field(default=224, ge=96, le=512, title="Panel size (px)",
                          description="side of one panel of a single-particle case image")
    thumb_px: int = Field(default=128, ge=64, le=384, title="Gallery crop size (px)",
                          description="side of one of the three views of a gallery crop")
    heatmap: bool = Field(default=True, title="Model heatmap panel",
                          description="add a panel of the model's heatmap over the central slice to single-"
                          "particle cases (what the model saw; needs the round's model checkpoints)")
    quality: int = Field(default=85, ge=50, le=95, title="JPEG quality",
                         description="JPEG quality of the case images (higher: sharper and larger files)")


class QualitySettings(BaseModel):
    """How far a round trusts its reviewers: accuracy on known-answer items, a second reviewer, resolution."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_accuracy: float = Field(default=0.9, ge=0, le=1, title="Minimum reviewer accuracy",
                                description="a reviewer whose accuracy on the known-answer items is below this has "
                                "every decision held for a second review (not applied until resolved)")
    confidence: float = Field(default=0.75, ge=0.5, lt=1, title="Confidence in a reviewer",
                              description="a reviewer is trusted only when their accuracy is above the minimum at "
                              "this one-sided confidence (the lower Wilson bound); 0.5 compares the accuracy itself")
    min_known: int = Field(default=10, ge=1, title="Known answers needed",
                           description="a reviewer's accuracy is judged only on at least this many known-answer "
                           "items")
    second_rate: float = Field(default=0.0, ge=0, le=1, title="Second-review sample",
                               description="share of the other images a second reviewer also sees (every 'unsure' "
                               "and every held image go to them too)")
    second_reviewer: str = Field(default="second", title="Second reviewer",
                                 description="the name the second review's decisions carry (CVAT: the assignee of "
                                 "the second-review jobs)")


class WaitSettings(BaseModel):
    """How a flow waits for people to review."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["auto", "poll", "pause", "suspend"] = Field(
        default="auto", title="How to wait for people",
        description="auto: suspend when run from a deployment, else poll · poll: check every poll interval until "
        "the review is done (CVAT: all jobs completed; import: the CSV exists) · pause: wait for 'Resume' in the "
        "Prefect UI · suspend: like pause but frees the worker while people review (deployments only; the run "
        "restarts from its cached steps)")
    poll_interval_s: float = Field(default=60.0, gt=0, title="Poll interval (s)",
                                   description="seconds between checks when waiting by polling")
    timeout_days: float = Field(default=14.0, gt=0, title="Wait timeout (days)",
                                description="give up waiting after this long (polling: collect what is done)")
    include_incomplete: bool = Field(default=False, title="Take tags from unfinished CVAT jobs",
                                     description="off: only jobs marked completed count")


__all__ = ["FP_FRACTION", "SUPPORT_FRACTION", "MiningSettings", "QualitySettings", "RenderSettings", "VerifierSettings",
           "WaitSettings"]

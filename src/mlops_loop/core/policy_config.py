"""The retrain, training and promotion policies of a loop (re-exported by `core.config`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlops_loop.core.tasks import BINARY_METRICS, DEFAULT_GUARDS, LOWER_IS_BETTER

#: The metrics of a binary classifier (`core.tasks.TASK_METRICS` has every task's).
METRICS = BINARY_METRICS
#: A metric's name; which fit a loop depends on its task, checked when the config loads.
Metric = str
__all__ = ["LOWER_IS_BETTER", "METRICS", "Metric"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetrainPolicy(_Model):
    """When the loop trains a challenger."""

    on_drift: bool = Field(
        default=True,
        description="Retrain when the dataset drifts and the champion's performance is at risk: "
        "its label-free estimate falls `metric_drop` below the baseline (or is unknown), or the "
        "drifted features carry `drift_importance_share` of its importance. Drift with the "
        "estimate holding is recorded and trains nothing.",
    )
    drift_importance_share: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of the champion's permutation importance (on its held-out rows) "
        "that, once carried by drifted features, retrains on drift even while the estimated "
        "performance holds; 0 retrains on any drift, as `on_drift` did alone. None: drift "
        "retrains only on the estimate (on the seeded streams of docs/backtest.md, prior and "
        "covariate shifts drifted features carrying 50-90% of the importance and cost no "
        "performance).",
    )
    metric_drop: float = Field(
        default=0.05,
        ge=0,
        description="Retrain when the primary metric falls this much "
        "below the champion's baseline; for a metric in the target's units (rmse, mae, "
        "median_ae) a share of the baseline, 0.25 (25% worse) by default for them.",
    )
    metric_floor: float | None = Field(
        default=None,
        description="Retrain whenever the primary metric is worse "
        "than this level, whatever the champion's baseline was.",
    )
    baseline: Literal["best", "champion"] = Field(
        default="best",
        description="What `metric_drop` is measured from: 'best', the best validation metric "
        "any champion of this loop has had (a loop that once did better keeps trying, even "
        "after promoting a weak model out of a collapse); 'champion', the serving champion's "
        "own validation metric, the default for rmse, mae and median_ae (an error in the "
        "target's units is only as small as the regime's noise allows).",
    )
    min_labelled_rows: int = Field(
        default=100, ge=0, description="Fewest labelled rows in a batch to judge it."
    )
    cooldown_batches: int = Field(
        default=0, ge=0, description="Batches to wait after a retrain before the next."
    )
    on_estimated_drop: bool = Field(
        default=True,
        description="Retrain when the primary metric estimated from the scores alone (before "
        "labels arrive) falls metric_drop below the champion's baseline.",
    )
    min_new_labelled_rows: int = Field(
        default=0,
        ge=0,
        description="Labelled rows that must have arrived since the last retrain before a "
        "drift or performance trigger retrains (a schedule or a manual retrain always does).",
    )


class TrainingPolicy(_Model):
    """Which data trains a challenger, and which judges it."""

    window: Literal["all", "recent", "sliding"] = Field(
        default="recent",
        description="'all': reference plus every accepted batch; 'recent': the current batch "
        "and the `recent_batches` accepted batches before it (plus the reference if "
        "`include_reference`); "
        "'sliding': the latest `max_rows` rows and/or the last `max_age_days` days of "
        "accepted data (plus the reference if `include_reference`).",
    )
    max_rows: int | None = Field(
        default=None, ge=100, description="Rows in a 'sliding' window (newest kept)."
    )
    max_age_days: float | None = Field(
        default=None,
        gt=0,
        description="Age limit of a 'sliding' window, by the timestamp column.",
    )
    # The defaults adapt fastest to a new concept; a challenger trained on too little data is
    # not promoted, since promotion needs evidence (docs/backtest.md has the measurements).
    recent_batches: int = Field(
        default=0,
        ge=0,
        description="Accepted batches before the current one in a 'recent' window (0: the "
        "current batch alone).",
    )
    same_regime: bool = Field(
        default=True,
        description="On a retrain the labels triggered (the champion failing on the batch), an "
        "earlier batch joins a 'recent' window only if the champion was failing on it too: rows "
        "from before a change teach the concept that just broke.",
    )
    include_reference: bool = Field(default=False, description="Train on the reference too.")
    holdout_fraction: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Latest share of the current batch kept out of "
        "training to compare challenger and champion.",
    )
    random_state: int = Field(default=0, description="Seed for training and bootstraps.")
    refit: bool = Field(
        default=True,
        description="Before a model serves, fit it again on all its labelled rows, held-out "
        "rows included: a promoted challenger is refit and registered as a version of its own "
        "(tagged `mlops_loop.refit_of`), the first champion is registered refit on the whole "
        "reference. Validation metrics, calibration and importance stay those measured on the "
        "held-out rows by the fit that did not see them.",
    )

    @model_validator(mode="after")
    def _sliding_has_a_bound(self) -> TrainingPolicy:
        if self.window == "sliding" and self.max_rows is None and self.max_age_days is None:
            raise ValueError("a 'sliding' window needs max_rows or max_age_days")
        return self


_DEFAULT_GUARDS: dict[Metric, float] = DEFAULT_GUARDS["binary"]


class PromotionPolicy(_Model):
    """When a challenger replaces the champion."""

    metric: Metric = Field(
        default="roc_auc",
        description="Primary metric; by default roc_auc (binary), accuracy (multiclass), rmse "
        "(regression). It must fit the loop's task (core.tasks.TASK_METRICS).",
    )
    require_skill: bool = Field(
        default=True,
        description="Refuse a challenger no better on the evaluation rows than a model without "
        "skill (a constant score at the rows' base rate: ROC AUC 0.5, the majority class's "
        "accuracy), however much it beats a failing champion.",
    )
    min_delta: float = Field(
        default=0.0, ge=0, description="Smallest improvement of the primary metric."
    )
    failing_champion: Literal["skill", "not_worse", "better"] = Field(
        default="skill",
        description="What a challenger must show when the batch's labels have already shown "
        "the champion failing (a 'performance' retrain trigger): 'skill', only that it beats a "
        "model without skill on the held-out rows, since the labels are the evidence against "
        "the champion and the model of the newest data should serve; 'not_worse', that it is "
        "not worse with confidence (the upper bound of its improvement above zero) and no guard "
        "or segment is; 'better', the usual rule. The comparison is recorded either way.",
    )
    confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="Level of the paired bootstrap lower bound that must lie above zero.",
    )
    bootstrap_rounds: int = Field(
        default=500, ge=50, le=100_000, description="Paired bootstrap resamples."
    )
    guards: dict[Metric, float] = Field(
        default_factory=lambda: dict(_DEFAULT_GUARDS),
        description="Guard metrics and how much worse than the champion's each may be; by "
        "default brier 0.02 and recall 0.05 (binary), log_loss 0.05 (multiclass), none "
        "(regression: its errors are in the target's units).",
    )
    segment_tolerance: float = Field(
        default=0.05,
        ge=0,
        description="How much worse than the champion the primary metric may be in any "
        "segment (values of the `columns.segments` columns).",
    )
    min_segment_rows: int = Field(
        default=50, ge=1, description="Segments with fewer held-out rows are not judged."
    )

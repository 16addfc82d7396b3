"""The quality gate's policy: the error rate and margins of the bounds it learns.

Each bound is resolved for the batch's row count at validation time (docs/quality.md derives
them); the margins are what is tolerated on top of the sampling noise those bounds allow for.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CustomExpectation(_Model):
    """A Great Expectations expectation declared by the user, by class name and arguments."""

    type: str = Field(
        pattern=r"^Expect[A-Za-z0-9]+$",
        description="GX expectation class, e.g. ExpectColumnValuesToMatchRegex.",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Its arguments.")
    severity: Literal["error", "warn"] = Field(
        default="error", description="'error' blocks the batch; 'warn' only reports."
    )


class QualityPolicy(_Model):
    """Error rate and margins of the quality gate's bounds, learnt from the reference."""

    error_rate: float = Field(
        default=0.001,
        gt=0,
        lt=0.5,
        description="Chance that a batch drawn like the reference fails any learnt bound; "
        "split evenly between the bounds (docs/quality.md).",
    )
    null_rate_margin: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Null share tolerated above the reference's, on top of sampling noise.",
    )
    range_margin: float = Field(
        default=0.5,
        ge=0,
        description="Allowed overshoot of the reference range, as a fraction of that range.",
    )
    unseen_category_share: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Share of values unseen in the reference tolerated above the unseen mass "
        "the reference predicts (its share of values seen once), on top of sampling noise.",
    )
    min_rows: int = Field(default=1, ge=0, description="Fewest rows a batch may have.")
    max_rows: int | None = Field(default=None, ge=1, description="Most rows a batch may have.")
    duplicate_share: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Share of rows repeating another row tolerated above the share expected "
        "of a batch of that size drawn from the reference, on top of sampling noise.",
    )
    expectations: list[CustomExpectation] = Field(
        default_factory=list, description="Expectations of your own, checked on every batch."
    )

"""Alert rules: what a rule watches, when it fires and resolves, validated at the edge."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, model_validator

from mlops_loop.core.alerts.event import Severity
from mlops_loop.core.errors import MlopsLoopError
from mlops_loop.core.tasks import LOWER_IS_BETTER

#: Keys of a history record that are not metrics.
RESERVED_KEYS = frozenset({"batch", "time"})

Direction = Literal["above", "below"]


class AlertError(MlopsLoopError, ValueError):
    """Alert rules, history or state are malformed; the message names the bad item."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Baseline(_Model):
    """What a `relative_drop` rule compares against: exactly one of the three sources."""

    value: FiniteFloat | None = Field(
        default=None, description="A fixed baseline, e.g. the champion's validation roc_auc."
    )
    metric: str | None = Field(
        default=None,
        min_length=1,
        description="Another metric of the same batch record that holds the baseline, e.g. "
        "`champion_roc_auc`; batches without it are not judged.",
    )
    first_batches: int | None = Field(
        default=None,
        ge=1,
        description="Mean of the rule's metric over the first K batches that have it. Those "
        "batches form the baseline and are not judged; the mean is kept in the state.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Baseline:
        given = [k for k in ("value", "metric", "first_batches") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "baseline needs exactly one of 'value', 'metric', 'first_batches' "
                f"(got {', '.join(given) or 'none'})"
            )
        return self


class Cooldown(_Model):
    """How long a rule that fired stays quiet; with both bounds, both must have passed."""

    batches: int | None = Field(
        default=None, ge=1, description="Batches after the firing one during which it cannot fire."
    )
    seconds: float | None = Field(
        default=None, gt=0, description="Seconds after the firing batch's time."
    )

    @model_validator(mode="after")
    def _at_least_one(self) -> Cooldown:
        if self.batches is None and self.seconds is None:
            raise ValueError("cooldown needs 'batches' or 'seconds'")
        return self


_FIELDS_BY_KIND: dict[str, tuple[set[str], set[str]]] = {
    # kind: (required fields, fields that belong to other kinds)
    "threshold": ({"direction", "value"}, {"drop", "baseline", "n", "m"}),
    "n_of_m": ({"direction", "value", "n", "m"}, {"drop", "baseline"}),
    "relative_drop": ({"drop", "baseline"}, {"value", "n", "m"}),
}
_FIELD_HELP = {
    "direction": "'above' or 'below', the side of 'value' that is bad",
    "value": "the level the metric is compared with",
    "drop": "the relative change that fires, e.g. 0.1 for 10%",
    "baseline": "{value: ...}, {metric: ...} or {first_batches: K}",
    "n": "how many of the last 'm' judged batches must break the level",
    "m": "the window of judged batches",
}


class AlertRule(_Model):
    """One alert rule on one metric of the per-batch history.

    Kinds:
        threshold: fires when the metric is `below` (or `above`) `value`.
        relative_drop: fires when the metric moved `drop` (relative, 0.1 = 10%) or more past
            its `baseline`: below it by default, above it with `direction: above`.
        n_of_m: fires when the metric was past `value` in `n` of the last `m` judged batches.

    `clear` sets hysteresis: a firing rule resolves only when the metric is back past it (a
    metric level for threshold and n_of_m, a relative drop for relative_drop). It defaults to
    the firing level.
    """

    name: str = Field(pattern=r"^\S+$", description="Unique rule name, shown in every event.")
    metric: str = Field(min_length=1, description="Metric name in the history records.")
    kind: Literal["threshold", "relative_drop", "n_of_m"] = Field(description="Rule kind.")
    direction: Direction | None = Field(
        default=None,
        description="Bad side: 'below' (e.g. roc_auc) or 'above' (e.g. drift_share). "
        "Required for threshold and n_of_m; relative_drop defaults to the metric's bad side "
        "('above' for rmse, mae, log_loss, brier and the other metrics where lower is better).",
    )
    value: FiniteFloat | None = Field(default=None, description="Firing level (threshold, n_of_m).")
    drop: float | None = Field(
        default=None, gt=0, description="Relative change against the baseline that fires."
    )
    baseline: Baseline | None = Field(default=None, description="Baseline of relative_drop.")
    n: int | None = Field(default=None, ge=1, description="Breaking batches needed (n_of_m).")
    m: int | None = Field(default=None, ge=1, description="Window of judged batches (n_of_m).")
    clear: FiniteFloat | None = Field(
        default=None,
        description="Level the metric must come back past for a firing rule to resolve; "
        "default: the firing level.",
    )
    cooldown: Cooldown | None = Field(
        default=None, description="Quiet period after a firing, in batches and/or seconds."
    )
    severity: Severity = Field(default="warn", description="'warn' or 'error'.")

    @model_validator(mode="after")
    def _fields_fit_the_kind(self) -> AlertRule:
        for field, metric in (("metric", self.metric), ("baseline.metric", self._base_metric)):
            if metric in RESERVED_KEYS:
                raise ValueError(
                    f"rule {self.name!r}: {field} {metric!r} is a reserved history key, "
                    "not a metric"
                )
        required, foreign = _FIELDS_BY_KIND[self.kind]
        for name in sorted(required):
            if getattr(self, name) is None:
                raise ValueError(
                    f"rule {self.name!r} of kind {self.kind!r} needs {name!r}: {_FIELD_HELP[name]}"
                )
        for name in sorted(foreign):
            if getattr(self, name) is not None:
                owners = [k for k, (req, _) in _FIELDS_BY_KIND.items() if name in req]
                raise ValueError(
                    f"rule {self.name!r}: field {name!r} applies to kind "
                    f"{' or '.join(repr(k) for k in owners)}, not {self.kind!r}"
                )
        if self.kind == "n_of_m" and self.n is not None and self.m is not None:
            if self.n > self.m:
                raise ValueError(
                    f"rule {self.name!r}: 'n' ({self.n}) is larger than 'm' ({self.m})"
                )
        if self.clear is not None:
            self._check_clear(self.clear)
        return self

    def _check_clear(self, clear: float) -> None:
        if self.kind == "relative_drop":
            assert self.drop is not None
            if not 0 <= clear <= self.drop:
                raise ValueError(
                    f"rule {self.name!r}: 'clear' ({clear}) is a relative change and must lie "
                    f"between 0 and 'drop' ({self.drop})"
                )
            return
        assert self.value is not None
        if self.side == "below" and clear < self.value:
            raise ValueError(
                f"rule {self.name!r}: 'clear' ({clear}) must be at or above 'value' "
                f"({self.value}) when the bad side is below"
            )
        if self.side == "above" and clear > self.value:
            raise ValueError(
                f"rule {self.name!r}: 'clear' ({clear}) must be at or below 'value' "
                f"({self.value}) when the bad side is above"
            )

    @property
    def _base_metric(self) -> str | None:
        return self.baseline.metric if self.baseline is not None else None

    @property
    def side(self) -> Direction:
        """The bad side of the metric: `direction`, else 'above' for a metric where lower is
        better (rmse, log_loss, ...) and 'below' for the others."""
        if self.direction is not None:
            return self.direction
        return "above" if self.metric in LOWER_IS_BETTER else "below"

    @property
    def clear_level(self) -> float:
        """The resolve level: `clear`, else the firing level (`value` or `drop`)."""
        if self.clear is not None:
            return self.clear
        level = self.drop if self.kind == "relative_drop" else self.value
        assert level is not None
        return level

"""The `alerts` section of the loop configuration: the rules and the notifiers they feed."""

from __future__ import annotations

from pydantic import Field, model_validator

from mlops_loop.core.alerts.rules import AlertRule, _Model
from mlops_loop.core.notify import NotifierConfig


class AlertsConfig(_Model):
    """The `alerts` section of the loop configuration: rules and where events go."""

    rules: list[AlertRule] = Field(default_factory=list, description="Alert rules.")
    notifiers: list[NotifierConfig] = Field(
        default_factory=list, description="Channels that receive the events (webhook, smtp)."
    )
    quality_stuck_after: int | None = Field(
        default=3,
        ge=1,
        description="Alert (rule `quality_gate_stuck`, error) when this many consecutive "
        "batches are quarantined by the same expectation: the upstream or the suite changed "
        "and the loop has stopped. Null turns the alert off.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> AlertsConfig:
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                raise ValueError(f"rules[{i}].name: rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        named: set[str] = set()
        for i, notifier in enumerate(self.notifiers):
            if notifier.name is not None:
                if notifier.name in named:
                    raise ValueError(
                        f"notifiers[{i}].name: notifier name {notifier.name!r} is used twice"
                    )
                named.add(notifier.name)
        return self

"""Alert rules on per-batch metrics, evaluated as a pure function over the metric history.

`evaluate_alerts(rules, history, state)` walks the batches it has not seen yet, in the order
given, and returns the firing/resolved transitions plus the new state, a small JSON-able dict
that the caller persists between runs. Delivery lives in `mlops_loop.core.notify`; its names are
re-exported here, so one import serves both.

Modules: `rules` (AlertRule and its parts), `event` (AlertEvent), `config` (AlertsConfig: rules
plus notifier configs), `state` (the persisted state), `evaluate` (evaluate_alerts). Imports go
one way: this package depends on `notify`, which knows `AlertEvent` only as a type.
"""

from mlops_loop.core.alerts.config import AlertsConfig
from mlops_loop.core.alerts.evaluate import evaluate_alerts
from mlops_loop.core.alerts.event import AlertEvent
from mlops_loop.core.alerts.event import Severity as Severity
from mlops_loop.core.alerts.rules import RESERVED_KEYS as RESERVED_KEYS
from mlops_loop.core.alerts.rules import AlertError, AlertRule, Baseline, Cooldown
from mlops_loop.core.alerts.rules import Direction as Direction
from mlops_loop.core.alerts.state import STATE_VERSION as STATE_VERSION
from mlops_loop.core.notify import (
    DeliveryResult,
    Notifier,
    NotifierConfig,
    SmtpNotifier,
    SmtpNotifierConfig,
    WebhookNotifier,
    WebhookNotifierConfig,
    build_notifiers,
    notify,
)
from mlops_loop.core.notify import describe_validation_error as describe_validation_error

__all__ = [
    "AlertError",
    "AlertEvent",
    "AlertRule",
    "AlertsConfig",
    "Baseline",
    "Cooldown",
    "DeliveryResult",
    "Notifier",
    "NotifierConfig",
    "SmtpNotifier",
    "SmtpNotifierConfig",
    "WebhookNotifier",
    "WebhookNotifierConfig",
    "build_notifiers",
    "evaluate_alerts",
    "notify",
]

"""An alert event: one rule's transition on one batch (it started firing, or it resolved).

Produced by `evaluate_alerts`, delivered by `mlops_loop.core.notify`; it depends on neither.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["warn", "error"]


@dataclass(frozen=True)
class AlertEvent:
    """A transition of one rule on one batch: it started firing, or it resolved.

    `threshold` is the level that was crossed, in metric units: the firing level for a
    firing event, the clear level for a resolved one.
    """

    rule: str
    metric: str
    kind: Literal["firing", "resolved"]
    severity: Severity
    batch: str
    value: float
    threshold: float
    message: str
    baseline: float | None = None
    time: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

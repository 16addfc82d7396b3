"""What every step shares: who runs it, the MLflow run it logs into, and failure records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.tracking import (
    TAG_ERROR,
    TAG_PARTITION,
    TAG_STEP,
    log_metrics,
    mlflow_uri,
    redact_text,
)
from mlops_loop.core.tracking import tracked_run as _tracked_run

if TYPE_CHECKING:
    from mlops_loop.core.notify import DeliveryResult


@dataclass(frozen=True)
class StepContext:
    """Who runs a step: an id that groups the steps of one run into one MLflow run, and tags."""

    run_key: str | None = None
    triggered_by: str = "manual"
    tags: dict[str, str] = field(default_factory=dict)

    def run_tags(self, step: str, partition: str | None = None) -> dict[str, str]:
        tags = {**self.tags, TAG_STEP: step}
        if partition is not None:
            tags[TAG_PARTITION] = partition
        return tags


def step_run(
    config: LoopConfig,
    ctx: StepContext,
    step: str,
    partition: str | None = None,
    system_metrics: bool = False,
) -> Any:
    """The MLflow run a step logs into: one per orchestrator run and partition when the step
    knows its run (`ctx.run_key`), else one per step."""
    name = f"{partition or 'loop'}:{step}" if ctx.run_key is None else f"{partition or 'loop'}"
    key = None if ctx.run_key is None else f"{ctx.run_key}:{partition or '-'}"
    return _tracked_run(
        config,
        run_name=name,
        run_key=key,
        tags=ctx.run_tags(step, partition),
        system_metrics=system_metrics,
    )


def record_failure(
    config: LoopConfig, ctx: StepContext, partition: str | None, step: str, message: str
) -> None:
    """Mark the MLflow run of a failed orchestrator run: error tag, failure count, FAILED.

    The message is recorded with every URL in it redacted (and the tracking URI's secrets).

    Raises:
        TrackingError: the tracking server cannot be reached or refused.
    """
    import mlflow

    message = redact_text(message, config.tracking_uri)
    with step_run(config, ctx, step, partition) as run:
        mlflow.set_tag(TAG_ERROR, message[:5000])
        log_metrics({"step_failures": 1})
        run_id = run.info.run_id
    with mlflow_uri(config.tracking_uri):
        mlflow.MlflowClient().set_terminated(run_id, status="FAILED")


def notify_failure(
    config: LoopConfig, partition: str | None, job: str, message: str
) -> list[DeliveryResult]:
    """Tell the alert notifiers that a loop run failed (an error-severity event); what each
    notifier did (`DeliveryResult`s)."""
    from mlops_loop.core.alerts import AlertEvent
    from mlops_loop.core.notify import build_notifiers, notify

    notifiers = build_notifiers(config.alerts)
    if not notifiers:
        return []
    message = redact_text(message, config.tracking_uri)
    event = AlertEvent(
        rule="run_failed",
        metric="step_failures",
        kind="firing",
        severity="error",
        batch=partition or "-",
        value=1.0,
        threshold=0.0,
        message=f"{job} failed" + (f" on {partition}" if partition else "") + f": {message}",
    )
    return list(notify([event], notifiers))

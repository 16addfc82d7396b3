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
    """Who runs a step: an id that groups the steps of one run into one MLflow run, tags, and
    the user who started it."""

    run_key: str | None = None
    triggered_by: str = "manual"
    tags: dict[str, str] = field(default_factory=dict)
    job: str | None = None  # the orchestrator's job, named in the MLflow run's name
    #: The orchestrator's user who started the run (recorded with a champion change); None:
    #: the login name of the process.
    user: str | None = None

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
    key = None if ctx.run_key is None else f"{ctx.run_key}:{partition or '-'}"
    return _tracked_run(
        config,
        run_name=run_name(ctx, step, partition),
        run_key=key,
        tags=ctx.run_tags(step, partition),
        system_metrics=system_metrics,
        description=run_description(ctx, step, partition),
    )


#: What a job (or a step run outside one) does, in the words of its MLflow run's name.
_VERBS = {
    "monitor_job": "monitor",
    "retrain_job": "retrain",
    "remeasure_job": "remeasure",
    "bootstrap_job": "bootstrap",
    "labels_job": "read labels",
    "rollback_job": "rollback",
    "relearn_suite_job": "relearn suite",
}
_PURPOSE = {
    "monitor": "Quality gate, drift, scoring, performance and the retrain decision",
    "retrain": "A challenger trained and compared with the champion on the same hold-out",
    "remeasure": "Realized performance measured again with the labels known now",
    "bootstrap": "The reference snapshot, its quality suite and the first champion",
    "read labels": "Late labels joined to their batches",
    "rollback": "The champion alias moved back, with who, when and why",
    "relearn suite": "The quality suite relearnt; the old one kept",
}


def run_name(ctx: StepContext, step: str, partition: str | None = None) -> str:
    """A name a person reads in the MLflow runs list: `monitor batch_004`, `rollback`."""
    verb = _VERBS.get(ctx.job or "", step)
    return f"{verb} {partition}" if partition else verb


def run_description(ctx: StepContext, step: str, partition: str | None = None) -> str:
    """The MLflow run's description (markdown): what the run does, for which batch, by whom."""
    verb = _VERBS.get(ctx.job or "", step)
    purpose = _PURPOSE.get(verb, f"The {step} step")
    where = f" for batch `{partition}`" if partition else ""
    return f"{purpose}{where}.\n\nTriggered by {ctx.triggered_by}."


def describe_active_run(config: LoopConfig, line: str, name: str | None = None) -> None:
    """Append a line (the outcome) to the description of the MLflow run being logged, and
    rename it when `name` is given (`retrain batch_005, promote v3`)."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return
    client = mlflow.MlflowClient(tracking_uri=config.tracking_uri)
    tags = client.get_run(run.info.run_id).data.tags
    note = tags.get("mlflow.note.content", "")
    client.set_tag(run.info.run_id, "mlflow.note.content", f"{note}\n\n{line}" if note else line)
    if name:
        client.set_tag(run.info.run_id, "mlflow.runName", name)


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

"""Tasks the monitor and labels DAGs share: measure a batch and decide, emit what to retrain."""

from __future__ import annotations

import logging

from airflow.sdk import TriggerRule, XComArg, task

from mlops_loop.airflow.assets import LoopAssets
from mlops_loop.airflow.context import step_context
from mlops_loop.airflow.source import LoopSource

log = logging.getLogger(__name__)

#: A mapped task is labelled with its batch key in the UI.
BY_BATCH = "{{ batch_key }}"


def measure_and_decide(source: LoopSource, key: str) -> tuple[XComArg, XComArg]:
    """(model_performance, retrain_decision) for one batch, inside a mapped task group."""

    @task(task_id="model_performance", map_index_template=BY_BATCH)
    def model_performance(key: str, **context) -> None:
        """Realized and estimated performance of the champion on the batch."""
        from mlops_loop.core.steps import performance

        perf = performance.measure_performance(source.load(), key, step_context(context, key))
        log.info(
            "batch %s: %s %s (estimated %s), label coverage %s",
            key,
            perf.metric_name,
            perf.metric,
            perf.estimated_metric,
            perf.label_coverage,
        )

    @task(task_id="retrain_decision", map_index_template=BY_BATCH)
    def retrain_decision(key: str, **context) -> None:
        """Whether the batch calls for a challenger, and the alert rules over its metrics.

        Recorded in the store; the retrain DAG reads it there, never from this task's XCom.
        """
        from mlops_loop.core.steps import alerts, decision

        ctx, config = step_context(context, key), source.load()
        verdict = decision.decide_batch_retrain(config, key)
        checked = alerts.check_alerts(config, key, ctx)
        for delivery in checked.deliveries:
            if not delivery.ok:
                log.warning("alert not delivered by %s: %s", delivery.notifier, delivery.error)
        for event in checked.fired:
            log.warning("alert %s (%s) on %s: %s", event.rule, event.severity, key, event.message)
        log.info("batch %s: retrain %s (%s)", key, verdict.retrain, "; ".join(verdict.reasons))

    perf = model_performance(key)
    decided = retrain_decision(key)
    perf >> decided
    return perf, decided


def emit_decisions(source: LoopSource, assets: LoopAssets, keys: XComArg) -> XComArg:
    """The asset event of the run: the batches of `keys` whose decision says retrain and that
    no retrain answered yet (read from the store). Skipped when there are none."""

    @task(
        task_id="retrain_requested", outlets=[assets.decisions], trigger_rule=TriggerRule.ALL_DONE
    )
    def retrain_requested(keys: list[str], **context) -> list[str]:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops_loop.core.steps.decision import pending_retrains

        wanted = [k for k in pending_retrains(source.load()) if k in set(keys or [])]
        if not wanted:
            raise AirflowSkipException("no batch of this run calls for a retrain")
        context["outlet_events"][assets.decisions].extra = {"keys": wanted}
        log.info("retrain requested for %s", ", ".join(wanted))
        return wanted

    return retrain_requested(keys)  # type: ignore[arg-type]

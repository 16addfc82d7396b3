"""`monitor`: every landed batch not monitored yet, through a task group mapped over them.

Per batch: ingest and the quality gate (a quarantined batch is skipped, not failed), drift and
scoring, then performance, and the retrain decision with the alert rules. The tasks of the
group pass nothing to each other: each reads what it needs from the loop's store.
"""

from __future__ import annotations

import logging

from airflow.sdk import DAG, TriggerRule, task, task_group

from mlops_loop.airflow.assets import LoopAssets
from mlops_loop.airflow.context import step_context
from mlops_loop.airflow.dagargs import DagArgs
from mlops_loop.airflow.decisions import BY_BATCH, emit_decisions, measure_and_decide
from mlops_loop.airflow.source import LoopSource

log = logging.getLogger(__name__)


def monitor_dag(source: LoopSource, assets: LoopAssets, args: DagArgs, schedule: str | None) -> DAG:
    with DAG(
        dag_id=f"{args.prefix}monitor",
        description="Quality gate, drift, scoring, performance and the retrain decision for "
        "every batch that landed and is not monitored yet.",
        schedule=schedule,
        **args.common(),
    ) as dag:

        @task(task_id="landed_batches")
        def landed() -> list[str]:
            """The batches that landed and are not monitored yet (the loop's store says)."""
            from mlops_loop.core.steps.ingest import unmonitored_batches

            keys, problems = unmonitored_batches(source.load())
            for problem in problems:
                log.warning(problem)
            log.info("to monitor: %s", ", ".join(keys) or "nothing new")
            return keys

        @task(task_id="monitored_batch", map_index_template=BY_BATCH)
        def monitored_batch(key: str, **context) -> None:
            """The batch copied into the store and put through the quality gate."""
            from airflow.sdk.exceptions import AirflowSkipException

            from mlops_loop.core.steps import ingest, quality

            ctx, config = step_context(context, key), source.load()
            info = ingest.ingest_landed(config, key)
            result = quality.check_quality(config, key, ctx)
            log.info("batch %s: %s rows, digest %s", key, info.rows, info.digest)
            if not result.success:
                why = "; ".join(i.message for i in result.incidents if i.severity == "error")
                raise AirflowSkipException(f"batch {key} quarantined: {why}")

        @task(task_id="drift_report", map_index_template=BY_BATCH)
        def drift_report(key: str, **context) -> None:
            """Per-feature and dataset-level drift of the batch against the reference."""
            from mlops_loop.core.steps import drift

            result = drift.evaluate_batch_drift(source.load(), key, step_context(context, key))
            log.info("batch %s: dataset drift %s", key, result.report.dataset_drift)

        @task(task_id="scored_batch", map_index_template=BY_BATCH)
        def scored_batch(key: str, **context) -> None:
            """The batch scored by the model `champion` points at."""
            from mlops_loop.core.steps import scoring

            info = scoring.score_batch(source.load(), key, step_context(context, key))
            log.info("batch %s: %s rows scored by v%s", key, info.rows, info.champion_version)
            if info.serving:  # a served batch: the endpoint's online figures
                figures = ", ".join(f"{k} {v:.4g}" for k, v in sorted(info.serving.items()))
                log.info("batch %s: served; %s", key, figures)

        @task_group(group_id="batch")
        def batch(key: str) -> None:
            gate = monitored_batch(key)
            drifted, scored = drift_report(key), scored_batch(key)
            decided = measure_and_decide(source, key)
            gate >> [drifted, scored]
            scored >> decided[0]
            drifted >> decided[1]

        keys = landed()
        batches = batch.expand(key=keys)
        emitted = emit_decisions(source, assets, keys)
        batches >> emitted

        # Waits for every batch: fails the run if one failed; a quarantined one (skipped) does not.
        @task(task_id="monitored", trigger_rule=TriggerRule.NONE_FAILED)
        def monitored() -> None:
            """Every batch of the run is monitored (or quarantined)."""

        batches >> monitored()
    return dag

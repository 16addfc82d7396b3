"""`labels`: label files that landed apart from their batches, and the batches they touch
measured again (Dagster's labels_job, then the re-measurement backfill)."""

from __future__ import annotations

import logging

from airflow.sdk import DAG, task, task_group

from mlops_loop.airflow.assets import LoopAssets
from mlops_loop.airflow.context import step_context
from mlops_loop.airflow.dagargs import DagArgs
from mlops_loop.airflow.decisions import emit_decisions, measure_and_decide
from mlops_loop.airflow.source import LoopSource

log = logging.getLogger(__name__)


def labels_dag(source: LoopSource, assets: LoopAssets, args: DagArgs, schedule: str | None) -> DAG:
    with DAG(
        dag_id=f"{args.prefix}labels",
        description="Read label files as they land, then measure again every past batch "
        "they belong to and decide again whether it calls for a retrain.",
        schedule=schedule,
        **args.common(),
    ) as dag:

        @task(task_id="late_labels")
        def late_labels(**context) -> list[str]:
            """New label files joined to their batches; the batches to measure again."""
            from mlops_loop.core.labels import pending_label_files
            from mlops_loop.core.steps import labels

            config = source.load()
            if not pending_label_files(config):
                log.info("no new label file")
                return []
            result = labels.ingest_late_labels(config, step_context(context))
            for problem in result.problems:
                log.warning(problem)
            log.info(
                "%s label files, %s new labels; to measure again: %s",
                len(result.files),
                result.new_labels,
                ", ".join(result.remeasure) or "none",
            )
            return list(result.remeasure)

        @task_group(group_id="remeasure")
        def remeasure(key: str) -> None:
            measure_and_decide(source, key)

        keys = late_labels()
        emit_decisions(source, assets, keys).set_upstream(remeasure.expand(key=keys))
    return dag

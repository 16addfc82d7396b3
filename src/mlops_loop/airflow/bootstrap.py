"""`bootstrap`: the reference snapshot, then the first champion (Dagster's bootstrap_job)."""

from __future__ import annotations

import logging

from airflow.sdk import DAG, task

from mlops_loop.airflow.assets import LoopAssets
from mlops_loop.airflow.context import step_context
from mlops_loop.airflow.dagargs import DagArgs
from mlops_loop.airflow.source import LoopSource

log = logging.getLogger(__name__)


def bootstrap_dag(source: LoopSource, assets: LoopAssets, args: DagArgs) -> DAG:
    with DAG(
        dag_id=f"{args.prefix}bootstrap",
        description="Snapshot the reference and make sure a champion exists.",
        schedule=None,
        **args.common(),
    ) as dag:

        @task(task_id="reference_snapshot")
        def reference_snapshot(**context) -> None:
            """The reference data, its digest, and the quality suite learnt from it."""
            from mlops_loop.core.steps import reference

            info = reference.take_reference_snapshot(source.load(), step_context(context))
            log.info(
                "reference snapshot: %s rows, digest %s, %s expectations, from %s",
                info.rows,
                info.digest,
                info.expectations,
                info.source,
            )

        @task(task_id="baseline_model", outlets=[assets.champion])
        def baseline_model(**context) -> None:
            """The first champion, trained on the reference when the registry has none."""
            from mlops_loop.core.steps import reference

            info = reference.ensure_champion(source.load(), step_context(context))
            log.info(
                "champion: version %s (%s); metrics %s",
                info.champion,
                "trained now" if info.trained else "already registered",
                info.metrics,
            )
            context["outlet_events"][assets.champion].extra = {
                "champion_version": info.champion,
                "trained": info.trained,
            }

        reference_snapshot() >> baseline_model()
    return dag

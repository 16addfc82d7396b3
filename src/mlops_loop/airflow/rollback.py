"""`rollback`: the champion back to a version or to the previous one, with a reason.

Triggered by hand with its Params; the Airflow user who triggered it is recorded in the
champion's history beside the reason.
"""

from __future__ import annotations

import logging

from airflow.sdk import DAG, Param, task

from mlops_loop.airflow.assets import LoopAssets
from mlops_loop.airflow.context import step_context
from mlops_loop.airflow.dagargs import DagArgs
from mlops_loop.airflow.source import LoopSource

log = logging.getLogger(__name__)


def rollback_dag(source: LoopSource, assets: LoopAssets, args: DagArgs) -> DAG:
    with DAG(
        dag_id=f"{args.prefix}rollback",
        description="Roll the champion back to a version or to the previous champion. "
        "Trigger it with a reason.",
        schedule=None,
        params={
            "to": Param(
                "previous",
                type="string",
                minLength=1,
                description="Model version to make champion, or 'previous' for the champion "
                "before the current one.",
            ),
            "reason": Param(
                type="string",
                minLength=1,
                pattern=r"\S",
                description="Why the champion is rolled back (kept in the audit history).",
            ),
            "force": Param(
                False,
                type="boolean",
                description="Also make champion a version that never was one (a rejected "
                "challenger); without it such a rollback is refused, naming why.",
            ),
        },
        **args.common(),
    ) as dag:

        @task(task_id="rollback_champion", outlets=[assets.champion])
        def rollback_champion(**context) -> None:
            """Move the champion alias back and record who, when and why."""
            from mlops_loop.core.steps.rollback import champion_history_table, rollback

            params = context["params"]
            config = source.load()
            change = rollback(
                config,
                params["to"],
                params.get("reason") or "",
                step_context(context),
                force=bool(params.get("force")),
            )
            context["outlet_events"][assets.champion].extra = {
                "from_version": change.from_version,
                "to_version": change.to_version,
                "reason": change.reason,
                "user": change.user,
            }
            log.info(
                "champion rolled back from v%s to v%s by %s: %s",
                change.from_version,
                change.to_version,
                change.user,
                change.reason,
            )
            log.info("champion history:\n%s", champion_history_table(config))

        rollback_champion()
    return dag

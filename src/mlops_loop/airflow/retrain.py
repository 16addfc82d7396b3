"""`retrain`: on each retrain-decision event, a challenger per pending batch, then its promotion.

Which batches to retrain comes from the loop's store (`pending_retrains`), so a decision made
by either orchestrator is acted on once. Promotions run one at a time, as Dagster's
`mlops_loop_promotion` pool makes them, and the registry's lock serializes them on one machine.
"""

from __future__ import annotations

import logging

from airflow.sdk import DAG, Asset, Param, task, task_group

from mlops_loop.airflow.assets import LoopAssets
from mlops_loop.airflow.context import step_context
from mlops_loop.airflow.dagargs import DagArgs
from mlops_loop.airflow.decisions import BY_BATCH
from mlops_loop.airflow.source import LoopSource

log = logging.getLogger(__name__)


def retrain_dag(source: LoopSource, assets: LoopAssets, args: DagArgs) -> DAG:
    schedule: list[Asset] = [assets.decisions]
    with DAG(
        dag_id=f"{args.prefix}retrain",
        description="Train a challenger for every batch whose retrain decision says so, and "
        "promote it if it proves better than the champion.",
        schedule=schedule,
        params={
            "keys": Param(
                [],
                type="array",
                items={"type": "string"},
                description="Batches to retrain on; empty: every pending retrain decision "
                "(or, with force, the latest accepted batch).",
            ),
            "force": Param(
                False,
                type="boolean",
                description="Train even if the retrain decision says no (a manual retrain).",
            ),
        },
        **args.common(),
    ) as dag:

        @task(task_id="pending_retrains")
        def pending(**context) -> list[str]:
            """The batches to retrain on: those given, or the pending decisions."""
            from mlops_loop.core.steps.decision import pending_retrains
            from mlops_loop.core.store import LoopStore

            config = source.load()
            params = context["params"]
            keys = list(params.get("keys") or [])
            if not keys and params.get("force"):
                keys = LoopStore(config.state_dir).accepted_keys()[-1:]
            keys = keys or pending_retrains(config)
            log.info("to retrain: %s", ", ".join(keys) or "nothing")
            return keys

        @task(task_id="challenger_model", map_index_template=BY_BATCH)
        def challenger_model(key: str, **context) -> None:
            """A challenger trained on the accepted history, when the decision says so."""
            from airflow.sdk.exceptions import AirflowSkipException

            from mlops_loop.core.steps import training

            force = bool(context["params"].get("force"))
            done = training.retrain_batch(
                source.load(), key, step_context(context, key), force=force
            )
            if done.challenger is None:
                raise AirflowSkipException(
                    f"no challenger for batch {key}: {'; '.join(done.decision.reasons)}"
                )
            info = done.challenger
            log.info(
                "batch %s: challenger v%s on %s rows (%s); metrics %s",
                key,
                info.version,
                info.training_rows,
                ", ".join(info.training_parts),
                info.metrics,
            )

        @task(
            task_id="champion_model",
            map_index_template=BY_BATCH,
            outlets=[assets.champion],
            max_active_tis_per_dag=1,
        )
        def champion_model(key: str, **context) -> None:
            """The promotion: the challenger replaces the champion only on evidence."""
            from mlops_loop.core.steps import promotion

            result = promotion.promote_challenger(source.load(), key, step_context(context, key))
            log.info(
                "batch %s: challenger v%s %s; champion v%s. %s",
                key,
                result.challenger_version,
                "promoted" if result.promoted else "rejected",
                result.champion_version_after,
                "; ".join(result.decision.reasons),
            )
            context["outlet_events"][assets.champion].extra = {
                "batch": key,
                "promoted": result.promoted,
                "challenger_version": result.challenger_version,
                "champion_version": result.champion_version_after,
            }
            if result.live_traffic:  # the challenger in shadow on live traffic
                from mlops_loop.core.shadow import ShadowComparison

                live = ShadowComparison(**result.live_traffic).metrics()
                log.info(
                    "batch %s: live traffic; %s",
                    key,
                    ", ".join(f"{k} {v:.4g}" for k, v in sorted(live.items())),
                )
            log.info("champion history:\n%s", result.history_table)

        @task_group(group_id="retrain")
        def retrain(key: str) -> None:
            challenger_model(key) >> champion_model(key)

        retrain.expand(key=pending())
    return dag

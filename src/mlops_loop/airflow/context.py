"""Translation of an Airflow task context into the core's `StepContext`, and failure records."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from mlops_loop.airflow.source import LoopSource
from mlops_loop.core.steps.run import StepContext

log = logging.getLogger(__name__)

#: Tags of the MLflow runs a task logs into: where the Dagster binding puts its run id.
TAG_DAG = "airflow.dag_id"
TAG_RUN = "airflow.run_id"
TAG_MAP_INDEX = "airflow.map_index"


def step_context(context: Mapping[str, Any], key: str | None = None) -> StepContext:
    """Who runs the task: the DAG run (one MLflow run per DAG run and batch), its map index,
    and the Airflow user who triggered it. A task mapped over batches names its `key`."""
    dag_run, ti = context["dag_run"], context["ti"]
    if key is not None:
        from airflow.sdk import get_current_context

        # What the mapped tasks' map_index_template shows: their batch, not a number.
        try:
            get_current_context()["batch_key"] = key  # type: ignore[typeddict-unknown-key]
        except RuntimeError:
            pass  # a failure callback: no task context
    dag_id, run_id = dag_run.dag_id, dag_run.run_id
    user = getattr(dag_run, "triggering_user_name", None) or None
    tags = {TAG_DAG: dag_id, TAG_RUN: run_id}
    map_index = getattr(ti, "map_index", -1)
    if map_index is not None and map_index >= 0:
        tags[TAG_MAP_INDEX] = str(map_index)
    who = f"airflow run {run_id} ({dag_id}" + (f", {user})" if user else ")")
    return StepContext(run_key=f"airflow:{dag_id}:{run_id}", triggered_by=who, tags=tags, user=user)


def batch_of(context: Mapping[str, Any]) -> str | None:
    """The batch a (mapped) task ran for: its `key` argument."""
    key = context.get("batch_key")
    if key is None:
        kwargs = getattr(context.get("task"), "op_kwargs", None) or {}
        key = kwargs.get("key")
    return key if isinstance(key, str) else None


def failure_callback(source: LoopSource) -> Callable[[Mapping[str, Any]], None]:
    """An `on_failure_callback` that does what the Dagster binding's failure sensor does: the
    MLflow run of the failed DAG run and batch is marked FAILED with the failing task and its
    error, and the alert notifiers are told."""

    def on_failure(context: Mapping[str, Any]) -> None:
        from mlops_loop.core.steps.run import notify_failure, record_failure

        ti = context["ti"]
        dag_id = context["dag_run"].dag_id
        error = context.get("exception")
        message = f"task {ti.task_id} failed: " + (
            f"{type(error).__name__}: {error}" if error is not None else "unknown error"
        )
        config = source.load()
        partition = batch_of(context)
        record_failure(config, step_context(context, partition), partition, "failure", message)
        for delivery in notify_failure(config, partition, dag_id, message):
            if not delivery.ok:
                log.warning("failure not delivered by %s: %s", delivery.notifier, delivery.error)

    return on_failure

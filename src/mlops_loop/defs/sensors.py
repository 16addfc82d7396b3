"""Sensors: new files in the landing folder, and retrain decisions that call for a challenger."""

import dagster as dg

from mlops_loop.core.labels import pending_label_files
from mlops_loop.core.store import LoopStore, file_stamp, landed_batches
from mlops_loop.defs.jobs import labels_job, monitor_job, remeasure_job, retrain_job
from mlops_loop.defs.partitions import BATCHES, batches
from mlops_loop.defs.resources import LoopResource


@dg.sensor(
    job=monitor_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a partition for every new batch file and monitors it; a file delivered "
    "again (fixed upstream) is monitored again.",
)
def landing_sensor(context: dg.SensorEvaluationContext, loop: LoopResource) -> dg.SensorResult:
    config = loop.load()
    files, problems = landed_batches(config.sources.landing, config.sources.patterns)
    for problem in problems:
        context.log.warning(problem)
    known = set(context.instance.get_dynamic_partitions(BATCHES))
    new = [k for k in sorted(files) if k not in known]
    store = LoopStore(config.state_dir)
    again = [k for k in sorted(files) if k in known and store.redelivered(k, files[k])]
    requests = [
        dg.RunRequest(partition_key=k, run_key=f"monitor:{k}:{file_stamp(files[k])}")
        for k in [*new, *again]
    ]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[batches.build_add_request(new)] if new else [],
        skip_reason=None if requests else dg.SkipReason(f"nothing new in {config.sources.landing}"),
    )


@dg.sensor(
    job=retrain_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a retrain for every batch whose retrain decision says so "
    "(drift or a performance drop). A batch that failed the quality gate never gets a "
    "decision, so it never triggers one.",
)
def retrain_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("retrain_decision"), after_storage_id=after),
        limit=100,
        ascending=True,
    ).records
    # The latest decision per batch counts (a batch decided again after late labels).
    latest = {}
    for record in records:
        mat = record.asset_materialization
        if mat is not None:
            latest[mat.partition] = record
    requests = []
    for record in latest.values():
        mat = record.asset_materialization
        if mat is None or not mat.metadata.get("retrain") or not mat.metadata["retrain"].value:
            continue
        if _retrained_since(context.instance, mat.partition, record.storage_id):
            continue  # e.g. run by hand, or by an earlier process with its own cursor
        requests.append(
            dg.RunRequest(
                partition_key=mat.partition,
                run_key=f"retrain:{mat.partition}:{record.storage_id}",
                tags={"mlops_loop/trigger": "retrain_decision"},
            )
        )
    cursor = str(records[-1].storage_id) if records else context.cursor
    return dg.SensorResult(
        run_requests=requests,
        cursor=cursor,
        skip_reason=None if requests else dg.SkipReason("no retrain called for"),
    )


def _retrained_since(instance: dg.DagsterInstance, partition: str | None, storage_id: int) -> bool:
    """Whether a challenger was already materialized for `partition` after that decision."""
    return _materialized_since(instance, "challenger_model", partition, storage_id)


def _materialized_since(
    instance: dg.DagsterInstance, asset: str, partition: str | None, storage_id: int
) -> bool:
    """Whether `asset` was materialized for `partition` after the event `storage_id`."""
    later = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset),
            asset_partitions=[partition] if partition else None,
            after_storage_id=storage_id,
        ),
        limit=1,
    ).records
    return bool(later)


@dg.sensor(
    jobs=[labels_job, remeasure_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads label files as they land (sources.labels), then measures again the "
    "realized performance of every past batch the new labels belong to.",
)
def label_sensor(context: dg.SensorEvaluationContext, loop: LoopResource) -> dg.SensorResult:
    config = loop.load()
    requests: list[dg.RunRequest] = []
    pending = pending_label_files(config)
    if pending:
        stamps = ",".join(f"{name}@{file_stamp(path)}" for name, path in pending.items())
        requests.append(
            dg.RunRequest(job_name=labels_job.name, run_key=f"labels:{stamps}"),
        )
    # Each ingest names the batches it touched; measure those again.
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("late_labels"), after_storage_id=after),
        limit=100,
        ascending=True,
    ).records
    known = set(context.instance.get_dynamic_partitions(BATCHES))
    for record in records:
        mat = record.asset_materialization
        value = mat.metadata.get("remeasure") if mat else None
        for key in getattr(value, "value", None) or []:
            if key in known and not _materialized_since(
                context.instance, "model_performance", key, record.storage_id
            ):
                requests.append(
                    dg.RunRequest(
                        job_name=remeasure_job.name,
                        partition_key=key,
                        run_key=f"remeasure:{key}:{record.storage_id}",
                        tags={"mlops_loop/trigger": "late_labels"},
                    )
                )
    return dg.SensorResult(
        run_requests=requests,
        cursor=str(records[-1].storage_id) if records else context.cursor,
        skip_reason=None if requests else dg.SkipReason("no new labels"),
    )


@dg.run_failure_sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records every failed loop run in MLflow (the run is marked FAILED with the "
    "failing step and its error, counted in step_failures) and tells the alert notifiers.",
)
def failure_sensor(context: dg.RunFailureSensorContext, loop: LoopResource) -> None:
    from mlops_loop.core.loop import StepContext, notify_failure, record_failure

    run = context.dagster_run
    steps = [e.step_key for e in context.get_step_failure_events() if e.step_key]
    message = context.failure_event.message or "run failed"
    if steps:
        message = f"step(s) {', '.join(steps)} failed: {message}"
    ctx = StepContext(
        run_key=run.run_id,
        triggered_by=f"dagster run {run.run_id[:8]} ({run.job_name})",
        tags={"dagster.run_id": run.run_id, "dagster.job": run.job_name},
    )
    config = loop.load()
    partition = run.tags.get("dagster/partition")
    record_failure(config, ctx, partition, "failure", message)
    for delivery in notify_failure(config, partition, run.job_name, message):
        if not delivery["ok"]:
            context.log.warning(
                f"failure not delivered by {delivery['notifier']}: {delivery['error']}"
            )

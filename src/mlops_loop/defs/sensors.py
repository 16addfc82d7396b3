"""Sensors: new files in the landing folder, and retrain decisions that call for a challenger."""

import os

import dagster as dg

from mlops_loop.core.errors import InvalidConfigError
from mlops_loop.core.labels import pending_label_files
from mlops_loop.core.steps.decision import pending_retrains
from mlops_loop.core.store import LoopStore, file_stamp, landed_batches
from mlops_loop.defs.jobs import REMEASURED, labels_job, monitor_job, retrain_job
from mlops_loop.defs.partitions import BATCHES, batches
from mlops_loop.defs.resources import LoopResource

SENSOR_SECONDS_ENV = "MLOPS_LOOP_SENSOR_SECONDS"


def _sensor_seconds() -> int:
    raw = os.environ.get(SENSOR_SECONDS_ENV, "30")
    if not raw.strip().isdigit() or int(raw) < 1:
        raise InvalidConfigError(
            f"${SENSOR_SECONDS_ENV} is {raw!r}: expected a whole number of seconds, at least 1"
        )
    return int(raw)


#: How often each sensor looks (seconds): $MLOPS_LOOP_SENSOR_SECONDS when the code location
#: loads, else 30. The demo ticks its sensors itself, in the scenario's order, and sets 1.
SENSOR_SECONDS = _sensor_seconds()


@dg.sensor(
    job=monitor_job,
    minimum_interval_seconds=SENSOR_SECONDS,
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
    # The loop's store says what is monitored, whichever orchestrator monitored it: a batch
    # that another one (Airflow) monitored gets its partition here, not a second run.
    store = LoopStore(config.state_dir)
    todo = set(store.unmonitored(files))
    again = [k for k in sorted(files) if k in known and store.redelivered(k, files[k])]
    requests = [
        dg.RunRequest(partition_key=k, run_key=f"monitor:{k}:{file_stamp(files[k])}")
        for k in [*[k for k in new if k in todo], *again]
    ]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[batches.build_add_request(new)] if new else [],
        skip_reason=None if requests else dg.SkipReason(f"nothing new in {config.sources.landing}"),
    )


@dg.sensor(
    job=retrain_job,
    minimum_interval_seconds=SENSOR_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a retrain for every batch whose retrain decision says so "
    "(drift or a performance drop). A batch that failed the quality gate never gets a "
    "decision, so it never triggers one.",
)
def retrain_sensor(context: dg.SensorEvaluationContext, loop: LoopResource) -> dg.SensorResult:
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
    # Pending in the loop's store: not answered since by a retrain of either orchestrator.
    pending = set(pending_retrains(loop.load())) if latest else set()
    for record in latest.values():
        mat = record.asset_materialization
        if mat is None or not mat.metadata.get("retrain") or not mat.metadata["retrain"].value:
            continue
        if mat.partition not in pending or _retrained_since(
            context.instance, mat.partition, record.storage_id
        ):
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
    job=labels_job,
    minimum_interval_seconds=SENSOR_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads label files as they land (sources.labels); remeasure_sensor then "
    "measures again every past batch the new labels belong to.",
)
def label_sensor(context: dg.SensorEvaluationContext, loop: LoopResource) -> dg.SensorResult:
    config = loop.load()
    pending = pending_label_files(config)
    if not pending:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new label file"))
    stamps = ",".join(f"{name}@{file_stamp(path)}" for name, path in pending.items())
    return dg.SensorResult(
        run_requests=[dg.RunRequest(job_name=labels_job.name, run_key=f"labels:{stamps}")]
    )


@dg.sensor(
    asset_selection=REMEASURED,
    minimum_interval_seconds=SENSOR_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After late labels are read, starts one backfill that measures again the "
    "realized performance of every past batch they belong to (a run per batch).",
)
def remeasure_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    # Each ingest of late labels names the batches it touched; measure those again.
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("late_labels"), after_storage_id=after),
        limit=100,
        ascending=True,
    ).records
    known = set(context.instance.get_dynamic_partitions(BATCHES))
    touched: list[str] = []
    for record in records:
        mat = record.asset_materialization
        value = mat.metadata.get("remeasure") if mat else None
        for key in getattr(value, "value", None) or []:
            if (
                key in known
                and key not in touched
                and not _materialized_since(
                    context.instance, "model_performance", key, record.storage_id
                )
            ):
                touched.append(key)
    requests = [remeasure_backfill(context, touched)] if touched else []
    return dg.SensorResult(
        run_requests=requests,
        cursor=str(records[-1].storage_id) if records else context.cursor,
        skip_reason=None if requests else dg.SkipReason("no batch to measure again"),
    )


REMEASURE_TAGS = {"mlops_loop/trigger": "late_labels"}


def remeasure_backfill(context: dg.SensorEvaluationContext, keys: list[str]) -> dg.RunRequest:
    """One Dagster backfill that measures the batches `keys` again (a run per batch).

    The daemon turns the request into a backfill, listed on the UI's Backfills page with the
    status of each batch. Dagster 1.13 builds such a request only through
    `RunRequest.for_asset_graph_subset`, which it marks private (pinned by constraints.txt;
    `tests/dagster/test_late_labels.py` fails if it changes).
    """
    from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
    from dagster._core.definitions.events import AssetKeyPartitionKey

    assert context.repository_def is not None, "sensor evaluated without its definitions"
    subset = AssetGraphSubset.from_asset_partition_set(
        {AssetKeyPartitionKey(asset.key, k) for asset in REMEASURED for k in keys},
        context.repository_def.asset_graph,
    )
    return dg.RunRequest.for_asset_graph_subset(subset, tags=dict(REMEASURE_TAGS))


def backfill_partitions(request: dg.RunRequest) -> list[str]:
    """The batches a re-measurement backfill request covers ([] for an ordinary run request);
    for callers that tick the sensors themselves and run the work in process."""
    subset = getattr(request, "asset_graph_subset", None)
    if subset is None:
        return []
    parts = subset.partitions_subsets_by_asset_key.get(REMEASURED[0].key)
    return sorted(parts.get_partition_keys()) if parts is not None else []


@dg.sensor(
    job=monitor_job,
    minimum_interval_seconds=SENSOR_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After relearn_suite_job, monitors again (one monitor_job run each) every batch "
    "the old quality suite quarantined, so the new suite judges it and an accepted one flows "
    "on to drift, scoring and training.",
)
def revalidate_sensor(context: dg.SensorEvaluationContext, loop: LoopResource) -> dg.SensorResult:
    from mlops_loop.core.steps.relearn import relearn_history

    config = loop.load()
    history = relearn_history(config)
    if not history:
        return dg.SensorResult(skip_reason=dg.SkipReason("the quality suite was never relearnt"))
    last = history[-1]
    store = LoopStore(config.state_dir)
    files, _ = landed_batches(config.sources.landing, config.sources.patterns)
    still = set(store.quarantined_keys())
    keys = [k for k in last.quarantined if k in still and k in files]
    requests = [
        dg.RunRequest(
            partition_key=k,
            run_key=f"revalidate:suite-v{last.version}:{k}",
            tags={
                "mlops_loop/trigger": "relearn_suite",
                "mlops_loop/suite_version": str(last.version),
            },
        )
        for k in keys
    ]
    return dg.SensorResult(
        run_requests=requests,
        skip_reason=None if requests else dg.SkipReason("no quarantined batch to re-validate"),
    )


@dg.run_failure_sensor(
    minimum_interval_seconds=SENSOR_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records every failed loop run in MLflow (the run is marked FAILED with the "
    "failing step and its error, counted in step_failures) and tells the alert notifiers.",
)
def failure_sensor(context: dg.RunFailureSensorContext, loop: LoopResource) -> None:
    from mlops_loop.core.steps.run import StepContext, notify_failure, record_failure

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
        if not delivery.ok:
            context.log.warning(f"failure not delivered by {delivery.notifier}: {delivery.error}")

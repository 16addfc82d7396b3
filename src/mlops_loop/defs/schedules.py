"""Schedules: catch up on unmonitored batches, and retrain periodically."""

import dagster as dg

from mlops_loop.core.store import LoopStore
from mlops_loop.defs.jobs import monitor_job, retrain_job
from mlops_loop.defs.partitions import BATCHES
from mlops_loop.defs.resources import LoopResource


def monitor_schedule(cron: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        job=monitor_job,
        cron_schedule=cron,
        name="monitor_schedule",
        description="Monitors every registered batch that has no quality verdict yet "
        "(missed by the sensor, or failed before the gate).",
    )
    def _monitor(context: dg.ScheduleEvaluationContext, loop: LoopResource):
        store = LoopStore(loop.load().state_dir)
        keys = context.instance.get_dynamic_partitions(BATCHES)
        todo = [k for k in keys if store.batch_json(k, "quality") is None]
        if not todo:
            return dg.SkipReason("every batch has been monitored")
        stamp = (
            context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else ""
        )
        return [dg.RunRequest(partition_key=k, run_key=f"monitor:{k}:{stamp}") for k in todo]

    return _monitor


def retrain_schedule(cron: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        job=retrain_job,
        cron_schedule=cron,
        name="retrain_schedule",
        description="Periodic retrain on the latest accepted batch, whatever drift says.",
    )
    def _retrain(context: dg.ScheduleEvaluationContext, loop: LoopResource):
        accepted = LoopStore(loop.load().state_dir).accepted_keys()
        if not accepted:
            return dg.SkipReason("no accepted batch to retrain on yet")
        return dg.RunRequest(
            partition_key=accepted[-1],
            run_config={"ops": {"challenger_model": {"config": {"force": True}}}},
            tags={"mlops_loop/trigger": "schedule"},
        )

    return _retrain

"""Translation of a Dagster execution context into the core's `StepContext`."""

import dagster as dg

from mlops_loop.core.steps.run import StepContext


def step_context(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> StepContext:
    run = context.run
    tags = {"dagster.run_id": context.run_id, "dagster.job": run.job_name}
    user = run.tags.get("user") or run.tags.get("dagster/user")
    who = f"dagster run {context.run_id[:8]} ({run.job_name}" + (f", {user})" if user else ")")
    return StepContext(
        run_key=context.run_id, triggered_by=who, tags=tags, job=run.job_name, user=user or None
    )

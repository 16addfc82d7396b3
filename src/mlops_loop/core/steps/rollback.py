"""Rolling the champion back to an earlier version, with who, when and why: `rollback_job`."""

from __future__ import annotations

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.registry import AliasChange, MlflowRegistry
from mlops_loop.core.steps.promotion import log_history
from mlops_loop.core.steps.run import StepContext, step_run
from mlops_loop.core.tracking import log_json, log_metrics, log_params


def rollback(
    config: LoopConfig,
    to: int | str,
    reason: str,
    ctx: StepContext | None = None,
    *,
    force: bool = False,
) -> AliasChange:
    """Move `champion` back to a version (or "previous"), recording who, when and why.

    Raises:
        RegistryError: unknown version, nothing to roll back to, no reason given, or a
            version that was never champion (its rejected reason named) without `force`.
        TrackingError: the tracking server cannot be reached or refused.
    """
    ctx = ctx or StepContext()
    registry = MlflowRegistry.from_config(config)
    registry.reconcile(ctx.triggered_by)
    change = registry.rollback(to, reason=reason, triggered_by=ctx.triggered_by, force=force)
    with step_run(config, ctx, "rollback"):
        log_json(change.to_dict(), "registry/rollback.json")
        log_history(registry)
        log_params(
            {
                "rollback.from": change.from_version,
                "rollback.to": change.to_version,
                "rollback.reason": change.reason,
                "rollback.triggered_by": change.triggered_by,
            }
        )
        log_metrics({"champion_version": change.to_version})
    return change


def champion_history_table(config: LoopConfig, last: int = 20) -> str:
    """The latest changes of the champion, newest first, as a markdown table."""
    return MlflowRegistry.from_config(config).history_table(last)

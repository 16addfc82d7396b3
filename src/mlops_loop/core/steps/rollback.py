"""Rolling the champion back to an earlier version, with who, when and why: `rollback_job`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.performance import improvement
from mlops_loop.core.registry import METRIC_TAG, AliasChange, MlflowRegistry
from mlops_loop.core.steps.promotion import log_history
from mlops_loop.core.steps.run import StepContext, describe_active_run, step_run
from mlops_loop.core.tracking import log_json, log_metrics, log_params

#: How much worse on its own hold-out (primary metric) a rollback target may be before the
#: rollback warns; `promotion.min_delta` when that is larger.
WORSE_BY = 0.01


@dataclass(frozen=True)
class RollbackPlan:
    """What a rollback would do, read before anything moves: where `to` resolves, and the
    target's hold-out metrics against the current champion's."""

    requested: str
    from_version: int | None
    to_version: int
    metric: str
    from_metric: float | None
    to_metric: float | None
    comparison: list[dict[str, Any]] = field(default_factory=list)  # metric, target, champion
    warning: str | None = None  # set when the target is measurably worse

    @property
    def worse(self) -> bool:
        return self.warning is not None

    def describe(self) -> str:
        """One sentence: where `to` resolves and how the two versions compare."""
        where = (
            f"'{self.requested}' resolves to v{self.to_version}"
            if str(self.requested).strip().lower() == "previous"
            else f"target v{self.to_version}"
        )
        champion = "none" if self.from_version is None else f"v{self.from_version}"
        return (
            f"{where}; hold-out {self.metric}: v{self.to_version} {_fmt(self.to_metric)} against "
            f"the champion {champion} {_fmt(self.from_metric)}"
        )


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3f}"


def _metrics(tags: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in tags.items():
        if key.startswith(METRIC_TAG):
            try:
                out[key.removeprefix(METRIC_TAG)] = float(value)
            except (TypeError, ValueError):
                continue
    return out


def plan_rollback(config: LoopConfig, to: int | str) -> RollbackPlan:
    """Resolve `to` ("previous" or a version) and compare the target with the champion on the
    metrics each recorded on its hold-out, moving nothing.

    Raises:
        RegistryError: no previous champion, or an unknown version.
    """
    registry = MlflowRegistry.from_config(config)
    current = registry.champion()
    target = registry.rollback_target(to, current)
    target_metrics = _metrics(registry.version(target).tags or {})
    current_metrics = _metrics(registry.version(current).tags or {}) if current else {}
    name = config.promotion.metric
    names = [name, *sorted((set(target_metrics) | set(current_metrics)) - {name})]
    comparison = [
        {
            "metric": n,
            "target": target_metrics.get(n),
            "champion": current_metrics.get(n),
            "change": None
            if n not in target_metrics or n not in current_metrics
            else improvement(n, target_metrics[n], current_metrics[n]),
        }
        for n in names
    ]
    to_metric, from_metric = target_metrics.get(name), current_metrics.get(name)
    warning = None
    threshold = max(WORSE_BY, config.promotion.min_delta)
    if to_metric is not None and from_metric is not None:
        loss = -improvement(name, to_metric, from_metric)
        if loss > threshold:
            warning = (
                f"v{target} is measurably worse than the champion v{current} on its hold-out: "
                f"{name} {to_metric:.3f} against {from_metric:.3f} ({loss:.3f} worse, more than "
                f"{threshold:g}); rolling back anyway, as asked"
            )
    return RollbackPlan(
        requested=str(to),
        from_version=current,
        to_version=target,
        metric=name,
        from_metric=from_metric,
        to_metric=to_metric,
        comparison=comparison,
        warning=warning,
    )


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
    plan = plan_rollback(config, to) if reason and reason.strip() else None
    change = registry.rollback(
        to, reason=reason, triggered_by=ctx.triggered_by, force=force, user=ctx.user
    )
    with step_run(config, ctx, "rollback"):
        log_json(change.to_dict(), "registry/rollback.json")
        if plan is not None:
            log_json(
                {**asdict(plan), "description": plan.describe()}, "registry/rollback_plan.json"
            )
            if plan.warning:
                log_params({"rollback.warning": plan.warning})
        describe_active_run(
            config,
            f"**Champion rolled back** from v{change.from_version} to v{change.to_version}: "
            f"{change.reason}"
            + (f"\n\n{plan.describe()}" if plan is not None else "")
            + (f"\n\n**Warning**: {plan.warning}" if plan is not None and plan.warning else ""),
            name=f"rollback v{change.from_version} → v{change.to_version}",
        )
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

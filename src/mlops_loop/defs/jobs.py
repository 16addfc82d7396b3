"""Jobs: bootstrap, monitor a batch, retrain on a batch, roll the champion back, relearn the
quality suite."""

from typing import Any

import dagster as dg
from pydantic import Field, field_validator

from mlops_loop.core.steps.relearn import relearn_suite
from mlops_loop.core.steps.rollback import champion_history_table, plan_rollback, rollback
from mlops_loop.defs import metadata as md
from mlops_loop.defs.assets import (
    baseline_model,
    challenger_model,
    champion_model,
    drift_report,
    late_labels,
    model_performance,
    monitored_batch,
    reference_snapshot,
    retrain_decision,
    scored_batch,
)
from mlops_loop.defs.context import step_context
from mlops_loop.defs.partitions import BATCHES, batches
from mlops_loop.defs.resources import LoopResource

bootstrap_job = dg.define_asset_job(
    "bootstrap_job",
    selection=[reference_snapshot, baseline_model],
    description="Snapshot the reference and make sure a champion exists.",
)

monitor_job = dg.define_asset_job(
    "monitor_job",
    partitions_def=batches,
    selection=[monitored_batch, drift_report, scored_batch, model_performance, retrain_decision],
    description="Quality gate, drift, scoring, performance and the retrain decision for a batch.",
)

retrain_job = dg.define_asset_job(
    "retrain_job",
    partitions_def=batches,
    selection=[challenger_model, champion_model],
    description="Train a challenger on a batch and promote it if it proves better.",
)


labels_job = dg.define_asset_job(
    "labels_job",
    selection=[late_labels],
    description="Read label files that landed apart from their batches.",
)

#: What a re-measurement materializes again for a batch: remeasure_job by hand, or the
#: backfill remeasure_sensor asks for.
REMEASURED = [model_performance, retrain_decision]

remeasure_job = dg.define_asset_job(
    "remeasure_job",
    partitions_def=batches,
    selection=REMEASURED,
    description="Measure a past batch's realized performance again with the labels known now, "
    "and decide again whether it calls for a retrain.",
)


#: What the Launchpad shows in `reason` until it is replaced: a run launched with it is refused.
REASON_PROMPT = "REPLACE ME: why the champion is rolled back (kept in the audit history)"


class RollbackConfig(dg.Config):
    to: str = Field(
        default="previous",
        description="Model version to make champion, or "
        "'previous' for the champion before the current one.",
    )
    reason: str = Field(
        default=REASON_PROMPT,
        description="Why the champion is rolled back (kept in the audit history; required: "
        "replace the prompt).",
    )
    force: bool = Field(
        default=False,
        description="Also make champion a version that never was one (a rejected challenger); "
        "without it such a rollback is refused, naming why the version was rejected.",
    )

    def refuse_without_reason(self) -> None:
        """Refuse the Launchpad's prompt left as it is, or a blank reason (the default is not
        validated by the config schema: the check runs when the run starts).

        Raises:
            dagster.Failure: naming the prompt to replace.
        """
        if not self.reason.strip() or self.reason.strip() == REASON_PROMPT:
            raise dg.Failure(
                description="reason: a rollback needs a reason (who asked and why); replace the "
                f"Launchpad's prompt {REASON_PROMPT!r} with yours, got {self.reason!r}"
            )


def _latest_batch(context: dg.OpExecutionContext) -> str | None:
    keys = context.instance.get_dynamic_partitions(BATCHES)
    return max(keys) if keys else None


@dg.op(description="Move the champion alias back and record who, when and why.")
def rollback_champion(context: dg.OpExecutionContext, config: RollbackConfig, loop: LoopResource):
    config.refuse_without_reason()
    cfg = loop.load()
    plan = plan_rollback(cfg, config.to)
    context.log.info("Rollback of the champion: %s", plan.describe())
    if plan.warning:
        context.log.warning(plan.warning)
    change = rollback(cfg, config.to, config.reason, step_context(context), force=config.force)
    # Columns named by version: the target's hold-out metrics first, then the champion's.
    target, champion = f"v{plan.to_version} (target)", f"v{plan.from_version} (champion)"
    meta: dict[str, Any] = {
        "outcome": "rolled_back",
        "champion_version": change.to_version,
        "from_version": change.from_version if change.from_version is not None else -1,
        "to_version": change.to_version,
        "requested": config.to,
        "resolved": plan.describe(),
        "warning": plan.warning or "none",
        "reason": change.reason,
        "triggered_by": change.triggered_by,
        "user": change.user,
        "at": change.at,
        **md.numbers({plan.metric: plan.to_metric, f"replaced_{plan.metric}": plan.from_metric}),
        "comparison": md.table(
            [
                {"metric": r["metric"], target: r["target"], champion: r["champion"], **r}
                for r in plan.comparison
            ],
            ["metric", target, champion, "change"],
        ),
        "champion_history": dg.MetadataValue.md(champion_history_table(cfg)),
    }
    # The champion as of the latest batch is now the rolled-back one: its champion_model
    # partition says so (outcome rolled_back), so the asset shows the champion that serves.
    latest = _latest_batch(context)
    if latest is not None:
        context.log_event(
            dg.AssetMaterialization(
                asset_key="champion_model",
                partition=latest,
                description=f"Rolled back to v{change.to_version}: {change.reason}",
                metadata=meta,
            )
        )
        check = md.promotion_check(
            "rolled_back",
            f"rolled back from v{change.from_version} to v{change.to_version}: {change.reason}",
            {"to_version": change.to_version},
        )
        context.log_event(
            dg.AssetCheckEvaluation(  # type: ignore[arg-type]  # log_event takes check events too
                asset_key=dg.AssetKey("champion_model"),
                check_name=check.check_name or "promotion",
                passed=bool(check.passed),
                severity=check.severity,
                description=check.description,
                metadata=check.metadata,
                partition=latest,
            )
        )
    else:
        context.log_event(dg.AssetObservation(asset_key="champion_model", metadata=meta))
    context.log.info(
        "Champion rolled back from v%s to v%s: %s",
        change.from_version,
        change.to_version,
        change.reason,
    )
    yield dg.Output(change.to_version, metadata=meta)


@dg.job(
    description="Roll the champion back to a version or to the previous champion. "
    "Launch it from the Launchpad, replacing the reason's prompt with yours; the run's log "
    "says what 'previous' resolves to and how it compares with the champion, and warns when "
    "it is measurably worse on its hold-out.",
    executor_def=dg.in_process_executor,
    config={
        "ops": {
            "rollback_champion": {
                "config": {"to": "previous", "reason": REASON_PROMPT, "force": False}
            }
        }
    },
)
def rollback_job():
    rollback_champion()


class RelearnSuiteConfig(dg.Config):
    reason: str = Field(
        description="Why the suite is relearnt, e.g. 'income is sent in cents since "
        "2026-03-01' (kept in the audit history; required)."
    )
    batches: list[str] = Field(
        default_factory=list,
        description="Batch keys to learn from as well as the reference: accepted ones, or "
        "quarantined ones named on purpose (the new shape the upstream sends).",
    )

    @field_validator("reason")
    @classmethod
    def _reason_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "reason: a relearn of the quality suite needs a reason (who asked and why), "
                f"got {value!r}"
            )
        return value


@dg.op(description="Relearn the quality suite; keep the old one; record who, when and why.")
def relearn_quality_suite(
    context: dg.OpExecutionContext, config: RelearnSuiteConfig, loop: LoopResource
):
    cfg = loop.load()
    record = relearn_suite(cfg, config.reason, config.batches, step_context(context))
    meta: dict[str, Any] = {
        "suite_version": record.version,
        "previous_suite_version": record.previous_version,
        "reason": record.reason,
        "triggered_by": record.triggered_by,
        "user": record.user,
        "at": record.at,
        "batches": ", ".join(record.batches) or "none (reference only)",
        "rows": record.rows,
        "expectations": record.expectations,
        "revalidate": ", ".join(record.quarantined) or "none",
        "mlflow_run_id": record.run_id or "",
        "champion_history": dg.MetadataValue.md(champion_history_table(cfg)),
    }
    context.log_event(dg.AssetObservation(asset_key="reference_snapshot", metadata=meta))
    context.log.info(
        "Quality suite relearnt (v%s -> v%s): %s; revalidate_sensor re-runs monitor_job on %s",
        record.previous_version,
        record.version,
        record.reason,
        ", ".join(record.quarantined) or "no batch",
    )
    yield dg.Output(record.version, metadata=meta)


@dg.job(
    description="Relearn the quality suite from the reference (and the batches named) when the "
    "upstream changed for good; the old suite is kept. Launch it from the Launchpad with a "
    "reason; revalidate_sensor then re-runs monitor_job on the batches the old suite "
    "quarantined.",
    executor_def=dg.in_process_executor,
)
def relearn_suite_job():
    relearn_quality_suite()

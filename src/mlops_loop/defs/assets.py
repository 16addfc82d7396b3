"""The loop's assets. Each one calls a single core step and translates its result."""

import warnings
from typing import Any

import dagster as dg
from pydantic import Field

from mlops_loop.core.steps import (
    alerts,
    decision,
    drift,
    ingest,
    labels,
    performance,
    promotion,
    quality,
    reference,
    scoring,
    training,
)
from mlops_loop.core.store import LoopStore, landed_batches
from mlops_loop.defs import metadata as md
from mlops_loop.defs.context import step_context
from mlops_loop.defs.partitions import batches
from mlops_loop.defs.resources import LoopResource

MONITORING = "monitoring"
MODELS = "models"
# For runs launched by hand or by the automation daemon: a monitoring step follows its batch
# only once the batch passed the quality gate (eager() alone ignores failed checks).
AFTER_GATE = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_match(
    dg.AutomationCondition.all_checks_match(
        dg.AutomationCondition.check_passed() | dg.AutomationCondition.will_be_requested()
    ).with_label("all_checks_passed")
).with_label("all_deps_checks_passed")


def _quarantined(context: dg.AssetExecutionContext, loop: LoopResource) -> bool:
    """True (and said in the run's log) when the quality gate quarantined this batch.

    A quarantine is an outcome, not a failure: the step yields no output, so the steps after it
    are skipped and the run still succeeds; the `quality_gate` check carries the verdict.
    """
    key = context.partition_key
    verdict = LoopStore(loop.load().state_dir).batch_json(key, "quality")
    if verdict is None or verdict.get("success"):
        return False
    context.log.info(
        "Batch %s is quarantined by the quality gate: no %s for it (see the quality_gate check)",
        key,
        context.asset_key.to_user_string(),
    )
    return True


def _batch_check(name: str, **kwargs: Any) -> dg.AssetCheckSpec:
    """A check evaluated per batch partition (a feature Dagster still calls preview)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, partitions_def=batches, **kwargs)


@dg.asset(group_name=MONITORING, kinds={"parquet", "great_expectations"})
def reference_snapshot(
    context: dg.AssetExecutionContext, loop: LoopResource
) -> dg.MaterializeResult:
    """The reference data, its content digest, and the quality suite learnt from it."""
    info = reference.take_reference_snapshot(loop.load(), step_context(context))
    return dg.MaterializeResult(
        metadata={
            "rows": info.rows,
            "digest": info.digest,
            "expectations": info.expectations,
            "source": info.source,
            "dagster/row_count": info.rows,
            **md.suite_notes(info.suite_notes),
        }
    )


@dg.asset(group_name=MODELS, deps=[reference_snapshot], kinds={"mlflow", "scikit-learn"})
def baseline_model(context: dg.AssetExecutionContext, loop: LoopResource) -> dg.MaterializeResult:
    """The first champion, trained on the reference when the registry has none."""
    info = reference.ensure_champion(loop.load(), step_context(context))
    meta: dict[str, Any] = {"champion_version": info.champion, "trained": info.trained}
    meta.update(md.numbers(info.metrics))
    if info.external_change is not None:
        meta["external_change"] = dg.MetadataValue.json(info.external_change.to_dict())
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    group_name=MONITORING,
    partitions_def=batches,
    deps=[reference_snapshot],
    kinds={"parquet"},
    check_specs=[
        # Per batch: a quarantined batch keeps its failed status whatever later ones do.
        _batch_check(
            "quality_gate",
            asset="monitored_batch",
            description="Great Expectations suite learnt from the reference; a failed batch "
            "is quarantined: the run succeeds and the steps after the gate are skipped.",
        ),
        _batch_check(
            "quality_gate_stuck",
            asset="monitored_batch",
            description="The stuck-gate alert: fails when this batch makes "
            "alerts.quality_stuck_after batches in a row quarantined by the same expectation "
            "(the upstream or the suite changed). Relearn the suite with relearn_suite_job.",
        ),
    ],
)
def monitored_batch(context: dg.AssetExecutionContext, loop: LoopResource):
    """One arriving batch file, copied into the loop's store and put through the quality gate."""
    config = loop.load()
    key = context.partition_key
    files, _ = landed_batches(config.sources.landing, config.sources.patterns)
    if key not in files:
        raise dg.Failure(f"batch {key!r} is not in the landing folder {config.sources.landing}")
    info = ingest.ingest_batch(config, key, files[key])
    ctx = step_context(context)
    result = quality.check_quality(config, key, ctx)
    stuck = alerts.check_gate_stuck(config, key, ctx)
    for delivery in stuck.deliveries:
        if not delivery.ok:
            context.log.warning(f"alert not delivered by {delivery.notifier}: {delivery.error}")
    yield dg.MaterializeResult(
        metadata={
            "rows": info.rows,
            "digest": info.digest,
            "source": info.source,
            "dagster/row_count": info.rows,
            "quality_success": result.success,
            "served": ingest.served_figures(LoopStore(config.state_dir), key) is not None,
        },
        check_results=[
            md.quality_check(result),
            md.alerts_check(stuck, check_name="quality_gate_stuck"),
        ],
    )


@dg.asset(
    output_required=False,
    automation_condition=AFTER_GATE,
    group_name=MONITORING,
    partitions_def=batches,
    deps=[monitored_batch, reference_snapshot],
    kinds={"scipy"},
)
def drift_report(context: dg.AssetExecutionContext, loop: LoopResource):
    """Per-feature and dataset-level drift of the batch against the reference."""
    if _quarantined(context, loop):
        return
    result = drift.evaluate_batch_drift(loop.load(), context.partition_key, step_context(context))
    meta = md.drift(result.report, result.html_path)
    if result.segments:
        meta["segments"] = md.table(
            result.segments,
            ["segment", "value", "rows", "share", "reference_share", "drift_share", "note"],
        )
    yield dg.MaterializeResult(metadata=meta)


@dg.asset(
    output_required=False,
    automation_condition=AFTER_GATE,
    group_name=MONITORING,
    partitions_def=batches,
    deps=[monitored_batch, baseline_model],
    kinds={"mlflow"},
)
def scored_batch(context: dg.AssetExecutionContext, loop: LoopResource):
    """The batch scored by the model `champion` points at when the run starts; a served batch
    keeps the predictions it was served with, and shows the endpoint's online figures."""
    if _quarantined(context, loop):
        return
    info = scoring.score_batch(loop.load(), context.partition_key, step_context(context))
    yield dg.MaterializeResult(
        metadata={
            "champion_version": info.champion_version,
            "rows": info.rows,
            **md.operations(info.operations),
            **md.serving(info.serving),
        }
    )


@dg.asset(
    output_required=False,
    automation_condition=AFTER_GATE,
    group_name=MONITORING,
    partitions_def=batches,
    deps=[scored_batch],
)
def model_performance(context: dg.AssetExecutionContext, loop: LoopResource):
    """Realized performance of the champion on the batch's labelled rows, the performance
    estimated from its scores alone (before labels arrive), and both per segment."""
    if _quarantined(context, loop):
        return
    config = loop.load()
    perf = performance.measure_performance(config, context.partition_key, step_context(context))
    name = perf.metric_name
    # Plotted: the primary metric first, then what tells whether to trust it; every other
    # metric goes in the `metrics` table instead of a plot of its own.
    meta = md.numbers(
        {
            name: perf.metrics.get(name),
            f"estimated_{name}": perf.estimated_metrics.get(name),
            "label_coverage": perf.label_coverage,
            "baseline_metric": perf.baseline_metric,
        }
    )
    for out in perf.output_drift:
        meta.update(md.numbers({f"{out.role}_drift_effect": out.effect_size}))
    meta.update(md.numbers({"champion_version": perf.champion_version}))
    meta["task"] = f"{config.task} (primary metric {name})"
    others = sorted((set(perf.metrics) | set(perf.estimated_metrics)) - {name})
    meta["metrics"] = md.table(
        [
            {
                "metric": m,
                "realized": perf.metrics.get(m),
                "estimated": perf.estimated_metrics.get(m),
            }
            for m in [name, *others]
        ],
        ["metric", "realized", "estimated"],
    )
    if perf.output_drift:
        meta["output_drift"] = md.table(
            [o.to_dict() for o in perf.output_drift],
            ["role", "drifted", "effect_size", "threshold", "p_value", "method", "name", "error"],
        )
    if perf.estimate and perf.estimate.get("warning"):
        meta["estimate_warning"] = perf.estimate["warning"]
    if perf.segments:
        meta["segments"] = md.table(
            perf.segments,
            ["segment", "value", "rows", "share", "labelled", name, f"estimated_{name}"],
        )
    yield dg.MaterializeResult(metadata=meta)


@dg.asset(
    output_required=False,
    automation_condition=AFTER_GATE,
    group_name=MODELS,
    partitions_def=batches,
    deps=[drift_report, model_performance],
    check_specs=[
        _batch_check(
            "alerts",
            asset="retrain_decision",
            description="The loop's alert rules over the batch metrics (drift, realized and "
            "estimated performance, label coverage, latency); fails with the highest severity "
            "that started firing on this batch.",
        )
    ],
)
def retrain_decision(context: dg.AssetExecutionContext, loop: LoopResource):
    """Whether this batch calls for a challenger; the retrain sensor acts on it."""
    if _quarantined(context, loop):
        return
    config = loop.load()
    verdict = decision.decide_batch_retrain(config, context.partition_key)
    checked = alerts.check_alerts(config, context.partition_key, step_context(context))
    for delivery in checked.deliveries:
        if not delivery.ok:
            context.log.warning(f"alert not delivered by {delivery.notifier}: {delivery.error}")
    yield dg.MaterializeResult(
        metadata={
            "retrain": verdict.retrain,
            "triggers": ", ".join(verdict.triggers) or "none",
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in verdict.reasons)),
        },
        check_results=[md.alerts_check(checked)],
    )


@dg.asset(group_name=MONITORING, kinds={"parquet"})
def late_labels(context: dg.AssetExecutionContext, loop: LoopResource) -> dg.MaterializeResult:
    """Labels that landed apart from their batches, joined to them by id; the batches they
    touch get their realized performance measured again (the label sensor requests it)."""
    result = labels.ingest_late_labels(loop.load(), step_context(context))
    for problem in result.problems:
        context.log.warning(problem)
    return dg.MaterializeResult(metadata=md.late_labels(result))


class ChallengerConfig(dg.Config):
    force: bool = Field(
        default=False,
        description="Train even if the retrain decision says no (scheduled or manual retrain).",
    )


@dg.asset(
    group_name=MODELS,
    partitions_def=batches,
    deps=[retrain_decision],
    output_required=False,
    kinds={"mlflow", "scikit-learn"},
)
def challenger_model(
    context: dg.AssetExecutionContext, config: ChallengerConfig, loop: LoopResource
):
    """A model trained on the accepted history when the retrain decision says so."""
    cfg = loop.load()
    key = context.partition_key
    done = training.retrain_batch(cfg, key, step_context(context), force=config.force)
    verdict, info = done.decision, done.challenger
    if info is None:
        context.log.info("No challenger for batch %s: %s", key, "; ".join(verdict.reasons))
        return
    meta = {
        "version": info.version,
        "training_rows": info.training_rows,
        "training_digest": info.training_digest,
        "holdout_rows": info.holdout_rows,
        "training_parts": ", ".join(info.training_parts),
        "triggers": ", ".join(verdict.triggers),
    }
    meta.update(md.numbers(info.metrics))
    yield dg.MaterializeResult(metadata=meta)


@dg.asset(
    group_name=MODELS,
    partitions_def=batches,
    deps=[challenger_model],
    kinds={"mlflow"},
    pool="mlops_loop_promotion",
    check_specs=[
        _batch_check(
            "promotion",
            asset="champion_model",
            description="Passes when the batch's challenger was promoted; warns when it was "
            "rejected, or when rollback_job moved the champion back at this batch.",
        )
    ],
)
def champion_model(context: dg.AssetExecutionContext, loop: LoopResource) -> dg.MaterializeResult:
    """The champion decided at a batch: the challenger replaces it only on evidence (outcome
    `promoted` or `rejected`); rollback_job marks the latest batch `rolled_back`."""
    config = loop.load()
    result = promotion.promote_challenger(config, context.partition_key, step_context(context))
    evidence = result.decision
    outcome = "promoted" if result.promoted else "rejected"
    headline = f"v{result.challenger_version} {outcome}; champion v{result.champion_version_after}"
    comparison = sorted(result.comparison, key=lambda r: r.get("metric") != evidence.metric)
    return dg.MaterializeResult(
        metadata={
            "outcome": outcome,
            "task": f"{config.task} (primary metric {evidence.metric})",
            "promoted": result.promoted,
            "challenger_version": result.challenger_version,
            "champion_version": result.champion_version_after,
            **md.numbers({"delta": evidence.delta if evidence.delta is not None else 0.0}),
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in evidence.reasons)),
            "comparison": md.table(comparison, ["metric", "challenger", "champion"]),
            "guards_and_segments": md.table(
                [*evidence.guards, *evidence.segments],
                ["where", "metric", "ok", "change", "tolerance", "challenger", "champion"],
            ),
            "champion_history": dg.MetadataValue.md(result.history_table),
            **md.shadow(result.live_traffic),
        },
        check_results=[
            md.promotion_check(
                outcome,
                f"{headline}: " + "; ".join(evidence.reasons[:2]),
                {"challenger_version": result.challenger_version},
            )
        ],
    )


ALL_ASSETS = [
    reference_snapshot,
    baseline_model,
    monitored_batch,
    drift_report,
    scored_batch,
    model_performance,
    retrain_decision,
    challenger_model,
    champion_model,
    late_labels,
]

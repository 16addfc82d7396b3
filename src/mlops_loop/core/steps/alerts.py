"""The alert rules over the batches' metrics, and their delivery: the `alerts` check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.steps.ingest import Ingested, served_figures
from mlops_loop.core.steps.performance import Performance
from mlops_loop.core.steps.result import StepResult
from mlops_loop.core.steps.run import StepContext, step_run
from mlops_loop.core.steps.scoring import Scored
from mlops_loop.core.store import LoopStore, exclusive
from mlops_loop.core.tracking import log_json, log_metrics

if TYPE_CHECKING:
    from mlops_loop.core.alerts import AlertEvent
    from mlops_loop.core.notify import DeliveryResult


@dataclass(frozen=True)
class AlertsChecked(StepResult):
    """The alert rules evaluated up to a batch (`<batch>/alerts.json`)."""

    events: list[AlertEvent] = field(default_factory=list)  # this batch's, in the replay
    sent: list[AlertEvent] = field(default_factory=list)  # delivered by this call
    deliveries: list[DeliveryResult] = field(default_factory=list)
    rules: int = 0
    firing: list[str] = field(default_factory=list)  # rules firing after this batch

    @property
    def fired(self) -> list[AlertEvent]:
        """The rules that started firing on this batch."""
        return [e for e in self.events if e.kind == "firing"]


def batch_metrics(config: LoopConfig, key: str) -> dict[str, Any]:
    """Every number the loop knows about a batch, flat: what alert rules can watch.

    A served batch adds its online figures (`serving_latency_p99_ms`, `serving_error_rate`,
    ... : `served.ServingFigures.metrics`); other batches have none of those keys.
    """
    store = LoopStore(config.state_dir)
    record: dict[str, Any] = {"batch": key}
    drift = store.batch_json(key, "drift") or {}
    perf_json, scored_json = store.batch_json(key, "performance"), store.batch_json(key, "scored")
    ingest_json = store.batch_json(key, "ingest")
    perf = Performance.from_dict(perf_json) if perf_json else None
    operations = Scored.from_dict(scored_json).operations if scored_json else {}
    record["rows"] = Ingested.from_dict(ingest_json).rows if ingest_json else None
    record["drift_share"] = drift.get("drift_share")
    record["dataset_drift"] = drift.get("dataset_drift")
    if perf is not None:
        record.update({n: v for n, v in perf.metrics.items() if n != "n"})
        record.update({f"estimated_{n}": v for n, v in perf.estimated_metrics.items()})
    record["label_coverage"] = None if perf is None else perf.label_coverage
    record[f"champion_{config.promotion.metric}"] = None if perf is None else perf.baseline_metric
    for name, value in (operations or {}).items():
        if isinstance(value, dict):
            record.update({f"{name}_{p}": v for p, v in value.items()})
        elif name in ("scoring_s", "throughput_rows_per_s", "peak_rss_mb", "cpu_percent"):
            record[name] = value
    served = served_figures(store, key)
    if served is not None:
        record.update(served.metrics())
    return {k: v for k, v in record.items() if not isinstance(v, str) or k == "batch"}


def check_alerts(config: LoopConfig, key: str, ctx: StepContext | None = None) -> AlertsChecked:
    """Evaluate the alert rules over the accepted batches up to `key`; send what is new.

    The rules replay the whole history as known now, so a batch whose labels arrived late is
    judged on them (an AUC alert fires once its labels show the drop). Each event is delivered
    once: the events already sent are kept with the loop. `events` are this batch's events in
    the replay (stable across re-runs); `sent` are those delivered by this call.
    """
    from mlops_loop.core.alerts import evaluate_alerts
    from mlops_loop.core.notify import build_notifiers, notify

    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    rules = config.alerts.rules
    if not rules:
        return AlertsChecked()
    folder = store.root / "alerts"
    with exclusive(folder / ".lock"):
        history = [batch_metrics(config, k) for k in store.accepted_keys() if k <= key]
        timeline, state = evaluate_alerts(rules, history, None)
        sent_before = set(store.read_json(folder / "sent.json") or [])

        def ident(e: Any) -> str:
            return f"{e.rule}|{e.batch}|{e.kind}"

        new = [e for e in timeline if ident(e) not in sent_before]
        deliveries = notify(new, build_notifiers(config.alerts)) if new else []
        store.write_json(folder / "sent.json", sorted(sent_before | {ident(e) for e in new}))
        store.write_json(folder / "state.json", state)
    result = AlertsChecked(
        events=[e for e in timeline if e.batch == key],
        sent=new,
        deliveries=list(deliveries),
        rules=len(rules),
        firing=sorted(n for n, r in (state.get("rules") or {}).items() if r.get("firing")),
    )
    store.write_batch_json(key, "alerts", result.to_dict())
    with step_run(config, ctx, "alerts", key):
        fired = result.fired
        log_metrics(
            {
                "alerts_fired": len(fired),
                "alerts_error": sum(e.severity == "error" for e in fired),
                "alerts_sent": len(new),
                "alerts_undelivered": sum(not d.ok for d in deliveries),
            }
        )
        if result.events or new:
            log_json(result.to_dict(), "alerts/events.json")
    return result


def check_gate_stuck(config: LoopConfig, key: str, ctx: StepContext | None = None) -> AlertsChecked:
    """After a batch's quality verdict: is the gate stuck on one expectation? Send what is new.

    The rule `quality_gate_stuck` fires when `alerts.quality_stuck_after` consecutive batches
    (up to `key`, in batch order, as their verdicts stand now) are quarantined by the same
    expectation, once per spell, and resolves on the first batch that no longer fails it.
    Events reach the same notifiers as the rules' and are delivered once (`alerts/sent.json`);
    the batch's share is kept in `<batch>/gate_alerts.json`.
    """
    from mlops_loop.core.alerts.stuck import RULE, failed_expectations, stuck_gate_events
    from mlops_loop.core.notify import build_notifiers, notify

    ctx = ctx or StepContext()
    after = config.alerts.quality_stuck_after
    if after is None:
        return AlertsChecked()
    store = LoopStore(config.state_dir)
    folder = store.root / "alerts"
    with exclusive(folder / ".lock"):
        verdicts = [
            (k, failed_expectations(quality))
            for k in store.batch_keys()
            if k <= key and (quality := store.batch_json(k, "quality")) is not None
        ]
        timeline, stuck = stuck_gate_events(verdicts, after)
        sent_before = set(store.read_json(folder / "sent.json") or [])

        def ident(e: Any) -> str:
            return f"{e.rule}|{e.metric}|{e.batch}|{e.kind}"

        new = [e for e in timeline if ident(e) not in sent_before]
        deliveries = notify(new, build_notifiers(config.alerts)) if new else []
        store.write_json(folder / "sent.json", sorted(sent_before | {ident(e) for e in new}))
    result = AlertsChecked(
        events=[e for e in timeline if e.batch == key],
        sent=new,
        deliveries=list(deliveries),
        rules=1,
        firing=[f"{RULE} ({name})" for name in stuck],
    )
    store.write_batch_json(key, "gate_alerts", result.to_dict())
    with step_run(config, ctx, "quality_stuck", key):
        log_metrics(
            {
                "quality_stuck": len(stuck),
                "quality_stuck_fired": len(result.fired),
                "quality_stuck_sent": len(new),
            }
        )
        if result.events or new:
            log_json(result.to_dict(), "alerts/quality_stuck.json")
    return result

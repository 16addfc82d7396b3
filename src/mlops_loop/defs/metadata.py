"""Core results as Dagster metadata: numbers plot across partitions, tables read as tables."""

from typing import Any

import dagster as dg

from mlops_loop.core.drift.report import DriftReport
from mlops_loop.core.quality import QualityResult
from mlops_loop.core.shadow import ShadowComparison
from mlops_loop.core.steps.alerts import AlertsChecked
from mlops_loop.core.steps.labels import LabelsRead


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not isinstance(value, bool):
        return f"{value:.4g}"
    if isinstance(value, dict):
        # An incident's observed and expected values: "min=-96498, max=323176", not a repr
        # with float noise (-96498.34999999999) and quotes.
        return ", ".join(f"{k}={_nested(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_nested(v) for v in value)
    return str(value)


def _nested(value: Any) -> str:
    """A value inside a cell: whole numbers without decimals (incomes, counts), large ones
    rounded to units, small ones to DIGITS significant digits; a list in brackets."""
    if isinstance(value, float) and (value.is_integer() or abs(value) >= 1000):
        return str(round(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_nested(v) for v in value) + "]"
    return _cell(value)


def table(records: list[dict[str, Any]], columns: list[str]) -> dg.MetadataValue:
    """A table of `columns` in that order (the ones a reader needs first), cells as text."""
    schema = dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns])
    rows = [dg.TableRecord({c: _cell(r.get(c)) for c in columns}) for r in records]
    return dg.MetadataValue.table(rows, schema=schema)


#: Significant digits of a float shown in metadata: enough to compare, few enough to read.
DIGITS = 4


def rounded(value: float) -> float:
    """`value` to `DIGITS` significant digits (0.23443205842783021 -> 0.2344)."""
    return float(f"{value:.{DIGITS}g}")


def numbers(values: dict[str, Any]) -> dict[str, Any]:
    """Only finite numbers, as floats (rounded) or ints, so the UI plots them."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, bool):
            out[k] = int(v)
        elif isinstance(v, int):
            out[k] = v
        elif isinstance(v, float) and v == v and abs(v) != float("inf"):
            out[k] = rounded(v)
    return out


def quality_check(result: QualityResult) -> dg.AssetCheckResult:
    incidents = [i.to_dict() for i in result.incidents]
    return dg.AssetCheckResult(
        check_name="quality_gate",
        passed=result.success,
        severity=dg.AssetCheckSeverity.ERROR,
        description="Quarantined: "
        + "; ".join(i["message"] for i in incidents if i["severity"] == "error")
        if not result.success
        else "Batch passed the quality gate",
        metadata={
            "incidents": len(incidents),
            "errors": sum(i["severity"] == "error" for i in incidents),
            "summary": dg.MetadataValue.md(result.to_markdown()),
            "incident_table": table(
                incidents, ["kind", "column", "severity", "observed", "expected"]
            ),
        },
    )


def suite_notes(notes: list[dict[str, Any]]) -> dict[str, Any]:
    """How the suite was widened (or pruned) to accept its own reference."""
    meta: dict[str, Any] = {"suite_adjustments": len(notes)}
    if notes:
        meta["suite_notes"] = table(notes, ["kind", "column", "action"])
    return meta


def drift(report: DriftReport, html_path: str) -> dict[str, Any]:
    # Drifted features first, the largest effect first: what a reader looks for.
    rows = sorted(
        (f.to_dict() for f in report.features),
        key=lambda r: (not r.get("drifted"), -(r.get("effect_size") or 0.0)),
    )
    return {
        "dataset_drift": report.dataset_drift,
        "drift_share": rounded(float(report.drift_share)),
        "max_effect": rounded(float(report.max_effect)),
        "drifted_features": ", ".join(report.drifted_features) or "none",
        "rule": report.rule,
        "triggered_by": ", ".join(report.triggered_by) or "none",
        **numbers(
            {
                "multivariate_auc": getattr(report.multivariate, "auc", None),
                "multivariate_drift": getattr(report.multivariate, "drifted", None),
            }
        ),
        "features": table(
            rows, ["name", "drifted", "effect_size", "p_value", "method", "role", "error"]
        ),
        "report": dg.MetadataValue.path(html_path),
    }


def late_labels(result: LabelsRead) -> dict[str, Any]:
    """What a pass over the labels folder read, and the label coverage of every batch."""
    return {
        "files": ", ".join(result.files) or "none",
        "new_labels": result.new_labels,
        "corrected_labels": result.corrected_labels,
        "known_labels": result.known_labels,
        "remeasure": dg.MetadataValue.json(result.remeasure),
        "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in result.problems) or "none"),
        "coverage": table(result.coverage, ["batch", "rows", "labelled", "coverage"]),
    }


def operations(ops: dict[str, Any]) -> dict[str, Any]:
    """Scoring latency, throughput, time, CPU and memory of a step, as plottable numbers."""
    flat: dict[str, Any] = {}
    for key, value in ops.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{p}": v for p, v in value.items()})
        else:
            flat[key] = value
    keep = [
        "scoring_s",
        "throughput_rows_per_s",
        "chunk_latency_ms_p50",
        "chunk_latency_ms_p95",
        "chunk_latency_ms_p99",
        "row_latency_in_batch_ms_p50",
        "row_latency_in_batch_ms_p95",
        "row_latency_in_batch_ms_p99",
        "single_row_latency_ms_p50",
        "single_row_latency_ms_p95",
        "single_row_latency_ms_p99",
        "wall_s",
        "cpu_s",
        "cpu_percent",
        "peak_rss_mb",
    ]
    out = numbers({k: flat.get(k) for k in keep})
    out.update({k: str(flat[k]) for k in ("started_at", "ended_at") if flat.get(k)})
    return out


def serving(metrics: dict[str, float]) -> dict[str, Any]:
    """A served batch's online figures (`serving_latency_p99_ms`, ...), plottable across
    batches; nothing for other batches."""
    out = numbers(metrics)
    for name in ("serving_model_version", "serving_requests", "serving_errors", "serving_rows"):
        if name in out:
            out[name] = int(out[name])
    return out


def shadow(live: dict[str, Any] | None) -> dict[str, Any]:
    """The live-traffic comparison of a promotion (`shadow.ShadowComparison`): its numbers,
    and a table of both models' metric on the labelled rows; nothing when there was none."""
    if not live:
        return {}
    out = numbers(ShadowComparison(**live).metrics())
    for name in ("shadow_rows", "shadow_labelled_rows"):
        if name in out:
            out[name] = int(out[name])
    out["shadow_challenger_version"] = live.get("challenger_version")
    out["shadow_batches"] = ", ".join(live.get("batches") or []) or "none"
    if live.get("labelled_rows"):
        metric = live.get("metric_name")
        out["shadow_labelled"] = table(
            [
                {
                    "model": "challenger (shadow)",
                    "version": live.get("challenger_version"),
                    "metric": metric,
                    "value": live.get("challenger_metric"),
                },
                {
                    "model": "served",
                    "version": ", ".join(str(v) for v in live.get("served_versions") or []),
                    "metric": metric,
                    "value": live.get("served_metric"),
                },
            ],
            ["model", "version", "metric", "value"],
        )
    return out


def alerts_check(result: AlertsChecked, check_name: str = "alerts") -> dg.AssetCheckResult:
    """Passes unless a rule started firing on this batch; ERROR if any of those is an error."""
    fired = result.fired
    worst = "error" if any(e.severity == "error" for e in fired) else "warn"
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not fired,
        severity=dg.AssetCheckSeverity.ERROR if worst == "error" else dg.AssetCheckSeverity.WARN,
        description="; ".join(e.message for e in fired)
        if fired
        else f"{result.rules} rule(s), none started firing"
        + (f" (still firing: {', '.join(result.firing)})" if result.firing else ""),
        metadata={
            "fired": len(fired),
            "resolved": sum(e.kind == "resolved" for e in result.events),
            "events": table(
                [e.to_dict() for e in result.events],
                ["rule", "kind", "severity", "metric", "value", "threshold"],
            ),
            "deliveries": table(
                [d.to_dict() for d in result.deliveries], ["notifier", "ok", "events", "error"]
            ),
        },
    )


#: What a promotion decision made of a batch's challenger: champion_model's `outcome`.
OUTCOMES = ("promoted", "rejected", "rolled_back")


def promotion_check(
    outcome: str, description: str, metadata: dict[str, Any] | None = None
) -> dg.AssetCheckResult:
    """Passes when the challenger was promoted; warns when it was rejected or the champion
    was rolled back, so the three read apart in the partitions' check status."""
    return dg.AssetCheckResult(
        check_name="promotion",
        passed=outcome == "promoted",
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={"outcome": outcome, **(metadata or {})},
    )

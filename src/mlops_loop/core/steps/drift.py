"""Drift of a stored batch against the reference, overall and per segment: `drift_report`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.errors import DataError
from mlops_loop.core.segments import segment_drift
from mlops_loop.core.steps.ingest import big_batch
from mlops_loop.core.steps.run import StepContext, step_run
from mlops_loop.core.store import LoopStore
from mlops_loop.core.tracking import config_params, log_json, log_metrics, log_params, log_text

if TYPE_CHECKING:
    from mlops_loop.core.drift.report import DriftReport


@dataclass(frozen=True)
class BatchDrift:
    """A batch's drift report (`<batch>/drift.json`, `drift.html`) and its drift per segment
    value (`<batch>/segment_drift.json`)."""

    report: DriftReport
    segments: list[dict[str, Any]]  # rows of `segments.segment_rows`
    html_path: str


def evaluate_batch_drift(
    config: LoopConfig, key: str, ctx: StepContext | None = None
) -> BatchDrift:
    """Compare a stored batch with the reference; write JSON and HTML reports.

    Raises:
        DataError: the batch has no rows (the quality gate quarantines such a batch before its
            drift is asked for; nothing is written for it).
    """
    from mlops_loop.core.drift import evaluate_drift
    from mlops_loop.core.parquet import parquet_rows

    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    stored = store.batch_dir(key) / "batch.parquet"
    if stored.exists() and parquet_rows(stored) == 0:
        raise DataError(
            f"batch {key!r} is empty (0 rows): there is nothing to compare with the reference, "
            "so it gets no drift report (the quality gate quarantines an empty batch)"
        )
    big = big_batch(config, store, key)
    if big is not None:
        from mlops_loop.core.drift import evaluate_drift_parquet
        from mlops_loop.core.segments import segment_drift_parquet

        report = evaluate_drift_parquet(store.reference_profile(config), big, config=config)
        segments = segment_drift_parquet(
            config, store.reference(), big, config.operations.read_chunk_rows
        )
    else:
        batch = store.batch(key)
        report = evaluate_drift(store.reference_profile(config), batch, config=config)
        segments = segment_drift(config, store.reference(), batch)
    store.write_batch_json(key, "drift", report.to_dict())
    store.write_batch_json(key, "segment_drift", segments)
    html_path = store.batch_dir(key) / "drift.html"
    snapshot = store.snapshot_info() or {}
    reference = Path(str(snapshot.get("source") or "reference")).name
    if snapshot.get("digest"):
        reference += f" (digest {str(snapshot['digest'])[:12]})"
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = report.to_html(batch=key, reference=reference, at=at)
    html_path.write_text(page)
    with step_run(config, ctx, "drift", key):
        log_json(report.to_dict(), "drift/report.json")
        if segments:
            log_json(segments, "drift/segments.json")
            log_metrics(
                {
                    f"segment.{r['segment']}.{r['value']}.drift_share": r["drift_share"]
                    for r in segments
                    if r["drift_share"] is not None
                }
            )
        log_text(page, "drift/report.html")
        log_params(config_params(config, "drift"))
        log_metrics(
            {
                "drift_share": report.drift_share,
                "drift_max_effect": report.max_effect,
                "dataset_drift": int(report.dataset_drift),
            }
        )
        if report.multivariate is not None and report.multivariate.auc is not None:
            log_metrics({"multivariate_auc": report.multivariate.auc})
    return BatchDrift(report=report, segments=segments, html_path=str(html_path))

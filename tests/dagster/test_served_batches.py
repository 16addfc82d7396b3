"""Batches landed by the prediction log, monitored by a bootstrapped loop through Dagster: the
landing sensor picks them up, the monitor job judges them, and their online figures are in the
materialization metadata, in MLflow and in the alert check."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient

from mlops_loop.core.store import LoopStore
from tests.dagster.conftest import materialized, new_loop, run_job, tick
from tests.serving_format import served_name, served_rows, serving_record, write_served

START = 1_800_000_000.0


@pytest.mark.slow
def test_two_served_batches_are_monitored_with_their_online_figures(tmp_path, demo_frames):
    _, batches = demo_frames
    rule = {
        "name": "p99_slow",
        "metric": "serving_latency_p99_ms",
        "kind": "threshold",
        "direction": "above",
        "value": 50,
    }
    loop = new_loop(tmp_path, demo_frames, [], **{"alerts.rules": [rule]})
    assert run_job(loop.defs, loop.instance, "bootstrap_job").success
    cols = loop.config.columns
    frame = batches["batch_001"][[cols.id, cols.timestamp, *cols.features]]
    rng = np.random.default_rng(3)
    keys, latencies = [], {"fast": np.full(150, 4.0), "slow": np.r_[np.full(145, 8.0), [90.0] * 5]}
    for i, latency in enumerate(latencies.values()):
        part = frame.iloc[i * 300 : (i + 1) * 300]
        start = START + i * 600
        rows = served_rows(
            part,
            cols,
            rng.uniform(size=len(part)),
            model_version=1,
            rows_per_request=2,
            latency_ms=latency,
            start=start,
        )
        record = serving_record(
            rows, window_start=start, window_end=start + 300.0, errors={"500": 3}, down_seconds=6.0
        )
        path = write_served(loop.config.sources.landing / served_name(start), rows, record)
        keys.append(path.stem)

    requested = tick(loop.defs, loop.instance, "landing_sensor")
    assert [r.partition_key for r in requested.run_requests] == keys
    loop.instance.add_dynamic_partitions("batches", keys)
    store = LoopStore(loop.config.state_dir)
    client = MlflowClient(tracking_uri=loop.config.tracking_uri)
    experiment = client.get_experiment_by_name(loop.config.mlflow.experiment)
    alerts = {}
    for key in keys:
        result = run_job(loop.defs, loop.instance, "monitor_job", key)
        assert result.success, key
        assert store.batch_json(key, "quality")["success"], key
        assert (store.batch_dir(key) / "drift.json").exists()
        assert (store.batch_dir(key) / "drift.html").exists()
        meta = materialized(result)
        assert meta["monitored_batch"].metadata["served"].value is True
        scored = meta["scored_batch"].metadata
        assert scored["champion_version"].value == 1
        assert scored["serving_error_rate"].value == pytest.approx(3 / 153, rel=1e-3)
        assert scored["serving_availability"].value == pytest.approx(1 - 6 / 300, rel=1e-3)
        assert scored["serving_requests_per_s"].value == pytest.approx(150 / 300, rel=1e-3)
        assert scored["serving_rows_per_s"].value == pytest.approx(300 / 300, rel=1e-3)
        assert scored["serving_model_version"].value == 1
        runs = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`dagster.run_id` = '{result.run_id}'"
        )
        metrics = {k: v for run in runs for k, v in run.data.metrics.items()}
        p99 = float(np.percentile(latencies["fast" if key == keys[0] else "slow"], 99))
        assert metrics["serving_latency_p99_ms"] == pytest.approx(p99)
        assert scored["serving_latency_p99_ms"].value == pytest.approx(p99, rel=1e-3)
        assert {"serving_latency_p50_ms", "serving_latency_p95_ms", "serving_availability"} <= set(
            metrics
        )
        [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "alerts"]
        alerts[key] = check
    assert alerts[keys[0]].passed
    assert not alerts[keys[1]].passed and "p99_slow" in alerts[keys[1]].description


def test_serving_and_live_traffic_metadata_plot_as_numbers():
    from mlops_loop.core.shadow import ShadowComparison
    from mlops_loop.defs import metadata as md

    assert md.serving({}) == {} and md.shadow(None) == {}
    served = md.serving({"serving_latency_p99_ms": 12.34567, "serving_model_version": 3.0})
    assert served == {"serving_latency_p99_ms": 12.35, "serving_model_version": 3}
    live = ShadowComparison(
        challenger_version=2,
        rows=4,
        batches=["served-a"],
        served_versions=[1],
        agreement=0.75,
        mean_abs_diff=0.1,
        mean_score_diff=0.01,
        correlation=None,
        labelled_rows=2,
        metric_name="roc_auc",
        challenger_metric=0.8,
        served_metric=0.7,
    ).to_dict()
    meta = md.shadow(live)
    assert meta["shadow_rows"] == 4 and meta["shadow_agreement"] == 0.75
    assert meta["shadow_challenger_roc_auc"] == 0.8 and meta["shadow_served_roc_auc"] == 0.7
    assert "shadow_correlation" not in meta and meta["shadow_batches"] == "served-a"
    records = meta["shadow_labelled"].value.records
    assert [r.data["version"] for r in records] == ["2", "1"]

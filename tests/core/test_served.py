"""Served batches in the loop: the landed format's figures, the alerts and status that use them,
the quality gate's reserved columns, the served predictions kept, late labels, and the shadow
challenger's comparison on live traffic."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.alerts import evaluate_alerts
from mlops_loop.core.config import load_config
from mlops_loop.core.errors import DataError
from mlops_loop.core.served import (
    SERVING_KEY,
    ServedWindow,
    file_figures,
    is_served,
    read_window,
    reserved_columns,
)
from mlops_loop.core.shadow import compare_shadow
from mlops_loop.core.steps.alerts import batch_metrics
from mlops_loop.core.steps.ingest import ingest_batch, served_figures
from mlops_loop.core.store import LoopStore
from tests.conftest import write_loop
from tests.serving_format import served_name, served_rows, serving_record, write_served

START = 1_800_000_000.0
P99_SLOW = {
    "name": "p99_slow",
    "metric": "serving_latency_p99_ms",
    "kind": "threshold",
    "direction": "above",
    "value": 50,
}


def _features(frame: pd.DataFrame, config) -> pd.DataFrame:
    cols = config.columns
    return frame[[cols.id, cols.timestamp, *cols.features]]


def _land_served(config, frame, *, latency_ms, versions=3, errors=None, down=0.0, **kw):
    """Land `frame`'s features as a served batch of one-row requests; return its key."""
    scores = np.random.default_rng(0).uniform(size=len(frame))
    rows = served_rows(
        _features(frame, config),
        config.columns,
        scores,
        model_version=versions,
        latency_ms=latency_ms,
        start=START,
        **kw,
    )
    record = serving_record(
        rows,
        window_start=START,
        window_end=START + 100.0,
        errors=errors,
        down_seconds=down,
    )
    path = write_served(
        config.sources.landing / served_name(START + int(frame.index[0]) + len(frame)), rows, record
    )
    ingest_batch(config, path.stem, path)
    return path.stem, rows


def test_figures_from_the_metadata(tmp_path):
    latencies = [float(v) for v in range(1, 101)]  # 100 requests: 90 answered, 10 errors
    frame = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(90) for _ in range(2)],
            "latency_ms": [latencies[i] for i in range(90) for _ in range(2)],
            "model_version": [4] * 100 + [5] * 80,
        }
    )
    record = serving_record(
        frame,
        window_start=START,
        window_end=START + 60.0,
        latency_ms=latencies,
        errors={"422": 6, "500": 4},
        down_seconds=3.0,
    )
    path = write_served(tmp_path / served_name(START), frame, record)
    figures = file_figures(path)
    assert figures is not None and is_served(path)
    assert figures.latency_p50_ms == pytest.approx(np.percentile(latencies, 50))
    assert figures.latency_p95_ms == pytest.approx(np.percentile(latencies, 95))
    assert figures.latency_p99_ms == pytest.approx(np.percentile(latencies, 99))
    assert figures.error_rate == pytest.approx(10 / 100)
    assert figures.requests_per_s == pytest.approx(90 / 60)
    assert figures.rows_per_s == pytest.approx(180 / 60)
    assert figures.availability == pytest.approx(1 - 3 / 60)
    assert figures.model_version == 5 and figures.model_versions == [4, 5]  # the last served
    metrics = figures.metrics()
    assert metrics["serving_latency_p99_ms"] == pytest.approx(np.percentile(latencies, 99))
    assert metrics["serving_model_version"] == 5.0
    assert {
        "serving_latency_p50_ms",
        "serving_latency_p95_ms",
        "serving_error_rate",
        "serving_requests_per_s",
        "serving_rows_per_s",
        "serving_availability",
    } <= set(metrics)


def test_a_plain_file_is_not_served_and_a_bad_record_is_named(tmp_path):
    plain = tmp_path / "batch.parquet"
    pd.DataFrame({"a": [1, 2]}).to_parquet(plain, index=False)
    assert not is_served(plain) and read_window(plain) is None and file_figures(plain) is None
    csv = tmp_path / "batch.csv"
    csv.write_text("a\n1\n")
    assert not is_served(csv)
    frame = pd.DataFrame({"request_id": ["r0"], "latency_ms": [1.0]})
    record = serving_record(frame, window_start=START, window_end=START + 1)
    with pytest.raises(DataError, match="schema 2 is not supported; expected 1"):
        read_window(write_served(tmp_path / "v2.parquet", frame, {**record, "schema": 2}))
    del record["window_end"]
    with pytest.raises(DataError, match="lacks 'window_end'"):
        ServedWindow.from_json(json.dumps(record), "f.parquet")
    with pytest.raises(DataError, match="not JSON"):
        ServedWindow.from_json(b"{", "f.parquet")
    assert SERVING_KEY == b"mlops_loop.serving"


@pytest.fixture
def config(tmp_path, demo_frames):
    reference, _ = demo_frames
    path = write_loop(
        tmp_path,
        reference,
        **{"sources.labels": "labels", "columns.label_time": None, "alerts.rules": [P99_SLOW]},
    )
    (tmp_path / "labels").mkdir()
    return load_config(path)


def test_p99_alert_fires_on_a_slow_served_batch_only(config, demo_frames):
    _, batches = demo_frames
    frame = batches["batch_001"].head(200)
    fast, _ = _land_served(config, frame.iloc[:100], latency_ms=5.0)
    slow_latency = np.full(100, 10.0)
    slow_latency[-3:] = 400.0  # 3% of requests far over: p99 above 50 ms, p50 not
    slow, _ = _land_served(config, frame.iloc[100:], latency_ms=slow_latency)
    plain_path = config.sources.landing / "batch_001.parquet"
    frame.to_parquet(plain_path, index=False)
    ingest_batch(config, "batch_001", plain_path)

    history = [batch_metrics(config, k) for k in ("batch_001", fast, slow)]
    assert history[2]["serving_latency_p99_ms"] > 50 > history[2]["serving_latency_p50_ms"]
    assert history[1]["serving_latency_p99_ms"] == pytest.approx(5.0)
    assert not any(k.startswith("serving_") for k in history[0])  # a plain batch: unchanged
    events, state = evaluate_alerts(config.alerts.rules, history, None)
    assert [(e.rule, e.batch, e.kind) for e in events] == [("p99_slow", slow, "firing")]
    assert state["rules"]["p99_slow"]["firing"] is True


def test_reserved_columns_are_one_explicit_set(config):
    cols = config.columns
    names = [
        "request_id",
        "row",
        "served_at",
        "model_version",
        "latency_ms",
        cols.prediction,
        f"shadow_{cols.prediction}",
        "shadow_version",
        cols.id,
        "age",
        "something_else",
    ]
    assert reserved_columns(cols, names) == names[:8]


def test_a_clean_served_batch_passes_the_gate_and_keeps_its_predictions(config, demo_frames):
    from mlops_loop.core.drift import evaluate_drift
    from mlops_loop.core.steps.quality import check_quality
    from mlops_loop.core.steps.reference import take_reference_snapshot
    from mlops_loop.core.steps.scoring import score_batch
    from mlops_loop.core.steps.status import batch_status

    _, batches = demo_frames
    take_reference_snapshot(config)
    frame = batches["batch_001"].head(600)
    key, rows = _land_served(
        config,
        frame,
        latency_ms=4.0,
        versions=[3] * 300 + [4] * 300,
        shadow_scores=np.full(len(frame), 0.5),
        shadow_version=5,
    )
    result = check_quality(config, key)
    assert result.success, [i.message for i in result.incidents]
    assert [i for i in result.incidents if i.kind == "unexpected_column"] == []
    # The same verdict when the batch is too large to read whole and is checked by slices.
    from mlops_loop.core.quality.chunked import validate_parquet

    store = LoopStore(config.state_dir)
    suite = store.read_json(store.snapshot_dir / "suite.json")
    stored = store.batch_dir(key) / "batch.parquet"
    sliced = validate_parquet(
        stored, suite, 200, ignore=set(reserved_columns(config.columns, rows.columns))
    )
    assert sliced.success and not [i for i in sliced.incidents if i.kind == "unexpected_column"]
    assert [
        i for i in validate_parquet(stored, suite, 200).incidents if i.kind == "unexpected_column"
    ]

    # The same rows without the serving record are a plain batch: the columns are new to it.
    plain = config.sources.landing / "plain_001.parquet"
    rows.to_parquet(plain, index=False)
    ingest_batch(config, "plain_001", plain)
    assert served_figures(LoopStore(config.state_dir), "plain_001") is None
    unexpected = {
        i.column
        for i in check_quality(config, "plain_001").incidents
        if i.kind == "unexpected_column"
    }
    assert {"request_id", "latency_ms", "shadow_version", config.columns.prediction} <= unexpected

    # Drift tests the configured features only, never a serving column.
    store = LoopStore(config.state_dir)
    report = evaluate_drift(store.reference_profile(config), store.batch(key), config=config)
    assert {f.name for f in report.features if f.role == "feature"} == set(config.columns.features)

    # Scoring keeps what was served, and names the version that served last.
    scored = score_batch(config, key)
    assert scored.champion_version == 4 and scored.rows == 600
    assert scored.serving["serving_latency_p99_ms"] == pytest.approx(4.0)
    out = pd.read_parquet(store.batch_dir(key) / "scored.parquet")
    np.testing.assert_allclose(out[config.columns.prediction], rows[config.columns.prediction])
    assert "serving" in store.batch_json(key, "scored")

    # The challenger's shadow predictions on it, for the promotion's live-traffic section.
    from mlops_loop.core.shadow import live_traffic

    live = live_traffic(config, 5)
    assert live is not None and live.rows == 600 and live.batches == [key]
    assert live.served_versions == [3, 4]
    served_labels = rows[config.columns.prediction] >= 0.5
    assert live.agreement == pytest.approx(served_labels.mean())  # the shadow says 1 everywhere
    assert live_traffic(config, 6) is None

    status = batch_status(config, key)
    assert status.serving["serving_availability"] == 1.0
    assert "serving" in status.to_dict()
    assert "serving" not in batch_status(config, "plain_001").to_dict()
    # A suite learnt again from the served batch learns its features, not serving's columns.
    from mlops_loop.core.steps.relearn import relearn_suite

    relearn_suite(config, "served traffic is the new normal", batches=[key])
    relearnt = store.read_json(store.snapshot_dir / "suite.json")
    [columns_entry] = [e for e in relearnt["expectations"] if e["kind"] == "unexpected_column"]
    assert set(columns_entry["kwargs"]["column_set"]) == set(store.reference().columns)
    assert check_quality(config, key).success

    from mlops_loop.cli import _served

    line = _served(status.serving)
    assert "latency p50/p95/p99 4.0/4.0/4.0 ms" in line and "availability 100.00%" in line
    assert _served(None) == ""


def test_late_labels_join_a_served_batch_by_id(config, demo_frames):
    from mlops_loop.core.labels import attach_labels, ingest_labels

    _, batches = demo_frames
    frame = batches["batch_001"].head(50)
    key, _ = _land_served(config, frame, latency_ms=3.0)
    labels = frame[[config.columns.id, config.columns.target]].head(20)
    labels.to_csv(config.sources.labels / "week1.csv", index=False)
    read = ingest_labels(config)
    assert read.affected == [key] and read.new_labels == 20
    joined = attach_labels(config, LoopStore(config.state_dir).batch(key))
    assert joined[config.columns.target].notna().sum() == 20
    np.testing.assert_array_equal(
        joined[config.columns.target].head(20).to_numpy(), labels[config.columns.target]
    )


def test_shadow_comparison_of_a_binary_model_by_hand(config):
    cols = config.columns
    served = np.array([0.2, 0.7, 0.6, 0.4, 0.9])
    shadow = np.array([0.3, 0.4, 0.8, 0.45, 0.1])
    frame = pd.DataFrame(
        {
            cols.prediction: served,
            f"shadow_{cols.prediction}": shadow,
            "shadow_version": [7, 7, 7, 7, 6],  # the last row is another challenger's
            "model_version": 3,
            cols.target: [0, 1, 1, 0, np.nan],
        }
    )
    got = compare_shadow(frame, cols, "binary", 7, "roc_auc", batches=["b1"])
    assert got is not None and got.rows == 4 and got.served_versions == [3]
    assert got.agreement == pytest.approx(3 / 4)  # labels 0,1,1,0 against 0,0,1,0
    assert got.mean_abs_diff == pytest.approx((0.1 + 0.3 + 0.2 + 0.05) / 4)
    assert got.mean_score_diff == pytest.approx((0.1 - 0.3 + 0.2 + 0.05) / 4)
    s, c = served[:4], shadow[:4]
    r = np.sum((s - s.mean()) * (c - c.mean())) / np.sqrt(
        np.sum((s - s.mean()) ** 2) * np.sum((c - c.mean()) ** 2)
    )
    assert got.correlation == pytest.approx(r)
    # AUC by pairs: served ranks both positives above both negatives; the shadow, 3 of 4 pairs.
    assert got.labelled_rows == 4
    assert got.served_metric == pytest.approx(1.0)
    assert got.challenger_metric == pytest.approx(0.75)
    metrics = got.metrics()
    assert metrics["shadow_rows"] == 4 and metrics["shadow_agreement"] == pytest.approx(0.75)
    assert metrics["shadow_challenger_roc_auc"] == pytest.approx(0.75)
    assert compare_shadow(frame, cols, "binary", 9, "roc_auc") is None


def test_shadow_comparison_of_a_regression_by_hand(config):
    cols = config.columns.model_copy(update={"task": "regression"})
    served, shadow = np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0])
    frame = pd.DataFrame(
        {cols.prediction: served, f"shadow_{cols.prediction}": shadow, "shadow_version": 2}
    )
    got = compare_shadow(frame, cols, "regression", 2, "rmse")
    assert got.agreement is None and got.labelled_rows == 0
    assert got.mean_abs_diff == pytest.approx((0.5 + 0 + 1) / 3)
    assert got.mean_score_diff == pytest.approx((0.5 + 0 - 1) / 3)
    assert got.correlation == pytest.approx(np.corrcoef(served, shadow)[0, 1])


def test_shadow_comparison_of_a_multiclass_model_by_hand(config):
    cols = config.columns.model_copy(update={"task": "multiclass", "classes": ["a", "b", "c"]})
    served = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    shadow = np.array([[0.5, 0.4, 0.1], [0.6, 0.2, 0.2], [0.1, 0.2, 0.7]])
    frame = pd.DataFrame(index=range(3))
    for i, c in enumerate(cols.classes):
        frame[f"{cols.prediction}_{c}"] = served[:, i]
        frame[f"shadow_{cols.prediction}_{c}"] = shadow[:, i]
    frame["shadow_version"] = 4
    got = compare_shadow(frame, cols, "multiclass", 4, "accuracy")
    assert got.agreement == pytest.approx(2 / 3)  # a/a, b/a, c/c
    assert got.mean_abs_diff == pytest.approx(np.abs(shadow - served).mean())
    assert got.mean_score_diff == pytest.approx(((0.5 - 0.6) + (0.6 - 0.5) + (0.7 - 0.8)) / 3)


@pytest.mark.slow
def test_a_promotion_shows_the_challenger_on_live_traffic(tmp_path, demo_frames):
    from mlflow import MlflowClient

    from mlops_loop.core.labels import ingest_labels
    from mlops_loop.core.performance import metric_value
    from mlops_loop.core.registry import MlflowRegistry
    from mlops_loop.core.steps.promotion import promote_challenger
    from mlops_loop.core.steps.quality import check_quality
    from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot
    from mlops_loop.core.steps.training import train_challenger
    from mlops_loop.core.training import labels, predict_scores

    reference, batches = demo_frames
    config = load_config(
        write_loop(
            tmp_path,
            reference,
            {"batch_005": batches["batch_005"]},
            **{"sources.labels": "labels", "columns.label_time": None},
        )
    )
    (tmp_path / "labels").mkdir()
    cols = config.columns
    take_reference_snapshot(config)
    ensure_champion(config)
    ingest_batch(config, "batch_005", config.sources.landing / "batch_005.parquet")
    assert check_quality(config, "batch_005").success
    challenger = train_challenger(config, "batch_005")
    registry = MlflowRegistry.from_config(config)
    live = batches["batch_006"].head(400)
    features = _features(live, config)
    served = predict_scores(registry.load(1), features, cols)
    shadow = predict_scores(registry.load(challenger.version), features, cols)
    rows = served_rows(
        features,
        cols,
        served,
        model_version=1,
        start=START,
        shadow_scores=shadow,
        shadow_version=challenger.version,
    )
    record = serving_record(rows, window_start=START, window_end=START + 400)
    path = write_served(config.sources.landing / served_name(START), rows, record)
    ingest_batch(config, path.stem, path)
    assert check_quality(config, path.stem).success
    live[[cols.id, cols.target]].head(250).to_csv(config.sources.labels / "l.csv", index=False)
    assert ingest_labels(config).affected == [path.stem]

    result = promote_challenger(config, "batch_005")
    got = result.live_traffic
    assert got is not None and got["rows"] == 400 and got["batches"] == [path.stem]
    assert got["agreement"] == pytest.approx(np.mean((served >= 0.5) == (shadow >= 0.5)))
    assert got["mean_score_diff"] == pytest.approx(np.mean(shadow - served))
    y = labels(live.head(250), cols)
    assert got["labelled_rows"] == 250
    assert got["served_metric"] == pytest.approx(metric_value("roc_auc", y, served[:250]))
    assert got["challenger_metric"] == pytest.approx(metric_value("roc_auc", y, shadow[:250]))
    assert LoopStore(config.state_dir).batch_json("batch_005", "promotion")["live_traffic"] == got

    client = MlflowClient(tracking_uri=config.tracking_uri)
    experiment = client.get_experiment_by_name(config.mlflow.experiment)
    [run] = [
        r for r in client.search_runs([experiment.experiment_id]) if "shadow_rows" in r.data.metrics
    ]
    assert run.data.metrics["shadow_rows"] == 400
    assert run.data.metrics["shadow_agreement"] == pytest.approx(got["agreement"])
    assert "promoted" in run.data.metrics

"""Late labels through a real Dagster instance: batches land unlabelled, labels land later,
past performance is measured again, and concept drift leads to a retrain once labels show it."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.store import LoopStore
from mlops_loop.defs.sensors import backfill_partitions
from tests.dagster.conftest import materializations, materialized, new_loop, run_job, tick

TARGET, ID = "churned", "customer_id"


@pytest.mark.slow
def test_concept_drift_is_retrained_once_its_late_labels_land(tmp_path, demo_frames):
    reference, batches = demo_frames
    unlabelled = {k: batches[k].drop(columns=[TARGET]) for k in ("batch_001", "batch_005")}
    loop = new_loop(
        tmp_path,
        (reference, unlabelled),
        ["batch_001", "batch_005"],
        **{"sources.labels": "labels", "columns.label_time": "labelled_at"},
    )
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    defs, instance = loop.defs, loop.instance
    assert run_job(defs, instance, "bootstrap_job").success
    instance.add_dynamic_partitions("batches", ["batch_001", "batch_005"])
    registry = MlflowRegistry.from_config(loop.config)
    first_champion = registry.champion()

    # Monitoring never waits for labels: both batches are judged on what is known (nothing).
    for key in ("batch_001", "batch_005"):
        result = run_job(defs, instance, "monitor_job", key)
        assert result.success
        perf = materialized(result)["model_performance"].metadata
        assert perf["label_coverage"].value == 0
        assert materialized(result)["retrain_decision"].metadata["retrain"].value is False
    assert tick(defs, instance, "label_sensor").run_requests == []

    # The concept-drift batch's labels land a week later, with a broken file beside them.
    store = LoopStore(loop.config.state_dir)
    late = batches["batch_005"][[ID, TARGET]].assign(
        labelled_at=datetime(2026, 3, 9, tzinfo=UTC).isoformat()
    )
    late.to_csv(labels_dir / "labels_week10.csv", index=False)
    pd.DataFrame({ID: ["x"], "label": [1]}).to_csv(labels_dir / "broken.csv", index=False)

    ingest = tick(defs, instance, "label_sensor")
    [request] = ingest.run_requests
    assert request.job_name == "labels_job"
    result = run_job(defs, instance, "labels_job")
    assert result.success
    meta = materialized(result)["late_labels"].metadata
    assert meta["new_labels"].value == len(late)
    assert meta["remeasure"].value == ["batch_005"]
    assert "broken.csv lacks column(s) ['churned']" in meta["problems"].value
    coverage = {row.data["batch"]: row.data["coverage"] for row in meta["coverage"].value.records}
    assert coverage == {"batch_001": "0", "batch_005": "1"}

    # The sensor's next tick asks for a backfill that measures that batch again (the daemon
    # starts it; here the test runs its one partition), tagged as late-label work.
    assert tick(defs, instance, "label_sensor").run_requests == []  # the file is read
    follow_up = tick(defs, instance, "remeasure_sensor")
    [remeasure] = follow_up.run_requests
    assert remeasure.requires_backfill_daemon()
    assert backfill_partitions(remeasure) == ["batch_005"]
    assert remeasure.tags["mlops_loop/trigger"] == "late_labels"
    result = run_job(defs, instance, "remeasure_job", "batch_005", tags=remeasure.tags)
    assert result.success
    perf = store.batch_json("batch_005", "performance")
    assert perf["label_coverage"] == 1.0 and perf["labelled_rows"] == len(late)
    assert perf["metric"] < perf["baseline_metric"] - loop.config.retrain.metric_drop
    decision = materialized(result)["retrain_decision"].metadata
    assert decision["retrain"].value is True
    assert "performance" in decision["triggers"].value

    # The retrain sensor acts on the new decision; the challenger trains on the late labels.
    [retrain] = tick(defs, instance, "retrain_sensor").run_requests
    assert retrain.partition_key == "batch_005"
    result = run_job(defs, instance, "retrain_job", "batch_005")
    assert result.success
    challenger = store.batch_json("batch_005", "challenger")
    assert challenger["training_rows"] > 0 and challenger["holdout_rows"] > 0
    assert registry.champion() == challenger["version"] != first_champion

    # Nothing new: the broken file is not read again until it changes.
    assert tick(defs, instance, "label_sensor").run_requests == []
    assert tick(defs, instance, "remeasure_sensor", cursor=follow_up.cursor).run_requests == []
    assert len(materializations(instance, "late_labels")) == 1

"""labels under `dag.test()`: labels that land after their batch are read, the batch is measured
again, and the concept drift they reveal is emitted for a retrain."""

from datetime import UTC, datetime

import pytest

from mlops_loop.core.store import LoopStore
from tests.airflow.conftest import asset_events, labelled, new_airflow_loop, states

pytestmark = pytest.mark.slow

TARGET, ID = "churned", "customer_id"


def test_late_labels_remeasure_their_batch_and_request_a_retrain(tmp_path, demo_frames):
    reference, batches = demo_frames
    unlabelled = {"batch_005": batches["batch_005"].drop(columns=[TARGET])}
    loop = new_airflow_loop(
        tmp_path,
        (reference, unlabelled),
        ["batch_005"],
        **{"sources.labels": "labels", "columns.label_time": "labelled_at"},
    )
    (tmp_path / "labels").mkdir()
    store = LoopStore(loop.config.state_dir)
    assert str(loop.run("bootstrap").state) == "success"
    assert str(loop.run("monitor").state) == "success"
    assert store.batch_json("batch_005", "decision")["retrain"] is False  # no labels yet

    nothing = loop.run("labels")
    assert str(nothing.state) == "success" and labelled(nothing) == {}

    late = batches["batch_005"][[ID, TARGET]].assign(
        labelled_at=datetime(2026, 3, 9, tzinfo=UTC).isoformat()
    )
    late.to_csv(tmp_path / "labels" / "labels_week10.csv", index=False)
    run = loop.run("labels")
    assert str(run.state) == "success"
    assert labelled(run) == {
        ("remeasure.model_performance", "batch_005"): "success",
        ("remeasure.retrain_decision", "batch_005"): "success",
    }
    perf = store.batch_json("batch_005", "performance")
    assert perf["label_coverage"] == 1.0 and perf["labelled_rows"] == len(late)
    decision = store.batch_json("batch_005", "decision")
    assert decision["retrain"] is True and "performance" in decision["triggers"]
    assert states(run)[("retrain_requested", -1)] == "success"
    [event] = [
        e for e in asset_events("churn_demo_retrain_decision") if e.source_run_id == run.run_id
    ]
    assert event.extra["keys"] == ["batch_005"]

"""bootstrap and monitor under `dag.test()`: the demo stream, a quarantine skipped, a drifted
batch emitting the retrain-decision asset event, MLflow runs tagged with the DAG run."""

import getpass

import pytest
from mlflow import MlflowClient

from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.store import LoopStore
from tests.airflow.conftest import asset_events, labelled, states

# Whole DAG runs on a real Airflow and MLflow (a few minutes in all).
pytestmark = pytest.mark.slow

MAPPED = (
    "monitored_batch",
    "drift_report",
    "scored_batch",
    "model_performance",
    "retrain_decision",
)


def mlflow_runs(loop, **tags):
    client = MlflowClient(tracking_uri=loop.config.tracking_uri)
    experiment = client.get_experiment_by_name(loop.config.mlflow.experiment)
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return client.search_runs([experiment.experiment_id], filter_string=where)


def test_bootstrap_snapshots_the_reference_and_registers_a_champion(airflow_loop):
    loop = airflow_loop
    run = loop.runs["bootstrap"]
    assert str(run.state) == "success"
    assert states(run) == {("reference_snapshot", -1): "success", ("baseline_model", -1): "success"}
    store = LoopStore(loop.config.state_dir)
    assert store.snapshot_info()["rows"] == 3000
    registry = MlflowRegistry.from_config(loop.config)
    assert registry.champion() == 1
    [first] = registry.history()[:1]
    assert (first["action"], first["to_version"]) == ("bootstrap", 1)
    # The Airflow user who triggered the run (dag.test() names it so), not the login name.
    assert first["user"] == "dag_test" != getpass.getuser()
    assert run.run_id in first["triggered_by"] and "churn_demo_bootstrap" in first["triggered_by"]
    [event] = asset_events("churn_demo_champion_model")[-1:]
    assert event.extra["champion_version"] == 1
    [mlrun] = mlflow_runs(loop, **{"airflow.run_id": run.run_id})
    assert mlrun.data.tags["airflow.dag_id"] == "churn_demo_bootstrap"
    assert mlrun.data.tags["mlops_loop.step"] in ("reference_snapshot", "baseline_model")


def test_monitor_maps_the_batches_and_skips_the_quarantined_one(airflow_loop):
    loop = airflow_loop
    run = loop.runs["monitor"]
    assert str(run.state) == "success"
    tasks = labelled(run)
    for task in MAPPED:
        for key in ("batch_001", "batch_004", "batch_005"):
            assert tasks[(f"batch.{task}", key)] == "success", (task, key)
    # The broken batch: its gate skipped (not failed), everything after it skipped too.
    assert tasks[("batch.monitored_batch", "batch_003")] == "skipped"
    skipped = [s for (t, _), s in tasks.items() if t != "batch.monitored_batch" and s == "skipped"]
    assert len(skipped) == len(MAPPED) - 1
    store = LoopStore(loop.config.state_dir)
    assert store.quarantined_keys() == ["batch_003"]
    assert store.accepted_keys() == ["batch_001", "batch_004", "batch_005"]
    assert store.batch_json("batch_003", "drift") is None
    # The run waited for every batch; a quarantined one does not fail it.
    assert states(run)[("monitored", -1)] == "success"


def test_monitor_emits_the_batches_whose_decision_says_retrain(airflow_loop):
    loop = airflow_loop
    run = loop.runs["monitor"]
    store = LoopStore(loop.config.state_dir)
    assert store.batch_json("batch_001", "decision")["retrain"] is False
    # batch_004 drifts but its labels show the champion holding; batch_005's show it failing.
    held = store.batch_json("batch_004", "decision")
    assert held["retrain"] is False
    assert held["reasons"][0].startswith("drift, no retrain: realized performance holds")
    decision = store.batch_json("batch_005", "decision")
    assert decision["retrain"] is True and "performance" in decision["triggers"]
    retrain = [k for k in store.accepted_keys() if store.batch_json(k, "decision")["retrain"]]
    [event] = [
        e for e in asset_events("churn_demo_retrain_decision") if e.source_run_id == run.run_id
    ]
    assert event.extra["keys"] == retrain
    assert retrain == ["batch_005"]
    assert states(run)[("retrain_requested", -1)] == "success"


def test_monitor_mlflow_runs_carry_the_dag_run_and_map_index(airflow_loop):
    loop = airflow_loop
    run = loop.runs["monitor"]
    runs = mlflow_runs(loop, **{"airflow.run_id": run.run_id})
    by_batch = {r.data.tags["mlops_loop.partition"]: r for r in runs}
    assert set(by_batch) == {"batch_001", "batch_003", "batch_004", "batch_005"}
    indexes = {r.data.tags["airflow.map_index"] for r in runs}
    assert indexes == {"0", "1", "2", "3"}
    drifted = by_batch["batch_004"]
    assert drifted.data.tags["airflow.dag_id"] == "churn_demo_monitor"
    assert drifted.data.metrics["quality_success"] == 1
    assert by_batch["batch_003"].data.metrics["quality_success"] == 0


def test_monitor_again_finds_nothing_new(airflow_loop):
    loop = airflow_loop
    before = len(asset_events("churn_demo_retrain_decision"))
    run = loop.run("monitor")
    assert str(run.state) == "success"
    assert states(run)[("landed_batches", -1)] == "success"
    assert labelled(run) == {}
    assert states(run)[("retrain_requested", -1)] == "skipped"
    assert len(asset_events("churn_demo_retrain_decision")) == before

"""One state folder and one MLflow store, driven in turn by the Dagster and the Airflow binding:
neither monitors or retrains again what the other did, and `mlops-loop status` shows the one
loop whichever ran each step."""

import json

import pytest
from mlflow import MlflowClient

from mlops_loop.airflow import build_dags
from mlops_loop.cli import main
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.steps.decision import pending_retrains
from mlops_loop.core.store import LoopStore
from tests.airflow.conftest import AirflowLoop, asset_events, labelled
from tests.dagster.conftest import new_loop, run_job, tick

pytestmark = pytest.mark.slow


def test_dagster_and_airflow_take_turns_on_one_loop(tmp_path, demo_frames, monkeypatch, capsys):
    _, batches = demo_frames
    monkeypatch.chdir(tmp_path)
    dagster = new_loop(tmp_path / "loop", demo_frames, ["batch_001"])
    airflow = AirflowLoop(
        dagster.root, dagster.config_path, dagster.config, build_dags(dagster.config_path)
    )
    config, store = dagster.config, LoopStore(dagster.config.state_dir)
    try:
        # Dagster bootstraps and monitors the first batch, as its sensor asks.
        assert run_job(dagster.defs, dagster.instance, "bootstrap_job").success
        first = tick(dagster.defs, dagster.instance, "landing_sensor")
        assert [r.partition_key for r in first.run_requests] == ["batch_001"]
        dagster.instance.add_dynamic_partitions("batches", ["batch_001"])
        assert run_job(dagster.defs, dagster.instance, "monitor_job", "batch_001").success

        # The concept change lands; Airflow monitors it, and only it.
        landed = config.sources.landing / "batch_005.parquet"
        batches["batch_005"].to_parquet(landed, index=False)
        monitor = airflow.run("monitor")
        assert str(monitor.state) == "success"
        assert {k for (_, k) in labelled(monitor)} == {"batch_005"}
        [event] = [
            e
            for e in asset_events("churn_demo_retrain_decision")
            if e.source_run_id == monitor.run_id
        ]
        assert event.extra["keys"] == ["batch_005"] == pending_retrains(config)

        # Dagster's sensor registers the batch Airflow monitored, without a second run.
        second = tick(dagster.defs, dagster.instance, "landing_sensor")
        assert second.run_requests == []
        assert list(second.dynamic_partitions_requests[0].partition_keys) == ["batch_005"]
        dagster.instance.add_dynamic_partitions("batches", ["batch_005"])

        # Dagster retrains on the decision Airflow made; then Airflow has nothing to retrain.
        retrain = run_job(dagster.defs, dagster.instance, "retrain_job", "batch_005")
        assert retrain.success
        assert store.batch_json("batch_005", "retrain")["outcome"] == "trained"
        assert pending_retrains(config) == []
        nothing = airflow.run("retrain")
        assert str(nothing.state) == "success" and labelled(nothing) == {}

        # Both bindings logged into the one experiment, each run tagged with its own run.
        client = MlflowClient(tracking_uri=config.tracking_uri)
        experiment = client.get_experiment_by_name(config.mlflow.experiment)
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        by = {
            (
                r.data.tags.get("mlops_loop.partition"),
                "airflow"
                if "airflow.run_id" in r.data.tags
                else "dagster"
                if "dagster.run_id" in r.data.tags
                else None,
            )
            for r in runs
        }
        assert {("batch_001", "dagster"), ("batch_005", "airflow"), ("batch_005", "dagster")} <= by

        # The CLI's status shows the one loop.
        assert main(["status", "--config", str(dagster.config_path), "--format", "json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert [b["batch"] for b in shown["batches"]] == ["batch_001", "batch_005"]
        assert [b["retrain"] for b in shown["batches"]] == [False, True]
        registry = MlflowRegistry.from_config(config)
        assert shown["champion"] == registry.champion()
        assert shown["batches"][1]["challenger_version"] == registry.challenger()
        assert [e["action"] for e in shown["history"]] == [e["action"] for e in registry.history()]
    finally:
        dagster.instance.dispose()

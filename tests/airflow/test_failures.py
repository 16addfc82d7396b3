"""A failed task goes to the same failure record and notifiers as in Dagster: the MLflow run of
the DAG run and batch is marked FAILED with the error, and the webhook is told."""

import pytest
from mlflow import MlflowClient

from mlops_loop.core.store import LoopStore
from tests.airflow.conftest import labelled, new_airflow_loop
from tests.dagster.test_alerts_in_dagster import webhook  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow


def test_an_unreadable_batch_fails_its_task_recorded_and_notified(
    tmp_path,
    demo_frames,
    webhook,  # noqa: F811
):
    url, received = webhook
    loop = new_airflow_loop(
        tmp_path,
        demo_frames,
        [],
        **{"alerts.notifiers": [{"type": "webhook", "url": url, "timeout": 5}]},
    )
    garbage = loop.config.sources.landing / "batch_002.parquet"
    garbage.write_bytes(b"not parquet at all, and never was")
    run = loop.run("monitor")
    assert str(run.state) == "failed"
    assert labelled(run)[("batch.monitored_batch", "batch_002")] == "failed"
    assert (
        "cannot be read as parquet"
        in LoopStore(loop.config.state_dir).batch_json("batch_002", "ingest")["error"]
    )

    client = MlflowClient(tracking_uri=loop.config.tracking_uri)
    experiment = client.get_experiment_by_name(loop.config.mlflow.experiment)
    [mlrun] = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`airflow.run_id` = '{run.run_id}'"
    )
    assert mlrun.info.status == "FAILED"
    assert mlrun.data.metrics["step_failures"] == 1
    assert mlrun.data.tags["mlops_loop.partition"] == "batch_002"
    assert mlrun.data.tags["airflow.map_index"] == "0"
    error = mlrun.data.tags["mlops_loop.error"]
    assert "batch.monitored_batch" in error and "cannot be read as parquet" in error

    [message] = received
    assert "churn_demo_monitor failed on batch_002" in message["text"]

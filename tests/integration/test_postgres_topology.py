"""The scale-out topology, for real and without containers.

PostgreSQL holds Dagster's instance and MLflow's backend (two databases made for the test and
dropped after it); an `mlflow server` serves tracking, registry and artifacts; the loop's code
location runs as a gRPC code server; `dagster-daemon` and `dagster-webserver` load it through a
workspace file, on a `dagster.yaml` rendered by `mlops_loop.deploy` (the one docker/ ships).

Nothing is called in process: `bootstrap_job` is launched through the webserver's GraphQL API,
a batch file is dropped into the landing folder, and the daemon's sensors do the rest. The test
only watches, through a `DagsterInstance` on the same PostgreSQL storage and an `MlflowClient`
against the server: landing_sensor -> monitor_job (quality gate, drift, performance, retrain
decision) -> retrain_sensor -> retrain_job (challenger, promotion) -> `champion` moves to the
new version. Then a late-label file lands: label_sensor -> labels_job -> remeasure_sensor ->
a Dagster backfill, started by the daemon, that measures the batch again.

The batch is the demo's generator with both of its shifts at once: an older, western customer
mix (covariate drift) and the new churn pattern (concept drift), so one batch is enough to see
drift, a retrain and a promotion.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_loop.demo.data import make_frame
from mlops_loop.demo.runner import land
from mlops_loop.deploy import DAGSTER_PG_ENV, dagster_instance_config, grpc_workspace
from tests.conftest import write_loop
from tests.integration.conftest import Postgres, Servers, free_port

pytestmark = pytest.mark.integration

# Seconds for the whole scenario, servers' start-up included (about 3 minutes on a quiet 2-core
# machine, half of it waiting for 30-second sensor ticks); a slower machine can give it more.
HARD_TIMEOUT = int(os.environ.get("MLOPS_LOOP_TOPOLOGY_TIMEOUT", "600"))
BIN = Path(sys.executable).parent
LOCATION = "mlops_loop"
EXPERIMENT, MODEL, BATCH = "churn-demo", "churn-model", "batch_001"
T = TypeVar("T")


class Phases:
    """Times each phase and prints it on the terminal, captured output or not."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.started = time.monotonic()
        self.deadline = self.started + HARD_TIMEOUT

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        yield
        with self.capsys.disabled():
            print(f"\n  [topology] {name}: {time.monotonic() - t0:.1f} s", end="")

    def total(self) -> None:
        with self.capsys.disabled():
            print(f"\n  [topology] total: {time.monotonic() - self.started:.1f} s")


@contextmanager
def hard_timeout(seconds: int) -> Iterator[None]:
    """Interrupt the test wherever it waits, so that teardown still stops every server."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the topology scenario took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def wait_for(
    what: str, probe: Callable[[], T | None], phases: Phases, servers: Servers, every: float = 1.0
) -> T:
    """Poll `probe` until it returns something, a server dies, or the deadline passes."""
    while time.monotonic() < phases.deadline:
        servers.check_running()
        value = probe()
        if value is not None:
            return value
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}\n{servers.log_tails()}")


def http_ok(url: str) -> bool | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return True if response.status == 200 else None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def finished_run(instance: Any, servers: Servers, run_id: str) -> Any:
    """The run once it has finished; fails the test with its step errors if it did not succeed."""
    import dagster as dg

    run = instance.get_run_by_id(run_id)
    if run is None or not run.is_finished:
        return None
    if run.status != dg.DagsterRunStatus.SUCCESS:
        errors = [
            f"{e.step_key}: {e.dagster_event.event_specific_data.error.to_string()[:1500]}"
            for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        ] + [
            str(e.dagster_event.message or e.user_message)[:1500]
            for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        ]
        pytest.fail(
            f"{run.job_name} {run_id} ended {run.status.value}:\n"
            + "\n".join(errors)
            + f"\n{servers.log_tails()}"
        )
    return run


def sensor_run(instance: Any, job: str, sensor: str) -> str | None:
    import dagster as dg

    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job))
    for run in runs:
        assert run.tags.get("dagster/sensor_name") == sensor, run.tags
        assert run.tags.get("dagster/partition") == BATCH, run.tags
    return runs[0].run_id if runs else None


def latest_metadata(instance: Any, asset: str) -> tuple[str, dict[str, Any]]:
    """(run id, {key: value}) of the latest materialization of `asset` for the batch."""
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[BATCH]), limit=1
    ).records
    assert records, f"{asset} was never materialized for {BATCH}"
    event = records[0].event_log_entry
    metadata = event.asset_materialization.metadata
    return event.run_id, {key: value.value for key, value in metadata.items()}


def champion_version(client: Any) -> int | None:
    aliases = client.get_registered_model(MODEL).aliases
    return int(aliases["champion"]) if "champion" in aliases else None


def write_scenario(root: Path, tracking_uri: str) -> tuple[Path, Path]:
    """The loop config (MLflow on the server) and, not yet landed, the shifted batch."""
    rng = np.random.default_rng(11)
    t0 = pd.Timestamp("2026-01-05")
    reference = make_frame(rng, 3000, start=t0, id_offset=1)
    batch = make_frame(
        rng,
        1500,
        start=t0 + pd.Timedelta(days=7),
        id_offset=3001,
        covariate_shift=True,
        concept="new",
    )
    config_path = write_loop(
        root,
        reference,
        **{
            "mlflow.tracking_uri": tracking_uri,
            # Through the server, into its --artifacts-destination (not the state folder).
            "mlflow.artifact_location": f"mlflow-artifacts:/{EXPERIMENT}",
        },
    )
    (root / "incoming").mkdir()
    batch_file = root / "incoming" / f"{BATCH}.parquet"
    batch.to_parquet(batch_file, index=False)
    return config_path, batch_file


def test_sensors_retrain_and_promote_on_postgres_and_an_mlflow_server(
    postgres: Postgres,
    servers: Servers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import dagster as dg
    from dagster_graphql import DagsterGraphQLClient
    from mlflow import MlflowClient

    phases = Phases(capsys)
    root, home, artifacts = tmp_path / "loop", tmp_path / "dagster_home", tmp_path / "mlartifacts"
    home.mkdir()
    mlflow_port, grpc_port, web_port = free_port(), free_port(), free_port()
    tracking_uri = f"http://127.0.0.1:{mlflow_port}"

    with hard_timeout(HARD_TIMEOUT), phases.phase("files"):
        config_path, batch_file = write_scenario(root, tracking_uri)
        (home / "dagster.yaml").write_text(yaml.safe_dump(dagster_instance_config()))
        (home / "workspace.yaml").write_text(
            yaml.safe_dump(grpc_workspace("127.0.0.1", grpc_port, LOCATION))
        )
    pg_env = {
        DAGSTER_PG_ENV["username"]: postgres.user,
        DAGSTER_PG_ENV["password"]: postgres.password,
        DAGSTER_PG_ENV["hostname"]: postgres.host,
        DAGSTER_PG_ENV["port"]: str(postgres.port),
        DAGSTER_PG_ENV["db_name"]: postgres.databases["dagster"],
    }
    for name, value in pg_env.items():
        monkeypatch.setenv(name, value)  # for this process's own instance, below
    env = {
        **os.environ,
        **pg_env,
        "DAGSTER_HOME": str(home),
        "MLOPS_LOOP_CONFIG": str(config_path),
        # The server's job runner serves GenAI features; the loop needs none of them.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    workspace = str(home / "workspace.yaml")

    with hard_timeout(HARD_TIMEOUT):
        with phases.phase("servers up (mlflow, code server, webserver, daemon)"):
            servers.start(
                "mlflow",
                [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port)]
                + ["--workers", "1", "--backend-store-uri", postgres.sqlalchemy_uri("mlflow")]
                + ["--serve-artifacts", "--artifacts-destination", str(artifacts)],
                env,
                tmp_path,
            )
            servers.start(
                "code-server",
                [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1"]
                + ["-p", str(grpc_port), "-m", "mlops_loop.definitions"]
                + ["--location-name", LOCATION, "--use-python-environment-entry-point"],
                env,
                tmp_path,
            )
            servers.start(
                "webserver",
                [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port)]
                + ["-w", workspace],
                env,
                tmp_path,
            )
            servers.start(
                "daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], env, tmp_path
            )
            client = DagsterGraphQLClient("127.0.0.1", port_number=web_port, timeout=30)
            wait_for(
                "the webserver to load the gRPC code location",
                lambda: _location_loaded(f"http://127.0.0.1:{web_port}"),
                phases,
                servers,
            )
            wait_for("mlflow server", lambda: http_ok(f"{tracking_uri}/health"), phases, servers)

        instance = dg.DagsterInstance.from_config(str(home))
        mlflow = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        try:
            with phases.phase("bootstrap_job launched through GraphQL"):
                run_id = client.submit_job_execution(
                    "bootstrap_job",
                    repository_location_name=LOCATION,
                    repository_name="__repository__",
                )
                wait_for(
                    "bootstrap_job",
                    lambda: finished_run(instance, servers, run_id),
                    phases,
                    servers,
                )
                assert champion_version(mlflow) == 1

            with phases.phase("landing_sensor -> monitor_job"):
                land(batch_file, root / "landing")
                monitor_id = wait_for(
                    "landing_sensor to request monitor_job",
                    lambda: sensor_run(instance, "monitor_job", "landing_sensor"),
                    phases,
                    servers,
                )
                wait_for(
                    "monitor_job",
                    lambda: finished_run(instance, servers, monitor_id),
                    phases,
                    servers,
                )

            with phases.phase("retrain_sensor -> retrain_job (challenger, promotion)"):
                retrain_id = wait_for(
                    "retrain_sensor to request retrain_job",
                    lambda: sensor_run(instance, "retrain_job", "retrain_sensor"),
                    phases,
                    servers,
                )
                wait_for(
                    "retrain_job",
                    lambda: finished_run(instance, servers, retrain_id),
                    phases,
                    servers,
                )
            _assert_dagster_record(instance, monitor_id, retrain_id)
            _assert_mlflow_record(mlflow, monitor_id, retrain_id, artifacts, root)

            with phases.phase("late labels -> labels_job -> re-measurement backfill"):
                labels = pd.read_parquet(batch_file)[["customer_id", "churned"]]
                labels["labelled_at"] = "2026-01-20T00:00:00+00:00"
                (root / "labels").mkdir(exist_ok=True)
                labels.to_csv(tmp_path / "week3.csv", index=False)
                land(tmp_path / "week3.csv", root / "labels")
                labels_id = wait_for(
                    "label_sensor to request labels_job",
                    lambda: _latest_run(instance, "labels_job"),
                    phases,
                    servers,
                )
                wait_for(
                    "labels_job",
                    lambda: finished_run(instance, servers, labels_id),
                    phases,
                    servers,
                )
                backfill = wait_for(
                    "remeasure_sensor to start a re-measurement backfill",
                    lambda: _remeasure_backfill(instance),
                    phases,
                    servers,
                )
                runs = wait_for(
                    "the backfill's run to finish",
                    lambda: _backfill_runs(instance, servers, backfill.backfill_id),
                    phases,
                    servers,
                )
            assert [r.tags["dagster/partition"] for r in runs] == [BATCH]
            assert all(r.tags["mlops_loop/trigger"] == "late_labels" for r in runs)
            run_id, perf = latest_metadata(instance, "model_performance")
            assert run_id == runs[0].run_id and perf["label_coverage"] == 1.0
        finally:
            instance.dispose()
    phases.total()


def _latest_run(instance: Any, job: str) -> str | None:
    import dagster as dg

    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job), limit=1)
    return runs[0].run_id if runs else None


def _remeasure_backfill(instance: Any) -> Any:
    """The backfill label_sensor asked the daemon for, once it exists."""
    backfills = [
        b for b in instance.get_backfills() if b.tags.get("mlops_loop/trigger") == "late_labels"
    ]
    assert len(backfills) <= 1, backfills
    return backfills[0] if backfills else None


def _backfill_runs(instance: Any, servers: Servers, backfill_id: str) -> list[Any] | None:
    """The backfill's runs once the backfill is done and they all finished (and succeeded)."""
    import dagster as dg

    backfill = instance.get_backfill(backfill_id)
    if not backfill.status.value.startswith("COMPLETED"):
        return None
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    assert backfill.status.value == "COMPLETED_SUCCESS", (backfill.status, runs)
    return [finished_run(instance, servers, r.run_id) for r in runs]


def _location_loaded(url: str) -> bool | None:
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            entries = json.load(response)["data"]["workspaceOrError"]["locationEntries"]
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None  # not listening yet
    loaded = any(e["name"] == LOCATION and e["loadStatus"] == "LOADED" for e in entries)
    return True if loaded else None


def _assert_dagster_record(instance: Any, monitor_id: str, retrain_id: str) -> None:
    import dagster as dg

    # One run per step of the story, all launched by the daemon, all successful.
    runs = instance.get_runs()
    assert Counter(r.job_name for r in runs) == {
        "bootstrap_job": 1,
        "monitor_job": 1,
        "retrain_job": 1,
    }
    assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    assert instance.get_dynamic_partitions("batches") == [BATCH]

    checks = {
        e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data.passed
        for e in instance.all_logs(monitor_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    }
    assert checks["quality_gate"] is True, checks

    run, drift = latest_metadata(instance, "drift_report")
    assert run == monitor_id and drift["dataset_drift"] is True and drift["drift_share"] > 0
    run, perf = latest_metadata(instance, "model_performance")
    assert run == monitor_id and perf["roc_auc"] < 0.75  # the champion misses the new pattern
    run, decision = latest_metadata(instance, "retrain_decision")
    assert run == monitor_id and decision["retrain"] is True
    assert set(decision["triggers"].split(", ")) == {"drift", "performance"}

    run, challenger = latest_metadata(instance, "challenger_model")
    assert run == retrain_id and challenger["version"] == 2
    run, champion = latest_metadata(instance, "champion_model")
    assert run == retrain_id and champion["promoted"] is True
    assert champion["challenger_version"] == 2 and champion["champion_version"] == 2
    assert champion["delta"] > 0


def _assert_mlflow_record(
    mlflow: Any, monitor_id: str, retrain_id: str, artifacts: Path, root: Path
) -> None:
    assert champion_version(mlflow) == 2
    versions = sorted(int(v.version) for v in mlflow.search_model_versions(f"name = '{MODEL}'"))
    assert versions == [1, 2]
    assert mlflow.get_model_version_by_alias(MODEL, "champion").version == "2"

    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    assert experiment.artifact_location == f"mlflow-artifacts:/{EXPERIMENT}"
    for run_id in (monitor_id, retrain_id):
        logged = mlflow.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`dagster.run_id` = '{run_id}'"
        )
        assert logged, f"no MLflow run tagged with Dagster run {run_id}"
    # Artifacts went through the server into its destination, none onto the loop's disk.
    served = [p for p in (artifacts / EXPERIMENT).rglob("*") if p.is_file()]
    assert any(p.name == "MLmodel" for p in served), sorted(str(p) for p in served)[:20]
    assert not (root / "state" / "mlartifacts").exists()

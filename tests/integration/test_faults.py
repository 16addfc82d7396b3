"""Faults in the servers the loop depends on: a real `mlflow server` that is down when a run
starts or dies in the middle of a promotion, and Dagster's PostgreSQL storage dropping its
connections while a run executes. Dagster runs in process (the daemon is not the point here)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy.exc
import yaml

from mlops_loop.core.config import load_config
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.store import LoopStore
from mlops_loop.defs.factory import build_definitions
from mlops_loop.deploy import DAGSTER_PG_ENV, dagster_instance_config
from tests.conftest import write_loop
from tests.dagster.conftest import NO_TELEMETRY, run_job, tick
from tests.integration.conftest import PG_DSN, MlflowServer, Postgres, Servers, _connect

pytestmark = pytest.mark.integration


def step_errors(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {
        e.step_key: e.event_specific_data.error.to_string()
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE and e.step_key
    }


def assert_chain(registry: MlflowRegistry) -> None:
    """The champion history is a chain whose last entry names the serving champion."""
    history = registry.history()
    for before, after in zip(history, history[1:], strict=False):
        assert after["from_version"] == before["to_version"], history
    assert history[-1]["to_version"] == registry.champion(), history


@pytest.fixture
def mlflow_server(servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Fail fast when the server is gone instead of retrying for minutes.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    (tmp_path / "mlflow").mkdir()
    server = MlflowServer(servers, tmp_path / "mlflow")
    server.start()
    return server


def test_mlflow_server_down_or_killed_mid_promotion_leaves_the_champion(
    mlflow_server: MlflowServer,
    tmp_path: Path,
    demo_frames: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference, batches = demo_frames
    root = tmp_path / "loop"
    config_path = write_loop(
        root,
        reference,
        {k: batches[k] for k in ("batch_001", "batch_005")},
        **{
            "mlflow.tracking_uri": mlflow_server.uri,
            "mlflow.artifact_location": "mlflow-artifacts:/churn-demo",
        },
    )
    config = load_config(config_path)
    defs = build_definitions(config_path)
    (root / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(root / "dagster_home"), overrides=NO_TELEMETRY)
    store = LoopStore(config.state_dir)
    registry = MlflowRegistry.from_config(config)
    try:
        assert run_job(defs, instance, "bootstrap_job").success
        instance.add_dynamic_partitions("batches", ["batch_001", "batch_005"])
        assert run_job(defs, instance, "monitor_job", "batch_005").success
        assert store.batch_json("batch_005", "decision")["retrain"] is True

        # (a) The server is down when a monitoring run starts.
        mlflow_server.kill()
        down = run_job(defs, instance, "monitor_job", "batch_001")
        assert not down.success
        [(step, error)] = step_errors(down).items()
        assert step == "monitored_batch"
        assert f"127.0.0.1:{mlflow_server.port}" in error and "connection refused" in error.lower()
        # No verdict claims what MLflow never recorded.
        for name in ("quality", "drift", "performance", "decision"):
            assert store.batch_json("batch_001", name) is None, name
        assert "batch_001" not in store.accepted_keys()

        mlflow_server.start()
        assert registry.champion() == 1
        assert run_job(defs, instance, "monitor_job", "batch_001").success
        assert store.batch_json("batch_001", "quality")["success"] is True

        # (b) The server dies in the middle of the promotion: the challenger is trained and
        # compared, the version stamped, and the history about to be written.
        real_append = MlflowRegistry._append_history

        def die_then_append(self: MlflowRegistry, change: Any) -> None:
            if change.action == "promotion":
                mlflow_server.kill()
            real_append(self, change)

        monkeypatch.setattr(MlflowRegistry, "_append_history", die_then_append)
        killed = run_job(defs, instance, "retrain_job", "batch_005")
        monkeypatch.undo()
        assert not killed.success
        errors = step_errors(killed)
        assert set(errors) == {"champion_model"}
        assert f"127.0.0.1:{mlflow_server.port}" in errors["champion_model"]
        assert store.batch_json("batch_005", "challenger")["version"] == 2
        assert store.batch_json("batch_005", "promotion") is None

        mlflow_server.start()
        assert registry.champion() == 1  # no half-promotion
        assert [e["action"] for e in registry.history()] == ["bootstrap"]
        assert_chain(registry)
        # Run again once the server is back, the retrain completes and promotes.
        again = run_job(defs, instance, "retrain_job", "batch_005")
        assert again.success, step_errors(again)
        promotion = store.batch_json("batch_005", "promotion")
        assert promotion["promoted"] is True
        assert registry.champion() == promotion["challenger_version"] == 3
        assert [e["action"] for e in registry.history()] == ["bootstrap", "promotion"]
        assert_chain(registry)
    finally:
        instance.dispose()


@pytest.fixture
def pg_instance(postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for field, var in DAGSTER_PG_ENV.items():
        value = {
            "username": postgres.user,
            "password": postgres.password,
            "hostname": postgres.host,
            "port": str(postgres.port),
            "db_name": postgres.databases["dagster"],
        }[field]
        monkeypatch.setenv(var, value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(dagster_instance_config()))
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance, postgres.databases["dagster"]
    finally:
        instance.dispose()


def _terminate_backends(database: str) -> int:
    admin = _connect(PG_DSN)
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
            return int(cursor.fetchone()[0])
    finally:
        admin.close()


class Storm:
    """Terminates every connection to a database, again and again, until stopped."""

    def __init__(self, database: str) -> None:
        self.database, self.killed = database, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.killed += _terminate_backends(self.database)
            self._stop.wait(0.02)

    def __enter__(self) -> Storm:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_dagster_postgres_connections_dropped_the_next_tick_and_run_work(
    pg_instance: Any, tmp_path: Path, demo_frames: Any
) -> None:
    instance, database = pg_instance
    reference, batches = demo_frames
    root = tmp_path / "loop"
    config_path = write_loop(root, reference, {"batch_001": batches["batch_001"].head(500)})
    defs = build_definitions(config_path)
    assert run_job(defs, instance, "bootstrap_job").success
    [request] = tick(defs, instance, "landing_sensor").run_requests
    instance.add_dynamic_partitions("batches", [request.partition_key])

    # Every connection to the instance's database is terminated while a run starts and writes
    # its events. Dagster does not retry a query whose connection was cut: the run fails (or
    # is refused at its creation), which is the fault's expected outcome, not the point here.
    outcome = "succeeded"
    with Storm(database) as storm:
        try:
            during = run_job(defs, instance, "monitor_job", "batch_001")
            outcome = "succeeded" if during.success else "failed"
        except sqlalchemy.exc.OperationalError as e:
            outcome = f"raised {type(e.orig).__name__}"
    assert storm.killed > 0  # the fault really happened
    print(f"\n  [faults] {storm.killed} connections terminated; the run during it {outcome}")

    # Between runs: whatever is still connected is dropped again.
    _terminate_backends(database)
    batches["batch_004"].head(500).to_parquet(root / "landing" / "batch_004.parquet")
    after = tick(defs, instance, "landing_sensor")
    assert [r.partition_key for r in after.run_requests] == ["batch_004"]
    instance.add_dynamic_partitions("batches", ["batch_004"])
    later = run_job(defs, instance, "monitor_job", "batch_004")
    assert later.success, step_errors(later)
    record = instance.get_run_record_by_id(later.run_id)
    assert record is not None and record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    materialized = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("retrain_decision"), asset_partitions=["batch_004"]
        ),
        limit=5,
    ).records
    assert [r.run_id for r in materialized] == [later.run_id]
    assert instance.get_dynamic_partitions("batches") == ["batch_001", "batch_004"]

"""The registry read straight from a local SQLite store's tables gives exactly the client's answer;
any other store is read through the client."""

import dataclasses
import sqlite3
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.registry_sqlite import RegistryView, sqlite_file, sqlite_view
from mlops_loop.core.steps.status import loop_status
from mlops_loop.core.tracking import resolve_tracking_uri


@pytest.fixture(scope="module")
def ran_state(tmp_path_factory, demo_frames):
    """A loop run through the core steps: a first champion, one accepted and one quarantined
    batch, a rejected challenger forced into service by rollback, and a second registered
    model in the same store."""
    from mlops_loop.core.config import load_config
    from mlops_loop.core.steps.ingest import ingest_batch
    from mlops_loop.core.steps.models import log_and_register
    from mlops_loop.core.steps.quality import check_quality
    from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot
    from mlops_loop.core.steps.rollback import rollback
    from mlops_loop.core.tracking import tracked_run
    from mlops_loop.core.training import train_model
    from tests.conftest import write_loop

    reference, batches = demo_frames
    root = tmp_path_factory.mktemp("sqlite_view")
    path = write_loop(
        root, reference.head(1500), {k: batches[k] for k in ("batch_001", "batch_003")}
    )
    config = load_config(path)
    take_reference_snapshot(config)
    ensure_champion(config)
    for key in ("batch_001", "batch_003"):
        ingest_batch(config, key, config.sources.landing / f"{key}.parquet")
        check_quality(config, key)
    model = train_model(reference.head(300), config.model, config.columns)
    with tracked_run(config, run_name="challenger"):
        version = log_and_register(config, model, reference.head(20))
    registry = MlflowRegistry.from_config(config)
    registry.tag_version(
        version, {"mlops_loop.metric.roc_auc": 0.6, "mlops_loop.decision": "rejected"}
    )
    registry.set_challenger(version)
    rollback(config, str(version), "v2 for a test " * 20, force=True)
    registry.set_challenger(1)  # both aliases on versions that served
    other = MlflowClient(tracking_uri=config.tracking_uri, registry_uri=config.tracking_uri)
    other.create_registered_model("other-model", tags={"mlops_loop.history.000001": "{}"})
    other.create_model_version("other-model", source="file:///nowhere", tags={"k": "v"})
    other.set_registered_model_alias("other-model", "champion", "1")
    return config


def test_status_read_from_the_tables_equals_the_clients_field_by_field(ran_state):
    direct, client = loop_status(ran_state), loop_status(ran_state, direct=False)
    assert direct.champion == 2 and direct.challenger == 1 and len(direct.history) == 2
    for f in dataclasses.fields(direct):
        assert getattr(direct, f.name) == getattr(client, f.name), f.name
    assert direct.to_dict() == client.to_dict()


def test_the_view_of_the_tables_equals_the_clients(ran_state):
    registry = MlflowRegistry.from_config(ran_state)
    direct = sqlite_view(ran_state.tracking_uri, ran_state.mlflow.registered_model)
    assert direct is not None and direct == registry.view(direct=False)
    assert set(direct.version_tags) == {1, 2}
    assert direct.version_tags[2]["mlops_loop.decision"] == "rejected"
    other = MlflowRegistry(ran_state.tracking_uri, "other-model")
    assert other.view() == other.view(direct=False)
    missing = MlflowRegistry(ran_state.tracking_uri, "never-registered")
    assert missing.view() == missing.view(direct=False) == RegistryView(exists=False)


def test_a_local_sqlite_store_is_read_without_the_client(ran_state, monkeypatch):
    def no_client(self):
        raise AssertionError("the client was asked")

    monkeypatch.setattr(MlflowRegistry, "client", property(no_client))
    assert loop_status(ran_state).challenger == 1


def test_any_other_store_is_read_through_the_client(ran_state, monkeypatch):
    asked = []

    def registered(self):
        asked.append(self.tracking_uri)
        return None  # no such model

    monkeypatch.setattr(MlflowRegistry, "_registered", registered)
    for uri in (
        "http://127.0.0.1:9/",
        "postgresql://loop:secret@db/mlflow",
        f"{ran_state.tracking_uri}?timeout=20",  # options only SQLAlchemy knows
        ran_state.tracking_uri.replace("/mlflow.db", "/ml%66low.db"),  # escaped as it decodes
        "sqlite:///:memory:",
    ):
        assert sqlite_view(uri, "churn-model") is None
        status = loop_status(resolve_tracking_uri(ran_state, uri))
        assert asked[-1] == uri and status.champion is None and status.history == []
    loop_status(ran_state, direct=False)
    assert asked[-1] == ran_state.tracking_uri


def test_workspaces_or_an_unknown_schema_fall_back_to_the_client(ran_state, tmp_path, monkeypatch):
    uri, name = ran_state.tracking_uri, ran_state.mlflow.registered_model
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team-a")
    assert sqlite_view(uri, name) is None
    monkeypatch.delenv("MLFLOW_WORKSPACE")
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    assert sqlite_view(uri, name) is None
    monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES")
    assert sqlite_view(uri, name) is not None
    old = tmp_path / "old.db"  # a store of an MLflow without workspaces, or no MLflow store
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE registered_models (name VARCHAR(256) PRIMARY KEY)")
    assert sqlite_view(f"sqlite:///{old}", name) is None
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    assert sqlite_view(f"sqlite:///{tmp_path / 'junk.db'}", name) is None
    assert sqlite_file(f"sqlite:///{tmp_path / 'absent.db'}") is None


def test_status_on_a_local_sqlite_store_never_imports_mlflow(ran_state, tmp_path):
    code = (
        "import sys; from mlops_loop.cli import main; main(['status', '--config', sys.argv[1]]); "
        "heavy = [m for m in ('mlflow', 'sklearn', 'great_expectations', 'dagster') "
        "if m in sys.modules]; sys.exit(f'imported {heavy}' if heavy else 0)"
    )
    config = ran_state.state_dir.parent / "loop.yaml"
    out = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "champion   : v2" in out.stdout and "challenger : v1" in out.stdout

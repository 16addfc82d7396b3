"""Secrets read from the environment (webhook URL with a token, SMTP credentials, the privacy
salt, MLflow credentials, a password in the tracking URI) appear nowhere in MLflow, in Dagster's
event log or in the loop's state, even when every delivery fails and its error is recorded, or
the tracking server itself cannot be reached, refuses or fails."""

import socket
import traceback

import dagster as dg
import pytest

from mlops_loop.core.store import LoopStore
from tests.core.test_privacy import _mlflow_text
from tests.dagster.conftest import new_loop, run_job
from tests.tracking_stub import FAILURES, PASSWORD, failing_tracking_uri, files_holding, shown

TOKEN = "s3cr3t-T0KEN-webhook-7781"
SMTP_USER = "smtp-user-5521"
SMTP_PASSWORD = "p4ss-W0RD-smtp-9934"
SALT = "salt-V4LUE-2207"
MLFLOW_PASSWORD = "mlflow-P4SS-4410"
SECRETS = [TOKEN, SMTP_USER, SMTP_PASSWORD, SALT, MLFLOW_PASSWORD]


def _closed_port() -> int:
    """A local port nothing listens on: every delivery fails with connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dagster_text(instance: dg.DagsterInstance) -> str:
    """Every event (messages, metadata, check results) and tag of every run, as one text."""
    parts: list[str] = []
    for run in instance.get_runs():
        parts.append(dg.serialize_value(run.tags))
        parts += [dg.serialize_value(e) for e in instance.all_logs(run.run_id)]
    return "\n".join(parts)


@pytest.mark.slow
def test_no_secret_reaches_mlflow_or_dagster(tmp_path, demo_frames, monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("TEST_WEBHOOK_URL", f"http://127.0.0.1:{port}/hook/{TOKEN}?key={TOKEN}")
    monkeypatch.setenv("TEST_SMTP_USER", SMTP_USER)
    monkeypatch.setenv("TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("TEST_SALT", SALT)
    # MLflow's client reads these for an http(s) server; on SQLite they are simply present.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "loop")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)
    key = "batch_004"  # covariate drift: the drift rule fires and both deliveries are tried
    loop = new_loop(
        tmp_path,
        demo_frames,
        [key],
        **{
            "columns.private": ["customer_id"],
            "columns.privacy_salt_env": "TEST_SALT",
            "alerts.notifiers": [
                {"type": "webhook", "url_env": "TEST_WEBHOOK_URL", "timeout": 5},
                {
                    "type": "smtp",
                    "host": "127.0.0.1",
                    "port": port,
                    "sender": "loop@example.org",
                    "recipients": ["ops@example.org"],
                    "username_env": "TEST_SMTP_USER",
                    "password_env": "TEST_SMTP_PASSWORD",
                    "timeout": 5,
                },
            ],
        },
    )
    assert run_job(loop.defs, loop.instance, "bootstrap_job").success
    loop.instance.add_dynamic_partitions("batches", [key])
    run_job(loop.defs, loop.instance, "monitor_job", key)

    alerts = LoopStore(loop.config.state_dir).batch_json(key, "alerts")
    assert alerts is not None, "the alert step did not run"
    deliveries = [d for d in alerts.get("deliveries", []) if not d["ok"]]
    assert len(deliveries) == 2, alerts  # both channels were tried and failed

    mlflow_text, dagster_text = _mlflow_text(loop.config), _dagster_text(loop.instance)
    assert "drift_high" in dagster_text and "drift_high" in mlflow_text
    for where, text in (("MLflow", mlflow_text), ("Dagster", dagster_text)):
        leaked = [s for s in SECRETS if s in text]
        assert not leaked, f"{where} holds {leaked}"
    loop.instance.dispose()


@pytest.mark.slow
def test_a_tracking_uri_given_as_envvar_is_used_and_never_shown(tmp_path, demo_frames, monkeypatch):
    """`mlflow_tracking_uri=dg.EnvVar(...)`: the loop records where the variable points, and
    Dagster's runs and events hold only the variable's name."""
    from mlflow import MlflowClient

    from mlops_loop.defs.factory import build_definitions

    hidden = tmp_path / "store-T0KEN-3391"
    hidden.mkdir()
    uri = f"sqlite:///{hidden / 'mlflow.db'}"
    monkeypatch.setenv("TEST_TRACKING_URI", uri)
    loop = new_loop(tmp_path, demo_frames, [])
    defs = build_definitions(loop.config_path, mlflow_tracking_uri=dg.EnvVar("TEST_TRACKING_URI"))
    assert defs.resources["loop"].mlflow_tracking_uri == dg.EnvVar("TEST_TRACKING_URI")
    assert run_job(defs, loop.instance, "bootstrap_job").success

    champion = MlflowClient(uri, registry_uri=uri).get_model_version_by_alias(
        loop.config.mlflow.registered_model, "champion"
    )
    assert int(champion.version) == 1
    assert not (loop.config.state_dir / "mlflow.db").exists()  # the config's own default
    text = _dagster_text(loop.instance)
    assert "bootstrap_job" in text and "T0KEN-3391" not in text
    loop.instance.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(FAILURES))
def test_a_failing_tracking_server_is_told_without_its_password(
    tmp_path, demo_frames, monkeypatch, mode
):
    """The tracking URI, with a password, from `dg.EnvVar("MLOPS_LOOP_TRACKING_URI")`; the
    server is unreachable, refuses (401) or fails (500). bootstrap_job fails, its step failure
    names the URI redacted, and neither Dagster's events, the failure sensor's error nor the
    state folder hold the password."""
    from mlops_loop.core.errors import TrackingError
    from mlops_loop.core.tracking_errors import HTTP_DEFAULTS
    from mlops_loop.defs.factory import build_definitions

    for name in HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    loop = new_loop(tmp_path, demo_frames, [])
    with failing_tracking_uri(mode) as uri:
        monkeypatch.setenv("MLOPS_LOOP_TRACKING_URI", uri)
        defs = build_definitions(
            loop.config_path, mlflow_tracking_uri=dg.EnvVar("MLOPS_LOOP_TRACKING_URI")
        )
        result = run_job(defs, loop.instance, "bootstrap_job")
        assert not result.success
        [failure] = result.get_step_failure_events()
        error = failure.event_specific_data.error
        assert failure.step_key == "reference_snapshot"
        told = error.to_string()
        assert f"TrackingError: MLflow tracking server {shown(uri)} {FAILURES[mode]}" in told
        # The run failure sensor records and notifies the failure: it cannot reach the server
        # either, and says so the same way.
        context = dg.build_run_status_sensor_context(
            sensor_name="failure_sensor",
            dagster_event=result.get_run_failure_event(),
            dagster_instance=loop.instance,
            dagster_run=loop.instance.get_run_by_id(result.run_id),
            resources=defs.resources,
        ).for_run_failure()
        with pytest.raises(TrackingError) as caught:
            defs.resolve_sensor_def("failure_sensor")(context)
    sensor_told = "".join(traceback.format_exception(caught.value))
    types = {e.dagster_event_type for e in loop.instance.all_logs(result.run_id)}
    assert {dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE} <= types
    text = _dagster_text(loop.instance)
    assert shown(uri) in text
    for where, found in (("Dagster", text), ("failure sensor", sensor_told)):
        assert PASSWORD not in found, where
    assert not files_holding(loop.config.state_dir)
    assert not files_holding(tmp_path / "dagster_home")
    loop.instance.dispose()

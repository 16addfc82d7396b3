"""A tracking server that cannot be reached, refuses (401) or fails (500): every core entry
point raises a `TrackingError` naming the URI with its password redacted, with nothing of the
original (which holds the full URL) chained to it, and fails after a bounded number of retries.
"""

from __future__ import annotations

import traceback

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow import environment_variables as mlflow_env

from mlops_loop.core.errors import MlopsLoopError, TrackingError
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.steps.rollback import rollback
from mlops_loop.core.steps.run import StepContext, record_failure
from mlops_loop.core.steps.scoring import predict_frame
from mlops_loop.core.steps.status import loop_status
from mlops_loop.core.tracking import TAG_ERROR, redact_text, resolve_tracking_uri, tracked_run
from mlops_loop.core.tracking_errors import HTTP_DEFAULTS
from tests.tracking_stub import FAILURES, PASSWORD, failing_tracking_uri, files_holding, shown


@pytest.fixture(autouse=True)
def _mlflow_http_defaults(monkeypatch):
    """Each test starts with MLflow's HTTP settings unset, as a user's shell has them."""
    for name in HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)


def _told(error: BaseException) -> str:
    """Everything a traceback of `error` shows, chained exceptions included."""
    return "".join(traceback.format_exception(error))


ENTRY_POINTS = {
    "tracked_run": lambda c: tracked_run(c, run_name="x").__enter__(),
    "registry": lambda c: MlflowRegistry.from_config(c).champion(),
    "status": loop_status,
    "rollback": lambda c: rollback(c, "previous", "the server is down"),
    "predict": lambda c: predict_frame(c, pd.DataFrame({"x": [1.0]}), "test"),
}


@pytest.mark.parametrize("mode", sorted(FAILURES))
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_a_failing_server_is_a_tracking_error_without_the_password(
    mode, entry, loop_config, monkeypatch
):
    with failing_tracking_uri(mode) as uri:
        config = resolve_tracking_uri(loop_config, uri)
        with pytest.raises(TrackingError) as caught:
            ENTRY_POINTS[entry](config)
    error = caught.value
    assert isinstance(error, MlopsLoopError) and isinstance(error, ConnectionError)
    assert str(error).startswith(f"MLflow tracking server {shown(uri)} {FAILURES[mode]}")
    assert error.__cause__ is None and error.__suppress_context__
    assert PASSWORD not in _told(error)
    assert not files_holding(loop_config.state_dir)
    # The retries were bounded for this process, since the user had not set them.
    for name, value in HTTP_DEFAULTS.items():
        assert getattr(mlflow_env, name).get() == int(value)


def test_settings_the_user_chose_are_kept(loop_config, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    with failing_tracking_uri("unreachable") as uri, pytest.raises(TrackingError):
        MlflowRegistry.from_config(resolve_tracking_uri(loop_config, uri)).champion()
    assert mlflow_env.MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 0
    assert mlflow_env.MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 7
    assert mlflow_env.MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() == 1


def test_not_found_stays_an_answer_not_a_tracking_failure(loop_config):
    """A working store's "no such model" is MLflow's own answer: the registry still reads it
    as "no champion", and an unknown version is still a RegistryError naming it."""
    from mlops_loop.core.errors import RegistryError

    registry = MlflowRegistry.from_config(loop_config)
    assert registry.champion() is None
    with pytest.raises(RegistryError, match="has no version 4; known versions: none"):
        registry.version(4)


def test_the_failure_record_and_tag_hold_no_credential(loop_config):
    """The error tag of a failed step and the failure record keep every URL redacted."""
    leaked = f"API request to http://loop:{PASSWORD}@10.0.0.9:5000/api failed"
    with pytest.raises(RuntimeError), tracked_run(loop_config, run_name="boom") as run:
        run_id = run.info.run_id
        raise RuntimeError(leaked)
    record_failure(loop_config, StepContext(run_key="r1"), "b1", "failure", leaked)
    client = MlflowClient(loop_config.tracking_uri)
    experiment = client.get_experiment_by_name(loop_config.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id])
    tags = {r.info.run_id: r.data.tags[TAG_ERROR] for r in runs}
    assert tags[run_id] == (
        "boom: RuntimeError: API request to http://loop:***@10.0.0.9:5000/api failed"
    )
    assert len(tags) == 2 and all(PASSWORD not in t for t in tags.values())


def test_redact_text_blanks_every_url_and_the_uris_secrets():
    uri = f"https://ops:{PASSWORD}@mlflow.example.org/?token=tok-9981"
    text = (
        f"GET {uri} failed; retried https://a:b-long@h/x?k=v; "
        f"password {PASSWORD} and token tok-9981 seen"
    )
    assert redact_text(text, uri) == (
        "GET https://ops:***@mlflow.example.org/?token=*** failed; retried "
        "https://a:***@h/x?k=***; password *** and token *** seen"
    )
    assert redact_text("no url here") == "no url here"


def test_the_environment_names_the_tracking_uri_before_the_yaml(loop_config, monkeypatch):
    monkeypatch.delenv("MLOPS_LOOP_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(loop_config).tracking_uri == loop_config.tracking_uri
    monkeypatch.setenv("MLOPS_LOOP_TRACKING_URI", "http://from-env:5000")
    assert resolve_tracking_uri(loop_config).tracking_uri == "http://from-env:5000"
    assert resolve_tracking_uri(loop_config, "http://given:1").tracking_uri == "http://given:1"

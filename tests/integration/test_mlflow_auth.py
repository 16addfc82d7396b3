"""The loop against an MLflow tracking server with basic authentication, as docker-compose.yml
runs it (`mlflow server --app-name basic-auth`, the admin from the environment): a request
without the password is refused, the loop signs in from MLFLOW_TRACKING_USERNAME/_PASSWORD,
and the password lands nowhere the loop writes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest

from mlops_loop.core.config import load_config
from mlops_loop.core.errors import TrackingError
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot
from tests.conftest import write_loop
from tests.integration.conftest import MlflowServer, Servers

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-auth-4c1d"


def status_of(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        token = b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_loop_signs_in_to_a_basic_auth_server_and_leaks_no_password(
    servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_frames
) -> None:
    (tmp_path / "mlflow").mkdir()
    ini = tmp_path / "auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'mlflow' / 'auth.db'}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    server = MlflowServer(
        servers,
        tmp_path / "mlflow",
        extra_args=["--app-name", "basic-auth"],
        extra_env={
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
            "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-key-for-the-test",
        },
    )
    server.start()
    api = f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=10"
    assert status_of(f"{server.uri}/health") == 200  # the health check needs no password
    assert status_of(api) == 401
    assert status_of(api, "admin", "wrong") == 401
    assert status_of(api, "admin", PASSWORD) == 200

    reference, _ = demo_frames
    config = load_config(
        write_loop(
            tmp_path / "loop",
            reference.head(1500),
            **{"mlflow.tracking_uri": server.uri, "mlflow.artifact_location": None},
        )
    )
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(
        TrackingError,
        match=rf"MLflow tracking server {server.uri}/? refused the request \(HTTP 401\): "
        "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
    ):
        take_reference_snapshot(config)  # no credentials: refused, and said so
        ensure_champion(config)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    take_reference_snapshot(config)
    ensure_champion(config)
    registry = MlflowRegistry.from_config(config)
    assert registry.champion() == 1

    # Nothing the loop recorded holds the password: runs (params, tags, metrics keys),
    # model versions and their tags, and the loop's own state files.
    from mlflow import MlflowClient

    client = MlflowClient(server.uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], max_results=100
    )
    assert runs
    recorded = json.dumps(
        [[r.data.params, r.data.tags, list(r.data.metrics)] for r in runs]
        + [dict(v.tags) for v in client.search_model_versions()],
        default=str,
    )
    assert PASSWORD not in recorded
    for path in config.state_dir.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    for path in (tmp_path / "mlflow" / "artifacts").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path

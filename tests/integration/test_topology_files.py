"""The container files of the scale-out topology agree with each other and with the code.

Fast (no server, no Docker daemon): docker/dagster.yaml is what `mlops_loop.deploy` renders
and the integration test runs; credentials only ever come from the environment; the services,
ports, volumes and health checks fit together.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_loop.core.config import load_config
from mlops_loop.core.errors import InvalidConfigError
from mlops_loop.deploy import DAGSTER_PG_ENV, dagster_instance_config, grpc_workspace

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DAGSTER_SERVICES = ("code-location", "dagster-webserver", "dagster-daemon")
REFERENCE = re.compile(r"^\$\{[A-Z_]+(:?[-?][^}]*)?\}$")


def load(name: str) -> Any:
    return yaml.safe_load((DOCKER / name).read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("docker-compose.yml")


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a YAML tree, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """{container path: source} of a service's volumes."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def test_dagster_yaml_is_the_rendered_instance_config() -> None:
    assert load("dagster.yaml") == dagster_instance_config()
    storage = load("dagster.yaml")["storage"]["postgres"]["postgres_db"]
    assert {k: v for k, v in storage.items() if k != "scheme"} == {
        field: {"env": var} for field, var in DAGSTER_PG_ENV.items()
    }


def test_dagster_yaml_keeps_the_embedded_defaults_pool_limit_and_telemetry() -> None:
    embedded = yaml.safe_load((ROOT / "dagster_home" / "dagster.yaml").read_text())
    scaled = load("dagster.yaml")
    assert scaled["concurrency"]["pools"] == embedded["concurrency"]["pools"]
    assert scaled["telemetry"] == embedded["telemetry"] == {"enabled": False}


def test_workspace_points_at_the_code_location_service(compose: dict[str, Any]) -> None:
    assert load("workspace.yaml") == grpc_workspace("code-location", 4000, "mlops_loop")
    dockerfile = (DOCKER / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE)
    assert cmd is not None
    assert yaml.safe_load(cmd.group(1)) == [
        "dagster",
        "code-server",
        "start",
        "-h",
        "0.0.0.0",
        "-p",
        "4000",
        "-m",
        "mlops_loop.definitions",
    ]
    health = compose["services"]["code-location"]["healthcheck"]["test"]
    assert health[-2:] == ["-p", "4000"]


def test_services_and_their_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "mlflow", *DAGSTER_SERVICES} <= set(services)
    for name, service in services.items():
        if "profiles" not in service:  # one-off helpers have no health to check
            assert "healthcheck" in service, name
        if name != "postgres":
            assert service["image"].startswith("mlops-loop:"), name
            assert service["build"]["dockerfile"] == "docker/Dockerfile", name
    assert services["mlflow"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["code-location"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "mlflow": {"condition": "service_healthy"},
    }
    for name in ("dagster-webserver", "dagster-daemon"):
        assert services[name]["depends_on"] == {"code-location": {"condition": "service_healthy"}}
        assert services[name]["command"][-2:] == ["-w", "/opt/dagster/home/workspace.yaml"]


def test_credentials_come_only_from_the_environment(compose: dict[str, Any]) -> None:
    for path, value in strings(compose):
        key = path.rsplit(".", 1)[-1]
        if re.search(r"PASSWORD|USER|SECRET", key):
            assert REFERENCE.match(value), f"{path} = {value!r}: expected a ${{VAR}} reference"
        for userinfo in re.findall(r"://([^@/\s]+)@", value):
            parts = userinfo.split(":")
            assert all(REFERENCE.match(p) for p in parts), f"{path}: inline credentials"
    example = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for secret in ("POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_SECRET_KEY"):
        assert example[secret] == "", f"the example must not ship {secret}"
    assert {"POSTGRES_USER", "DAGSTER_DB", "MLFLOW_DB"} <= set(example)


def test_every_dagster_process_reads_the_same_postgres_settings(compose: dict[str, Any]) -> None:
    envs = [compose["services"][name]["environment"] for name in DAGSTER_SERVICES]
    for env in envs:
        assert set(DAGSTER_PG_ENV.values()) <= set(env)
        assert env["DAGSTER_PG_HOST"] == "postgres"
        assert env["DAGSTER_HOME"] == "/opt/dagster/home"
    pg = {k: v for k, v in envs[0].items() if k.startswith("DAGSTER_PG_")}
    assert all({k: v for k, v in env.items() if k.startswith("DAGSTER_PG_")} == pg for env in envs)
    postgres_env = compose["services"]["postgres"]["environment"]
    assert pg["DAGSTER_PG_USERNAME"] == postgres_env["POSTGRES_USER"]
    assert pg["DAGSTER_PG_DB"] == postgres_env["POSTGRES_DB"]
    # Compute logs written by run workers in the code location are read by the webserver.
    for name in DAGSTER_SERVICES:
        assert mounts(compose["services"][name])["/opt/dagster/home/storage"] == "dagster-storage"


def test_mlflow_server_on_postgres_serving_artifacts_from_a_volume(
    compose: dict[str, Any],
) -> None:
    mlflow = compose["services"]["mlflow"]
    uri = mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert uri.startswith("postgresql+psycopg2://") and "@postgres:5432/" in uri
    assert uri.rsplit("/", 1)[1] == compose["services"]["postgres"]["environment"]["MLFLOW_DB"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"] and "--serve-artifacts" in command
    destination = next(a.split("=", 1)[1] for a in command if a.startswith("--artifacts-dest"))
    assert mounts(mlflow)[destination] == "mlflow-artifacts"
    assert "--port=5000" in command and mlflow["ports"][0].endswith(":5000")


def test_mlflow_basic_auth_is_on_and_the_loop_signs_in(compose: dict[str, Any]) -> None:
    """The server runs MLflow's basic-auth app; its user store lives on a volume; every Dagster
    process signs in as the admin the server creates, both from the same .env variables."""
    import configparser

    mlflow = compose["services"]["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    env = mlflow["environment"]
    ini_path = env["MLFLOW_AUTH_CONFIG_PATH"]
    assert mounts(mlflow)[ini_path] == "./mlflow-auth.ini"
    ini = configparser.ConfigParser()
    ini.read(DOCKER / "mlflow-auth.ini")
    store = ini["mlflow"]["database_uri"].removeprefix("sqlite:///")
    assert mounts(mlflow)[str(Path(store).parent)] == "mlflow-auth"
    assert "admin_password" not in ini["mlflow"], "the password comes from the environment"
    for name in DAGSTER_SERVICES:
        dagster_env = compose["services"][name]["environment"]
        assert dagster_env["MLFLOW_TRACKING_USERNAME"] == env["MLFLOW_AUTH_ADMIN_USERNAME"]
        assert dagster_env["MLFLOW_TRACKING_PASSWORD"] == env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert REFERENCE.match(env["MLFLOW_FLASK_SERVER_SECRET_KEY"])
    # The health check stays open (MLflow exempts /health), so it needs no password.
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])


def test_published_ports_bind_to_the_loopback_unless_told_otherwise(
    compose: dict[str, Any],
) -> None:
    """The Dagster UI has no sign-in and launches runs: Compose publishes it (and MLflow) on
    127.0.0.1 by default; another address is a deliberate choice through a variable, which
    the scaling guide explains (an authenticating proxy first)."""
    expected = {
        "dagster-webserver": ("DAGSTER_WEBSERVER_BIND", "DAGSTER_PORT", 3000),
        "mlflow": ("MLFLOW_BIND", "MLFLOW_PORT", 5000),
    }
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert name in expected, f"{name} publishes {port}"
            bind, host_port, container = expected[name]
            assert port == f"${{{bind}:-127.0.0.1}}:${{{host_port}:-{container}}}:{container}"
    example = (DOCKER / ".env.example").read_text()
    for bind, _, _ in expected.values():
        assert f"\n{bind}=127.0.0.1\n" in example + "\n"
    scaling = " ".join((ROOT / "docs" / "scaling.md").read_text().split())
    assert "dagster-webserver -h 0.0.0.0" not in scaling
    assert "reverse proxy" in scaling and "DAGSTER_WEBSERVER_BIND" in scaling


def test_compose_loop_config_is_the_demo_loop_on_the_server(compose: dict[str, Any]) -> None:
    service = compose["services"]["code-location"]
    config_path = service["environment"]["MLOPS_LOOP_CONFIG"]
    assert mounts(service)[config_path] == "./loop.yaml"
    config = load_config(DOCKER / "loop.yaml")
    assert config.tracking_uri == "http://mlflow:5000"
    assert config.artifact_location.startswith("mlflow-artifacts:/")
    data = next(path for path, source in mounts(service).items() if source == "loop-data")
    for path in (config.state_dir, config.sources.reference, config.sources.landing):
        assert path.is_relative_to(data), path
    # Apart from where things live, the container loop is the packaged demo loop.
    ours, demo = (
        load("loop.yaml"),
        yaml.safe_load(
            importlib.resources.files("mlops_loop.demo").joinpath("loop.yaml").read_text()
        ),
    )
    for key in ("state_dir", "sources", "mlflow"):
        ours.pop(key), demo.pop(key)
    assert ours == demo


def test_image_copies_only_what_the_build_context_lets_through() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = [
        src
        for line in re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE)
        for src in line.split()[:-1]
    ]
    assert copied, "the Dockerfile copies nothing"
    for src in copied:
        assert src in allowed, f"{src} is excluded by Dockerfile.dockerignore"
        assert (ROOT / src).exists(), src
    assert 'pip install -c constraints.txt ".[postgres,server]"' in dockerfile


@pytest.mark.parametrize(
    ("env", "runs", "message"),
    [
        ({"username": "U"}, 4, r"missing \['db_name', 'hostname', 'password', 'port'\]"),
        ({**DAGSTER_PG_ENV, "user": "U"}, 4, r"unknown \['user'\]"),
        (DAGSTER_PG_ENV, 0, r"max_concurrent_runs must be at least 1 \(got 0\)"),
    ],
)
def test_instance_config_refuses_bad_input(env: dict[str, str], runs: int, message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        dagster_instance_config(env, max_concurrent_runs=runs)


def test_docker_compose_accepts_the_file() -> None:
    """`docker compose config` where the Compose plugin is installed (no daemon needed)."""
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run([docker, "compose", "version"], capture_output=True).returncode
    ):
        pytest.skip("the Docker Compose plugin is not installed")
    result = subprocess.run(
        [docker, "compose", "-f", str(DOCKER / "docker-compose.yml")]
        + ["--env-file", str(DOCKER / ".env.example"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "POSTGRES_PASSWORD": "checked-by-the-test",
            "MLFLOW_ADMIN_PASSWORD": "checked-by-the-test",
            "MLFLOW_SECRET_KEY": "checked-by-the-test",
        },
        timeout=60,
    )
    assert result.returncode == 0, result.stderr

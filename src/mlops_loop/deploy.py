"""The scale-out topology: Dagster's instance on PostgreSQL, run by its daemon.

`dagster_instance_config` renders the `dagster.yaml` of that topology. `docker/dagster.yaml` is
its output (a test keeps the two equal), and the integration test runs the real daemon on it.
No credential is ever written into the file: each connection field names the environment
variable Dagster reads it from when the instance loads, in every process that opens it
(webserver, daemon, code location and the run workers it starts).
"""

from collections.abc import Mapping
from typing import Any

from mlops_loop.core.errors import InvalidConfigError

#: The environment variable each field of Dagster's PostgreSQL connection is read from.
DAGSTER_PG_ENV: Mapping[str, str] = {
    "username": "DAGSTER_PG_USERNAME",
    "password": "DAGSTER_PG_PASSWORD",
    "hostname": "DAGSTER_PG_HOST",
    "port": "DAGSTER_PG_PORT",
    "db_name": "DAGSTER_PG_DB",
}

#: SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3; dagster-postgres brings psycopg2.
PG_SCHEME = "postgresql+psycopg2"


def dagster_instance_config(
    env: Mapping[str, str] = DAGSTER_PG_ENV, *, max_concurrent_runs: int = 4
) -> dict[str, Any]:
    """The `dagster.yaml` of the scale-out topology, as a mapping to dump as YAML.

    Storage (runs, event log, schedules and sensor cursors) on PostgreSQL; runs queued by the
    webserver and sensors, and dequeued by the daemon, which launches each one in the code
    location that defines it (gRPC); one `champion_model` step at a time (pool limit 1, as in
    the embedded `dagster_home/dagster.yaml`); no telemetry.

    Args:
        env: for each PostgreSQL connection field (`username`, `password`, `hostname`, `port`,
            `db_name`), the environment variable it is read from.
        max_concurrent_runs: runs in progress at once; the rest wait in the queue.

    Raises:
        InvalidConfigError: a connection field is missing or unknown, or
            `max_concurrent_runs` is below 1.
    """
    missing = sorted(set(DAGSTER_PG_ENV) - set(env))
    unknown = sorted(set(env) - set(DAGSTER_PG_ENV))
    if missing or unknown:
        raise InvalidConfigError(
            f"PostgreSQL connection fields: missing {missing}, unknown {unknown}; "
            f"expected exactly {sorted(DAGSTER_PG_ENV)}"
        )
    if max_concurrent_runs < 1:
        raise InvalidConfigError(
            f"max_concurrent_runs must be at least 1 (got {max_concurrent_runs})"
        )
    postgres_db: dict[str, Any] = {field: {"env": env[field]} for field in DAGSTER_PG_ENV}
    postgres_db["scheme"] = PG_SCHEME
    return {
        "storage": {"postgres": {"postgres_db": postgres_db}},
        "run_coordinator": {"module": "dagster", "class": "QueuedRunCoordinator"},
        "run_launcher": {"module": "dagster", "class": "DefaultRunLauncher"},
        "run_monitoring": {
            "enabled": True,
            "start_timeout_seconds": 180,
            "cancel_timeout_seconds": 180,
        },
        "concurrency": {
            "runs": {"max_concurrent_runs": max_concurrent_runs},
            "pools": {"default_limit": 1},
        },
        "telemetry": {"enabled": False},
    }


def grpc_workspace(host: str, port: int, location_name: str = "mlops_loop") -> dict[str, Any]:
    """The `workspace.yaml` with which the webserver and the daemon reach a gRPC code location.

    They never import the loop's code: the code location (`dagster code-server start ...`)
    serves its definitions, evaluates its sensors and starts its runs.
    """
    return {
        "load_from": [{"grpc_server": {"host": host, "port": port, "location_name": location_name}}]
    }

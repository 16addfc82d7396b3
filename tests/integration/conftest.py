"""Real servers as subprocesses, and throw-away PostgreSQL databases.

Every server starts in a process group of its own and carries a marker in its environment, so
that teardown stops it with all its children (code server workers, run workers) and can prove
that nothing it started is left running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

#: Where the machine's PostgreSQL listens (libpq key=value form); trust auth by default.
PG_DSN = os.environ.get(
    "MLOPS_LOOP_TEST_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
MARKER_VAR = "MLOPS_LOOP_TEST_PROCESS"


@dataclass(frozen=True)
class Postgres:
    """Connection facts of the server, and the databases a test owns on it."""

    host: str
    port: int
    user: str
    password: str
    databases: dict[str, str]

    def sqlalchemy_uri(self, name: str) -> str:
        auth = quote(self.user) + (f":{quote(self.password)}" if self.password else "")
        return f"postgresql+psycopg2://{auth}@{self.host}:{self.port}/{self.databases[name]}"


def _connect(dsn: str):
    import psycopg2

    connection = psycopg2.connect(dsn, connect_timeout=5)
    connection.autocommit = True
    return connection


@pytest.fixture
def postgres(request: pytest.FixtureRequest) -> Iterator[Postgres]:
    """Two fresh, uniquely named databases (`dagster`, `mlflow`), dropped afterwards."""
    import psycopg2
    from psycopg2.extensions import parse_dsn

    try:
        admin = _connect(PG_DSN)
    except psycopg2.OperationalError as e:
        message = f"no PostgreSQL at {PG_DSN!r} (set MLOPS_LOOP_TEST_POSTGRES): {e}"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI machines run PostgreSQL: a missing server is a failure
        pytest.skip(message)
    params = parse_dsn(PG_DSN)
    stem = f"mlops_loop_it_{uuid.uuid4().hex[:10]}"
    databases = {"dagster": f"{stem}_dagster", "mlflow": f"{stem}_mlflow"}
    try:
        with admin.cursor() as cursor:
            for name in databases.values():
                cursor.execute(f'CREATE DATABASE "{name}"')
        yield Postgres(
            host=params.get("host", "127.0.0.1"),
            port=int(params.get("port", 5432)),
            user=params.get("user", "postgres"),
            password=params.get("password", ""),
            databases=databases,
        )
    finally:
        with admin.cursor() as cursor:
            for name in databases.values():
                # FORCE closes what a killed server may have left connected.
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries `marker`: whatever the servers started, even a
    child that left its process group."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue  # gone, or not ours to read
    return found


@dataclass
class Servers:
    """Starts servers in process groups of their own; `stop_all` ends them and their children."""

    logs_dir: Path
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
        log = self.logs_dir / f"{name}.log"
        with log.open("wb") as out:
            self.processes[name] = subprocess.Popen(
                args,
                env={**env, MARKER_VAR: self.marker, "PYTHONUNBUFFERED": "1"},
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def check_running(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with code {process.returncode}\n{self.log_tails()}")

    def log_tails(self, chars: int = 2500) -> str:
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-chars:]}"
            for path in sorted(self.logs_dir.glob("*.log"))
        )

    def stop_all(self, grace: float = 15.0) -> list[int]:
        """SIGTERM every group, SIGKILL what is left after `grace` seconds; return the pids of
        marked processes that outlived their group (killed too)."""
        for process in self.processes.values():
            if _group_alive(process.pid):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            while time.monotonic() < deadline and _group_alive(process.pid):
                process.poll()  # reap the leader, so its group can empty
                time.sleep(0.2)
            if _group_alive(process.pid):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        strays = _marked_pids(self.marker)
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return strays


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    logs = tmp_path / "logs"
    logs.mkdir()
    started = Servers(logs)
    try:
        yield started
    finally:
        strays = started.stop_all()
        assert not strays, f"processes outlived their server's group: {strays}"


BIN = Path(sys.executable).parent
START_TIMEOUT = 180


class MlflowServer:
    """`mlflow server` on a SQLite backend, killed and started again on the same port."""

    def __init__(
        self,
        servers: Servers,
        root: Path,
        extra_args: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.servers, self.root = servers, root
        self.extra_args, self.extra_env = extra_args or [], extra_env or {}
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import urllib.request

        self.servers.start(
            "mlflow",
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port)]
            + ["--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}"]
            + ["--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts")]
            + self.extra_args,
            {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.extra_env},
            self.root,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.servers.check_running()
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"mlflow server not up in {START_TIMEOUT} s\n{self.servers.log_tails()}")

    def kill(self) -> None:
        process = self.servers.processes["mlflow"]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

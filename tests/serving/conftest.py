"""A loop with a champion on real MLflow (SQLite in a temp folder), and the endpoint served by
a real uvicorn on a free loopback port, in a thread of the test process."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn

from mlops_loop.core.config import LoopConfig, load_config
from mlops_loop.serving.wal_format import rows_of
from tests.conftest import write_loop


def bootstrap(root, reference, **overrides) -> LoopConfig:
    """The demo loop bootstrapped on 1,500 reference rows under `root`: v1 is champion."""
    from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot

    config = load_config(
        write_loop(root, reference.head(1500), **{"serving.poll_seconds": 0.2, **overrides})
    )
    take_reference_snapshot(config)
    ensure_champion(config)
    return config


@pytest.fixture(scope="session")
def champion_loop(tmp_path_factory, demo_frames) -> LoopConfig:
    """A loop whose registry the tests only read: v1 is champion."""
    return bootstrap(tmp_path_factory.mktemp("serving"), demo_frames[0])


@dataclass
class RecordingSink:
    """A prediction sink that keeps its records in memory; `record` answers with an awaitable
    completed a little later, as a group commit would."""

    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    durable: list[str] = field(default_factory=list)  # request ids whose "req" completed
    started: bool = False
    closed: bool = False

    def start(self) -> None:
        self.started = True

    def record(self, kind: str, payload: dict[str, Any]):
        self.records.append((kind, payload))

        async def flushed() -> None:
            await asyncio.sleep(0.001)
            if kind == "req":
                self.durable.append(payload["id"])

        return flushed()

    def backlog(self) -> int:
        return sum(rows_of({"k": k, **p}) for k, p in self.records)

    def close(self) -> None:
        self.closed = True

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [p for k, p in list(self.records) if k == kind]


class Served:
    """A running server: its base URL, app and sink."""

    def __init__(self, app: Any, sink: RecordingSink) -> None:
        self.app, self.sink = app, sink
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, args=([self.sock],), daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.sock.close()

    @property
    def endpoint(self) -> Any:
        return self.app.state.endpoint


@pytest.fixture
def serve():
    """`serve(config)`: a running server of `create_app(config)` with a `RecordingSink`."""
    from mlops_loop.serving.app import create_app

    running: list[Served] = []

    def start(config: LoopConfig, sink: RecordingSink | None = None) -> Served:
        sink = sink or RecordingSink()
        served = Served(create_app(config, sink=sink), sink).__enter__()
        running.append(served)
        return served

    yield start
    for served in running:
        served.__exit__()


@pytest.fixture
def client():
    with httpx.Client(timeout=30) as c:
        yield c

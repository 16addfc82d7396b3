"""`mlops-loop serve` as a user runs it: a real process on a free port, stopped by SIGTERM after
answering what was in flight, exiting 0; one process or several."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.serving.test_bad_input import ROW

pytestmark = pytest.mark.slow  # a server process starts (imports MLflow and scikit-learn)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(config, *flags: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlops_loop.cli",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            *flags,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "the server never became ready"
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


@pytest.fixture
def config_file(champion_loop):
    return champion_loop.state_dir.parent / "loop.yaml"


def test_sigterm_answers_the_request_in_flight_and_exits_zero(config_file):
    proc, url = _start(config_file)
    try:
        body = json.dumps({"inputs": [ROW] * 50}).encode()
        sent = threading.Event()

        def slowly():  # the request is in flight (its body half sent) when SIGTERM arrives
            yield body[:100]
            sent.set()
            time.sleep(1.0)
            yield body[100:]

        answer: list[httpx.Response] = []
        thread = threading.Thread(
            target=lambda: answer.append(
                httpx.post(f"{url}/invocations", content=slowly(), timeout=30)
            )
        )
        thread.start()
        sent.wait(10)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        thread.join(30)
        assert answer and answer[0].status_code == 200, answer
        assert len(answer[0].json()["predictions"]) == 50
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read() if proc.stdout else ""
    assert "Traceback" not in log, log


def test_two_workers_serve_and_stop_on_sigterm(config_file):
    proc, url = _start(config_file, "--workers", "2", "--host", "127.0.0.1")
    try:
        pids = set()
        with httpx.Client(timeout=30) as c:
            for _ in range(40):
                out = c.post(
                    f"{url}/invocations", json={"inputs": [ROW]}, headers={"Connection": "close"}
                )
                assert out.status_code == 200
                text = c.get(f"{url}/metrics", headers={"Connection": "close"}).text
                pids |= {
                    line.split('worker="')[1].split('"')[0]
                    for line in text.splitlines()
                    if line.startswith("mlops_loop_serving_rows_scored_total")
                }
        assert len(pids) >= 1  # each worker counts its own (pid label)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()

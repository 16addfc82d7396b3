"""Online serving under load: `mlops-loop serve` against MLflow's own scoring server.

One run, one machine, the same champion (the demo's, bootstrapped in a temp folder) and the same
worker count: a bounded load generator on loopback (a fixed number of requests per scenario and
a time limit) sends single-row requests at concurrency 1, 8 and 32, and 1,000-row requests, to

- `mlops-loop serve` with the prediction log (the default: every row lands as a batch file),
- `mlops-loop serve` without it (`serving.log: false`),
- `mlflow models serve -m models:/<name>@champion --env-manager local`,

and prints throughput and p50/p99 latency for each, then the ratios the targets speak of:
ours / MLflow's throughput at every concurrency (target >= 1), the log's cost in throughput
(target <= 10 %), and our p99 single-row latency at concurrency 8 (target <= 20 ms).

    .venv/bin/python benchmarks/serve_load.py [--workers 1] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

BIN = Path(sys.executable).parent
START_TIMEOUT = 120.0  # seconds for a server to answer /health, /ping or /ready
SCENARIO_TIME_LIMIT = 60.0  # seconds; a scenario stops there even if requests are left


@dataclass(frozen=True)
class Scenario:
    name: str
    rows: int  # rows per request
    concurrency: int
    requests: int


SCENARIOS = [
    Scenario("1 row, c=1", 1, 1, 400),
    Scenario("1 row, c=8", 1, 8, 2000),
    Scenario("1 row, c=32", 1, 32, 3000),
    Scenario("1000 rows, c=4", 1000, 4, 80),
]


@dataclass
class Result:
    server: str
    scenario: Scenario
    seconds: float
    latencies_ms: list[float]
    failures: int

    @property
    def done(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(root: Path) -> tuple[Path, pd.DataFrame]:
    """The demo's loop with a champion, and rows to send (features, id and event time)."""
    from mlops_loop.core.config import load_config
    from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot
    from mlops_loop.demo.runner import prepare_workdir

    config_path = prepare_workdir(root)
    config = load_config(config_path)
    take_reference_snapshot(config)
    ensure_champion(config)
    rows = pd.read_parquet(root / "incoming" / "batch_001.parquet")
    return config_path, rows


def with_serving(config_path: Path, name: str, **serving: Any) -> Path:
    data = yaml.safe_load(config_path.read_text())
    data["serving"] = {**data.get("serving", {}), **serving}
    path = config_path.with_name(f"loop-{name}.yaml")
    path.write_text(yaml.safe_dump(data))
    return path


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


def wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready in {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")


def payloads(rows: pd.DataFrame, size: int, count: int) -> list[bytes]:
    """`count` request bodies of `size` rows each (MLflow's `dataframe_split`), cycling."""
    import json

    frame = rows.copy()
    for column in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = frame[column].astype(str)
    records = frame.to_dict(orient="split", index=False)
    columns, data = records["columns"], records["data"]
    bodies = []
    for i in range(min(count, 200)):
        start_row = (i * size) % max(1, len(data) - size)
        chunk = data[start_row : start_row + size]
        bodies.append(json.dumps({"dataframe_split": {"columns": columns, "data": chunk}}).encode())
    return bodies


async def load(url: str, scenario: Scenario, bodies: list[bytes]) -> tuple[float, list[float], int]:
    import httpx

    latencies: list[float] = []
    failures = 0
    sent = 0
    limits = httpx.Limits(max_connections=scenario.concurrency, max_keepalive_connections=64)
    deadline = time.monotonic() + SCENARIO_TIME_LIMIT
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal sent, failures
            while sent < scenario.requests and time.monotonic() < deadline:
                body = bodies[sent % len(bodies)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    response = await client.post(
                        url, content=body, headers={"Content-Type": "application/json"}
                    )
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - t0) * 1000)
                else:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(scenario.concurrency)))
        return time.perf_counter() - started, latencies, failures


def measure(name: str, url: str, rows: pd.DataFrame, scenarios: list[Scenario]) -> list[Result]:
    results = []
    for scenario in scenarios:
        bodies = payloads(rows, scenario.rows, scenario.requests)
        warm = Scenario(scenario.name, scenario.rows, scenario.concurrency, 20)
        asyncio.run(load(url, warm, bodies))  # connections, caches, the model's first call
        seconds, latencies, failures = asyncio.run(load(url, scenario, bodies))
        result = Result(name, scenario, seconds, latencies, failures)
        print(
            f"  {name:14} {scenario.name:15} {result.rps:8.1f} req/s  "
            f"p50 {result.pct(50):7.2f} ms  p99 {result.pct(99):7.2f} ms  "
            f"failed {failures}",
            flush=True,
        )
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a tenth of the requests")
    args = parser.parse_args()
    scenarios = [
        Scenario(s.name, s.rows, s.concurrency, max(40, s.requests // 10)) if args.quick else s
        for s in SCENARIOS
    ]
    root = Path(tempfile.mkdtemp(prefix="serve-load-"))
    try:
        run(root, args.workers, scenarios)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, workers: int, scenarios: list[Scenario]) -> None:
    from mlops_loop.core.config import load_config

    print(f"Bootstrapping the demo's champion in {root} ...", flush=True)
    config_path, rows = prepare(root / "loop")
    config = load_config(config_path)
    features = [*config.columns.numerical, *config.columns.categorical]
    sent = rows[[*features, config.columns.id, config.columns.timestamp]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tracking = config.mlflow.tracking_uri
    assert tracking is not None
    servers = {
        "ours, log": (
            [str(BIN / "mlops-loop"), "serve", "--config", str(with_serving(config_path, "log"))],
            "/ready",
        ),
        "ours, no log": (
            [
                str(BIN / "mlops-loop"),
                "serve",
                "--config",
                str(with_serving(config_path, "nolog", log=False)),
            ],
            "/ready",
        ),
        "mlflow serve": (
            [str(BIN / "mlflow"), "models", "serve", "-m"]
            + [f"models:/{config.mlflow.registered_model}@champion", "--env-manager", "local"],
            "/ping",
        ),
    }
    results: dict[str, list[Result]] = {}
    for name, (command, ready) in servers.items():
        port = free_port()
        extra = ["--port", str(port), "--workers", str(workers)]
        if name == "mlflow serve":
            extra = ["-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]
        log = root / f"{name.replace(' ', '_').replace(',', '')}.log"
        process = start(command + extra, {**env, "MLFLOW_TRACKING_URI": tracking}, log)
        try:
            wait_ready(f"http://127.0.0.1:{port}{ready}", process, log)
            print(f"{name} ({workers} worker(s)) on port {port}", flush=True)
            results[name] = measure(name, f"http://127.0.0.1:{port}/invocations", sent, scenarios)
        finally:
            stop(process)
    report(results)


def report(results: dict[str, list[Result]]) -> None:
    print("\n| scenario | server | req/s | rows/s | p50 ms | p99 ms | failed |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for index, scenario in enumerate(results["mlflow serve"]):
        for name, series in results.items():
            r = series[index]
            print(
                f"| {scenario.scenario.name} | {name} | {r.rps:.1f} | "
                f"{r.rps * r.scenario.rows:.0f} | {r.pct(50):.2f} | {r.pct(99):.2f} | "
                f"{r.failures} |"
            )
    print("\nRatios (same run):")
    for index, base in enumerate(results["mlflow serve"]):
        ours, nolog = results["ours, log"][index], results["ours, no log"][index]
        print(
            f"  {base.scenario.name:15} ours/mlflow {ours.rps / base.rps:5.2f}x (log) "
            f"{nolog.rps / base.rps:5.2f}x (no log); the log costs "
            f"{(1 - ours.rps / nolog.rps) * 100:5.1f} % of throughput"
        )
    c8 = next(r for r in results["ours, log"] if r.scenario.name == "1 row, c=8")
    print(f"  p99 single-row latency at concurrency 8, with the log: {c8.pct(99):.2f} ms")


if __name__ == "__main__":
    main()

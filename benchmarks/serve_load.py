"""Throughput and latency of `mlops-loop serve` against `mlflow models serve` on the same
champion, on loopback: a bounded load generator (httpx's async client, a fixed number of
requests per case and a time limit), one server process at a time, the same worker count.

`.venv/bin/python benchmarks/serve_load.py [--workers N] [--requests N] [--time-limit S]`
bootstraps a champion on the demo's reference in a temporary folder, then runs single-row
requests at concurrency 1, 8 and 32 and 1,000-row requests at concurrency 8 against:
`mlops-loop serve` with its prediction log off (NullSink), with the log on when
`mlops_loop.serving.wal` is installed, and `mlflow models serve -m models:/<name>@champion
--env-manager local`. Prints requests per second and p50/p99 latency per case, and the
targets: throughput at least MLflow's everywhere, p99 of single rows at concurrency 8 <= 20 ms.
The load generator shares the machine's cores with the server, for both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
CASES = [("1 row", 1, 1), ("1 row", 8, 1), ("1 row", 32, 1), ("1000 rows", 8, 1000)]


def env(**extra: str) -> dict[str, str]:
    out = {**os.environ, **extra}
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), out.get("PYTHONPATH", "")])
    return out


def bootstrap(root: Path, log_settings: dict | None = None) -> tuple[Path, Path, object]:
    """A loop with a champion under `root`: (config without the log, config with it, config)."""
    import importlib.resources

    from mlops_loop.core.config import load_config
    from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot
    from mlops_loop.demo.data import generate

    reference, batches = generate(seed=11, reference_rows=3000)
    (root / "data").mkdir(parents=True)
    (root / "landing").mkdir()
    reference.to_parquet(root / "data" / "reference.parquet", index=False)
    doc = yaml.safe_load(
        importlib.resources.files("mlops_loop.demo").joinpath("loop.yaml").read_text()
    )
    doc["promotion"]["bootstrap_rounds"] = 100
    paths = []
    for name, log in (("loop.yaml", False), ("loop-log.yaml", True)):
        doc["serving"] = {"log": log, **((log_settings or {}) if log else {})}
        paths.append(root / name)
        paths[-1].write_text(yaml.safe_dump(doc))
    config = load_config(paths[0])
    take_reference_snapshot(config)
    ensure_champion(config)
    return paths[0], paths[1], (config, batches["batch_002"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, url: str, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready within {limit} s")


def payload(frame, columns) -> bytes:
    rows = frame[columns.features].astype({c: "float64" for c in columns.numerical})
    rows = rows.astype(object).where(rows.notna(), None)
    return json.dumps(
        {"dataframe_split": {"columns": list(rows.columns), "data": rows.values.tolist()}}
    ).encode()


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


class Client:
    """POSTs with httpx's async client or, with `--client aiohttp`, aiohttp's (httpx spends
    more CPU per request than the server does at concurrency 32 on two cores)."""

    def __init__(self, kind: str, concurrency: int) -> None:
        self.kind, self.concurrency = kind, concurrency

    async def __aenter__(self) -> Client:
        if self.kind == "aiohttp":
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self.concurrency)
            self.session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=60)
            )
        else:
            limits = httpx.Limits(
                max_connections=self.concurrency, max_keepalive_connections=self.concurrency
            )
            self.session = httpx.AsyncClient(limits=limits, timeout=60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.kind == "aiohttp":
            await self.session.close()
        else:
            await self.session.aclose()

    async def post(self, url: str, body: bytes) -> bool:
        headers = {"Content-Type": "application/json"}
        try:
            if self.kind == "aiohttp":
                async with self.session.post(url, data=body, headers=headers) as out:
                    await out.read()
                    return out.status == 200
            return (await self.session.post(url, content=body, headers=headers)).status_code == 200
        except Exception:
            return False


async def drive(
    url: str, body: bytes, concurrency: int, total: int, limit: float, kind: str
) -> Result:
    latencies: list[float] = []
    errors = 0
    issued = 0
    async with Client(kind, concurrency) as client:
        for _ in range(min(20, total)):  # warm-up, not counted
            await client.post(url, body)
        started = time.perf_counter()
        deadline = started + limit

        async def one_client() -> None:
            nonlocal issued, errors
            while issued < total and time.perf_counter() < deadline:
                issued += 1
                t = time.perf_counter()
                ok = await client.post(url, body)
                latencies.append(time.perf_counter() - t)
                errors += not ok

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    return Result(len(ms), errors, seconds, statistics.median(ms), p99)


def run_server(name: str, cmd: list[str], port: int, ready: str, extra_env: dict, bodies, args):
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, env=env(**extra_env), stdout=log, stderr=subprocess.STDOUT)
    results = {}
    try:
        try:
            wait_ready(proc, f"http://127.0.0.1:{port}{ready}")
        except RuntimeError:
            log.seek(0)
            print(log.read()[-3000:], file=sys.stderr)
            raise
        for case, concurrency, rows in CASES:
            total = args.requests if rows == 1 else max(20, args.requests // 20)
            if concurrency == 1 and rows == 1:
                total = max(50, args.requests // 4)
            results[(case, concurrency)] = asyncio.run(
                drive(
                    f"http://127.0.0.1:{port}/invocations",
                    bodies[rows],
                    concurrency,
                    total,
                    args.time_limit,
                    args.client,
                )
            )
            r = results[(case, concurrency)]
            print(
                f"  {name:24} {case:10} c={concurrency:<3} {r.throughput:8.1f} req/s  "
                f"p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  errors {r.errors}",
                flush=True,
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return results


def median_of(rounds: list[dict]) -> dict:
    """Per server and case, the round with the median throughput (its latencies with it):
    on a shared machine one slow round says more about the machine than the server."""
    out: dict = {}
    for label in rounds[0]:
        out[label] = {}
        for key in rounds[0][label]:
            ranked = sorted((r[label][key] for r in rounds), key=lambda x: x.throughput)
            out[label][key] = ranked[len(ranked) // 2]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--requests", type=int, default=2000, help="single-row requests a case")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds a case, at most")
    parser.add_argument("--client", choices=["httpx", "aiohttp"], default="httpx")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds over every server; medians are shown"
    )
    parser.add_argument("--flush-ms", type=int, help="serving.flush_ms of the logged server")
    parser.add_argument("--batch-rows", type=int, help="serving.batch_rows of the logged server")
    args = parser.parse_args()
    settings = {
        k: v for k, v in (("flush_ms", args.flush_ms), ("batch_rows", args.batch_rows)) if v
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plain, logged, (config, batch) = bootstrap(root, settings)
        bodies = {1: payload(batch.head(1), config.columns)}
        bodies[1000] = payload(batch.head(1000), config.columns)
        name = config.mlflow.registered_model
        servers = [("mlops-loop serve", plain, {})]
        if importlib.util.find_spec("mlops_loop.serving.wal") is not None:
            servers.append(("mlops-loop serve + log", logged, {}))
        rounds: list[dict] = []
        for number in range(1, args.rounds + 1):
            print(f"round {number} of {args.rounds}", flush=True)
            table = {}
            # The two of ours take turns in going first, so that a machine getting slower or
            # faster during a round does not favour either; their costs are paired per round.
            ordered = servers if number % 2 else servers[::-1]
            for label, path, extra in ordered:
                port = free_port()
                cmd = [sys.executable, "-m", "mlops_loop.cli", "serve", "--config", str(path)]
                cmd += ["--port", str(port), "--workers", str(args.workers)]
                table[label] = run_server(label, cmd, port, "/ready", extra, bodies, args)
            port = free_port()
            cmd = [sys.executable, "-m", "mlflow", "models", "serve"]
            cmd += ["-m", f"models:/{name}@champion", "--env-manager", "local"]
            cmd += ["-p", str(port), "-w", str(args.workers)]
            # MLflow starts `uvicorn` by name: the venv's bin folder goes first on PATH.
            path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
            # Both URIs: MLflow leaves them in this process' environment after the bootstrap.
            uri = config.tracking_uri
            mlflow_env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri, "PATH": path}
            table["mlflow models serve"] = run_server(
                "mlflow models serve", cmd, port, "/ping", mlflow_env, bodies, args
            )
            rounds.append(table)
        table = median_of(rounds)
    print(f"\nmedian of {args.rounds} round(s), each server started afresh in each round:")
    print(f"\n{'server':24} {'case':10} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for label, results in table.items():
        for (case, concurrency), r in results.items():
            print(
                f"{label:24} {case:10} {concurrency:>4} {r.throughput:9.1f} "
                f"{r.p50_ms:8.2f} {r.p99_ms:8.2f}" + (f"  ({r.errors} errors)" if r.errors else "")
            )
    theirs = table["mlflow models serve"]
    print("\nagainst the targets (same run):")
    for label in [k for k in table if k.startswith("mlops-loop")]:
        ours = table[label]
        ratios = ", ".join(
            f"{c} c={n} {ours[(c, n)].throughput / theirs[(c, n)].throughput:.2f}x"
            for c, n in theirs
        )
        faster = all(ours[k].throughput >= theirs[k].throughput for k in theirs)
        print(f"  {label}: throughput / MLflow's: {ratios} -> {'yes' if faster else 'NO'}")
        p99 = ours[("1 row", 8)].p99_ms
        print(f"  {label}: p99 of single rows at concurrency 8: {p99:.2f} ms (target <= 20 ms)")
    if "mlops-loop serve + log" in table:
        plain_r, logged_r = table["mlops-loop serve"], table["mlops-loop serve + log"]
        costs = {k: 1 - logged_r[k].throughput / plain_r[k].throughput for k in plain_r}
        shown = ", ".join(f"{c} c={n} {v * 100:+.1f}%" for (c, n), v in costs.items())
        print(f"  the log's cost in throughput, of the medians: {shown}")
        # Paired: each round's logged server against the plain one run beside it.
        on, off = "mlops-loop serve + log", "mlops-loop serve"
        per_round = {
            k: [1 - r[on][k].throughput / r[off][k].throughput for r in rounds] for k in plain_r
        }
        paired = {k: statistics.median(v) for k, v in per_round.items()}
        shown = ", ".join(f"{c} c={n} {v * 100:+.1f}%" for (c, n), v in paired.items())
        worst = max(paired.values())
        print(
            f"  the log's cost in throughput, median of the {len(rounds)} rounds' paired costs: "
            f"{shown} (worst {worst * 100:.1f}%, target <= 10%)"
        )
        for (c, n), each in per_round.items():
            print(f"    {c} c={n}: " + ", ".join(f"{v * 100:+.1f}%" for v in each))
    return 0


if __name__ == "__main__":
    sys.exit(main())

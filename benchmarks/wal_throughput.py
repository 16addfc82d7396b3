"""Prediction log throughput: records/s through `WalSink` with flush_ms=0 (an fsync before
each answer, group-committed) and flush_ms=50 (written before each answer, fsynced every
50 ms), against no log at all, for one writer calling `record` in a loop and for 32
concurrent asyncio writers calling `arecord`.

One-row "req" records shaped like the demo's; each case runs for `--seconds` on a temporary
folder (the disk's fsync cost decides most of it). Rolling into parquet runs alongside.

    .venv/bin/python benchmarks/wal_throughput.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.serving.wal import WalSink

COLUMNS = ColumnsConfig(
    numerical=["age", "income", "tenure_months", "sessions_per_week", "support_tickets"],
    categorical=["region", "plan", "device"],
    target="churned",
    prediction="churn_score",
    id="customer_id",
)


def payload(i: int) -> dict:
    row = {
        "age": 41.0,
        "income": 52_000.0,
        "tenure_months": 17.0,
        "sessions_per_week": 3.5,
        "support_tickets": 1.0,
        "region": "north",
        "plan": "basic",
        "device": "ios",
        "customer_id": f"c{i}",
        "churn_score": 0.31,
    }
    return {"id": f"r{i}", "status": 200, "latency_ms": 1.7, "version": 3, "rows": [row]}


class NoLog:
    """The baseline: the same calls, nothing written."""

    def start(self) -> None: ...

    def record(self, kind: str, body: dict) -> None:
        payload_copy = dict(body)  # what the caller does anyway: build the record
        del payload_copy

    async def arecord(self, kind: str, body: dict) -> None:
        self.record(kind, body)

    def close(self) -> None: ...


def single(sink, seconds: float) -> float:
    n, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        sink.record("req", payload(n))
        n += 1
    return n / (time.perf_counter() - start)


def concurrent(sink, seconds: float, writers: int = 32) -> float:
    count = [0]

    async def writer(end: float) -> None:
        while time.perf_counter() < end:
            count[0] += 1
            await sink.arecord("req", payload(count[0]))

    async def main() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(writer(start + seconds) for _ in range(writers)))
        return count[0] / (time.perf_counter() - start)

    return asyncio.run(main())


def run(kind: str, flush_ms: int | None, seconds: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sink = (
            NoLog()
            if flush_ms is None
            else WalSink(
                root / "wal", root / "landing", "bench", columns=COLUMNS, flush_ms=flush_ms
            )
        )
        sink.start()
        rate = (single if kind == "single" else concurrent)(sink, seconds)
        sink.close()
        return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(f"{'writers':<22}{'log':<14}{'records/s':>12}{'us/record':>11}{'vs no log':>11}")
    for kind, label in (("single", "1 (record)"), ("concurrent", "32 asyncio (arecord)")):
        base = run(kind, None, args.seconds)
        for name, flush in (("none", None), ("flush_ms=0", 0), ("flush_ms=50", 50)):
            rate = base if flush is None else run(kind, flush, args.seconds)
            print(f"{label:<22}{name:<14}{rate:>12,.0f}{1e6 / rate:>11,.1f}{rate / base:>11.4f}")


if __name__ == "__main__":
    main()

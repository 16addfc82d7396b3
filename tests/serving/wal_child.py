"""A server process stand-in: logs requests with a real WalSink and prints each request id on
stdout once its record is acknowledged (durable). Run by the tests, killed by them.

    python wal_child.py <log_dir> <landing> <worker_id> <flush_ms> <writers> <requests>

Env: WAL_CHILD_KILL_AT_COMMIT=n SIGKILLs this process at the n-th commit of a roll, after
its file has landed and before its position is recorded (with WAL_CHILD_ROLL_IN=thread, so
that the roll runs in this process); WAL_CHILD_BATCH_ROWS; WAL_CHILD_ROLL_IN (default
process).
"""

import asyncio
import os
import signal
import sys
import threading

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.serving import roller
from mlops_loop.serving.wal import WalSink

COLUMNS = ColumnsConfig(
    numerical=["x"],
    categorical=["c"],
    target="y",
    id="cid",
    timestamp="ts",
    private=["cid"],
)


def _kill_at_commit(n: int) -> None:
    real = roller.write_state
    calls = {"commits": 0}

    def write_state(folder, state):
        if state.get("pending") is None:  # a commit, not an intent
            calls["commits"] += 1
            if calls["commits"] == n:  # the file has landed, its position is not recorded
                os.kill(os.getpid(), signal.SIGKILL)
        real(folder, state)

    roller.write_state = write_state


def payload(name: str, i: int) -> dict:
    rows = [
        {
            "x": i + r,
            "c": "abc"[r % 3],
            "cid": f"private{name}r{r}",
            "ts": 1.8e9 + i,
            "prediction": 0.5,
        }
        for r in range(1 + i % 3)
    ]
    return {"id": name, "status": 200, "latency_ms": 1.0, "version": 1, "rows": rows}


async def main() -> None:
    log_dir, landing, worker, flush_ms, writers, requests = sys.argv[1:7]
    if os.environ.get("WAL_CHILD_KILL_AT_COMMIT"):
        _kill_at_commit(int(os.environ["WAL_CHILD_KILL_AT_COMMIT"]))
    sink = WalSink(
        log_dir,
        landing,
        worker,
        columns=COLUMNS,
        flush_ms=int(flush_ms),
        batch_rows=int(os.environ.get("WAL_CHILD_BATCH_ROWS", "50")),
        batch_seconds=30.0,
        heartbeat_seconds=0.2,
        roll_in=os.environ.get("WAL_CHILD_ROLL_IN", "process"),
    )
    sink.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    prefix = f"{worker}-{os.getpid()}-"
    counter = iter(range(int(requests)))
    lock = threading.Lock()

    async def writer() -> None:
        while not stop.is_set():
            with lock:
                i = next(counter, None)
            if i is None:
                return
            name = f"{prefix}{i}"
            await sink.arecord("req", payload(name, i))
            print(name, flush=True)
            # With flush_ms > 0 arecord returns without waiting: yield, as a server's request
            # does, so that the SIGTERM handler gets to run.
            await asyncio.sleep(0)

    await asyncio.gather(*(writer() for _ in range(int(writers))))
    if not stop.is_set():
        print("DONE", flush=True)
        await stop.wait()
    sink.close()
    print("CLOSED", flush=True)


if __name__ == "__main__":
    asyncio.run(main())

"""The online half closes the loop, for real: `mlops-loop serve` in a process of its own answers
concurrent requests, is SIGKILLed under load, restarts and is stopped with SIGTERM; every row
that got a 200 lands once in a served batch file, no private value is written anywhere, and the
landing sensor and `monitor_job` then monitor those files with their online figures."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from mlops_loop.core.store import LoopStore
from tests.dagster.conftest import materialized, new_loop, run_job, tick
from tests.serving.test_cli_serve import _start

pytestmark = pytest.mark.slow  # server processes start; a loop is bootstrapped and monitored

SALT = "pepper-for-the-test"
ROWS_PER_REQUEST = 3
WRITERS = 6


class Load:
    """Threads posting 3-row requests; the ids of those answered 200, and their rows' ids."""

    def __init__(self, url: str, rows: pd.DataFrame, id_column: str, prefix: str) -> None:
        self.url, self.rows, self.id_column, self.prefix = url, rows, id_column, prefix
        self.acked: dict[str, list[str]] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.count = 0
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(WRITERS)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def wait_for(self, answered: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < answered:
            assert time.monotonic() < deadline, f"only {len(self.acked)} answers"
            time.sleep(0.05)

    def _run(self, writer: int) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                with self.lock:
                    n, self.count = self.count, self.count + 1
                rid = f"{self.prefix}-{writer}-{n}"
                part = self.rows.sample(ROWS_PER_REQUEST, random_state=n).copy()
                # Private values a grep can find: they must never be written raw.
                part[self.id_column] = [f"zqsecret{rid}x{i}" for i in range(len(part))]
                body = {"dataframe_records": part.to_dict(orient="records")}
                try:
                    out = client.post(
                        f"{self.url}/invocations", json=body, headers={"X-Request-ID": rid}
                    )
                except httpx.HTTPError:
                    continue  # the server was killed mid-request: not acknowledged
                if out.status_code == 200:
                    with self.lock:
                        self.acked[rid] = list(part[self.id_column])


def test_served_rows_survive_a_kill_land_once_and_are_monitored(tmp_path, demo_frames, monkeypatch):
    monkeypatch.setenv("MLOPS_LOOP_PRIVACY_SALT", SALT)
    _, batches = demo_frames
    loop = new_loop(
        tmp_path,
        demo_frames,
        [],
        **{
            "columns.private": ["customer_id"],
            "serving.batch_rows": 600,
            "serving.flush_ms": 50,
            "serving.poll_seconds": 1,
        },
    )
    assert run_job(loop.defs, loop.instance, "bootstrap_job").success
    cols = loop.config.columns
    rows = batches["batch_001"][[cols.id, cols.timestamp, *cols.features]].copy()
    rows[cols.timestamp] = rows[cols.timestamp].astype(str)
    config_path = loop.config_path  # the server processes inherit the salt's variable

    # First life: SIGKILLed under load.
    proc, url = _start(config_path)
    with Load(url, rows, cols.id, "a") as first:
        first.wait_for(150)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # Second life: replays what the first left, serves, and stops cleanly on SIGTERM.
    proc, url = _start(config_path)
    with Load(url, rows, cols.id, "b") as second:
        second.wait_for(100)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, proc.stdout.read() if proc.stdout else ""

    acked = {**first.acked, **second.acked}
    files = sorted(loop.config.sources.landing.glob("served-*.parquet"))
    assert len(files) >= 2, files
    landed = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    per_request = landed.groupby("request_id").size()
    # Every acknowledged request landed, each of its rows once; nothing landed twice.
    assert set(acked) <= set(per_request.index)
    assert (per_request == ROWS_PER_REQUEST).all(), per_request[per_request != ROWS_PER_REQUEST]
    assert not landed.duplicated(["request_id", "row"]).any()
    # No private value, raw, in the landed files or what is left of the log.
    wal_dir = loop.config.serving.wal_dir(loop.config.state_dir)
    written = [*files, *(p for p in Path(wal_dir).rglob("*") if p.is_file())]
    assert not any(b"zqsecret" in p.read_bytes() for p in written)
    assert not landed[cols.id].str.startswith("zqsecret").any()

    # The loop monitors what was served.
    requested = tick(loop.defs, loop.instance, "landing_sensor")
    keys = [r.partition_key for r in requested.run_requests]
    assert sorted(keys) == sorted(f.stem for f in files)
    loop.instance.add_dynamic_partitions("batches", keys)
    store = LoopStore(loop.config.state_dir)
    for key in keys[:2]:
        result = run_job(loop.defs, loop.instance, "monitor_job", key)
        assert result.success, key
        assert (store.batch_dir(key) / "drift.json").exists()
        scored = materialized(result)["scored_batch"].metadata
        assert scored["serving_model_version"].value == 1
        assert scored["serving_latency_p99_ms"].value > 0
        assert 0 <= scored["serving_availability"].value <= 1

    # Late labels arrive with the raw ids the callers sent; they find the rows served under
    # the ids' digests.
    from mlops_loop.core.labels import attach_labels, ingest_labels

    sent = [i for ids in acked.values() for i in ids]
    labels = pd.DataFrame({cols.id: sent, cols.target: [i % 2 for i in range(len(sent))]})
    labels["labelled_at"] = "2030-01-01T00:00:00+00:00"
    assert loop.config.sources.labels is not None
    loop.config.sources.labels.mkdir(parents=True, exist_ok=True)
    labels.to_csv(loop.config.sources.labels / "late.csv", index=False)
    ingested = ingest_labels(loop.config)
    assert set(keys) <= set(ingested.affected)
    joined = attach_labels(loop.config, store.batch(keys[0]))
    assert joined[cols.target].notna().all()

"""Shared pieces of the prediction log's tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.serving.wal import WalSink

SALT_ENV = "MLOPS_LOOP_PRIVACY_SALT"
COLUMNS = ColumnsConfig(
    numerical=["x"], categorical=["c"], target="y", id="cid", timestamp="ts", private=["cid"]
)


def sink(root: Path, worker: str = "w1", **kw) -> WalSink:
    kw.setdefault("columns", COLUMNS)
    kw.setdefault("flush_ms", 0)
    # A roll process keeps the machine's time: a test's own clock needs the roll thread.
    kw.setdefault("roll_in", "thread" if "clock" in kw else "process")
    return WalSink(root / "wal", root / "landing", worker, **kw)


def req(rid: str, rows: int = 1, **extra) -> dict:
    body = {
        "id": rid,
        "status": 200,
        "latency_ms": 2.5,
        "version": 4,
        "rows": [
            {
                "x": r,
                "c": "a",
                "cid": f"zq{rid}-{r}qz",
                "ts": "2026-01-02T03:04:05Z",
                "prediction": 0.25,
            }
            for r in range(rows)
        ],
    }
    body.update(extra)
    return body


def landed(root: Path) -> list[Path]:
    return sorted((root / "landing").glob("*.parquet"))


def frame(root: Path) -> pd.DataFrame:
    files = landed(root)
    if not files:
        return pd.DataFrame(columns=["request_id"])
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def serving_meta(path: Path) -> dict:
    import json

    return json.loads(pq.read_schema(path).metadata[b"mlops_loop.serving"])


def wait_for(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    """Poll until `condition` holds; fail after `seconds` (a hang, not a speed check)."""
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.02)

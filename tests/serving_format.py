"""Landed batch files in the prediction log's format (docs/serving.md, "Prediction log and
landed batches"), written the way the roller writes them: rows plus the `mlops_loop.serving`
parquet key-value metadata, through pyarrow. Tests of the loop, the endpoint and the WAL all
build served batches with these.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.core.served import SCHEMA, SERVING_KEY

#: The error statuses the record counts, all present (zero when none happened).
NO_ERRORS = {"422": 0, "413": 0, "400": 0, "500": 0}


def served_name(first: float, worker: str = "testhost-1") -> str:
    """`served-<UTC yyyymmddTHHMMSS.ffffff>-<worker>.parquet` for a window starting at the
    epoch seconds `first`: names sort by time."""
    stamp = datetime.fromtimestamp(first, UTC).strftime("%Y%m%dT%H%M%S.%f")
    return f"served-{stamp}-{worker}.parquet"


def served_rows(
    features: pd.DataFrame,
    columns: ColumnsConfig,
    scores: np.ndarray,
    *,
    model_version: int | Sequence[int],
    rows_per_request: int = 1,
    latency_ms: Sequence[float] | float = 5.0,
    start: float = 1_800_000_000.0,
    seconds_per_request: float = 1.0,
    shadow_scores: np.ndarray | None = None,
    shadow_version: int | None = None,
) -> pd.DataFrame:
    """The rows of a served batch: `features` (with id and timestamp when it has them) as
    requests of `rows_per_request` rows each, with the served `scores` (the positive class's
    probability, an (n, k) probability matrix, or predicted values) written as
    `core.training.attach_scores` writes them, and the shadow ones under `shadow_`.

    `latency_ms` is one value per request (or one for all); `model_version` one per row (or
    one for all).
    """
    from mlops_loop.core.training import attach_scores

    n = len(features)
    requests = int(np.ceil(n / rows_per_request)) if n else 0
    request_of = np.arange(n) // rows_per_request
    latencies = np.broadcast_to(np.asarray(latency_ms, dtype=float), (requests,))
    frame = pd.DataFrame(
        {
            "request_id": [f"req-{i:06d}" for i in request_of],
            "row": (np.arange(n) % rows_per_request).astype("int64"),
            "served_at": pd.to_datetime(
                start + request_of * seconds_per_request, unit="s", utc=True
            ),
        }
    )
    frame = pd.concat([frame, features.reset_index(drop=True)], axis=1)
    attach_scores(frame, np.asarray(scores, dtype=float), columns)
    frame["model_version"] = np.broadcast_to(np.asarray(model_version, dtype="int64"), (n,))
    frame["latency_ms"] = latencies[request_of] if n else np.empty(0)
    if shadow_scores is not None:
        shadow = pd.DataFrame(index=frame.index)
        attach_scores(shadow, np.asarray(shadow_scores, dtype=float), columns)
        for name in shadow.columns:
            frame[f"shadow_{name}"] = shadow[name]
        frame["shadow_version"] = np.int64(shadow_version if shadow_version is not None else 0)
    return frame


def serving_record(
    frame: pd.DataFrame,
    *,
    window_start: float,
    window_end: float,
    latency_ms: Sequence[float] | None = None,
    errors: dict[str, int] | None = None,
    down_seconds: float = 0.0,
    extra_columns: int = 0,
    worker: str = "testhost-1",
) -> dict[str, Any]:
    """The `mlops_loop.serving` record of a window: requests and rows counted from `frame`;
    `latency_ms` every request's latency, 200s and errors (default: the frame's, one per
    request)."""
    requests = int(frame["request_id"].nunique()) if len(frame) else 0
    if latency_ms is None:
        latency_ms = frame.drop_duplicates("request_id")["latency_ms"].tolist()
    return {
        "schema": SCHEMA,
        "worker": worker,
        "window_start": float(window_start),
        "window_end": float(window_end),
        "requests": requests,
        "errors": {**NO_ERRORS, **(errors or {})},
        "rows": len(frame),
        "latency_ms": [float(v) for v in latency_ms],
        "down_seconds": float(down_seconds),
        "extra_columns": int(extra_columns),
    }


def write_served(path: str | Path, frame: pd.DataFrame, record: dict[str, Any]) -> Path:
    """Write `frame` as parquet at `path` with `record` under the `mlops_loop.serving` key."""
    path = Path(path)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), SERVING_KEY: json.dumps(record).encode()}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(metadata), path)
    return path

"""Batches that came from the online endpoint: the landed file's format, its online figures, and
the columns serving adds to a batch.

The prediction log lands one parquet file per roll (docs/serving.md, "Prediction log and landed
batches"): one row per scored row, with the request's id, the row's number in it, when it was
served, the features, the prediction(s) actually served, the model version and the request's
latency; and, under the parquet key-value metadata key `mlops_loop.serving`, a JSON record of
the window the file covers (requests, errors, every request's latency, the seconds without a
heartbeat). This block reads that record and computes the figures the loop shows and alerts on;
the serving package writes it with the same names, so both sides share this one reader.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.core.errors import DataError

#: The parquet key-value metadata key of a served batch.
SERVING_KEY = b"mlops_loop.serving"
#: The version of the record under that key this reader understands.
SCHEMA = 1
#: Columns the endpoint adds to every served row (besides predictions and shadow columns).
SERVING_COLUMNS = ("request_id", "row", "served_at", "model_version", "latency_ms")
#: Prefix of the challenger's predictions, scored in shadow beside the champion's.
SHADOW_PREFIX = "shadow_"
#: The challenger's version, on rows it scored in shadow.
SHADOW_VERSION = "shadow_version"
#: Error statuses the record counts.
ERROR_STATUSES = ("400", "413", "422", "500")


@dataclass(frozen=True)
class ServedWindow:
    """The `mlops_loop.serving` record of a landed file: what the endpoint saw in its window."""

    schema: int
    worker: str
    window_start: float  # epoch seconds
    window_end: float
    requests: int  # answered 200
    errors: dict[str, int]  # by status
    rows: int
    latency_ms: list[float]  # one per request in the window, 200 and errors
    down_seconds: float  # time in the window without a heartbeat
    extra_columns: int = 0  # extra request columns ignored in the window

    @classmethod
    def from_json(cls, raw: bytes | str, source: str = "the record") -> ServedWindow:
        """Parse the record.

        Raises:
            DataError: it is not JSON, its schema is not `SCHEMA`, or a field is missing or of
                the wrong type (naming the field).
        """
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise DataError(
                f"{source}: the {SERVING_KEY.decode()} metadata is not JSON: {e}"
            ) from e
        if not isinstance(data, dict):
            raise DataError(f"{source}: the {SERVING_KEY.decode()} metadata is not a JSON object")
        if data.get("schema") != SCHEMA:
            raise DataError(
                f"{source}: {SERVING_KEY.decode()} schema {data.get('schema')!r} is not "
                f"supported; expected {SCHEMA}"
            )
        try:
            errors = {str(k): int(v) for k, v in (data.get("errors") or {}).items()}
            window = cls(
                schema=SCHEMA,
                worker=str(data.get("worker", "")),
                window_start=float(data["window_start"]),
                window_end=float(data["window_end"]),
                requests=int(data["requests"]),
                errors=errors,
                rows=int(data["rows"]),
                latency_ms=[float(v) for v in data.get("latency_ms") or []],
                down_seconds=float(data.get("down_seconds") or 0.0),
                extra_columns=int(data.get("extra_columns") or 0),
            )
        except KeyError as e:
            raise DataError(f"{source}: the {SERVING_KEY.decode()} metadata lacks {e}") from e
        except (TypeError, ValueError) as e:
            raise DataError(f"{source}: a {SERVING_KEY.decode()} field is malformed: {e}") from e
        if window.window_end < window.window_start:
            raise DataError(
                f"{source}: window_end {window.window_end} is before window_start "
                f"{window.window_start}"
            )
        return window

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def window_s(self) -> float:
        return self.window_end - self.window_start


@dataclass(frozen=True)
class ServingFigures:
    """A served batch's online figures over its window (`serving_*` metrics)."""

    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    error_rate: float | None  # errors / (requests + errors)
    requests_per_s: float | None  # answered requests over the window
    rows_per_s: float | None
    availability: float | None  # 1 - down_seconds / window
    model_version: int | None  # the one served, or the last when several were
    requests: int = 0
    errors: int = 0
    rows: int = 0
    window_s: float = 0.0
    down_seconds: float = 0.0
    extra_columns: int = 0
    model_versions: list[int] = field(default_factory=list)  # every version served, in order
    worker: str = ""

    def metrics(self) -> dict[str, float]:
        """The figures as the loop's metric names (`serving_latency_p99_ms`, ...): what MLflow,
        the Dagster metadata, the status and the alert rules use. Missing figures are left out."""
        values: dict[str, Any] = {
            "serving_latency_p50_ms": self.latency_p50_ms,
            "serving_latency_p95_ms": self.latency_p95_ms,
            "serving_latency_p99_ms": self.latency_p99_ms,
            "serving_error_rate": self.error_rate,
            "serving_requests_per_s": self.requests_per_s,
            "serving_rows_per_s": self.rows_per_s,
            "serving_availability": self.availability,
            "serving_model_version": self.model_version,
            "serving_requests": self.requests,
            "serving_errors": self.errors,
            "serving_rows": self.rows,
        }
        return {k: float(v) for k, v in values.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServingFigures:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def read_window(path: str | Path) -> ServedWindow | None:
    """The serving record of a parquet file; None when the file did not come from serving
    (not parquet, or without the `mlops_loop.serving` key).

    Raises:
        DataError: the key is there but its record cannot be read (`ServedWindow.from_json`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.suffix.lower() not in (".parquet", ".pq"):
        return None
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError, pa.ArrowException):
        return None  # not readable as parquet: ingest says why
    raw = metadata.get(SERVING_KEY)
    return None if raw is None else ServedWindow.from_json(raw, str(path))


def is_served(path: str | Path) -> bool:
    """Whether a landed file came from serving (it carries the `mlops_loop.serving` record).

    Raises:
        DataError: the record is there but malformed.
    """
    return read_window(path) is not None


def serving_figures(window: ServedWindow, model_versions: Iterable[int] = ()) -> ServingFigures:
    """The online figures of a window.

    Latency percentiles are over every request's latency in the record (errors included: a
    caller waited for those too); the rates are over the window's length (None for an empty
    window). `model_versions` are the versions of the served rows in serving order.
    """
    latencies = np.asarray(window.latency_ms, dtype=float)
    p50 = p95 = p99 = None
    if latencies.size:
        p50, p95, p99 = (float(v) for v in np.percentile(latencies, [50, 95, 99]))
    total = window.requests + window.error_count
    span = window.window_s
    versions = list(dict.fromkeys(int(v) for v in model_versions))
    ordered = [int(v) for v in model_versions]
    return ServingFigures(
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        latency_p99_ms=p99,
        error_rate=window.error_count / total if total else None,
        requests_per_s=window.requests / span if span > 0 else None,
        rows_per_s=window.rows / span if span > 0 else None,
        availability=max(0.0, 1.0 - window.down_seconds / span) if span > 0 else None,
        model_version=ordered[-1] if ordered else None,
        requests=window.requests,
        errors=window.error_count,
        rows=window.rows,
        window_s=span,
        down_seconds=window.down_seconds,
        extra_columns=window.extra_columns,
        model_versions=versions,
        worker=window.worker,
    )


def served_versions(path: str | Path) -> list[int]:
    """The `model_version` of a served file's rows, in serving order (by `served_at`; rows
    served at the same time keep the file's order, the log's), read from those columns alone."""
    import pandas as pd

    from mlops_loop.core.parquet import parquet_columns

    present = set(parquet_columns(path))
    if "model_version" not in present:
        return []
    order = [c for c in ("served_at",) if c in present]
    frame = pd.read_parquet(path, columns=["model_version", *order])
    if order:
        frame = frame.sort_values(order, kind="stable")
    return [int(v) for v in frame["model_version"].dropna()]


def file_figures(path: str | Path) -> ServingFigures | None:
    """The online figures of a landed file; None when it did not come from serving.

    Raises:
        DataError: its serving record is malformed.
    """
    window = read_window(path)
    if window is None:
        return None
    return serving_figures(window, served_versions(path))


def prediction_columns(columns: ColumnsConfig) -> list[str]:
    """The columns a served row's prediction takes: the prediction column, and a multiclass
    model's per-class probabilities (as `training.attach_scores` writes them)."""
    from mlops_loop.core.tasks import probability_columns

    names = [columns.prediction]
    if columns.task == "multiclass" and columns.classes:
        names += probability_columns(columns.prediction, columns.classes)
    return names


def shadow_columns(columns: ColumnsConfig) -> list[str]:
    """The challenger's predictions beside them (`shadow_<prediction>`, ...)."""
    return [SHADOW_PREFIX + c for c in prediction_columns(columns)]


def reserved_columns(columns: ColumnsConfig, names: Iterable[str]) -> list[str]:
    """Which of `names` (a served batch's columns) serving adds: its bookkeeping columns
    (`SERVING_COLUMNS`), the predictions, and anything under `shadow_`.

    This is the one place the set is defined: the quality gate leaves these out of a served
    batch's check (they are not unexpected columns), and drift never tests them (it tests the
    configured features only). A configured column (a feature, the target, id, timestamp,
    segment or label time) that happens to share a name is never reserved.
    """
    configured = {
        *columns.features,
        columns.target,
        *filter(None, [columns.id, columns.timestamp, columns.label_time]),
        *columns.segments,
    }
    reserved = {*SERVING_COLUMNS, *prediction_columns(columns)}
    return [
        n
        for n in names
        if n not in configured and (n in reserved or str(n).startswith(SHADOW_PREFIX))
    ]

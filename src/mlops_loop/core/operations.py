"""Operational figures of a step: wall and CPU time, peak memory, scoring latency, throughput.

`timed_scoring` scores a frame in memory; `score_parquet` does the same to a parquet batch a
slice at a time, appending each scored slice to the output file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.parquet import CHUNK_ROWS, _Writer, iter_parquet, parquet_rows


@dataclass
class Usage:
    """Filled in when the `measure_usage` block ends."""

    started_at: str = ""
    ended_at: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    cpu_percent: float = 0.0  # of one core; 200 means two cores busy all along
    peak_rss_mb: float = 0.0  # largest resident set seen while the block ran
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def measure_usage(interval_s: float = 0.02) -> Iterator[Usage]:
    """Time a block and sample its process's resident memory from a thread.

    The peak is the largest sample (every `interval_s`) and the RSS at both ends, so it belongs
    to this block, not to the whole life of the process as `ru_maxrss` would.
    """
    import psutil

    proc = psutil.Process()
    usage = Usage(started_at=datetime.now(UTC).isoformat())
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample, name="mlops-loop-rss", daemon=True)
    cpu0, t0 = proc.cpu_times(), time.perf_counter()
    sampler.start()
    try:
        yield usage
    finally:
        stop.set()
        sampler.join()
        cpu1, t1 = proc.cpu_times(), time.perf_counter()
        peak[0] = max(peak[0], proc.memory_info().rss)
        usage.ended_at = datetime.now(UTC).isoformat()
        usage.wall_s = t1 - t0
        usage.cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        usage.cpu_percent = 100.0 * usage.cpu_s / usage.wall_s if usage.wall_s > 0 else 0.0
        usage.peak_rss_mb = peak[0] / 2**20


def _percentiles(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {}
    p50, p95, p99 = np.percentile(values_ms, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}


def _timed_call(
    score: Callable[[pd.DataFrame], np.ndarray],
    part: pd.DataFrame,
    call_ms: list[float],
    per_row_ms: list[float] | None = None,
) -> np.ndarray:
    """`score(part)` as floats; its time (ms) appended to `call_ms`, per row to `per_row_ms`."""
    t0 = time.perf_counter()
    scores = np.asarray(score(part), dtype=float)
    ms = (time.perf_counter() - t0) * 1e3
    call_ms.append(ms)
    if per_row_ms is not None:
        per_row_ms.append(ms / len(part))
    return scores


def timed_scoring(
    score: Callable[[pd.DataFrame], np.ndarray],
    frame: pd.DataFrame,
    chunk_rows: int = 10_000,
    single_rows: int = 50,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Score `frame` in chunks and time it: (scores, figures).

    Figures: the batch's scoring time and throughput; the latency of each chunk (ms) and per
    row within chunks (chunk time / chunk rows); and the latency of scoring one row alone, as
    an online caller sees it, on up to `single_rows` rows spread over the batch.
    """
    n = len(frame)
    chunks: list[np.ndarray] = []
    chunk_ms: list[float] = []
    per_row_ms: list[float] = []
    start = time.perf_counter()
    for lo in range(0, n, chunk_rows):
        chunks.append(_timed_call(score, frame.iloc[lo : lo + chunk_rows], chunk_ms, per_row_ms))
    batch_s = time.perf_counter() - start
    scores = np.concatenate(chunks) if chunks else np.empty(0)
    single_ms: list[float] = []
    if n and single_rows:
        for i in np.linspace(0, n - 1, min(single_rows, n)).astype(int):
            _timed_call(score, frame.iloc[[i]], single_ms)
    figures: dict[str, Any] = {
        "rows": n,
        "scoring_s": batch_s,
        "throughput_rows_per_s": n / batch_s if batch_s > 0 else None,
        "chunk_rows": chunk_rows,
        "chunk_latency_ms": _percentiles(chunk_ms),
        "row_latency_in_batch_ms": _percentiles(per_row_ms),
        "single_row_latency_ms": _percentiles(single_ms),
    }
    return scores, figures


def flat_metrics(figures: dict[str, Any], usage: Usage) -> dict[str, float]:
    """The figures as flat MLflow metric names (`chunk_latency_ms_p95`, ...)."""
    out: dict[str, float] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out.update({f"{key}_{p}": float(v) for p, v in value.items()})
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
    out.update(
        {
            "step_wall_s": usage.wall_s,
            "step_cpu_s": usage.cpu_s,
            "step_cpu_percent": usage.cpu_percent,
            "step_peak_rss_mb": usage.peak_rss_mb,
        }
    )
    return out


def score_parquet(
    score: Callable[[pd.DataFrame], np.ndarray],
    path: str | Path,
    out: str | Path,
    prediction: str,
    chunk_rows: int = CHUNK_ROWS,
    call_rows: int = 10_000,
    single_rows: int = 50,
    assign: Callable[[pd.DataFrame, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Score a parquet batch a slice at a time, appending each scored slice to `out`.

    The scores go to column `prediction`, or where `assign(frame, scores)` puts them (a
    multiclass model's probability columns).

    `score` is called on `call_rows` rows at a time and timed, as `timed_scoring` does for a
    frame; the figures have the same keys, plus the seconds spent reading and writing.

    Raises:
        DataError: the batch cannot be read, or a scored slice does not fit the first one's types.
    """
    path, out = Path(path), Path(out)
    n = parquet_rows(path)
    singles: Any = (
        np.linspace(0, n - 1, min(single_rows, n)).astype(int) if n and single_rows else []
    )
    chunk_ms: list[float] = []
    per_row_ms: list[float] = []
    single_ms: list[float] = []
    scoring_s, lo = 0.0, 0
    started = time.perf_counter()
    writer = _Writer(out)
    try:
        for frame in iter_parquet(path, chunk_rows):
            parts = []
            for start in range(0, len(frame), call_rows):
                part = frame.iloc[start : start + call_rows]
                parts.append(_timed_call(score, part, chunk_ms, per_row_ms))
                scoring_s += chunk_ms[-1] / 1e3
            for i in (i for i in singles if lo <= i < lo + len(frame)):
                _timed_call(score, frame.iloc[[i - lo]], single_ms)
            scores = np.concatenate(parts) if parts else np.empty(0)
            if assign is None:
                frame[prediction] = scores
            else:
                assign(frame, scores)
            writer.write(frame)
            lo += len(frame)
            del frame, parts
        if n == 0:
            empty = pd.read_parquet(path)
            empty[prediction] = np.empty(0)
            writer.write(empty)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return {
        "rows": n,
        "scoring_s": scoring_s,
        "throughput_rows_per_s": n / scoring_s if scoring_s > 0 else None,
        "chunk_rows": call_rows,
        "chunk_latency_ms": _percentiles(chunk_ms),
        "row_latency_in_batch_ms": _percentiles(per_row_ms),
        "single_row_latency_ms": _percentiles(single_ms),
        "read_write_s": time.perf_counter() - started - scoring_s - sum(single_ms) / 1e3,
    }

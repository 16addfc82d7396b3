"""Drift within segments (e.g. region): each value's share of the batch against its share of
the reference, and its rows tested against the reference's rows of the same value.

`segment_drift` judges a frame in memory; `segment_drift_parquet` a parquet batch a slice at a
time. Both build their rows with `segment_rows`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.errors import DataError
from mlops_loop.core.parquet import CHUNK_ROWS, _Writer, iter_parquet, parquet_columns, parquet_rows

#: Fewest rows of a segment, in the batch and in the reference, for its own drift report.
SEGMENT_MIN_ROWS = 200


def segment_rows(
    seg: str,
    ref_counts: Mapping[Any, int],
    cur_counts: Mapping[Any, int],
    n_reference: int,
    n_batch: int,
    judge: Callable[[str], Any],
) -> list[dict[str, Any]]:
    """One row per value of segment column `seg`: its share of the batch against its share of
    the reference, and `judge(value)` (a drift report of that segment's rows) when both sides
    have `SEGMENT_MIN_ROWS` rows. Shared by the in-memory and the chunked path."""
    rows: list[dict[str, Any]] = []
    for value in sorted(set(ref_counts) | set(cur_counts)):
        n_ref, n_cur = int(ref_counts.get(value, 0)), int(cur_counts.get(value, 0))
        row: dict[str, Any] = {
            "segment": seg,
            "value": value,
            "rows": n_cur,
            "share": round(n_cur / max(n_batch, 1), 6),
            "reference_share": round(n_ref / max(n_reference, 1), 6),
            "drift_share": None,
            "dataset_drift": None,
            "drifted_features": [],
            "note": None,
        }
        if min(n_ref, n_cur) < SEGMENT_MIN_ROWS:
            row["note"] = f"fewer than {SEGMENT_MIN_ROWS} rows on a side: not tested"
        else:
            try:
                report = judge(value)
            except DataError as e:
                row["note"] = str(e)
            else:
                row["drift_share"] = report.drift_share
                row["dataset_drift"] = report.dataset_drift
                row["drifted_features"] = [f for f in report.drifted_features if f != seg]
        rows.append(row)
    return rows


def segment_drift(
    config: LoopConfig, reference: pd.DataFrame, batch: pd.DataFrame
) -> list[dict[str, Any]]:
    """Drift within each value of each segment column (e.g. region): its share of the batch
    against its share of the reference, and the segment's rows tested against the reference's
    rows of the same segment, so a surge or a shift in one region stands out."""
    from mlops_loop.core.drift import evaluate_drift

    rows: list[dict[str, Any]] = []
    for seg in config.columns.segments:
        if seg not in batch.columns or seg not in reference.columns:
            continue
        ref_values, cur_values = reference[seg].astype(str), batch[seg].astype(str)

        def judge(value: str, ref: pd.Series = ref_values, cur: pd.Series = cur_values) -> Any:
            return evaluate_drift(reference[ref == value], batch[cur == value], config=config)

        rows += segment_rows(
            seg,
            ref_values.value_counts().to_dict(),
            cur_values.value_counts().to_dict(),
            len(reference),
            len(batch),
            judge,
        )
    return rows


def segment_drift_parquet(
    config: LoopConfig, reference: pd.DataFrame, path: str | Path, chunk_rows: int = CHUNK_ROWS
) -> list[dict[str, Any]]:
    """`segments.segment_drift(config, reference, pandas.read_parquet(path))`, a slice at a time.

    Each segment column splits the batch, slice by slice, into one temporary parquet file per
    value, and each file is drift-tested column by column against the reference's rows of that
    value.
    """
    from mlops_loop.core.drift import evaluate_drift_parquet

    path = Path(path)
    n_rows, columns = parquet_rows(path), set(parquet_columns(path))
    rows: list[dict[str, Any]] = []
    for seg in config.columns.segments:
        if seg not in columns or seg not in reference.columns:
            continue
        ref_values = reference[seg].astype(str)
        ref_counts = ref_values.value_counts()
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".segments-") as tmp:
            writers: dict[str, _Writer] = {}
            cur_counts: dict[str, int] = {}
            try:
                for chunk in iter_parquet(path, chunk_rows):
                    values = chunk[seg].astype(str)
                    for value, part in chunk.groupby(values, sort=False):
                        value = str(value)
                        cur_counts[value] = cur_counts.get(value, 0) + len(part)
                        if value not in writers:
                            writers[value] = _Writer(Path(tmp) / f"{len(writers)}.parquet")
                        writers[value].write(part)
            finally:
                for w in writers.values():
                    w.close()

            def judge(value: str, ref: pd.Series = ref_values, files: dict = writers) -> Any:
                return evaluate_drift_parquet(
                    reference[ref == value], files[value].path, config=config
                )

            rows += segment_rows(
                seg, ref_counts.to_dict(), cur_counts, len(reference), n_rows, judge
            )
    return rows

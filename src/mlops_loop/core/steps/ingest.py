"""A landed batch file copied into the store: the `monitored_batch` asset's first half."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.data import frame_digest, read_table
from mlops_loop.core.errors import DataError, TruncatedFileError
from mlops_loop.core.served import ServingFigures, file_figures
from mlops_loop.core.steps.result import StepResult
from mlops_loop.core.store import LoopStore, file_sha256, file_stamp, landed_batches

#: Verdicts of a batch that no longer hold once a new copy of it lands.
VERDICTS = ("quality", "drift", "performance", "decision")
#: A served batch's online figures (`<batch>/served.json`, `served.ServingFigures`): read from
#: the landed file's serving record at ingest, since the stored copy may be rewritten without it.
SERVED = "served"


def served_figures(store: LoopStore, key: str) -> ServingFigures | None:
    """The online figures of a stored batch; None when it did not come from serving."""
    data = store.batch_json(key, SERVED)
    return None if data is None else ServingFigures.from_dict(data)


@dataclass(frozen=True)
class Ingested(StepResult):
    """A batch as stored (`<batch>/ingest.json`)."""

    rows: int
    columns: int
    digest: str
    source: str = ""
    stamp: str = ""  # size and mtime of the landed file: a re-delivery changes it
    sha256: str = ""
    #: Why the landed file was not stored: it was cut short (`data.check_complete`). The batch
    #: is then kept empty and the quality gate quarantines it with this reason.
    truncated: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record; `truncated` only when the file was cut short (the layout of a whole
        batch is unchanged)."""
        data = super().to_dict()
        if data["truncated"] is None:
            del data["truncated"]
        return data


def _store_landed(config: LoopConfig, store: LoopStore, key: str, path: Path) -> Ingested:
    """Put a landed file into the store as parquet.

    Parquet is copied, not read, so a batch of tens of millions of rows never has to fit in
    memory; CSV is read and written. A batch without its label column gets an empty one.
    """
    dest, target = store.batch_dir(key) / "batch.parquet", config.columns.target
    if path.suffix.lower() in (".parquet", ".pq"):
        from mlops_loop.core.parquet import store_parquet

        return Ingested.from_dict(
            store_parquet(path, dest, target, config.operations.read_chunk_rows)
        )
    frame = read_table(path)
    if target not in frame.columns:
        # Labels often land later and apart (sources.labels): the batch is simply unlabelled.
        frame[target] = np.nan
    store.write_frame(dest, frame)
    return Ingested(rows=len(frame), columns=len(frame.columns), digest=frame_digest(frame))


def serving_columns(config: LoopConfig, store: LoopStore, key: str) -> list[str]:
    """The columns serving added to a stored batch (`served.reserved_columns`), and its private
    columns, which serving hashed; none for a batch that did not come from serving. The
    quality gate, and a suite learnt again from batches, leave them out."""
    from mlops_loop.core.parquet import parquet_columns
    from mlops_loop.core.served import reserved_columns

    path = store.batch_dir(key) / "batch.parquet"
    if served_figures(store, key) is None or not path.exists():
        return []
    names = parquet_columns(path)
    # Serving hashes private columns before they are logged: their digests cannot be checked
    # against the reference's raw values (a numeric id is text once hashed).
    masked = [c for c in config.columns.private if c in names]
    return [*reserved_columns(config.columns, names), *masked]


def ingest_batch(config: LoopConfig, key: str, path: str | Path) -> Ingested:
    """Copy a landed batch file into the store as parquet.

    A served file (one the prediction log landed) has its online figures kept beside it
    (`served.json`, `served_figures`).

    A file cut short (a CSV ending mid-row, a parquet file without its footer) is a verdict on
    the batch, not a fault of the loop: it is stored as an empty batch whose `truncated` gives
    the reason, and `check_quality` quarantines it.

    Raises:
        DataError: the file cannot be read for another reason.
    """
    store = LoopStore(config.state_dir)
    path = Path(path)
    stamp, sha256 = file_stamp(path), file_sha256(path)
    try:
        stored = _store_landed(config, store, key, path)
        served = file_figures(path)
    except TruncatedFileError as e:
        _forget_verdicts(store, key)
        empty = pd.DataFrame()
        store.write_frame(store.batch_dir(key) / "batch.parquet", empty)
        cut = Ingested(
            rows=0,
            columns=0,
            digest=frame_digest(empty),
            source=str(path),
            stamp=stamp,
            sha256=sha256,
            truncated=str(e),
        )
        store.write_batch_json(key, "ingest", cut.to_dict())
        return cut
    except DataError as e:
        # Verdicts of an earlier copy no longer hold, and the failed delivery is remembered,
        # so that the landing sensor monitors the batch again once a fixed file replaces it.
        _forget_verdicts(store, key)
        failed = {"source": str(path), "stamp": stamp, "sha256": sha256, "error": str(e)}
        store.write_batch_json(key, "ingest", failed)
        raise
    # A re-materialized batch starts fresh: verdicts of the earlier copy no longer hold.
    _forget_verdicts(store, key)
    if served is not None:
        store.write_batch_json(key, SERVED, served.to_dict())
    info = Ingested(
        rows=stored.rows,
        columns=stored.columns,
        digest=stored.digest,
        source=str(path),
        stamp=stamp,
        sha256=sha256,
    )
    store.write_batch_json(key, "ingest", info.to_dict())
    return info


def ingest_landed(config: LoopConfig, key: str) -> Ingested:
    """Ingest batch `key` from the file that landed for it (`ingest_batch`).

    Raises:
        DataError: no landed file has that key, or the file cannot be read.
    """
    files, _ = landed_batches(config.sources.landing, config.sources.patterns)
    if key not in files:
        raise DataError(f"batch {key!r} is not in the landing folder {config.sources.landing}")
    return ingest_batch(config, key, files[key])


def unmonitored_batches(config: LoopConfig) -> tuple[list[str], list[str]]:
    """(keys of the landed batches not monitored yet, problems with the landing folder)."""
    files, problems = landed_batches(config.sources.landing, config.sources.patterns)
    return LoopStore(config.state_dir).unmonitored(files), problems


def _forget_verdicts(store: LoopStore, key: str) -> None:
    for stale in (*VERDICTS, SERVED):
        (store.batch_dir(key) / f"{stale}.json").unlink(missing_ok=True)


def big_batch(config: LoopConfig, store: LoopStore, key: str) -> Path | None:
    """The stored batch's file when it has more rows than `operations.in_memory_max_rows`:
    such a batch is checked and scored from the file a slice at a time, never read whole."""
    from mlops_loop.core.parquet import parquet_rows

    path = store.batch_dir(key) / "batch.parquet"
    if path.exists() and parquet_rows(path) > config.operations.in_memory_max_rows:
        return path
    return None

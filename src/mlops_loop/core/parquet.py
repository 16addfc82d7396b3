"""Parquet batches a slice at a time: rows, columns, digest, reading, appending and storing.

A batch of tens of millions of rows need not be in memory as a whole: these read a parquet file
`chunk_rows` rows at a time (pyarrow slices row groups) or from its footer, so the memory a step
needs grows with the slice, not with the batch. `store_parquet` copies a landed parquet file
into the store without reading it. The chunked validation, scoring and segment drift build on
this block (`quality.chunked`, `operations.score_parquet`, `segments.segment_drift_parquet`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_loop.core.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

#: Rows read at a time when no size is given.
CHUNK_ROWS = 500_000


def _open(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops_loop.core.data import check_complete

    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        if path.is_file():
            check_complete(path)  # a file cut short says so
        raise DataError(f"{path}: cannot be read as parquet: {e}") from e


def parquet_rows(path: str | Path) -> int:
    """The number of rows of a parquet file, from its footer.

    Raises:
        DataError: the file is missing or not parquet.
    """
    with _open(Path(path)) as parquet:
        return int(parquet.metadata.num_rows)


def parquet_columns(path: str | Path) -> list[str]:
    """The column names pandas gives a parquet file (index columns are not columns)."""
    with _open(Path(path)) as parquet:
        return [str(c) for c in parquet.schema_arrow.empty_table().to_pandas().columns]


def iter_parquet(
    path: str | Path, chunk_rows: int = CHUNK_ROWS, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """The file's rows `chunk_rows` at a time, each slice as `pandas.read_parquet` types it.

    Raises:
        DataError: the file is missing, not parquet, or a slice cannot be read.
    """
    import pyarrow as pa

    path = Path(path)
    with _open(path) as parquet:
        try:
            for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns):
                # A table keeps the schema's pandas metadata: dtypes and index as read_parquet.
                yield pa.Table.from_batches([batch]).to_pandas()
        except (OSError, ValueError, pa.ArrowException) as e:
            raise DataError(f"{path}: cannot be read as parquet: {e}") from e


def parquet_digest(path: str | Path, chunk_rows: int = CHUNK_ROWS) -> str:
    """`frame_digest(pandas.read_parquet(path))`, computed a slice at a time.

    Row hashes depend on each row alone, so hashing slice after slice gives the same bytes.
    """
    import hashlib

    from mlops_loop.core.data import frame_digest

    h = hashlib.sha256()
    started = False
    for chunk in iter_parquet(path, chunk_rows):
        if not started:
            h.update(",".join(map(str, chunk.columns)).encode())
            h.update(",".join(str(t) for t in chunk.dtypes).encode())
            started = True
        if len(chunk):
            rows = pd.util.hash_pandas_object(chunk, index=False).to_numpy()
            h.update(np.ascontiguousarray(rows).tobytes())
    if not started:  # no rows at all: the empty frame's digest
        with _open(Path(path)) as parquet:
            return frame_digest(parquet.schema_arrow.empty_table().to_pandas())
    return h.hexdigest()[:16]


class _Writer:
    """Appends frames to a parquet file written under a temporary name, renamed on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self._writer: Any = None
        self._schema: pa.Schema | None = None

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.Table.from_pandas(frame, preserve_index=False, schema=self._schema)
        except (pa.ArrowException, ValueError, TypeError) as e:
            raise DataError(
                f"a slice of {self.path.name} does not fit the types of the first slice "
                f"{self._schema}: {e}"
            ) from e
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self.tmp, table.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.tmp.unlink(missing_ok=True)


def store_parquet(
    source: str | Path, dest: str | Path, target: str, chunk_rows: int = CHUNK_ROWS
) -> dict[str, Any]:
    """Put a landed parquet batch into the store: `{"rows", "columns", "digest"}`.

    The file is copied as it is. A batch without its target column (labels land later) gets
    an all-missing float one, written a slice at a time, as the in-memory ingest adds it.

    Raises:
        DataError: the file is missing or not parquet.
    """
    source, dest = Path(source), Path(dest)
    columns = parquet_columns(source)
    rows = parquet_rows(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if target in columns:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    else:
        writer = _Writer(dest)
        try:
            for chunk in iter_parquet(source, chunk_rows):
                chunk[target] = np.nan
                writer.write(chunk)
            if rows == 0:  # no slice to write: the empty frame keeps the column types
                writer.write(pd.read_parquet(source).assign(**{target: np.nan}))
        except BaseException:
            writer.abort()
            raise
        writer.close()
        columns = [*columns, target]
    return {"rows": rows, "columns": len(columns), "digest": parquet_digest(dest, chunk_rows)}

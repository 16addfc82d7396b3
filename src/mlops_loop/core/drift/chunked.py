"""Drift of a parquet batch larger than memory, read one column at a time.

Parquet stores each column apart, so a batch never needs to be in memory as a whole: the
numerical tests need one column's values (10M float64 are 80 MB), which pyarrow reads row group
by row group, in slices of `CHUNK_ROWS`, straight into one float64 array; a categorical column is
read alone and counted. Other columns are read the way `pandas.read_parquet` reads them, so the
report is exactly the one of `evaluate_drift(reference, pd.read_parquet(path))`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_loop.core.drift.evaluate import evaluate_drift
from mlops_loop.core.drift.measures import sorted_finite
from mlops_loop.core.drift.sides import (
    ColumnarBatch,
    SourceError,
    category_counts,
    numeric_summary,
    require_values,
    series_kind,
    series_sorted_finite,
)
from mlops_loop.core.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

    from mlops_loop.core.config import DriftPolicy, LoopConfig
    from mlops_loop.core.drift.profile import ReferenceProfile
    from mlops_loop.core.drift.report import DriftReport

#: Rows per slice when a numerical column is read into its array.
CHUNK_ROWS = 1 << 20


def _plain_number(t: pa.DataType) -> bool:
    """Arrow types whose float64 cast equals pandas' conversion of the column to float64."""
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_boolean(t) or t in (pa.float32(), pa.float64())


class ParquetBatch(ColumnarBatch):
    """A parquet file as the current side of `evaluate_drift`, read a column at a time.

    Args:
        path: The parquet file.

    Raises:
        DataError: the file is missing or is not a readable parquet file.
    """

    def __init__(self, path: str | Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = Path(path)
        from mlops_loop.core.data import check_complete

        try:
            parquet = pq.ParquetFile(self.path)
        except (OSError, ValueError, pa.ArrowException) as e:
            if self.path.is_file():
                check_complete(self.path)  # a file cut short says so
            raise DataError(f"cannot read the parquet batch {self.path}: {e}") from e
        try:
            schema = parquet.schema_arrow
            self._n_rows = int(parquet.metadata.num_rows)
            # The column labels pandas gives the file (index columns are not columns).
            self._columns = schema.empty_table().to_pandas().columns
            self._types = {f.name: f.type for f in schema}
        except (OSError, ValueError, pa.ArrowException) as e:
            raise DataError(f"cannot read the schema of the parquet batch {self.path}: {e}") from e
        finally:
            parquet.close()

    def __repr__(self) -> str:
        return f"ParquetBatch({str(self.path)!r}, rows={self._n_rows})"

    @property
    def columns(self) -> pd.Index:
        return self._columns

    def __len__(self) -> int:
        return self._n_rows

    def _failed(self, key: Any, e: Exception) -> SourceError:
        return SourceError(f"cannot read column {key!r} of the parquet batch {self.path}: {e}")

    def series(self, key: Any) -> pd.Series:
        """One column, exactly as `pandas.read_parquet(path)[key]` holds it."""
        try:
            return pd.read_parquet(self.path, columns=[key], engine="pyarrow")[key]
        except Exception as e:  # pyarrow raises many unrelated types
            raise self._failed(key, e) from e

    def sample_rows(self, columns: list[Any], n: int, seed: int) -> pd.DataFrame:
        """The multivariate check's rows: the ones it would draw from the frame, read one
        column at a time."""
        from mlops_loop.core.drift.multivariate import sample_positions

        positions = sample_positions(self._n_rows, n, seed)
        picked = {k: self.series(k).iloc[positions].to_numpy() for k in columns}
        frame = pd.DataFrame(picked, index=pd.RangeIndex(len(positions)))
        frame.columns = pd.Index(list(picked), dtype=object)
        return frame

    def float_values(self, key: Any) -> np.ndarray:
        """A plain-number column as float64 (nulls as NaN), read row group by row group."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        out = np.empty(self._n_rows, dtype="float64")
        filled = 0
        try:
            # A file handle per call: the columns are read from several threads.
            with pq.ParquetFile(self.path) as parquet:
                for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=[key]):
                    # safe=False: integers beyond 2**53 round to nearest, as numpy's cast does.
                    chunk = pc.cast(batch.column(0), pa.float64(), safe=False)
                    out[filled : filled + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
                    filled += len(chunk)
        except Exception as e:
            raise self._failed(key, e) from e
        if filled != self._n_rows:
            raise self._failed(key, ValueError(f"{filled} rows read, {self._n_rows} expected"))
        return out

    # -- the Table protocol read by evaluate_drift --------------------------------------------
    def inferred_kind(self, key: Any) -> str:
        if int((self._columns == key).sum()) > 1:
            return "categorical"  # as a frame's duplicated label selects a frame
        return series_kind(self.series(key))

    def sorted_values(self, key: Any, side: str, kind: str = "numerical") -> np.ndarray:
        if kind == "numerical" and key in self._types and _plain_number(self._types[key]):
            return require_values(sorted_finite(self.float_values(key)), side)
        return series_sorted_finite(self.series(key), side, kind)

    def summary(self, key: Any, values: np.ndarray) -> dict:
        return numeric_summary(values)

    def category_counts(self, key: Any, side: str) -> pd.Series:
        return category_counts(self.series(key), side)


def evaluate_drift_parquet(
    reference: pd.DataFrame | ReferenceProfile,
    path: str | Path,
    config: LoopConfig | None = None,
    policy: DriftPolicy | None = None,
) -> DriftReport:
    """`evaluate_drift` of a parquet batch that need not fit in memory.

    Columns are read one at a time (a few in parallel), so the memory needed is a few columns'
    worth, not the batch's. The report equals `evaluate_drift(reference, pd.read_parquet(path),
    config, policy)`.

    Args:
        reference: The reference frame or, better for large batches, its `ReferenceProfile`.
        path: The parquet batch.
        config: As for `evaluate_drift`.
        policy: As for `evaluate_drift`.

    Raises:
        DataError: the file is missing or unreadable (the message names it), or as for
            `evaluate_drift`.
    """
    return evaluate_drift(reference, ParquetBatch(path), config=config, policy=policy)

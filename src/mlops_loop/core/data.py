"""Reading tables and fingerprinting them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_loop.core.errors import DataError

SUFFIXES = (".parquet", ".pq", ".csv")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a parquet or CSV file into a DataFrame.

    Raises:
        DataError: the file is missing, has an unknown suffix, or cannot be parsed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix!r}; expected one of {SUFFIXES}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow and the CSV parser raise many unrelated types
        raise DataError(f"{path}: cannot be read as {suffix[1:]}: {e}") from e


def frame_digest(frame: pd.DataFrame) -> str:
    """A content digest of a frame: the same rows and columns give the same 16 hex digits."""
    h = hashlib.sha256()
    h.update(",".join(map(str, frame.columns)).encode())
    h.update(",".join(str(t) for t in frame.dtypes).encode())
    if len(frame):
        row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        h.update(np.ascontiguousarray(row_hashes).tobytes())
    return h.hexdigest()[:16]


def require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    """Raise `DataError` naming the columns of `columns` that `frame` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what} lacks column(s) {missing}; it has {list(frame.columns)}")

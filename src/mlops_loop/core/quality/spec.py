"""The suite spec: its schema version, incident kinds and entries, and the frame and dtype-family
helpers that building a suite and checking a batch share.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from mlops_loop.core.errors import DataError

SCHEMA_VERSION = "1"
KINDS = (
    "missing_column",
    "unexpected_column",
    "type_mismatch",
    "null_rate",
    "out_of_range",
    "unseen_category",
    "duplicate_rows",
    "row_count",
    "custom",
    "truncated_file",
)
TYPE_CHECK = "DtypeFamily"
_FAMILIES = {
    "integer": "numeric",
    "floating": "numeric",
    "mixed-integer-float": "numeric",
    "decimal": "numeric",
    "complex": "numeric",
    "integer-na": "numeric",
    "string": "string",
    "bytes": "string",
    "boolean": "boolean",
    "datetime64": "datetime",
    "datetime": "datetime",
    "date": "datetime",
    "timedelta64": "timedelta",
    "timedelta": "timedelta",
}
_ENTRY_KEYS = ("kind", "column", "severity", "type", "kwargs")


def _jsonable(value: Any) -> Any:
    """Plain JSON types for numpy/pandas scalars; NaN and NaT become None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)  # .item() would give nanoseconds as an int
    elif hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()  # numpy scalar
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _frame(data: Any, what: str) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"{what} must be a pandas DataFrame, got {type(data).__name__}")
    if not all(isinstance(c, str) for c in data.columns):
        data = data.rename(columns=str)  # GX and the JSON suite both key columns by name
    duplicated = sorted(set(data.columns[data.columns.duplicated()]))
    if duplicated:
        raise DataError(f"{what} has duplicated column name(s) {duplicated}")
    return data


def _family(series: pd.Series) -> str | None:
    """The dtype family of a column's non-null values; None when it has none to judge."""
    if not series.notna().any():
        return None
    values = series.cat.categories if isinstance(series.dtype, pd.CategoricalDtype) else series
    # infer_dtype looks at values, not the dtype name, so `str`, `string`, object and Arrow
    # strings all read as "string" and Python ints in an object column as numeric.
    return _FAMILIES.get(infer_dtype(values, skipna=True), "mixed")


def _entries(suite: Any) -> list[dict]:
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise DataError(
            "suite must be a mapping with an 'expectations' list, as build_suite "
            f"returns; got {type(suite).__name__}"
        )
    if suite.get("schema_version") != SCHEMA_VERSION:
        raise DataError(
            f"suite schema_version {suite.get('schema_version')!r} is not supported; "
            f"expected {SCHEMA_VERSION!r}"
        )
    for n, e in enumerate(suite["expectations"]):
        missing = [k for k in _ENTRY_KEYS if not isinstance(e, dict) or k not in e]
        if missing or e["severity"] not in ("error", "warn") or not isinstance(e["kwargs"], dict):
            raise DataError(
                f"suite entry {n} is malformed (missing {missing}, or severity not "
                f"'error'/'warn', or kwargs not a mapping): {e!r}"
            )
    return suite["expectations"]

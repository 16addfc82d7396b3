"""The suite spec: its schema version, incident kinds and entries, and the frame and dtype-family
helpers that building a suite and checking a batch share.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from mlops_loop.core.errors import DataError

#: "2" adds `learnt` to entries (bounds resolved per batch size); "1" suites still validate.
SCHEMA_VERSION = "2"
SUPPORTED_VERSIONS = ("1", "2")
KINDS = (
    "missing_column",
    "renamed_column",
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
    # GX and the JSON suite both key columns by name: a tuple, a number or a list is no name.
    if isinstance(data.columns, pd.MultiIndex):
        raise DataError(
            f"{what} has MultiIndex column labels (levels {list(data.columns.names)}, e.g. "
            f"{list(data.columns[:3])!r}); expected flat, unique string column names "
            "(flatten them first, e.g. with '_'.join)"
        )
    odd = [c for c in data.columns if not isinstance(c, str)]
    if odd:
        shown = ", ".join(f"{c!r} ({type(c).__name__})" for c in odd[:5])
        more = f" and {len(odd) - 5} more" if len(odd) > 5 else ""
        raise DataError(
            f"{what} has column label(s) that are not strings: {shown}{more}; expected flat, "
            "unique string column names"
        )
    if "" in data.columns:
        position = list(data.columns).index("")
        raise DataError(
            f"{what} has a column with an empty name '' (position {position}); expected flat, "
            "unique, non-empty string column names"
        )
    duplicated = sorted(set(data.columns[data.columns.duplicated()]))
    if duplicated:
        raise DataError(f"{what} has duplicated column name(s) {duplicated}")
    for c in data.columns:
        _require_hashable(data[c], f"{what} column {c!r}")
    return data


def _require_hashable(series: pd.Series, what: str) -> None:
    """Lists, dicts or arrays in cells cannot be counted, compared with a domain or hashed."""
    if series.dtype != object or infer_dtype(series, skipna=True) != "mixed":
        return  # scalars of one kind: hashable
    try:
        series.nunique()
    except TypeError as err:
        odd = next(v for v in series if not isinstance(v, Hashable))
        raise DataError(
            f"{what} holds unhashable values such as {odd!r} ({type(odd).__name__}); expected "
            "scalars (numbers, text, booleans or dates)"
        ) from err


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
    if suite.get("schema_version") not in SUPPORTED_VERSIONS:
        raise DataError(
            f"suite schema_version {suite.get('schema_version')!r} is not supported; "
            f"expected one of {list(SUPPORTED_VERSIONS)}"
        )
    for n, e in enumerate(suite["expectations"]):
        missing = [k for k in _ENTRY_KEYS if not isinstance(e, dict) or k not in e]
        if (
            missing
            or e["severity"] not in ("error", "warn")
            or not isinstance(e["kwargs"], dict)
            or not isinstance(e.get("learnt", {}), dict)
        ):
            raise DataError(
                f"suite entry {n} is malformed (missing {missing}, or severity not "
                f"'error'/'warn', or kwargs or learnt not a mapping): {e!r}"
            )
    return suite["expectations"]

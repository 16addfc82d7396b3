"""Datetime columns in drift: compared in time, as seconds since 1970-01-01 UTC.

A column is a datetime when its dtype is one, or when it holds text (or date objects) every
value of which parses as an ISO 8601 date, as a timestamp read back from CSV does. Its values
are then tested with the numerical tests on their epoch seconds, so a batch a few years later
is a shift in time, not a set of categories the reference never saw.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd

# A date at the start: 2024-01-31, optionally followed by a time and an offset.
_ISO_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"
)
_DATE_TYPES = ("datetime", "datetime64", "date")
# Ticks per second of the units pandas keeps datetimes in.
_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


class NotDates(ValueError):
    """A value of a datetime column is not a date; the message names it."""


def is_datetime_dtype(series: pd.Series) -> bool:
    return pd.api.types.is_datetime64_any_dtype(series.dtype)


def holds_dates(series: pd.Series) -> bool:
    """Whether `series` is a datetime column: a datetime dtype, or text or date objects whose
    every non-null value is an ISO 8601 date (a date with an optional time and offset)."""
    if is_datetime_dtype(series):
        return True
    dtype = series.dtype
    if (
        pd.api.types.is_bool_dtype(dtype)
        or pd.api.types.is_numeric_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)  # a categorical dtype is a choice of kind
    ):
        return False
    present = series.notna().to_numpy(dtype=bool)
    if not present.any():
        return False
    first = series.iloc[int(present.argmax())]
    if isinstance(first, str):
        if not _ISO_DATE.match(first.strip()):
            return False  # the cheap test that keeps ordinary text columns cheap
    elif not isinstance(first, dt.date | np.datetime64):
        return False
    values = series[present]
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in _DATE_TYPES:
        return True
    if kind != "string":
        return False
    text = values.astype(str).str.strip()
    if not text.str.match(_ISO_DATE).all():
        return False
    try:
        return bool(_parse(text).notna().all())
    except (ValueError, TypeError, OverflowError):
        return False


def _parse(values: pd.Series) -> pd.Series:
    # utc=True: offsets may differ from value to value; naive times are taken as UTC.
    return pd.to_datetime(values, format="ISO8601", errors="coerce", utc=True)


def epoch_seconds(series: pd.Series, side: str, strict: bool = True) -> np.ndarray:
    """The values of a datetime column as float64 seconds since 1970-01-01 UTC (NaN: missing).

    Args:
        series: A datetime column, or text / date objects holding dates.
        side: "reference" or "current batch", for the message.
        strict: Raise on a value that is not a date; otherwise it becomes NaN.

    Raises:
        NotDates: the column holds numbers or booleans, or (strict) a value that does not parse
            as an ISO 8601 date; the message names the value.
    """
    if is_datetime_dtype(series):
        times = series
    else:
        dtype = series.dtype
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            raise NotDates(f"the {side} holds {dtype} values; expected dates")
        values = series.astype(object) if isinstance(dtype, pd.CategoricalDtype) else series
        try:
            times = _parse(values.map(lambda v: v.strip() if isinstance(v, str) else v))
        except (ValueError, TypeError, OverflowError) as e:
            if not strict:
                return np.full(len(series), np.nan)
            raise NotDates(f"the {side} holds values that are not dates: {e}") from e
        bad = times.isna().to_numpy() & series.notna().to_numpy()
        if bad.any() and strict:
            value = series.iloc[int(bad.argmax())]
            raise NotDates(
                f"value {value!r} in the {side} is not a date (expected ISO 8601, e.g. "
                "2024-01-31 or 2024-01-31T12:00:00Z)"
            )
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    stamps = times.to_numpy()
    missing = np.isnat(stamps)
    per_second = _PER_SECOND[np.datetime_data(stamps.dtype)[0]]
    out = stamps.view("int64").astype("float64") / per_second
    out[missing] = np.nan
    return out

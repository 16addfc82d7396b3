"""The ranges a suite learns: numbers from their finite values, datetimes in time."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from mlops_loop.core.quality.vectorized import _as_naive_utc

# The dates ISO text can say (and Python's datetime hold): a margin never reaches past them.
_FIRST = pd.Timestamp("0001-01-01").as_unit("us")
_LAST = pd.Timestamp("9999-12-31 23:59:59.999999").as_unit("us")
#: The largest float: a learnt bound is clipped to it, since JSON has no infinity.
FLOAT_MAX = float(np.finfo(float).max)


def finite_range(series: pd.Series) -> tuple[float, float] | None:
    """The extremes of a numeric column's finite values; None if it has none.

    An infinity is out of any range: the batch's infinities count as out_of_range values.
    Values are clipped to half the largest float, so that their span is a finite number.
    """
    if infer_dtype(series, skipna=True) == "complex":
        return None  # complex numbers have no order
    try:
        values = np.asarray(series.dropna(), dtype=float)
    except (TypeError, ValueError, OverflowError):  # complex, or numbers GX cannot compare
        return None
    values = np.clip(values[np.isfinite(values)], -FLOAT_MAX / 2, FLOAT_MAX / 2)
    return (float(values.min()), float(values.max())) if values.size else None


def time_range(series: pd.Series, margin: float) -> tuple[str, str] | None:
    """A datetime column's extremes, widened by `margin` times their span (a day for a single
    instant), as naive UTC ISO text; None if it holds no date."""
    times = _as_naive_utc(series)
    times = None if times is None else times.dropna()
    if times is None or times.empty:
        return None
    lo, hi = times.min().as_unit("us"), times.max().as_unit("us")
    span = (hi - lo) or pd.Timedelta(days=1)
    try:
        pad = span * margin
        lo, hi = max(lo - pad, _FIRST), min(hi + pad, _LAST)
    except (OverflowError, ValueError):  # a margin past any date: the calendar's ends
        lo, hi = _FIRST, _LAST
    return lo.isoformat(), hi.isoformat()


def is_clock(series: pd.Series) -> bool:
    """Increasing unique values: a row counter or an event time, which every new batch leaves."""
    return bool(series.is_unique and series.is_monotonic_increasing)

"""The two sides of a drift comparison, column by column.

`evaluate_drift` asks each side for a column's sorted finite values (numerical tests) or its
category counts (categorical tests). A DataFrame computes them on demand (`FrameTable`); a stored
`ReferenceProfile` has them precomputed; a `ParquetBatch` reads one column at a time from disk.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pandas as pd

from mlops_loop.core.drift.dates import epoch_seconds, holds_dates
from mlops_loop.core.drift.measures import sorted_finite, sorted_quantiles
from mlops_loop.core.drift.report import LEVELS
from mlops_loop.core.errors import DataError

#: Label of missing values in categorical summaries.
NULL_LABEL = "<null>"
#: Most rows of a column (or frame) read by the short-column ways: plain numeric columns as
#: one 2-d array, text columns counted in a dict.
BLOCK_MAX_ROWS = 4096


class Unusable(Exception):
    """A column that cannot be tested; the message goes into the entry's `error`."""


class SourceError(DataError):
    """A side cannot deliver a column at all (unreadable file, profile lacking the column).

    Unlike `Unusable`, this stops the evaluation: the report would otherwise silently differ
    from the one the data deserves.
    """


def is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series)


#: The kinds a column is tested as; datetimes take the numerical tests, on epoch seconds.
KINDS = ("numerical", "categorical", "datetime")
#: Kinds whose tests read sorted values (the numerical tests).
SORTED_KINDS = ("numerical", "datetime")


def series_kind(column: pd.Series | pd.DataFrame) -> str:
    """The kind a column is tested as when no configuration names it: bool and numbers are
    numerical, datetimes and text that parses fully as ISO dates are datetime, the rest is
    categorical (a frame, selected by a repeated label, too)."""
    if not isinstance(column, pd.Series):
        return "categorical"
    if is_numeric(column):
        return "numerical"
    return "datetime" if holds_dates(column) else "categorical"


def frame_kind(frame: pd.DataFrame, key: Any) -> str:
    """The kind a column is tested as when no configuration names it (see `series_kind`)."""
    return series_kind(frame.loc[:, key])


def series_sorted_finite(series: pd.Series, side: str, kind: str = "numerical") -> np.ndarray:
    """The finite values of `series` as sorted float64 (a datetime's as epoch seconds).

    Raises:
        Unusable: no finite value.
        NotDates: a datetime column holds a value that is not a date.
    """
    if kind == "datetime":
        values = epoch_seconds(series, side)  # a fresh array
    else:  # a fresh copy, so the sort can happen in place
        values = series.to_numpy(dtype="float64", na_value=np.nan, copy=True)
    return require_values(sorted_finite(values), side)


def require_values(values: np.ndarray, side: str) -> np.ndarray:
    if values.size == 0:
        raise Unusable(f"all values are null (or non-finite) in the {side}")
    return values


def numeric_summary(values: np.ndarray) -> dict:
    """Summary of sorted finite values."""
    # Sums of huge values may overflow; `to_dict` turns the resulting infinities into None.
    with np.errstate(over="ignore", invalid="ignore"):
        return {
            "count": int(values.size),
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
            "min": float(values[0]),
            "max": float(values[-1]),
            "quantiles": [float(v) for v in sorted_quantiles(values, LEVELS)],
        }


def category_counts(series: pd.Series, side: str) -> pd.Series:
    """Counts per category label (str), nulls under `NULL_LABEL`, in order of first sight.

    Raises:
        Unusable: every value is null.
    """
    present = series.notna().to_numpy(dtype=bool)
    if not present.any():
        raise Unusable(f"all values are null in the {side}")
    if len(series) <= BLOCK_MAX_ROWS and _all_text(series):
        # A short text column: counted in a dict, far cheaper than pandas' machinery per call
        # and the same counts in the same order (text labels are their own str).
        tally: dict[str, int] = {}
        for value in series.to_numpy(dtype=object, na_value=NULL_LABEL):
            tally[value] = tally.get(value, 0) + 1
        return pd.Series(
            list(tally.values()), index=pd.Index(list(tally), dtype=object), dtype="int64"
        )
    try:
        counts = series.value_counts(dropna=False, sort=False)
    except TypeError:  # unhashable cells (lists, dicts) in object columns
        counts = series.map(str, na_action="ignore").value_counts(dropna=False, sort=False)
    counts = counts[counts > 0]  # a categorical dtype also lists its unused categories
    # Counting first and stringifying only the distinct values is much cheaper than casting
    # every cell; mixed types that print alike (1 and "1") merge here, as in a CSV round trip.
    labels = np.where(counts.index.isna(), NULL_LABEL, counts.index.astype(str))
    return counts.groupby(labels, sort=False).sum()


def _all_text(series: pd.Series) -> bool:
    """Whether every non-null value is a str, so that its label is itself."""
    if isinstance(series.dtype, pd.StringDtype):
        return True
    return series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) == "string"


def error_text(e: BaseException) -> str:
    """What a failed column test puts into its entry's `error`."""
    return str(e) or type(e).__name__


class Table(Protocol):
    """One side of a comparison, as `evaluate_drift` reads it."""

    @property
    def columns(self) -> pd.Index: ...

    def __len__(self) -> int: ...

    def inferred_kind(self, key: Any) -> str:
        """One of `KINDS` when no configuration names the column."""
        ...

    def sorted_values(self, key: Any, side: str, kind: str = "numerical") -> np.ndarray:
        """Sorted finite float64 values (epoch seconds for a datetime); raises `Unusable` (or
        any error) when impossible."""
        ...

    def summary(self, key: Any, values: np.ndarray) -> dict:
        """The numerical summary of the values `sorted_values` gave."""
        ...

    def category_counts(self, key: Any, side: str) -> pd.Series:
        """Counts per label as `category_counts` gives them."""
        ...


class ColumnarBatch(Table):
    """A current side that is not a frame: a batch read a column at a time (`ParquetBatch`).

    `evaluate_drift` accepts a DataFrame or one of these. The type lives here, beside `Table`,
    so the in-memory path accepts the chunked one without importing it (the chunked path
    depends on the in-memory one, never the reverse).
    """


class FrameTable:
    """A DataFrame as a side: every statistic computed on demand."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._block: tuple[dict[Any, int], np.ndarray] | None = None

    @property
    def columns(self) -> pd.Index:
        return self.frame.columns

    def __len__(self) -> int:
        return len(self.frame)

    def _numbers(self) -> tuple[dict[Any, int], np.ndarray]:
        """A short frame's plain numeric columns (numpy bool, int and float dtypes, uniquely
        labelled) as one float64 array, and each one's position in it: selecting thousands of
        columns one by one costs far more than the values."""
        if self._block is None:
            frame, positions = self.frame, {}
            if len(frame) <= BLOCK_MAX_ROWS and frame.columns.is_unique:
                positions = {
                    key: i
                    for i, (key, dtype) in enumerate(frame.dtypes.items())
                    if isinstance(dtype, np.dtype) and dtype.kind in "biuf"
                }
            picked = list(positions.values())
            block = frame.iloc[:, picked].to_numpy(dtype="float64") if picked else np.empty(0)
            self._block = ({k: j for j, k in enumerate(positions)}, block)
        return self._block

    def inferred_kind(self, key: Any) -> str:
        if key in self._numbers()[0]:
            return "numerical"
        return frame_kind(self.frame, key)

    def sorted_values(self, key: Any, side: str, kind: str = "numerical") -> np.ndarray:
        where, block = self._numbers()
        if kind == "numerical" and key in where:
            return require_values(sorted_finite(block[:, where[key]].copy()), side)
        return series_sorted_finite(self.frame[key], side, kind)

    def summary(self, key: Any, values: np.ndarray) -> dict:
        return numeric_summary(values)

    def category_counts(self, key: Any, side: str) -> pd.Series:
        return category_counts(self.frame[key], side)

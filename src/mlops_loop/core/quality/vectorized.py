"""Suite entries checked in pandas, all columns of a wide frame at once, as GX would judge them.

Great Expectations validates one expectation at a time at a cost of milliseconds each, whatever
the batch's size: on a frame of thousands of columns (tens of thousands of entries) that cost is
the whole run. `evaluate` answers the entries whose GX semantics it reproduces exactly (schema,
row count, nulls, ranges, domains and uniqueness, with `mostly`), with the SUMMARY fields GX
reports and `incidents._incidents` reads; it declines every other entry (a custom check, a
kwarg it does not know, a column dtype GX compares element by element) so that GX judges it.

`comparable` turns the columns a time range reads into naive UTC datetimes first (text that
parses as ISO dates included), for this module and GX alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_numeric_dtype

#: Unexpected values GX keeps per check in its SUMMARY result format.
PARTIAL = 20
_MAP = ("mostly",)
_KWARGS: dict[str, frozenset[str]] = {
    "ExpectColumnToExist": frozenset({"column"}),
    "ExpectTableColumnsToMatchSet": frozenset({"column_set", "exact_match"}),
    "ExpectTableRowCountToBeBetween": frozenset(
        {"min_value", "max_value", "strict_min", "strict_max"}
    ),
    "ExpectColumnValuesToNotBeNull": frozenset({"column", *_MAP}),
    "ExpectColumnValuesToBeBetween": frozenset(
        {"column", "min_value", "max_value", "strict_min", "strict_max", *_MAP}
    ),
    "ExpectColumnValuesToBeInSet": frozenset({"column", "value_set", *_MAP}),
    "ExpectColumnValuesToBeUnique": frozenset({"column", *_MAP}),
    "ExpectCompoundColumnsToBeUnique": frozenset({"column_list", "ignore_row_if", *_MAP}),
}
_HASH_ROWS = 10_000  # fewer rows are compared directly
_IGNORE_ROW_IF = ("all_values_are_missing", "any_value_is_missing", "never")


@dataclass
class Outcome:
    """One entry's verdict with the fields of a GX validation result that incidents read."""

    success: bool
    result: dict
    exception_info: dict | None = None


def _time_bounds(entry: dict) -> bool:
    """Whether an entry is a range in time: its bounds are ISO text, as `build_suite` learns."""
    kw = entry["kwargs"]
    return entry["type"] == "ExpectColumnValuesToBeBetween" and any(
        isinstance(kw.get(k), str) for k in ("min_value", "max_value")
    )


def _as_naive_utc(series: pd.Series) -> pd.Series | None:
    """The column as naive UTC datetimes (nanoseconds when they fit); None if it is not one."""
    if is_numeric_dtype(series.dtype) or is_bool_dtype(series.dtype):
        return None  # a number is never read as a date; the type check reports it
    if is_datetime64_any_dtype(series.dtype):
        out = series.dt.tz_convert("UTC") if getattr(series.dtype, "tz", None) else series
    else:
        try:
            out = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
        except (TypeError, ValueError, OverflowError):
            return None
    if getattr(out.dtype, "tz", None) is not None:
        out = out.dt.tz_localize(None)
    try:
        return out.astype("datetime64[ns]")  # GX compares nanosecond datetimes vectorized
    except (OverflowError, ValueError):  # out of the nanosecond range: keep the finer unit
        return out


def comparable(frame: pd.DataFrame, entries: dict[int, dict]) -> pd.DataFrame:
    """The frame with each column a time range reads as naive UTC datetimes.

    Text that does not parse as a date becomes missing; a timezone-aware column is converted to
    UTC, as the learnt bounds are.
    """
    columns = {e["column"] for e in entries.values() if _time_bounds(e)} & set(frame.columns)
    converted = {c: s for c in columns if (s := _as_naive_utc(frame[c])) is not None}
    if not converted:
        return frame
    frame = frame.copy(deep=False)
    for c, s in converted.items():
        frame[c] = s
    return frame


def _map_result(element: int, missing: int | None, unexpected: int, partial: list) -> dict:
    """The SUMMARY fields GX computes from a map check's counts (`_format_map_output`)."""
    out: dict[str, Any] = {"element_count": element, "unexpected_count": unexpected}
    total = unexpected / element * 100 if element > 0 else None
    percent = total
    if missing is not None:
        nonnull = element - missing
        percent = unexpected / nonnull * 100 if element > 0 and nonnull > 0 else None
        out.update(
            {
                "missing_count": missing,
                "missing_percent": missing / element * 100 if element > 0 else None,
                "unexpected_percent_total": total,
                "unexpected_percent_nonmissing": percent,
            }
        )
    out["unexpected_percent"] = percent
    out["partial_unexpected_list"] = partial[:PARTIAL]
    return out


def _mostly(considered: int, unexpected: int, mostly: float) -> bool:
    if considered == 0:
        return True  # vacuously, as GX decides
    return (float(considered) - float(unexpected)) / float(considered) >= mostly


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _between(values: pd.Series, kw: dict) -> pd.Series | None:
    """GX's vectorized comparison of non-null values with the bounds; None to leave it to GX."""
    lo, hi = kw.get("min_value"), kw.get("max_value")
    dtype = values.dtype
    if is_datetime64_any_dtype(dtype) and getattr(dtype, "tz", None) is None:
        if not all(b is None or isinstance(b, str) for b in (lo, hi)):
            return None
        try:
            lo, hi = (None if b is None else pd.Timestamp(b) for b in (lo, hi))
        except (TypeError, ValueError):
            return None
        if any(b is not None and (b is pd.NaT or b.tzinfo is not None) for b in (lo, hi)):
            return None
    elif is_numeric_dtype(dtype) and not is_bool_dtype(dtype):
        if not all(b is None or (_number(b) and not math.isnan(b)) for b in (lo, hi)):
            return None
    else:
        return None  # object, text, categories, booleans: GX compares element by element
    if (lo is None and hi is None) or (lo is not None and hi is not None and lo > hi):
        return None  # GX raises on these; its own words say why
    ok = pd.Series(True, index=values.index)
    if lo is not None:
        ok &= values > lo if kw.get("strict_min") else values >= lo
    if hi is not None:
        ok &= values < hi if kw.get("strict_max") else values <= hi
    return ok.astype(bool)


def _numeric_bounds(frame: pd.DataFrame, e: dict) -> tuple[float, float] | None:
    """An entry's bounds when the bulk float comparison is GX's (a number column, number
    bounds, at least one given, min <= max); None otherwise."""
    kw = e["kwargs"]
    dtype = frame[e["column"]].dtype
    if e["type"] != "ExpectColumnValuesToBeBetween" or not is_numeric_dtype(dtype):
        return None
    if is_bool_dtype(dtype) or str(dtype).startswith("complex"):
        return None
    lo, hi = kw.get("min_value"), kw.get("max_value")
    if not all(b is None or (_number(b) and not math.isnan(b)) for b in (lo, hi)):
        return None
    if (lo is None and hi is None) or (lo is not None and hi is not None and lo > hi):
        return None
    return (-math.inf if lo is None else float(lo)), (math.inf if hi is None else float(hi))


def _bulk_between(
    frame: pd.DataFrame, maps: dict[int, dict], na: pd.DataFrame
) -> dict[int, np.ndarray]:
    """Unexpected masks of the numeric ranges, every column at once (one float matrix)."""
    bounds = {n: b for n, e in maps.items() if (b := _numeric_bounds(frame, e)) is not None}
    if not bounds:
        return {}
    order = list(bounds)
    cols = [maps[n]["column"] for n in order]
    x = frame[cols].to_numpy(dtype=float, na_value=np.nan)
    lo = np.array([bounds[n][0] for n in order])
    hi = np.array([bounds[n][1] for n in order])
    kws = [maps[n]["kwargs"] for n in order]
    # A bound left out is an infinity, compared inclusively (so -inf itself is within it).
    smin = np.array([bool(k.get("strict_min")) and k.get("min_value") is not None for k in kws])
    smax = np.array([bool(k.get("strict_max")) and k.get("max_value") is not None for k in kws])
    with np.errstate(invalid="ignore"):
        ok = np.where(smin, x > lo, x >= lo) & np.where(smax, x < hi, x <= hi)
    bad = ~ok & ~na[cols].to_numpy(dtype=bool)
    return {n: bad[:, j] for j, n in enumerate(order)}


def _one_map(series: pd.Series, nulls: np.ndarray, e: dict) -> np.ndarray | None:
    """A range in time, a domain or a uniqueness check on one column: its unexpected mask."""
    kw = e["kwargs"]
    values = series[~nulls]
    if e["type"] == "ExpectColumnValuesToBeBetween":
        ok = _between(values, kw)
    elif e["type"] == "ExpectColumnValuesToBeInSet":
        value_set = kw.get("value_set")
        if value_set is not None and not isinstance(value_set, list):
            return None
        ok = pd.Series(True, index=values.index) if value_set is None else values.isin(value_set)
    else:  # ExpectColumnValuesToBeUnique
        ok = ~values.duplicated(keep=False)
    if ok is None:
        return None
    bad = np.zeros(len(series), dtype=bool)
    bad[~nulls] = ~ok.to_numpy(dtype=bool)
    return bad


def _column_maps(frame: pd.DataFrame, maps: dict[int, dict]) -> dict[int, Outcome]:
    """Null, range, domain and uniqueness checks of single columns, as GX's column map checks:
    nulls are not judged, and `mostly` is the share of the non-null values that must pass."""
    total = len(frame)
    cols = list(dict.fromkeys(e["column"] for e in maps.values()))
    na = frame[cols].isna()
    missing = dict(zip(cols, na.sum().tolist(), strict=True))
    masks = _bulk_between(frame, maps, na)
    out: dict[int, Outcome] = {}
    for n, e in maps.items():
        col, mostly = e["column"], e["kwargs"].get("mostly", 1.0)
        if e["type"] == "ExpectColumnValuesToNotBeNull":
            nulls = missing[col]
            ok = total == 0 or (total - nulls) / total >= mostly
            # GX lists the null values themselves; no incident words them.
            partial = [] if ok else list(frame[col][na[col].to_numpy()].iloc[:PARTIAL])
            out[n] = Outcome(ok, _map_result(total, None, nulls, partial))
            continue
        try:
            bad = masks[n] if n in masks else _one_map(frame[col], na[col].to_numpy(), e)
        except (TypeError, ValueError):  # unhashable or incomparable values: GX words it
            bad = None
        if bad is None:
            continue
        unexpected = int(bad.sum())
        partial = list(frame[col][bad].iloc[:PARTIAL]) if unexpected else []
        success = total == 0 or _mostly(total - missing[col], unexpected, mostly)
        out[n] = Outcome(success, _map_result(total, missing[col], unexpected, partial))
    return out


def _repeated(part: pd.DataFrame) -> np.ndarray:
    """`part.duplicated(keep=False)`, as GX computes it, found through row hashes first.

    Factorizing every column of a million rows takes seconds; hashing them a fraction of that.
    Equal rows hash equal (pandas canonicalizes NaN, -0.0 and objects), so only the rows whose
    hash repeats can repeat, and those few are compared exactly: a collision changes nothing.
    """
    if len(part) < _HASH_ROWS:
        return part.duplicated(keep=False).to_numpy(dtype=bool)
    try:
        hashed = pd.util.hash_pandas_object(part, index=False)
    except TypeError:  # values pandas cannot hash: compare them all
        return part.duplicated(keep=False).to_numpy(dtype=bool)
    maybe = hashed.duplicated(keep=False).to_numpy(dtype=bool)
    bad = np.zeros(len(part), dtype=bool)
    if maybe.any():
        bad[maybe] = part[maybe].duplicated(keep=False).to_numpy(dtype=bool)
    return bad


def _compound(frame: pd.DataFrame, kw: dict) -> Outcome | None:
    columns, how = kw.get("column_list"), kw.get("ignore_row_if", "all_values_are_missing")
    if not isinstance(columns, list) or not columns or how not in _IGNORE_ROW_IF:
        return None
    part = frame[columns]
    if how != "never":
        nulls = part.isna()
        part = part[~(nulls.all(axis=1) if how == "all_values_are_missing" else nulls.any(axis=1))]
    bad = _repeated(part)
    unexpected, considered = int(bad.sum()), len(part)
    partial = part[bad].iloc[:PARTIAL].to_dict("records") if unexpected else []
    success = len(frame) == 0 or _mostly(considered, unexpected, kw.get("mostly", 1.0))
    return Outcome(success, _map_result(len(frame), len(frame) - considered, unexpected, partial))


def _row_count(kw: dict, rows: int) -> Outcome | None:
    lo, hi = kw.get("min_value"), kw.get("max_value")
    if not all(b is None or _number(b) for b in (lo, hi)) or (lo is None and hi is None):
        return None
    ok = (lo is None or (rows > lo if kw.get("strict_min") else rows >= lo)) and (
        hi is None or (rows < hi if kw.get("strict_max") else rows <= hi)
    )
    return Outcome(ok, {"observed_value": rows})


def _column_set(kw: dict, columns: list[str]) -> Outcome | None:
    expected, exact = kw.get("column_set"), kw.get("exact_match", True)
    if not isinstance(expected, list) or not isinstance(exact, bool):
        return None
    actual, wanted = set(columns), set(expected)
    result: dict[str, Any] = {"observed_value": sorted(map(str, actual))}
    if actual == wanted:
        return Outcome(True, result)
    mismatched = {}
    if actual - wanted:
        mismatched["unexpected"] = sorted(map(str, actual - wanted))
    if wanted - actual:
        mismatched["missing"] = sorted(map(str, wanted - actual))
    result["details"] = {"mismatched": mismatched}
    return Outcome(not exact and not (wanted - actual), result)


def _supported(e: dict) -> bool:
    allowed = _KWARGS.get(str(e["type"]))
    if allowed is None or not set(e["kwargs"]) <= allowed:
        return False
    mostly = e["kwargs"].get("mostly", 1.0)
    flags = [e["kwargs"].get(k, False) for k in ("strict_min", "strict_max")]
    return _number(mostly) and 0 <= mostly <= 1 and all(isinstance(f, bool) for f in flags)


def evaluate(frame: pd.DataFrame, entries: dict[int, dict]) -> dict[int, Outcome]:
    """The outcome of each entry this module can judge as GX would; the others are left out.

    `frame` is taken as it is handed to GX (see `comparable`); an entry that names a column the
    frame lacks is left out, except `ExpectColumnToExist`, which says so.
    """
    present = set(frame.columns)
    maps: dict[int, dict] = {}
    out: dict[int, Outcome] = {}
    for n, e in entries.items():
        if not _supported(e):
            continue
        kind, kw = e["type"], e["kwargs"]
        outcome: Outcome | None = None
        if kind == "ExpectColumnToExist":
            outcome = Outcome(kw.get("column") in present, {})
        elif kind == "ExpectTableColumnsToMatchSet":
            outcome = _column_set(kw, list(frame.columns))
        elif kind == "ExpectTableRowCountToBeBetween":
            outcome = _row_count(kw, len(frame))
        elif kind == "ExpectCompoundColumnsToBeUnique":
            named = kw.get("column_list")
            if isinstance(named, list) and set(named) <= present:
                try:
                    outcome = _compound(frame, kw)
                except (TypeError, ValueError):  # unhashable values: GX words it
                    outcome = None
        elif isinstance(kw.get("column"), str) and kw["column"] in present:
            maps[n] = e
        if outcome is not None:
            out[n] = outcome
    if maps:
        out.update(_column_maps(frame, maps))
    return dict(sorted(out.items()))

"""Failed checks in the words of their suite entries: GX results and dtype families to incidents."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from mlops_loop.core.quality.result import Incident
from mlops_loop.core.quality.spec import _family, _jsonable


def _type_incidents(entry: dict, frame: pd.DataFrame) -> list[Incident]:
    """A type_mismatch incident when the column's family does not fit the learnt one."""
    col = entry["column"]
    return _type_verdict(entry, _family(frame[col]), lambda: frame[col].dropna().head(1000))


def _type_verdict(
    entry: dict, observed: str | None, first_values: Callable[[], pd.Series]
) -> list[Incident]:
    """The type_mismatch incident of a column whose values are of family `observed`;
    `first_values` gives its first non-null values, to see if text holds dates."""
    col, expected = entry["column"], entry["kwargs"].get("family", "mixed")
    if observed is None or expected in (observed, "mixed"):
        return []
    if expected == "datetime" and observed == "string":
        # A timestamp read from CSV arrives as text; accept it when it parses as dates.
        sample = first_values()
        # utc=True: text with mixed offsets is dates too (pandas refuses it otherwise).
        parsed = pd.to_datetime(sample, errors="coerce", format="ISO8601", utc=True)
        if parsed.notna().all():
            return []
    return [
        Incident(
            entry["kind"],
            col,
            entry["severity"],
            observed,
            expected,
            f"Column {col!r} holds {observed} values; expected {expected} as in the reference.",
        )
    ]


def _gx_error(info: dict) -> str | None:
    # GX reports a raised metric either flat or keyed by metric id, depending on where it failed.
    for item in [info, *info.values()]:
        if isinstance(item, dict) and (
            item.get("raised_exception") or item.get("exception_message")
        ):
            return str(item.get("exception_message") or "unknown error")
    return None


def _fmt(value: Any) -> str:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return f"{value:.4g}" if is_number else repr(value)


def _incidents(e: dict, result: Any, private: frozenset[str] = frozenset()) -> list[Incident]:
    """Map one failed GX result to incidents, in the words of its spec entry."""
    kind, col, kw, res = e["kind"], e["column"], e["kwargs"], result.result or {}
    name = repr(col) if col else "the batch"

    def one(observed: Any, expected: Any, message: str, column: str | None = col) -> Incident:
        return Incident(
            kind, column, e["severity"], _jsonable(observed), _jsonable(expected), message
        )

    error = _gx_error(result.exception_info or {})
    if error:
        return [one({"error": error}, kw, f"Check {e['type']} on {name} could not run: {error}.")]
    tolerated = round(1 - kw.get("mostly", 1.0), 6)
    share = round((res.get("unexpected_percent_nonmissing") or 0) / 100, 4)
    # Examples may be rows (dicts) for multi-column checks: dedupe on their JSON text.
    # JSON has no infinity: an infinite example is named, not turned into null.
    raw = [
        str(v) if isinstance(v, float) and math.isinf(v) else _jsonable(v)
        for v in res.get("partial_unexpected_list", [])
    ]
    examples = list({json.dumps(v, sort_keys=True): v for v in raw}.values())[:5]
    # A private column's values never appear in a report, not even as examples.
    hidden = bool(private & {col, *kw.get("column_list", [])})
    if hidden:
        examples = []
    seen = f"{share:.1%} of values" + (
        f" (e.g. {', '.join(map(_fmt, examples[:3]))})" if examples else ""
    )
    if kind == "missing_column":
        return [
            one(
                "absent",
                "present",
                f"Column {col!r} is missing from the batch; the reference has it.",
            )
        ]
    if kind == "unexpected_column":
        known = set(kw.get("column_set", []))
        return [
            one(
                "present",
                "absent",
                f"Column {c!r} is in the batch but not in the reference; it is ignored.",
                column=c,
            )
            for c in res.get("observed_value", [])
            if c not in known
        ]
    if kind == "row_count":
        rows, low, high = res.get("observed_value"), kw.get("min_value"), kw.get("max_value")
        want = f"at least {low}" if high is None else f"between {low or 0} and {high}"
        return [
            one(rows, {"min": low, "max": high}, f"The batch has {rows} rows; expected {want}.")
        ]
    if kind == "null_rate":
        nulls = round(res.get("unexpected_count", 0) / max(res.get("element_count", 0), 1), 4)
        return [
            one(
                nulls,
                {"max_share": tolerated},
                f"Column {col!r} is {nulls:.1%} null; expected at most {tolerated:.1%}.",
            )
        ]
    if kind == "out_of_range":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        return [
            one(
                {"share": share, "examples": examples},
                {"min": lo, "max": hi, "max_share": tolerated},
                f"Column {col!r} has {seen} outside [{_fmt(lo)}, {_fmt(hi)}]; expected "
                f"at most {tolerated:.1%}.",
            )
        ]
    if kind == "unseen_category":
        return [
            one(
                {"share": share, "values": examples},
                {"max_share": tolerated, "known_values": len(kw.get("value_set", []))},
                f"Column {col!r} has {seen} unseen in the reference; expected at most "
                f"{tolerated:.1%}.",
            )
        ]
    if kind == "duplicate_rows" and col is None:
        share = round((res.get("unexpected_percent") or 0) / 100, 4)
        return [
            one(
                {"share": share, "rows": res.get("unexpected_count")},
                {"max_share": tolerated},
                f"{share:.1%} of the batch's rows repeat another row entirely; expected at "
                f"most {tolerated:.1%}.",
            )
        ]
    if kind == "duplicate_rows":
        count = res.get("unexpected_count")
        return [
            one(
                {"duplicated": count},
                "unique",
                f"Column {col!r} has {count} rows with a "
                "repeated value; expected every value to be unique.",
            )
        ]
    observed = res.get("observed_value", res.get("unexpected_percent"))
    if hidden and "observed_value" in res:
        observed = "(private column: value withheld)"
    return [one(observed, kw, f"Check {e['type']} on {name} failed: observed {observed!r}.")]

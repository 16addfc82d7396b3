"""`validate_batch` of a parquet batch larger than memory, a slice at a time.

The quality suite runs on each slice and the per-slice counts GX reports (elements, missing,
unexpected) are combined into the verdict `validate_batch` gives the whole frame. Uniqueness
needs every row at once, so each slice's rows (or ids) are hashed to 8 bytes and the repeats
counted over all hashes (80 MB for 10M rows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.errors import DataError
from mlops_loop.core.parquet import CHUNK_ROWS, _open, iter_parquet, parquet_rows
from mlops_loop.core.quality.bounds import resolve_entries
from mlops_loop.core.quality.incidents import _gx_error, _incidents, _type_verdict
from mlops_loop.core.quality.renames import merge_renames
from mlops_loop.core.quality.result import QualityResult
from mlops_loop.core.quality.spec import TYPE_CHECK, _entries, _family, _frame
from mlops_loop.core.quality.validate import _evaluate, assemble_result, validate_batch

_SCHEMA_TYPES = frozenset({"ExpectColumnToExist", "ExpectTableColumnsToMatchSet"})
_UNIQUE_TYPES = frozenset({"ExpectColumnValuesToBeUnique", "ExpectCompoundColumnsToBeUnique"})
_ROW_COUNT = "ExpectTableRowCountToBeBetween"
_PARTIAL = 20  # unexpected values GX keeps per check in its SUMMARY format


@dataclass
class _Outcome:
    """What `incidents._incidents` reads of a GX validation result."""

    success: bool
    result: dict
    exception_info: dict | None = None


def _map_result(element: int, missing: int | None, unexpected: int, partial: list) -> dict:
    """The SUMMARY fields GX computes from a map check's counts (as `_format_map_output`)."""
    out: dict[str, Any] = {"element_count": element, "unexpected_count": unexpected}
    percent = None
    if element > 0:
        total = unexpected / element * 100
        percent = total
        if missing is not None:
            nonnull = element - missing
            percent = unexpected / nonnull * 100 if nonnull > 0 else None
            out.update(
                {
                    "missing_count": missing,
                    "missing_percent": missing / element * 100,
                    "unexpected_percent_total": total,
                    "unexpected_percent_nonmissing": percent,
                }
            )
    elif missing is not None:
        out.update(
            {
                "missing_count": missing,
                "missing_percent": None,
                "unexpected_percent_total": None,
                "unexpected_percent_nonmissing": None,
            }
        )
    out["unexpected_percent"] = percent
    out["partial_unexpected_list"] = partial[:_PARTIAL]
    return out


def _mostly_success(element: int, missing: int | None, unexpected: int, mostly: float) -> bool:
    considered = element - (missing or 0)
    if element == 0 or considered == 0:
        return True  # vacuously, as GX decides
    return (float(considered) - float(unexpected)) / float(considered) >= mostly


@dataclass
class _Counts:
    """A row-wise check's counts summed over slices; the first failure to run is kept."""

    element: int = 0
    missing: int | None = None
    unexpected: int = 0
    partial: list = field(default_factory=list)
    failed: Any = None

    def add(self, result: Any) -> None:
        if self.failed is not None:
            return
        if _gx_error(result.exception_info or {}):
            self.failed = result
            return
        res = result.result or {}
        self.element += int(res.get("element_count") or 0)
        self.unexpected += int(res.get("unexpected_count") or 0)
        if res.get("missing_count") is not None:
            self.missing = (self.missing or 0) + int(res["missing_count"])
        if len(self.partial) < _PARTIAL:
            self.partial.extend(res.get("partial_unexpected_list") or [])

    def outcome(self, mostly: float) -> Any:
        if self.failed is not None:
            return self.failed
        return _Outcome(
            _mostly_success(self.element, self.missing, self.unexpected, mostly),
            _map_result(self.element, self.missing, self.unexpected, self.partial),
        )


@dataclass
class _Hashes:
    """Row (or value) hashes of a uniqueness check, collected slice by slice."""

    columns: list[str]
    skip: str  # which rows GX leaves out: "never", "all_values_are_missing", ...
    parts: list[np.ndarray] = field(default_factory=list)
    element: int = 0
    missing: int = 0

    def add(self, chunk: pd.DataFrame) -> None:
        part = chunk[self.columns]
        self.element += len(part)
        if self.skip != "never":
            nulls = part.isna()
            out = nulls.all(axis=1) if self.skip == "all_values_are_missing" else nulls.any(axis=1)
            self.missing += int(out.sum())
            part = part[~out.to_numpy()]
        if len(part):
            hashed = pd.util.hash_pandas_object(part, index=False).to_numpy(dtype="uint64")
            self.parts.append(hashed)

    def outcome(self, mostly: float) -> _Outcome:
        hashes = np.concatenate(self.parts) if self.parts else np.empty(0, dtype="uint64")
        self.parts = []
        _, counts = np.unique(hashes, return_counts=True)
        del hashes
        repeated = int(counts[counts > 1].sum())  # every row of a repeated group, as GX counts
        missing = self.missing
        return _Outcome(
            _mostly_success(self.element, missing, repeated, mostly),
            _map_result(self.element, missing, repeated, []),
        )


def _check_kind(entry: dict) -> str:
    """How a check's slices combine: schema, rows, unique, map (counts add up) or whole."""
    import great_expectations as gx
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    name = str(entry["type"])
    if name in _SCHEMA_TYPES:
        return "schema"
    if name == _ROW_COUNT:
        return "rows"
    if name in _UNIQUE_TYPES:
        return "unique"
    cls = getattr(gx.expectations, name, None)
    row_wise = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)
    return "map" if isinstance(cls, type) and issubclass(cls, row_wise) else "whole"


def _row_count(entry: dict, rows: int) -> _Outcome:
    kw = entry["kwargs"]
    lo, hi = kw.get("min_value"), kw.get("max_value")
    ok = (lo is None or (rows > lo if kw.get("strict_min") else rows >= lo)) and (
        hi is None or (rows < hi if kw.get("strict_max") else rows <= hi)
    )
    return _Outcome(ok, {"observed_value": rows})


def _first_values(parts: list[pd.Series]) -> pd.Series:
    return pd.concat(parts).head(1000) if parts else pd.Series([], dtype=object)


def _mismatch(expected: str, observed: str | None) -> bool:
    """Whether a slice's family already rules the column's type out (text may hold dates)."""
    return (
        observed is not None
        and expected not in (observed, "mixed")
        and not (expected == "datetime" and observed == "string")
    )


def _read_column(path: Path, name: str) -> pd.Series:
    return pd.read_parquet(path, columns=[name])[name]


def validate_parquet(
    path: str | Path,
    suite: dict,
    chunk_rows: int = CHUNK_ROWS,
    private: frozenset[str] | set[str] = frozenset(),
    ignore: frozenset[str] | set[str] = frozenset(),
) -> QualityResult:
    """`validate_batch(None, pandas.read_parquet(path), suite=suite)`, a slice at a time.

    Row-wise checks (nulls, ranges, domains, and custom column map checks) run on each slice and
    their counts are added up; the column set comes from the file's schema; the row count is
    the sum; uniqueness of rows and of the id is counted over 8-byte hashes of every row. A
    custom check that is not row-wise (a mean, a row count to equal) reads the columns it names
    whole (the whole batch if it names none). The verdict has no GX Data Docs page.

    Args:
        path: The parquet batch.
        suite: A spec from `build_suite`.
        chunk_rows: Rows per slice; memory grows with it.
        private: Columns whose values no incident may show (`columns.private`).
        ignore: Columns left out of the check, as if the file did not have them (the columns
            serving adds to a served batch, `served.reserved_columns`).

    Returns:
        The verdict, with the incidents and statistics `validate_batch` gives the whole frame.

    Raises:
        DataError: the file is missing or unreadable, or the suite is malformed.
    """
    started = time.perf_counter()
    path = Path(path)
    rows = parquet_rows(path)
    if rows == 0:
        empty = pd.read_parquet(path)
        return validate_batch(
            None, empty.drop(columns=[c for c in empty if c in ignore]), suite=suite
        )
    entries = resolve_entries(_entries(suite), rows)  # learnt bounds at the batch's size
    with _open(path) as parquet:
        header = _frame(parquet.schema_arrow.empty_table().to_pandas(), "current batch")
    header = header.drop(columns=[c for c in header.columns if c in ignore])
    kept = [str(c) for c in header.columns] if ignore else None
    present = set(header.columns)
    typed = [n for n, e in enumerate(entries) if e["type"] == TYPE_CHECK and e["column"] in present]
    candidates = {
        n: e
        for n, e in enumerate(entries)
        if e["type"] != TYPE_CHECK
        and set(e["kwargs"].get("column_list", [])) <= present
        and (e["column"] is None or e["type"] == "ExpectColumnToExist" or e["column"] in present)
    }
    kinds = {n: _check_kind(e) for n, e in candidates.items()}
    counts = {n: _Counts() for n, k in kinds.items() if k == "map"}
    hashes = {
        n: _Hashes(
            list(e["kwargs"].get("column_list") or [e["column"]]),
            # Nulls are not values of a column; rows of a compound check are all kept.
            e["kwargs"].get("ignore_row_if", "all_values_are_missing")
            if e["column"] is None
            else "any",
        )
        for n, e in candidates.items()
        if kinds[n] == "unique"
    }
    outcomes: dict[int, Any] = {}
    families: dict[int, set[str | None]] = {n: set() for n in typed}
    firsts: dict[str, list[pd.Series]] = {
        entries[n]["column"]: [] for n in typed if entries[n]["kwargs"].get("family") == "datetime"
    }
    chunk_index = 0
    for chunk in iter_parquet(path, chunk_rows, columns=kept):
        chunk = _frame(chunk, "current batch")
        skip = set()
        for n in typed:
            col = entries[n]["column"]
            family = _family(chunk[col])
            families[n].add(family)
            if _mismatch(entries[n]["kwargs"].get("family", "mixed"), family):
                skip.add(col)
            if col in firsts and sum(map(len, firsts[col])) < 1000:
                firsts[col].append(chunk[col].dropna().head(1000))
        run = {
            n: e
            for n, e in candidates.items()
            if (kinds[n] == "map" and e["column"] not in skip)
            or (kinds[n] == "schema" and chunk_index == 0)
        }
        by_entry, _ = _evaluate(chunk, run) if run else ({}, None)
        for n, result in by_entry.items():
            if kinds[n] == "schema":
                outcomes[n] = result
            else:
                counts[n].add(result)
        for n, h in hashes.items():
            if entries[n]["column"] not in skip:
                h.add(chunk)
        chunk_index += 1
        del chunk

    found: dict[int, list] = {}
    for n in typed:
        seen = families[n] - {None}
        observed = None if not seen else (seen.pop() if len(seen) == 1 else "mixed")
        col = entries[n]["column"]
        hit = _type_verdict(entries[n], observed, partial(_first_values, firsts.get(col, [])))
        if hit:
            found[n] = hit
    wrong_type = {entries[n]["column"] for n in found}
    to_gx = {
        n: e
        for n, e in candidates.items()
        if e["column"] is None
        or e["type"] == "ExpectColumnToExist"
        or e["column"] not in wrong_type
    }
    whole = {n: e for n, e in to_gx.items() if kinds[n] == "whole"}
    for n, e in whole.items():
        kw = e["kwargs"]
        named = [kw.get(k) for k in ("column", "column_A", "column_B") if kw.get(k)]
        named += list(kw.get("column_list", []))
        try:
            frame = pd.read_parquet(path, columns=list(dict.fromkeys(named)) or kept)
        except Exception as err:  # pyarrow raises many unrelated types
            raise DataError(
                f"{path}: cannot read the columns {named} of suite entry {n}: {err}"
            ) from err
        outcomes.update(_evaluate(_frame(frame, "current batch"), {n: e})[0])
        del frame
    for n, e in to_gx.items():
        mostly = float(e["kwargs"].get("mostly", 1.0))
        if kinds[n] == "rows":
            outcomes[n] = _row_count(e, rows)
        elif kinds[n] == "map":
            outcomes[n] = counts[n].outcome(mostly)
        elif kinds[n] == "unique":
            outcomes[n] = hashes[n].outcome(mostly)
        result = outcomes.get(n)
        if result is not None and not result.success:
            found[n] = _incidents(e, result, frozenset(private))
    found = merge_renames(found, entries, partial(_read_column, path))
    return assemble_result(
        found,
        evaluated=len(typed) + len(to_gx),
        planned=len(entries),
        rows=rows,
        columns=header.shape[1],
        started=started,
    )

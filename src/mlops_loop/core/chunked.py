"""Big parquet batches a slice at a time: storing, validating, scoring and segment drift.

A batch of tens of millions of rows need not be in memory as a whole. Each function here reads
the parquet file `chunk_rows` rows at a time (pyarrow slices row groups), so the memory a step
needs grows with the slice, not with the batch. Results equal those of the in-memory functions
on `pandas.read_parquet(path)`:

- `validate_parquet` runs the quality suite on each slice and combines the per-slice counts GX
  reports (elements, missing, unexpected) into the verdict `validate_batch` gives the whole frame.
  Uniqueness needs every row at once, so each slice's rows (or ids) are hashed to 8 bytes and the
  repeats counted over all hashes (80 MB for 10M rows).
- `score_parquet` scores each slice and appends it to the scored file with a `ParquetWriter`.
- `store_parquet` copies a landed parquet file into the store without reading it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_loop.core.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

    from mlops_loop.core.config import LoopConfig
    from mlops_loop.core.quality import QualityResult

#: Rows read at a time when no size is given.
CHUNK_ROWS = 500_000
_SCHEMA_TYPES = frozenset({"ExpectColumnToExist", "ExpectTableColumnsToMatchSet"})
_UNIQUE_TYPES = frozenset({"ExpectColumnValuesToBeUnique", "ExpectCompoundColumnsToBeUnique"})
_ROW_COUNT = "ExpectTableRowCountToBeBetween"
_PARTIAL = 20  # unexpected values GX keeps per check in its SUMMARY format


# -- reading ---------------------------------------------------------------------------------------
def _open(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot be read as parquet: {e}") from e


def parquet_rows(path: str | Path) -> int:
    """The number of rows of a parquet file, from its footer.

    Raises:
        DataError: the file is missing or not parquet.
    """
    with _open(Path(path)) as parquet:
        return int(parquet.metadata.num_rows)


def parquet_columns(path: str | Path) -> list[str]:
    """The column names pandas gives a parquet file (index columns are not columns)."""
    with _open(Path(path)) as parquet:
        return [str(c) for c in parquet.schema_arrow.empty_table().to_pandas().columns]


def iter_parquet(
    path: str | Path, chunk_rows: int = CHUNK_ROWS, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """The file's rows `chunk_rows` at a time, each slice as `pandas.read_parquet` types it.

    Raises:
        DataError: the file is missing, not parquet, or a slice cannot be read.
    """
    import pyarrow as pa

    path = Path(path)
    with _open(path) as parquet:
        try:
            for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns):
                # A table keeps the schema's pandas metadata: dtypes and index as read_parquet.
                yield pa.Table.from_batches([batch]).to_pandas()
        except (OSError, ValueError, pa.ArrowException) as e:
            raise DataError(f"{path}: cannot be read as parquet: {e}") from e


def parquet_digest(path: str | Path, chunk_rows: int = CHUNK_ROWS) -> str:
    """`frame_digest(pandas.read_parquet(path))`, computed a slice at a time.

    Row hashes depend on each row alone, so hashing slice after slice gives the same bytes.
    """
    import hashlib

    from mlops_loop.core.data import frame_digest

    h = hashlib.sha256()
    started = False
    for chunk in iter_parquet(path, chunk_rows):
        if not started:
            h.update(",".join(map(str, chunk.columns)).encode())
            h.update(",".join(str(t) for t in chunk.dtypes).encode())
            started = True
        if len(chunk):
            rows = pd.util.hash_pandas_object(chunk, index=False).to_numpy()
            h.update(np.ascontiguousarray(rows).tobytes())
    if not started:  # no rows at all: the empty frame's digest
        with _open(Path(path)) as parquet:
            return frame_digest(parquet.schema_arrow.empty_table().to_pandas())
    return h.hexdigest()[:16]


class _Writer:
    """Appends frames to a parquet file written under a temporary name, renamed on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self._writer: Any = None
        self._schema: pa.Schema | None = None

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.Table.from_pandas(frame, preserve_index=False, schema=self._schema)
        except (pa.ArrowException, ValueError, TypeError) as e:
            raise DataError(
                f"a slice of {self.path.name} does not fit the types of the first slice "
                f"{self._schema}: {e}"
            ) from e
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self.tmp, table.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.tmp.unlink(missing_ok=True)


def store_parquet(
    source: str | Path, dest: str | Path, target: str, chunk_rows: int = CHUNK_ROWS
) -> dict[str, Any]:
    """Put a landed parquet batch into the store: `{"rows", "columns", "digest"}`.

    The file is copied as it is. A batch without its target column (labels land later) gets
    an all-missing float one, written a slice at a time, as the in-memory ingest adds it.

    Raises:
        DataError: the file is missing or not parquet.
    """
    source, dest = Path(source), Path(dest)
    columns = parquet_columns(source)
    rows = parquet_rows(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if target in columns:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    else:
        writer = _Writer(dest)
        try:
            for chunk in iter_parquet(source, chunk_rows):
                chunk[target] = np.nan
                writer.write(chunk)
            if rows == 0:  # no slice to write: the empty frame keeps the column types
                writer.write(pd.read_parquet(source).assign(**{target: np.nan}))
        except BaseException:
            writer.abort()
            raise
        writer.close()
        columns = [*columns, target]
    return {"rows": rows, "columns": len(columns), "digest": parquet_digest(dest, chunk_rows)}


# -- validation ------------------------------------------------------------------------------------
@dataclass
class _Outcome:
    """What `quality._incidents` reads of a GX validation result."""

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
        from mlops_loop.core.quality import _gx_error

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


def validate_parquet(
    path: str | Path,
    suite: dict,
    chunk_rows: int = CHUNK_ROWS,
    private: frozenset[str] | set[str] = frozenset(),
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

    Returns:
        The verdict, with the incidents and statistics `validate_batch` gives the whole frame.

    Raises:
        DataError: the file is missing or unreadable, or the suite is malformed.
    """
    from mlops_loop.core.quality import (
        TYPE_CHECK,
        _entries,
        _family,
        _frame,
        _incidents,
        _run_gx,
        _type_verdict,
        assemble_result,
        validate_batch,
    )

    started = time.perf_counter()
    path = Path(path)
    entries = _entries(suite)
    rows = parquet_rows(path)
    if rows == 0:
        return validate_batch(None, pd.read_parquet(path), suite=suite)
    with _open(path) as parquet:
        header = _frame(parquet.schema_arrow.empty_table().to_pandas(), "current batch")
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
            e["kwargs"].get("ignore_row_if", "never") if e["column"] is None else "any",
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
    for chunk in iter_parquet(path, chunk_rows):
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
        by_entry, _ = _run_gx(chunk, run) if run else ({}, None)
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
            frame = pd.read_parquet(path, columns=list(dict.fromkeys(named)) or None)
        except Exception as err:  # pyarrow raises many unrelated types
            raise DataError(
                f"{path}: cannot read the columns {named} of suite entry {n}: {err}"
            ) from err
        outcomes.update(_run_gx(_frame(frame, "current batch"), {n: e})[0])
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
    return assemble_result(
        found,
        evaluated=len(typed) + len(to_gx),
        planned=len(entries),
        rows=rows,
        columns=header.shape[1],
        started=started,
    )


# -- scoring ---------------------------------------------------------------------------------------
def score_parquet(
    score: Callable[[pd.DataFrame], np.ndarray],
    path: str | Path,
    out: str | Path,
    prediction: str,
    chunk_rows: int = CHUNK_ROWS,
    call_rows: int = 10_000,
    single_rows: int = 50,
) -> dict[str, Any]:
    """Score a parquet batch a slice at a time, appending each scored slice to `out`.

    `score` is called on `call_rows` rows at a time and timed, as `timed_scoring` does for a
    frame; the figures have the same keys, plus the seconds spent reading and writing.

    Raises:
        DataError: the batch cannot be read, or a scored slice does not fit the first one's types.
    """
    from mlops_loop.core.operations import _percentiles

    path, out = Path(path), Path(out)
    n = parquet_rows(path)
    singles: Any = (
        np.linspace(0, n - 1, min(single_rows, n)).astype(int) if n and single_rows else []
    )
    chunk_ms: list[float] = []
    per_row_ms: list[float] = []
    single_ms: list[float] = []
    scoring_s, lo = 0.0, 0
    started = time.perf_counter()
    writer = _Writer(out)
    try:
        for frame in iter_parquet(path, chunk_rows):
            parts = []
            for start in range(0, len(frame), call_rows):
                part = frame.iloc[start : start + call_rows]
                t0 = time.perf_counter()
                parts.append(np.asarray(score(part), dtype=float))
                ms = (time.perf_counter() - t0) * 1e3
                chunk_ms.append(ms)
                per_row_ms.append(ms / len(part))
                scoring_s += ms / 1e3
            for i in (i for i in singles if lo <= i < lo + len(frame)):
                t0 = time.perf_counter()
                score(frame.iloc[[i - lo]])
                single_ms.append((time.perf_counter() - t0) * 1e3)
            frame[prediction] = np.concatenate(parts) if parts else np.empty(0)
            writer.write(frame)
            lo += len(frame)
            del frame, parts
        if n == 0:
            empty = pd.read_parquet(path)
            empty[prediction] = np.empty(0)
            writer.write(empty)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return {
        "rows": n,
        "scoring_s": scoring_s,
        "throughput_rows_per_s": n / scoring_s if scoring_s > 0 else None,
        "chunk_rows": call_rows,
        "chunk_latency_ms": _percentiles(chunk_ms),
        "row_latency_in_batch_ms": _percentiles(per_row_ms),
        "single_row_latency_ms": _percentiles(single_ms),
        "read_write_s": time.perf_counter() - started - scoring_s - sum(single_ms) / 1e3,
    }


# -- drift per segment -----------------------------------------------------------------------------
def segment_drift_parquet(
    config: LoopConfig, reference: pd.DataFrame, path: str | Path, chunk_rows: int = CHUNK_ROWS
) -> list[dict[str, Any]]:
    """`segments.segment_drift(config, reference, pandas.read_parquet(path))`, a slice at a time.

    Each segment column splits the batch, slice by slice, into one temporary parquet file per
    value, and each file is drift-tested column by column against the reference's rows of that
    value.
    """
    from mlops_loop.core.drift import evaluate_drift_parquet
    from mlops_loop.core.segments import segment_rows

    path = Path(path)
    n_rows, columns = parquet_rows(path), set(parquet_columns(path))
    rows: list[dict[str, Any]] = []
    for seg in config.columns.segments:
        if seg not in columns or seg not in reference.columns:
            continue
        ref_values = reference[seg].astype(str)
        ref_counts = ref_values.value_counts()
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".segments-") as tmp:
            writers: dict[str, _Writer] = {}
            cur_counts: dict[str, int] = {}
            try:
                for chunk in iter_parquet(path, chunk_rows):
                    values = chunk[seg].astype(str)
                    for value, part in chunk.groupby(values, sort=False):
                        value = str(value)
                        cur_counts[value] = cur_counts.get(value, 0) + len(part)
                        if value not in writers:
                            writers[value] = _Writer(Path(tmp) / f"{len(writers)}.parquet")
                        writers[value].write(part)
            finally:
                for w in writers.values():
                    w.close()

            def judge(value: str, ref: pd.Series = ref_values, files: dict = writers) -> Any:
                return evaluate_drift_parquet(
                    reference[ref == value], files[value].path, config=config
                )

            rows += segment_rows(
                seg, ref_counts.to_dict(), cur_counts, len(reference), n_rows, judge
            )
    return rows

"""A batch checked against a suite with Great Expectations, in memory.

Great Expectations is imported inside `_run_gx` only: the import takes seconds, and most users
of this package (CLI, loading Dagster definitions) never validate.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.errors import DataError
from mlops_loop.core.quality.bounds import resolve_entries
from mlops_loop.core.quality.incidents import _incidents, _type_incidents
from mlops_loop.core.quality.renames import merge_renames
from mlops_loop.core.quality.result import Incident, QualityResult
from mlops_loop.core.quality.spec import TYPE_CHECK, _entries, _frame
from mlops_loop.core.quality.suite import build_suite
from mlops_loop.core.quality.vectorized import comparable, evaluate

#: A suite of up to this many entries runs through GX whole, so its Data Docs page lists every
#: check. A larger one (a wide frame: GX pays milliseconds per check) is judged in pandas first,
#: and GX reruns the checks that failed, for its own result and report.
GX_WHOLE_ENTRIES = 100
#: A batch of this many rows or more is judged in pandas first too, whatever its width: GX
#: hashes the whole frame and walks its metric graph, seconds on a million rows, where the
#: same checks in pandas take a fraction of one (`benchmarks/quality_width.py`). Its Data Docs
#: page then lists the checks that failed; the loop's own report (`to_html`) lists every one.
GX_WHOLE_ROWS = 200_000
#: Failed checks GX reruns at most; past these the pandas outcome, in GX's fields, is worded.
GX_FAILED_ENTRIES = 50
#: Checks judged in pandas first at any width: GX finds repeated rows by factorizing every
#: column (seconds on a million rows), pandas by hashing the rows first.
PANDAS_FIRST = frozenset({"ExpectCompoundColumnsToBeUnique"})


def _run_gx(frame: pd.DataFrame, entries: dict[int, dict]) -> tuple[dict[int, Any], Any]:
    """Validate `frame` against the given entries: GX results keyed by entry index, and the
    whole GX validation result."""
    import great_expectations as gx  # lazy: the import takes seconds
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # tqdm floods logs
    batch = (
        context.data_sources.add_pandas("mlops_loop")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(name="quality_gate")
    for n, e in entries.items():
        cls = getattr(gx.expectations, str(e["type"]), None)
        if not (isinstance(cls, type) and issubclass(cls, gx.expectations.Expectation)):
            raise DataError(f"suite entry {n}: {e['type']!r} is not a GX expectation class")
        kwargs = e["kwargs"]
        named = kwargs.get("column_list")
        if e["type"] == "ExpectCompoundColumnsToBeUnique" and isinstance(named, list):
            if len(named) == 1 and kwargs.get("ignore_row_if") != "never":
                # GX wants two columns or more: rows of one column repeat when its values do.
                cls = gx.expectations.ExpectColumnValuesToBeUnique
                kwargs = {"column": named[0], "mostly": kwargs.get("mostly", 1.0)}
        try:
            # The kind and severity are read back by the Data Docs page (`docs`).
            meta = {
                **kwargs.get("meta", {}),
                "spec_index": n,
                "kind": e["kind"],
                "severity": e["severity"],
            }
            suite.add_expectation(cls(**{**kwargs, "meta": meta}))
        except (TypeError, ValueError) as err:
            raise DataError(f"suite entry {n} ({e['type']}) has invalid kwargs: {err}") from err
    result = batch.validate(suite, result_format="SUMMARY")
    by_entry = {
        r.expectation_config.meta["spec_index"]: r
        for r in result.results
        if r.expectation_config is not None and r.expectation_config.meta is not None
    }
    return by_entry, result


def _evaluate(frame: pd.DataFrame, entries: dict[int, dict]) -> tuple[dict[int, Any], Any]:
    """`_run_gx` on the frame, with wide suites (and PANDAS_FIRST checks) judged in pandas
    first: results keyed by entry index, and GX's validation result (None if GX ran nothing)."""
    frame = comparable(frame, entries)
    first = entries
    if len(entries) <= GX_WHOLE_ENTRIES and len(frame) < GX_WHOLE_ROWS:
        first = {n: e for n, e in entries.items() if e["type"] in PANDAS_FIRST}
    outcomes: dict[int, Any] = dict(evaluate(frame, first)) if first else {}
    failed = [n for n in sorted(outcomes) if not outcomes[n].success][:GX_FAILED_ENTRIES]
    rerun = {n: e for n, e in entries.items() if n not in outcomes or n in failed}
    if not rerun:
        return outcomes, None
    by_entry, result = _run_gx(_narrowed(frame, rerun) if first is entries else frame, rerun)
    return {**outcomes, **by_entry}, result


def _narrowed(frame: pd.DataFrame, entries: dict[int, dict]) -> pd.DataFrame:
    """The columns the entries read, when each names them: GX reads column metadata of the
    whole frame for every check, which on thousands of columns costs more than the check."""
    named: list[str] = []
    for e in entries.values():
        kw = e["kwargs"]
        columns = [kw.get(k) for k in ("column", "column_A", "column_B")] + list(
            kw.get("column_list") or []
        )
        columns = [c for c in columns if isinstance(c, str)]
        if not columns and e["type"] != "ExpectTableRowCountToBeBetween":
            return frame  # a check of the whole table (its column set, a count): all of it
        named += columns
    present = [c for c in dict.fromkeys(named) if c in frame.columns]
    return frame[present] if present else frame


def validate_batch(
    reference: pd.DataFrame | None,
    current: pd.DataFrame,
    config: LoopConfig | None = None,
    suite: dict | None = None,
) -> QualityResult:
    """Check a batch against a suite (learnt from `reference` when not given) with GX.

    Checks on a column the batch lacks, or whose type is wrong, are skipped: the missing_column
    or type_mismatch incident says it all. An empty batch is checked for columns and rows only.
    Learnt bounds are resolved for the batch's row count (`bounds.resolve_entries`); a missing
    column that reappears under a new name is one `renamed_column` incident.

    Args:
        reference: The reference frame; only used when `suite` is None.
        current: The batch to judge.
        config: Supplies column roles and the quality policy when learning the suite.
        suite: A spec from `build_suite`, possibly loaded back from JSON.

    Returns:
        The verdict, with one incident per problem in suite order.

    Raises:
        DataError: `current` is not a DataFrame, there is neither a reference nor a suite, or
            the suite is malformed.
    """
    started = time.perf_counter()
    current = _frame(current, "current batch")
    if suite is None:
        if reference is None:
            raise DataError("validate_batch needs a reference frame or a suite; got neither")
        suite = build_suite(
            reference, config.columns if config else None, config.quality if config else None
        )
    # Learnt bounds are resolved for this batch's size; old suites' kwargs are used as they are.
    entries = resolve_entries(_entries(suite), len(current))
    present, empty = set(current.columns), current.empty
    typed = [
        n
        for n, e in enumerate(entries)
        if e["type"] == TYPE_CHECK and e["column"] in present and not empty
    ]
    found = {n: hit for n in typed if (hit := _type_incidents(entries[n], current))}
    # Range, domain and null checks on a missing or mistyped column would only repeat the
    # incident already found (or crash inside GX), so they are skipped.
    wrong_type = {entries[n]["column"] for n in found}
    to_gx = {
        n: e
        for n, e in enumerate(entries)
        if e["type"] != TYPE_CHECK
        # A check over several columns needs them all (a missing one is reported already).
        and set(e["kwargs"].get("column_list", [])) <= present
        and not (empty and "column_list" in e["kwargs"])
        and (
            e["column"] is None
            or e["type"] == "ExpectColumnToExist"
            or (e["column"] in present and e["column"] not in wrong_type and not empty)
        )
    }
    by_entry, gx_result = _evaluate(current, to_gx) if to_gx else ({}, None)
    private = frozenset(config.columns.private if config else ())
    if private:
        gx_result = None  # GX's own pages list unexpected values
    for n, result in by_entry.items():
        if not result.success:
            found[n] = _incidents(entries[n], result, private)
    found = merge_renames(found, entries, lambda name: current[name])
    return assemble_result(
        found,
        evaluated=len(typed) + len(to_gx),
        planned=len(entries),
        rows=len(current),
        columns=current.shape[1],
        started=started,
        gx_result=gx_result,
    )


def assemble_result(
    found: dict[int, list[Incident]],
    *,
    evaluated: int,
    planned: int,
    rows: int,
    columns: int,
    started: float,
    gx_result: Any = None,
) -> QualityResult:
    """The verdict from the incidents found per suite entry (in memory or slice by slice)."""
    # Blocking incidents first, each group in suite order, so summaries lead with what matters.
    incidents = sorted(
        (i for n in sorted(found) for i in found[n]), key=lambda i: i.severity != "error"
    )
    statistics = {
        "rows": rows,
        "columns": columns,
        "expectations_evaluated": evaluated,
        "expectations_skipped": planned - evaluated,
        "expectations_failed": len(found),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return QualityResult(
        success=not any(i.severity == "error" for i in incidents),
        incidents=incidents,
        statistics=statistics,
        gx_result=gx_result,
    )

"""The data-quality gate: learn a suite from the reference, check batches with Great Expectations.

A suite is a plain JSON-serialisable spec, stored next to the reference snapshot, so a batch can
be judged without the reference. Each entry names the incident kind it guards, its severity and
the GX expectation class that checks it, with that class's keyword arguments. One entry type is
not GX: `DtypeFamily` is checked in pandas, because GX's type expectations compare dtype names and
pandas 3 stores strings as `str`, which they do not expect.

Great Expectations is imported inside `validate_batch` only: the import takes seconds, and most
users of this module (CLI, loading Dagster definitions) never validate.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from mlops_loop.core.config import ColumnsConfig, LoopConfig, QualityPolicy
from mlops_loop.core.data import require_columns
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
)
#: Share of a column's non-null values that must lie inside the learnt range. The slack keeps the
#: heavy tail of a large batch from failing a range learnt on a smaller reference; a unit change
#: moves nearly every value, so it still fails.
RANGE_MOSTLY = 0.99
#: An inferred categorical column with more distinct values than this share of its rows looks
#: like an identifier or free text: a learnt domain would flag every new value.
ID_LIKE_SHARE = 0.5
TYPE_CHECK = "DtypeFamily"
# Extra columns and repeated ids leave the batch usable; everything else blocks.
_WARN_KINDS = frozenset({"unexpected_column", "duplicate_rows"})
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


@dataclass(frozen=True)
class Incident:
    """One failed check: what kind, on which column, how bad, what was seen and expected."""

    kind: str
    column: str | None
    severity: str
    observed: Any
    expected: Any
    message: str

    def to_dict(self) -> dict:
        """The incident as plain JSON types."""
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class QualityResult:
    """The verdict on one batch: success is False iff some incident has severity "error"."""

    success: bool
    incidents: list[Incident]
    statistics: dict
    schema_version: str = SCHEMA_VERSION
    # The Great Expectations validation result, for its Data Docs page; not part of the JSON.
    gx_result: Any = field(default=None, repr=False, compare=False)

    def data_docs_html(self) -> str | None:
        """The GX Data Docs page of this validation (None if GX ran no expectation).

        Data Docs pages load their styles from public CDNs, as GX's own sites do; `to_html()`
        is the self-contained report.
        """
        if self.gx_result is None:
            return None
        from great_expectations.render.renderer import ValidationResultsPageRenderer
        from great_expectations.render.view import DefaultJinjaPageView

        return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(self.gx_result))

    def to_dict(self) -> dict:
        """`{"schema_version", "success", "incidents", "statistics"}`, JSON-serialisable."""
        return {
            "schema_version": self.schema_version,
            "success": self.success,
            "incidents": [i.to_dict() for i in self.incidents],
            "statistics": _jsonable(self.statistics),
        }

    def _summary(self) -> str:
        s = self.statistics
        errors = sum(i.severity == "error" for i in self.incidents)
        return (
            f"{s.get('rows', '?')} rows, {s.get('columns', '?')} columns; "
            f"{s.get('expectations_evaluated', '?')} checks, {errors} error(s), "
            f"{len(self.incidents) - errors} warning(s)"
        )

    def to_markdown(self) -> str:
        """A one-line verdict and an incident table, for Dagster metadata."""
        verdict = "PASSED" if self.success else "FAILED"
        lines = [f"**Data quality {verdict}**: {self._summary()}.", ""]
        if not self.incidents:
            return "\n".join([*lines, "No incidents."])
        lines += ["| severity | kind | column | message |", "|---|---|---|---|"]
        for i in self.incidents:
            cells = (i.severity, i.kind, i.column or "", i.message)
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)

    def to_html(self) -> str:
        """A self-contained page (inline CSS, no assets): the verdict, then the incidents."""
        verdict, colour = ("PASSED", "#1a7f37") if self.success else ("FAILED", "#cf222e")
        rows = "".join(
            f"<tr class='{i.severity}'><td>{i.severity}</td><td>{html.escape(i.kind)}</td>"
            f"<td>{html.escape(i.column or '')}</td><td>{html.escape(i.message)}</td>"
            f"<td><code>{html.escape(json.dumps(_jsonable(i.observed)))}</code></td>"
            f"<td><code>{html.escape(json.dumps(_jsonable(i.expected)))}</code></td></tr>"
            for i in self.incidents
        )
        table = (
            "<table><thead><tr><th>Severity</th><th>Kind</th><th>Column</th><th>Message</th>"
            f"<th>Observed</th><th>Expected</th></tr></thead><tbody>{rows}</tbody></table>"
            if self.incidents
            else "<p>No incidents.</p>"
        )
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Data quality: {verdict}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; }}
.verdict {{ font-size: 1.6rem; font-weight: 700; color: #fff; background: {colour};
  padding: .6rem 1rem; border-radius: 6px; display: inline-block; }}
table {{ border-collapse: collapse; margin-top: 1rem; width: 100%; }}
th, td {{ border: 1px solid #d0d7de; padding: .4rem .6rem; text-align: left; vertical-align: top; }}
th {{ background: #f6f8fa; }} tr.error td:first-child {{ color: #cf222e; font-weight: 600; }}
tr.warn td:first-child {{ color: #9a6700; font-weight: 600; }} code {{ font-size: .85rem; }}
</style></head><body>
<div class="verdict">Data quality {verdict}</div>
<p>{html.escape(self._summary())}.</p>
{table}
</body></html>
"""


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
        if pd.to_datetime(sample, errors="coerce", format="ISO8601").notna().all():
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


def _sorted_values(values: Any) -> list:
    return sorted(_jsonable(list(values)), key=lambda v: (type(v).__name__, v))


def build_suite(
    reference: pd.DataFrame,
    columns: ColumnsConfig | None = None,
    policy: QualityPolicy | None = None,
) -> dict:
    """Learn a JSON-serialisable suite spec from the reference frame.

    Args:
        reference: The frame that defines good data.
        columns: Column roles; only features get range/domain checks. When None, numeric
            columns count as numerical features and the others (bar dates) as categorical.
        policy: Tolerances; defaults to `QualityPolicy()`.

    Returns:
        `{"schema_version": "1", "expectations": [{"kind", "column", "severity", "type",
        "kwargs"}, ...]}`.

    Raises:
        DataError: the reference is not a DataFrame, has no rows, or lacks a configured column.
    """
    reference = _frame(reference, "reference")
    if reference.empty:
        raise DataError("reference has no rows: a quality suite cannot be learnt from it")
    policy = policy or QualityPolicy()
    names = list(reference.columns)
    families = {c: _family(reference[c]) for c in names}
    target = id_column = None
    if columns is not None:
        roles = [*columns.features, columns.target, *filter(None, [columns.id, columns.timestamp])]
        require_columns(reference, roles, "reference")
        numerical, categorical = set(columns.numerical), set(columns.categorical)
        target, id_column = columns.target, columns.id
    else:
        # Increasing unique integers are a row id or counter: every new batch leaves their range.
        numerical = {
            c
            for c in names
            if families[c] == "numeric"
            and not (
                infer_dtype(reference[c]) == "integer"
                and reference[c].is_unique
                and reference[c].is_monotonic_increasing
            )
        }
        categorical = {c for c in names if families[c] not in ("numeric", "datetime", "timedelta")}
    entries: list[dict] = []

    def add(
        kind: str, column: str | None, type_: str, severity: str | None = None, **kwargs: Any
    ) -> None:
        kwargs = {"column": column, **kwargs} if column is not None else kwargs
        entries.append(
            {
                "kind": kind,
                "column": column,
                "severity": severity or ("warn" if kind in _WARN_KINDS else "error"),
                "type": type_,
                "kwargs": _jsonable(kwargs),
            }
        )

    for c in names:
        add("missing_column", c, "ExpectColumnToExist")
    add(
        "unexpected_column",
        None,
        "ExpectTableColumnsToMatchSet",
        column_set=names,
        exact_match=True,
    )
    # An empty batch can be judged on nothing, so it never passes, even with min_rows=0.
    add(
        "row_count",
        None,
        "ExpectTableRowCountToBeBetween",
        min_value=max(policy.min_rows, 1),
        max_value=policy.max_rows,
    )
    # A replayed export repeats whole rows; a few repeats happen in real data.
    add(
        "duplicate_rows",
        None,
        "ExpectCompoundColumnsToBeUnique",
        severity="error",
        column_list=names,
        mostly=round(1 - policy.duplicate_share, 6),
    )
    for c in names:
        s, family = reference[c], families[c]
        if family is not None:
            add("type_mismatch", c, TYPE_CHECK, family=family)
        allowed = float(s.isna().mean()) + policy.null_rate_margin
        # Labels arrive late and partly; RetrainPolicy.min_labelled_rows judges that, not us.
        if c != target and allowed < 1:
            add(
                "null_rate",
                c,
                "ExpectColumnValuesToNotBeNull",
                mostly=math.floor((1 - allowed) * 1e6) / 1e6,
            )
        if c == target and family in ("numeric", "boolean"):
            labels = [0, 1] if family == "numeric" else [False, True]
            add("unseen_category", c, "ExpectColumnValuesToBeInSet", value_set=labels)
        elif c in numerical and family == "numeric":
            lo, hi = float(s.min()), float(s.max())
            # A constant column has no range; widen by its magnitude so it is not a point.
            span = (hi - lo) or max(abs(hi), 1.0)
            m = policy.range_margin
            add(
                "out_of_range",
                c,
                "ExpectColumnValuesToBeBetween",
                min_value=lo - m * span,
                max_value=hi + m * span,
                mostly=RANGE_MOSTLY,
            )
        elif c in categorical and family is not None:
            values = s.dropna().unique()
            id_like = len(values) > max(50, ID_LIKE_SHARE * s.notna().sum())
            if columns is not None or not id_like:
                add(
                    "unseen_category",
                    c,
                    "ExpectColumnValuesToBeInSet",
                    value_set=_sorted_values(values),
                    mostly=1 - policy.unseen_category_share,
                )
        if c == id_column and s.notna().all() and s.is_unique:
            add("duplicate_rows", c, "ExpectColumnValuesToBeUnique")
    for custom in policy.expectations:
        others = {k: v for k, v in custom.kwargs.items() if k != "column"}
        add("custom", custom.kwargs.get("column"), custom.type, severity=custom.severity, **others)
    return {"schema_version": SCHEMA_VERSION, "expectations": entries}


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
        try:
            meta = {**e["kwargs"].get("meta", {}), "spec_index": n}
            suite.add_expectation(cls(**{**e["kwargs"], "meta": meta}))
        except (TypeError, ValueError) as err:
            raise DataError(f"suite entry {n} ({e['type']}) has invalid kwargs: {err}") from err
    result = batch.validate(suite, result_format="SUMMARY")
    by_entry = {
        r.expectation_config.meta["spec_index"]: r
        for r in result.results
        if r.expectation_config is not None and r.expectation_config.meta is not None
    }
    return by_entry, result


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
    raw = _jsonable(res.get("partial_unexpected_list", []))
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


def validate_batch(
    reference: pd.DataFrame | None,
    current: pd.DataFrame,
    config: LoopConfig | None = None,
    suite: dict | None = None,
) -> QualityResult:
    """Check a batch against a suite (learnt from `reference` when not given) with GX.

    Checks on a column the batch lacks, or whose type is wrong, are skipped: the missing_column
    or type_mismatch incident says it all. An empty batch is checked for columns and rows only.

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
    entries = _entries(suite)
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
    by_entry, gx_result = _run_gx(current, to_gx) if to_gx else ({}, None)
    private = frozenset(config.columns.private if config else ())
    if private:
        gx_result = None  # GX's own pages list unexpected values
    for n, result in by_entry.items():
        if not result.success:
            found[n] = _incidents(entries[n], result, private)
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

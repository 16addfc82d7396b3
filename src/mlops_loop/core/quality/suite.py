"""A suite learnt from the reference: one entry per check, named by the incident it guards."""

from __future__ import annotations

from typing import Any

import pandas as pd
from pandas.api.types import infer_dtype

from mlops_loop.core.config import ColumnsConfig, QualityPolicy
from mlops_loop.core.data import require_columns
from mlops_loop.core.errors import DataError
from mlops_loop.core.quality.bounds import resolve_entries, row_histogram
from mlops_loop.core.quality.ranges import FLOAT_MAX, finite_range, is_clock, time_range
from mlops_loop.core.quality.spec import SCHEMA_VERSION, TYPE_CHECK, _family, _frame, _jsonable

#: Share of a column's non-null values that must lie inside the learnt range at most (the
#: bound learnt at the batch's size may ask less). The slack keeps the heavy tail of a large
#: batch from failing a range learnt on a smaller reference; a unit change moves nearly every
#: value, so it still fails.
RANGE_MOSTLY = 0.99
#: Values whose shares a column's profile keeps, to recognise it under another name.
PROFILE_VALUES = 50
#: An inferred categorical column with more distinct values than this share of its rows looks
#: like an identifier or free text: a learnt domain would flag every new value.
ID_LIKE_SHARE = 0.5
# Extra columns and repeated ids leave the batch usable; everything else blocks.
_WARN_KINDS = frozenset({"unexpected_column", "duplicate_rows"})


def _sorted_values(values: Any) -> list:
    return sorted(_jsonable(list(values)), key=lambda v: (type(v).__name__, v))


def _profile(s: pd.Series, family: str | None) -> dict:
    """What a column looks like, to recognise it when it arrives under another name."""
    values = s.dropna()
    profile: dict[str, Any] = {"family": family, "null_rate": float(s.isna().mean())}
    # Complex numbers have no order, so no quantiles.
    if family == "numeric" and len(values) and values.dtype.kind != "c":
        profile["quantiles"] = [float(q) for q in values.quantile([i / 10 for i in range(11)])]
    elif family in ("string", "boolean", "mixed") and len(values):
        shares = values.value_counts(normalize=True).head(PROFILE_VALUES)
        profile["shares"] = [[_jsonable(v), float(p)] for v, p in shares.items()]
    return profile


def _learnt_bounds(entries: list[dict], policy: QualityPolicy) -> None:
    """Split the policy's error rate between the learnt bounds."""
    bounded = [e for e in entries if e.get("learnt") and e["kind"] != "missing_column"]
    for e in bounded:
        e["learnt"]["alpha"] = policy.error_rate / len(bounded)


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
        `{"schema_version": "2", "expectations": [{"kind", "column", "severity", "type",
        "kwargs", "learnt"?}, ...]}`: `learnt` holds what a bound was learnt from, resolved
        for each batch's size by `bounds.resolve_entries`.

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
    private = set(columns.private) if columns is not None else set()
    # A datetime feature gets a range in time; inferred, increasing unique times are a clock.
    timed = (
        numerical | categorical
        if columns is not None
        else {c for c in names if families[c] == "datetime" and not is_clock(reference[c])}
    )
    entries: list[dict] = []

    def add(
        kind: str,
        column: str | None,
        type_: str,
        severity: str | None = None,
        learnt: dict | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs = {"column": column, **kwargs} if column is not None else kwargs
        entry = {
            "kind": kind,
            "column": column,
            "severity": severity or ("warn" if kind in _WARN_KINDS else "error"),
            "type": type_,
            "kwargs": _jsonable(kwargs),
        }
        if learnt is not None:
            entry["learnt"] = _jsonable(learnt)
        entries.append(entry)

    rows = len(reference)
    for c in names:
        profile = None if c in private else {"profile": _profile(reference[c], families[c])}
        add("missing_column", c, "ExpectColumnToExist", learnt=profile)
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
        learnt={"min_rows": max(policy.min_rows, 1), "max_rows": policy.max_rows},
        min_value=max(policy.min_rows, 1),
        max_value=policy.max_rows,
    )
    # A replayed export repeats whole rows; how many repeat naturally depends on the batch's
    # size and on how many distinct rows the reference has, and how often each occurs.
    add(
        "duplicate_rows",
        None,
        "ExpectCompoundColumnsToBeUnique",
        severity="error",
        learnt={
            "rows": rows,
            "histogram": row_histogram(reference),
            # With columns.id (or columns.timestamp) unique in the reference, a repeated row
            # is a replay whatever the other columns look like.
            "unique_key": any(
                k is not None and reference[k].notna().all() and reference[k].is_unique
                for k in (id_column, columns.timestamp if columns is not None else None)
            ),
            "margin": policy.duplicate_share,
        },
        column_list=names,
        mostly=round(1 - policy.duplicate_share, 6),
    )
    for c in names:
        s, family = reference[c], families[c]
        nulls = int(s.isna().sum())
        present = {"values": rows - nulls, "null_rate": nulls / rows}
        if family is not None:
            add("type_mismatch", c, TYPE_CHECK, family=family)
        # Labels arrive late and partly; RetrainPolicy.min_labelled_rows judges that, not us.
        if c != target and nulls < rows:
            learnt = {"rows": rows, "nulls": nulls, "margin": policy.null_rate_margin}
            add("null_rate", c, "ExpectColumnValuesToNotBeNull", learnt=learnt, mostly=0.0)
        if c == target and (task := _target_task(columns, family)) != "regression":
            # A label that is none of the classes the model knows is an incident on the target.
            if columns is not None and columns.classes:
                labels = list(columns.classes)
            else:
                labels = [0, 1] if family == "numeric" else [False, True]
            if task is not None:
                add("unseen_category", c, "ExpectColumnValuesToBeInSet", value_set=labels)
        elif (
            (c in numerical or (c == target and _target_task(columns, family) == "regression"))
            and family == "numeric"
            and (finite := finite_range(s))
        ):
            lo, hi = finite  # infinities count as out of range; no finite value, no range
            # A constant column has no range; widen by its magnitude so it is not a point.
            span = (hi - lo) or max(abs(hi), 1.0)
            m = policy.range_margin
            add(
                "out_of_range",
                c,
                "ExpectColumnValuesToBeBetween",
                learnt=present,
                min_value=max(lo - m * span, -FLOAT_MAX),
                max_value=min(hi + m * span, FLOAT_MAX),
                mostly=RANGE_MOSTLY,
            )
        elif c in timed and family == "datetime" and (times := time_range(s, policy.range_margin)):
            add(
                "out_of_range",
                c,
                "ExpectColumnValuesToBeBetween",
                min_value=times[0],
                max_value=times[1],
                mostly=RANGE_MOSTLY,
            )
        elif c in categorical and family is not None:
            counts = s.value_counts(dropna=True)
            id_like = len(counts) > max(50, ID_LIKE_SHARE * s.notna().sum())
            if columns is not None or not id_like:
                # Good-Turing: values seen once estimate the mass of values never seen.
                learnt = {
                    **present,
                    "singletons": int((counts == 1).sum()),
                    "doubletons": int((counts == 2).sum()),
                    "margin": policy.unseen_category_share,
                }
                add(
                    "unseen_category",
                    c,
                    "ExpectColumnValuesToBeInSet",
                    learnt=learnt,
                    value_set=_sorted_values(counts.index),
                    mostly=1 - policy.unseen_category_share,
                )
        if c == id_column and s.notna().all() and s.is_unique:
            add("duplicate_rows", c, "ExpectColumnValuesToBeUnique")
    for custom in policy.expectations:
        others = {k: v for k, v in custom.kwargs.items() if k != "column"}
        add("custom", custom.kwargs.get("column"), custom.type, severity=custom.severity, **others)
    _learnt_bounds(entries, policy)
    # Concrete at the reference's own size; validation resolves them for each batch's size.
    return {"schema_version": SCHEMA_VERSION, "expectations": resolve_entries(entries, rows)}


def _target_task(columns: Any, family: str | None) -> str | None:
    """The task whose labels the target's check knows: the config's, else binary for a 0/1 or
    boolean target (a suite learnt without a config); None: no label check."""
    task = getattr(columns, "task", None)
    if task is not None:
        return str(task)
    return "binary" if family in ("numeric", "boolean") else None

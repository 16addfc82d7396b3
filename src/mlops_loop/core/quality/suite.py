"""A suite learnt from the reference: one entry per check, named by the incident it guards."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from pandas.api.types import infer_dtype

from mlops_loop.core.config import ColumnsConfig, QualityPolicy
from mlops_loop.core.data import require_columns
from mlops_loop.core.errors import DataError
from mlops_loop.core.quality.spec import SCHEMA_VERSION, TYPE_CHECK, _family, _frame, _jsonable

#: Share of a column's non-null values that must lie inside the learnt range. The slack keeps the
#: heavy tail of a large batch from failing a range learnt on a smaller reference; a unit change
#: moves nearly every value, so it still fails.
RANGE_MOSTLY = 0.99
#: An inferred categorical column with more distinct values than this share of its rows looks
#: like an identifier or free text: a learnt domain would flag every new value.
ID_LIKE_SHARE = 0.5
# Extra columns and repeated ids leave the batch usable; everything else blocks.
_WARN_KINDS = frozenset({"unexpected_column", "duplicate_rows"})


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

"""A scoring request read: MLflow's scoring protocol parsed into columns, the feature columns
checked against the loop's schema. Every refusal is a `RequestError` with the HTTP status and
a JSON body naming what is wrong, never a 500."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.core.errors import MlopsLoopError

FORMATS = ("dataframe_split", "dataframe_records", "inputs")
_NUMBER = (int, float)
_NONE = type(None)


class RequestError(MlopsLoopError, ValueError):
    """A request the endpoint refuses: `status` is its HTTP answer, `body` its JSON."""

    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"error": error, **extra}


@dataclass(frozen=True)
class Table:
    """A request's rows, by column, in the order the columns came.

    `body` is the request's body when it is strict JSON on one line holding nothing but its
    columns (no `index`): `table_of(orjson.loads(body))` then gives these very columns again,
    so the prediction log may keep the body as it came instead of encoding the columns
    (`scoring.logged_payload`).
    """

    columns: dict[str, list[Any]]
    rows: int
    body: bytes | None = None


def parse_payload(body: bytes, max_rows: int) -> Table:
    """The request body's rows: `{"dataframe_split": {"columns": [...], "data": [[...]]}}`,
    `{"dataframe_records": [{...}]}`, `{"inputs": [{...}]}` or `{"inputs": {column: [...]}}`.

    Raises:
        RequestError: 400 for malformed JSON, an unknown shape or no rows; 413 for more rows
            than `max_rows`.
    """
    strict = True
    try:
        doc = orjson.loads(body)  # several times json.loads's speed on a 1,000-row body
    except ValueError:
        strict = False
        try:  # what orjson refuses and the standard library reads: NaN, Infinity
            doc = json.loads(body)
        except (UnicodeDecodeError, ValueError) as e:
            raise RequestError(400, f"the body is not valid JSON: {e}") from e
    table = table_of(doc, max_rows)
    if strict and b"\n" not in body and not _has_index(doc):
        return Table(table.columns, table.rows, bytes(body))
    return table


def _has_index(doc: dict[str, Any]) -> bool:
    split = doc.get("dataframe_split")
    return isinstance(split, dict) and "index" in split


def table_of(doc: Any, max_rows: int | None = None) -> Table:
    """The rows of a parsed request body (see `parse_payload`); `max_rows` None: no limit.

    Raises:
        RequestError: as `parse_payload`.
    """
    if not isinstance(doc, dict) or len(doc) != 1 or next(iter(doc)) not in FORMATS:
        got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise RequestError(
            400,
            f"expected a JSON object with exactly one of the keys {list(FORMATS)}, got {got}",
        )
    kind, value = next(iter(doc.items()))
    if kind == "dataframe_split":
        table = _split(value)
    elif isinstance(value, list):
        table = _records(value, kind)
    elif kind == "inputs" and isinstance(value, dict):
        table = _columns(value)
    else:
        shape = "a list of records" + (" or an object of columns" if kind == "inputs" else "")
        raise RequestError(400, f"{kind}: expected {shape}, got {type(value).__name__}")
    if table.rows == 0:
        raise RequestError(400, f"{kind}: no rows to score")
    if max_rows is not None and table.rows > max_rows:
        raise RequestError(
            413, f"{table.rows} rows in one request; at most {max_rows} (serving.max_rows)"
        )
    return table


def _names(columns: Any, kind: str) -> list[str]:
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise RequestError(400, f"{kind}: columns must be a list of column names")
    if len(set(columns)) != len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        raise RequestError(400, f"{kind}: columns {twice} appear more than once")
    return columns


def _split(value: Any) -> Table:
    if not isinstance(value, dict) or not {"columns", "data"} <= set(value):
        raise RequestError(400, 'dataframe_split: expected {"columns": [...], "data": [[...]]}')
    unknown = set(value) - {"columns", "data", "index"}
    if unknown:
        raise RequestError(400, f"dataframe_split: unknown keys {sorted(unknown)}")
    names = _names(value["columns"], "dataframe_split")
    data = value["data"]
    if not isinstance(data, list) or not all(
        isinstance(row, list) and len(row) == len(names) for row in data
    ):
        raise RequestError(
            400, f"dataframe_split: data must be a list of rows of {len(names)} values each"
        )
    if not data or not names:
        return Table({name: [] for name in names}, len(data))
    by_column = zip(*data, strict=True)
    return Table({name: list(v) for name, v in zip(names, by_column, strict=True)}, len(data))


def _records(records: list[Any], kind: str) -> Table:
    if not all(isinstance(r, dict) for r in records):
        raise RequestError(400, f"{kind}: every record must be a JSON object of column: value")
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    # A key absent from a record is a null there, as pandas reads records.
    columns = {name: [r.get(name) for r in records] for name in names}
    return Table(columns, len(records))


def _columns(value: dict[str, Any]) -> Table:
    lists = [v for v in value.values() if isinstance(v, list)]
    if not lists:  # one row given as {column: value}
        return Table({k: [v] for k, v in value.items()}, 1 if value else 0)
    lengths = {len(v) for v in lists}
    if len(lists) != len(value) or len(lengths) != 1:
        raise RequestError(
            400, "inputs: an object of columns needs a list of the same length for every column"
        )
    return Table({k: list(v) for k, v in value.items()}, lengths.pop())


@dataclass(frozen=True)
class Features:
    """The feature columns as arrays the loop's scorer takes, and what else the request had."""

    arrays: dict[str, np.ndarray]
    rows: int
    extra: list[str]  # columns the model ignores (id and timestamp are not extra)


def _shown(value: Any) -> str:
    """A value as JSON spells it: 'abc' quoted, true, null, 3."""
    if isinstance(value, str):
        return repr(value)
    return json.dumps(value, default=str)


def _numbers(values: list[Any]) -> tuple[np.ndarray | None, str | None]:
    kinds = set(map(type, values))
    if kinds <= {int, float, _NONE}:
        return np.array(values, dtype=float), None
    for row, v in enumerate(values):
        if v is not None and (type(v) is bool or not isinstance(v, _NUMBER)):
            return None, f"expected a number, got {_shown(v)} (row {row})"
    return np.array([None if v is None else float(v) for v in values], dtype=float), None


def _categories(values: list[Any]) -> tuple[np.ndarray | None, str | None]:
    kinds = set(map(type, values))
    if not kinds <= {str, _NONE}:
        # No numbers either: the text of 3 would be "3" here but "3.0" in a frame whose column
        # pandas made float, so the model would see another category than the loop's scorer.
        for row, v in enumerate(values):
            if v is not None and not isinstance(v, str):
                return None, f"expected a string, got {_shown(v)} (row {row})"
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out, None


def check_features(table: Table, columns: ColumnsConfig) -> Features:
    """The request's feature columns, each checked: numbers (or null) for a numerical
    column, strings (or null) for a categorical one.

    Raises:
        RequestError: 422 naming every missing or wrongly typed feature column.
    """
    problems: list[dict[str, str]] = []
    arrays: dict[str, np.ndarray] = {}
    for names, check in ((columns.numerical, _numbers), (columns.categorical, _categories)):
        for name in names:
            values = table.columns.get(name)
            if values is None:
                problems.append({"column": name, "problem": "missing"})
                continue
            array, problem = check(values)
            if problem is not None:
                problems.append({"column": name, "problem": problem})
            elif array is not None:
                arrays[name] = array
    if problems:
        named = ", ".join(p["column"] for p in problems)
        raise RequestError(422, f"feature columns not usable: {named}", columns=problems)
    known = {*columns.features, columns.id, columns.timestamp}
    extra = [c for c in table.columns if c not in known]
    return Features(arrays, table.rows, extra)


def json_number(value: float) -> float | None:
    """A float JSON can carry: NaN and infinities become null."""
    return value if math.isfinite(value) else None

"""A landed batch file of served rows: its columns, their types and its serving metadata.

The columns and their types are fixed by the loop's config (and the reference's types), never
by the rows a window happened to hold, so every file a server lands has the same schema and the
loop's quality gate sees the same dtypes in each.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa

from mlops_loop.core.config import ColumnsConfig, LoopConfig
from mlops_loop.core.privacy import hash_value, privacy_salt
from mlops_loop.core.served import ERROR_STATUSES, SCHEMA, SERVING_KEY
from mlops_loop.core.tasks import probability_columns
from mlops_loop.serving.request import RequestError, table_of
from mlops_loop.serving.wal_format import Entry, rows_of

Kind = Literal["int", "float", "string", "bool", "datetime"]
_ARROW: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "datetime": pa.timestamp("ns", tz="UTC"),
}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Privacy:
    """How private columns are masked: the columns, 'hash' or 'drop', and the salt."""

    private: tuple[str, ...] = ()
    privacy: str = "hash"
    salt: bytes | None = None

    @classmethod
    def of(cls, columns: ColumnsConfig) -> Privacy:
        """Raises: InvalidConfigError: hashing is chosen and the salt's variable is unset."""
        if not columns.private:
            return cls()
        salt = privacy_salt(columns) if columns.privacy == "hash" else None
        return cls(tuple(columns.private), columns.privacy, salt)

    def mask(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`rows` with every private value hashed or dropped (copies only rows it changes);
        nulls stay null, as `mask_private` leaves them. The sink is the one place a served
        row is masked: callers hand it raw rows, so nothing is hashed twice."""
        if not self.private:
            return rows
        out = rows
        for i, row in enumerate(rows):
            raw = [c for c in self.private if c in row and not self._masked(row[c])]
            if not raw:
                continue
            if out is rows:
                out = list(rows)
            fixed = dict(row)
            for c in raw:
                if self.privacy == "drop":
                    del fixed[c]
                else:
                    assert self.salt is not None
                    fixed[c] = hash_value(row[c], self.salt)
            out[i] = fixed
        return out

    def mask_columns(self, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """`mask` for rows given by column (a copy when a private column is there)."""
        present = [c for c in self.private if c in columns]
        if not present:
            return columns
        out = dict(columns)
        for c in present:
            if self.privacy == "drop":
                del out[c]
            else:
                assert self.salt is not None
                salt = self.salt
                out[c] = [None if v is None else hash_value(v, salt) for v in columns[c]]
        return out

    def _masked(self, value: Any) -> bool:
        if self.privacy == "drop":
            return False
        return value is None


def _kind_of_arrow(t: pa.DataType) -> Kind | None:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    return None


def reference_types(config: LoopConfig) -> dict[str, Kind]:
    """The kind of each column of the reference (its parquet schema, or the first rows of a
    CSV), so that served columns land with the types the loop learnt; {} when unreadable."""
    path = Path(config.sources.reference)
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            return {f.name: k for f in schema if (k := _kind_of_arrow(f.type))}
        sample = pd.read_csv(path, nrows=1000)
    except (OSError, ValueError, pa.ArrowException):
        return {}
    found: dict[str, Kind] = {}
    for name in sample.columns:
        k = _kind_of_arrow(pa.Array.from_pandas(sample[name]).type)
        if k:
            found[str(name)] = k
    return found


def _label_kind(classes: Sequence[Any] | None) -> Kind:
    if classes and all(isinstance(c, bool) for c in classes):
        return "bool"
    if classes and all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "int"
    if classes and all(isinstance(c, int | float) and not isinstance(c, bool) for c in classes):
        return "float"
    return "string"


@dataclass(frozen=True)
class LandedSchema:
    """The columns of every file a server lands, in order, with their kinds."""

    columns: tuple[tuple[str, Kind], ...]
    predictions: tuple[tuple[str, Kind], ...]
    shadow: bool
    privacy: Privacy
    heartbeat_seconds: float

    @classmethod
    def build(
        cls,
        columns: ColumnsConfig,
        types: Mapping[str, Kind] | None = None,
        shadow: bool = False,
        heartbeat_seconds: float = 1.0,
    ) -> LandedSchema:
        """Raises: InvalidConfigError: hashing is chosen and the salt's variable is unset."""
        types = dict(types or {})
        privacy = Privacy.of(columns)
        out: list[tuple[str, Kind]] = [(c, "float") for c in columns.numerical]
        out += [(c, types.get(c, "string")) for c in columns.categorical]
        if columns.id is not None:
            out.append((columns.id, types.get(columns.id, "string")))
        if columns.timestamp is not None:
            out.append((columns.timestamp, "datetime"))
        # Segments that are no feature: the loop slices served batches by them too.
        out += [(c, types.get(c, "string")) for c in columns.segments if c not in dict(out)]
        for i, (c, _) in enumerate(out):
            if c in privacy.private:  # a hashed value is text whatever it was
                out[i] = (c, "string")
        out = [(c, k) for c, k in out if c not in privacy.private or privacy.privacy == "hash"]
        if (columns.task or "binary") == "multiclass" and columns.classes:
            probs = probability_columns(columns.prediction, columns.classes)
            predictions = [(columns.prediction, _label_kind(columns.classes))]
            predictions += [(p, "float") for p in probs]
        else:
            predictions = [(columns.prediction, "float")]
        return cls(tuple(out), tuple(predictions), shadow, privacy, heartbeat_seconds)

    def kinds(self) -> list[tuple[str, Kind]]:
        """Every column of a landed file, in order, with its kind."""
        out: list[tuple[str, Kind]] = [
            ("request_id", "string"),
            ("row", "int"),
            ("served_at", "datetime"),
            *self.columns,
            *self.predictions,
            ("model_version", "int"),
            ("latency_ms", "float"),
        ]
        if self.shadow:
            out += [(f"shadow_{n}", k) for n, k in self.predictions]
            out.append(("shadow_version", "int"))
        return out

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(n, _ARROW[k]) for n, k in self.kinds()])


def _utc(value: Any) -> pd.Timestamp | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return pd.Timestamp(value, unit="s", tz="UTC")
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    if stamp is pd.NaT:
        return None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _array(values: list[Any], kind: Kind) -> pa.Array:
    """`values` as an array of `kind`; values that cannot be one become null rather than
    changing the column's type."""
    if kind == "datetime":
        if set(map(type, values)) <= {str, type(None)}:
            # Text (ISO 8601), the usual case, parsed in one vectorized call: a roll of 10,000
            # rows spent most of its time here value by value. Naive times are UTC.
            parsed = pd.to_datetime(
                pd.Series(values, dtype=object), utc=True, errors="coerce", format="ISO8601"
            )
            return pa.array(parsed, type=_ARROW[kind])
        return pa.array([_utc(v) for v in values], type=_ARROW[kind])
    if kind == "string":
        try:
            return pa.array(values, type=pa.string())  # all text (or null): as it is
        except (pa.ArrowException, TypeError):
            pass
        try:  # whole numbers (an id), as text: Arrow's cast, not a Python loop
            whole = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError):
            whole = None
        if whole is not None and pa.types.is_integer(whole.type):
            return whole.cast(pa.string())
        return pa.array(
            [None if v is None else v if isinstance(v, str) else str(v) for v in values],
            type=pa.string(),
        )
    try:
        return pa.array(values, type=_ARROW[kind])
    except (pa.ArrowException, TypeError, ValueError):
        pass
    if kind == "bool":
        return pa.array([v if isinstance(v, bool) else None for v in values], type=pa.bool_())
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
    if kind == "float":
        return pa.array(numbers.astype(float), type=pa.float64())
    whole = numbers.where(numbers.round() == numbers)
    return pa.array(whole.astype("Int64"), type=pa.int64())


def _shadow_by_request(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("k") == "shadow" and isinstance(r.get("id"), str):
            found[r["id"]] = r
        elif r.get("k") == "req" and isinstance(r.get("shadow"), dict):
            found.setdefault(str(r.get("id")), r["shadow"])
    return found


def _shadow_value(predictions: Any, i: int, name: str, main: str) -> Any:
    if not isinstance(predictions, list) or i >= len(predictions):
        return None
    p = predictions[i]
    if isinstance(p, dict):
        return p.get(name, p.get(f"shadow_{name}"))
    return p if name == main else None


def _extend_by_column(
    schema: LandedSchema,
    cols: dict[str, list[Any]],
    served: list[int],
    record: dict[str, Any],
    rid: str,
    t_us: int,
    shadow: dict[str, Any] | None,
    main: str,
) -> None:
    """`build_table`'s rows of a record that holds its rows by column (masked when logged),
    its inputs either among them or as the request's body (`scoring.logged_payload`)."""
    data, n = record["columns"], rows_of(record)
    if "request" in record:
        data = {**_request_columns(record["request"]), **data}
    cols["request_id"].extend([rid] * n)
    cols["row"].extend(range(n))
    served.extend([t_us] * n)
    for name, _ in (*schema.columns, *schema.predictions):
        values = data.get(name)
        cols[name].extend(values if isinstance(values, list) and len(values) == n else [None] * n)
    cols["model_version"].extend([record.get("version")] * n)
    cols["latency_ms"].extend([record.get("latency_ms")] * n)
    if schema.shadow:
        preds = shadow.get("predictions") if shadow else None
        for name, _ in schema.predictions:
            cols[f"shadow_{name}"].extend(_shadow_value(preds, i, name, main) for i in range(n))
        cols["shadow_version"].extend([shadow.get("version") if shadow else None] * n)


def _request_columns(doc: Any) -> dict[str, list[Any]]:
    """The columns of a request body the log kept as it came; none if it cannot be read (the
    server read it, so only a damaged log gets here: its rows then land with nulls)."""
    try:
        return table_of(doc).columns
    except RequestError:
        return {}


def build_table(schema: LandedSchema, worker: str, entries: Sequence[Entry]) -> pa.Table:
    """The rows and the serving metadata of the records `entries` cover."""
    records = [e.record for e in entries]
    shadows = _shadow_by_request(records) if schema.shadow else {}
    main = schema.predictions[0][0]
    cols: dict[str, list[Any]] = {name: [] for name, _ in schema.kinds()}
    served: list[int] = []
    for r in records:
        if r.get("k") != "req":
            continue
        rid = str(r.get("id"))
        shadow = shadows.get(rid)
        t_us = round(float(r["t"]) * 1e6)
        if isinstance(r.get("columns"), dict):
            _extend_by_column(schema, cols, served, r, rid, t_us, shadow, main)
            continue
        if not isinstance(r.get("rows"), list):
            continue
        for i, row in enumerate(r["rows"]):  # masked when logged (WalSink._append)
            cols["request_id"].append(rid)
            cols["row"].append(i)
            served.append(t_us)
            for name, _ in (*schema.columns, *schema.predictions):
                cols[name].append(row.get(name))
            cols["model_version"].append(r.get("version"))
            cols["latency_ms"].append(r.get("latency_ms"))
            if schema.shadow:
                preds = shadow.get("predictions") if shadow else None
                for name, _ in schema.predictions:
                    cols[f"shadow_{name}"].append(_shadow_value(preds, i, name, main))
                cols["shadow_version"].append(shadow.get("version") if shadow else None)
    arrays = []
    for name, kind in schema.kinds():
        if name == "served_at":
            micros = pa.array(served, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
            arrays.append(micros.cast(_ARROW["datetime"]))
        else:
            arrays.append(_array(cols[name], kind))
    arrow = schema.arrow_schema()
    table = pa.Table.from_arrays(arrays, schema=arrow)
    meta = serving_metadata(worker, records, schema.heartbeat_seconds, len(served))
    return table.replace_schema_metadata({SERVING_KEY: json.dumps(meta).encode()})


def serving_metadata(
    worker: str, records: Sequence[dict[str, Any]], heartbeat_seconds: float, rows: int
) -> dict[str, Any]:
    """The `mlops_loop.serving` metadata of a window: answers, errors by status, latencies
    and the time without a heartbeat (a gap over twice the period; a restart's gap from the
    previous process's last record counts too)."""
    times = [float(r["t"]) for r in records]
    start = min(times)
    down = 0.0
    errors = dict.fromkeys(ERROR_STATUSES, 0)
    latencies: list[float] = []
    requests = extra = 0
    previous: float | None = None
    for r, t in zip(records, times, strict=True):
        if r.get("k") == "start" and isinstance(r.get("prev_t"), int | float):
            previous = float(r["prev_t"])
            start = min(start, previous)
        if previous is not None and t - previous > 2 * heartbeat_seconds:
            down += t - previous
        previous = t
        if r.get("k") == "req":
            requests += 1
            extra += int(r.get("extra_columns") or 0)
        elif r.get("k") == "err":
            status = str(r.get("status"))
            errors[status] = errors.get(status, 0) + 1
        if r.get("k") in ("req", "err") and isinstance(r.get("latency_ms"), int | float):
            latencies.append(float(r["latency_ms"]))
    return {
        "schema": SCHEMA,
        "worker": worker,
        "window_start": start,
        "window_end": max(times),
        "requests": requests,
        "errors": errors,
        "rows": rows,
        "latency_ms": latencies,
        "down_seconds": down,
        "extra_columns": extra,
    }


def file_name(worker: str, first: dict[str, Any]) -> str:
    """`served-<UTC time of the first record>-<worker>.parquet`: sorts by time, and the same
    records always land under the same name."""
    stamp = _EPOCH + dt.timedelta(microseconds=round(float(first["t"]) * 1e6))
    return f"served-{stamp:%Y%m%dT%H%M%S.%f}-{worker}.parquet"

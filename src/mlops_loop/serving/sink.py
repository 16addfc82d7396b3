"""Where the endpoint hands what it answered: the prediction-log protocol, and a sink that
keeps nothing.

The app calls a sink from its event loop thread, so `record` must not block: it appends the
record to a buffer and returns either None (the record is already durable) or an awaitable that
completes once it is (a group commit's flush). The app awaits it before sending a 200: an
answered request is never lost from the log.

Records the app writes (`kind`, then the payload's keys; `t` is the epoch time the request
arrived, `latency_ms` the time until its answer was ready):

- `"req"`: `{"t", "id", "status": 200, "latency_ms", "version", "columns": {...}, "shadow": None,
  "extra_columns"}`. `columns` holds the scored rows by column, one list each, in row order:
  the feature columns and, when the request carried them, `columns.id` and
  `columns.timestamp` (private columns masked by `core.privacy.mask_private`, unless the sink
  masks them); then the prediction columns as `core.training.attach_scores` writes them
  (`columns.prediction`, and `<prediction>_<class>` for a multiclass model). By column, not a
  mapping per row: a 1,000-row request's record is then a dozen lists to encode, not a
  thousand mappings. `extra_columns` counts the request's columns the model ignored. (The log
  also reads `"rows": [{...}]`, one mapping per row.) A sink with a true `keeps_bodies`
  attribute may instead be handed `"request"`, the request body's bytes, when they hold
  nothing but feature, id and timestamp columns, none private (`scoring.logged_payload`):
  `columns` then holds only the prediction columns, and `request.table_of` reads the rest.
- `"err"`: `{"t", "id", "status": 400 | 413 | 422 | 500 | 503, "latency_ms", "extra_columns"}`.
- `"shadow"`: `{"t", "id", "version", "predictions": [...]}`, written after the answer, when
  `serving.shadow` is on and `@challenger` exists: the challenger's scores of request `id`'s
  rows, in row order (floats; for a multiclass model one mapping `{<prediction>: class,
  <prediction>_<class>: probability ...}` per row). A shadow record may never come (a failed
  challenger is counted in /metrics, not retried).

`"start"` and `"hb"` records are the sink's own: it writes them from `start()` and its
heartbeat. A sink may also offer `async arecord(kind, payload)`, which the app then awaits
instead of calling `record` (a sink whose `record` blocks until an fsync uses it to wait without
holding up the event loop). A sink that masks private columns itself says so with a true
`masks_private` attribute; the app then hands it the rows unmasked, so nothing is hashed twice.

The real log is `mlops_loop.serving.wal.WalSink` (`docs/prediction-log.md`); `make_sink` uses it
when that module is installed.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)

#: The module of the write-ahead log's sink (`WalSink.from_config(config) -> PredictionSink`).
WAL_MODULE = "mlops_loop.serving.wal"


@runtime_checkable
class PredictionSink(Protocol):
    """The prediction log as the endpoint sees it."""

    def start(self) -> Awaitable[None] | None:
        """Called once in the app's startup, on its event loop, before the first request is
        accepted: recover leftovers, write the "start" record, start the heartbeat. It may
        block (startup waits); an exception stops the server from starting."""

    def record(self, kind: str, payload: dict[str, Any]) -> Awaitable[None] | None:
        """Log one record without blocking; None, or an awaitable that completes (or raises)
        when the record is durable."""

    def backlog(self) -> int:
        """Rows logged but not yet rolled into a landed batch file (a /metrics gauge; called
        from the scraping request, so it must be cheap)."""

    def close(self) -> Awaitable[None] | None:
        """Called once in the app's shutdown, after the last request was answered: flush and
        roll everything, stop the heartbeat. It may block (shutdown waits)."""


class NullSink:
    """Keeps nothing: serving without a prediction log (`serving.log: false`, or no WAL)."""

    def start(self) -> None:
        return None

    def record(self, kind: str, payload: dict[str, Any]) -> None:
        return None

    def backlog(self) -> int:
        return 0

    def close(self) -> None:
        return None


def make_sink(config: Any) -> PredictionSink:
    """The sink `config.serving` asks for: the write-ahead log when `serving.log` is on and
    `mlops_loop.serving.wal` is installed, else a `NullSink` (said in the log)."""
    if not config.serving.log:
        return NullSink()
    try:
        # Imported by name: the WAL module implements this protocol, so a static import here
        # would close an import cycle.
        module = importlib.import_module(WAL_MODULE)
    except ModuleNotFoundError as e:
        if e.name != WAL_MODULE:
            raise
        logger.warning("serving.log is on but %s is not installed: nothing is logged", WAL_MODULE)
        return NullSink()
    opener = getattr(module, "open_sink", None) or module.WalSink.from_config
    sink: PredictionSink = opener(config)
    return sink

"""What /metrics exposes, in one `CollectorRegistry` per app (two apps in one process, as in
tests, never share counters).

With `--workers N > 1` every process counts its own: a scrape is answered by whichever worker
took the connection, so its numbers are that worker's (each carries a `worker` label, its pid,
so series never mix). Scrape a single-worker server, or one server per port, for totals.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "mlops_loop_serving"
#: Latency buckets in seconds: a single row takes about a millisecond, 100,000 rows seconds.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ServingMetrics:
    """The endpoint's counters, histogram and gauges."""

    def __init__(self, backlog: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        worker = {"worker": str(os.getpid())}
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, ("worker", *labels), registry=r)

        self.requests = counter(
            "requests",
            "Scoring requests (POST /invocations) answered, by HTTP status.",
            ("status",),
        )
        self.errors = counter(
            "errors", "Scoring requests answered with an error, by HTTP status.", ("status",)
        )
        self.rows = counter("rows_scored", "Rows scored by the champion.").labels(**worker)
        self.extra_columns = counter(
            "extra_columns", "Request columns the model ignored (one per column per request)."
        ).labels(**worker)
        self.load_failures = counter(
            "model_load_failures", "Failed loads of a version an alias moved to.", ("alias",)
        )
        self.swaps = counter("model_swaps", "Versions swapped in, by alias.", ("alias",))
        self.shadow_failures = counter(
            "shadow_failures", "Requests the challenger could not score (or log) in shadow."
        ).labels(**worker)
        self.shadow_dropped = counter(
            "shadow_dropped", "Requests not shadow-scored because the shadow queue was full."
        ).labels(**worker)
        self.latency = Histogram(
            f"{PREFIX}_request_latency_seconds",
            "Time from a scoring request's arrival to its answer ready, whatever its status.",
            ("worker",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(**worker)
        self.version = Gauge(
            f"{PREFIX}_model_version",
            "Model version served per alias (-1: none loaded).",
            ("worker", "alias"),
            registry=r,
        )
        for alias in ("champion", "challenger"):
            self.version.labels(alias=alias, **worker).set(-1)
        self.backlog = Gauge(
            f"{PREFIX}_prediction_log_backlog_rows",
            "Rows in the prediction log not yet rolled into a landed batch file.",
            ("worker",),
            registry=r,
        )
        self.backlog.labels(**worker).set_function(lambda: float(backlog()))
        self._worker = worker

    def answered(self, status: int, seconds: float) -> None:
        self.requests.labels(status=str(status), **self._worker).inc()
        if status >= 400:
            self.errors.labels(status=str(status), **self._worker).inc()
        self.latency.observe(seconds)

    def served(self, alias: str, version: int | None) -> None:
        self.version.labels(alias=alias, **self._worker).set(-1 if version is None else version)
        if version is not None:
            self.swaps.labels(alias=alias, **self._worker).inc()

    def load_failed(self, alias: str) -> None:
        self.load_failures.labels(alias=alias, **self._worker).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Shadow scoring: `@challenger` scores every answered request off the response path, in a
thread of its own fed by a bounded queue, and its predictions go to the prediction log as
"shadow" records. It never delays or fails an answer: a full queue drops the request (counted),
a failure is logged and counted."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.serving.metrics import ServingMetrics
from mlops_loop.serving.models import Served
from mlops_loop.serving.request import Features
from mlops_loop.serving.scoring import prediction_columns, score

logger = logging.getLogger(__name__)
QUEUE_SIZE = 1000
_STOP = object()


class ShadowScorer:
    """Scores queued requests with the challenger `challenger()` returns at that moment."""

    def __init__(
        self,
        challenger: Callable[[], Served | None],
        columns: ColumnsConfig,
        metrics: ServingMetrics,
        record: Callable[[dict[str, Any]], Coroutine[Any, Any, None]],
    ) -> None:
        self.challenger = challenger
        self.columns = columns
        self.metrics = metrics
        self.record = record
        self._queue: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def submit(self, request_id: str, features: Features) -> None:
        """Queue a request for the challenger; never blocks."""
        if self._thread is None or self.challenger() is None:
            return
        try:
            self._queue.put_nowait((request_id, features))
        except queue.Full:
            self.metrics.shadow_dropped.inc()

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            request_id, features = item
            held = self.challenger()
            if held is None:
                continue
            try:
                scores = score(held.model, features, self.columns)
                columns = prediction_columns(scores, self.columns)
                if scores.ndim == 2:
                    names = list(columns)
                    predictions: list[Any] = [
                        dict(zip(names, values, strict=True))
                        for values in zip(*columns.values(), strict=True)
                    ]
                else:
                    predictions = columns[self.columns.prediction]
                payload = {
                    "t": time.time(),
                    "id": request_id,
                    "version": held.version,
                    "predictions": predictions,
                }
                assert self._loop is not None
                asyncio.run_coroutine_threadsafe(self.record(payload), self._loop).result()
            except Exception:
                logger.exception(
                    "shadow scoring of request %s by v%d failed", request_id, held.version
                )
                self.metrics.shadow_failures.inc()

    def stop(self, timeout: float = 30.0) -> None:
        """Score what is queued, then stop. Call it from a thread other than the event loop's
        (its records are written on the loop)."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout=timeout)
        self._thread = None

"""Small requests scored together: concurrent requests waiting for the model are merged into
one call of it, in a worker thread, and each gets its own rows' scores back.

A scikit-learn pipeline spends most of a one-row call on its own overhead (checks, column
selection, encoders), not on the rows, so eight waiting single-row requests cost about what one
does. Rows are scored independently by the loop's models (imputer, one-hot encoder, trees), so
a row's scores are the same whether it is scored alone or with others (tests/serving prove it).
Requests captured different models during a swap are scored by their own model, never merged.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.serving.models import Served
from mlops_loop.serving.request import Features
from mlops_loop.serving.scoring import score

#: Rows merged into one call at most; a request larger than this is scored on its own.
MAX_BATCH_ROWS = 256


def merge(parts: list[Features]) -> Features:
    """One `Features` of every part's rows, in order."""
    if len(parts) == 1:
        return parts[0]
    arrays = {c: np.concatenate([p.arrays[c] for p in parts]) for c in parts[0].arrays}
    return Features(arrays, sum(p.rows for p in parts), [])


class Batcher:
    """Scores requests on one worker thread, merging those that wait into one call."""

    def __init__(self, columns: ColumnsConfig, max_rows: int = MAX_BATCH_ROWS) -> None:
        self.columns = columns
        self.max_rows = max_rows
        self._pending: list[tuple[Served, Features, asyncio.Future[np.ndarray]]] = []
        self._draining = False

    async def score(self, held: Served, features: Features) -> np.ndarray:
        """`held`'s scores of `features`' rows (what `scoring.score` gives)."""
        if features.rows > self.max_rows:
            return await asyncio.to_thread(score, held.model, features, self.columns)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((held, features, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _take(self) -> tuple[Served, list[tuple[Features, asyncio.Future[np.ndarray]]]]:
        """The next batch: the oldest request's model, and the waiting requests it captured
        up to `max_rows` rows (at least one)."""
        held = self._pending[0][0]
        taken: list[tuple[Features, asyncio.Future[np.ndarray]]] = []
        rest = []
        rows = 0
        for item in self._pending:
            same, features, future = item[0] is held, item[1], item[2]
            if same and (not taken or rows + features.rows <= self.max_rows):
                taken.append((features, future))
                rows += features.rows
            else:
                rest.append(item)
        self._pending = rest
        return held, taken

    async def _drain(self) -> None:
        try:
            while self._pending:
                held, taken = self._take()
                merged = merge([f for f, _ in taken])
                try:
                    scores = await asyncio.to_thread(score, held.model, merged, self.columns)
                except Exception as e:  # each request answers its own 500
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(e)
                    continue
                start = 0
                for features, future in taken:
                    part: Any = scores[start : start + features.rows]
                    start += features.rows
                    if not future.done():  # its client may be gone
                        future.set_result(part)
        finally:
            self._draining = False

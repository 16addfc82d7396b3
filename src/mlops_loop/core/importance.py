"""How much of a model's performance each feature carries: permutation importance on held-out
rows, as shares that sum to one. The retrain decision weighs drifted features by it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.core.performance import improvement, metric_value
from mlops_loop.core.training import labels, predict_scores


def permutation_importance(
    model: Any,
    frame: pd.DataFrame,
    columns: ColumnsConfig,
    metric: str,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, float] | None:
    """Each feature's share of the model's importance on the labelled rows of `frame`.

    A feature's importance is the mean loss of `metric` when its values are shuffled across
    the rows (`repeats` times), floored at zero; the shares divide by their sum. None when the
    metric is undefined on these rows (one class) or no feature matters at all.
    """
    y = labels(frame, columns)
    base = metric_value(metric, y, predict_scores(model, frame, columns))
    if np.isnan(base):
        return None
    rng = np.random.default_rng(seed)
    losses: dict[str, float] = {}
    for name in columns.features:
        drops = []
        for _ in range(repeats):
            shuffled = frame.assign(**{name: frame[name].to_numpy()[rng.permutation(len(frame))]})
            value = metric_value(metric, y, predict_scores(model, shuffled, columns))
            drops.append(improvement(metric, base, value))
        losses[name] = max(float(np.mean(drops)), 0.0)
    total = sum(losses.values())
    if total <= 0:
        return None
    return {name: round(loss / total, 6) for name, loss in losses.items()}


def drifted_share(importance: dict[str, float] | None, drifted: list[str]) -> float | None:
    """The share of the model's importance the drifted features carry (None: unknown)."""
    if importance is None:
        return None
    return round(sum(importance.get(name, 0.0) for name in set(drifted)), 6)

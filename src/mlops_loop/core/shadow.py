"""The challenger in shadow on live traffic: how its predictions differed from the ones served.

With `serving.shadow` the endpoint also scores each request with `@challenger`, off the
response path, and logs that second prediction on the served rows (`shadow_<prediction>`,
`shadow_<prediction>_<class>`, `shadow_version`). When a promotion is decided, the rows the
challenger's version scored in shadow say how the two models differed on what callers actually
sent, before any caller sees the challenger's answers (docs/serving.md, "Shadow challenger").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.config import ColumnsConfig, LoopConfig
from mlops_loop.core.served import (
    SHADOW_PREFIX,
    SHADOW_VERSION,
    prediction_columns,
    shadow_columns,
)

#: The probability at which a binary score is read as the positive class, for agreement.
BINARY_THRESHOLD = 0.5


@dataclass(frozen=True)
class ShadowComparison:
    """Champion (as served) against challenger (in shadow) on the same live rows."""

    challenger_version: int
    rows: int  # rows both models scored
    batches: list[str] = field(default_factory=list)
    served_versions: list[int] = field(default_factory=list)
    #: Classification: share of rows with the same predicted label (binary at
    #: `BINARY_THRESHOLD`, multiclass by the most probable class); None for a regression.
    agreement: float | None = None
    #: Mean |challenger - served| of the scores (binary: the positive class's probability;
    #: multiclass: averaged over the classes' probabilities; regression: predicted values).
    mean_abs_diff: float | None = None
    #: Mean challenger - served of the scores (multiclass: of the predicted class's
    #: probability, each model's own); positive: the challenger scores higher.
    mean_score_diff: float | None = None
    #: Pearson correlation of the two models' scores (binary, regression); None when either is
    #: constant or the task is multiclass.
    correlation: float | None = None
    labelled_rows: int = 0  # of those rows, the ones whose labels have landed
    metric_name: str = ""
    challenger_metric: float | None = None  # on the labelled rows
    served_metric: float | None = None

    def metrics(self) -> dict[str, float]:
        """MLflow metrics of the promotion: `shadow_rows`, `shadow_agreement`, ..."""
        values: dict[str, Any] = {
            "shadow_rows": self.rows,
            "shadow_agreement": self.agreement,
            "shadow_mean_abs_diff": self.mean_abs_diff,
            "shadow_mean_score_diff": self.mean_score_diff,
            "shadow_correlation": self.correlation,
            "shadow_labelled_rows": self.labelled_rows,
            f"shadow_challenger_{self.metric_name}": self.challenger_metric,
            f"shadow_served_{self.metric_name}": self.served_metric,
        }
        return {k: float(v) for k, v in values.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scores(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    values = frame[names].to_numpy(dtype=float)
    return values[:, 0] if len(names) == 1 else values


def _finite(value: float) -> float | None:
    return None if value != value or abs(value) == float("inf") else float(value)


def compare_shadow(
    frame: pd.DataFrame,
    columns: ColumnsConfig,
    task: str,
    challenger_version: int,
    metric_name: str,
    batches: list[str] | None = None,
) -> ShadowComparison | None:
    """Compare the served predictions of `frame` with the challenger's shadow ones.

    Only rows the challenger's version scored in shadow (`shadow_version`) count; labelled
    rows (a known `columns.target`) give both models' `metric_name` on them. None when no row
    carries that version's shadow predictions.
    """
    from mlops_loop.core.performance import metric_value
    from mlops_loop.core.training import labelled_rows, labels

    served_names = prediction_columns(columns)
    if task == "multiclass" and columns.classes:
        served_names = served_names[1:]  # the probabilities; the label is their argmax
    shadow_names = [SHADOW_PREFIX + c for c in served_names]
    needed = [*served_names, *shadow_names, SHADOW_VERSION]
    if any(c not in frame.columns for c in needed):
        return None
    mine = frame[pd.to_numeric(frame[SHADOW_VERSION], errors="coerce") == challenger_version]
    mine = mine.dropna(subset=[*served_names, *shadow_names])
    if mine.empty:
        return None
    served, shadow = _scores(mine, served_names), _scores(mine, shadow_names)
    agreement = correlation = None
    if served.ndim == 2:
        picked_served, picked_shadow = served.argmax(axis=1), shadow.argmax(axis=1)
        agreement = float(np.mean(picked_served == picked_shadow))
        rows = np.arange(len(served))
        score_diff = float(np.mean(shadow[rows, picked_shadow] - served[rows, picked_served]))
    else:
        if task != "regression":
            agreement = float(np.mean((served >= BINARY_THRESHOLD) == (shadow >= BINARY_THRESHOLD)))
        score_diff = float(np.mean(shadow - served))
        if len(served) > 1 and np.std(served) > 0 and np.std(shadow) > 0:
            correlation = _finite(float(np.corrcoef(served, shadow)[0, 1]))
    known = labelled_rows(mine, columns)
    challenger_metric = served_metric = None
    if len(known):
        y = labels(known, columns)
        challenger_metric = _finite(metric_value(metric_name, y, _scores(known, shadow_names)))
        served_metric = _finite(metric_value(metric_name, y, _scores(known, served_names)))
    versions = (
        sorted({int(v) for v in mine["model_version"].dropna()}) if "model_version" in mine else []
    )
    return ShadowComparison(
        challenger_version=int(challenger_version),
        rows=len(mine),
        batches=list(batches or []),
        served_versions=versions,
        agreement=agreement,
        mean_abs_diff=float(np.mean(np.abs(shadow - served))),
        mean_score_diff=score_diff,
        correlation=correlation,
        labelled_rows=len(known),
        metric_name=metric_name,
        challenger_metric=challenger_metric,
        served_metric=served_metric,
    )


def live_traffic(config: LoopConfig, challenger_version: int) -> ShadowComparison | None:
    """The challenger's shadow predictions on every accepted served batch, against what was
    served, with the labels known now; None when no served row carries them."""
    from mlops_loop.core.labels import attach_labels
    from mlops_loop.core.parquet import parquet_columns
    from mlops_loop.core.store import LoopStore

    store = LoopStore(config.state_dir)
    cols = config.columns
    wanted = [
        *filter(None, [cols.id, cols.target]),
        *prediction_columns(cols),
        *shadow_columns(cols),
        SHADOW_VERSION,
        "model_version",
    ]
    parts, keys = [], []
    for key in store.accepted_keys():
        path = store.batch_dir(key) / "batch.parquet"
        if store.batch_json(key, "served") is None or not path.exists():
            continue
        present = set(parquet_columns(path))
        if SHADOW_VERSION not in present:
            continue
        frame = pd.read_parquet(path, columns=[c for c in dict.fromkeys(wanted) if c in present])
        frame = frame[pd.to_numeric(frame[SHADOW_VERSION], errors="coerce") == challenger_version]
        if len(frame):
            parts.append(frame)
            keys.append(key)
    if not parts:
        return None
    frame = pd.concat(parts, ignore_index=True)
    if cols.id is not None and cols.id in frame:
        frame = attach_labels(config, frame)
    return compare_shadow(
        frame, cols, config.task, challenger_version, config.promotion.metric, batches=keys
    )

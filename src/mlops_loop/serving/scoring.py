"""Scores of a checked request by the loop's own scorer, and the forms they leave in: the JSON
answer and the prediction log's rows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.core.privacy import mask_private
from mlops_loop.core.tasks import probability_columns
from mlops_loop.core.training import MISSING_CATEGORY, predicted_labels, scores_of_inputs
from mlops_loop.serving.fast import Rows, fast_model
from mlops_loop.serving.request import Features, Table


def model_frame(features: Features, columns: ColumnsConfig) -> pd.DataFrame:
    """The rows in exactly the form `core.training.model_inputs` gives the model (numbers as
    float64, categories as text with missing values spelled out), built straight from the
    checked arrays: `model_inputs` on a frame of a single row costs more than the model."""
    data: dict[str, Any] = {c: features.arrays[c] for c in columns.numerical}
    for c in columns.categorical:
        values = [
            MISSING_CATEGORY if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
            for v in features.arrays[c]
        ]
        # dtype=object explicitly: pandas 3 would infer its `str` dtype from the strings.
        data[c] = pd.Series(values, dtype=object)
    return pd.DataFrame(data, copy=False)


def score(model: Any, features: Features, columns: ColumnsConfig) -> np.ndarray:
    """`core.training.predict_scores` of the request's rows: the positive class' probability
    (binary), one probability per class of `columns.classes` (multiclass), the value
    (regression); exactly what `predict_frame` gives for the same rows. The loop's own
    pipeline is applied to the arrays directly (`fast.py`), any other model to a frame."""
    fast = fast_model(model, columns)
    if fast is not None:
        return scores_of_inputs(fast, Rows(features), columns)  # type: ignore[arg-type]
    return scores_of_inputs(model, model_frame(features, columns), columns)


def _floats(values: np.ndarray) -> list[float | None]:
    if np.isfinite(values).all():  # the usual case, without a Python loop
        return values.tolist()  # type: ignore[no-any-return]
    return [v if math.isfinite(v) else None for v in values.tolist()]


def answer(scores: np.ndarray, columns: ColumnsConfig) -> dict[str, Any]:
    """The answer's predictions. Binary and regression: one number per row. Multiclass: the
    predicted class per row, with `classes` (the labels in order) and `probabilities` (one
    list per row, aligned with `classes`)."""
    if scores.ndim == 2:
        predicted = predicted_labels(scores, columns)
        assert predicted is not None and columns.classes is not None
        return {
            "predictions": predicted.tolist(),
            "classes": list(columns.classes),
            "probabilities": [_floats(row) for row in scores],
        }
    return {"predictions": _floats(scores)}


def prediction_columns(scores: np.ndarray, columns: ColumnsConfig, prefix: str = "") -> dict:
    """The prediction columns as `core.training.attach_scores` names them (`prefix` first, for
    a shadow model's), by column."""
    name = f"{prefix}{columns.prediction}"
    if scores.ndim == 2:
        assert columns.classes is not None
        out: dict[str, list[Any]] = {
            n: _floats(col)
            for n, col in zip(probability_columns(name, columns.classes), scores.T, strict=True)
        }
        predicted = predicted_labels(scores, columns)
        assert predicted is not None
        return {name: predicted.tolist(), **out}
    return {name: _floats(scores)}


def _logged_value(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def logged_columns(
    table: Table,
    scores: np.ndarray,
    columns: ColumnsConfig,
    mask: bool = True,
) -> dict[str, list[Any]]:
    """The rows the prediction log keeps, by column: features (numbers as sent, JSON numbers
    or None; strings or None), id and timestamp when sent, predictions; with `mask`, private
    columns masked (`core.privacy.mask_private`; without, the sink masks them).

    The request's own lists, as `check_features` accepted them, are logged as they are: a
    copy value by value cost a tenth of a 1,000-row request's time in the server's
    interpreter lock. (A NaN or an infinity, which only the standard library's JSON reads,
    is written by the log as null.)"""
    data: dict[str, list[Any]] = {}
    for c in (*columns.numerical, *columns.categorical):
        data[c] = table.columns[c]
    for role in (columns.id, columns.timestamp):
        if role is not None and role in table.columns:
            data[role] = table.columns[role]
    if mask and any(c in data for c in columns.private):
        masked = mask_private(pd.DataFrame(data), columns)
        data = {c: [_logged_value(v) for v in masked[c].astype(object)] for c in masked.columns}
    data.update(prediction_columns(scores, columns))
    return data


def logged_payload(
    table: Table,
    scores: np.ndarray,
    columns: ColumnsConfig,
    mask: bool = True,
    body: bool = False,
) -> dict[str, Any]:
    """The rows of a "req" record (`sink.py`): `{"columns": logged_columns(...)}` or, with
    `body` (a sink that takes it) and a request whose body can be kept as it came,
    `{"request": <the body's bytes>, "columns": <the predictions>}`.

    The body is kept when it is strict JSON on one line (`Table.body`) and holds nothing but
    feature, id and timestamp columns, none of them private: the log then copies its bytes
    instead of encoding a thousand values again. Whoever reads the record gets the same
    columns back with `request.table_of` (`landed.py`)."""
    if body and table.body is not None and not (set(table.columns) - keepable(columns)):
        return {"request": table.body, "columns": prediction_columns(scores, columns)}
    return {"columns": logged_columns(table, scores, columns, mask=mask)}


def keepable(columns: ColumnsConfig) -> set[str]:
    """The columns a request body the log keeps as it came may hold."""
    names = {*columns.numerical, *columns.categorical, columns.id, columns.timestamp}
    return {c for c in names if c is not None and c not in columns.private}

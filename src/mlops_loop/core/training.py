"""Building, training and scoring the model the loop maintains."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.config import ColumnsConfig, ModelSpec, estimator_class
from mlops_loop.core.data import require_columns
from mlops_loop.core.errors import DataError, InvalidConfigError
from mlops_loop.core.tasks import (
    class_codes,
    encode_labels,
    probability_columns,
    training_labels,
)

MISSING_CATEGORY = "<missing>"


def build_estimator(spec: ModelSpec, columns: ColumnsConfig) -> Any:
    """Instantiate the configured estimator, wrapped in standard preprocessing if asked.

    Raises:
        InvalidConfigError: the estimator rejects its parameters.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    try:
        # Again here: a spec built without validation must not call an arbitrary callable.
        factory = estimator_class(spec.estimator)
        estimator = factory(**spec.params)
    except (TypeError, ValueError) as e:
        raise InvalidConfigError(
            f"model.params {spec.params} rejected by {spec.estimator}: {e}"
        ) from e
    if not spec.preprocess:
        return estimator
    transformers = []
    if columns.numerical:
        transformers.append(("num", SimpleImputer(strategy="median"), list(columns.numerical)))
    if columns.categorical:
        transformers.append(
            (
                "cat",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                list(columns.categorical),
            )
        )
    return Pipeline([("prep", ColumnTransformer(transformers)), ("model", estimator)])


def model_inputs(frame: pd.DataFrame, columns: ColumnsConfig) -> pd.DataFrame:
    """The feature columns in the form the model takes: numbers as float, categories as text.

    Categories become plain Python strings with missing values spelled out, so the model
    signature is stable across pandas' string dtypes.

    Raises:
        DataError: a feature column is missing or a numerical one is not numeric.
    """
    require_columns(frame, columns.features, "the frame to score")
    out = pd.DataFrame(index=frame.index)
    for c in columns.numerical:
        try:
            out[c] = pd.to_numeric(frame[c], errors="raise").astype("float64")
        except (ValueError, TypeError) as e:
            raise DataError(f"numerical column {c!r} has non-numeric values: {e}") from e
    for c in columns.categorical:
        values = frame[c].astype("object")
        out[c] = values.where(values.notna(), MISSING_CATEGORY).astype(str).astype(object)
    return out


def labels(frame: pd.DataFrame, columns: ColumnsConfig) -> np.ndarray:
    """The target as the metrics take it (`core.tasks.encode_labels`): 0/1 for a binary task
    (the last of `columns.classes` positive), class indices for multiclass, floats for
    regression. Rows without a label are dropped by the caller first.

    Raises:
        DataError: a missing label, or one that is none of the classes.
    """
    require_columns(frame, [columns.target], "the labelled frame")
    task = columns.task or "binary"
    return encode_labels(frame[columns.target], columns.target, task, columns.label_classes)


def labelled_rows(frame: pd.DataFrame, columns: ColumnsConfig) -> pd.DataFrame:
    """Rows whose label is known."""
    if columns.target not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame[columns.target].notna()]


def train_model(frame: pd.DataFrame, spec: ModelSpec, columns: ColumnsConfig) -> Any:
    """Fit a fresh estimator on the labelled rows of `frame`. A classifier is fit on the
    original labels (its `classes_` are labels such as "high", so the registered model predicts
    them); the scores follow `columns.classes` whatever classes the rows hold.

    Raises:
        DataError: no labelled rows, or a single class only.
    """
    frame = labelled_rows(frame, columns)
    y = labels(frame, columns)
    task = columns.task or "binary"
    if task != "regression" and len(np.unique(y)) < 2:
        raise DataError(
            f"training data has {len(y)} labelled rows of a single class; "
            "a classifier needs at least two"
        )
    if task == "regression" and len(y) < 2:
        raise DataError(f"training data has {len(y)} labelled rows; a regressor needs more")
    model = build_estimator(spec, columns)
    fit_on = training_labels(y, task, columns.label_classes)
    model.fit(model_inputs(frame, columns), fit_on)
    return model


def predict_scores(model: Any, frame: pd.DataFrame, columns: ColumnsConfig) -> np.ndarray:
    """The model's scores for every row of `frame` (`core.tasks`): the positive class's
    probability (binary), one probability column per class of `columns.classes` (multiclass),
    the predicted value (regression)."""
    return scores_of_inputs(model, model_inputs(frame, columns), columns)


def scores_of_inputs(model: Any, inputs: pd.DataFrame, columns: ColumnsConfig) -> np.ndarray:
    """`predict_scores` of rows already in the form `model_inputs` gives (the online endpoint
    builds that form itself, without a frame of the raw request)."""
    task = columns.task or "binary"
    if task == "regression":
        return np.asarray(model.predict(inputs), dtype=float).ravel()
    if not hasattr(model, "predict_proba"):
        # An MLflow pyfunc model returns what the flavour's predict returns.
        return np.asarray(model.predict(inputs), dtype=float).ravel()
    proba = np.asarray(model.predict_proba(inputs), dtype=float)
    classes = columns.label_classes or [0, 1]
    fitted = list(getattr(model, "classes_", range(proba.shape[1])))
    codes = class_codes(pd.Series(fitted, dtype=object), classes)
    out = np.zeros((len(inputs), len(classes)))
    for j, code in enumerate(codes):
        if code >= 0:
            out[:, code] = proba[:, j]
    if task == "binary":
        return out[:, 1]
    return out


def predicted_labels(scores: np.ndarray, columns: ColumnsConfig) -> np.ndarray | None:
    """The class a multiclass model predicts for each row (the most probable of
    `columns.classes`); None for other tasks."""
    if (columns.task or "binary") != "multiclass" or not columns.classes:
        return None
    values = np.empty(len(scores), dtype=object)
    values[:] = [columns.classes[i] for i in np.argmax(scores, axis=1)]
    return values


def attach_scores(frame: pd.DataFrame, scores: np.ndarray, columns: ColumnsConfig) -> None:
    """Write a model's scores into `frame`: the prediction column (the positive class's
    probability, the predicted value, or a multiclass model's predicted class) and, for a
    multiclass model, one probability column per class (`<prediction>_<class>`)."""
    predicted = predicted_labels(scores, columns) if scores.ndim == 2 else None
    if predicted is None:
        frame[columns.prediction] = scores
        return
    assert columns.classes is not None
    for name, column in zip(
        probability_columns(columns.prediction, columns.classes), scores.T, strict=True
    ):
        frame[name] = column
    frame[columns.prediction] = predicted


def scores_of(frame: pd.DataFrame, columns: ColumnsConfig) -> np.ndarray:
    """The scores `attach_scores` wrote, read back from a scored frame.

    Raises:
        DataError: a prediction column is missing.
    """
    if (columns.task or "binary") == "multiclass" and columns.classes:
        names = probability_columns(columns.prediction, columns.classes)
        require_columns(frame, names, "the scored frame")
        return frame[names].to_numpy(dtype=float)
    require_columns(frame, [columns.prediction], "the scored frame")
    return frame[columns.prediction].to_numpy(dtype=float)

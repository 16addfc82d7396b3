"""Building, training and scoring the model the loop maintains."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.config import ColumnsConfig, ModelSpec, estimator_class
from mlops_loop.core.data import require_columns
from mlops_loop.core.errors import DataError, InvalidConfigError

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
    """The binary target as ints, rows without a label dropped by the caller first."""
    require_columns(frame, [columns.target], "the labelled frame")
    y = pd.to_numeric(frame[columns.target], errors="coerce")
    if y.isna().any():
        raise DataError(
            f"target column {columns.target!r} has {int(y.isna().sum())} missing or "
            "non-numeric labels; drop unlabelled rows first"
        )
    bad = sorted(set(y.unique()) - {0, 1})
    if bad:
        raise DataError(f"target column {columns.target!r} must be 0/1; found {bad[:5]}")
    return y.astype(int).to_numpy()


def labelled_rows(frame: pd.DataFrame, columns: ColumnsConfig) -> pd.DataFrame:
    """Rows whose label is known."""
    if columns.target not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame[columns.target].notna()]


def train_model(frame: pd.DataFrame, spec: ModelSpec, columns: ColumnsConfig) -> Any:
    """Fit a fresh estimator on the labelled rows of `frame`.

    Raises:
        DataError: no labelled rows, or a single class only.
    """
    frame = labelled_rows(frame, columns)
    y = labels(frame, columns)
    if len(np.unique(y)) < 2:
        raise DataError(
            f"training data has {len(y)} labelled rows of a single class; "
            "a classifier needs both 0 and 1"
        )
    model = build_estimator(spec, columns)
    model.fit(model_inputs(frame, columns), y)
    return model


def predict_scores(model: Any, frame: pd.DataFrame, columns: ColumnsConfig) -> np.ndarray:
    """Probability of the positive class for every row of `frame`."""
    inputs = model_inputs(frame, columns)
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(inputs))[:, 1]
    # An MLflow pyfunc model returns what the flavour's predict returns.
    return np.asarray(model.predict(inputs), dtype=float).ravel()

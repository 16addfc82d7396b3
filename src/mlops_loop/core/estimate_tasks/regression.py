"""Regression direct loss estimation: boosted models of the absolute and the squared error."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.errors import DataError
from mlops_loop.core.estimate import MetricEstimate, PerformanceEstimate
from mlops_loop.core.estimate_tasks.regression_inputs import check_inputs, check_values, is_text

SCHEMA_VERSION = 1
_Z95 = 1.959963984540054
REGRESSION_SE_METHOD = (
    "analytic: rows' errors independent given the inputs; mae: Var|e_i| = E[e_i^2] - E[|e_i|]^2 "
    "from the two loss models; rmse: Var(e_i^2) = E[e_i^2]^2 * the variance of e^2 / E[e^2] "
    "measured on the reference rows, then the delta method for the square root. Neither "
    "includes the loss models' own error"
)


@dataclass(frozen=True, eq=False)
class DirectLossEstimator:
    """Models of a regressor's absolute and squared error given its inputs and its prediction.

    Build it with `fit_loss_estimator`. Its fitted models are not JSON: `to_dict` keeps the
    rest, `models` the scikit-learn parts, which the loop logs to MLflow with the version it
    estimates and loads back through the registry like any model (`from_dict` joins them).
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    encoder: Any  # sklearn OrdinalEncoder of the categorical columns, or None
    abs_model: Any  # HistGradientBoostingRegressor of |y - prediction|
    sq_model: Any  # HistGradientBoostingRegressor of (y - prediction)^2
    n_reference: int
    #: Var(e^2 / E[e^2 | x]) on the reference rows: the squared error's relative spread.
    sq_relative_var: float
    ranges: dict[str, tuple[float, float]]
    prediction_range: tuple[float, float]
    categories: dict[str, tuple[str, ...]]
    sklearn_version: str
    seed: int
    schema_version: int = SCHEMA_VERSION

    def estimate(
        self,
        inputs: pd.DataFrame,
        predictions: Sequence[float] | np.ndarray,
        *,
        max_outside_share: float = 0.05,
    ) -> PerformanceEstimate:
        """Estimate the batch's MAE and RMSE from its inputs and predictions alone.

        Args:
            inputs: the batch's model inputs (extra columns are ignored).
            predictions: the model's predictions on those rows.
            max_outside_share: warn when more than this share of the rows has a number outside
                the reference's range or a category the reference never saw.

        Raises:
            DataError: a column is missing, non-numeric where a number is expected or not text
                where a category is expected; predictions are missing, non-finite or of
                another length; the batch is empty.
        """
        frame, x = self._design(inputs, predictions)
        if len(x) == 0:
            raise DataError("inputs is empty: there is nothing to estimate")
        a = np.clip(self.abs_model.predict(x), 0.0, None)
        s2 = np.clip(self.sq_model.predict(x), 0.0, None)
        n = len(x)
        metrics = {"mae": _mean_estimate(a, np.clip(s2 - a**2, 0.0, None))}
        mse, var_sq = float(s2.mean()), float(np.sum(self.sq_relative_var * s2**2)) / n**2
        rmse = math.sqrt(mse)
        se = math.sqrt(var_sq) / (2 * rmse) if rmse > 0 else 0.0
        metrics["rmse"] = _interval(rmse, se)
        outside = self._outside(frame, x[:, -1])
        warning = None
        if outside > max_outside_share:
            warning = (
                f"{outside:.1%} of the rows have a number outside the reference's range or an "
                f"unseen category (more than {max_outside_share:.1%}): the loss models "
                "extrapolate there and the estimate may be off"
            )
        return PerformanceEstimate(
            n=n,
            threshold=math.nan,  # no threshold in regression
            calibration="direct loss estimation (HistGradientBoostingRegressor)",
            metrics=metrics,
            expected_confusion={},
            share_outside_reference=round(outside, 6),
            warning=warning,
            standard_error_method=REGRESSION_SE_METHOD,
        )

    #: The fitted parts that are not JSON: scikit-learn objects, logged as MLflow models.
    MODEL_PARTS = ("abs_model", "sq_model", "encoder")

    def to_dict(self) -> dict[str, Any]:
        """Everything but the fitted models (`models()`), as plain JSON."""
        return {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "n_reference": self.n_reference,
            "sq_relative_var": self.sq_relative_var,
            "ranges": {k: list(v) for k, v in self.ranges.items()},
            "prediction_range": list(self.prediction_range),
            "categories": {k: list(v) for k, v in self.categories.items()},
            "sklearn_version": self.sklearn_version,
            "seed": self.seed,
            "schema_version": self.schema_version,
        }

    def models(self) -> dict[str, Any]:
        """The fitted scikit-learn parts by name (no encoder without categorical columns):
        the loop logs them to MLflow with the version and loads them back from there."""
        parts = {"abs_model": self.abs_model, "sq_model": self.sq_model}
        if self.encoder is not None:
            parts["encoder"] = self.encoder
        return parts

    @classmethod
    def from_dict(cls, data: dict[str, Any], models: dict[str, Any]) -> DirectLossEstimator:
        """Rebuild an estimator from `to_dict()` and its `models()`.

        Raises:
            DataError: another schema_version, a missing field, or a missing model part.
        """
        if not isinstance(data, dict):
            raise DataError(f"a loss estimator is a mapping, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise DataError(
                f"loss estimator has schema_version {version!r}, which is not supported "
                f"(expected {SCHEMA_VERSION})"
            )
        needed = ["abs_model", "sq_model"] + (["encoder"] if data.get("categorical") else [])
        missing = [k for k in needed if models.get(k) is None]
        if missing:
            raise DataError(f"loss estimator lacks its fitted {', '.join(missing)}")
        try:
            return cls(
                numeric=tuple(data["numeric"]),
                categorical=tuple(data["categorical"]),
                encoder=models.get("encoder"),
                abs_model=models["abs_model"],
                sq_model=models["sq_model"],
                n_reference=int(data["n_reference"]),
                sq_relative_var=float(data["sq_relative_var"]),
                ranges={k: (float(v[0]), float(v[1])) for k, v in data["ranges"].items()},
                prediction_range=(
                    float(data["prediction_range"][0]),
                    float(data["prediction_range"][1]),
                ),
                categories={k: tuple(v) for k, v in data["categories"].items()},
                sklearn_version=str(data["sklearn_version"]),
                seed=int(data["seed"]),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise DataError(f"loss estimator field is missing or malformed: {e!r}") from e

    def _design(self, inputs: pd.DataFrame, predictions: Any) -> tuple[pd.DataFrame, np.ndarray]:
        frame = check_inputs(inputs, self.numeric, self.categorical)
        pred = check_values(predictions, "predictions", len(frame))
        parts = [frame[list(self.numeric)].to_numpy(dtype=float)]
        if self.categorical:
            parts.append(self.encoder.transform(frame[list(self.categorical)]))
        return frame, np.column_stack([*parts, pred])

    def _outside(self, frame: pd.DataFrame, pred: np.ndarray) -> float:
        low, high = self.prediction_range
        out = (pred < low) | (pred > high)
        for col, (low, high) in self.ranges.items():
            v = frame[col].to_numpy(dtype=float)
            out |= (v < low) | (v > high)
        for col, seen in self.categories.items():
            text = frame[col]
            out |= text.notna().to_numpy() & ~text.isin(seen).to_numpy()
        return float(out.mean())


def fit_loss_estimator(
    inputs: pd.DataFrame,
    predictions: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    seed: int = 0,
) -> DirectLossEstimator:
    """Learn the models of the absolute and the squared error on labelled held-out rows.

    The rows must be the champion's own holdout: on its training rows the errors are small and
    so would the estimate be. Numeric columns (any numeric or boolean dtype; missing values are
    allowed) are used as numbers, text or categorical columns as categories (native categorical
    splits; categories unseen here are treated as missing).

    Args:
        inputs: the model's input features on the held-out rows.
        predictions: the model's predictions on those rows.
        y: the true values.
        seed: the boosting models' random state.

    Raises:
        DataError: a column is neither numeric nor text, there are no columns or fewer than
            50 rows, lengths differ, or predictions or y are missing or non-finite.
    """
    from sklearn import __version__ as sklearn_version
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.preprocessing import OrdinalEncoder

    if not isinstance(inputs, pd.DataFrame):
        raise DataError(f"inputs must be a pandas DataFrame, got {type(inputs).__name__}")
    numeric, categorical = [], []
    for col in inputs.columns:
        if not isinstance(col, str):
            raise DataError(f"input column names must be text, got {col!r}")
        dtype = inputs[col].dtype
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            numeric.append(col)
        elif is_text(dtype):
            categorical.append(col)
        else:
            raise DataError(
                f"input column {col!r} has dtype {dtype}; expected numbers (float) or categories "
                "(text)"
            )
    if not numeric and not categorical:
        raise DataError("inputs has no columns: the loss models need the model's inputs")
    frame = check_inputs(inputs, tuple(numeric), tuple(categorical))
    pred = check_values(predictions, "predictions", len(frame))
    target = check_values(y, "y", len(frame))
    if len(frame) < 50:
        raise DataError(f"inputs has {len(frame)} rows; the loss models need at least 50")
    encoder = None
    parts = [frame[numeric].to_numpy(dtype=float)]
    if categorical:
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
            max_categories=255,  # HistGradientBoosting's limit per feature
        ).fit(frame[categorical])
        parts.append(encoder.transform(frame[categorical]))
    x = np.column_stack([*parts, pred])
    is_cat = [False] * len(numeric) + [True] * len(categorical) + [False]

    def model() -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            max_iter=200,
            learning_rate=0.05,
            max_leaf_nodes=15,
            min_samples_leaf=40,
            l2_regularization=1.0,
            categorical_features=is_cat,
            early_stopping=True,
            validation_fraction=0.15,
            n_iter_no_change=15,
            random_state=seed,
        )

    err = target - pred
    abs_model = model().fit(x, np.abs(err))
    sq_model = model().fit(x, err**2)
    s2 = np.clip(sq_model.predict(x), 1e-12, None)
    ranges = {
        col: (float(np.nanmin(v)), float(np.nanmax(v)))
        for col in numeric
        if np.isfinite(v := frame[col].to_numpy(dtype=float)).any()
    }
    categories = {}
    if encoder is not None:
        for col, seen in zip(categorical, encoder.categories_, strict=True):
            categories[col] = tuple(v for v in seen if isinstance(v, str))
    return DirectLossEstimator(
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        encoder=encoder,
        abs_model=abs_model,
        sq_model=sq_model,
        n_reference=len(frame),
        sq_relative_var=float(np.var(err**2 / s2)),
        ranges=ranges,
        prediction_range=(float(pred.min()), float(pred.max())),
        categories=categories,
        sklearn_version=sklearn_version,
        seed=seed,
    )


def _mean_estimate(values: np.ndarray, variances: np.ndarray) -> MetricEstimate:
    n = len(values)
    return _interval(float(values.mean()), math.sqrt(float(variances.sum())) / n)


def _interval(value: float, se: float) -> MetricEstimate:
    return MetricEstimate(
        value=round(value, 6),
        standard_error=round(se, 6),
        lower=round(max(0.0, value - _Z95 * se), 6),
        upper=round(value + _Z95 * se, 6),
    )

"""Performance without labels beyond binary classification: multiclass CBPE and regression DLE.

Multiclass (confidence-based performance estimation). Each class's score is calibrated one
against the rest on the labelled reference (`estimate.fit_estimator`, isotonic or Platt), and the
calibrated rows are renormalised to sum to 1: row i is then a fractional member of every class k
(weight q_ik). The predicted class stays the argmax of the model's own probabilities, so the
expected confusion matrix is E[C_ab] = sum of q_ia over the rows predicted b, and accuracy,
per-class recall, precision and F1, macro and weighted F1 follow from it; log loss and the
multiclass Brier score are linear in the labels; one-vs-rest ROC AUC is the binary expected AUC
of each class's score column.

Regression (direct loss estimation, as NannyML's DLE). Two gradient-boosted models learn, on the
champion's own held-out rows, E[|y - prediction| | inputs, prediction] and E[(y - prediction)^2
| inputs, prediction]; a batch's MAE is the mean of the first, its RMSE the square root of the
mean of the second.

Both hold under covariate shift (the inputs move, P(y | x) stays) and are blind to concept
drift (P(y | x) changes): the inputs and the scores do not move when only the labels' meaning
does. Only labels reveal that.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlops_loop.core.errors import DataError
from mlops_loop.core.estimate import (
    ConfidenceEstimator,
    MetricEstimate,
    PerformanceEstimate,
    _expected_auc,
    fit_estimator,
)

SCHEMA_VERSION = 1
_EPS = 1e-7  # as estimate.py and performance.metric_value clip scores
_Z95 = 1.959963984540054
_ROW_SUM_TOLERANCE = 1e-6

MULTICLASS_SE_METHOD = (
    "analytic: each row's label drawn from its calibrated class distribution (categorical, rows "
    "independent); exact variance for accuracy, precision_<class>, log_loss and brier, delta "
    "method on the label sums for recall_<class>, f1_macro, f1_weighted and roc_auc_ovr"
)
REGRESSION_SE_METHOD = (
    "analytic: rows' errors independent given the inputs; mae: Var|e_i| = E[e_i^2] - E[|e_i|]^2 "
    "from the two loss models; rmse: Var(e_i^2) = E[e_i^2]^2 * the variance of e^2 / E[e^2] "
    "measured on the reference rows, then the delta method for the square root. Neither "
    "includes the loss models' own error"
)


# ---------------------------------------------------------------- multiclass


@dataclass(frozen=True)
class MulticlassConfidenceEstimator:
    """One-vs-rest calibration maps, one per class, learnt on labelled reference data.

    Build it with `fit_multiclass_estimator`; save it with `to_dict` (plain JSON) and load it
    with `from_dict`.
    """

    classes: tuple[str, ...]
    estimators: tuple[ConfidenceEstimator, ...]
    schema_version: int = field(default=SCHEMA_VERSION)

    def calibrate(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities (n, k), each row summing to 1.

        A row whose calibrated values are all 0 (isotonic maps can be flat at 0) keeps the
        model's own probabilities.

        Raises:
            DataError: the array is not (n, k) probabilities whose rows sum to 1.
        """
        return self._calibrate(_check_probabilities(probabilities, len(self.classes)))

    def _calibrate(self, p: np.ndarray) -> np.ndarray:
        q = np.column_stack([e.calibrate(p[:, j]) for j, e in enumerate(self.estimators)])
        total = q.sum(axis=1, keepdims=True)
        flat = total[:, 0] <= 1e-12
        q[flat], total[flat] = p[flat], 1.0
        return q / total

    def estimate(
        self, probabilities: np.ndarray, *, max_outside_share: float = 0.05
    ) -> PerformanceEstimate:
        """Estimate the batch's metrics from its class probabilities alone.

        Args:
            probabilities: the model's `predict_proba` on the batch, columns in `classes` order.
            max_outside_share: warn when more than this share of the rows has a class score
                outside the range that class's calibration saw on the reference.

        Raises:
            DataError: the array is empty, not (n, k), has missing values, values outside
                [0, 1] or rows not summing to 1.
        """
        p = _check_probabilities(probabilities, len(self.classes))
        if len(p) == 0:
            raise DataError("probabilities is empty: there is nothing to estimate")
        low = np.array([e.score_min for e in self.estimators])
        high = np.array([e.score_max for e in self.estimators])
        outside = float(np.mean(((p < low) | (p > high)).any(axis=1)))
        result = expected_multiclass_metrics(self._calibrate(p), p, self.classes)
        warning = None
        if outside > max_outside_share:
            warning = (
                f"{outside:.1%} of the rows have a class score outside the reference's range "
                f"for that class (more than {max_outside_share:.1%}): the calibration is "
                "extrapolated there and the estimate may be off"
            )
        methods = sorted({e.method for e in self.estimators})
        return PerformanceEstimate(
            n=result.n,
            threshold=result.threshold,
            calibration="one-vs-rest " + "/".join(methods),
            metrics=result.metrics,
            expected_confusion=result.expected_confusion,
            share_outside_reference=round(outside, 6),
            warning=warning,
            standard_error_method=MULTICLASS_SE_METHOD,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "classes": list(self.classes),
            "estimators": [e.to_dict() for e in self.estimators],
        }

    @classmethod
    def from_dict(cls, data: Any) -> MulticlassConfidenceEstimator:
        """Rebuild an estimator saved with `to_dict`.

        Raises:
            DataError: the mapping lacks a field, has an unknown one or another schema version;
                `classes` is not a list of distinct names; `estimators` is not one valid
                calibration per class (the message names the field and the class).
        """
        if not isinstance(data, dict):
            raise DataError(
                f"multiclass confidence estimator must be a mapping, got {type(data).__name__}"
            )
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise DataError(
                f"multiclass confidence estimator schema_version {version!r} is not supported "
                f"(expected {SCHEMA_VERSION})"
            )
        fields = {"schema_version", "classes", "estimators"}
        unknown, missing = sorted(set(data) - fields), sorted(fields - set(data))
        if unknown:
            raise DataError(f"multiclass confidence estimator has unknown fields {unknown}")
        if missing:
            raise DataError(f"multiclass confidence estimator lacks fields {missing}")
        classes = _check_classes(data["classes"], "classes")
        raw = data["estimators"]
        if not isinstance(raw, list) or len(raw) != len(classes):
            raise DataError(
                f"estimators must be a list of {len(classes)} calibrations (one per class), got "
                f"{len(raw) if isinstance(raw, list) else type(raw).__name__}"
            )
        estimators = []
        for j, (name, item) in enumerate(zip(classes, raw, strict=True)):
            if not isinstance(item, dict):
                raise DataError(f"estimators[{j}] (class {name!r}) must be a mapping")
            try:
                estimators.append(ConfidenceEstimator.from_dict(item))
            except (DataError, TypeError) as e:
                raise DataError(f"estimators[{j}] (class {name!r}): {e}") from e
        return cls(classes=classes, estimators=tuple(estimators))


def fit_multiclass_estimator(
    probabilities: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    method: Literal["auto", "isotonic", "platt"] = "auto",
    *,
    min_isotonic_rows: int = 1000,
    min_isotonic_class: int = 100,
) -> MulticlassConfidenceEstimator:
    """Learn one-vs-rest calibration maps on labelled reference data.

    Each class's score column is calibrated against "this class or not" by
    `estimate.fit_estimator`: isotonic with at least `min_isotonic_rows` rows and
    `min_isotonic_class` rows of the class (or of the rest, if rarer), else Platt scaling. Each
    map says which it used and why. As for binary, the reference must be a holdout.

    Args:
        probabilities: the model's `predict_proba` on the reference, (n, k).
        labels: the reference's true class as an index 0..k-1 into `classes`.
        classes: the k class names, in the columns' order.
        method: "auto", or force "isotonic" or "platt" for every class.

    Raises:
        DataError: shapes disagree, probabilities are missing, outside [0, 1] or rows do not sum
            to 1, a label is not an index 0..k-1, a class has no reference rows, or `method` is
            unknown.
    """
    names = _check_classes(classes, "classes")
    p = _check_probabilities(probabilities, len(names))
    y = _check_class_labels(labels, len(names), len(p))
    if method not in ("auto", "isotonic", "platt"):
        raise DataError(f"calibration method {method!r} is not one of auto, isotonic, platt")
    counts = np.bincount(y, minlength=len(names))
    absent = [names[j] for j in np.flatnonzero(counts == 0)]
    if absent:
        raise DataError(
            f"classes {absent} have no rows in labels ({len(y)} rows): one-vs-rest calibration "
            "needs rows of every class"
        )
    estimators = tuple(
        fit_estimator(
            p[:, j],
            (y == j).astype(int),
            method=method,
            min_isotonic_rows=min_isotonic_rows,
            min_isotonic_class=min_isotonic_class,
        )
        for j in range(len(names))
    )
    return MulticlassConfidenceEstimator(classes=names, estimators=estimators)


def expected_multiclass_metrics(
    calibrated: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]
) -> PerformanceEstimate:
    """Expected metrics when row i is of class k with probability `calibrated[i, k]`.

    The pure core of the estimate: `probabilities` (the model's) decide the predicted class
    (argmax) and the rankings, `calibrated` gives each row's class distribution. With one-hot
    `calibrated` rows the result equals the realized metrics.

    Raises:
        DataError: the arrays are empty or of other shapes, or are not probability rows.
    """
    names = _check_classes(classes, "classes")
    k = len(names)
    q = _check_probabilities(calibrated, k, "calibrated")
    s = np.clip(_check_probabilities(probabilities, k), _EPS, 1 - _EPS)
    n = len(q)
    if len(s) != n or n == 0:
        raise DataError(
            f"calibrated has {n} rows and probabilities has {len(s)}; expected the same, "
            "non-zero number of rows"
        )
    pred = np.argmax(probabilities, axis=1)
    hot = np.eye(k, dtype=bool)[pred]  # hot[i, c]: row i is predicted c
    metrics: dict[str, MetricEstimate] = {}

    def put(name: str, value: float | None, coef: np.ndarray | None, upper: float = 1.0) -> None:
        # To first order each metric is sum_ik c_ik Y_ik over one-hot labels Y_i ~ Cat(q_i),
        # independent rows: its variance is sum_i (sum_k q_ik c_ik^2 - (sum_k q_ik c_ik)^2).
        if value is None:
            metrics[name] = MetricEstimate(None, None, None, None)
            return
        se = 0.0
        if coef is not None:
            var = np.sum(q * coef**2, axis=1) - np.sum(q * coef, axis=1) ** 2
            se = math.sqrt(max(float(var.sum()), 0.0))
        metrics[name] = MetricEstimate(
            value=round(value, 6),
            standard_error=round(se, 6),
            lower=round(max(0.0, value - _Z95 * se), 6),
            upper=round(min(upper, value + _Z95 * se), 6),
        )

    put("accuracy", float(q[hot].sum()) / n, hot / n)
    n_pp = hot.sum(axis=0).astype(float)  # predicted per class (fixed)
    tp = (q * hot).sum(axis=0)
    pos = q.sum(axis=0)  # expected true per class
    d = n_pp + pos
    f1 = np.divide(2 * tp, d, out=np.zeros(k), where=d > 0)
    safe_d = np.where(d > 0, d, 1.0)
    # d f1_c / d Y_ic: 2 (d - tp) / d^2 on rows predicted c, -2 tp / d^2 elsewhere
    f1_coef = np.where(hot, 2 * (safe_d - tp), -2 * tp) / safe_d**2 * (d > 0)
    put("f1_macro", float(f1.mean()), f1_coef / k)
    # f1_weighted = sum_c pos_c f1_c / n = sum_c 2 tp_c pos_c / (n d_c)
    w_coef = (np.where(hot, 2 * pos / safe_d, 0.0) + 2 * tp * n_pp / safe_d**2) * (d > 0) / n
    put("f1_weighted", float((pos * f1).sum()) / n, w_coef)
    log_s = np.log(s)
    put("log_loss", float(-(q * log_s).sum()) / n, -log_s / n, upper=math.inf)
    put(
        "brier",
        float(((s**2).sum(axis=1) - 2 * (q * s).sum(axis=1) + 1).sum()) / n,
        -2 * s / n,
        upper=2.0,
    )
    aucs, auc_coef = [], np.zeros((n, k))
    for c in range(k):
        auc, coef = _expected_auc(q[:, c], s[:, c], q[:, c] * (1 - q[:, c]))
        aucs.append(auc)
        if coef is not None:
            auc_coef[:, c] = coef / k
    if any(a is None for a in aucs):
        put("roc_auc_ovr", None, None)
    else:
        put("roc_auc_ovr", float(np.mean([a for a in aucs if a is not None])), auc_coef)
    confusion: dict[str, float] = {}
    for c, name in enumerate(names):
        col = np.zeros((n, k))
        col[:, c] = np.where(hot[:, c], pos[c] - tp[c], -tp[c]) / pos[c] ** 2 if pos[c] else 0
        put(f"recall_{name}", float(tp[c] / pos[c]) if pos[c] > 0 else 0.0, col if pos[c] else None)
        col = np.zeros((n, k))
        col[:, c] = hot[:, c] / n_pp[c] if n_pp[c] else 0
        put(
            f"precision_{name}",
            float(tp[c] / n_pp[c]) if n_pp[c] > 0 else 0.0,
            col if n_pp[c] else None,
        )
        confusion[f"tp_{name}"] = round(float(tp[c]), 6)
        confusion[f"fp_{name}"] = round(float(n_pp[c] - tp[c]), 6)
        confusion[f"fn_{name}"] = round(float(pos[c] - tp[c]), 6)
        confusion[f"tn_{name}"] = round(float(n - n_pp[c] - pos[c] + tp[c]), 6)
    return PerformanceEstimate(
        n=n,
        # unused: the predicted class is the argmax (for two classes, a 0.5 threshold)
        threshold=0.5,
        calibration="given",
        metrics=metrics,
        expected_confusion=confusion,
        share_outside_reference=0.0,
        standard_error_method=MULTICLASS_SE_METHOD,
    )


def _check_classes(classes: Any, name: str) -> tuple[str, ...]:
    if isinstance(classes, str) or not isinstance(classes, Sequence | np.ndarray):
        raise DataError(f"{name} must be a list of class names, got {type(classes).__name__}")
    names = tuple(classes)
    bad = [c for c in names if not isinstance(c, str) or not c]
    if bad:
        raise DataError(f"{name} must be non-empty strings, got {bad[:3]!r}")
    if len(names) < 2 or len(set(names)) != len(names):
        raise DataError(f"{name} must be at least two distinct names, got {list(names)!r}")
    return names


def _check_probabilities(values: Any, k: int, name: str = "probabilities") -> np.ndarray:
    try:
        p = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name} must be numbers (an (n, {k}) array of probabilities): {e}") from e
    if p.ndim != 2 or p.shape[1] != k:
        raise DataError(f"{name} must have shape (n, {k}) (one column per class), got {p.shape}")
    bad = np.argwhere(~np.isfinite(p))
    if len(bad):
        raise DataError(
            f"{name} has {len(bad)} missing or non-finite values (first at row {bad[0][0]}, "
            f"column {bad[0][1]}); expected probabilities in [0, 1]"
        )
    out = np.argwhere((p < 0) | (p > 1))
    if len(out):
        i, j = out[0]
        raise DataError(
            f"{name} has {len(out)} values outside [0, 1] (first at row {i}, column {j}: "
            f"{float(p[i, j])!r}); expected predict_proba output, not decision scores"
        )
    off = np.flatnonzero(np.abs(p.sum(axis=1) - 1.0) > _ROW_SUM_TOLERANCE)
    if len(off):
        i = int(off[0])
        raise DataError(
            f"{name} has {len(off)} rows not summing to 1 within {_ROW_SUM_TOLERANCE:g} (first: "
            f"row {i} sums to {float(p[i].sum())!r}); expected one probability per class"
        )
    return p


def _check_class_labels(values: Any, k: int, n: int) -> np.ndarray:
    raw = np.asarray(values)
    if raw.ndim != 1:
        raise DataError(f"labels must be one-dimensional, got shape {raw.shape}")
    if len(raw) != n:
        raise DataError(
            f"probabilities has {n} rows but labels has {len(raw)}; they must be the same rows"
        )
    try:
        y = raw.astype(float)
    except (TypeError, ValueError) as e:
        raise DataError(f"labels must be class indices 0..{k - 1}: {e}") from e
    bad = np.flatnonzero(~np.isin(y, np.arange(k)))
    if len(bad):
        value = raw[bad[0]]
        raise DataError(
            f"labels has {len(bad)} values that are not class indices 0..{k - 1} (first at "
            f"position {int(bad[0])}: {value.item() if isinstance(value, np.generic) else value!r})"
        )
    return y.astype(int)


# ---------------------------------------------------------------- regression


@dataclass(frozen=True, eq=False)
class DirectLossEstimator:
    """Models of a regressor's absolute and squared error given its inputs and its prediction.

    Build it with `fit_loss_estimator`; save it with `save` and load it with `load` (one
    joblib file: the models are not JSON). Loading unpickles: load only files you wrote.
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

    def save(self, path: Path) -> None:
        """Write the estimator to one file, atomically (a temp file, then `os.replace`)."""
        import joblib

        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                joblib.dump({"schema_version": self.schema_version, "estimator": self}, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> DirectLossEstimator:
        """Read an estimator written by `save`. Unpickles: load only files you wrote.

        Raises:
            DataError: the file is missing, unreadable, not a loss estimator, or of another
                schema_version.
        """
        import joblib

        try:
            payload = joblib.load(Path(path))
        except FileNotFoundError as e:
            raise DataError(f"no loss estimator at {path}") from e
        except Exception as e:
            raise DataError(f"{path} is not a readable loss estimator: {e}") from e
        if not isinstance(payload, dict) or not isinstance(payload.get("estimator"), cls):
            raise DataError(f"{path} does not hold a DirectLossEstimator")
        version = payload.get("schema_version")
        if version != SCHEMA_VERSION or payload["estimator"].schema_version != SCHEMA_VERSION:
            raise DataError(
                f"loss estimator {path} has schema_version {version!r}, which is not supported "
                f"(expected {SCHEMA_VERSION})"
            )
        return payload["estimator"]

    def _design(self, inputs: pd.DataFrame, predictions: Any) -> tuple[pd.DataFrame, np.ndarray]:
        frame = _check_inputs(inputs, self.numeric, self.categorical)
        pred = _check_values(predictions, "predictions", len(frame))
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
        elif _is_text(dtype):
            categorical.append(col)
        else:
            raise DataError(
                f"input column {col!r} has dtype {dtype}; expected numbers (float) or categories "
                "(text)"
            )
    if not numeric and not categorical:
        raise DataError("inputs has no columns: the loss models need the model's inputs")
    frame = _check_inputs(inputs, tuple(numeric), tuple(categorical))
    pred = _check_values(predictions, "predictions", len(frame))
    target = _check_values(y, "y", len(frame))
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


def _is_text(dtype: Any) -> bool:
    return (
        pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    )


def _check_inputs(
    inputs: Any, numeric: tuple[str, ...], categorical: tuple[str, ...]
) -> pd.DataFrame:
    if not isinstance(inputs, pd.DataFrame):
        raise DataError(f"inputs must be a pandas DataFrame, got {type(inputs).__name__}")
    missing = [c for c in (*numeric, *categorical) if c not in inputs.columns]
    if missing:
        raise DataError(f"inputs lacks columns {missing}: the loss models were fitted on them")
    out = {}
    for col in numeric:
        dtype = inputs[col].dtype
        if not (pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype)):
            raise DataError(f"input column {col!r} has dtype {dtype}; expected numbers (float)")
        out[col] = inputs[col].astype(float)
    for col in categorical:
        v = inputs[col]
        if not _is_text(v.dtype):
            raise DataError(
                f"input column {col!r} has dtype {v.dtype}; expected categories as text"
            )
        # text, with missing values as NaN (OrdinalEncoder encodes them as missing)
        out[col] = v.astype(object).map(lambda s: np.nan if pd.isna(s) else str(s))
    return pd.DataFrame(out, index=inputs.index)


def _check_values(values: Any, name: str, n: int) -> np.ndarray:
    try:
        v = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name} must be numbers: {e}") from e
    if v.ndim != 1 or len(v) != n:
        raise DataError(f"{name} must be one value per input row ({n}), got shape {v.shape}")
    bad = np.flatnonzero(~np.isfinite(v))
    if len(bad):
        raise DataError(
            f"{name} has {len(bad)} missing or non-finite values (first at position "
            f"{int(bad[0])}); expected finite numbers"
        )
    return v


__all__ = [
    "DirectLossEstimator",
    "MulticlassConfidenceEstimator",
    "expected_multiclass_metrics",
    "fit_loss_estimator",
    "fit_multiclass_estimator",
]

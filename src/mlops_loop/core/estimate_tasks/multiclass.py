"""Multiclass CBPE: one-vs-rest calibration, renormalised, and the expected metrics it gives."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mlops_loop.core.errors import DataError
from mlops_loop.core.estimate import (
    ConfidenceEstimator,
    MetricEstimate,
    PerformanceEstimate,
    _expected_auc,
    fit_estimator,
)
from mlops_loop.core.estimate_tasks.multiclass_inputs import (
    check_class_labels,
    check_classes,
    check_probabilities,
)

SCHEMA_VERSION = 1
_EPS = 1e-7  # as estimate.py and performance.metric_value clip scores
_Z95 = 1.959963984540054
MULTICLASS_SE_METHOD = (
    "analytic: each row's label drawn from its calibrated class distribution (categorical, rows "
    "independent); exact variance for accuracy, precision_<class>, log_loss and brier, delta "
    "method on the label sums for recall_<class>, f1_macro, f1_weighted and roc_auc_ovr"
)


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
        return self._calibrate(check_probabilities(probabilities, len(self.classes)))

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
        p = check_probabilities(probabilities, len(self.classes))
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
        classes = check_classes(data["classes"], "classes")
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
    names = check_classes(classes, "classes")
    p = check_probabilities(probabilities, len(names))
    y = check_class_labels(labels, len(names), len(p))
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
    names = check_classes(classes, "classes")
    k = len(names)
    q = check_probabilities(calibrated, k, "calibrated")
    s = np.clip(check_probabilities(probabilities, k), _EPS, 1 - _EPS)
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

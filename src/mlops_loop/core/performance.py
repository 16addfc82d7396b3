"""Model performance on labelled data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlops_loop.core.tasks import (
    BINARY_METRICS,
    LOWER_IS_BETTER,
    MULTICLASS_METRICS,
    REGRESSION_METRICS,
    SCALED_METRICS,
    TASK_METRICS,
)


def metric_value(
    name: str, y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> float:
    """One metric of a model's scores (`core.tasks`: the positive class's probability, an
    (n, k) probability matrix, or predicted values), by the metric's task; NaN where it is
    undefined (one class only, no rows)."""
    scores = np.asarray(scores, dtype=float)
    if name in REGRESSION_METRICS:
        return regression_metric(name, np.asarray(y_true, dtype=float), scores)
    if scores.ndim == 2 or name in MULTICLASS_ONLY or name.startswith(("recall_", "precision_")):
        return multiclass_metric(name, np.asarray(y_true, dtype=int), scores)
    return binary_metric(name, y_true, scores, threshold)


MULTICLASS_ONLY = frozenset(MULTICLASS_METRICS) - frozenset(BINARY_METRICS)


def binary_metric(name: str, y_true: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """One metric of a binary classifier's scores; NaN where it is undefined (one class)."""
    from sklearn import metrics

    y_true = np.asarray(y_true)
    scores = np.clip(np.asarray(scores, dtype=float), 1e-7, 1 - 1e-7)
    if name == "roc_auc":
        return roc_auc(y_true, scores)
    if name == "accuracy":
        return float(np.mean((scores >= threshold) == y_true))
    if name == "f1":
        return float(metrics.f1_score(y_true, scores >= threshold, zero_division=0.0))
    if name == "recall":
        return float(metrics.recall_score(y_true, scores >= threshold, zero_division=0.0))
    if name == "precision":
        return float(metrics.precision_score(y_true, scores >= threshold, zero_division=0.0))
    if name == "brier":
        return float(np.mean((scores - y_true) ** 2))
    if name == "log_loss":
        return float(metrics.log_loss(y_true, scores, labels=[0, 1]))
    raise ValueError(f"unknown metric {name!r}")


def multiclass_metric(name: str, y_true: np.ndarray, proba: np.ndarray) -> float:
    """One metric of a multiclass model's (n, k) probabilities against class indices; NaN
    where undefined. `recall_<i>`/`precision_<i>` name a class by its index."""
    from sklearn import metrics

    n, k = proba.shape
    if n == 0:
        return math.nan
    predicted = np.argmax(proba, axis=1)
    if name == "accuracy":
        return float(np.mean(predicted == y_true))
    if name in ("f1_macro", "f1_weighted"):
        average = name.removeprefix("f1_")
        return float(
            metrics.f1_score(y_true, predicted, labels=range(k), average=average, zero_division=0.0)
        )
    if name == "log_loss":
        p = np.clip(proba[np.arange(n), y_true], 1e-15, 1.0)
        return float(-np.mean(np.log(p)))
    if name == "brier":
        onehot = np.zeros_like(proba)
        onehot[np.arange(n), y_true] = 1.0
        return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))
    if name == "roc_auc_ovr":
        aucs = [roc_auc(y_true == c, proba[:, c]) for c in range(k)]
        valid = [a for a in aucs if not math.isnan(a)]
        return float(np.mean(valid)) if len(valid) == k else math.nan
    for prefix, fn in (("recall_", metrics.recall_score), ("precision_", metrics.precision_score)):
        if name.startswith(prefix):
            c = int(name.removeprefix(prefix))
            return float(fn(y_true == c, predicted == c, zero_division=0.0))
    raise ValueError(f"unknown multiclass metric {name!r}")


def regression_metric(name: str, y_true: np.ndarray, predicted: np.ndarray) -> float:
    """One metric of a regressor's predictions; NaN without rows (and `r2` with a constant
    target, `mape` when every target is zero)."""
    if len(y_true) == 0:
        return math.nan
    error = predicted - y_true
    if name == "rmse":
        return float(np.sqrt(np.mean(error**2)))
    if name == "mae":
        return float(np.mean(np.abs(error)))
    if name == "median_ae":
        return float(np.median(np.abs(error)))
    if name == "r2":
        total = float(np.sum((y_true - y_true.mean()) ** 2))
        return math.nan if total == 0 else 1.0 - float(np.sum(error**2)) / total
    if name == "mape":
        # Rows whose target is zero have no relative error; they are left out.
        nonzero = y_true != 0
        if not nonzero.any():
            return math.nan
        return float(np.mean(np.abs(error[nonzero] / y_true[nonzero])))
    raise ValueError(f"unknown regression metric {name!r}")


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank sum (ties count one half, as in scikit-learn's
    `roc_auc_score`); NaN with one class. Without scikit-learn's input validation it is fast
    enough for a paired bootstrap's hundreds of resamples."""
    from scipy.stats import rankdata

    y = np.asarray(y_true).astype(bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(np.asarray(scores, dtype=float))
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def compute_metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    task: str = "binary",
    classes: Sequence[Any] | None = None,
) -> dict[str, float | int | None]:
    """Every metric the loop reports for the task, plus the sample size and: the positive
    rate (binary), each class's share, recall and precision (multiclass, named by the class),
    the target's mean (regression)."""
    out: dict[str, float | int | None] = {"n": int(len(y_true))}
    if len(y_true) == 0:
        return out
    scores = np.asarray(scores, dtype=float)
    for name in TASK_METRICS[task]:
        value = metric_value(name, y_true, scores)
        out[name] = None if math.isnan(value) else round(value, 6)
    if task == "binary":
        out["positive_rate"] = round(float(np.mean(y_true)), 6)
    elif task == "multiclass":
        names = list(classes) if classes is not None else list(range(scores.shape[1]))
        y = np.asarray(y_true, dtype=int)
        for i, c in enumerate(names):
            out[f"share_{c}"] = round(float(np.mean(y == i)), 6)
            for kind in ("recall", "precision"):
                value = metric_value(f"{kind}_{i}", y, scores)
                out[f"{kind}_{c}"] = None if math.isnan(value) else round(value, 6)
    else:
        out["target_mean"] = round(float(np.mean(y_true)), 6)
    return out


def improvement(name: str, challenger: float, champion: float) -> float:
    """How much better `challenger` is than `champion` (positive is better) for metric `name`."""
    return champion - challenger if name in LOWER_IS_BETTER else challenger - champion


def performance_drop(name: str, metric: float, baseline: float) -> float:
    """How much worse `metric` is than `baseline` (positive is worse): the difference, or, for
    a metric in the target's units (rmse, mae, median_ae), the difference as a share of the
    baseline, so that one `retrain.metric_drop` fits every scale (0.05: 5% worse)."""
    drop = -improvement(name, metric, baseline)
    if name in SCALED_METRICS and baseline:
        return drop / abs(baseline)
    return drop

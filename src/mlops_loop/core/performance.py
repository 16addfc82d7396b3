"""Model performance on labelled data."""

from __future__ import annotations

import math

import numpy as np

from mlops_loop.core.config import LOWER_IS_BETTER, METRICS


def metric_value(
    name: str, y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> float:
    """One metric of a binary classifier's scores; NaN where it is undefined (one class only)."""
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


def compute_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float | int | None]:
    """Every metric the loop reports, plus the sample size and positive rate."""
    out: dict[str, float | int | None] = {"n": int(len(y_true))}
    if len(y_true) == 0:
        return out
    for name in METRICS:
        value = metric_value(name, y_true, scores)
        out[name] = None if math.isnan(value) else round(value, 6)
    out["positive_rate"] = round(float(np.mean(y_true)), 6)
    return out


def improvement(name: str, challenger: float, champion: float) -> float:
    """How much better `challenger` is than `champion` (positive is better) for metric `name`."""
    return champion - challenger if name in LOWER_IS_BETTER else challenger - champion

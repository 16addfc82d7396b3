"""Performance without labels: confidence-based estimation (CBPE) for binary classifiers.

Labels often arrive late or never. If the model's calibrated probability of the positive class
is right, every row of an unlabelled batch is a fractional positive (weight p) and a fractional
negative (weight 1 - p), and each metric's expected value follows from those weights: the
expected confusion matrix (E[TP] = sum of p over predicted positives, and so on) gives accuracy,
precision, recall and F1; the expected number of correctly ordered positive/negative pairs
gives ROC AUC. Calibration is learnt once, on the labelled reference data.

The estimate holds under covariate shift (the inputs move, P(y | x) stays), as long as the
calibrated probability stays right, i.e. P(y | score) does not change. It cannot see concept
drift (P(y | x) changes): the scores, and so the estimate, do not change when only the labels'
meaning does. Only labels reveal that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from mlops_loop.core.config import METRICS
from mlops_loop.core.errors import DataError

SCHEMA_VERSION = 1
#: Scores are clipped like `performance.metric_value` clips them, so ranks and log loss agree.
_EPS = 1e-7
_Z95 = 1.959963984540054
CalibrationMethod = Literal["isotonic", "platt"]


@dataclass(frozen=True)
class MetricEstimate:
    """One estimated metric: the expected value and its sampling uncertainty.

    `standard_error` is the spread of the realized metric around `value` that label noise alone
    causes on this batch (labels drawn independently as Bernoulli(calibrated p)); it does not
    include the error of the calibration itself. `lower`/`upper` is the normal 95% interval,
    clipped to the metric's range.
    """

    value: float | None
    standard_error: float | None
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class PerformanceEstimate:
    """Estimated metrics of one unlabelled batch (keys mirror `performance.compute_metrics`)."""

    n: int
    threshold: float
    calibration: str
    metrics: dict[str, MetricEstimate]
    expected_confusion: dict[str, float]
    share_outside_reference: float
    warning: str | None = None
    standard_error_method: str = (
        "analytic: exact Poisson-binomial variance for accuracy, precision, brier, log_loss and "
        "positive_rate; delta method on the independent Bernoulli label sums for recall, f1 "
        "and roc_auc"
    )
    schema_version: int = SCHEMA_VERSION

    def values(self) -> dict[str, float | int | None]:
        """Point estimates in the shape of `performance.compute_metrics` (with `n`)."""
        out: dict[str, float | int | None] = {"n": self.n}
        out.update({k: m.value for k, m in self.metrics.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ConfidenceEstimator:
    """A calibration map from the model's score to P(y = 1), learnt on labelled reference data.

    Build it with `fit_estimator`; save it with `to_dict` (plain JSON) next to the reference
    snapshot and load it with `from_dict`.
    """

    method: CalibrationMethod
    reason: str
    n_reference: int
    n_positive: int
    score_min: float
    score_max: float
    #: isotonic: the knots of the piecewise-linear map (scikit-learn's X_/y_thresholds_).
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    #: platt: P(y = 1) = sigmoid(slope * logit(score) + intercept).
    slope: float | None = None
    intercept: float | None = None
    schema_version: int = field(default=SCHEMA_VERSION)

    def calibrate(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """Calibrated P(y = 1) for each score.

        Raises:
            DataError: a score is missing, not finite or outside [0, 1].
        """
        return self._calibrate(_clip(_check_scores(scores, "scores")))

    def _calibrate(self, s: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            # Same as IsotonicRegression(out_of_bounds="clip").predict: linear between knots,
            # flat beyond the reference's range.
            return np.interp(s, np.asarray(self.knots_x), np.asarray(self.knots_y))
        assert self.slope is not None and self.intercept is not None
        return _sigmoid(self.slope * _logit(s) + self.intercept)

    def estimate(
        self,
        scores: Sequence[float] | np.ndarray,
        threshold: float = 0.5,
        *,
        max_outside_share: float = 0.05,
    ) -> PerformanceEstimate:
        """Estimate the batch's metrics from its scores alone.

        Args:
            scores: the model's positive-class probabilities on the batch.
            threshold: a row is predicted positive when its score is >= threshold.
            max_outside_share: warn when more than this share of the scores lies outside the
                range of scores the calibration saw on the reference.

        Raises:
            DataError: the scores are empty, missing, not finite or outside [0, 1], or the
                threshold is not in [0, 1].
        """
        if not (isinstance(threshold, int | float) and 0.0 <= threshold <= 1.0):
            raise DataError(f"threshold must be a number in [0, 1], got {threshold!r}")
        s = _check_scores(scores, "scores")
        if len(s) == 0:
            raise DataError("scores is empty: there is nothing to estimate")
        outside = float(np.mean((s < self.score_min) | (s > self.score_max)))
        s = _clip(s)
        result = expected_metrics(self._calibrate(s), s, threshold)
        warning = None
        if outside > max_outside_share:
            warning = (
                f"{outside:.1%} of the scores lie outside the reference's score range "
                f"[{self.score_min:.4g}, {self.score_max:.4g}] (more than "
                f"{max_outside_share:.1%}): the calibration is extrapolated there and the "
                "estimate may be off"
            )
        return PerformanceEstimate(
            n=len(s),
            threshold=float(threshold),
            calibration=self.method,
            metrics=result.metrics,
            expected_confusion=result.expected_confusion,
            share_outside_reference=round(outside, 6),
            warning=warning,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["knots_x"], out["knots_y"] = list(self.knots_x), list(self.knots_y)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfidenceEstimator:
        """Rebuild an estimator saved with `to_dict`.

        Raises:
            DataError: the mapping lacks a field, has an unknown one, or another schema version.
        """
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise DataError(
                f"confidence estimator schema_version {version!r} is not supported "
                f"(expected {SCHEMA_VERSION})"
            )
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - names)
        if unknown:
            raise DataError(f"confidence estimator has unknown fields {unknown}")
        missing = sorted(
            n
            for n in ("method", "reason", "n_reference", "n_positive", "score_min", "score_max")
            if n not in data
        )
        if missing:
            raise DataError(f"confidence estimator lacks fields {missing}")
        if data["method"] not in ("isotonic", "platt"):
            raise DataError(
                f"confidence estimator method {data['method']!r} is not one of isotonic, platt"
            )
        kwargs = dict(data)
        kwargs["knots_x"] = tuple(float(v) for v in data.get("knots_x", ()))
        kwargs["knots_y"] = tuple(float(v) for v in data.get("knots_y", ()))
        estimator = cls(**kwargs)
        if estimator.method == "isotonic" and (
            len(estimator.knots_x) == 0 or len(estimator.knots_x) != len(estimator.knots_y)
        ):
            raise DataError("isotonic confidence estimator needs knots_x and knots_y of one length")
        if estimator.method == "platt" and (estimator.slope is None or estimator.intercept is None):
            raise DataError("platt confidence estimator needs slope and intercept")
        return estimator


def fit_estimator(
    reference_scores: Sequence[float] | np.ndarray,
    reference_labels: Sequence[int] | np.ndarray,
    *,
    method: Literal["auto", "isotonic", "platt"] = "auto",
    min_isotonic_rows: int = 1000,
    min_isotonic_class: int = 100,
) -> ConfidenceEstimator:
    """Learn the calibration map on labelled reference data.

    Isotonic regression makes no assumption about the shape of the map but needs data; with
    fewer than `min_isotonic_rows` rows, or fewer than `min_isotonic_class` rows of the rarer
    class, `method="auto"` falls back to Platt scaling (a logistic fit on the score's logit,
    two parameters). The estimator says which it used and why.

    The reference should be data the model was not trained on (a holdout): scores on training
    rows are over-confident, and so would the estimate be.

    Raises:
        DataError: lengths differ, a score is missing or outside [0, 1], a label is not 0/1,
            or the reference holds a single class.
    """
    s = _check_scores(reference_scores, "reference_scores")
    y = _check_labels(reference_labels, "reference_labels")
    if len(s) != len(y):
        raise DataError(
            f"reference_scores has {len(s)} rows but reference_labels has {len(y)}; "
            "they must be the same rows"
        )
    n_pos = int(y.sum())
    if n_pos in (0, len(y)):
        raise DataError(
            f"reference_labels hold a single class (all {int(n_pos > 0)}, {len(y)} rows): "
            "calibration needs both positives and negatives"
        )
    rarer = min(n_pos, len(y) - n_pos)
    if method == "auto":
        if len(y) < min_isotonic_rows:
            chosen: CalibrationMethod = "platt"
            reason = f"{len(y)} reference rows < {min_isotonic_rows}: Platt scaling"
        elif rarer < min_isotonic_class:
            chosen = "platt"
            reason = f"only {rarer} rows of the rarer class < {min_isotonic_class}: Platt scaling"
        else:
            chosen = "isotonic"
            reason = f"{len(y)} reference rows, {rarer} of the rarer class: isotonic regression"
    elif method in ("isotonic", "platt"):
        chosen, reason = method, f"{method} requested"
    else:
        raise DataError(f"calibration method {method!r} is not one of auto, isotonic, platt")
    base: dict[str, Any] = {
        "method": chosen,
        "reason": reason,
        "n_reference": len(y),
        "n_positive": n_pos,
        "score_min": float(s.min()),
        "score_max": float(s.max()),
    }
    s = _clip(s)
    if chosen == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)
        return ConfidenceEstimator(
            **base,
            knots_x=tuple(float(v) for v in iso.X_thresholds_),
            knots_y=tuple(float(v) for v in iso.y_thresholds_),
        )
    slope, intercept = _fit_platt(_logit(s), y)
    return ConfidenceEstimator(**base, slope=slope, intercept=intercept)


def expected_metrics(
    probabilities: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> PerformanceEstimate:
    """Expected metrics when row i is positive with probability `probabilities[i]`.

    The pure core of the estimate: `scores` decide the predicted class (score >= threshold)
    and the ranking, `probabilities` (already calibrated) give each row's chance of being a
    positive. With probabilities of exactly 0 or 1 the result equals the realized metrics.

    Raises:
        DataError: the arrays differ in length or are empty, or a value is missing or outside
            [0, 1].
    """
    p = _check_scores(probabilities, "probabilities")
    s = _clip(_check_scores(scores, "scores"))
    n = len(p)
    if len(s) != n or n == 0:
        raise DataError(
            f"probabilities has {n} rows and scores has {len(s)}; expected the same, non-zero "
            "number of rows"
        )
    v = p * (1.0 - p)  # each label's Bernoulli variance
    pred = s >= threshold
    n_pp = float(pred.sum())
    tp, fn = float(p[pred].sum()), float(p[~pred].sum())
    fp, tn = n_pp - tp, (n - n_pp) - fn
    metrics: dict[str, MetricEstimate] = {}

    def put(name: str, value: float | None, coef: np.ndarray | None, upper: float = 1.0) -> None:
        # Every metric is (to first order) a linear function sum_i c_i * y_i of the
        # independent labels, so its variance is sum_i c_i^2 * p_i * (1 - p_i).
        if value is None:
            metrics[name] = MetricEstimate(None, None, None, None)
            return
        se = 0.0 if coef is None else math.sqrt(float(np.sum(v * coef**2)))
        metrics[name] = MetricEstimate(
            value=round(value, 6),
            standard_error=round(se, 6),
            lower=round(max(0.0, value - _Z95 * se), 6),
            upper=round(min(upper, value + _Z95 * se), 6),
        )

    put("roc_auc", *_expected_auc(p, s, v))
    # accuracy = (T + (n - n_pp) - U) / n with T, U the positives among predicted pos/neg.
    put("accuracy", (tp + tn) / n, np.where(pred, 1.0, -1.0) / n)
    d = n_pp + tp + fn
    put(
        "f1",
        2 * tp / d if d > 0 else 0.0,
        (np.where(pred, 2 * (n_pp + fn), -2 * tp) / d**2) if d > 0 else None,
    )
    pos = tp + fn
    put(
        "recall",
        tp / pos if pos > 0 else 0.0,
        np.where(pred, fn, -tp) / pos**2 if pos > 0 else None,
    )
    put("precision", tp / n_pp if n_pp > 0 else 0.0, pred / n_pp if n_pp > 0 else None)
    put("brier", float(np.mean(p * (1 - s) ** 2 + (1 - p) * s**2)), (1 - 2 * s) / n)
    log_s, log_1s = np.log(s), np.log1p(-s)
    put(
        "log_loss",
        float(-np.mean(p * log_s + (1 - p) * log_1s)),
        -(log_s - log_1s) / n,
        upper=math.inf,
    )
    put("positive_rate", pos / n, np.full(n, 1.0 / n))
    return PerformanceEstimate(
        n=n,
        threshold=float(threshold),
        calibration="given",
        metrics={k: metrics[k] for k in (*METRICS, "positive_rate")},
        expected_confusion={
            "tp": round(tp, 6),
            "fp": round(fp, 6),
            "fn": round(fn, 6),
            "tn": round(tn, 6),
        },
        share_outside_reference=0.0,
    )


def _expected_auc(
    p: np.ndarray, s: np.ndarray, v: np.ndarray
) -> tuple[float | None, np.ndarray | None]:
    """Expected ROC AUC and its linearisation coefficients, O(n log n).

    With midranks r of the scores, the realized AUC is (R - N(N+1)/2) / (N(n - N)) where
    R = sum r_i y_i and N = sum y_i (Mann-Whitney). Its numerator and denominator are the
    numbers of (positive, negative) pairs ordered right and of all such pairs; their
    expectations over independent y_i ~ Bernoulli(p_i) have closed forms, and their ratio is
    the estimate (CBPE's expected ROC curve, with each row a fractional positive and negative;
    a row is never paired with itself).
    """
    from scipy.stats import rankdata

    n = len(p)
    r = rankdata(s)  # midranks: ties count half, as in roc_auc_score
    m, var_n = float(p.sum()), float(v.sum())
    pairs = n * m - (var_n + m * m)  # E[N (n - N)]
    if pairs <= 1e-12:
        return None, None
    right = float(p @ r) - (var_n + m * m + m) / 2  # E[R - N(N+1)/2]
    auc = min(max(right / pairs, 0.0), 1.0)
    # Delta method: d AUC / dR = 1/g, d AUC / dN at the expected point, g = N (n - N).
    g = m * (n - m)
    if g <= 1e-12:
        return auc, None
    u = float(p @ r) - m * (m + 1) / 2
    d_r = 1.0 / g
    d_n = (-(m + 0.5) * g - u * (n - 2 * m)) / g**2
    return auc, d_r * r + d_n


def _fit_platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Logistic fit of y on z with Platt's smoothed targets (finite even when z separates y)."""
    from scipy.optimize import minimize

    n_pos = float(y.sum())
    n_neg = len(y) - n_pos
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        f = w[0] * z + w[1]
        # log(1 + e^f) - t f, stable for large |f|
        value = float(np.sum(np.logaddexp(0.0, f) - t * f))
        residual = _sigmoid(f) - t
        return value, np.array([residual @ z, residual.sum()])

    fit = minimize(loss, np.array([1.0, 0.0]), jac=True, method="BFGS")
    return float(fit.x[0]), float(fit.x[1])


def _check_scores(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    try:
        s = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name} must be numbers (probabilities in [0, 1]): {e}") from e
    if s.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {s.shape}")
    bad = np.flatnonzero(~np.isfinite(s))
    if len(bad):
        raise DataError(
            f"{name} has {len(bad)} missing or non-finite values (first at position "
            f"{int(bad[0])}: {float(s[bad[0]])}); expected probabilities in [0, 1]"
        )
    out = np.flatnonzero((s < 0) | (s > 1))
    if len(out):
        raise DataError(
            f"{name} has {len(out)} values outside [0, 1] (first at position {int(out[0])}: "
            f"{float(s[out[0]])!r}); expected the positive-class probability, not a margin"
        )
    return s


def _check_labels(values: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    raw = np.asarray(values)
    if raw.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {raw.shape}")
    try:
        y = raw.astype(float)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name} must be 0/1 labels: {e}") from e
    bad = np.flatnonzero(~np.isin(y, (0.0, 1.0)))
    if len(bad):
        raise DataError(
            f"{name} has {len(bad)} values that are not 0/1 (first at position {int(bad[0])}: "
            f"{_plain(raw[bad[0]])!r}); expected binary labels"
        )
    return y.astype(int)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _clip(s: np.ndarray) -> np.ndarray:
    return np.clip(s, _EPS, 1 - _EPS)


def _logit(s: np.ndarray) -> np.ndarray:
    return np.log(s) - np.log1p(-s)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))

"""Label-free performance estimation (CBPE): exact where it must be, close under covariate shift,
blind to concept drift."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from mlops_loop.core.config import METRICS
from mlops_loop.core.errors import DataError
from mlops_loop.core.estimate import (
    ConfidenceEstimator,
    expected_metrics,
    fit_estimator,
)
from mlops_loop.core.performance import compute_metrics, metric_value

KEYS = (*METRICS, "positive_rate")

# ---------------------------------------------------------------- golden values


def test_certain_probabilities_give_the_realized_metrics_exactly():
    # With p in {0, 1} the labels are known, so every expected metric is the realized one,
    # including tied scores (AUC counts them half, as roc_auc_score does).
    rng = np.random.default_rng(0)
    s = rng.beta(2, 3, 400)
    s[:80] = np.round(s[:80], 1)
    y = rng.binomial(1, s)
    estimate = expected_metrics(y.astype(float), s)
    realized = compute_metrics(y, s)
    for key in KEYS:
        assert estimate.metrics[key].value == pytest.approx(realized[key], abs=1e-6), key
        assert estimate.metrics[key].standard_error == 0.0, key


def test_expected_auc_equals_the_pairwise_definition():
    # sum over ordered pairs i != j of p_i (1 - p_j) [s_i > s_j] (+ half for ties), divided by
    # the expected number of (positive, negative) pairs: the O(n^2) definition.
    rng = np.random.default_rng(1)
    s = np.round(rng.random(60), 1)
    p = rng.random(60)
    above = (s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :])
    w = p[:, None] * (1 - p[None, :])
    np.fill_diagonal(w, 0.0)
    assert expected_metrics(p, s).metrics["roc_auc"].value == pytest.approx(
        (w * above).sum() / w.sum(), abs=1e-6
    )


def realized_many(labels, s, threshold=0.5):
    """Each metric of `compute_metrics` for many label vectors (rows) at once, in numpy."""
    from scipy.stats import rankdata

    s = np.clip(s, 1e-7, 1 - 1e-7)
    pred = s >= threshold
    tp = labels[:, pred].sum(axis=1)
    pos = labels.sum(axis=1)
    n = labels.shape[1]
    rank_sum = labels @ rankdata(s)
    return {
        "roc_auc": (rank_sum - pos * (pos + 1) / 2) / (pos * (n - pos)),
        "accuracy": (labels == pred).mean(axis=1),
        "f1": 2 * tp / (pred.sum() + pos),
        "recall": tp / pos,
        "precision": tp / pred.sum(),
        "brier": ((s - labels) ** 2).mean(axis=1),
        "log_loss": -(labels * np.log(s) + (1 - labels) * np.log(1 - s)).mean(axis=1),
        "positive_rate": pos / n,
    }


def test_perfectly_calibrated_scores_estimate_the_mean_realized_metric():
    # Labels drawn as Bernoulli(score) many times over the same scores: the estimate is the
    # mean of the realized metric, and its standard error the realized metric's spread.
    rng = np.random.default_rng(2)
    n, draws = 800, 4000
    s = rng.beta(2, 3, n)
    labels = (rng.random((draws, n)) < s).astype(int)
    realized = realized_many(labels, s)
    for i in range(3):  # the vectorised metrics are the loop's own
        reference = compute_metrics(labels[i], s)
        for key in KEYS:
            assert realized[key][i] == pytest.approx(reference[key], abs=1e-6), key
    estimate = expected_metrics(s, s)
    for key in KEYS:
        m, values = estimate.metrics[key], realized[key]
        mean, sd = values.mean(), values.std()
        assert abs(m.value - mean) <= 4 * sd / np.sqrt(draws), key
        assert m.standard_error == pytest.approx(sd, rel=0.1), key
        inside = np.mean((values >= m.lower) & (values <= m.upper))
        assert 0.93 <= inside <= 0.97, (key, inside)


def test_calibration_learnt_on_a_reference_carries_to_a_batch_with_other_scores():
    # The reference is perfectly calibrated; the batch's scores are distributed differently
    # (covariate shift seen through the score). Isotonic calibration learnt on the reference
    # must give the batch's expected metrics.
    rng = np.random.default_rng(3)
    ref = rng.beta(2, 3, 20_000)
    estimator = fit_estimator(ref, rng.binomial(1, ref))
    assert estimator.method == "isotonic"
    batch = rng.beta(3, 2, 2000)
    got = estimator.estimate(batch)
    truth = expected_metrics(batch, batch)
    for key in KEYS:
        assert got.metrics[key].value == pytest.approx(truth.metrics[key].value, abs=0.01), key


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=40),
    st.integers(0, 2**32 - 1),
    st.floats(0, 1),
)
def test_estimates_are_ordered_intervals_in_range(scores, seed, threshold):
    s = np.array(scores)
    p = np.random.default_rng(seed).random(len(s))
    for key, m in expected_metrics(p, s, threshold).metrics.items():
        if m.value is None:
            assert key == "roc_auc"
            continue
        assert m.lower <= m.value <= m.upper, key
        assert m.lower >= 0 and (key == "log_loss" or m.upper <= 1), key


# ---------------------------------------------------------------- calibration


def test_isotonic_map_is_scikit_learns():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(4)
    s = rng.random(3000)
    y = rng.binomial(1, s**2)
    estimator = fit_estimator(s, y)
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(s, y)
    grid = np.linspace(0, 1, 501)
    assert estimator.calibrate(grid) == pytest.approx(iso.predict(grid), abs=1e-12)


def test_platt_recovers_a_known_logistic_miscalibration():
    rng = np.random.default_rng(5)
    s = rng.beta(2, 2, 20_000)
    logit = np.log(s / (1 - s))
    y = rng.binomial(1, 1 / (1 + np.exp(-(2.0 * logit - 0.5))))
    estimator = fit_estimator(s, y, method="platt")
    assert estimator.slope == pytest.approx(2.0, abs=0.1)
    assert estimator.intercept == pytest.approx(-0.5, abs=0.1)


def test_small_or_unbalanced_references_fall_back_to_platt_and_say_why():
    rng = np.random.default_rng(6)
    s = rng.random(999)
    small = fit_estimator(s, rng.binomial(1, s))
    assert small.method == "platt" and "999 reference rows < 1000" in small.reason
    s = rng.random(5000)
    y = (rng.random(5000) < 0.01).astype(int)
    rare = fit_estimator(s, y)
    assert rare.method == "platt" and f"only {y.sum()} rows of the rarer class" in rare.reason
    y = rng.binomial(1, s)
    assert fit_estimator(s, y).method == "isotonic"


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_estimator_survives_a_json_round_trip(method):
    rng = np.random.default_rng(7)
    s = rng.random(4000)
    estimator = fit_estimator(s, rng.binomial(1, s), method=method)
    loaded = ConfidenceEstimator.from_dict(json.loads(json.dumps(estimator.to_dict())))
    assert loaded == estimator
    batch = rng.random(500)
    assert loaded.estimate(batch).to_dict() == estimator.estimate(batch).to_dict()
    json.dumps(loaded.estimate(batch).to_dict())


def test_scores_outside_the_reference_range_raise_a_warning():
    rng = np.random.default_rng(8)
    ref = rng.uniform(0.2, 0.8, 4000)
    estimator = fit_estimator(ref, rng.binomial(1, ref))
    inside = estimator.estimate(rng.uniform(0.25, 0.75, 1000))
    assert inside.warning is None and inside.share_outside_reference == 0.0
    batch = np.concatenate([rng.uniform(0.25, 0.75, 900), rng.uniform(0.85, 1.0, 100)])
    outside = estimator.estimate(batch)
    assert outside.share_outside_reference == pytest.approx(0.1)
    assert "10.0% of the scores lie outside the reference's score range" in outside.warning
    assert estimator.estimate(batch, max_outside_share=0.2).warning is None


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        ([0.1, 0.9, 0.5], [0, 1], "reference_scores has 3 rows but reference_labels has 2"),
        ([0.1, np.nan, 0.5], [0, 1, 1], r"reference_scores has 1 missing .* position 1"),
        ([0.1, 1.7, 0.5], [0, 1, 1], r"outside \[0, 1\] \(first at position 1: 1.7\)"),
        ([-2.0, 0.3, 0.5], [0, 1, 1], "expected the positive-class probability, not a margin"),
        ([0.1, 0.9, 0.5], [0, 2, 1], r"reference_labels .* not 0/1 .* position 1: 2"),
        ([0.1, 0.9, 0.5], [1, 1, 1], r"single class \(all 1, 3 rows\)"),
        ([0.1, 0.9, 0.5], [0, 0, 0], r"single class \(all 0, 3 rows\)"),
        (["a", "b"], [0, 1], "reference_scores must be numbers"),
    ],
)
def test_bad_references_are_refused_by_name(scores, labels, match):
    with pytest.raises(DataError, match=match):
        fit_estimator(scores, labels)


def test_bad_batches_are_refused_by_name():
    rng = np.random.default_rng(9)
    s = rng.random(2000)
    estimator = fit_estimator(s, rng.binomial(1, s))
    with pytest.raises(DataError, match="scores has 1 missing or non-finite values"):
        estimator.estimate([0.2, float("inf")])
    with pytest.raises(DataError, match=r"scores has 1 values outside \[0, 1\]"):
        estimator.estimate([0.2, 1.5])
    with pytest.raises(DataError, match="scores is empty"):
        estimator.estimate([])
    with pytest.raises(DataError, match=r"threshold must be a number in \[0, 1\], got 1.5"):
        estimator.estimate([0.2], threshold=1.5)
    with pytest.raises(DataError, match="probabilities has 2 rows and scores has 3"):
        expected_metrics(np.array([0.1, 0.2]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(DataError, match="schema_version 2 is not supported"):
        ConfidenceEstimator.from_dict({**estimator.to_dict(), "schema_version": 2})
    with pytest.raises(DataError, match=r"lacks fields \['score_max'\]"):
        ConfidenceEstimator.from_dict(
            {k: v for k, v in estimator.to_dict().items() if k != "score_max"}
        )


# ---------------------------------------------------------------- simulated shift

N_FEATURES = 6
BASE = np.array([1.2, -1.0, 0.6, 0.0, 0.0, 0.0])
DIRECTIONS = {  # covariate shifts; those along x0 and x1 move the class balance
    "x0+": np.eye(N_FEATURES)[0],
    "x0-": -np.eye(N_FEATURES)[0],
    "x1+": np.eye(N_FEATURES)[1],
    "x3+x4": np.eye(N_FEATURES)[3] + np.eye(N_FEATURES)[4],
    "all": np.ones(N_FEATURES),
}


def draw(rng, n, shift=0.0, coef=BASE):
    """Rows of a fixed P(y | x): a logistic in x0..x2 plus an x3*x4 interaction."""
    x = rng.normal(size=(n, N_FEATURES)) + shift
    logit = x @ coef + 0.8 * x[:, 3] * x[:, 4] - 0.4
    return x, rng.binomial(1, 1 / (1 + np.exp(-logit)))


@pytest.fixture(scope="module")
def models():
    """Two real classifiers and their estimators, calibrated on a held-out reference."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x_train, y_train = draw(rng, 8000)
    x_ref, y_ref = draw(rng, 8000)
    out = {}
    # One thread: on a shared 2-core machine OpenMP contention makes these fits 20x slower.
    with threadpool_limits(1):
        for name, model in {
            "gradient_boosting": HistGradientBoostingClassifier(max_iter=100, random_state=0),
            # cannot represent the interaction: P(y | score) moves under some shifts
            "logistic_misspecified": LogisticRegression(),
        }.items():
            model.fit(x_train, y_train)
            out[name] = (model, fit_estimator(model.predict_proba(x_ref)[:, 1], y_ref))
    return out


def score(model, x):
    with threadpool_limits(1):
        return model.predict_proba(x)[:, 1]


@pytest.mark.parametrize(
    ("name", "max_acc_mae", "max_auc_mae"),
    # Measured over seeds 0-7 (the fixture uses 0): gradient boosting 0.006-0.010 (accuracy)
    # and 0.007-0.013 (AUC); the misspecified logistic model 0.011-0.015 and 0.009-0.012.
    [("gradient_boosting", 0.02, 0.03), ("logistic_misspecified", 0.03, 0.03)],
)
def test_estimate_tracks_realized_performance_under_covariate_shift(
    models, name, max_acc_mae, max_auc_mae
):
    model, estimator = models[name]
    rng = np.random.default_rng(1)
    rows = []
    for i in range(30):
        size, (direction, vector) = (0.5, 1.0)[i % 2], list(DIRECTIONS.items())[(i // 2) % 5]
        x, y = draw(rng, 2000, shift=size * vector)
        s = score(model, x)
        est = estimator.estimate(s)
        rows.append(
            (
                size,
                direction,
                est.metrics["accuracy"].value - metric_value("accuracy", y, s),
                est.metrics["roc_auc"].value - metric_value("roc_auc", y, s),
                abs(est.metrics["accuracy"].value - metric_value("accuracy", y, s))
                <= 1.96 * est.metrics["accuracy"].standard_error,
                y.mean(),
            )
        )
    acc = np.array([r[2] for r in rows])
    auc = np.array([r[3] for r in rows])
    print(
        f"\n{name}: 30 batches x 2000 rows, positive rate {min(r[5] for r in rows):.2f}"
        f"-{max(r[5] for r in rows):.2f}"
    )
    print(
        f"  all: accuracy MAE {np.abs(acc).mean():.4f} (max {np.abs(acc).max():.4f}), "
        f"ROC AUC MAE {np.abs(auc).mean():.4f} (max {np.abs(auc).max():.4f}), "
        f"accuracy inside its 95% interval {np.mean([r[4] for r in rows]):.0%}"
    )
    for size in (0.5, 1.0):
        sel = [r[0] == size for r in rows]
        print(
            f"  shift {size} sd: accuracy MAE {np.abs(acc[sel]).mean():.4f}, "
            f"ROC AUC MAE {np.abs(auc[sel]).mean():.4f}"
        )
    for direction in DIRECTIONS:
        sel = [r[1] == direction for r in rows]
        print(
            f"  along {direction}: accuracy mean error {acc[sel].mean():+.4f}, "
            f"ROC AUC {auc[sel].mean():+.4f}"
        )
    assert np.abs(acc).mean() <= max_acc_mae
    assert np.abs(auc).mean() <= max_auc_mae


def test_concept_drift_is_invisible_to_the_estimate(models):
    # x0's effect on y weakens then reverses: P(y | x) changes, the inputs do not. The scores,
    # and so the estimate, stay where they were; realized performance falls.
    model, estimator = models["gradient_boosting"]
    rng = np.random.default_rng(2)
    results = []
    for x0_effect in (1.2, 0.2, -0.8):
        x, y = draw(rng, 2000, coef=np.array([x0_effect, -1.0, 0.6, 0, 0, 0]))
        s = score(model, x)
        est = estimator.estimate(s)
        results.append(
            (
                est.metrics["accuracy"],
                metric_value("accuracy", y, s),
                est.metrics["roc_auc"],
                metric_value("roc_auc", y, s),
            )
        )
        print(
            f"\nx0 effect {x0_effect}: accuracy estimated {est.metrics['accuracy'].value:.4f} "
            f"realized {results[-1][1]:.4f}; ROC AUC estimated "
            f"{est.metrics['roc_auc'].value:.4f} realized {results[-1][3]:.4f}"
        )
    (acc0, real_acc0, auc0, real_auc0) = results[0]
    assert abs(acc0.value - real_acc0) <= 3 * acc0.standard_error  # no drift: it agrees
    for acc, real_acc, auc, real_auc in results[1:]:
        assert real_acc0 - real_acc >= 0.08 and real_auc0 - real_auc >= 0.08
        assert abs(acc.value - acc0.value) <= 0.02 and abs(auc.value - auc0.value) <= 0.02
        # ... so the realized value falls outside the estimate's interval: only labels tell.
        assert real_acc < acc.lower and real_auc < auc.lower

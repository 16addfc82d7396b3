"""Label-free estimation per task: multiclass CBPE and regression DLE. Exact on certain labels,
close under covariate shift, blind to concept drift."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata
from threadpoolctl import threadpool_limits

from mlops_loop.core.errors import DataError
from mlops_loop.core.estimate_tasks import (
    DirectLossEstimator,
    MulticlassConfidenceEstimator,
    expected_multiclass_metrics,
    fit_loss_estimator,
    fit_multiclass_estimator,
)

CLASSES = ("low", "mid", "high")

# ---------------------------------------------------------------- multiclass: golden values


def dirichlet_rows(rng, n, k):
    p = rng.dirichlet(np.ones(k), n) * 0.98 + 0.02 / k  # away from 0: log loss clipping agrees
    p[:60] = np.round(p[:60], 1)  # ties: AUC counts them half, as roc_auc_score does
    return p / p.sum(axis=1, keepdims=True)


def test_certain_probabilities_give_the_realized_multiclass_metrics_exactly():
    from sklearn.metrics import (
        accuracy_score,
        brier_score_loss,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    rng = np.random.default_rng(0)
    names = ("a", "b", "c", "d")
    p = dirichlet_rows(rng, 500, 4)
    y = (rng.random((500, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    estimate = expected_multiclass_metrics(np.eye(4)[y], p, names)
    pred = p.argmax(axis=1)
    labels = list(range(4))
    realized = {
        "accuracy": accuracy_score(y, pred),
        "f1_macro": f1_score(y, pred, average="macro"),
        "f1_weighted": f1_score(y, pred, average="weighted"),
        "log_loss": log_loss(y, p, labels=labels),
        "brier": brier_score_loss(y, p, labels=labels),
        "roc_auc_ovr": roc_auc_score(y, p, multi_class="ovr", labels=labels),
    }
    for c, name in enumerate(names):
        realized[f"recall_{name}"] = recall_score(y, pred, average=None)[c]
        realized[f"precision_{name}"] = precision_score(y, pred, average=None)[c]
    assert set(estimate.metrics) == set(realized)
    for key, value in realized.items():
        assert estimate.metrics[key].value == pytest.approx(value, abs=1e-6), key
        assert estimate.metrics[key].standard_error == 0.0, key
    c = estimate.expected_confusion
    assert (
        c["tp_a"] == ((y == 0) & (pred == 0)).sum() and c["fn_b"] == ((y == 1) & (pred != 1)).sum()
    )


def realized_many(labels, p):
    """The multiclass metrics for many label vectors (rows of `labels`) at once, in numpy."""
    n, k = p.shape
    pred = p.argmax(axis=1)
    picked = p[np.arange(n), labels]
    f1, support, auc = [], [], []
    for c in range(k):
        y = labels == c
        tp, pos = (y & (pred == c)).sum(axis=1), y.sum(axis=1)
        f1.append(2 * tp / ((pred == c).sum() + pos))
        support.append(pos)
        auc.append((y @ rankdata(p[:, c]) - pos * (pos + 1) / 2) / (pos * (n - pos)))
    f1, support = np.array(f1), np.array(support)
    return {
        "accuracy": (labels == pred).mean(axis=1),
        "f1_macro": f1.mean(axis=0),
        "f1_weighted": (f1 * support).sum(axis=0) / n,
        "log_loss": -np.log(picked).mean(axis=1),
        "brier": ((p**2).sum(axis=1) - 2 * picked + 1).mean(axis=1),
        "roc_auc_ovr": np.mean(auc, axis=0),
    }


def test_calibrated_probabilities_estimate_the_mean_realized_metric_and_its_spread():
    # Labels drawn from the probabilities many times over: the estimate is the mean realized
    # metric and its analytic standard error the realized metric's spread.
    rng = np.random.default_rng(1)
    p = dirichlet_rows(rng, 600, 3)
    draws = 3000
    labels = (rng.random((draws, 600, 1)) > np.cumsum(p, axis=1)).sum(axis=2)
    realized = realized_many(labels, p)
    estimate = expected_multiclass_metrics(p, p, CLASSES)
    for key, values in realized.items():
        m = estimate.metrics[key]
        assert abs(m.value - values.mean()) <= 4 * values.std() / math.sqrt(draws) + 1e-3, key
        assert m.standard_error == pytest.approx(values.std(), rel=0.1), key


# ---------------------------------------------------------------- multiclass: the estimator

N_FEATURES = 5
W = np.array(  # class logits: linear, plus an x3*x4 interaction for "high"
    [[1.0, 0.0, -1.0], [-0.8, 0.6, 0.2], [0.0, 0.7, -0.7], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
)


def draw_multiclass(rng, n, shift=0.0, w=W):
    x = rng.normal(size=(n, N_FEATURES)) + shift
    logits = x @ w
    logits[:, 2] += 0.8 * x[:, 3] * x[:, 4]
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    return x, (rng.random((n, 1)) > np.cumsum(prob, axis=1)).sum(axis=1)


@pytest.fixture(scope="module")
def multiclass():
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x_train, y_train = draw_multiclass(rng, 8000)
    x_ref, y_ref = draw_multiclass(rng, 8000)
    # One thread: on a shared 2-core machine OpenMP contention makes the fits far slower.
    with threadpool_limits(1):
        model = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(x_train, y_train)
        p_ref = model.predict_proba(x_ref)
    return model, fit_multiclass_estimator(p_ref, y_ref, CLASSES)


def proba(model, x):
    with threadpool_limits(1):
        return model.predict_proba(x)


def test_multiclass_estimator_uses_isotonic_per_class_and_renormalises(multiclass):
    model, estimator = multiclass
    assert [e.method for e in estimator.estimators] == ["isotonic"] * 3
    x, _ = draw_multiclass(np.random.default_rng(3), 300)
    q = estimator.calibrate(proba(model, x))
    assert q.shape == (300, 3) and np.allclose(q.sum(axis=1), 1.0)
    small = fit_multiclass_estimator(proba(model, x), _, CLASSES)
    assert all(e.method == "platt" and "300 reference rows" in e.reason for e in small.estimators)


def test_multiclass_estimator_survives_a_json_round_trip(multiclass):
    model, estimator = multiclass
    saved = json.dumps(estimator.to_dict(), allow_nan=False)
    loaded = MulticlassConfidenceEstimator.from_dict(json.loads(saved))
    assert loaded == estimator
    x, _ = draw_multiclass(np.random.default_rng(4), 500)
    p = proba(model, x)
    assert loaded.estimate(p).to_dict() == estimator.estimate(p).to_dict()
    json.dumps(loaded.estimate(p).to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: {**d, "schema_version": 2}, "schema_version 2 is not supported"),
        (lambda d: {**d, "extra": 1}, r"unknown fields \['extra'\]"),
        (lambda d: {k: v for k, v in d.items() if k != "classes"}, r"lacks fields \['classes'\]"),
        (lambda d: {**d, "classes": ["a", "a", "b"]}, "classes must be at least two distinct"),
        (lambda d: {**d, "estimators": d["estimators"][:2]}, "estimators must be a list of 3"),
        (
            lambda d: {**d, "estimators": [*d["estimators"][:2], {"schema_version": 1}]},
            r"estimators\[2\] \(class 'high'\): confidence estimator lacks fields",
        ),
        (lambda d: [1, 2], "must be a mapping, got list"),
    ],
)
def test_malformed_multiclass_estimators_are_refused_by_field(multiclass, edit, match):
    with pytest.raises(DataError, match=match):
        MulticlassConfidenceEstimator.from_dict(edit(multiclass[1].to_dict()))


@pytest.mark.parametrize(
    ("probabilities", "labels", "match"),
    [
        ([[0.2, 0.8], [0.5, 0.5]], [0, 1], r"must have shape \(n, 3\) .* got \(2, 2\)"),
        ([0.2, 0.3, 0.5], [0], r"must have shape \(n, 3\)"),
        ([[0.2, 0.3, 0.4], [0.2, 0.3, 0.5]], [0, 1], "1 rows not summing to 1 within 1e-06"),
        ([[0.2, np.nan, 0.8], [0.2, 0.3, 0.5]], [0, 1], r"non-finite .* row 0, column 1"),
        ([[1.2, -0.2, 0.0], [0.2, 0.3, 0.5]], [0, 1], r"outside \[0, 1\] \(first at row 0"),
        ([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]], [0, 3], r"not class indices 0..2 .* position 1: 3"),
        ([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]], [0, 0.5], r"not class indices 0..2"),
        ([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]], [0], "probabilities has 2 rows but labels has 1"),
        ([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]], [0, 1], r"classes \['high'\] have no rows"),
    ],
)
def test_bad_multiclass_references_are_refused_by_name(probabilities, labels, match):
    with pytest.raises(DataError, match=match):
        fit_multiclass_estimator(np.array(probabilities), np.array(labels), CLASSES)


def test_bad_multiclass_arguments_are_refused_by_name(multiclass):
    p = np.full((4, 3), 1 / 3)
    with pytest.raises(DataError, match="method 'beta' is not one of auto, isotonic, platt"):
        fit_multiclass_estimator(p, np.array([0, 1, 2, 0]), CLASSES, method="beta")
    with pytest.raises(DataError, match="classes must be a list of class names"):
        fit_multiclass_estimator(p, np.array([0, 1, 2, 0]), "abc")
    with pytest.raises(DataError, match="probabilities is empty"):
        multiclass[1].estimate(np.empty((0, 3)))
    with pytest.raises(DataError, match=r"shape \(n, 3\)"):
        multiclass[1].estimate(np.full((4, 4), 0.25))


def test_multiclass_estimate_tracks_realized_performance_under_covariate_shift(multiclass):
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    model, estimator = multiclass
    directions = [np.eye(N_FEATURES)[0], -np.eye(N_FEATURES)[0], np.eye(N_FEATURES)[1]]
    directions += [np.eye(N_FEATURES)[3] + np.eye(N_FEATURES)[4], np.ones(N_FEATURES)]
    errors = {k: [] for k in ("accuracy", "f1_macro", "roc_auc_ovr", "log_loss")}
    covered = []
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        shift = (0.5, 1.0)[seed % 2] * directions[seed % len(directions)]
        x, y = draw_multiclass(rng, 2000, shift=shift)
        p = proba(model, x)
        est = estimator.estimate(p)
        realized = {
            "accuracy": accuracy_score(y, p.argmax(axis=1)),
            "f1_macro": f1_score(y, p.argmax(axis=1), average="macro"),
            "roc_auc_ovr": roc_auc_score(y, p, multi_class="ovr"),
            "log_loss": log_loss(y, p, labels=[0, 1, 2]),
        }
        for key in errors:
            errors[key].append(est.metrics[key].value - realized[key])
        m = est.metrics["accuracy"]
        covered.append(m.lower <= realized["accuracy"] <= m.upper)
        print(
            f"\nseed {seed}: class shares {np.bincount(y, minlength=3) / len(y)}, accuracy "
            f"estimated {m.value:.4f} realized {realized['accuracy']:.4f}"
        )
    for key, e in errors.items():
        print(f"{key}: max |error| {np.abs(e).max():.4f}, mean |error| {np.abs(e).mean():.4f}")
    print(f"accuracy inside its 95% interval on {np.mean(covered):.0%} of the batches")
    # Measured here (fixture seed 0), max |error| over the 8 batches: accuracy 0.023, macro F1
    # 0.028, ROC AUC 0.017, log loss 0.034; with fixture seeds 1-4: up to 0.024, 0.033, 0.021.
    assert np.abs(errors["accuracy"]).max() <= 0.03
    assert np.abs(errors["f1_macro"]).max() <= 0.04
    assert np.abs(errors["roc_auc_ovr"]).max() <= 0.03
    assert np.abs(errors["log_loss"]).max() <= 0.06


def test_multiclass_concept_drift_is_invisible_to_the_estimate(multiclass):
    # x0 now favours "high" instead of "low": P(y | x) changes, the inputs do not.
    from sklearn.metrics import accuracy_score

    model, estimator = multiclass
    drifted = W.copy()
    drifted[0] = [-1.0, 0.0, 1.0]
    rows = []
    for w in (W, drifted):
        x, y = draw_multiclass(np.random.default_rng(7), 2000, w=w)
        p = proba(model, x)
        rows.append((estimator.estimate(p).metrics["accuracy"], accuracy_score(y, p.argmax(1))))
        print(f"\naccuracy estimated {rows[-1][0].value:.4f} realized {rows[-1][1]:.4f}")
    (before, real_before), (after, real_after) = rows
    assert abs(before.value - real_before) <= 3 * before.standard_error
    assert real_before - real_after >= 0.15
    assert abs(after.value - before.value) <= 0.01
    assert real_after < after.lower  # only labels tell


# ---------------------------------------------------------------- regression

REGIONS = ("north", "south", "east", "west")


def draw_regression(rng, n, shift=0.0, region_p=(0.4, 0.3, 0.2, 0.1), x0_effect=2.0):
    """Fixed P(y | x): a nonlinear mean, noise growing with |x1| and in the east."""
    x = rng.normal(size=(n, 3)) + shift
    region = rng.choice(REGIONS, size=n, p=region_p)
    east = region == "east"
    mean = x0_effect * x[:, 0] - x[:, 1] + 1.5 * np.sin(x[:, 2]) + np.where(east, 1.0, 0.0)
    sd = 0.3 + 0.6 * np.abs(x[:, 1]) + 0.5 * east
    y = mean + sd * rng.normal(size=n)
    frame = pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "region": region})
    return frame, y


def encode(frame):
    return np.column_stack([frame[["x0", "x1", "x2"]], frame["region"] == "east"])


@pytest.fixture(scope="module")
def regression():
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    train, y_train = draw_regression(rng, 6000)
    ref, y_ref = draw_regression(rng, 6000)
    with threadpool_limits(1):
        model = HistGradientBoostingRegressor(max_iter=100, random_state=0)
        model.fit(encode(train), y_train)
        estimator = fit_loss_estimator(ref, model.predict(encode(ref)), y_ref)
    return model, estimator


def predict(model, frame):
    with threadpool_limits(1):
        return model.predict(encode(frame))


def estimate(estimator, frame, pred):
    with threadpool_limits(1):
        return estimator.estimate(frame, pred)


def test_regression_estimate_tracks_realized_error_under_covariate_shift(regression):
    model, estimator = regression
    shifts = [  # moved means and a moved region mix; x1 and the east raise the noise
        (np.array([0.0, 0.8, 0.0]), (0.4, 0.3, 0.2, 0.1)),
        (np.array([0.0, -0.5, 0.0]), (0.1, 0.1, 0.7, 0.1)),
        (np.array([1.0, 0.0, 0.0]), (0.4, 0.3, 0.2, 0.1)),
        (np.array([0.0, 0.0, 1.0]), (0.25, 0.25, 0.25, 0.25)),
        (np.array([0.5, 0.5, 0.5]), (0.7, 0.1, 0.1, 0.1)),
        (np.array([-0.7, 0.0, 0.0]), (0.1, 0.1, 0.4, 0.4)),
        (np.array([0.0, 1.2, 0.0]), (0.1, 0.2, 0.3, 0.4)),
        (np.array([0.0, 0.0, 0.0]), (0.4, 0.3, 0.2, 0.1)),
    ]
    rel = {"mae": [], "rmse": []}
    covered = []
    for seed, (shift, region_p) in enumerate(shifts):
        frame, y = draw_regression(np.random.default_rng(100 + seed), 2000, shift, region_p)
        pred = predict(model, frame)
        est = estimate(estimator, frame, pred)
        realized = {
            "mae": float(np.mean(np.abs(y - pred))),
            "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
        }
        for key in rel:
            rel[key].append(est.metrics[key].value / realized[key] - 1)
        m = est.metrics["mae"]
        covered.append(m.lower <= realized["mae"] <= m.upper)
        print(
            f"\nbatch {seed}: MAE estimated {m.value:.4f} realized {realized['mae']:.4f}; RMSE "
            f"estimated {est.metrics['rmse'].value:.4f} realized {realized['rmse']:.4f}"
        )
    for key, e in rel.items():
        print(f"{key}: max relative error {np.abs(e).max():.2%}, mean {np.abs(e).mean():.2%}")
    print(f"MAE inside its 95% interval on {np.mean(covered):.0%} of the batches")
    # Measured here (fixture seed 0): max relative error 7.0% (MAE), 6.5% (RMSE); with fixture
    # seeds 1-4: up to 4.3% and 7.6%. MAE is underestimated on every batch (see the docs).
    assert np.abs(rel["mae"]).max() <= 0.10
    assert np.abs(rel["rmse"]).max() <= 0.10


def test_regression_concept_drift_is_invisible_to_the_estimate(regression):
    # x0's effect on y halves: the inputs and the predictions do not move, the errors grow.
    model, estimator = regression
    rows = []
    for x0_effect in (2.0, 1.0):
        frame, y = draw_regression(np.random.default_rng(7), 2000, x0_effect=x0_effect)
        pred = predict(model, frame)
        rows.append((estimate(estimator, frame, pred).metrics["mae"], np.abs(y - pred).mean()))
        print(f"\nMAE estimated {rows[-1][0].value:.4f} realized {rows[-1][1]:.4f}")
    (before, real_before), (after, real_after) = rows
    assert abs(before.value / real_before - 1) <= 0.10
    assert real_after / real_before >= 1.3
    assert after.value == before.value  # same inputs, same predictions: the same estimate
    assert real_after > after.upper  # only labels tell


def test_loss_estimator_splits_into_json_and_fitted_models(regression):
    """What is not JSON (the fitted scikit-learn parts) is kept apart: the loop logs those to
    MLflow and loads them through the registry; the rest survives a JSON round trip."""
    import json

    model, estimator = regression
    frame, _ = draw_regression(np.random.default_rng(5), 300)
    pred = predict(model, frame)
    data = json.loads(json.dumps(estimator.to_dict(), allow_nan=False))
    parts = estimator.models()
    assert set(parts) <= set(DirectLossEstimator.MODEL_PARTS)
    loaded = DirectLossEstimator.from_dict(data, parts)
    assert estimate(loaded, frame, pred).to_dict() == estimate(estimator, frame, pred).to_dict()


def test_loss_estimator_of_another_schema_or_without_its_models_is_refused(regression):
    estimator = regression[1]
    data, parts = estimator.to_dict(), estimator.models()
    with pytest.raises(DataError, match="has schema_version 2, which is not supported"):
        DirectLossEstimator.from_dict({**data, "schema_version": 2}, parts)
    with pytest.raises(DataError, match="lacks its fitted sq_model"):
        DirectLossEstimator.from_dict(data, {k: v for k, v in parts.items() if k != "sq_model"})
    with pytest.raises(DataError, match="field is missing or malformed"):
        DirectLossEstimator.from_dict({k: v for k, v in data.items() if k != "ranges"}, parts)
    with pytest.raises(DataError, match="is a mapping"):
        DirectLossEstimator.from_dict([], parts)  # type: ignore[arg-type]


def test_bad_regression_inputs_are_refused_by_column(regression):
    model, estimator = regression
    frame, y = draw_regression(np.random.default_rng(6), 100)
    pred = predict(model, frame)
    with pytest.raises(DataError, match=r"inputs lacks columns \['x1'\]"):
        estimator.estimate(frame.drop(columns="x1"), pred)
    with pytest.raises(DataError, match="input column 'x2' has dtype .*; expected numbers"):
        estimator.estimate(frame.assign(x2=frame["x2"].astype(str)), pred)
    with pytest.raises(DataError, match="input column 'region' .* expected categories as text"):
        estimator.estimate(frame.assign(region=1.0), pred)
    with pytest.raises(DataError, match=r"predictions must be one value per input row \(100\)"):
        estimator.estimate(frame, pred[:-1])
    with pytest.raises(DataError, match="predictions has 1 missing or non-finite values"):
        estimator.estimate(frame, np.where(np.arange(100) == 3, np.nan, pred))
    with pytest.raises(DataError, match="input column 'when' has dtype datetime64"):
        fit_loss_estimator(frame.assign(when=pd.Timestamp("2024-01-01")), pred, y)
    with pytest.raises(DataError, match="y has 1 missing"):
        fit_loss_estimator(frame, pred, np.where(np.arange(100) == 0, np.inf, y))


def test_unseen_categories_and_ranges_warn_and_missing_values_are_allowed(regression):
    model, estimator = regression
    frame, _ = draw_regression(np.random.default_rng(8), 1000)
    pred = predict(model, frame)
    assert estimate(estimator, frame, pred).warning is None
    odd = frame.assign(region=np.where(np.arange(1000) < 100, "moon", frame["region"]))
    odd.loc[:50, "x0"] = np.nan
    est = estimate(estimator, odd, pred)
    assert est.share_outside_reference == pytest.approx(0.1)
    assert "10.0% of the rows have a number outside the reference's range" in est.warning
    assert est.metrics["mae"].value > 0

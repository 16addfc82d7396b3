"""Every supervised task through the config and the core's metrics: the task inferred from the
reference's target, classes fixed in order, metrics that fit the task and know their direction,
and the promotion evidence per task."""

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm

from mlops_loop.core.config import PromotionPolicy, load_config
from mlops_loop.core.errors import DataError, InvalidConfigError
from mlops_loop.core.performance import compute_metrics, metric_value, performance_drop
from mlops_loop.core.policy import decide_promotion, paired_bootstrap, row_losses
from mlops_loop.core.tasks import encode_labels, infer_task


def write(tmp_path, target, **sections) -> object:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=len(target)), "y": target})
    frame.to_parquet(tmp_path / "ref.parquet", index=False)
    doc = {
        "columns": {"numerical": ["x"], "target": "y"},
        "sources": {"reference": "ref.parquet", "landing": "in"},
        "state_dir": "state",
        **sections,
    }
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path / "loop.yaml"


RNG = np.random.default_rng(1)


@pytest.mark.parametrize(
    ("target", "task", "classes"),
    [
        (RNG.integers(0, 2, 200), "binary", [0, 1]),
        (RNG.choice(["no", "yes"], 200), "binary", ["no", "yes"]),
        (np.array([True, False] * 100), "binary", [False, True]),
        (RNG.choice(["low", "medium", "high"], 200), "multiclass", ["high", "low", "medium"]),
        (RNG.integers(0, 4, 200), "multiclass", [0, 1, 2, 3]),
        (RNG.gamma(2.0, 10.0, 200).round(2), "regression", None),
    ],
)
def test_the_task_is_inferred_from_the_reference_and_logged(
    tmp_path, caplog, target, task, classes
):
    with caplog.at_level("INFO", logger="mlops_loop.core.task_config"):
        config = load_config(write(tmp_path, target))
    assert config.task == task and config.columns.classes == classes
    assert f"columns.task inferred as {task}" in caplog.text
    primary = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}[task]
    assert config.promotion.metric == primary
    estimator = "Regressor" if task == "regression" else "Classifier"
    assert config.model.estimator == f"sklearn.ensemble.HistGradientBoosting{estimator}"


def test_an_ambiguous_target_is_refused_naming_the_column(tmp_path):
    with pytest.raises(InvalidConfigError, match=r"columns.target 'y' is ambiguous: \d+ distinct"):
        load_config(write(tmp_path, np.random.default_rng(0).integers(0, 40, 300)))
    # Saying which task it is settles it.
    config = load_config(
        write(
            tmp_path,
            np.random.default_rng(0).integers(0, 40, 300),
            columns={"numerical": ["x"], "target": "y", "task": "regression"},
        )
    )
    assert config.task == "regression"


def test_a_single_valued_target_is_refused(tmp_path):
    with pytest.raises(InvalidConfigError, match="1 distinct value"):
        load_config(write(tmp_path, np.ones(50)))


def test_an_estimator_of_the_wrong_kind_is_refused_naming_both(tmp_path):
    target = np.random.default_rng(0).normal(size=100)
    model = {"estimator": "sklearn.ensemble.RandomForestClassifier"}
    with pytest.raises(InvalidConfigError) as e:
        load_config(write(tmp_path, target, model=model))
    assert "RandomForestClassifier is a classifier, but the task is regression" in str(e.value)
    with pytest.raises(InvalidConfigError, match="is a regressor, but the task is binary"):
        load_config(
            write(tmp_path, np.arange(100) % 2, model={"estimator": "sklearn.linear_model.Ridge"})
        )


def test_a_metric_of_another_task_is_refused(tmp_path):
    target = np.random.default_rng(0).normal(size=100)
    with pytest.raises(InvalidConfigError, match="'roc_auc' is a binary metric, but the task"):
        load_config(write(tmp_path, target, promotion={"metric": "roc_auc"}))
    with pytest.raises(InvalidConfigError, match=r"promotion.guards.brier: 'brier' is a binary"):
        load_config(write(tmp_path, target, promotion={"guards": {"brier": 0.1}}))
    rule = {"name": "auc", "metric": "roc_auc", "kind": "threshold", "value": 0.7}
    rule["direction"] = "below"
    with pytest.raises(InvalidConfigError, match=r"alerts.rules\[auc\].metric"):
        load_config(write(tmp_path, target, alerts={"rules": [rule]}))
    # A regression's own metrics pass, and its relative-drop rules default to "above".
    ok = {"name": "rmse", "metric": "rmse", "kind": "relative_drop", "drop": 0.2}
    ok["baseline"] = {"first_batches": 2}
    config = load_config(write(tmp_path, target, alerts={"rules": [ok]}))
    assert config.alerts.rules[0].side == "above"


def test_given_classes_set_the_order_and_the_positive_class(tmp_path):
    target = np.random.default_rng(0).choice(["stay", "churn"], 200)
    columns = {"numerical": ["x"], "target": "y", "classes": ["stay", "churn"]}
    config = load_config(write(tmp_path, target, columns=columns))
    assert config.task == "binary" and config.columns.classes == ["stay", "churn"]
    y = encode_labels(pd.Series(["churn", "stay"]), "y", "binary", config.columns.classes)
    assert list(y) == [1, 0]
    with pytest.raises(InvalidConfigError, match="expected two"):
        load_config(
            write(
                tmp_path, target, columns={**columns, "task": "binary", "classes": ["a", "b", "c"]}
            )
        )


def test_a_label_that_is_none_of_the_classes_is_a_data_error_naming_it():
    with pytest.raises(DataError, match=r"none of the classes \['high', 'low'\]: \['urgent'\]"):
        encode_labels(pd.Series(["high", "urgent"]), "priority", "multiclass", ["high", "low"])
    # Numbers match numerically.
    assert list(encode_labels(pd.Series([1.0, 0.0]), "y", "binary", [0, 1])) == [1, 0]
    with pytest.raises(ValueError, match="ambiguous"):
        infer_task(pd.Series(np.arange(30)), "y")


def test_multiclass_metrics_are_scikit_learns():
    rng = np.random.default_rng(3)
    proba = rng.dirichlet([1, 1, 1], 400)
    y = rng.integers(0, 3, 400)
    predicted = proba.argmax(axis=1)
    out = compute_metrics(y, proba, "multiclass", ["a", "b", "c"])
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted), abs=1e-6)
    assert out["f1_macro"] == pytest.approx(skm.f1_score(y, predicted, average="macro"), abs=1e-6)
    assert out["f1_weighted"] == pytest.approx(
        skm.f1_score(y, predicted, average="weighted"), abs=1e-6
    )
    assert out["log_loss"] == pytest.approx(skm.log_loss(y, proba), abs=1e-6)
    assert out["roc_auc_ovr"] == pytest.approx(
        skm.roc_auc_score(y, proba, multi_class="ovr"), abs=1e-6
    )
    onehot = np.eye(3)[y]
    assert out["brier"] == pytest.approx(np.mean(np.sum((proba - onehot) ** 2, axis=1)), abs=1e-6)
    assert out["recall_b"] == pytest.approx(skm.recall_score(y == 1, predicted == 1), abs=1e-6)
    assert out["share_c"] == pytest.approx(np.mean(y == 2), abs=1e-6)


def test_regression_metrics_are_scikit_learns_and_mape_skips_zero_targets():
    rng = np.random.default_rng(4)
    y = np.abs(rng.normal(10, 3, 300))
    y[:5] = 0.0
    pred = y + rng.normal(0, 1, 300)
    out = compute_metrics(y, pred, "regression")
    assert out["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)), abs=1e-6)
    assert out["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), abs=1e-6)
    assert out["r2"] == pytest.approx(skm.r2_score(y, pred), abs=1e-6)
    assert out["median_ae"] == pytest.approx(skm.median_absolute_error(y, pred), abs=1e-6)
    nz = y != 0
    assert out["mape"] == pytest.approx(
        skm.mean_absolute_percentage_error(y[nz], pred[nz]), abs=1e-6
    )
    assert math.isnan(metric_value("mape", np.zeros(3), np.ones(3)))


def test_a_rise_in_an_error_is_a_drop_in_performance_relative_to_its_scale():
    assert performance_drop("rmse", 11.0, 10.0) == pytest.approx(0.1)  # 10% worse
    assert performance_drop("rmse", 9.0, 10.0) == pytest.approx(-0.1)
    assert performance_drop("roc_auc", 0.80, 0.85) == pytest.approx(0.05)
    assert performance_drop("log_loss", 0.5, 0.4) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("name", "y", "a", "b"),
    [
        ("rmse", *np.random.default_rng(5).normal(size=(3, 300))),
        (
            "accuracy",
            np.random.default_rng(6).integers(0, 3, 300),
            np.random.default_rng(7).dirichlet([1, 1, 1], 300),
            np.random.default_rng(8).dirichlet([1, 1, 1], 300),
        ),
    ],
)
def test_the_bootstrap_on_per_row_losses_is_the_metrics_own(name, y, a, b):
    """Resampling per-row losses gives the interval recomputing the metric on each resample
    would give (within resampling noise)."""
    assert row_losses(name, y, a) is not None
    fast = paired_bootstrap(name, y, a, b, 2000, 0.9, seed=0)
    rng = np.random.default_rng(1)
    deltas = []
    for _ in range(2000):
        idx = rng.integers(0, len(y), len(y))
        c, d = metric_value(name, y[idx], a[idx]), metric_value(name, y[idx], b[idx])
        deltas.append(d - c if name == "rmse" else c - d)
    slow = np.quantile(deltas, [0.05, 0.95])
    assert fast == pytest.approx(tuple(slow), abs=0.02)


def test_promotion_for_a_regressor_and_a_multiclass_model_is_judged_against_no_skill():
    rng = np.random.default_rng(9)
    y = rng.normal(50, 10, 400)
    good, champion = y + rng.normal(0, 2, 400), y + rng.normal(0, 8, 400)
    policy = PromotionPolicy(metric="rmse", guards={"mae": 0.5})
    decision = decide_promotion(y, good, champion, policy)
    assert decision.promote, decision.reasons
    assert decision.delta > 0  # a smaller RMSE is an improvement
    # A challenger no better than the mean is refused for lack of skill.
    lazy = np.full(400, y.mean()) + rng.normal(0, 0.01, 400)
    refused = decide_promotion(y, lazy, y + rng.normal(0, 30, 400), policy, champion_failing=True)
    assert not refused.promote
    assert any("a constant prediction at the mean" in r for r in refused.reasons)
    k = rng.integers(0, 3, 400)
    priors = np.tile(np.bincount(k, minlength=3) / 400, (400, 1))
    sharp = np.eye(3)[k] * 0.8 + 0.2 / 3
    multi = decide_promotion(k, priors, sharp, PromotionPolicy(metric="accuracy", guards={}))
    assert not multi.promote
    assert any("the class shares" in r for r in multi.reasons)


def test_the_readmes_regression_config_loads_as_a_regression(tmp_path):
    import re
    from pathlib import Path

    from mlops_loop.demo.task_streams import demand_stream

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "name: demand" in b]
    (tmp_path / "data").mkdir()
    (tmp_path / "landing").mkdir()
    reference, _ = demand_stream(1, batches=4, rows=50, reference_rows=300)
    reference.to_parquet(tmp_path / "data" / "reference.parquet", index=False)
    (tmp_path / "loop.yaml").write_text(block)
    config = load_config(tmp_path / "loop.yaml")
    assert config.task == "regression" and config.promotion.metric == "rmse"
    assert config.retrain.metric_drop == 0.25 and config.promotion.guards == {"mae": 0.5}
    assert config.retrain.baseline == "champion"  # the default for an error in target units


@pytest.mark.parametrize(
    ("labels", "classes"),
    [(np.array(["no", "yes"]), ["no", "yes"]), (np.array([False, True]), [False, True])],
)
def test_text_and_boolean_labels_train_and_score_as_the_positive_class(labels, classes):
    from mlops_loop.core.config import ColumnsConfig, ModelSpec
    from mlops_loop.core.training import attach_scores, predict_scores, scores_of, train_model

    rng = np.random.default_rng(11)
    x = rng.normal(size=400)
    frame = pd.DataFrame({"x": x, "y": labels[(x + rng.normal(0, 0.5, 400) > 0).astype(int)]})
    columns = ColumnsConfig(numerical=["x"], target="y", task="binary", classes=classes)
    model = train_model(frame, ModelSpec(params={"max_iter": 30}), columns)
    assert list(model.classes_) == classes  # fit on the labels themselves
    scores = predict_scores(model, frame, columns)
    y = encode_labels(frame["y"], "y", "binary", classes)
    assert metric_value("roc_auc", y, scores) > 0.8  # the last class is the positive one
    scored = frame.copy()
    attach_scores(scored, scores, columns)
    assert np.allclose(scores_of(scored, columns), scores)


def test_a_multiclass_model_writes_the_class_and_one_probability_per_class():
    from mlops_loop.core.config import ColumnsConfig, ModelSpec
    from mlops_loop.core.training import attach_scores, predict_scores, scores_of, train_model

    rng = np.random.default_rng(12)
    x = rng.normal(size=600)
    names = np.array(["high", "low", "medium"])
    frame = pd.DataFrame({"x": x, "y": names[np.digitize(x, [-0.5, 0.5])]})
    columns = ColumnsConfig(
        numerical=["x"], target="y", task="multiclass", classes=["high", "low", "medium"]
    )
    # A training window without one class still scores every class (its column all zero).
    model = train_model(frame[frame["y"] != "medium"], ModelSpec(params={"max_iter": 30}), columns)
    scores = predict_scores(model, frame, columns)
    assert scores.shape == (600, 3) and np.allclose(scores[:, 2], 0.0)
    scored = frame.copy()
    attach_scores(scored, scores, columns)
    assert {"prediction", "prediction_high", "prediction_low", "prediction_medium"} <= set(scored)
    assert set(scored["prediction"]) <= {"high", "low"}
    assert np.allclose(scores_of(scored, columns), scores)


def test_a_regression_retrains_on_a_relative_rise_of_its_error():
    from mlops_loop.core.config import RetrainPolicy
    from mlops_loop.core.policy import decide_retrain

    policy = RetrainPolicy(metric_drop=0.25)
    common = {"metric_name": "rmse", "baseline_metric": 10.0, "labelled_rows": 500}
    common["dataset_drift"] = False
    assert not decide_retrain(policy=policy, metric=12.0, **common).retrain  # 20% worse
    worse = decide_retrain(policy=policy, metric=13.0, **common)  # 30% worse
    assert worse.retrain and worse.triggers == ["performance"]
    assert not decide_retrain(policy=policy, metric=7.0, **common).retrain  # better


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_a_label_outside_the_task_is_a_quality_incident_on_the_target(tmp_path, task):
    from mlops_loop.core.quality.validate import validate_batch
    from mlops_loop.demo.task_streams import demand_stream, task_stream_loop, triage_stream

    stream, kind = (triage_stream, "triage") if task == "multiclass" else (demand_stream, "demand")
    reference, batches = stream(3, batches=4, rows=400, reference_rows=1500)
    reference.to_parquet(tmp_path / "reference.parquet", index=False)
    (tmp_path / "in").mkdir()
    config = load_config(task_stream_loop(tmp_path, kind))
    assert config.task == task
    clean = batches["batch_001"]
    assert validate_batch(reference, clean, config).success
    broken = clean.copy()
    target = config.columns.target
    if task == "multiclass":
        broken[target] = broken[target].astype(object)
        broken.loc[broken.index[:40], target] = "urgent"  # a class the model never saw
        kind_expected = "unseen_category"
    else:
        broken.loc[broken.index[:40], target] = 1e9  # demand in the wrong unit
        kind_expected = "out_of_range"
    result = validate_batch(reference, broken, config)
    assert not result.success
    assert [(i.kind, i.column) for i in result.incidents if i.severity == "error"] == [
        (kind_expected, target)
    ]


def test_an_error_in_target_units_gets_its_own_axis_in_the_timeline():
    """An RMSE of 3.7 is not clipped to a 0..1 axis; the drift share moves to the right one."""
    import re

    from mlops_loop.core.plots import timeline_svg

    svg = timeline_svg(
        ["b1", "b2"],
        [("rmse (realized)", [0.6, 3.7], "#111"), ("drift share", [0.0, 0.3], "#222")],
        y_range=(0.0, 4.07),
        right={"drift share"},
    )
    assert "drift share (right axis)" in svg
    ys = [float(v) for v in re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)"', svg)]
    top, bottom = 44, 44 + 220
    rmse_low, rmse_high, drift_low, drift_high = ys
    assert top < rmse_high < rmse_low < bottom  # 3.7 below the top of a 0..4.07 axis
    assert drift_high == pytest.approx(bottom - 220 * 0.3)  # 0.3 on the right 0..1 axis

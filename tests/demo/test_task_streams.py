"""The regression and multiclass task streams: shape, determinism, and phases that do to a
HistGradientBoosting model what their docstrings say (stationary batches scored well, the
covariate episode moves the inputs but not the metric, the concept change breaks the model of
the reference and a model refit on the first changed batch does well again)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import accuracy_score, mean_squared_error, r2_score
from threadpoolctl import threadpool_limits

from mlops_loop.core.config import load_config
from mlops_loop.demo.task_streams import (
    DEMAND_CATEGORICAL,
    DEMAND_NUMERICAL,
    DEMAND_TARGET,
    TRIAGE_CATEGORICAL,
    TRIAGE_LABELS,
    TRIAGE_NUMERICAL,
    TRIAGE_TARGET,
    demand_stream,
    task_phase,
    task_stream_loop,
    triage_stream,
)

SEEDS = [1, 2]
KEYS = [f"batch_{i:03d}" for i in range(1, 11)]
PHASES = ["stationary"] * 3 + ["covariate"] * 2 + ["concept"] + ["new_regime"] * 4


def _x(frame: pd.DataFrame, numerical: list[str], categorical: list[str]) -> pd.DataFrame:
    return frame[numerical + categorical].astype({c: "category" for c in categorical})


@dataclass(frozen=True)
class Scores:
    holdout: float  # the reference model on the last quarter of the reference
    batches: dict[str, float]  # the reference model on each batch
    refit: dict[str, float]  # a model fit on batch_006 on each later batch

    def mean(self, phase: str) -> float:
        return float(
            np.mean([s for k, s in self.batches.items() if PHASES[KEYS.index(k)] == phase])
        )


def _predictions(frames, model, columns, target):
    """(holdout, {key: predictions}, {key: refit predictions}) of models fit with 50 iterations
    on the first three quarters of the reference and on batch_006."""
    reference, batches = frames
    split = len(reference) * 3 // 4
    # One OpenMP thread: on a busy machine the default pool makes a fit 30 times slower.
    with threadpool_limits(limits=1, user_api="openmp"):
        fits = [
            model(max_iter=50, random_state=0, categorical_features="from_dtype").fit(
                _x(frame, *columns), frame[target]
            )
            for frame in (reference.iloc[:split], batches["batch_006"])
        ]
        return (
            fits[0].predict(_x(reference.iloc[split:], *columns)),
            {k: fits[0].predict(_x(f, *columns)) for k, f in batches.items()},
            {k: fits[1].predict(_x(batches[k], *columns)) for k in KEYS[6:]},
        )


def _scores(frames, predictions, target, metric) -> Scores:
    reference, batches = frames
    holdout, on_batches, refit = predictions
    y = {k: f[target] for k, f in batches.items()}
    return Scores(
        holdout=float(metric(reference[target].iloc[len(reference) * 3 // 4 :], holdout)),
        batches={k: float(metric(y[k], p)) for k, p in on_batches.items()},
        refit={k: float(metric(y[k], p)) for k, p in refit.items()},
    )


def _rmse(y, p) -> float:
    return float(np.sqrt(mean_squared_error(y, p)))


@pytest.fixture(scope="module", params=SEEDS)
def demand(request):
    frames = demand_stream(request.param)
    predictions = _predictions(
        frames, HistGradientBoostingRegressor, (DEMAND_NUMERICAL, DEMAND_CATEGORICAL), DEMAND_TARGET
    )
    r2 = _scores(frames, predictions, DEMAND_TARGET, r2_score)
    return frames, r2, _scores(frames, predictions, DEMAND_TARGET, _rmse)


@pytest.fixture(scope="module", params=SEEDS)
def triage(request):
    frames = triage_stream(request.param)
    predictions = _predictions(
        frames,
        HistGradientBoostingClassifier,
        (TRIAGE_NUMERICAL, TRIAGE_CATEGORICAL),
        TRIAGE_TARGET,
    )
    return frames, _scores(frames, predictions, TRIAGE_TARGET, accuracy_score)


# Shape


@pytest.mark.parametrize(
    ("stream", "numerical", "categorical", "target"),
    [
        (demand_stream, DEMAND_NUMERICAL, DEMAND_CATEGORICAL, DEMAND_TARGET),
        (triage_stream, TRIAGE_NUMERICAL, TRIAGE_CATEGORICAL, TRIAGE_TARGET),
    ],
)
def test_frames_have_the_declared_columns_unique_ids_and_increasing_utc_times(
    stream, numerical, categorical, target
):
    reference, batches = stream(1)
    assert list(batches) == KEYS
    assert len(reference) == 2000 and all(len(f) == 1000 for f in batches.values())
    frames = [reference, *batches.values()]
    for frame in frames:
        assert list(frame.columns) == ["id", "event_time", *numerical, *categorical, target]
        assert str(frame["event_time"].dt.tz) == "UTC"
        assert frame["event_time"].is_monotonic_increasing and frame["event_time"].is_unique
    for before, after in zip(frames, frames[1:], strict=False):
        assert before["event_time"].max() < after["event_time"].min()
    ids = pd.concat([f["id"] for f in frames])
    assert ids.is_unique and pd.api.types.is_integer_dtype(ids)


@pytest.mark.parametrize("stream", [demand_stream, triage_stream])
def test_a_seed_gives_the_same_frames_and_another_seed_others(stream):
    reference, batches = stream(7, batches=5, rows=300, reference_rows=400)
    again_reference, again = stream(7, batches=5, rows=300, reference_rows=400)
    other_reference, other = stream(8, batches=5, rows=300, reference_rows=400)
    pd.testing.assert_frame_equal(reference, again_reference)
    for key in batches:
        pd.testing.assert_frame_equal(batches[key], again[key])
        assert (
            not batches[key]
            .drop(columns=["id", "event_time"])
            .equals(other[key].drop(columns=["id", "event_time"]))
        )
    assert not reference.equals(other_reference)


def test_phases_of_the_default_stream_are_those_documented():
    assert [task_phase(i, 10) for i in range(10)] == PHASES
    assert [task_phase(i, 4) for i in range(4)] == [
        "stationary",
        "covariate",
        "concept",
        "new_regime",
    ]
    with pytest.raises(ValueError, match="batches=3: a task stream needs at least 4"):
        demand_stream(1, batches=3)
    with pytest.raises(ValueError, match="rows=0"):
        triage_stream(1, rows=0)


def test_demand_is_a_non_negative_float_with_many_values_and_a_few_zeros():
    reference, batches = demand_stream(1)
    for frame in [reference, *batches.values()]:
        y = frame[DEMAND_TARGET]
        assert pd.api.types.is_float_dtype(y)
        assert (y >= 0).all() and 0 < (y == 0).mean() < 0.05
    assert reference[DEMAND_TARGET].nunique() > 200


def test_triage_labels_are_the_three_priorities_in_unequal_shares_of_at_least_15_percent():
    reference, batches = triage_stream(1)
    for frame in [reference, *batches.values()]:
        shares = frame[TRIAGE_TARGET].value_counts(normalize=True)
        assert set(shares.index) == set(TRIAGE_LABELS)
        assert shares.min() >= 0.15
    shares = reference[TRIAGE_TARGET].value_counts(normalize=True)
    assert shares.max() - shares.min() > 0.15


# Phases, through a model of the reference


def test_demand_model_of_the_reference_does_well_on_stationary_batches(demand):
    _, r2, _ = demand
    assert r2.holdout >= 0.6
    assert all(r2.batches[k] >= 0.6 for k in KEYS[:3]), r2.batches


def test_demand_heat_wave_moves_temperature_and_price_but_not_the_model_error(demand):
    (reference, batches), r2, rmse = demand
    for key in KEYS[3:5]:
        for column in ("temperature", "price"):
            assert stats.ks_2samp(reference[column], batches[key][column]).pvalue < 1e-6
        assert r2.batches[key] >= r2.mean("stationary") - 0.1, r2.batches
        assert rmse.batches[key] <= 1.25 * rmse.mean("stationary"), rmse.batches
    for key in KEYS[:3]:
        assert stats.ks_2samp(reference["temperature"], batches[key]["temperature"]).pvalue > 1e-3


def test_demand_concept_change_costs_the_reference_model_and_a_refit_recovers(demand):
    _, r2, rmse = demand
    assert all(rmse.batches[k] >= 1.5 * rmse.holdout for k in KEYS[5:]), rmse.batches
    assert all(r2.refit[k] >= 0.6 for k in KEYS[6:]), r2.refit


def test_triage_model_of_the_reference_does_well_on_stationary_batches(triage):
    _, acc = triage
    assert acc.holdout >= 0.75
    assert all(acc.batches[k] >= 0.75 for k in KEYS[:3]), acc.batches


def test_triage_release_moves_latency_and_service_mix_but_not_the_accuracy(triage):
    (reference, batches), acc = triage
    for key in KEYS[3:5]:
        assert stats.ks_2samp(reference["latency_ms"], batches[key]["latency_ms"]).pvalue < 1e-6
        mix = pd.crosstab(
            np.r_[np.zeros(len(reference)), np.ones(len(batches[key]))],
            np.r_[reference["service"], batches[key]["service"]],
        )
        assert stats.chi2_contingency(mix).pvalue < 1e-6
        assert acc.batches[key] >= acc.mean("stationary") - 0.06, acc.batches


def test_triage_concept_change_costs_the_reference_model_and_a_refit_recovers(triage):
    _, acc = triage
    assert all(acc.batches[k] <= acc.holdout - 0.15 for k in KEYS[5:]), acc.batches
    assert all(acc.batches[k] <= acc.mean("stationary") - 0.15 for k in KEYS[5:])
    assert all(acc.refit[k] >= 0.75 for k in KEYS[6:]), acc.refit


# The replay config


def test_the_loop_config_names_the_columns_and_leaves_task_and_model_to_the_loop(tmp_path):
    path = task_stream_loop(tmp_path, "triage")
    doc = yaml.safe_load(path.read_text())
    assert path == tmp_path / "loop.yaml"
    assert "task" not in doc and "model" not in doc
    config = load_config(path)
    assert config.columns.numerical == TRIAGE_NUMERICAL
    assert config.columns.categorical == TRIAGE_CATEGORICAL
    assert config.columns.target == TRIAGE_TARGET
    assert (config.columns.id, config.columns.timestamp) == ("id", "event_time")
    assert config.state_dir == tmp_path / "state"
    assert config.sources.reference == tmp_path / "reference.parquet"
    assert config.sources.landing == tmp_path / "in"


def test_the_loop_config_carries_a_given_model(tmp_path):
    model = {
        "estimator": "sklearn.ensemble.HistGradientBoostingRegressor",
        "params": {"max_iter": 60},
    }
    doc = yaml.safe_load(task_stream_loop(tmp_path, "demand", model).read_text())
    assert doc["model"] == model
    assert doc["columns"]["target"] == DEMAND_TARGET
    assert doc["columns"]["numerical"] == DEMAND_NUMERICAL
    with pytest.raises(ValueError, match="task stream kind 'sales' is unknown"):
        task_stream_loop(tmp_path, "sales")

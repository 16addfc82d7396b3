"""The default policies on seeded streams, replayed by the backtest on real components (MLflow
on SQLite in a temp folder): drift alone buys no retrain, a broken champion is replaced at once
by a model refit on all the new labels, and nothing happens when nothing changes."""

import pytest

from mlops_loop.core.backtest import backtest
from mlops_loop.core.config import load_config
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.demo.streams import policy_stream, stream_loop

pytestmark = pytest.mark.slow


def _replay(root, kind, batches, seed=1):
    reference, frames = policy_stream(kind, seed, batches=batches, rows=800)
    reference.to_parquet(root / "reference.parquet", index=False)
    (root / "history").mkdir()
    for key, frame in frames.items():
        frame.to_parquet(root / "history" / f"{key}.parquet", index=False)
    # The package's default retrain, training and promotion policies.
    path = stream_loop(
        root,
        {
            "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
            "params": {"max_iter": 60, "random_state": 0},
        },
    )
    config = load_config(path)
    result = backtest(
        config, root / "history", root / "reference.parquet", state_dir=root / "replay"
    )
    cfg = config.model_copy(update={"state_dir": root / "replay" / "state"})
    mlflow = cfg.mlflow.model_copy(update={"tracking_uri": None})
    registry = MlflowRegistry.from_config(cfg.model_copy(update={"mlflow": mlflow}))
    return result, registry, len(reference)


def test_a_covariate_only_stream_costs_no_retrain(tmp_path):
    result, registry, _ = _replay(tmp_path, "covariate", batches=4)
    shifted = result.batches[2:]
    assert all(b.dataset_drift for b in shifted), [b.reasons for b in shifted]
    for b in shifted:
        assert not b.retrained
        assert b.reasons[0].startswith("drift, no retrain: estimated performance holds")
    assert result.summary["retrains"] == 0 and result.summary["training_seconds"] == 0
    assert registry.champion() == 1


def test_an_abrupt_change_is_served_by_a_refit_challenger_within_two_batches(tmp_path):
    result, registry, reference_rows = _replay(tmp_path, "abrupt", batches=5)
    first_broken = 2  # b03 is the first batch of the new concept; its labels show it
    broken = result.batches[first_broken]
    assert broken.metric < 0.5 and "performance" in broken.triggers
    promoted = [i for i, b in enumerate(result.batches) if b.promoted]
    assert promoted and promoted[0] - first_broken <= 1, [b.reasons for b in result.batches]
    winner = result.batches[promoted[0]]
    # The version that serves is the challenger itself, fit on the whole batch (held-out
    # rows included); the fit that was compared on the held-out rows is logged beside it.
    assert winner.champion_version == winner.challenger_version
    tags = registry.version(winner.challenger_version).tags
    assert tags["mlops_loop.refit"].startswith("fit on all 800 labelled rows")
    assert tags["mlops_loop.validated_by"].startswith("models:/")
    first = registry.version(1).tags
    assert first["mlops_loop.refit"].startswith(f"fit on all {reference_rows} labelled rows")
    after = [b.metric for b in result.batches[promoted[0] + 1 :]]
    assert after and min(after) > 0.85, after
    s = result.summary
    assert s["retrains"] >= 1 and s["promotions"] >= 1 and s["training_seconds"] > 0
    assert s["metric_gain"] > 0.2 and s["metric_gain_per_retrain"] == pytest.approx(
        s["metric_gain"] / s["retrains"], abs=1e-5
    )
    assert "gain +" in result.to_text()


def test_a_stationary_stream_never_retrains(tmp_path):
    result, registry, _ = _replay(tmp_path, "stationary", batches=3)
    assert [b.retrained for b in result.batches] == [False] * 3
    assert result.summary["metric_gain"] == 0 and result.summary["metric_gain_per_retrain"] is None
    assert registry.champion() == 1

"""retrain and rollback under `dag.test()`, on the state the monitor run left (conftest)."""

from dataclasses import dataclass
from typing import Any

import pytest

from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.steps.decision import pending_retrains
from mlops_loop.core.store import LoopStore
from tests.airflow.conftest import asset_events, labelled

# Whole DAG runs on a real Airflow and MLflow (a few minutes in all).
pytestmark = pytest.mark.slow


@dataclass
class Retrained:
    pending: list[str]
    champion_before: int | None
    run: Any


@pytest.fixture(scope="module")
def retrained(airflow_loop) -> Retrained:
    loop = airflow_loop
    pending = pending_retrains(loop.config)
    champion = MlflowRegistry.from_config(loop.config).champion()
    return Retrained(pending, champion, loop.run("retrain"))


def test_retrain_maps_over_the_pending_decisions(airflow_loop, retrained):
    loop = airflow_loop
    assert retrained.pending == ["batch_005"]  # batch_004 drifted, but its labels show no drop
    assert str(retrained.run.state) == "success"
    tasks = labelled(retrained.run)
    assert {k for (_, k) in tasks} == set(retrained.pending)
    assert set(tasks.values()) == {"success"}
    store = LoopStore(loop.config.state_dir)
    for key in retrained.pending:
        assert store.batch_json(key, "retrain")["outcome"] == "trained"
        assert store.batch_json(key, "promotion")["challenger_version"] > 1
    # Answered: nothing is pending any more, whoever asks.
    assert pending_retrains(loop.config) == []


def test_retrain_promotes_a_better_challenger(airflow_loop, retrained):
    loop = airflow_loop
    store = LoopStore(loop.config.state_dir)
    promotions = {k: store.batch_json(k, "promotion") for k in retrained.pending}
    print({k: (p["promoted"], p["decision"]["reasons"]) for k, p in promotions.items()})
    promoted = [k for k, p in promotions.items() if p["promoted"]]
    assert promoted, promotions
    registry = MlflowRegistry.from_config(loop.config)
    last = [e for e in registry.history() if e["action"] == "promotion"][-1]
    assert last["to_version"] == registry.champion() != retrained.champion_before
    assert last["user"] == "dag_test"
    assert retrained.run.run_id in last["triggered_by"]
    events = [
        e
        for e in asset_events("churn_demo_champion_model")
        if e.source_run_id == retrained.run.run_id
    ]
    assert any(e.extra["promoted"] for e in events)


def test_a_forced_retrain_that_is_no_better_is_rejected(airflow_loop):
    loop = airflow_loop
    registry = MlflowRegistry.from_config(loop.config)
    champion = registry.champion()
    loop.edit(**{"promotion.min_delta": 0.9})  # no challenger improves ROC AUC by 0.9
    try:
        run = loop.run("retrain", keys=["batch_001"], force=True)
    finally:
        loop.edit(**{"promotion.min_delta": 0.005})
    assert str(run.state) == "success"
    assert labelled(run) == {
        ("retrain.challenger_model", "batch_001"): "success",
        ("retrain.champion_model", "batch_001"): "success",
    }
    promotion = LoopStore(loop.config.state_dir).batch_json("batch_001", "promotion")
    assert promotion["promoted"] is False
    assert registry.champion() == champion
    version = promotion["challenger_version"]
    assert registry.version(version).tags["mlops_loop.decision"] == "rejected"
    # What monitoring decided for the batch stays on record.
    assert LoopStore(loop.config.state_dir).batch_json("batch_001", "decision")["retrain"] is False


def test_rollback_refuses_an_empty_reason(airflow_loop):
    loop = airflow_loop
    registry = MlflowRegistry.from_config(loop.config)
    champion, history = registry.champion(), registry.history()
    for reason in ("", "   "):
        with pytest.raises(Exception, match="reason"):
            loop.run("rollback", to="previous", reason=reason)
    assert registry.champion() == champion and registry.history() == history


def test_rollback_to_the_previous_champion_records_the_airflow_user(airflow_loop):
    loop = airflow_loop
    registry = MlflowRegistry.from_config(loop.config)
    champion = registry.champion()
    previous = registry.previous_champion()
    run = loop.run("rollback", to="previous", reason="the new champion misses the big accounts")
    assert str(run.state) == "success"
    assert registry.champion() == previous != champion
    last = registry.history()[-1]
    assert (last["action"], last["from_version"], last["to_version"]) == (
        "rollback",
        champion,
        previous,
    )
    assert last["reason"] == "the new champion misses the big accounts"
    assert last["user"] == "dag_test"
    assert run.run_id in last["triggered_by"] and "churn_demo_rollback" in last["triggered_by"]
    [event] = [
        e for e in asset_events("churn_demo_champion_model") if e.source_run_id == run.run_id
    ]
    assert event.extra["to_version"] == previous

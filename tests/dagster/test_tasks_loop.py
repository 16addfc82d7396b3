"""A regression and a three-class loop through Dagster end to end, on the seeded streams of
`mlops_loop.demo.task_streams` and a loop YAML with no `task`: the task is inferred, batches are
monitored, the concept change retrains and promotes, a forced retrain on a stable batch is
rejected, and the champion rolls back; every record names the task's own metrics."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from mlops_loop.core.config import load_config
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.store import LoopStore
from mlops_loop.defs.factory import build_definitions
from mlops_loop.demo.task_streams import demand_stream, task_stream_loop, triage_stream
from tests.dagster.conftest import NO_TELEMETRY, materialized, run_job

pytestmark = pytest.mark.slow

# 7 batches: stationary 1-2, covariate 3-4, the concept change at 5, the new regime 6-7.
BATCHES = 7
STREAMS = {"demand": demand_stream, "triage": triage_stream}
TASK = {"demand": ("regression", "rmse"), "triage": ("multiclass", "accuracy")}


@pytest.fixture(scope="module", params=["demand", "triage"])
def task_loop(request, tmp_path_factory):
    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    reference, batches = STREAMS[kind](1, batches=BATCHES, rows=600, reference_rows=1500)
    reference.to_parquet(root / "reference.parquet", index=False)
    (root / "in").mkdir()
    keys = ["batch_001", "batch_003", "batch_005", "batch_006"]
    for key in keys:
        batches[key].to_parquet(root / "in" / f"{key}.parquet", index=False)
    path = task_stream_loop(root, kind)
    doc = yaml.safe_load(path.read_text())
    doc["promotion"] = {"bootstrap_rounds": 200}
    doc["model"] = {"params": {"max_iter": 60}}
    path.write_text(yaml.safe_dump(doc))
    defs = build_definitions(path)
    home = root / "dagster_home"
    home.mkdir()
    instance = dg.DagsterInstance.local_temp(str(home), overrides=NO_TELEMETRY)
    runs = {"bootstrap": run_job(defs, instance, "bootstrap_job")}
    instance.add_dynamic_partitions("batches", keys)
    for key in keys:
        runs[key] = run_job(defs, instance, "monitor_job", key)
    # A forced retrain on a stable batch first: one half-batch model against the champion of
    # the reference. Then the concept change's retrain.
    force = {"ops": {"challenger_model": {"config": {"force": True}}}}
    runs["forced"] = run_job(defs, instance, "retrain_job", "batch_001", force)
    runs["retrain"] = run_job(defs, instance, "retrain_job", "batch_005")
    yield kind, Path(path), defs, instance, runs
    instance.dispose()


def test_the_task_is_inferred_and_every_stage_uses_its_metrics(task_loop):
    kind, path, _, _, runs = task_loop
    task, metric = TASK[kind]
    config = load_config(path)
    assert config.task == task and config.promotion.metric == metric
    assert all(r.success for r in runs.values()), {k: r.success for k, r in runs.items()}
    registry = MlflowRegistry.from_config(config)
    tags = registry.version(1).tags
    assert tags["mlops_loop.task"] == task
    assert f"mlops_loop.metric.{metric}" in tags
    if task == "multiclass":
        assert tags["mlops_loop.classes"] == '["high", "low", "medium"]'
    store = LoopStore(config.state_dir)
    perf = store.batch_json("batch_001", "performance")
    assert perf["metric_name"] == metric and perf["metric"] is not None
    # Performance without labels, per task: the estimate lies near the realized metric on a
    # stable batch.
    assert perf["estimated_metric"] is not None
    tolerance = 0.2 * perf["metric"] if task == "regression" else 0.05
    assert abs(perf["estimated_metric"] - perf["metric"]) <= tolerance, perf
    roles = {o["role"] for o in perf["output_drift"]}
    assert {"prediction", "target"} <= roles
    if task == "multiclass":
        assert "probability" in roles and "recall_high" in perf["metrics"]


def test_the_concept_change_retrains_and_promotes(task_loop):
    kind, path, _, _, runs = task_loop
    config = load_config(path)
    store = LoopStore(config.state_dir)
    decision = store.batch_json("batch_005", "decision")
    assert decision["retrain"] and "performance" in decision["triggers"], decision
    for key in ("batch_001", "batch_003"):  # stable, and the covariate episode: no retrain
        stable = store.batch_json(key, "decision")
        assert not stable["retrain"], stable
    mats = materialized(runs["retrain"])
    champion = mats["champion_model"].metadata
    assert champion["promoted"].value is True, champion["reasons"].value
    assert champion["task"].value == f"{TASK[kind][0]} (primary metric {TASK[kind][1]})"
    registry = MlflowRegistry.from_config(config)
    assert registry.champion() == champion["champion_version"].value != 1
    metrics = [r.data["metric"] for r in champion["comparison"].value.records]
    assert metrics[0] == TASK[kind][1] or TASK[kind][1] in metrics


def test_a_forced_retrain_on_a_stable_batch_is_rejected_and_rollback_restores(task_loop):
    _, path, defs, instance, runs = task_loop
    config = load_config(path)
    registry = MlflowRegistry.from_config(config)
    promotion = LoopStore(config.state_dir).batch_json("batch_001", "promotion")
    # A model of half a stable batch is not better with confidence than the reference's.
    assert promotion["promoted"] is False, promotion["decision"]["reasons"]
    assert promotion["champion_version_after"] == 1
    checks = {c.check_name: c for c in runs["forced"].get_asset_check_evaluations()}
    assert checks["promotion"].passed is False
    promoted = registry.champion()
    assert promoted != 1
    rolled = run_job(
        defs,
        instance,
        "rollback_job",
        run_config={"ops": {"rollback_champion": {"config": {"to": "previous", "reason": "t"}}}},
    )
    assert rolled.success
    assert registry.champion() == 1
    last = registry.history()[-1]
    assert (last["action"], last["from_version"], last["to_version"]) == ("rollback", promoted, 1)

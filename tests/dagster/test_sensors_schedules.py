"""Sensors and schedules evaluated against a real instance, and the retrain runs they request."""

from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
import pytest

from mlops_loop.core.config import METRICS
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.store import LoopStore
from mlops_loop.defs.factory import build_definitions
from tests.conftest import write_loop
from tests.dagster.conftest import (
    NO_TELEMETRY,
    materializations,
    materialized,
    new_loop,
    run_job,
    tick,
)

WHEN = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


def evaluate_schedule(defs, instance, name):
    with dg.build_schedule_context(
        instance=instance, resources=defs.resources, scheduled_execution_time=WHEN
    ) as context:
        return defs.resolve_schedule_def(name)(context)


# -- landing_sensor --------------------------------------------------------------------------------
def test_landing_sensor_adds_partitions_and_requests_monitoring(tmp_path, demo_frames, capfd):
    reference, batches = demo_frames
    config_path = write_loop(
        tmp_path, reference, {k: batches[k].head(50) for k in ("batch_001", "batch_002")}
    )
    landing = tmp_path / "landing"
    (landing / "bad name!.csv").write_text("a,b\n1,2\n")
    (landing / ".batch_009.parquet").write_bytes(b"still being written")
    (landing / "notes.txt").write_text("not a batch")
    defs = build_definitions(config_path)
    with dg.DagsterInstance.ephemeral() as instance:
        first = tick(defs, instance, "landing_sensor")
        assert [r.partition_key for r in first.run_requests] == ["batch_001", "batch_002"]
        for request in first.run_requests:
            assert request.run_key.startswith(f"monitor:{request.partition_key}:")
        assert first.skip_reason is None
        [add] = first.dynamic_partitions_requests
        assert isinstance(add, dg.AddDynamicPartitionsRequest)
        assert add.partitions_def_name == "batches"
        assert list(add.partition_keys) == ["batch_001", "batch_002"]
        # The badly named file is reported in the tick's log, not raised.
        assert "batch file name 'bad name!.csv' cannot be a key" in capfd.readouterr().err

        # The daemon applies the request; the next tick has nothing new.
        instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
        second = tick(defs, instance, "landing_sensor")
        assert second.run_requests == [] and second.dynamic_partitions_requests == []
        assert "nothing new" in second.skip_reason.skip_message

        # A later arrival is picked up alone.
        batches["batch_004"].head(50).to_parquet(landing / "batch_004.parquet", index=False)
        third = tick(defs, instance, "landing_sensor")
        assert [r.partition_key for r in third.run_requests] == ["batch_004"]
        assert list(third.dynamic_partitions_requests[0].partition_keys) == ["batch_004"]


def test_landing_sensor_without_a_landing_folder_skips(tmp_path, demo_frames):
    reference, _ = demo_frames
    config_path = write_loop(tmp_path, reference)
    (tmp_path / "landing").rmdir()
    defs = build_definitions(config_path)
    with dg.DagsterInstance.ephemeral() as instance:
        result = tick(defs, instance, "landing_sensor")
    assert result.run_requests == [] and result.skip_reason is not None


# -- retrain_sensor and retrain_job ----------------------------------------------------------------
@dataclass
class Retrain:
    first: dg.SensorResult
    second: dg.SensorResult
    result: dg.ExecuteInProcessResult
    champion_before: int
    after: dg.SensorResult


@pytest.fixture(scope="module")
def retrained(monitored_loop, demo_frames) -> Retrain:
    """batch_005 (the concept change) landed and monitored, two ticks of retrain_sensor, the
    retrain run the first one asks for, and a tick after it from a fresh cursor. (batch_004
    drifts too, but its labels show the champion holding: it trains nothing.)"""
    loop = monitored_loop
    _, batches = demo_frames
    batches["batch_005"].to_parquet(loop.config.sources.landing / "batch_005.parquet", index=False)
    loop.instance.add_dynamic_partitions("batches", ["batch_005"])
    loop.runs["batch_005"] = run_job(loop.defs, loop.instance, "monitor_job", "batch_005")
    first = tick(loop.defs, loop.instance, "retrain_sensor")
    second = tick(loop.defs, loop.instance, "retrain_sensor", cursor=first.cursor)
    [request] = first.run_requests
    champion_before = MlflowRegistry.from_config(loop.config).champion()
    result = run_job(
        loop.defs,
        loop.instance,
        "retrain_job",
        request.partition_key,
        request.run_config,
        request.tags,
    )
    after = tick(loop.defs, loop.instance, "retrain_sensor")
    return Retrain(first, second, result, champion_before, after)


def test_retrain_sensor_requests_the_degraded_batch_once(monitored_loop, retrained):
    loop = monitored_loop
    held = loop.runs["batch_004"].asset_materializations_for_node("retrain_decision")[0]
    assert held.metadata["retrain"].value is False
    assert "drift, no retrain: realized performance holds" in held.metadata["reasons"].value
    decision = loop.runs["batch_005"].asset_materializations_for_node("retrain_decision")[0]
    assert decision.metadata["retrain"].value is True
    assert "performance" in decision.metadata["triggers"].value
    [request] = retrained.first.run_requests
    assert request.partition_key == "batch_005"
    assert request.job_name in (None, "retrain_job")
    assert request.tags["mlops_loop/trigger"] == "retrain_decision"
    records = materializations(loop.instance, "retrain_decision")
    assert retrained.first.cursor == str(records[-1].storage_id)
    assert request.run_key == f"retrain:batch_005:{records[-1].storage_id}"
    # The cursor moved past every decision: the next tick requests nothing.
    assert retrained.second.run_requests == []
    assert retrained.second.skip_reason is not None
    assert retrained.second.cursor == retrained.first.cursor
    # Retrained since its decision: even a tick without a cursor (another process, a reset
    # cursor) does not ask for batch_005 again.
    assert retrained.after.run_requests == []


def test_retrain_job_on_the_degraded_batch_trains_and_judges_a_challenger(
    monitored_loop, retrained
):
    loop = monitored_loop
    registry = MlflowRegistry.from_config(loop.config)
    champion_before = retrained.champion_before
    result = retrained.result
    assert result.dagster_run.tags["mlops_loop/trigger"] == "retrain_decision"
    assert result.success
    mats = materialized(result)
    assert set(mats) == {"challenger_model", "champion_model"}
    challenger = mats["challenger_model"].metadata
    version = challenger["version"].value
    assert version in registry.versions() and version != champion_before
    assert registry.challenger() == version
    # After a realized drop the older batches describe the old concept: the new batch alone.
    assert challenger["training_parts"].value == "batch_005 (first 50%)"
    assert "performance" in challenger["triggers"].value
    champion = mats["champion_model"].metadata
    assert isinstance(champion["promoted"].value, bool)
    assert champion["challenger_version"].value == version
    assert champion["reasons"].value.startswith("- ")
    assert "roc_auc" in champion["reasons"].value
    expected = version if champion["promoted"].value else champion_before
    assert champion["champion_version"].value == expected == registry.champion()
    assert [r.data["metric"] for r in champion["comparison"].value.records] == list(METRICS)
    assert "| promotion v" in champion["champion_history"].value or not champion["promoted"].value
    guards = {r.data["metric"] for r in champion["guards_and_segments"].value.records}
    assert {"brier", "recall"} <= guards
    promotion = LoopStore(loop.config.state_dir).batch_json("batch_005", "promotion")
    assert promotion["promoted"] is champion["promoted"].value


def test_retrain_job_on_a_stable_batch_skips_the_challenger(monitored_loop):
    loop = monitored_loop
    decision = loop.runs["batch_001"].asset_materializations_for_node("retrain_decision")[0]
    assert decision.metadata["retrain"].value is False
    versions = MlflowRegistry.from_config(loop.config).versions()
    result = run_job(loop.defs, loop.instance, "retrain_job", "batch_001")
    assert result.success
    assert materialized(result) == {}
    assert result.is_node_skipped("champion_model")
    assert materializations(loop.instance, "challenger_model", "batch_001") == []
    assert materializations(loop.instance, "champion_model", "batch_001") == []
    assert MlflowRegistry.from_config(loop.config).versions() == versions


def test_forced_retrain_trains_on_a_stable_batch(tmp_path, demo_frames):
    loop = new_loop(tmp_path, demo_frames, ["batch_001"])
    try:
        assert run_job(loop.defs, loop.instance, "bootstrap_job").success
        loop.instance.add_dynamic_partitions("batches", ["batch_001"])
        assert run_job(loop.defs, loop.instance, "monitor_job", "batch_001").success
        # What retrain_schedule asks for: the latest accepted batch, forced.
        request = evaluate_schedule(loop.defs, loop.instance, "retrain_schedule")
        assert request.partition_key == "batch_001"
        result = run_job(
            loop.defs,
            loop.instance,
            "retrain_job",
            request.partition_key,
            request.run_config,
            request.tags,
        )
        assert result.success
        mats = materialized(result)
        assert set(mats) == {"challenger_model", "champion_model"}
        assert mats["challenger_model"].metadata["triggers"].value == "schedule"
        assert result.dagster_run.tags["mlops_loop/trigger"] == "schedule"
        # What monitoring decided for the batch stays on record.
        decision = LoopStore(loop.config.state_dir).batch_json("batch_001", "decision")
        assert decision["retrain"] is False and decision["triggers"] == []
    finally:
        loop.instance.dispose()


# -- schedules -------------------------------------------------------------------------------------
def test_monitor_schedule_requests_only_unmonitored_partitions(monitored_loop):
    loop = monitored_loop
    # batch_001 passed, batch_003 was quarantined, batch_004 (and batch_005, when the retrain
    # tests landed it) passed: each has a verdict.
    assert loop.instance.get_dynamic_partitions("batches")[:4] == [
        "batch_001",
        "batch_002",
        "batch_003",
        "batch_004",
    ]
    requests = evaluate_schedule(loop.defs, loop.instance, "monitor_schedule")
    assert [r.partition_key for r in requests] == ["batch_002"]
    assert requests[0].run_key == f"monitor:batch_002:{WHEN.isoformat()}"


def test_monitor_schedule_skips_when_everything_is_monitored(monitored_loop, tmp_path):
    loop = monitored_loop
    with dg.DagsterInstance.local_temp(str(tmp_path), overrides=NO_TELEMETRY) as instance:
        instance.add_dynamic_partitions("batches", ["batch_001", "batch_003"])
        result = evaluate_schedule(loop.defs, instance, "monitor_schedule")
    assert isinstance(result, dg.SkipReason)


def test_retrain_schedule_forces_a_retrain_on_the_latest_accepted_batch(monitored_loop):
    loop = monitored_loop
    request = evaluate_schedule(loop.defs, loop.instance, "retrain_schedule")
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == LoopStore(loop.config.state_dir).accepted_keys()[-1]
    assert request.partition_key in ("batch_004", "batch_005")
    assert request.run_config == {"ops": {"challenger_model": {"config": {"force": True}}}}
    assert request.tags["mlops_loop/trigger"] == "schedule"


def test_retrain_schedule_skips_without_an_accepted_batch(tmp_path, demo_frames):
    reference, _ = demo_frames
    defs = build_definitions(write_loop(tmp_path, reference))
    with dg.DagsterInstance.local_temp(str(tmp_path), overrides=NO_TELEMETRY) as instance:
        result = evaluate_schedule(defs, instance, "retrain_schedule")
    assert isinstance(result, dg.SkipReason)
    assert "no accepted batch" in result.skip_message

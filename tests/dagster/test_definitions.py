"""The Dagster binding loads: jobs, sensors, schedules and assets, from a path or a LoopConfig."""

import dagster as dg
import pytest

import mlops_loop.definitions as demo_definitions
from mlops_loop.core.config import load_config
from mlops_loop.core.errors import InvalidConfigError
from mlops_loop.defs.factory import build_definitions
from tests.conftest import write_loop

JOBS = {
    "bootstrap_job",
    "monitor_job",
    "retrain_job",
    "rollback_job",
    "labels_job",
    "remeasure_job",
    "relearn_suite_job",
}
SENSORS = {
    "landing_sensor",
    "retrain_sensor",
    "label_sensor",
    "remeasure_sensor",
    "revalidate_sensor",
    "failure_sensor",
}
SCHEDULES = {"monitor_schedule", "retrain_schedule"}
ASSETS = {
    "reference_snapshot",
    "monitored_batch",
    "drift_report",
    "scored_batch",
    "model_performance",
    "retrain_decision",
    "challenger_model",
    "champion_model",
    "baseline_model",
    "late_labels",
}


@pytest.fixture
def config_path(tmp_path, demo_frames):
    reference, _ = demo_frames
    return write_loop(tmp_path, reference)


def asset_names(defs: dg.Definitions) -> set[str]:
    return {spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()}


def test_definitions_load_from_a_config_path(config_path):
    defs = build_definitions(config_path, monitor_cron="*/5 * * * *")
    dg.Definitions.validate_loadable(defs)
    assert {j.name for j in defs.resolve_all_job_defs()} >= JOBS
    assert {s.name for s in defs.sensors} == SENSORS
    assert {s.name for s in defs.schedules} == SCHEDULES
    assert asset_names(defs) == ASSETS
    assert defs.resolve_schedule_def("monitor_schedule").cron_schedule == "*/5 * * * *"
    assert defs.resolve_schedule_def("retrain_schedule").cron_schedule == "0 3 * * 0"
    # The sensors target the jobs they launch; the batch assets share the dynamic partitions.
    assert defs.resolve_sensor_def("landing_sensor").job_name == "monitor_job"
    assert defs.resolve_sensor_def("retrain_sensor").job_name == "retrain_job"
    assert defs.resolve_sensor_def("label_sensor").job_name == "labels_job"
    # remeasure_sensor targets the re-measured assets: it can ask the daemon for a backfill.
    remeasure = defs.resolve_sensor_def("remeasure_sensor").asset_selection
    assert remeasure is not None
    assert {k.to_user_string() for k in remeasure.resolve(defs.resolve_asset_graph())} == {
        "model_performance",
        "retrain_decision",
    }
    for name in ("monitored_batch", "drift_report", "retrain_decision", "champion_model"):
        partitions = defs.resolve_assets_def(name).partitions_def
        assert isinstance(partitions, dg.DynamicPartitionsDefinition)
        assert partitions.name == "batches"
    assert defs.resolve_assets_def("baseline_model").partitions_def is None
    # The quality gate is a check on monitored_batch that never fails the run: a quarantine
    # skips the steps after it (they yield nothing), so it is not blocking.
    checks = list(defs.resolve_assets_def("monitored_batch").check_specs)
    assert [(c.name, c.asset_key.to_user_string(), c.blocking) for c in checks] == [
        ("quality_gate", "monitored_batch", False),
        ("quality_gate_stuck", "monitored_batch", False),
    ]
    for name in ("drift_report", "scored_batch", "model_performance", "retrain_decision"):
        assert not defs.resolve_assets_def(name).op.outs["result"].is_required, name
    # Promoted, rejected and rolled-back partitions of champion_model read apart.
    [promotion] = defs.resolve_assets_def("champion_model").check_specs
    assert (promotion.name, promotion.blocking) == ("promotion", False)
    # The loop resource hands the assets the validated config.
    assert defs.resources["loop"].load() == load_config(config_path)


def test_job_selections(config_path):
    defs = build_definitions(config_path)

    def selected(job):
        return {
            k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.executable_asset_keys
        }

    assert selected("bootstrap_job") == {"reference_snapshot", "baseline_model"}
    assert selected("monitor_job") == {
        "monitored_batch",
        "drift_report",
        "scored_batch",
        "model_performance",
        "retrain_decision",
    }
    assert selected("retrain_job") == {"challenger_model", "champion_model"}
    assert defs.resolve_job_def("monitor_job").partitions_def.name == "batches"


def test_definitions_from_a_loop_config_object(config_path):
    config = load_config(config_path)
    defs = build_definitions(config)
    assert {j.name for j in defs.resolve_all_job_defs()} >= JOBS
    assert defs.resources["loop"].load() == config


def test_a_broken_config_fails_at_load_naming_the_field(tmp_path, demo_frames):
    reference, _ = demo_frames
    path = write_loop(tmp_path, reference, **{"promotion.confidence": 2.0})
    with pytest.raises(InvalidConfigError, match="promotion.confidence"):
        build_definitions(path)
    with pytest.raises(InvalidConfigError, match="cannot read loop config"):
        build_definitions(tmp_path / "nowhere.yaml")


def test_demo_definitions_without_a_config_say_make_demo(tmp_path, monkeypatch):
    missing = tmp_path / "missing" / "loop.yaml"
    monkeypatch.setenv("MLOPS_LOOP_CONFIG", str(missing))
    # @dg.definitions wraps the function in a LazyDefinitions: calling it loads the definitions.
    with pytest.raises(InvalidConfigError, match="make demo") as info:
        demo_definitions.defs()
    assert str(missing) in str(info.value)


def test_demo_definitions_load_the_configured_loop(config_path, monkeypatch):
    monkeypatch.setenv("MLOPS_LOOP_CONFIG", str(config_path))
    defs = demo_definitions.defs()
    assert isinstance(defs, dg.Definitions)
    assert {j.name for j in defs.resolve_all_job_defs()} >= JOBS
    assert asset_names(defs) == ASSETS


def test_the_committed_dagster_yaml_matches_the_demo_default():
    from pathlib import Path

    import yaml

    from mlops_loop.demo.runner import DAGSTER_YAML

    committed = Path(__file__).parents[2] / "dagster_home" / "dagster.yaml"
    assert yaml.safe_load(committed.read_text()) == DAGSTER_YAML

"""bootstrap_job and monitor_job on a real instance: quality gate, drift, scoring, MLflow."""

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from mlops_loop.core.errors import DataError
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.steps.training import training_window
from mlops_loop.core.store import LoopStore
from tests.dagster.conftest import materializations, materialized, new_loop, run_job, tick

DOWNSTREAM = ("drift_report", "scored_batch", "model_performance", "retrain_decision")


def mlflow_run_of(loop, dagster_run_id: str):
    client = MlflowClient(tracking_uri=loop.config.tracking_uri)
    experiment = client.get_experiment_by_name(loop.config.mlflow.experiment)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`dagster.run_id` = '{dagster_run_id}'"
    )
    return client, experiment, runs


def assert_checks_partition(loop, check, partition: str, run_id: str) -> None:
    """The check is evaluated per batch, on the materialization made by the same run."""
    assert check.partition == partition
    [record] = [
        r
        for r in materializations(loop.instance, "monitored_batch", partition)
        if r.run_id == run_id
    ]
    assert check.target_materialization_data.storage_id == record.storage_id
    assert check.target_materialization_data.run_id == run_id


# -- bootstrap -------------------------------------------------------------------------------------
def test_bootstrap_snapshots_the_reference_and_registers_a_champion(monitored_loop):
    loop = monitored_loop
    result = loop.runs["bootstrap"]
    assert result.success
    mats = materialized(result)
    assert set(mats) == {"reference_snapshot", "baseline_model"}
    snapshot = mats["reference_snapshot"].metadata
    assert snapshot["rows"].value == 3000
    assert snapshot["dagster/row_count"].value == 3000
    assert snapshot["expectations"].value > 0
    assert snapshot["suite_adjustments"].value == 0  # the suite accepts its own reference
    assert len(snapshot["digest"].value) >= 16
    baseline = mats["baseline_model"].metadata
    assert baseline["trained"].value is True
    assert baseline["champion_version"].value == 1
    assert 0.5 < baseline["roc_auc"].value <= 1.0
    registry = MlflowRegistry.from_config(loop.config)
    assert registry.champion() is not None
    first = registry.history()[0]
    assert (first["action"], first["from_version"], first["to_version"]) == ("bootstrap", None, 1)
    assert first["triggered_by"].startswith(f"dagster run {result.run_id[:8]} (bootstrap_job")
    # The snapshot and its suite live in the loop's store.
    store = LoopStore(loop.config.state_dir)
    assert store.snapshot_info()["rows"] == 3000
    assert (store.snapshot_dir / "suite.json").exists()


def test_bootstrap_again_keeps_the_champion(monitored_loop, tmp_path):
    loop = monitored_loop
    registry = MlflowRegistry.from_config(loop.config)
    versions = registry.versions()
    result = run_job(loop.defs, loop.instance, "bootstrap_job")
    assert result.success
    meta = materialized(result)["baseline_model"].metadata
    assert meta["trained"].value is False
    assert meta["champion_version"].value == registry.champion()
    assert registry.versions() == versions


# -- a clean batch ---------------------------------------------------------------------------------
def test_clean_batch_passes_the_gate_and_materializes_every_asset(monitored_loop):
    loop = monitored_loop
    result = loop.runs["batch_001"]
    assert result.success
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "quality_gate"]
    assert check.check_name == "quality_gate"
    assert check.asset_key == dg.AssetKey("monitored_batch")
    assert check.passed is True
    assert_checks_partition(loop, check, "batch_001", result.run_id)
    assert check.metadata["errors"].value == 0
    mats = materialized(result)
    assert set(mats) == {"monitored_batch", *DOWNSTREAM}
    assert all(m.partition == "batch_001" for m in mats.values())
    batch = mats["monitored_batch"].metadata
    assert batch["rows"].value == 2000
    assert batch["quality_success"].value is True
    drift = mats["drift_report"].metadata
    assert isinstance(drift["drift_share"].value, float)
    assert drift["dataset_drift"].value is False
    assert drift["drifted_features"].value == "none"
    report = Path(drift["report"].value)
    assert report.is_file() and report.is_relative_to(loop.config.state_dir)
    assert mats["scored_batch"].metadata["champion_version"].value == 1
    perf = mats["model_performance"].metadata
    assert 0.5 < perf["roc_auc"].value <= 1.0
    assert perf["label_coverage"].value == 1.0
    decision = mats["retrain_decision"].metadata
    assert decision["retrain"].value is False
    assert decision["triggers"].value == "none"
    # The instance holds the same materializations, per partition.
    for asset in ("monitored_batch", *DOWNSTREAM):
        records = materializations(loop.instance, asset, "batch_001")
        assert [r.run_id for r in records] == [result.run_id], asset


def test_clean_batch_mlflow_run_carries_the_dagster_run(monitored_loop):
    loop = monitored_loop
    result = loop.runs["batch_001"]
    client, experiment, runs = mlflow_run_of(loop, result.run_id)
    # Every step of the Dagster run logged into one MLflow run.
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["dagster.run_id"] == result.run_id
    assert run.data.tags["dagster.job"] == "monitor_job"
    assert run.data.tags["mlops_loop.partition"] == "batch_001"
    assert run.data.metrics["quality_success"] == 1.0
    assert "drift_share" in run.data.metrics and "roc_auc" in run.data.metrics
    assert run.data.params["drift.fdr"] == str(loop.config.drift.fdr)
    assert "quality.range_margin" in run.data.params
    run_id = run.info.run_id
    folders = ("quality", "drift")
    files = {a.path for d in folders for a in client.list_artifacts(run_id, d)}
    assert {
        "quality/result.json",
        "quality/report.html",
        "quality/data_docs.html",
        "drift/report.json",
        "drift/report.html",
    } <= files
    local = Path(client.download_artifacts(run.info.run_id, "quality/result.json"))
    assert json.loads(local.read_text())["success"] is True
    inputs = [
        (d.dataset.name, {t.key: t.value for t in d.tags}.get("mlflow.data.context"))
        for d in run.inputs.dataset_inputs
    ]
    assert ("batch-batch_001", "monitoring") in inputs
    # Artifacts live in the loop's state folder, not in the working directory.
    state = loop.config.state_dir.resolve()
    assert experiment.artifact_location == (state / "mlartifacts").as_uri()
    assert run.info.artifact_uri.startswith(experiment.artifact_location)
    on_disk = {
        p.relative_to(state / "mlartifacts").as_posix()
        for p in (state / "mlartifacts").rglob("*.json")
    }
    assert f"{run.info.run_id}/artifacts/drift/report.json" in on_disk
    assert not any(loop.cwd.iterdir()), list(loop.cwd.iterdir())


# -- the broken batch ------------------------------------------------------------------------------
def step_events(result: dg.ExecuteInProcessResult, kind: dg.DagsterEventType) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type == kind and e.step_key}


def test_a_quarantine_is_an_outcome_the_run_succeeds_and_later_steps_skip(monitored_loop):
    loop = monitored_loop
    result = loop.runs["batch_003"]
    # Nothing broke: the run succeeds, no step fails, the steps after the gate do not run.
    assert result.success
    assert result.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert step_events(result, dg.DagsterEventType.STEP_FAILURE) == set()
    assert step_events(result, dg.DagsterEventType.STEP_SKIPPED) == {
        "model_performance",
        "retrain_decision",
    }
    # The first steps after the gate see the quarantine, say so, and yield nothing.
    logs = [
        e.message
        for e in loop.instance.all_logs(result.run_id)
        if e.step_key in ("drift_report", "scored_batch") and e.message
    ]
    assert any("quarantined by the quality gate" in m for m in logs)
    stored = loop.instance.get_run_by_id(result.run_id)
    assert stored is not None and stored.status == dg.DagsterRunStatus.SUCCESS


def test_a_real_error_still_fails_the_monitor_run(tmp_path, demo_frames):
    loop = new_loop(tmp_path, demo_frames, ["batch_001"])
    try:
        assert run_job(loop.defs, loop.instance, "bootstrap_job").success
        loop.instance.add_dynamic_partitions("batches", ["batch_001"])
        # The champion's model files vanish: scoring cannot load it.
        for path in (loop.config.state_dir / "mlartifacts").rglob("MLmodel"):
            path.unlink()
        result = run_job(loop.defs, loop.instance, "monitor_job", "batch_001")
        assert not result.success
        assert "scored_batch" in step_events(result, dg.DagsterEventType.STEP_FAILURE)
        # The steps after it never start.
        assert "model_performance" not in step_events(result, dg.DagsterEventType.STEP_START)
        # The failure sensor records it failed in MLflow.
        run = loop.instance.get_run_by_id(result.run_id)
        context = dg.build_run_status_sensor_context(
            sensor_name="failure_sensor",
            dagster_event=result.get_run_failure_event(),
            dagster_instance=loop.instance,
            dagster_run=run,
            resources=loop.defs.resources,
        ).for_run_failure()
        loop.defs.resolve_sensor_def("failure_sensor")(context)
        _, _, [mlrun] = mlflow_run_of(loop, result.run_id)
        assert mlrun.info.status == "FAILED"
        assert mlrun.data.metrics["step_failures"] == 1
        assert mlrun.data.tags["mlops_loop.partition"] == "batch_001"
        assert "scored_batch" in mlrun.data.tags["mlops_loop.error"]
        assert mlrun.info.run_name == "monitor batch_001"
    finally:
        loop.instance.dispose()


def test_broken_batch_fails_the_gate_check(monitored_loop):
    loop = monitored_loop
    result = loop.runs["batch_003"]
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "quality_gate"]
    assert check.check_name == "quality_gate"
    assert_checks_partition(loop, check, "batch_003", result.run_id)
    assert check.passed is False
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["errors"].value > 0
    assert check.description.startswith("Quarantined: ")
    assert "income" in check.description and "age" in check.description
    # The checked asset is materialized (with the failed verdict); nothing downstream is.
    mats = materialized(result)
    assert set(mats) == {"monitored_batch"}
    assert mats["monitored_batch"].metadata["quality_success"].value is False
    for asset in DOWNSTREAM:
        assert materializations(loop.instance, asset, "batch_003") == [], asset
    # The latest drift report overall is still the one of the batch monitored after it.
    latest = loop.instance.get_latest_materialization_event(dg.AssetKey("drift_report"))
    assert latest.asset_materialization.partition == "batch_004"


def test_broken_batch_is_quarantined_and_kept_out_of_training(monitored_loop):
    loop = monitored_loop
    store = LoopStore(loop.config.state_dir)
    assert store.quarantined_keys() == ["batch_003"]
    assert "batch_003" not in store.accepted_keys()
    assert store.batch_json("batch_003", "drift") is None
    assert store.batch_json("batch_003", "decision") is None
    # The demo config trains on the last accepted batch before the current one: without the
    # quarantine that would be batch_003.
    assert loop.config.training.window == "recent" and loop.config.training.recent_batches == 1
    frame, parts, holdout = training_window(loop.config, "batch_004")
    assert parts == ["batch_001", "batch_004 (first 50%)"]
    assert not any("batch_003" in p for p in parts)
    assert len(frame) == 2000 + 1000 and len(holdout) == 1000
    with pytest.raises(DataError, match="quality gate"):
        training_window(loop.config, "batch_003")


def test_retrain_sensor_ignores_the_broken_batch(monitored_loop):
    loop = monitored_loop
    data = tick(loop.defs, loop.instance, "retrain_sensor")
    partitions = [r.partition_key for r in data.run_requests]
    assert "batch_003" not in partitions and "batch_001" not in partitions
    # batch_004 drifted but its labels show the champion holding; batch_005 (the concept
    # change) is requested if another test has landed it and not yet retrained it.
    assert set(partitions) <= {"batch_005"}
    # The quarantined batch never got a decision the sensor could act on.
    assert materializations(loop.instance, "retrain_decision", "batch_003") == []


# -- re-validation ---------------------------------------------------------------------------------
def test_a_fixed_batch_leaves_quarantine(tmp_path, demo_frames):
    loop = new_loop(tmp_path, demo_frames, ["batch_003"])
    try:
        assert run_job(loop.defs, loop.instance, "bootstrap_job").success
        loop.instance.add_dynamic_partitions("batches", ["batch_003"])
        broken = run_job(loop.defs, loop.instance, "monitor_job", "batch_003")
        assert broken.success
        store = LoopStore(loop.config.state_dir)
        assert store.quarantined_keys() == ["batch_003"]
        # Upstream fixes the export and re-delivers the batch under the same name.
        _, batches = demo_frames
        landed = loop.config.sources.landing / "batch_003.parquet"
        batches["batch_001"].to_parquet(landed.with_suffix(".tmp"), index=False)
        shutil.move(landed.with_suffix(".tmp"), landed)
        # The landing sensor notices the re-delivery and monitors the batch again.
        [again] = tick(loop.defs, loop.instance, "landing_sensor").run_requests
        assert again.partition_key == "batch_003"
        fixed = run_job(loop.defs, loop.instance, "monitor_job", "batch_003")
        assert tick(loop.defs, loop.instance, "landing_sensor").run_requests == []
        assert fixed.success
        [check] = [c for c in fixed.get_asset_check_evaluations() if c.check_name == "quality_gate"]
        assert check.passed is True
        assert_checks_partition(loop, check, "batch_003", fixed.run_id)
        assert store.quarantined_keys() == []
        assert store.accepted_keys() == ["batch_003"]
        assert set(materialized(fixed)) == {"monitored_batch", *DOWNSTREAM}
        assert [r.run_id for r in materializations(loop.instance, "drift_report", "batch_003")] == [
            fixed.run_id
        ]
        assert [
            r.run_id for r in materializations(loop.instance, "monitored_batch", "batch_003")
        ] == [broken.run_id, fixed.run_id]
    finally:
        loop.instance.dispose()


def test_scoring_operations_are_in_mlflow_and_dagster(monitored_loop):
    loop = monitored_loop
    result = loop.runs["batch_001"]
    meta = materialized(result)["scored_batch"].metadata
    rows = meta["rows"].value
    for name in ("chunk_latency_ms", "row_latency_in_batch_ms", "single_row_latency_ms"):
        p50, p95, p99 = (meta[f"{name}_{p}"].value for p in ("p50", "p95", "p99"))
        assert 0 < p50 <= p95 <= p99
    # Metadata shows 4 significant digits.
    assert meta["throughput_rows_per_s"].value == pytest.approx(
        rows / meta["scoring_s"].value, rel=2e-3
    )
    assert meta["peak_rss_mb"].value > 50 and meta["cpu_s"].value > 0
    assert meta["started_at"].value < meta["ended_at"].value
    _, _, [run] = mlflow_run_of(loop, result.run_id)
    metrics = run.data.metrics
    assert metrics["scored_rows"] == rows
    assert metrics["single_row_latency_ms_p99"] == pytest.approx(
        meta["single_row_latency_ms_p99"].value, rel=1e-3
    )
    assert {"step_peak_rss_mb", "step_cpu_percent", "throughput_rows_per_s"} <= set(metrics)


def test_estimated_performance_and_segments_are_reported_beside_realized(monitored_loop):
    loop = monitored_loop
    store = LoopStore(loop.config.state_dir)
    perf = store.batch_json("batch_001", "performance")
    # Stable batch: the label-free estimate lands near the realized AUC.
    assert perf["estimated_metric"] == pytest.approx(perf["metric"], abs=0.05)
    meta = materialized(loop.runs["batch_001"])["model_performance"].metadata
    assert meta["estimated_roc_auc"].value == pytest.approx(perf["estimated_metric"], rel=1e-3)
    # The primary metric is plotted; the others are in one table, the primary metric first.
    assert "accuracy" not in meta and "log_loss" not in meta
    rows = [r.data for r in meta["metrics"].value.records]
    assert rows[0]["metric"] == "roc_auc" and len(rows) > 3
    assert all(len(v.split(".")[-1]) <= 4 for r in rows for v in r.values() if "." in v)
    regions = {r["value"]: r for r in perf["segments"] if r["segment"] == "region"}
    assert len(regions) >= 3 and sum(r["rows"] for r in regions.values()) == perf["rows"]
    assert all(
        r["roc_auc"] is not None and r["estimated_roc_auc"] is not None for r in regions.values()
    )
    table = meta["segments"].value.records
    assert {r.data["value"] for r in table} == set(regions)

    # Prediction and target drift: the champion's scores and the labels against the reference.
    outputs = {o["role"]: o for o in perf["output_drift"]}
    assert outputs["prediction"]["method"] == "ks" and outputs["target"]["method"] == "chi_square"
    assert not outputs["prediction"]["drifted"] and outputs["prediction"]["error"] is None
    shifted = {o["role"]: o for o in store.batch_json("batch_004", "performance")["output_drift"]}
    assert shifted["prediction"]["effect_size"] > outputs["prediction"]["effect_size"]
    assert meta["prediction_drift_effect"].value == pytest.approx(
        outputs["prediction"]["effect_size"], rel=1e-3
    )

    # The covariate-drift batch: "older customers from the west" shows as one region surging.
    seg = {r["value"]: r for r in store.batch_json("batch_004", "segment_drift")}
    surge = max(seg.values(), key=lambda r: r["share"] - r["reference_share"])
    assert surge["value"] == "west" and surge["share"] > surge["reference_share"] + 0.1
    assert surge["drift_share"] is not None and "age" in surge["drifted_features"]
    drift_meta = materialized(loop.runs["batch_004"])["drift_report"].metadata
    assert 0.5 <= drift_meta["multivariate_auc"].value <= 1.0
    assert "features" in drift_meta["triggered_by"].value
    assert {r.data["value"] for r in drift_meta["segments"].value.records} == set(seg)


def test_suite_notes_are_reference_snapshot_metadata():
    from mlops_loop.defs import metadata as md

    assert md.suite_notes([]) == {"suite_adjustments": 0}
    note = {"kind": "custom", "column": "age", "action": "dropped: the reference itself fails it"}
    meta = md.suite_notes([note])
    assert meta["suite_adjustments"] == 1
    [record] = meta["suite_notes"].value.records
    assert record.data == {"kind": "custom", "column": "age", "action": note["action"]}


def test_incident_cells_read_as_values_not_python_reprs():
    from mlops_loop.defs import metadata as md

    incident = {
        "kind": "out_of_range",
        "observed": {"share": 1.0, "examples": [1353375.0, 5662782.0]},
        "expected": {"min": -96498.34999999999, "max": 323175.73, "max_share": 0.01},
        "rate": 0.123456,
    }
    [record] = md.table([incident], ["kind", "observed", "expected", "rate"]).value.records
    assert record.data == {
        "kind": "out_of_range",
        "observed": "share=1, examples=[1353375, 5662782]",
        "expected": "min=-96498, max=323176, max_share=0.01",
        "rate": "0.1235",
    }

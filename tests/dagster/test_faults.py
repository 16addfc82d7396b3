"""Faults at the landing folder and in the middle of a retrain, on a real Dagster instance with
MLflow on SQLite: batches arriving together, the same batch copied twice, files cut short or
unreadable, and a run worker killed between writing the champion history and moving the alias."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from mlops_loop.core.data import frame_digest, read_table
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.steps.alerts import batch_metrics
from mlops_loop.core.steps.decision import labelled_since_retrain
from mlops_loop.core.steps.training import training_window
from mlops_loop.core.store import LoopStore, file_stamp
from tests.dagster.conftest import (
    QUIET,
    materializations,
    materialized,
    new_loop,
    run_job,
    tick,
)

# Each test bootstraps a loop and monitors several batches: tens of seconds each.
pytestmark = pytest.mark.slow


def copy_again(path: Path) -> None:
    """Deliver the same bytes again under the same name, as a retried upload does: a new
    modification time (and inode), identical content."""
    tmp = path.with_name(f".{path.name}.part")
    shutil.copyfile(path, tmp)
    os.utime(tmp, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 5_000_000_000))
    os.replace(tmp, path)


def step_errors(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {
        e.step_key: e.event_specific_data.error.to_string()
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE and e.step_key
    }


# -- two batches at once ---------------------------------------------------------------------------
def test_two_batches_landing_together_get_their_own_partitions_and_runs(tmp_path, demo_frames):
    loop = new_loop(tmp_path, demo_frames, ["batch_001", "batch_004"])
    try:
        assert run_job(loop.defs, loop.instance, "bootstrap_job").success
        first = tick(loop.defs, loop.instance, "landing_sensor")
        assert sorted(r.partition_key for r in first.run_requests) == ["batch_001", "batch_004"]
        assert len({r.run_key for r in first.run_requests}) == 2
        [add] = first.dynamic_partitions_requests
        loop.instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))

        # One after the other: in-process runs in threads of one process deadlock in Python's
        # logging (Dagster reconfigures it per run); the daemon gives each run a process.
        results = {
            k: run_job(loop.defs, loop.instance, "monitor_job", k) for k in add.partition_keys
        }
        assert {k: r.success for k, r in results.items()} == {
            "batch_001": True,
            "batch_004": True,
        }
        assert tick(loop.defs, loop.instance, "landing_sensor").run_requests == []

        store = LoopStore(loop.config.state_dir)
        client = MlflowClient(tracking_uri=loop.config.tracking_uri)
        experiment = client.get_experiment_by_name(loop.config.mlflow.experiment)
        for key, result in results.items():
            landed = read_table(loop.config.sources.landing / f"{key}.parquet")
            # Each partition holds its own file, and every verdict was made on it.
            assert store.batch_json(key, "ingest")["digest"] == frame_digest(landed)
            assert len(store.batch(key)) == len(landed)
            assert store.batch_json(key, "scored")["rows"] == len(landed)
            assert store.batch_json(key, "performance")["rows"] == len(landed)
            for asset in ("monitored_batch", "drift_report", "retrain_decision"):
                [record] = materializations(loop.instance, asset, key)
                assert record.run_id == result.run_id
            [logged] = client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.`dagster.run_id` = '{result.run_id}'",
            )
            assert logged.data.tags["mlops_loop.partition"] == key
            assert logged.data.metrics["batch_rows"] == len(landed)
        # The stable week does not drift, the marketing push does: no verdict was swapped.
        assert store.batch_json("batch_001", "drift")["dataset_drift"] is False
        assert store.batch_json("batch_004", "drift")["dataset_drift"] is True
    finally:
        loop.instance.dispose()


# -- the same batch twice --------------------------------------------------------------------------
def test_the_same_batch_copied_again_is_monitored_once(tmp_path, demo_frames):
    loop = new_loop(tmp_path, demo_frames, ["batch_001"])
    try:
        assert run_job(loop.defs, loop.instance, "bootstrap_job").success
        [request] = tick(loop.defs, loop.instance, "landing_sensor").run_requests
        loop.instance.add_dynamic_partitions("batches", ["batch_001"])
        first = run_job(loop.defs, loop.instance, "monitor_job", "batch_001")
        assert first.success
        store = LoopStore(loop.config.state_dir)
        stamp_before = store.batch_json("batch_001", "ingest")["stamp"]

        landed = loop.config.sources.landing / "batch_001.parquet"
        copy_again(landed)
        again = tick(loop.defs, loop.instance, "landing_sensor")
        # The stamp changed, the bytes did not: no new partition, no second monitoring run.
        assert file_stamp(landed) != stamp_before
        assert again.run_requests == [] and again.dynamic_partitions_requests == []
        assert loop.instance.get_dynamic_partitions("batches") == ["batch_001"]
        assert len(materializations(loop.instance, "monitored_batch", "batch_001")) == 1

        # Monitoring it again by hand (e.g. from the UI) replaces its verdicts, never adds to
        # them: the batch is stored once and counted once.
        metrics_before = batch_metrics(loop.config, "batch_001")
        labelled_before = labelled_since_retrain(loop.config, store, "batch_001")
        assert run_job(loop.defs, loop.instance, "monitor_job", "batch_001").success
        assert store.batch_keys() == ["batch_001"]
        assert labelled_since_retrain(loop.config, store, "batch_001") == labelled_before
        assert labelled_before == store.batch_json("batch_001", "performance")["labelled_rows"]
        after = batch_metrics(loop.config, "batch_001")
        for name in ("rows", "drift_share", "roc_auc", "label_coverage"):
            assert after[name] == metrics_before[name], name
        train, parts, holdout = training_window(loop.config, "batch_001")
        batch = store.batch("batch_001")
        assert parts == ["batch_001 (first 50%)"]
        assert len(train) + len(holdout) == batch[loop.config.columns.target].notna().sum()
        assert not train.duplicated().any()

        # New content under the same name is a real re-delivery, and is monitored again.
        _, batches = demo_frames
        batches["batch_002"].to_parquet(landed, index=False)
        [redo] = tick(loop.defs, loop.instance, "landing_sensor").run_requests
        assert redo.partition_key == "batch_001" and redo.run_key != request.run_key
    finally:
        loop.instance.dispose()


# -- a file cut short ------------------------------------------------------------------------------
def quality_gate(result: dg.ExecuteInProcessResult):
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "quality_gate"]
    return check


def test_a_csv_cut_mid_row_is_quarantined_with_its_reason(tmp_path, demo_frames):
    loop = new_loop(tmp_path, demo_frames, ["batch_001"])
    try:
        assert run_job(loop.defs, loop.instance, "bootstrap_job").success
        _, batches = demo_frames
        cut = loop.config.sources.landing / "batch_002.csv"
        batches["batch_002"].to_csv(cut, index=False)
        data = cut.read_bytes()
        cut.write_bytes(data[: len(data) // 2])  # a half-written upload: the last line partial
        first = tick(loop.defs, loop.instance, "landing_sensor").run_requests
        assert sorted(r.partition_key for r in first) == ["batch_001", "batch_002"]
        loop.instance.add_dynamic_partitions("batches", ["batch_001", "batch_002"])

        result = run_job(loop.defs, loop.instance, "monitor_job", "batch_002")
        # The gate failed: the batch is materialized with its verdict, nothing after, and the
        # run succeeds (a quarantine is an outcome).
        assert result.success
        assert set(materialized(result)) == {"monitored_batch"}
        check = quality_gate(result)
        assert check.passed is False and check.severity == dg.AssetCheckSeverity.ERROR
        assert "batch_002.csv: line " in check.description
        assert "cut short" in check.description
        assert check.metadata["incident_table"].value.records[0].data["kind"] == "truncated_file"
        store = LoopStore(loop.config.state_dir)
        assert store.quarantined_keys() == ["batch_002"]
        [incident] = store.batch_json("batch_002", "quality")["incidents"]
        assert incident["kind"] == "truncated_file" and incident["severity"] == "error"
        assert "batch_002.csv: line " in incident["message"]
        assert store.batch_json("batch_002", "ingest")["truncated"] == incident["message"]
        assert store.batch_json("batch_002", "drift") is None

        # Delivered whole, it is monitored again and passes.
        cut.write_bytes(data)
        os.utime(cut, ns=(cut.stat().st_atime_ns, cut.stat().st_mtime_ns + 10**9))
        [again] = tick(loop.defs, loop.instance, "landing_sensor").run_requests
        assert again.partition_key == "batch_002"
        fixed = run_job(loop.defs, loop.instance, "monitor_job", "batch_002")
        assert fixed.success and quality_gate(fixed).passed
        assert store.accepted_keys() == ["batch_002"]
        assert store.batch_json("batch_002", "ingest").get("truncated") is None
    finally:
        loop.instance.dispose()


def test_a_parquet_cut_short_is_quarantined_and_the_sensor_goes_on(tmp_path, demo_frames):
    loop = new_loop(tmp_path, demo_frames, ["batch_001", "batch_002"])
    try:
        assert run_job(loop.defs, loop.instance, "bootstrap_job").success
        corrupt = loop.config.sources.landing / "batch_002.parquet"
        data = corrupt.read_bytes()
        corrupt.write_bytes(data[: len(data) // 2])  # cut short, as by a broken upload
        first = tick(loop.defs, loop.instance, "landing_sensor")
        assert sorted(r.partition_key for r in first.run_requests) == ["batch_001", "batch_002"]
        loop.instance.add_dynamic_partitions("batches", ["batch_001", "batch_002"])

        broken = run_job(loop.defs, loop.instance, "monitor_job", "batch_002")
        # No step crashed on the file: the gate quarantined it and the run succeeded.
        assert broken.success
        assert step_errors(broken) == {}
        assert set(materialized(broken)) == {"monitored_batch"}
        check = quality_gate(broken)
        assert check.passed is False
        assert str(corrupt) in check.description and "ends before its footer" in check.description
        # Nothing downstream ran.
        assert set(materialized(broken)) == {"monitored_batch"}
        store = LoopStore(loop.config.state_dir)
        assert store.quarantined_keys() == ["batch_002"]
        [incident] = store.batch_json("batch_002", "quality")["incidents"]
        assert incident["kind"] == "truncated_file"

        # The other file of the same tick is monitored as usual.
        assert run_job(loop.defs, loop.instance, "monitor_job", "batch_001").success
        assert store.accepted_keys() == ["batch_001"]
        # The sensor goes on: a later file is picked up alone; the cut one is not asked for
        # again until it is delivered again.
        _, batches = demo_frames
        batches["batch_004"].to_parquet(loop.config.sources.landing / "batch_004.parquet")
        [later] = tick(loop.defs, loop.instance, "landing_sensor").run_requests
        assert later.partition_key == "batch_004"
        # Fixed upstream: the whole file arrives, gets a run, and passes.
        corrupt.write_bytes(data)
        os.utime(corrupt, ns=(corrupt.stat().st_atime_ns, corrupt.stat().st_mtime_ns + 10**9))
        fixed = tick(loop.defs, loop.instance, "landing_sensor").run_requests
        assert sorted(r.partition_key for r in fixed) == ["batch_002", "batch_004"]
        assert run_job(loop.defs, loop.instance, "monitor_job", "batch_002").success
        assert store.accepted_keys() == ["batch_001", "batch_002"]
    finally:
        loop.instance.dispose()


def test_an_unreadable_parquet_fails_its_run_naming_the_file(tmp_path, demo_frames):
    loop = new_loop(tmp_path, demo_frames, ["batch_001"])
    try:
        assert run_job(loop.defs, loop.instance, "bootstrap_job").success
        garbage = loop.config.sources.landing / "batch_002.parquet"
        garbage.write_bytes(b"not parquet at all, and never was")
        tick(loop.defs, loop.instance, "landing_sensor")
        loop.instance.add_dynamic_partitions("batches", ["batch_002"])
        broken = run_job(loop.defs, loop.instance, "monitor_job", "batch_002")
        assert not broken.success
        errors = step_errors(broken)
        assert set(errors) == {"monitored_batch"}
        assert str(garbage) in errors["monitored_batch"]
        assert "cannot be read as parquet" in errors["monitored_batch"]
        assert "DataError" in errors["monitored_batch"]
        assert materialized(broken) == {}
        store = LoopStore(loop.config.state_dir)
        assert "batch_002" not in store.batch_keys()
        assert "cannot be read as parquet" in store.batch_json("batch_002", "ingest")["error"]
    finally:
        loop.instance.dispose()


# -- a run worker killed mid-retrain ---------------------------------------------------------------
KILLED_RETRAIN = textwrap.dedent(
    """
    import json, os, signal, sys
    import dagster as dg
    from mlops_loop.core.registry import MlflowRegistry
    from mlops_loop.defs.factory import build_definitions

    real = MlflowRegistry._append_history

    def append_then_die(self, change):
        real(self, change)
        if change.action == "promotion":
            os.kill(os.getpid(), signal.SIGKILL)  # the history says so; the alias never moves

    MlflowRegistry._append_history = append_then_die
    config, home, key = sys.argv[1:4]
    instance = dg.DagsterInstance.local_temp(home, overrides={"telemetry": {"enabled": False}})
    build_definitions(config).resolve_job_def("retrain_job").execute_in_process(
        instance=instance, partition_key=key, run_config=json.loads(sys.argv[4])
    )
    """
)


def test_a_run_worker_killed_mid_promotion_leaves_the_champion_and_the_next_retrain_works(
    tmp_path, demo_frames
):
    loop = new_loop(tmp_path, demo_frames, ["batch_005"])
    try:
        assert run_job(loop.defs, loop.instance, "bootstrap_job").success
        loop.instance.add_dynamic_partitions("batches", ["batch_005"])
        assert run_job(loop.defs, loop.instance, "monitor_job", "batch_005").success
        registry = MlflowRegistry.from_config(loop.config)
        assert registry.champion() == 1

        worker = subprocess.run(
            [sys.executable, "-c", KILLED_RETRAIN]
            + [str(loop.config_path), str(loop.root / "dagster_home"), "batch_005"]
            + [json.dumps(QUIET)],
            cwd=loop.root,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert worker.returncode == -signal.SIGKILL, worker.stderr[-3000:]
        [killed] = loop.instance.get_runs(filters=dg.RunsFilter(job_name="retrain_job"))
        # Nobody is left to record its end: the run stays STARTED (in the deployed topology,
        # run monitoring marks a run whose worker died as failed).
        assert killed.status == dg.DagsterRunStatus.STARTED
        # The challenger was trained and the history written, but the alias never moved.
        assert registry.champion() == 1
        assert [e["action"] for e in registry.history()] == ["bootstrap", "promotion"]
        store = LoopStore(loop.config.state_dir)
        assert store.batch_json("batch_005", "promotion") is None

        # The next retrain first records the interrupted change as aborted, then promotes.
        retry = run_job(loop.defs, loop.instance, "retrain_job", "batch_005")
        assert retry.success, step_errors(retry)
        promotion = store.batch_json("batch_005", "promotion")
        assert promotion["promoted"] is True and promotion["champion_version_before"] == 1
        assert registry.champion() == promotion["challenger_version"] == 3
        history = registry.history()
        assert [e["action"] for e in history] == ["bootstrap", "promotion", "aborted", "promotion"]
        assert (history[2]["from_version"], history[2]["to_version"]) == (2, 1)
        for before, after in zip(history, history[1:], strict=False):
            assert after["from_version"] == before["to_version"], history
        assert registry.previous_champion() == 1
    finally:
        loop.instance.dispose()

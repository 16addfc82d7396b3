"""The README's promise: the scripted scenario runs end to end through Dagster and MLflow."""

import asyncio
import json
import subprocess
import sys
from collections import Counter

import dagster as dg
import pandas as pd
import pytest
from dagster import DagsterInstance

from mlops_loop.core.config import load_config
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.store import LoopStore
from mlops_loop.demo.runner import run_demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")

    def demo() -> object:
        return run_demo(root / ".demo", root / "dagster_home", echo=lambda _: None)

    async def in_a_running_loop():
        return demo()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        # No loop runs in this thread yet: run the demo inside one (a notebook's, a test
        # browser's), since the daemon code the demo drives calls asyncio.run.
        return root, asyncio.run(in_a_running_loop())
    return root, demo()  # a loop already runs here (the browser tests' Playwright)


def cli(root, *args):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops_loop.cli",
            *args,
            "--config",
            str(root / ".demo" / "loop.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_scenario_outcomes(demo):
    root, status = demo
    batches = {b.batch: b for b in status.status.batches}
    assert len(batches) == 7
    promoted = [b for b in batches.values() if b.promoted]
    rejected = [b for b in batches.values() if b.promoted is False]
    assert promoted and rejected, batches
    # The broken batch is caught, quarantined, and kept out of every training window.
    assert status.status.quarantined == ["batch_003"]
    assert batches["batch_003"].quality_success is False
    config = load_config(root / ".demo" / "loop.yaml")
    store = LoopStore(config.state_dir)
    for key in store.batch_keys():
        challenger = store.batch_json(key, "challenger")
        if challenger:
            assert not any("batch_003" in part for part in challenger["training_parts"])
    # The covariate drift is seen; the champion is the last promoted challenger, in MLflow.
    assert batches["batch_004"].dataset_drift is True
    registry = MlflowRegistry.from_config(config)
    assert registry.champion() == promoted[-1].challenger_version == status.status.champion
    actions = [e["action"] for e in registry.history()]
    assert actions == ["bootstrap"] + ["promotion"] * len(promoted)
    # Batches landed unlabelled; their labels, a week later, cover every accepted batch.
    for key in ("batch_001", "batch_005", "batch_007"):
        assert store.batch_json(key, "performance")["label_coverage"] == 1.0
    # Alerts: the drift one fires on the covariate batch; the AUC one fires on the concept
    # batch once its late labels show the drop (the batch was monitored before they landed).
    fired = {
        key: [e["rule"] for e in (store.batch_json(key, "alerts") or {})["events"]]
        for key in ("batch_004", "batch_005")
    }
    assert "drift_high" in fired["batch_004"] and "auc_drop" in fired["batch_005"], fired
    # The recovered champion performs on the last batch.
    assert batches["batch_007"].metric > 0.75


def test_the_demo_backtests_its_own_stream(demo):
    """The closing backtest replays the same seven batches and agrees with the live loop."""
    root, status = demo
    report = json.loads((root / ".demo" / "backtest.json").read_text())
    assert status.backtest == str(root / ".demo" / "backtest.json")
    rows = {b["batch"]: b for b in report["batches"]}
    assert list(rows) == [f"batch_00{i}" for i in range(1, 8)]
    assert report["summary"]["quarantined"] == ["batch_003"]
    assert rows["batch_004"]["dataset_drift"] is True
    # Stable batches never retrain; the concept drift does, once its labels are in.
    assert not any(rows[k]["retrained"] for k in ("batch_001", "batch_002"))
    assert rows["batch_005"]["retrained"] and rows["batch_005"]["metric"] < 0.7
    assert report["summary"]["promotions"] >= 1
    assert rows["batch_007"]["metric"] > 0.75
    # The replay kept to its own folder: the live loop's registry has only its own history.
    live = MlflowRegistry.from_config(load_config(root / ".demo" / "loop.yaml"))
    assert live.champion() == status.status.champion


def test_dagster_runs_are_in_the_instance(demo):
    root, status = demo
    instance = DagsterInstance.from_config(str(root / "dagster_home"))
    runs = instance.get_runs()
    assert len(runs) == status.dagster_runs >= 10
    jobs = {r.job_name for r in runs}
    # None failed: the quarantine of batch_003 is an outcome, not a failure.
    assert {r.job_name: r.status for r in runs if r.status != dg.DagsterRunStatus.SUCCESS} == {}
    quarantining = [r for r in runs if r.tags.get("dagster/partition") == "batch_003"]
    assert quarantining and all(r.job_name == "monitor_job" for r in quarantining)
    # Promoted and rejected partitions read apart: the promotion check passes or warns.
    key = dg.AssetCheckKey(dg.AssetKey("champion_model"), "promotion")
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=20)
    verdicts = {
        e.partition: (e.passed, e.severity)
        for e in (r.event.dagster_event.event_specific_data for r in history if r.event)
    }
    warn = dg.AssetCheckSeverity.WARN
    # The concept change's challenger is promoted; the weekly schedule's, on a stable week of
    # the new pattern, is rejected. The covariate drift of batch_004 trains nothing: its labels
    # show the champion holding.
    assert verdicts == {"batch_005": (True, warn), "batch_007": (False, warn)}
    assert {"bootstrap_job", "monitor_job", "retrain_job", "labels_job"} <= jobs
    # Labels land a week after their batch: every accepted batch was measured again.
    remeasured = [r for r in runs if r.tags.get("mlops_loop/trigger") == "late_labels"]
    assert sorted(r.tags["dagster/partition"] for r in remeasured) == [
        f"batch_00{i}" for i in (1, 2, 4, 5, 6, 7)
    ]
    assert instance.get_dynamic_partitions("batches") == [f"batch_00{i}" for i in range(1, 8)]


def test_every_demo_run_comes_from_the_code_location_and_its_tick(demo):
    """Runs are where a user looks: under the code location `make ui` loads, their job, the
    sensor or schedule tick that asked for them (or the backfill), and their partition."""
    root, _ = demo
    instance = DagsterInstance.from_config(str(root / "dagster_home"))
    runs = instance.get_runs()
    origins = {r.remote_job_origin.location_name if r.remote_job_origin else None for r in runs}
    assert origins == {"mlops_loop.definitions"}
    assert all(r.job_code_origin is not None for r in runs)
    by_sensor = Counter(r.tags.get("dagster/sensor_name") for r in runs)
    assert by_sensor["landing_sensor"] == 7 and by_sensor["label_sensor"] == 7, by_sensor
    assert by_sensor["retrain_sensor"] == 1, by_sensor  # batch_005's concept change
    assert Counter(r.tags.get("dagster/schedule_name") for r in runs)["retrain_schedule"] == 1
    backfilled = [r for r in runs if r.tags.get("dagster/backfill")]
    assert len(backfilled) == 6 and all(
        r.job_name == "__ASSET_JOB" or r.tags.get("dagster/partition") for r in backfilled
    )
    # The sensors' ticks name the runs they launched, as the daemon's do.
    # (A backfill's runs are the backfill's: its tick names the backfill, not them.)
    sensor_runs = {
        r.run_id
        for r in runs
        if r.tags.get("dagster/sensor_name") and not r.tags.get("dagster/backfill")
    }
    ticked: set[str] = set()
    for name in ("landing_sensor", "label_sensor", "retrain_sensor"):
        state = next(s for s in instance.all_instigator_state() if s.instigator_name == name)
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=100)
        assert ticks and all(t.status.value in ("SUCCESS", "SKIPPED") for t in ticks), name
        ticked |= {run_id for t in ticks for run_id in t.run_ids}
    assert sensor_runs - ticked == set()


def test_artifacts_live_under_the_state_folder(demo):
    root, _ = demo
    artifacts = root / ".demo" / "state" / "mlartifacts"
    names = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert {"report.html", "report.json", "MLmodel"} <= names


def test_cli_status_and_rollback_on_the_demo(demo):
    root, status = demo
    out = cli(root, "status")
    assert out.returncode == 0, out.stderr
    assert f"champion   : v{status.status.champion}" in out.stdout
    assert "batch_003: QUARANTINED (" in out.stdout
    assert "None" not in out.stdout, out.stdout

    assert "since 20" in out.stdout  # when the champion was promoted
    rows = root / ".demo" / "incoming" / "batch_007.parquet"
    before = cli(root, "predict", str(rows), "--output", str(root / "before.parquet"))
    assert before.returncode == 0, before.stderr
    assert f"churn-model@champion = v{status.status.champion}" in before.stderr

    bad = cli(root, "rollback", "--to", "999", "--reason", "typo")
    assert bad.returncode == 2
    assert "has no version 999" in bad.stderr

    ok = cli(root, "rollback", "--to", "previous", "--reason", "canary failed")
    assert ok.returncode == 0, ok.stderr
    config = load_config(root / ".demo" / "loop.yaml")
    registry = MlflowRegistry.from_config(config)
    last = registry.history()[-1]
    assert last["action"] == "rollback" and last["reason"] == "canary failed"
    assert last["from_version"] == status.status.champion
    assert registry.champion() == last["to_version"] != status.status.champion
    assert last["triggered_by"].startswith("cli")
    js = json.loads(cli(root, "status", "--format", "json").stdout)
    assert js["champion"] == last["to_version"]
    # Serving follows the alias: the next prediction uses the rolled-back version, no redeploy.
    after = cli(root, "predict", str(rows), "--output", str(root / "after.parquet"))
    assert f"churn-model@champion = v{last['to_version']}" in after.stderr
    a = pd.read_parquet(root / "before.parquet")["churn_score"]
    b = pd.read_parquet(root / "after.parquet")["churn_score"]
    assert not a.equals(b)


def test_second_demo_starts_over_and_succeeds(demo):
    root, _ = demo
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops_loop.cli",
            "demo",
            "--workdir",
            str(root / ".demo"),
            "--dagster-home",
            str(root / "dagster_home"),
            "--no-backtest",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "promotions        : 1" in out.stdout and "rejections        : 1" in out.stdout
    instance = DagsterInstance.from_config(str(root / "dagster_home"))
    assert instance.get_dynamic_partitions("batches") == [f"batch_00{i}" for i in range(1, 8)]


def test_a_daemon_started_after_the_demo_relaunches_nothing(demo):
    """`make ui` starts a daemon with fresh sensor cursors: it must not redo the demo's work."""
    from mlops_loop.defs.factory import build_definitions

    root, _ = demo
    instance = DagsterInstance.from_config(str(root / "dagster_home"))
    defs = build_definitions(root / ".demo" / "loop.yaml")
    for name in ("landing_sensor", "retrain_sensor", "label_sensor", "remeasure_sensor"):
        with dg.build_sensor_context(
            instance=instance, definitions=defs, resources=defs.resources
        ) as context:
            result = defs.resolve_sensor_def(name)(context)
        assert not result.run_requests, (name, result.run_requests)

"""A quality gate stuck on a changed upstream: the alert, relearn_suite_job, and the way out."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.steps.relearn import relearn_history
from mlops_loop.core.store import LoopStore
from tests.dagster.conftest import materialized, new_loop, run_job, tick

#: Four batches of the demo stream, after the upstream started sending income in milli-units.
SOURCES = {"batch_101": "batch_001", "batch_102": "batch_002", "batch_103": "batch_006"}
NEXT = "batch_104"


def relearn_config(reason: str, batches: list[str] | None = None) -> dict:
    config: dict = {"reason": reason}
    if batches is not None:
        config["batches"] = batches
    return {"ops": {"relearn_quality_suite": {"config": config}}}


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


@pytest.fixture
def changed_frames(demo_frames):
    reference, batches = demo_frames
    changed = {}
    for key, source in [*SOURCES.items(), (NEXT, "batch_007")]:
        frame = batches[source].copy()
        frame["income"] = frame["income"] * 1000
        changed[key] = frame
    return reference, changed


@pytest.mark.slow
def test_a_stuck_gate_alerts_and_relearn_suite_job_lets_the_new_shape_through(
    tmp_path, changed_frames, webhook
):
    url, received = webhook
    keys = [*SOURCES, NEXT]
    loop = new_loop(
        tmp_path,
        changed_frames,
        keys,
        **{"alerts.notifiers": [{"type": "webhook", "url": url, "timeout": 5}]},
    )
    assert run_job(loop.defs, loop.instance, "bootstrap_job").success
    loop.instance.add_dynamic_partitions("batches", keys)

    # Three batches broken the same way: each quarantined, the third raises the alert.
    gate = {}
    for key in SOURCES:
        result = run_job(loop.defs, loop.instance, "monitor_job", key)
        assert result.success  # a quarantine is an outcome: the check fails, not the run
        gate[key] = checks(result)
        assert not gate[key]["quality_gate"].passed
        assert "income" in gate[key]["quality_gate"].description
    assert gate["batch_101"]["quality_gate_stuck"].passed
    assert gate["batch_102"]["quality_gate_stuck"].passed
    stuck = gate["batch_103"]["quality_gate_stuck"]
    assert not stuck.passed and stuck.severity == dg.AssetCheckSeverity.ERROR
    assert "quality gate stuck on `income`: the upstream or the suite changed" in (
        stuck.description or ""
    )
    assert len(received) == 1 and "quality gate stuck on `income`" in received[0]["text"]

    # No reason: refused by the config schema; an empty one: the run fails saying so.
    with pytest.raises(dg.DagsterInvalidConfigError, match="reason"):
        loop.defs.resolve_job_def("relearn_suite_job").execute_in_process(
            instance=loop.instance, run_config={"ops": {"relearn_quality_suite": {"config": {}}}}
        )
    refused = run_job(loop.defs, loop.instance, "relearn_suite_job", run_config=relearn_config(" "))
    assert not refused.success
    error = refused.failure_data_for_node("relearn_quality_suite").error
    assert "a relearn of the quality suite needs a reason (who asked and why)" in str(error)
    assert relearn_history(loop.config) == []

    reason = "income arrives in milli-units since the upstream's release 4.2"
    relearn = run_job(
        loop.defs,
        loop.instance,
        "relearn_suite_job",
        run_config=relearn_config(reason, ["batch_103"]),
    )
    assert relearn.success
    output = relearn.output_for_node("relearn_quality_suite")
    assert output == 2  # the suite version now in use

    # The next batch of the new shape passes, and the spell is over.
    after = run_job(loop.defs, loop.instance, "monitor_job", NEXT)
    assert after.success
    assert checks(after)["quality_gate"].passed and checks(after)["quality_gate_stuck"].passed
    assert "drift_report" in materialized(after)
    # (the champion, fed the new unit, also trips the demo's auc_drop rule on this batch)
    gate_texts = [m["text"] for m in received if "quality_gate_stuck" in m["text"]]
    assert len(gate_texts) == 2 and "no longer stuck on `income`" in gate_texts[1]

    # Who, when and why: in the champion history, the loop's suite history and MLflow.
    registry = MlflowRegistry.from_config(loop.config)
    last = registry.history()[-1]
    assert last["action"] == "relearn" and last["reason"] == reason
    assert last["details"]["suite_from"] == 1 and last["details"]["suite_to"] == 2
    assert "relearn_suite_job" in last["triggered_by"]
    assert registry.previous_champion() is None  # a relearn is no move of the champion
    [record] = relearn_history(loop.config)
    assert record.batches == ["batch_103"] and record.quarantined == list(SOURCES)
    store = LoopStore(loop.config.state_dir)
    suites = store.snapshot_dir / "suites"
    assert json.loads((suites / "v0002.json").read_text()) == store.read_json(
        store.snapshot_dir / "suite.json"
    )
    assert json.loads((suites / "v0001.json").read_text()) != json.loads(
        (suites / "v0002.json").read_text()
    )
    run = registry.client.get_run(record.run_id)
    assert run.data.params["relearn.reason"] == reason
    assert run.data.tags["mlops_loop.relearn.suite_version"] == "2"
    artifacts = {a.path for a in registry.client.list_artifacts(record.run_id, "quality")}
    assert "quality/suite.json" in artifacts

    # The way back for the quarantined batches: revalidate_sensor re-runs monitor_job on each.
    requests = tick(loop.defs, loop.instance, "revalidate_sensor").run_requests
    assert [r.partition_key for r in requests] == list(SOURCES)
    for request in requests:
        again = run_job(
            loop.defs, loop.instance, "monitor_job", request.partition_key, tags=request.tags
        )
        assert again.success and checks(again)["quality_gate"].passed
    assert store.quarantined_keys() == []
    assert tick(loop.defs, loop.instance, "revalidate_sensor").run_requests == []

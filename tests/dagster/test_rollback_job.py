"""rollback_job launched the way the Launchpad launches it: op config with a target and a reason."""

import logging

import dagster as dg
import pytest

from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.defs.jobs import REASON_PROMPT
from tests.dagster.conftest import materialized, new_loop, run_job


def rollback_config(to: str, reason: str) -> dict:
    return {"ops": {"rollback_champion": {"config": {"to": to, "reason": reason}}}}


@pytest.fixture(scope="module")
def promoted_loop(tmp_path_factory, demo_frames):
    """A loop whose champion was replaced by a challenger: the concept drift of batch_005 makes
    the champion fail the metric floor, and the challenger trained on it wins."""
    loop = new_loop(tmp_path_factory.mktemp("rollback"), demo_frames, ["batch_005"])
    assert run_job(loop.defs, loop.instance, "bootstrap_job").success
    loop.instance.add_dynamic_partitions("batches", ["batch_005"])
    loop.runs["monitor"] = run_job(loop.defs, loop.instance, "monitor_job", "batch_005")
    loop.runs["retrain"] = run_job(loop.defs, loop.instance, "retrain_job", "batch_005")
    yield loop
    loop.instance.dispose()


def test_the_concept_drift_batch_promotes_its_challenger(promoted_loop):
    loop = promoted_loop
    decision = materialized(loop.runs["monitor"])["retrain_decision"].metadata
    assert decision["retrain"].value is True and "performance" in decision["triggers"].value
    assert loop.runs["retrain"].success
    champion = materialized(loop.runs["retrain"])["champion_model"].metadata
    assert champion["promoted"].value is True and champion["outcome"].value == "promoted"
    [check] = loop.runs["retrain"].get_asset_check_evaluations()
    assert (check.check_name, check.partition, check.passed) == ("promotion", "batch_005", True)
    registry = MlflowRegistry.from_config(loop.config)
    assert registry.champion() == champion["challenger_version"].value == 2
    assert [e["action"] for e in registry.history()] == ["bootstrap", "promotion"]


def test_rollback_to_an_unknown_version_fails_and_changes_nothing(promoted_loop):
    loop = promoted_loop
    registry = MlflowRegistry.from_config(loop.config)
    champion, history = registry.champion(), registry.history()
    result = run_job(
        loop.defs, loop.instance, "rollback_job", run_config=rollback_config("999", "test")
    )
    assert not result.success
    error = result.failure_data_for_node("rollback_champion").error
    assert error.cause.cls_name == "RegistryError"
    assert "'churn-model' has no version 999; known versions: [1, 2]" in error.cause.message
    assert registry.champion() == champion
    assert registry.history() == history
    observations = loop.instance.fetch_observations(dg.AssetKey("champion_model"), limit=10).records
    assert not [o for o in observations if o.run_id == result.run_id]


def test_the_launchpad_opens_with_a_valid_default_that_asks_for_a_reason(promoted_loop):
    loop = promoted_loop
    job = loop.defs.resolve_job_def("rollback_job")
    # What the Launchpad shows: a config that validates, with the reason's prompt in it.
    defaults = job.run_config_schema.config_type.fields["ops"].default_value
    assert defaults == {
        "rollback_champion": {"config": {"to": "previous", "reason": REASON_PROMPT, "force": False}}
    }
    registry = MlflowRegistry.from_config(loop.config)
    champion, history = registry.champion(), registry.history()
    # Launched unchanged: refused, saying what to do; nothing moves.
    result = job.execute_in_process(instance=loop.instance, raise_on_error=False)
    assert not result.success
    error = result.failure_data_for_node("rollback_champion").error
    assert "a rollback needs a reason" in error.to_string()
    assert "replace the Launchpad's prompt" in error.to_string()
    assert registry.champion() == champion and registry.history() == history
    # A blank reason is refused the same way.
    blank = run_job(loop.defs, loop.instance, "rollback_job", run_config=rollback_config("1", " "))
    assert not blank.success and registry.champion() == champion


def test_rollback_to_previous_moves_the_champion_back_and_says_how_it_compares(promoted_loop):
    loop = promoted_loop
    registry = MlflowRegistry.from_config(loop.config)
    assert registry.champion() == 2
    # v1 measured clearly worse on its hold-out than v2: the rollback warns, and goes on.
    registry.tag_version(1, {"mlops_loop.metric.roc_auc": 0.55})
    v2 = float(registry.version(2).tags["mlops_loop.metric.roc_auc"])
    assert v2 > 0.56
    result = loop.defs.resolve_job_def("rollback_job").execute_in_process(
        instance=loop.instance, run_config=rollback_config("previous", "test")
    )
    assert result.success
    assert result.output_for_node("rollback_champion") == 1
    assert registry.champion() == 1
    last = registry.history()[-1]
    assert (last["action"], last["from_version"], last["to_version"]) == ("rollback", 2, 1)
    assert last["reason"] == "test"
    assert result.run_id[:8] in last["triggered_by"]
    assert "rollback_job" in last["triggered_by"]
    # The run's log says what 'previous' resolved to, how it compares, and warns.
    logs = [e for e in loop.instance.all_logs(result.run_id) if e.user_message]
    resolved = (
        f"'previous' resolves to v1; hold-out roc_auc: v1 0.550 against the champion v2 {v2:.3f}"
    )
    assert any(resolved in e.user_message for e in logs)
    [warning] = [e for e in logs if e.level == logging.WARNING]
    assert "v1 is measurably worse than the champion v2 on its hold-out" in warning.user_message
    # The version now serving carries who put it back and why.
    tags = registry.version(1).tags
    assert tags["mlops_loop.champion_action"] == "rollback"
    assert tags["mlops_loop.champion_reason"] == "test"
    # champion_model shows the champion that serves now: its latest batch's partition is
    # materialized again by the rollback, marked rolled back.
    latest = loop.instance.get_latest_materialization_event(dg.AssetKey("champion_model"))
    assert latest.run_id == result.run_id
    mat = latest.asset_materialization
    assert mat.partition == "batch_005"
    meta = mat.metadata
    assert meta["outcome"].value == "rolled_back"
    assert meta["champion_version"].value == 1
    assert meta["to_version"].value == 1 and meta["from_version"].value == 2
    assert meta["reason"].value == "test"
    assert "measurably worse" in meta["warning"].value
    assert meta["roc_auc"].value == 0.55
    # ... and its `promotion` check warns: a rolled-back partition reads apart from a promoted one.
    [check] = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    assert (check.check_name, check.partition, check.passed) == ("promotion", "batch_005", False)
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["outcome"].value == "rolled_back"
    rows = {r.data["metric"]: r.data for r in meta["comparison"].value.records}
    assert rows["roc_auc"]["v1 (target)"] == "0.55"
    assert list(rows)[0] == "roc_auc"  # the primary metric first
    # MLflow's model page names the new champion and the history.
    description = registry.client.get_registered_model(registry.model_name).description
    assert description.startswith("**Champion: v1** since ")
    assert "| rollback v2 → v1 |" in description
    # Rolling back to the same version again is refused: it already is the champion.
    again = run_job(loop.defs, loop.instance, "rollback_job", run_config=rollback_config("1", "x"))
    assert not again.success
    assert registry.champion() == 1


def test_an_alias_moved_in_the_mlflow_ui_is_served_and_recorded_on_the_next_run(
    tmp_path, demo_frames
):
    """What an edit of the alias in the MLflow UI does: the next monitoring run scores with the
    version it points at, and the history records the change."""
    loop = new_loop(tmp_path, demo_frames, ["batch_005", "batch_006"])
    try:
        assert run_job(loop.defs, loop.instance, "bootstrap_job").success
        loop.instance.add_dynamic_partitions("batches", ["batch_005", "batch_006"])
        assert run_job(loop.defs, loop.instance, "monitor_job", "batch_005").success
        assert run_job(loop.defs, loop.instance, "retrain_job", "batch_005").success
        registry = MlflowRegistry.from_config(loop.config)
        assert registry.champion() == 2
        registry.client.set_registered_model_alias(registry.model_name, "champion", "1")

        result = run_job(loop.defs, loop.instance, "monitor_job", "batch_006")
        assert result.success
        scored = materialized(result)["scored_batch"].metadata
        assert scored["champion_version"].value == 1
        last = registry.history()[-1]
        assert (last["action"], last["from_version"], last["to_version"]) == ("external", 2, 1)
        assert result.run_id[:8] in last["triggered_by"]
    finally:
        loop.instance.dispose()


def test_the_promotion_is_logged_with_its_evidence(promoted_loop):
    from mlflow import MlflowClient

    loop = promoted_loop
    client = MlflowClient(
        tracking_uri=loop.config.tracking_uri, registry_uri=loop.config.tracking_uri
    )
    exp = client.get_experiment_by_name(loop.config.mlflow.experiment)
    run_id = loop.runs["retrain"].run_id
    [run] = client.search_runs([exp.experiment_id], f"tags.`dagster.run_id` = '{run_id}'")
    files = {
        a.path for d in ("promotion", "registry") for a in client.list_artifacts(run.info.run_id, d)
    }
    assert {
        "promotion/decision.json",
        "promotion/comparison.html",
        "promotion/comparison.svg",
        "registry/history.json",
        "registry/history.md",
    } <= files
    svg = client.download_artifacts(run.info.run_id, "promotion/comparison.svg")
    assert open(svg).read().startswith("<svg") and "challenger v2" in open(svg).read()
    assert run.data.metrics["challenger_roc_auc"] > run.data.metrics["champion_roc_auc"]
    assert run.data.params["promotion.metric"] == "roc_auc"


def test_rollback_to_a_rejected_version_needs_force(promoted_loop):
    """A version that never served (a rejected challenger) is refused, naming why it was
    rejected; `force: true` in the Launchpad config makes it champion anyway."""
    from mlops_loop.core.steps.models import log_and_register
    from mlops_loop.core.store import LoopStore
    from mlops_loop.core.tracking import tracked_run

    loop = promoted_loop
    registry = MlflowRegistry.from_config(loop.config)
    with tracked_run(loop.config, run_name="a challenger"):
        example = LoopStore(loop.config.state_dir).reference().head(20)
        version = log_and_register(loop.config, registry.load(2), example)
    registry.tag_version(
        version,
        {
            "mlops_loop.metric.roc_auc": 0.61,
            "mlops_loop.decision": "rejected",
            "mlops_loop.rejected_reason": "roc_auc 0.610 below the champion's 0.700",
        },
    )
    champion, history = registry.champion(), registry.history()
    config = rollback_config(str(version), "try it")
    result = run_job(loop.defs, loop.instance, "rollback_job", run_config=config)
    assert not result.success
    error = result.failure_data_for_node("rollback_champion").error
    assert error.cause.cls_name == "RegistryError"
    assert (
        f"version {version} of 'churn-model' was never champion (its promotion was rejected: "
        "roc_auc 0.610 below the champion's 0.700)" in error.cause.message
    )
    assert registry.champion() == champion and registry.history() == history
    config["ops"]["rollback_champion"]["config"]["force"] = True
    assert run_job(loop.defs, loop.instance, "rollback_job", run_config=config).success
    assert registry.champion() == version
    assert "(forced: " in registry.history()[-1]["reason"]

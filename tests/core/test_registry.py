"""The registry on a real MLflow SQLite backend in a temp dir."""

import pytest
from mlflow import MlflowClient

from mlops_loop.core.errors import ConcurrentPromotionError, RegistryError
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.steps.models import log_and_register
from mlops_loop.core.tracking import tracked_run
from mlops_loop.core.training import train_model


@pytest.fixture
def registry_with_versions(loop_config, demo_frames):
    reference, _ = demo_frames
    cfg = loop_config.model_copy(
        update={"model": loop_config.model.model_copy(update={"params": {"max_iter": 10}})}
    )
    model = train_model(reference.head(500), cfg.model, cfg.columns)
    for i in range(3):
        with tracked_run(cfg, run_name=f"v{i}"):
            log_and_register(cfg, model, reference.head(50))
    registry = MlflowRegistry.from_config(cfg)
    for v in registry.versions():
        registry.tag_version(v, {"mlops_loop.metric.roc_auc": 0.8})  # validated by the loop
    return registry


def test_promote_rollback_and_history(registry_with_versions):
    reg = registry_with_versions
    assert reg.versions() == [1, 2, 3]
    assert reg.champion() is None
    reg.promote(1, expected_champion=None, reason="first", triggered_by="test", action="bootstrap")
    reg.promote(
        2, expected_champion=1, reason="better", triggered_by="test", metrics={"roc_auc": 0.9}
    )
    assert reg.champion() == 2
    assert reg.previous_champion() == 1

    change = reg.rollback("previous", reason="v2 misbehaves", triggered_by="oncall")
    assert (change.from_version, change.to_version) == (2, 1)
    assert reg.champion() == 1
    history = reg.history()
    assert [(e["action"], e["from_version"], e["to_version"]) for e in history] == [
        ("bootstrap", None, 1),
        ("promotion", 1, 2),
        ("rollback", 2, 1),
    ]
    assert history[-1]["reason"] == "v2 misbehaves" and history[-1]["triggered_by"] == "oncall"
    assert history[-1]["metrics"] == {"roc_auc": "0.8"}  # v1's validation metrics
    assert history[1]["metrics"] == {"roc_auc": 0.9}
    tags = reg.version(1).tags
    assert tags["mlops_loop.champion_action"] == "rollback"
    assert tags["mlops_loop.champion_reason"] == "v2 misbehaves"


def test_the_description_names_the_latest_challenger_even_a_rejected_one(
    registry_with_versions,
):
    reg = registry_with_versions
    reg.promote(1, expected_champion=None, reason="first", triggered_by="test", action="bootstrap")
    reg.set_challenger(2)
    reg.promote(2, expected_champion=1, reason="better", triggered_by="test")
    reg.set_challenger(3)  # trained, then rejected: the champion stays v2
    description = reg.client.get_registered_model(reg.model_name).description
    assert description.startswith("**Champion: v2** since ")
    assert "Latest challenger: v3" in description
    assert "Latest challenger: v2" not in description


def test_promotion_is_compare_and_set(registry_with_versions):
    reg = registry_with_versions
    reg.promote(1, expected_champion=None, reason="first", triggered_by="a")
    reg.promote(2, expected_champion=1, reason="run A", triggered_by="a")
    with pytest.raises(
        ConcurrentPromotionError,
        match="champion .* is version 2, but this promotion was decided against version 1",
    ):
        reg.promote(3, expected_champion=1, reason="run B, stale", triggered_by="b")
    assert reg.champion() == 2
    assert len(reg.history()) == 2


def test_rollback_refuses_bad_targets(registry_with_versions):
    reg = registry_with_versions
    reg.promote(1, expected_champion=None, reason="first", triggered_by="t")
    with pytest.raises(RegistryError, match=r"has no version 99; known versions: \[1, 2, 3\]"):
        reg.rollback(99, reason="typo", triggered_by="t")
    with pytest.raises(RegistryError, match="no previous champion"):
        reg.rollback("previous", reason="nothing before", triggered_by="t")
    with pytest.raises(RegistryError, match="already the champion"):
        reg.rollback(1, reason="same", triggered_by="t")
    with pytest.raises(RegistryError, match="needs a reason"):
        reg.rollback(2, reason="  ", triggered_by="t")
    with pytest.raises(RegistryError, match="neither a version number nor 'previous'"):
        reg.rollback("latest", reason="x", triggered_by="t")
    assert reg.champion() == 1


def test_alias_moved_outside_the_loop_is_recorded(registry_with_versions):
    reg = registry_with_versions
    reg.promote(1, expected_champion=None, reason="first", triggered_by="t")
    MlflowClient(
        tracking_uri=reg.tracking_uri, registry_uri=reg.tracking_uri
    ).set_registered_model_alias(
        reg.model_name, "champion", "3"
    )  # what an edit in the MLflow UI does
    change = reg.reconcile("next run")
    assert (change.action, change.from_version, change.to_version) == ("external", 1, 3)
    assert reg.reconcile("next run") is None
    assert reg.previous_champion() == 1


def test_rollback_refuses_a_never_validated_version(registry_with_versions):
    reg = registry_with_versions
    reg.promote(1, expected_champion=None, reason="first", triggered_by="t")
    reg.client.delete_model_version_tag(reg.model_name, "3", "mlops_loop.metric.roc_auc")
    with pytest.raises(RegistryError, match="version 3 .* was never validated by the loop"):
        reg.rollback(3, reason="try an unvalidated one", triggered_by="t")
    reg.client.delete_model_version(reg.model_name, "2")
    with pytest.raises(RegistryError, match=r"has no version 2; known versions: \[1, 3\]"):
        reg.rollback(2, reason="deleted", triggered_by="t")
    assert reg.champion() == 1
    assert "| rollback |" not in reg.history_table()
    assert "| promotion v1 | t (" in reg.history_table()


def test_rollback_to_a_version_never_champion_is_refused_naming_its_rejection(
    registry_with_versions, loop_config
):
    """A rejected challenger never served: rolling back to it is refused unless forced, and
    the refusal says why its promotion was rejected."""
    from mlops_loop.core.steps.rollback import rollback

    reg = registry_with_versions
    reg.promote(1, expected_champion=None, reason="first", triggered_by="t", action="bootstrap")
    reg.promote(2, expected_champion=1, reason="better", triggered_by="t")
    reg.tag_version(
        3,
        {
            "mlops_loop.decision": "rejected",
            "mlops_loop.rejected_reason": "roc_auc 0.71 is below the champion's 0.80",
        },
    )
    with pytest.raises(
        RegistryError,
        match=r"version 3 of .* was never champion \(its promotion was rejected: roc_auc 0.71 "
        r"is below the champion's 0.80\).*--force",
    ):
        reg.rollback(3, reason="try the challenger", triggered_by="t")
    with pytest.raises(RegistryError, match="never champion"):
        rollback(loop_config, 3, "the core step refuses too")
    assert reg.champion() == 2 and len(reg.history()) == 2
    # Versions that served (the bootstrap champion) are rolled back to without force.
    assert reg.rollback(1, reason="back to v1", triggered_by="t").to_version == 1
    change = rollback(loop_config, 3, "oncall insists", force=True)
    assert (change.from_version, change.to_version) == (1, 3)
    assert reg.champion() == 3
    assert reg.history()[-1]["reason"].startswith("oncall insists (forced: v3 was never champion")
    # Once it served, it is an ordinary rollback target.
    reg.rollback(1, reason="again", triggered_by="t")
    assert reg.rollback(3, reason="v3 served before", triggered_by="t").to_version == 3


def test_the_retrain_baseline_is_the_best_champion_so_far(registry_with_versions, loop_config):
    """A weak model promoted out of a collapse must not lower the bar the loop retrains to."""
    from mlops_loop.core.steps.decision import decide_batch_retrain
    from mlops_loop.core.steps.models import best_champion_metric
    from mlops_loop.core.store import LoopStore

    reg = registry_with_versions
    reg.tag_version(1, {"mlops_loop.metric.roc_auc": 0.85})
    reg.tag_version(2, {"mlops_loop.metric.roc_auc": 0.55})
    reg.promote(1, expected_champion=None, reason="first", triggered_by="t", action="bootstrap")
    reg.promote(2, expected_champion=1, reason="beat a collapse", triggered_by="t")
    assert best_champion_metric(reg, 2, "roc_auc") == 0.85
    assert best_champion_metric(reg, 1, "roc_auc") == 0.85

    loop_config = loop_config.model_copy(  # no floor: the drop alone decides
        update={"retrain": loop_config.retrain.model_copy(update={"metric_floor": None})}
    )
    store = LoopStore(loop_config.state_dir)
    store.write_batch_json("b", "quality", {"success": True})
    store.write_batch_json("b", "drift", {"dataset_drift": False})
    perf = {"metric": 0.56, "labelled_rows": 1000, "baseline_metric": 0.55}
    store.write_batch_json("b", "performance", {**perf, "best_baseline_metric": 0.85})
    best = decide_batch_retrain(loop_config, "b", record=False)
    assert best.retrain and "baseline of 0.8500" in best.reasons[0]
    own = loop_config.model_copy(
        update={"retrain": loop_config.retrain.model_copy(update={"baseline": "champion"})}
    )
    assert not decide_batch_retrain(own, "b", record=False).retrain

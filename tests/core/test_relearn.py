"""Relearning the quality suite: versions kept, switched last, audited like a rollback."""

import json

import pytest

from mlops_loop.core.errors import RegistryError, RelearnError
from mlops_loop.core.registry import AliasChange, MlflowRegistry
from mlops_loop.core.steps.relearn import relearn_history, relearn_suite, suite_version
from mlops_loop.core.steps.run import StepContext
from mlops_loop.core.store import LoopStore
from tests.core.test_registry import registry_with_versions  # noqa: F401 (a fixture)


def test_a_relearn_in_the_history_is_no_move_of_the_champion(registry_with_versions):  # noqa: F811
    reg = registry_with_versions
    reg.promote(1, expected_champion=None, reason="first", triggered_by="t", action="bootstrap")
    reg.promote(2, expected_champion=1, reason="better", triggered_by="t")
    reg.record(AliasChange("relearn", 2, 2, "income in cents", "oncall", details={"suite_to": 2}))
    assert reg.history()[-1]["details"] == {"suite_to": 2}
    assert reg.previous_champion() == 1
    assert reg.rollback("previous", reason="v2 misbehaves", triggered_by="t").to_version == 1
    with pytest.raises(RegistryError, match="history entry 'promotion' moves the alias"):
        reg.record(AliasChange("promotion", 1, 3, "sneaky", "t"))


def test_an_interrupted_change_is_recorded_before_the_relearn(registry_with_versions):  # noqa: F811
    reg = registry_with_versions
    reg.promote(1, expected_champion=None, reason="first", triggered_by="t", action="bootstrap")
    # A promotion to v2 recorded, then the process died before the alias moved.
    reg._append_history(AliasChange("promotion", 1, 2, "better", "t"))
    reg.record(AliasChange("relearn", 1, 1, "new unit", "t"))
    assert [e["action"] for e in reg.history()] == ["bootstrap", "promotion", "aborted", "relearn"]


@pytest.fixture
def snapshotted(loop_config):
    from mlops_loop.core.steps.reference import take_reference_snapshot

    take_reference_snapshot(loop_config)
    return loop_config


def test_each_relearn_keeps_the_suites_before_it(snapshotted):
    config = snapshotted
    store = LoopStore(config.state_dir)
    first = store.read_json(store.snapshot_dir / "suite.json")
    assert suite_version(config) == 1
    one = relearn_suite(config, "policy changed", ctx=StepContext(triggered_by="ops"))
    two = relearn_suite(config, "  and again  ")
    assert (one.previous_version, one.version, two.version) == (1, 2, 3)
    assert two.reason == "and again" and one.triggered_by == "ops"
    folder = store.snapshot_dir / "suites"
    assert sorted(p.name for p in folder.glob("v*.json")) == [
        "v0001.json",
        "v0002.json",
        "v0003.json",
    ]
    assert json.loads((folder / "v0001.json").read_text()) == first
    assert json.loads((folder / "v0003.json").read_text()) == store.read_json(
        store.snapshot_dir / "suite.json"
    )
    assert [r.version for r in relearn_history(config)] == [2, 3]
    assert not list(folder.glob(".*.json*"))  # no temporary file left behind


def test_a_failure_before_the_switch_leaves_the_old_suite_in_use(snapshotted, monkeypatch):
    config = snapshotted
    store = LoopStore(config.state_dir)
    path = store.snapshot_dir / "suite.json"
    before = path.read_bytes()

    def unreachable(self, change):
        raise RegistryError("tracking server unreachable")

    monkeypatch.setattr(MlflowRegistry, "record", unreachable)
    monkeypatch.setattr(MlflowRegistry, "champion", lambda self: 1)
    with pytest.raises(RegistryError, match="unreachable"):
        relearn_suite(config, "new unit")
    assert path.read_bytes() == before
    assert relearn_history(config) == [] and suite_version(config) == 1


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_a_relearn_needs_a_reason(snapshotted, reason):
    with pytest.raises(RelearnError, match="needs a reason \\(who asked and why\\), got"):
        relearn_suite(snapshotted, reason)  # type: ignore[arg-type]
    assert relearn_history(snapshotted) == []


def test_a_batch_the_loop_never_saw_is_named(snapshotted):
    with pytest.raises(RelearnError, match="batch 'batch_x' is not in the loop's store.*none yet"):
        relearn_suite(snapshotted, "new unit", ["batch_x"])


def test_without_a_snapshot_nothing_is_relearnt(loop_config):
    from mlops_loop.core.errors import DataError

    with pytest.raises(DataError, match="reference snapshot is not there yet"):
        relearn_suite(loop_config, "new unit")

"""`mlops-loop quality relearn|revalidate` as a user runs them: a real subprocess."""

import json

import pytest

from mlops_loop.core.config import load_config
from mlops_loop.core.store import LoopStore
from tests.conftest import write_loop
from tests.test_cli import run

KEYS = {"batch_101": "batch_001", "batch_102": "batch_002", "batch_103": "batch_006"}


def test_quality_is_listed_in_the_help():
    out = run("quality", "--help")
    assert out.returncode == 0
    assert "relearn" in out.stdout and "revalidate" in out.stdout


def test_an_empty_reason_is_refused_with_a_clear_message(tmp_path, demo_frames):
    reference, _ = demo_frames
    config = write_loop(tmp_path, reference)
    for reason in ("", "   "):
        out = run("quality", "relearn", "--config", str(config), "--reason", reason)
        assert out.returncode == 2
        assert (
            "mlops-loop quality: error: a relearn of the quality suite needs a reason "
            "(who asked and why)" in out.stderr
        )
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "state" / "snapshot" / "suites").exists()
    missing = run("quality", "relearn", "--config", str(config))
    assert missing.returncode == 2 and "--reason" in missing.stderr


@pytest.fixture
def stuck_loop(tmp_path, demo_frames):
    """A loop whose upstream now sends income in milli-units: three batches quarantined."""
    from mlops_loop.core.steps.ingest import ingest_batch
    from mlops_loop.core.steps.quality import check_quality
    from mlops_loop.core.steps.reference import ensure_champion, take_reference_snapshot

    reference, batches = demo_frames
    frames = {}
    for key, source in KEYS.items():
        frames[key] = batches[source].copy()
        frames[key]["income"] = frames[key]["income"] * 1000
    path = write_loop(tmp_path, reference, frames)
    config = load_config(path)
    take_reference_snapshot(config)
    ensure_champion(config)
    for key in KEYS:
        ingest_batch(config, key, config.sources.landing / f"{key}.parquet")
        assert not check_quality(config, key).success
    return path, config


@pytest.mark.slow
def test_relearn_revalidate_and_status_from_the_command_line(stuck_loop):
    path, config = stuck_loop
    store = LoopStore(config.state_dir)
    from mlops_loop.core.steps.alerts import check_gate_stuck

    check_gate_stuck(config, "batch_103")
    stuck = run("status", "--config", str(path))
    assert "batch_103: QUARANTINED (out_of_range:income)" in stuck.stdout
    assert "alerts quality_gate_stuck" in stuck.stdout
    suite_before = store.read_json(store.snapshot_dir / "suite.json")

    unknown = run(
        "quality", "relearn", "--config", str(path), "--reason", "x", "--batch", "batch_999"
    )
    assert unknown.returncode == 2
    assert "batch 'batch_999' is not in the loop's store" in unknown.stderr
    assert "batch_101, batch_102, batch_103" in unknown.stderr
    assert store.read_json(store.snapshot_dir / "suite.json") == suite_before

    reason = "income arrives in milli-units since the upstream's release 4.2"
    out = run(
        "quality", "relearn", "--config", str(path), "--reason", reason, "--batch", "batch_103"
    )
    assert out.returncode == 0, out.stderr
    assert "quality suite relearnt: v1 -> v2" in out.stdout
    assert "from the reference and batch_103" in out.stdout and reason in out.stdout
    assert "quarantined by the old suite: batch_101, batch_102, batch_103" in out.stdout
    archived = store.snapshot_dir / "suites"
    assert json.loads((archived / "v0001.json").read_text()) == suite_before
    assert store.read_json(store.snapshot_dir / "suite.json") != suite_before

    again = run("quality", "revalidate", "--config", str(path))
    assert again.returncode == 0, again.stderr
    for key in KEYS:
        assert f"{key}: pass (quality suite v2)" in again.stdout
    assert store.quarantined_keys() == []

    status = run("status", "--config", str(path))
    assert status.returncode == 0, status.stderr
    assert "quality    : suite v2, relearnt" in status.stdout and reason in status.stdout
    assert "relearn    quality suite v1 -> v2  by cli (" in status.stdout
    as_json = json.loads(run("status", "--config", str(path), "--format", "json").stdout)
    assert as_json["suite_version"] == 2
    assert as_json["suite_relearns"][0]["batches"] == ["batch_103"]
    assert as_json["history"][-1]["action"] == "relearn"

"""`mlops-loop demo --keep` reports what its own run did: verdicts an earlier run left in the
state folder are not shown as this run's."""

from mlops_loop.core.config import load_config
from mlops_loop.core.store import LoopStore
from mlops_loop.demo.data import SCENARIO
from mlops_loop.demo.runner import (
    DemoRun,
    _episode_line,
    batch_stamps,
    episode_status,
    format_summary,
)
from tests.conftest import write_loop


def test_verdicts_left_by_an_earlier_run_are_not_reported_as_this_runs(tmp_path, demo_frames):
    config = load_config(write_loop(tmp_path, demo_frames[0].head(100)))
    store = LoopStore(config.state_dir)
    episode = SCENARIO[0]
    key = episode.name
    # What an earlier run of the demo left: a passed quality gate and a promotion.
    store.write_batch_json(key, "quality", {"success": True, "incidents": []})
    store.write_batch_json(key, "promotion", {"promoted": True})
    store.write_batch_json(key, "drift", {"dataset_drift": False})

    before = batch_stamps(store, key)
    stale = episode_status(config, key, before)  # this run wrote nothing for the batch
    assert (stale.quality_success, stale.promoted, stale.dataset_drift) == (None, None, None)
    line = _episode_line(config, episode, stale, [], [])
    assert "PROMOTED" not in line and "not monitored by this run" in line

    # This run monitors the batch again: its verdicts, and only they, are reported.
    store.write_batch_json(key, "quality", {"success": True, "incidents": []})
    store.write_batch_json(key, "drift", {"dataset_drift": True})
    fresh = episode_status(config, key, before)
    assert (fresh.quality_success, fresh.dataset_drift, fresh.promoted) == (True, True, None)
    line = _episode_line(config, episode, fresh, [], [])
    assert "drift YES" in line and "PROMOTED" not in line and "rejected" not in line

    from mlops_loop.core.steps.status import loop_status

    run = DemoRun(
        status=loop_status(config),
        plot="p.svg",
        dagster_runs=2,
        config_path="loop.yaml",
        backtest=None,
        seconds=1.0,
        episodes=[stale, fresh],
    )
    summary = format_summary(run, tmp_path)
    assert "batches monitored : 1" in summary
    assert "promotions        : 0" in summary and "drift detected    : 1" in summary

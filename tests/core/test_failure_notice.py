"""A failed loop run reaches the alert notifiers (here a real local HTTP server)."""

from mlops_loop.core.config import load_config
from mlops_loop.core.steps.run import notify_failure
from tests.conftest import write_loop


def test_a_failed_run_is_sent_to_the_webhook(tmp_path, demo_frames, webhook):
    url, received = webhook
    reference, _ = demo_frames
    config = load_config(
        write_loop(tmp_path, reference, **{"alerts.notifiers": [{"type": "webhook", "url": url}]})
    )
    [delivery] = notify_failure(config, "batch_003", "monitor_job", "quality gate failed")
    assert delivery.ok, delivery
    [message] = received
    assert "monitor_job failed on batch_003: quality gate failed" in message["text"]
    # No notifiers configured: nothing is sent and nothing fails.
    quiet = load_config(write_loop(tmp_path / "quiet", reference))
    assert notify_failure(quiet, None, "retrain_job", "boom") == []

"""Alert rules on the loop's batch metrics, delivered by a webhook to a local HTTP server and
shown as the `alerts` asset check of each batch."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from mlops_loop.core.store import LoopStore
from tests.dagster.conftest import new_loop, run_job


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_drift_alert_fires_once_is_delivered_and_fails_the_check(tmp_path, demo_frames, webhook):
    url, received = webhook
    keys = ["batch_001", "batch_004", "batch_005"]  # stable, covariate drift, concept drift
    loop = new_loop(
        tmp_path,
        demo_frames,
        keys,
        **{
            "alerts.rules": [
                {
                    "name": "drift_high",
                    "metric": "drift_share",
                    "kind": "threshold",
                    "direction": "above",
                    "value": 0.2,
                    "clear": 0.1,
                    "severity": "error",
                },
                {
                    "name": "auc_low",
                    "metric": "roc_auc",
                    "kind": "relative_drop",
                    "drop": 0.05,
                    "baseline": {"metric": "champion_roc_auc"},
                    "severity": "warn",
                },
            ],
            "alerts.notifiers": [{"type": "webhook", "url": url, "timeout": 5}],
        },
    )
    assert run_job(loop.defs, loop.instance, "bootstrap_job").success
    loop.instance.add_dynamic_partitions("batches", keys)
    checks = {}
    for key in keys:
        result = run_job(loop.defs, loop.instance, "monitor_job", key)
        assert result.success, key  # an alert never fails the run, only its check
        [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "alerts"]
        checks[key] = check
    assert checks["batch_001"].passed
    drift = checks["batch_004"]
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.ERROR
    assert "drift_share" in drift.description and "drift_high" in drift.description
    # The concept-drift batch: inputs look normal again, the AUC falls.
    concept = checks["batch_005"]
    assert not concept.passed and concept.severity == dg.AssetCheckSeverity.WARN
    assert "auc_low" in concept.description

    texts = [m["text"] for m in received]
    assert len(texts) == 2, texts  # one message per batch with events; none for batch_001
    assert "drift_high" in texts[0] and "auc_low" in texts[1]
    state = json.loads(
        (LoopStore(loop.config.state_dir).root / "alerts" / "state.json").read_text()
    )
    assert state["rules"]["drift_high"]["firing"] is False  # resolved on batch_005 (clear 0.1)
    assert state["rules"]["auc_low"]["firing"] is True

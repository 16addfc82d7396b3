"""/health, /ready, /version and /metrics on a real server."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

import mlops_loop
from tests.conftest import write_loop
from tests.serving.test_bad_input import ROW, samples


def test_health_ready_and_version_name_what_serves(champion_loop, serve, client):
    server = serve(champion_loop)
    assert client.get(f"{server.url}/health").json() == {"status": "alive"}
    ready = client.get(f"{server.url}/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "model_version": 1}
    version = client.get(f"{server.url}/version").json()
    assert version["package_version"] == mlops_loop.__version__
    assert version["model_name"] == champion_loop.mlflow.registered_model
    assert version["model_version"] == 1
    assert version["serving_since"].endswith("+00:00")
    assert version["champion_since"]  # when the bootstrap made it champion
    assert version["challenger_version"] is None


def test_without_a_champion_the_server_is_alive_but_not_ready(tmp_path, demo_frames, serve, client):
    from mlops_loop.core.config import load_config

    config = load_config(write_loop(tmp_path, demo_frames[0].head(100)))
    server = serve(config)
    assert client.get(f"{server.url}/health").status_code == 200
    ready = client.get(f"{server.url}/ready")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    out = client.post(f"{server.url}/invocations", json={"inputs": [ROW]})
    assert out.status_code == 503 and "no champion" in out.json()["error"]


def test_metrics_count_requests_errors_rows_latency_version_and_backlog(
    champion_loop, serve, client
):
    server = serve(champion_loop)
    for _ in range(3):
        assert client.post(f"{server.url}/invocations", json={"inputs": [ROW, ROW]}).is_success
    client.post(f"{server.url}/invocations", content=b"{")
    client.post(f"{server.url}/invocations", json={"inputs": [{"age": 1}]})
    text = client.get(f"{server.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["mlops_loop_serving_request_latency_seconds"].type == "histogram"
    got = samples(text)
    assert got[("mlops_loop_serving_requests_total", (("status", "200"),))] == 3
    assert got[("mlops_loop_serving_requests_total", (("status", "400"),))] == 1
    assert got[("mlops_loop_serving_errors_total", (("status", "422"),))] == 1
    assert ("mlops_loop_serving_errors_total", (("status", "200"),)) not in got
    assert got[("mlops_loop_serving_rows_scored_total", ())] == 6
    assert got[("mlops_loop_serving_request_latency_seconds_count", ())] == 5
    assert got[("mlops_loop_serving_model_version", (("alias", "champion"),))] == 1
    assert got[("mlops_loop_serving_model_version", (("alias", "challenger"),))] == -1
    # The sink's backlog: the recording sink counts every logged row.
    assert got[("mlops_loop_serving_prediction_log_backlog_rows", ())] == 6

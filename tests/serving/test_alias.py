"""The endpoint follows the registry: a promotion reaches it within one poll under a steady
stream of concurrent requests, none failing; a failed load keeps the old model; with shadow on,
`@challenger` scores every request off the response path."""

from __future__ import annotations

import threading
import time

import httpx
import pandas as pd
import pytest

from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.training import predict_scores
from mlops_loop.serving.models import Served
from tests.serving.conftest import bootstrap
from tests.serving.test_bad_input import ROW, samples

pytestmark = pytest.mark.slow  # a model trained and registered per module


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, demo_frames):
    """A loop serving v1, with v2 registered (trained on other rows) as challenger."""
    from mlops_loop.core.steps.models import log_and_register
    from mlops_loop.core.tracking import tracked_run
    from mlops_loop.core.training import train_model

    reference = demo_frames[0]
    config = bootstrap(tmp_path_factory.mktemp("alias"), reference, **{"serving.shadow": True})
    model = train_model(reference.tail(400), config.model, config.columns)
    with tracked_run(config, run_name="challenger"):
        version = log_and_register(config, model, reference.tail(20))
    registry = MlflowRegistry.from_config(config)
    registry.tag_version(version, {"mlops_loop.metric.roc_auc": 0.9})
    registry.set_challenger(version)
    return config, registry, version


def _wait(condition, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def test_shadow_scores_every_request_off_the_response_path(two_versions, serve, client):
    config, registry, v2 = two_versions
    server = serve(config)
    rows = [ROW, {**ROW, "age": 70, "plan": "premium"}]
    ids = []
    for _ in range(3):
        out = client.post(f"{server.url}/invocations", json={"inputs": rows})
        assert out.status_code == 200
        assert out.json()["model_version"] == registry.champion()
        ids.append(out.json()["request_id"])
    _wait(lambda: len(server.sink.of("shadow")) == 3, "three shadow records")
    shadow = server.sink.of("shadow")
    assert [s["id"] for s in shadow] == ids and {s["version"] for s in shadow} == {v2}
    expected = predict_scores(registry.load(v2), pd.DataFrame(rows), config.columns)
    assert shadow[0]["predictions"] == expected.tolist()
    assert all(r["shadow"] is None for r in server.sink.of("req"))
    assert client.get(f"{server.url}/version").json()["challenger_version"] == v2


def test_a_failed_load_keeps_serving_the_old_model(two_versions, serve, client, monkeypatch):
    config, registry, v2 = two_versions
    server = serve(config)
    follower = server.endpoint.follower
    before = follower.champion

    def unavailable(self, version):
        raise OSError("artifact store unreachable")

    monkeypatch.setattr(MlflowRegistry, "load", unavailable)
    # As if another version served: the next checks load the alias' target, and fail.
    follower.champion = Served(before.model, before.version + 100, "champion", before.since)
    polls = follower.polls
    _wait(lambda: follower.polls > polls + 1, "two polls")
    assert follower.champion.version == before.version + 100
    out = client.post(f"{server.url}/invocations", json={"inputs": [ROW]})
    assert out.status_code == 200 and out.json()["model_version"] == before.version + 100
    got = samples(client.get(f"{server.url}/metrics").text)
    assert got[("mlops_loop_serving_model_load_failures_total", (("alias", "champion"),))] >= 1


def test_a_promotion_reaches_serving_within_a_poll_and_no_request_fails(two_versions, serve):
    config, registry, v2 = two_versions
    server = serve(config)
    follower = server.endpoint.follower
    old = registry.champion()
    assert follower.champion.version == old
    seen: list[tuple[int, int | None]] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                try:
                    out = c.post(f"{server.url}/invocations", json={"inputs": [ROW, ROW]})
                    seen.append((out.status_code, out.json().get("model_version")))
                except httpx.HTTPError as e:  # a dropped connection is a failed request too
                    seen.append((0, repr(e)))

    threads = [threading.Thread(target=stream) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        _wait(lambda: len(seen) > 50, "requests answered by the old champion")
        registry.promote(
            v2, expected_champion=old, reason="better on the holdout", triggered_by="test"
        )
        polls = follower.polls  # checks completed once the alias had moved
        _wait(lambda: follower.champion.version == v2, "the swap")
        # Loaded by the check in progress when the promotion returned, or the next one.
        assert follower.champion.poll <= polls + 1
        answered = len(seen)
        _wait(lambda: len(seen) > answered + 50, "requests answered by the new champion")
    finally:
        stop.set()
        for t in threads:
            t.join()
    statuses = {s for s, _ in seen}
    assert statuses == {200}, [x for x in seen if x[0] != 200][:5]
    versions = [v for _, v in seen]
    assert set(versions) == {old, v2}
    # Once a request saw the new version... the old one may still finish in flight, but the
    # last requests are all answered by the new one.
    assert set(versions[-20:]) == {v2}

"""Bad input is answered 400, 413 or 422 with a JSON body naming the problem, never a 500; each
is counted in /metrics and logged as an "err" record."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROW = {
    "age": 40,
    "income": 52000.5,
    "tenure_months": 12,
    "sessions_per_week": 3.5,
    "support_tickets": 0,
    "region": "north",
    "plan": "basic",
    "device": "mobile",
}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics page: (name, sorted labels without the worker) -> value."""
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "worker"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def server(champion_loop, serve):
    return serve(champion_loop)


def post(client, server, body, **kw):
    if isinstance(body, dict | list):
        return client.post(f"{server.url}/invocations", json=body, **kw)
    return client.post(f"{server.url}/invocations", content=body, **kw)


def test_missing_and_wrongly_typed_columns_are_each_named(server, client):
    row = {**ROW, "age": "abc", "plan": 3, "sessions_per_week": None}
    del row["income"]
    row["region"] = True
    out = post(client, server, {"dataframe_records": [ROW, row]})
    assert out.status_code == 422
    body = out.json()
    assert body["request_id"] == out.headers["X-Request-ID"]
    problems = {p["column"]: p["problem"] for p in body["columns"]}
    # A key absent from one record is a null there (as pandas reads records): income is fine.
    assert problems == {
        "age": "expected a number, got 'abc' (row 1)",
        "plan": "expected a string, got 3 (row 1)",
        "region": "expected a string, got true (row 1)",
    }
    assert "age" in body["error"] and "region" in body["error"]
    out = post(client, server, {"inputs": [{k: v for k, v in ROW.items() if k != "device"}]})
    assert out.status_code == 422
    assert out.json()["columns"] == [{"column": "device", "problem": "missing"}]
    (err, *_) = server.sink.of("err")
    assert err["status"] == 422 and err["id"] == body["request_id"]


def test_a_boolean_for_a_number_is_refused_and_null_is_accepted(server, client):
    out = post(client, server, {"inputs": {**{k: [v] for k, v in ROW.items()}, "age": [False]}})
    assert out.status_code == 422
    assert out.json()["columns"] == [
        {"column": "age", "problem": "expected a number, got false (row 0)"}
    ]
    out = post(client, server, {"inputs": [{**ROW, "age": None, "region": None}]})
    assert out.status_code == 200, out.text


@pytest.mark.parametrize(
    "body, error",
    [
        (b"{not json", "not valid JSON"),
        (b'{"dataframe_records": [1, 2]}', "every record must be a JSON object"),
        (b'{"instances": [[1, 2]]}', "exactly one of the keys"),
        (b'[{"age": 1}]', "exactly one of the keys"),
        (b'{"dataframe_split": {"columns": ["age"], "data": [[1, 2]]}}', "rows of 1 values"),
        (b'{"inputs": {"age": [1, 2], "plan": ["a"]}}', "the same length"),
        (b'{"dataframe_records": []}', "no rows"),
        (b'{"inputs": 3}', "expected a list of records or an object of columns"),
    ],
)
def test_malformed_bodies_are_400(server, client, body, error):
    out = post(client, server, body, headers={"Content-Type": "application/json"})
    assert out.status_code == 400, out.text
    assert error in out.json()["error"]


def test_too_large_a_body_or_too_many_rows_is_413(champion_loop, serve, client):
    config = champion_loop.model_copy(
        update={
            "serving": champion_loop.serving.model_copy(
                update={"max_body_bytes": 2000, "max_rows": 3}
            )
        }
    )
    server = serve(config)
    out = post(client, server, {"inputs": [ROW] * 4})
    assert out.status_code == 413 and "at most 3 (serving.max_rows)" in out.json()["error"]
    big = json.dumps({"inputs": [ROW] * 20}).encode()
    out = post(client, server, big)
    assert out.status_code == 413 and "serving.max_body_bytes" in out.json()["error"]

    def chunks():  # no Content-Length: the limit holds while reading
        for i in range(0, len(big), 500):
            yield big[i : i + 500]

    out = post(client, server, chunks())
    assert out.status_code == 413 and "over 2000 bytes" in out.json()["error"]
    assert post(client, server, {"inputs": [ROW] * 3}).status_code == 200


def test_extra_columns_are_ignored_and_counted(server, client):
    out = post(client, server, {"inputs": [{**ROW, "note": "vip", "churned": 1}]})
    assert out.status_code == 200
    plain = post(client, server, {"inputs": [ROW]})
    assert out.json()["predictions"] == plain.json()["predictions"]
    (first, _) = server.sink.of("req")
    assert first["extra_columns"] == 2 and "note" not in first["columns"]
    metrics = samples(client.get(f"{server.url}/metrics").text)
    assert metrics[("mlops_loop_serving_extra_columns_total", ())] == 2


def test_an_unexpected_failure_is_a_500_with_its_request_id(server, client, monkeypatch):
    import mlops_loop.serving.batcher as batcher_module

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(batcher_module, "score", broken)
    out = post(client, server, {"inputs": [ROW]}, headers={"X-Request-ID": "abc-1"})
    assert out.status_code == 500
    assert out.json() == {"error": "internal error", "request_id": "abc-1"}
    metrics = samples(client.get(f"{server.url}/metrics").text)
    assert metrics[("mlops_loop_serving_errors_total", (("status", "500"),))] == 1
    monkeypatch.undo()
    assert post(client, server, {"inputs": [ROW]}).status_code == 200

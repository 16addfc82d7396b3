"""POST /invocations on a real server: every request format of MLflow's scoring protocol, the
loop's own scores, the request id, and the prediction log's records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.steps.scoring import predict_frame


@pytest.fixture(scope="module")
def rows(demo_frames, champion_loop) -> pd.DataFrame:
    """Five rows of a batch, as a client would send them (features, id, timestamp)."""
    _, batches = demo_frames
    cols = champion_loop.columns
    frame = batches["batch_001"].head(5)
    frame = frame[[*cols.features, cols.id, cols.timestamp]].copy()
    frame[cols.timestamp] = frame[cols.timestamp].astype(str)
    return frame.reset_index(drop=True)


def _records(frame: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in frame.astype(object).to_dict(orient="records")
    ]


def payloads(frame: pd.DataFrame) -> dict[str, dict]:
    records = _records(frame)
    columns = list(frame.columns)
    return {
        "dataframe_split": {
            "dataframe_split": {"columns": columns, "data": [list(r.values()) for r in records]}
        },
        "dataframe_records": {"dataframe_records": records},
        "inputs_records": {"inputs": records},
        "inputs_columns": {"inputs": {c: [r[c] for r in records] for c in columns}},
    }


@pytest.mark.parametrize(
    "kind", ["dataframe_split", "dataframe_records", "inputs_records", "inputs_columns"]
)
def test_each_format_scores_as_the_loop_does(champion_loop, rows, serve, client, kind):
    served = serve(champion_loop)
    out = client.post(f"{served.url}/invocations", json=payloads(rows)[kind])
    assert out.status_code == 200, out.text
    body = out.json()
    expected, version = predict_frame(champion_loop, rows)
    assert body["model_version"] == version == 1
    assert body["predictions"] == pytest.approx(
        expected[champion_loop.columns.prediction].tolist(), abs=0, rel=0
    )
    assert out.headers["X-Request-ID"] == body["request_id"]
    assert len(body["request_id"]) == 32 and int(body["request_id"], 16) >= 0


def test_the_answer_waits_for_its_log_record_which_holds_the_masked_rows(
    champion_loop, rows, serve, client
):
    served = serve(champion_loop)
    out = client.post(
        f"{served.url}/invocations",
        json=payloads(rows)["dataframe_records"],
        headers={"X-Request-ID": "order-42"},
    )
    assert out.status_code == 200
    assert out.headers["X-Request-ID"] == "order-42" == out.json()["request_id"]
    assert "order-42" in served.sink.durable  # completed before the answer was sent
    (record,) = served.sink.of("req")
    cols = champion_loop.columns
    assert record["id"] == "order-42" and record["status"] == 200 and record["version"] == 1
    assert record["shadow"] is None and record["extra_columns"] == 0
    assert record["latency_ms"] > 0
    logged = record["columns"]  # by column, a list each
    assert set(logged) == {*cols.features, cols.id, cols.timestamp, cols.prediction}
    assert all(len(values) == 5 for values in logged.values())
    assert logged[cols.prediction] == out.json()["predictions"]
    assert logged[cols.timestamp][0] == rows[cols.timestamp][0]
    assert served.sink.started


@pytest.mark.parametrize(
    "sent",
    ["x" * 129, "tab\there", "", "ünïcode"],
)
def test_an_unusable_request_id_is_replaced(champion_loop, rows, serve, client, sent):
    served = serve(champion_loop)
    out = client.post(
        f"{served.url}/invocations",
        json=payloads(rows)["dataframe_split"],
        headers={"X-Request-ID": sent.encode("utf-8")},
    )
    assert out.status_code == 200
    rid = out.json()["request_id"]
    assert rid != sent and len(rid) == 32 and out.headers["X-Request-ID"] == rid

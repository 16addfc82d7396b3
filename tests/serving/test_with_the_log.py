"""The endpoint with its real prediction log (`serving.log: true`, the write-ahead log): what it
answered lands, after shutdown, as a served batch file in the landing folder, with the answer's
predictions and version, and private columns hashed exactly once."""

from __future__ import annotations

import pandas as pd

from mlops_loop.core.privacy import hash_value
from mlops_loop.core.served import read_window
from mlops_loop.serving.app import create_app
from tests.serving.conftest import Served
from tests.serving.test_bad_input import ROW


def test_answered_requests_land_as_a_served_batch(champion_loop, tmp_path, client, monkeypatch):
    monkeypatch.setenv("MLOPS_LOOP_PRIVACY_SALT", "pepper")
    columns = champion_loop.columns.model_copy(update={"private": [champion_loop.columns.id]})
    landing = tmp_path / "landing"
    landing.mkdir()
    config = champion_loop.model_copy(
        update={
            "columns": columns,
            "sources": champion_loop.sources.model_copy(update={"landing": landing}),
            "serving": champion_loop.serving.model_copy(update={"log_dir": tmp_path / "wal"}),
        }
    )
    app = create_app(config)
    sink = app.state.endpoint.sink
    assert type(sink).__name__ == "WalSink"
    rows = [{**ROW, columns.id: "c-1"}, {**ROW, "age": 71, columns.id: "c-2"}]
    with Served(app, sink) as server:
        out = client.post(
            f"{server.url}/invocations", json={"inputs": rows}, headers={"X-Request-ID": "r-1"}
        )
        assert out.status_code == 200
        assert client.post(f"{server.url}/invocations", content=b"{").status_code == 400
    # Shut down: the log rolled everything it held.
    (landed,) = sorted(landing.glob("served-*.parquet"))
    frame = pd.read_parquet(landed)
    assert frame["request_id"].tolist() == ["r-1", "r-1"]
    assert frame[columns.prediction].tolist() == out.json()["predictions"]
    assert frame["model_version"].tolist() == [1, 1]
    salt = b"pepper"
    assert frame[columns.id].tolist() == [hash_value("c-1", salt), hash_value("c-2", salt)]
    window = read_window(landed)
    assert window is not None
    assert window.requests == 1 and window.errors.get("400") == 1

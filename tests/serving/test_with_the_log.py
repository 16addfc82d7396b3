"""The endpoint with its real prediction log (`serving.log: true`, the write-ahead log): what it
answered lands, after shutdown, as a served batch file in the landing folder, with the answer's
predictions and version, and private columns hashed exactly once."""

from __future__ import annotations

import json

import pandas as pd

from mlops_loop.core.privacy import hash_value
from mlops_loop.core.served import read_window
from mlops_loop.serving.app import create_app
from tests.serving.conftest import Served
from tests.serving.test_bad_input import ROW


def _logged_loop(champion_loop, tmp_path, monkeypatch):
    """The loop with its id private (hashed with a test salt), landing and logging under
    `tmp_path`: (config, landing folder)."""
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
    return config, landing


def test_answered_requests_land_as_a_served_batch(champion_loop, tmp_path, client, monkeypatch):
    config, landing = _logged_loop(champion_loop, tmp_path, monkeypatch)
    columns = config.columns
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


def test_a_body_is_logged_as_it_came_only_when_it_holds_nothing_else(
    champion_loop, tmp_path, client, monkeypatch
):
    """A compact body of nothing but feature columns goes into the log byte for byte (not
    encoded again); a body on several lines, with a private or an extra column, or an index,
    is logged by column and masked. Every form lands the same rows."""
    config, landing = _logged_loop(champion_loop, tmp_path, monkeypatch)
    columns = config.columns
    rows = [ROW, {**ROW, "age": 71, "region": None, "income": None}]
    names = list(ROW)
    split = {"dataframe_split": {"columns": names, "data": [[r[c] for c in names] for r in rows]}}
    bodies = {
        "split": json.dumps(split, separators=(",", ":")).encode(),
        "columns": json.dumps({"inputs": {c: [r[c] for r in rows] for c in names}}).encode(),
        "records": json.dumps({"dataframe_records": rows}).encode(),
        "lines": json.dumps(split, indent=2).encode(),
        "private": json.dumps(
            {"inputs": [{**r, columns.id: f"zqsecret-{i}qz"} for i, r in enumerate(rows)]}
        ).encode(),
        "extra": json.dumps({"inputs": [{**r, "note": "zqnoteqz"} for r in rows]}).encode(),
        "index": json.dumps(
            {"dataframe_split": {**split["dataframe_split"], "index": ["zqidxqz", "b"]}}
        ).encode(),
    }
    kept = {"split", "columns", "records"}
    app = create_app(config)
    sink = app.state.endpoint.sink
    with Served(app, sink) as server:
        answers = {}
        for name, body in bodies.items():
            out = client.post(
                f"{server.url}/invocations",
                content=body,
                headers={"X-Request-ID": name, "Content-Type": "application/json"},
            )
            assert out.status_code == 200, (name, out.text)
            answers[name] = out.json()["predictions"]
        wal = b"".join(p.read_bytes() for p in (tmp_path / "wal").rglob("*.wal"))
    for name, body in bodies.items():
        assert (body in wal) == (name in kept), name
    for secret in (b"zqsecret-", b"zqnoteqz", b"zqidxqz"):
        assert secret not in wal
    frame = pd.concat(pd.read_parquet(p) for p in sorted(landing.glob("served-*.parquet")))
    assert b"zqsecret-" not in b"".join(p.read_bytes() for p in landing.glob("*.parquet"))
    shown = [*names, columns.prediction]
    split_rows = frame[frame["request_id"] == "split"][shown].reset_index(drop=True)
    assert split_rows["age"].tolist() == [40, 71] and split_rows["region"].isna().tolist() == [
        False,
        True,
    ]
    for name in bodies:
        got = frame[frame["request_id"] == name]
        assert got["row"].tolist() == [0, 1], name
        assert got[columns.prediction].tolist() == answers[name], name
        pd.testing.assert_frame_equal(got[shown].reset_index(drop=True), split_rows, obj=name)
    private = frame[frame["request_id"] == "private"][columns.id].tolist()
    assert private == [hash_value(f"zqsecret-{i}qz", b"pepper") for i in range(2)]

"""The prediction log in one process: torn records, rolls by rows and by time, names, privacy,
types, shadow scores and the serving metadata, on real files."""

from __future__ import annotations

import asyncio

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlops_loop.core.config import ColumnsConfig
from mlops_loop.core.errors import InvalidConfigError
from mlops_loop.core.privacy import hash_value
from mlops_loop.serving.wal import WalError, WalSink
from mlops_loop.serving.wal_format import encode, payload_json, read_entries
from tests.serving.helpers import (
    COLUMNS,
    SALT_ENV,
    frame,
    landed,
    req,
    serving_meta,
    sink,
    wait_for,
)


@pytest.fixture(autouse=True)
def _salt(monkeypatch):
    monkeypatch.setenv(SALT_ENV, "pepper")


def _segment(folder, records, tail: bytes = b""):
    folder.mkdir(parents=True)
    # Written the way the sink writes them: kind and time first, then the payload.
    lines = [
        encode(r["k"], r["t"], payload_json({k: v for k, v in r.items() if k not in ("k", "t")}))
        for r in records
    ]
    (folder / "0000000001.wal").write_bytes(b"".join(lines) + tail)
    return lines


def test_a_torn_final_record_is_dropped_and_the_rest_lands(tmp_path):
    records = [{"k": "req", "t": 1.8e9 + i, **req(f"r{i}")} for i in range(3)]
    lines = _segment(tmp_path / "wal" / "dead", records, tail=encode("req", 1.8e9 + 9, b"{}")[:-7])
    entries = list(read_entries(tmp_path / "wal" / "dead"))
    assert [e.record["id"] for e in entries] == ["r0", "r1", "r2"]
    assert entries[-1].position == (1, sum(map(len, lines)))

    corrupt = bytearray(lines[1])
    corrupt[-3] ^= 1  # one flipped bit in the middle record: its CRC fails, reading stops
    (tmp_path / "wal" / "dead" / "0000000002.wal").write_bytes(lines[0] + bytes(corrupt))
    assert len(list(read_entries(tmp_path / "wal" / "dead", after=(1, 10**9)))) == 1

    s = sink(tmp_path)
    s.start()
    s.close()
    assert sorted(frame(tmp_path)["request_id"]) == ["r0", "r0", "r1", "r2"]
    assert not (tmp_path / "wal" / "dead").exists()  # the dead worker's folder is gone


def test_rolls_every_batch_rows_and_close_lands_the_rest(tmp_path):
    s = sink(tmp_path, batch_rows=10, batch_seconds=3600)
    s.start()
    for i in range(35):
        s.record("req", req(f"r{i:02d}"))
    wait_for(lambda: s.backlog() == 5)
    assert [len(pq.read_table(f)) for f in landed(tmp_path)] == [10, 10, 10]
    s.close()
    assert s.backlog() == 0
    assert [len(pq.read_table(f)) for f in landed(tmp_path)] == [10, 10, 10, 5]
    got = frame(tmp_path)
    assert list(got["request_id"]) == [f"r{i:02d}" for i in range(35)]
    assert not list((tmp_path / "wal" / "w1").glob("*.wal"))  # every segment rolled away


def test_rolls_every_batch_seconds_and_never_an_empty_file(tmp_path):
    s = sink(tmp_path, batch_rows=10**6, batch_seconds=0.2, heartbeat_seconds=0.05, flush_ms=20)
    s.start()
    s.record("hb", {})
    s.record("err", {"id": "bad", "status": 422, "latency_ms": 0.5})
    wait_for(lambda: len([e for e in read_entries(tmp_path / "wal" / "w1")]) > 8)
    assert landed(tmp_path) == []  # heartbeats and errors alone make no file
    for i in range(3):
        s.record("req", req(f"r{i}", rows=2))
    wait_for(lambda: len(landed(tmp_path)) == 1)
    assert len(pq.read_table(landed(tmp_path)[0])) == 6
    meta = serving_meta(landed(tmp_path)[0])
    assert meta["errors"]["422"] == 1 and meta["requests"] == 3
    s.close()
    assert len(landed(tmp_path)) == 1


def test_file_names_sort_by_time_and_carry_the_worker(tmp_path):
    s = sink(tmp_path, worker="host-7", batch_rows=3)
    s.start()
    for i in range(12):
        s.record("req", req(f"r{i:02d}"))
    s.close()
    files = landed(tmp_path)
    assert len(files) == 4
    starts = [pq.read_table(f).column("served_at").to_pylist()[0] for f in files]
    assert starts == sorted(starts)
    assert all(f.name.startswith("served-") and f.name.endswith("-host-7.parquet") for f in files)
    assert [serving_meta(f)["window_start"] for f in files] == sorted(
        serving_meta(f)["window_start"] for f in files
    )


def test_private_values_reach_neither_the_log_nor_the_landed_files(tmp_path):
    s = sink(tmp_path, batch_rows=10**6)
    s.start()
    # The server hands the sink raw rows: the sink is the one place they are masked.
    s.record("req", req("raw", rows=3))
    s.record("req", req("more", rows=2))
    salt = b"pepper"
    wal = b"".join(p.read_bytes() for p in (tmp_path / "wal" / "w1").glob("*.wal"))
    assert b"zqraw-" not in wal and b"zqmore-" not in wal
    assert hash_value("zqraw-0qz", salt).encode() in wal
    s.close()
    data = b"".join(p.read_bytes() for p in landed(tmp_path))
    assert b"zqraw-" not in data and b"zqmore-" not in data
    got = frame(tmp_path)
    # Hashed once, exactly as core.privacy hashes elsewhere (so late labels join by it).
    assert list(got["cid"]) == [
        hash_value(f"zq{r}-{i}qz", salt) for r, n in (("raw", 3), ("more", 2)) for i in range(n)
    ]


def test_dropped_private_columns_are_dropped_everywhere(tmp_path):
    columns = COLUMNS.model_copy(update={"privacy": "drop"})
    s = sink(tmp_path, columns=columns)
    s.start()
    s.record("req", req("r1", rows=2))
    wal = b"".join(p.read_bytes() for p in (tmp_path / "wal" / "w1").glob("*.wal"))
    assert b"zqr1-" not in wal
    s.close()
    assert b"zqr1-" not in landed(tmp_path)[0].read_bytes()
    assert "cid" not in frame(tmp_path).columns


def test_hashing_without_the_salt_is_refused_at_construction(tmp_path, monkeypatch):
    monkeypatch.delenv(SALT_ENV)
    with pytest.raises(Exception, match="MLOPS_LOOP_PRIVACY_SALT"):
        sink(tmp_path)


def test_types_are_the_same_in_every_file(tmp_path):
    s = sink(tmp_path, batch_rows=1, types={"c": "int", "cid": "int"})
    s.start()
    odd = [
        {"x": 1, "c": 2, "ts": 1.8e9, "prediction": 1},  # ints for floats, epoch seconds
        {"x": 1.5, "c": None, "ts": None, "prediction": 0.5},  # nulls
        {"x": None, "c": "3", "ts": "2026-01-02T03:04:05+02:00", "prediction": None},
        {"x": "oops", "c": 4.0, "prediction": 0.1},  # a wrong type becomes null, not a new type
    ]
    for i, row in enumerate(odd):
        s.record(
            "req", {"id": f"r{i}", "status": 200, "latency_ms": 1, "version": 2, "rows": [row]}
        )
    s.close()
    schemas = {pq.read_schema(f).remove_metadata().to_string() for f in landed(tmp_path)}
    assert len(landed(tmp_path)) == 4 and len(schemas) == 1
    got = frame(tmp_path)
    assert str(got["served_at"].dtype) == "datetime64[ns, UTC]"
    assert str(got["ts"].dtype) == "datetime64[ns, UTC]"
    assert got["x"].dtype == "float64" and got["latency_ms"].dtype == "float64"
    assert got["model_version"].dtype == "int64" and got["row"].dtype == "int64"
    assert list(got["c"])[:1] == [2] and got["c"].isna().tolist() == [False, True, False, False]
    assert got["ts"][2].hour == 1  # converted to UTC


def test_shadow_scores_join_their_request_until_the_roll(tmp_path):
    s = sink(tmp_path, shadow=True, batch_rows=10**6)
    s.start()
    s.record("req", req("a", rows=2))
    s.record("req", req("b", rows=1))
    s.record("shadow", {"id": "a", "version": 5, "predictions": [{"prediction": 0.7}, 0.8]})
    s.record("req", req("c", rows=1, shadow={"version": 6, "predictions": [0.1]}))
    s.close()
    got = frame(tmp_path)
    assert got["shadow_prediction"].tolist()[:2] == [0.7, 0.8]
    assert got["shadow_version"].tolist()[:2] == [5, 5]
    assert got["shadow_prediction"].isna().tolist() == [False, False, True, False]
    assert got["shadow_version"].tolist()[3] == 6


def test_metadata_counts_errors_latencies_and_time_down(tmp_path):
    now = [1.8e9]
    s = sink(
        tmp_path, heartbeat_seconds=3600, batch_rows=10**6, batch_seconds=1e6, clock=lambda: now[0]
    )
    s.start()
    for status, latency in (("422", 1.0), ("413", 2.0), ("422", 3.0), ("500", 4.0)):
        now[0] += 0.5
        s.record("err", {"id": f"e{latency}", "status": int(status), "latency_ms": latency})
    now[0] += 0.5
    s.record("req", req("r1", rows=3, latency_ms=9.5, extra_columns=2))
    now[0] += 10_000  # no heartbeat for a long while: the process hung
    s.record("hb", {})
    s.record("req", req("r2", rows=1, latency_ms=7.0, extra_columns=1))
    s.close()
    (path,) = landed(tmp_path)
    meta = serving_meta(path)
    assert meta["schema"] == 1 and meta["worker"] == "w1"
    assert meta["errors"] == {"422": 2, "413": 1, "400": 0, "500": 1}
    assert meta["requests"] == 2 and meta["rows"] == 4 and meta["extra_columns"] == 3
    assert meta["latency_ms"] == [1.0, 2.0, 3.0, 4.0, 9.5, 7.0]
    assert meta["down_seconds"] == pytest.approx(10_000, abs=1e-3)
    assert meta["window_start"] == pytest.approx(1.8e9, abs=1e-3)
    assert meta["window_end"] == pytest.approx(1.8e9 + 10_002.5, abs=1e-3)


def test_a_restart_counts_the_gap_since_the_last_record_as_down(tmp_path):
    now = [1.8e9]
    first = sink(tmp_path, heartbeat_seconds=1.0, clock=lambda: now[0])
    first.start()
    first.record("req", req("r1"))
    first.close()
    now[0] += 60
    second = sink(tmp_path, heartbeat_seconds=1.0, clock=lambda: now[0])
    second.start()
    second.record("req", req("r2"))
    second.close()
    meta = serving_meta(landed(tmp_path)[-1])
    assert meta["down_seconds"] == pytest.approx(60, abs=1e-3)


def test_many_asyncio_writers_share_flushes_and_all_land(tmp_path):
    s = sink(tmp_path, flush_ms=20, batch_rows=100)

    async def main():
        await asyncio.gather(*(s.arecord("req", req(f"r{i}")) for i in range(500)))

    s.start()
    asyncio.run(main())
    s.close()
    got = frame(tmp_path)
    assert sorted(got["request_id"]) == sorted(f"r{i}" for i in range(500))
    assert got["request_id"].is_unique


def test_one_worker_id_is_one_live_process_and_a_closed_log_refuses_records(tmp_path):
    s = sink(tmp_path)
    s.start()
    with pytest.raises(WalError, match="in use by another live process"):
        sink(tmp_path).start()
    s.close()
    with pytest.raises(WalError, match="not open"):
        s.record("req", req("late"))
    with pytest.raises(WalError, match="kind"):
        sink(tmp_path, worker="w2").record("nope", {})
    with pytest.raises(InvalidConfigError, match="cannot name batch files"):
        sink(tmp_path, worker="a/b")


def test_from_config_reads_the_serving_section_and_the_reference_types(tmp_path):
    import pandas as pd

    from mlops_loop.core.config import parse_config

    pd.DataFrame({"x": [1.0, 2.0], "c": [1, 2], "cid": [10, 11], "y": [0, 1]}).to_parquet(
        tmp_path / "ref.parquet"
    )
    config = parse_config(
        {
            "columns": {"numerical": ["x"], "categorical": ["c"], "target": "y", "id": "cid"},
            "sources": {"reference": "ref.parquet", "landing": "landing"},
            "state_dir": "state",
            "serving": {"flush_ms": 0, "batch_rows": 7},
        },
        base=tmp_path,
        check_estimator=False,
    )
    s = WalSink.from_config(config, worker_id="w9")
    assert s.folder == tmp_path / "state" / "serving" / "wal" / "w9"
    assert s.batch_rows == 7 and s.flush_ms == 0
    s.start()
    s.record(
        "req",
        {
            "id": "a",
            "status": 200,
            "latency_ms": 1,
            "version": 1,
            "rows": [{"x": 1, "c": 2, "cid": 12, "prediction": 0.5}],
        },
    )
    s.close()
    got = frame(tmp_path)
    assert got["c"].dtype == "int64" and got["cid"].dtype == "int64"


def test_multiclass_scores_land_as_attach_scores_names_them(tmp_path):
    columns = ColumnsConfig(
        numerical=["x"], categorical=[], target="y", task="multiclass", classes=["a", "b", "c"]
    )
    s = sink(tmp_path, columns=columns)
    s.start()
    row = {
        "x": 1.0,
        "prediction": "b",
        "prediction_a": 0.2,
        "prediction_b": 0.7,
        "prediction_c": 0.1,
    }
    s.record("req", {"id": "m", "status": 200, "latency_ms": 1, "version": 1, "rows": [row]})
    s.close()
    got = frame(tmp_path)
    assert got.loc[0, ["prediction", "prediction_a", "prediction_b", "prediction_c"]].tolist() == [
        "b",
        0.2,
        0.7,
        0.1,
    ]


def test_a_failed_roll_is_retried_on_the_same_range_and_the_log_keeps_the_rows(tmp_path):
    (tmp_path / "landing").write_text("not a folder")  # the landing folder is unusable
    s = sink(tmp_path, batch_rows=4, batch_seconds=3600)
    s.start()
    for i in range(4):
        s.record("req", req(f"r{i}"))
    assert s._roller is not None
    wait_for(lambda: s._roller.failure is not None)
    for i in range(4, 10):  # more arrive meanwhile; the failed range must not grow
        s.record("req", req(f"r{i}"))
    assert s.backlog() == 10
    (tmp_path / "landing").unlink()
    wait_for(lambda: s.backlog() == 2)
    s.close()
    sizes = [len(pq.read_table(f)) for f in landed(tmp_path)]
    assert sizes == [4, 4, 2]
    assert list(frame(tmp_path)["request_id"]) == [f"r{i}" for i in range(10)]


@pytest.mark.parametrize("roll_in", ["process", "thread"])
def test_a_shutdown_that_cannot_land_fails_and_keeps_the_rows_for_the_next_start(tmp_path, roll_in):
    (tmp_path / "landing").write_text("not a folder")  # the landing folder is unusable
    s = sink(tmp_path, batch_rows=100, batch_seconds=3600, roll_in=roll_in)
    s.start()
    for i in range(3):
        s.record("req", req(f"r{i}"))
    with pytest.raises(WalError, match="closing the prediction log") as caught:
        s.close()
    assert "pepper" not in str(caught.value)  # the salt stays out of the error
    assert list((tmp_path / "wal" / "w1").glob("*.wal"))  # the log still holds the rows
    (tmp_path / "landing").unlink()
    again = sink(tmp_path, worker="w2", roll_in=roll_in)
    again.start()  # replays the folder w1 left
    again.close()
    assert list(frame(tmp_path)["request_id"]) == ["r0", "r1", "r2"]


@pytest.mark.parametrize("roll_in", ["process", "thread"])
def test_a_request_body_is_kept_as_it_came_unless_it_names_a_private_column(tmp_path, roll_in):
    s = sink(tmp_path, batch_rows=10**6, roll_in=roll_in)
    s.start()
    plain = b'{"inputs":{"x":[1.5,null],"c":["a","b"],"ts":["2026-01-02T03:04:05Z",null]}}'
    private = b'{"dataframe_records":[{"x":2,"c":"a","cid":"zqsecretqz"}]}'
    s.record(
        "req", {"id": "p", "status": 200, "request": plain, "columns": {"prediction": [0.1, 0.2]}}
    )
    s.record(
        "req", {"id": "s", "status": 200, "request": private, "columns": {"prediction": [0.3]}}
    )
    wal = b"".join(p.read_bytes() for p in (tmp_path / "wal" / "w1").glob("*.wal"))
    assert plain in wal  # byte for byte
    assert b"zqsecretqz" not in wal and hash_value("zqsecretqz", b"pepper").encode() in wal
    with pytest.raises(WalError, match="not a scoring request"):
        s.record("req", {"id": "bad", "status": 200, "request": b'{"cid": "x"}', "columns": {}})
    s.close()
    got = frame(tmp_path)
    assert got["request_id"].tolist() == ["p", "p", "s"]
    assert got["x"].tolist()[:1] == [1.5] and pd.isna(got["x"][1]) and got["x"][2] == 2.0
    assert got["c"].tolist() == ["a", "b", "a"]
    assert got["prediction"].tolist() == [0.1, 0.2, 0.3]
    assert got["cid"].tolist()[2] == hash_value("zqsecretqz", b"pepper")
    assert got["ts"].notna().tolist() == [True, False, False]

"""The prediction log across real processes: SIGKILL under load, a kill between a landing and
its recorded position, and SIGTERM. Every acknowledged request lands in exactly one file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.serving.helpers import SALT_ENV, frame, landed, sink

CHILD = Path(__file__).with_name("wal_child.py")
ROOT = Path(__file__).resolve().parents[2]


def _child(
    root: Path, worker: str, flush_ms: int, requests: int = 10**6, **env
) -> subprocess.Popen:
    environment = {
        **os.environ,
        SALT_ENV: "pepper",
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        **{k: str(v) for k, v in env.items()},
    }
    args = [str(root / "wal"), str(root / "landing"), worker, str(flush_ms), "32", str(requests)]
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, text=True, env=environment
    )


def _acked_until(proc: subprocess.Popen, count: int) -> list[str]:
    """Request ids the child acknowledged, read until `count` of them (or its exit)."""
    acked = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.strip()
        if line in ("DONE", "CLOSED"):
            break
        acked.append(line)
        if len(acked) >= count:
            break
    return acked


def _rest(proc: subprocess.Popen) -> str:
    """The rest of the child's output, through the reader that may hold some already."""
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait(timeout=60)
    return out


def _kill(proc: subprocess.Popen, acked: list[str]) -> list[str]:
    proc.send_signal(signal.SIGKILL)
    out = _rest(proc)
    # What it printed before dying was acknowledged too.
    return acked + [x for x in out.split() if x not in ("DONE", "CLOSED")]


def _assert_exactly_once(root: Path, acked: list[str]) -> None:
    got = frame(root)
    per_request = got.groupby("request_id")["row"].apply(list)
    missing = sorted(set(acked) - set(per_request.index))
    assert not missing, f"{len(missing)} acknowledged requests lost, {missing[:3]}..."
    # No row twice: each request's rows 0..n-1 once each, in one file.
    for rid, rows in per_request.items():
        n = 1 + int(rid.rsplit("-", 1)[1]) % 3
        assert sorted(rows) == list(range(n)), f"request {rid} landed rows {rows}"
    assert not got.duplicated(["request_id", "row"]).any()


@pytest.mark.slow
@pytest.mark.parametrize("flush_ms", [0, 50])
def test_sigkill_under_load_then_restart_lands_every_acknowledged_request_once(
    tmp_path, monkeypatch, flush_ms
):
    monkeypatch.setenv(SALT_ENV, "pepper")
    acked: list[str] = []
    for _ in range(3):  # three workers killed in turn, each recovering the previous ones
        proc = _child(tmp_path, f"w{os.urandom(3).hex()}", flush_ms)
        acked = _kill(proc, acked + _acked_until(proc, 400))
    survivor = sink(tmp_path, worker="survivor", batch_rows=50)
    survivor.start()  # replays the dead workers' logs before anything else
    survivor.close()
    assert len(acked) >= 1200
    _assert_exactly_once(tmp_path, acked)
    assert list((tmp_path / "wal").iterdir()) == [tmp_path / "wal" / "survivor"]
    assert not list((tmp_path / "landing").glob(".*"))  # no half-written file left
    data = b"".join(p.read_bytes() for p in landed(tmp_path))
    assert b"private" not in data


@pytest.mark.slow
def test_a_kill_between_landing_and_recording_the_position_lands_nothing_twice(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(SALT_ENV, "pepper")
    acked: list[str] = []
    names_before: set[str] = set()
    for n in (1, 2, 3, 2, 1):  # the same worker id, killed at its n-th commit each time
        proc = _child(
            tmp_path,
            "w0",
            0,
            WAL_CHILD_KILL_AT_COMMIT=n,
            WAL_CHILD_BATCH_ROWS=20,
            WAL_CHILD_ROLL_IN="thread",  # the commit it is killed at is in its own process
        )
        acked = _kill(proc, acked + _acked_until(proc, 10**9))
        assert proc.returncode == -signal.SIGKILL
        pending = json.loads((tmp_path / "wal" / "w0" / "rolled.json").read_text())["pending"]
        assert pending and (tmp_path / "landing" / pending["name"]).exists()
        names = {p.name for p in landed(tmp_path)}
        assert names_before <= names  # a replayed roll rewrites its file, never renames it
        names_before = names
    final = sink(tmp_path, worker="w0", batch_rows=20)
    final.start()
    final.close()
    assert len(acked) > 0
    _assert_exactly_once(tmp_path, acked)


@pytest.mark.slow
def test_sigterm_closes_the_log_and_lands_every_acknowledged_request(tmp_path):
    proc = _child(tmp_path, "wt", 50)
    acked = _acked_until(proc, 500)
    proc.send_signal(signal.SIGTERM)
    out = _rest(proc)
    assert proc.returncode == 0 and out.split()[-1] == "CLOSED"
    acked += [x for x in out.split() if x not in ("DONE", "CLOSED")]
    _assert_exactly_once(tmp_path, acked)
    assert set(frame(tmp_path)["request_id"]) == set(acked)  # nothing unacknowledged either
    assert not list((tmp_path / "wal" / "wt").glob("*.wal"))


def _roll_process(pid: int, other_than: int | None = None, wait: float = 30.0) -> int:
    """The pid of the roll process server `pid` started (not `other_than`)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                if b"mlops_loop.serving.roll_process" in cmdline and int(child) != other_than:
                    return int(child)
        time.sleep(0.05)
    raise AssertionError(f"no roll process under {pid} in {wait} s")


@pytest.mark.slow
def test_a_killed_roll_process_is_started_again_and_every_row_lands_once(tmp_path):
    proc = _child(tmp_path, "wr", 50, WAL_CHILD_BATCH_ROWS=20)
    acked = _acked_until(proc, 200)
    roller = None
    for _ in range(2):  # killed twice under load, mid-roll or between rolls
        roller = _roll_process(proc.pid, other_than=roller)
        os.kill(roller, signal.SIGKILL)
        acked += _acked_until(proc, 300)
    restarted = _roll_process(proc.pid, other_than=roller)
    acked += _acked_until(proc, 200)
    proc.send_signal(signal.SIGTERM)
    out = _rest(proc)
    assert proc.returncode == 0 and out.split()[-1] == "CLOSED"
    acked += [x for x in out.split() if x not in ("DONE", "CLOSED")]
    _assert_exactly_once(tmp_path, acked)
    assert set(frame(tmp_path)["request_id"]) == set(acked)
    assert not list((tmp_path / "landing").glob(".*"))  # its .part files were redone
    assert not Path(f"/proc/{restarted}").exists()  # the shutdown waited for it

"""The prediction log's bytes on disk: checksummed JSON lines in numbered segment files.

Layout under `log_dir`::

    <worker_id>/0000000001.wal  0000000002.wal ...   segments, appended by one process
    <worker_id>/rolled.json                          how far they have landed (roller.py)
    <worker_id>/lock                                 held by the process that owns the folder

A record is one line, `<crc32 of the JSON, 8 hex digits> <JSON>\\n`. A process killed in the
middle of a write leaves a last line that is cut short or fails its checksum; readers stop at
the first such line of a segment. A segment is never appended to by a second process (each
start opens a new one), so nothing valid ever follows a torn record.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

SUFFIX = ".wal"
LOCK_NAME = "lock"

#: A place in a worker's log: (segment number, byte offset just after a record).
Position = tuple[int, int]


def rows_of(record: dict[str, Any]) -> int:
    """How many scored rows a record carries (only "req" records carry any): as a list of
    row objects (`rows`) or, cheaper to write and to roll, as lists by column (`columns`)."""
    if record.get("k") != "req":
        return 0
    return payload_rows(record)


def payload_rows(payload: dict[str, Any]) -> int:
    """`rows_of` a "req" record's payload (a list comprehension: on the request path)."""
    columns = payload.get("columns")
    if isinstance(columns, dict):
        return max([len(v) for v in columns.values() if type(v) is list], default=0)
    rows = payload.get("rows")
    return len(rows) if isinstance(rows, list) else 0


class Entry:
    """A durable record, the position just after it in its worker's log, its time and rows.

    The live log keeps a record's JSON and parses it only when it is rolled (off the request
    path), so what lands is what the log holds, byte for byte, as a replay would read it.
    """

    __slots__ = ("_body", "_record", "position", "rows", "t")

    def __init__(
        self,
        position: Position,
        t: float,
        rows: int,
        record: dict[str, Any] | None = None,
        body: bytes | None = None,
    ) -> None:
        self.position = position
        self.t = t
        self.rows = rows
        self._record = record
        self._body = body

    @classmethod
    def of(cls, record: dict[str, Any], position: Position) -> Entry:
        return cls(position, float(record["t"]), rows_of(record), record=record)

    @property
    def record(self) -> dict[str, Any]:
        if self._record is None:
            assert self._body is not None
            self._record = _loads(self._body)
            self._body = None
        return self._record


def _jsonable(value: Any) -> Any:
    """JSON for what a scored frame holds besides Python scalars (numpy, pandas, dates)."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, np.datetime64):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a logged value of type {type(value).__name__} is not JSON: {value!r}")


def _loads(body: bytes) -> Any:
    """orjson's parse, or the standard library's for what orjson refuses (a NaN token).

    Raises:
        ValueError: neither reads it.
    """
    try:
        return orjson.loads(body)
    except ValueError:
        return json.loads(body)


def payload_json(payload: dict[str, Any]) -> bytes:
    """A record's payload (everything but its kind and time) as a compact JSON object.

    orjson, on the request path: a 1,000-row record encodes in a tenth of `json.dumps`'s time.
    A NaN or an infinity is written as null, as the landed files hold it.
    """
    return orjson.dumps(payload, default=_jsonable, option=orjson.OPT_SERIALIZE_NUMPY)


def encode(kind: str, t: float, payload: bytes) -> bytes:
    """One record as a checksummed line: its kind and time first, then the JSON `payload`
    (encoded beforehand, so that only this cheap step runs where records are ordered)."""
    head = b'{"k":"%s","t":%s' % (kind.encode(), repr(t).encode())
    body = head + (b"}" if payload == b"{}" else b"," + payload[1:])
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode(line: bytes) -> dict[str, Any] | None:
    """The record of a complete line (with its newline), or None when it is torn or corrupt."""
    if len(line) < 11 or not line.endswith(b"\n") or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = _loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def segment_name(number: int) -> str:
    return f"{number:010d}{SUFFIX}"


def segments(folder: Path) -> list[tuple[int, Path]]:
    """A worker folder's segments, oldest first."""
    found = []
    for path in folder.glob(f"*{SUFFIX}"):
        if path.stem.isdigit():
            found.append((int(path.stem), path))
    return sorted(found)


def read_entries(folder: Path, after: Position = (0, 0)) -> Iterator[Entry]:
    """Every complete record of a worker folder that lies after `after`, in log order; each
    segment is read up to its first torn or corrupt line."""
    for number, path in segments(folder):
        if number < after[0]:
            continue
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            end = data.find(b"\n", offset)
            if end < 0:
                break  # cut short by a kill: never acknowledged
            record = decode(data[offset : end + 1])
            if record is None:
                break
            offset = end + 1
            if (number, offset) > after:
                yield Entry.of(record, (number, offset))


def fsync_dir(folder: Path) -> None:
    """Make a created, renamed or deleted name in `folder` survive a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def try_lock(folder: Path, wait: bool = False) -> int | None:
    """An open descriptor holding the exclusive lock of a worker folder (created if absent),
    or None when another live process holds it. The kernel releases it when its holder dies,
    so a dead worker's folder can be taken over at once."""
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # A recovering process may have removed the folder between our open and our lock: the
        # lock we hold is then on a file nobody else will open again; take a fresh one.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            # Who holds it: a roll process inherits the lock, and outlives its server by a
            # moment when the server is killed (`owner_is_dead`).
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{socket.gethostname()} {os.getpid()}".encode(), 0)
            return fd
        os.close(fd)


def owner_is_dead(folder: Path) -> bool:
    """Whether the process that took a folder's lock is gone (this host's, no longer running
    or a zombie): a lock still held is then held by its roll process, which is exiting."""
    try:
        host, pid = (folder / LOCK_NAME).read_text().split()
        number = int(pid)
    except (OSError, ValueError):
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    try:  # alive, or a zombie not reaped yet (Linux says which)
        stat = Path(f"/proc/{number}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def take_lock(folder: Path, timeout: float) -> int | None:
    """`try_lock`, and when the lock's owner is dead, wait up to `timeout` for its roll process
    to let go."""
    fd = try_lock(folder)
    if fd is not None or not owner_is_dead(folder):
        return fd
    deadline = time.monotonic() + timeout
    while fd is None and time.monotonic() < deadline:
        time.sleep(0.02)
        fd = try_lock(folder)
    return fd


def unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)

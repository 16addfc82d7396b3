"""The endpoint's prediction log: every answer appended to a write-ahead log before it is sent,
then rolled into batch files in the loop's landing folder (`roller.py`).

`WalSink` is what the server calls: `start()`, `record(kind, payload)` (or `await
arecord(...)`) which returns once the record is safe, `backlog()`, `close()`.

Safe means one of two things (`serving.flush_ms`):

- `flush_ms > 0` (the default, 50): the record is written to the log file (one `write`, in the
  kernel) before `record` returns, so it survives the server being killed (SIGKILL, a crash, an
  out-of-memory kill); a background thread fsyncs every `flush_ms`, so a machine losing power
  loses at most that much. Writing costs a few microseconds: the answer does not wait for a disk.
- `flush_ms == 0`: the record is also fsynced before `record` returns (it survives a power cut).
  Writes are group-committed: records appended while an fsync is under way share the next one,
  so concurrent requests cost one fsync per round, not one each.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from mlops_loop.core.errors import InvalidConfigError, MlopsLoopError
from mlops_loop.serving.landed import Kind, LandedSchema, reference_types
from mlops_loop.serving.request import RequestError, table_of
from mlops_loop.serving.roll_process import ProcessRoller, RollProcessError
from mlops_loop.serving.roller import FolderRoller, Roller, position
from mlops_loop.serving.wal_format import (
    Entry,
    Position,
    encode,
    fsync_dir,
    payload_json,
    payload_rows,
    segment_name,
    segments,
    take_lock,
    try_lock,
    unlock,
)

if TYPE_CHECKING:
    from mlops_loop.core.config import ColumnsConfig, LoopConfig

_WORKER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KINDS = ("start", "hb", "req", "err", "shadow")
SEGMENT_BYTES = 64 << 20


class WalError(MlopsLoopError, OSError):
    """The prediction log cannot be written (disk full, folder gone) or is not open."""


def default_worker_id() -> str:
    """`<hostname>-<pid>`, with any character a batch key may not hold replaced."""
    raw = f"{socket.gethostname()}-{os.getpid()}"
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in raw)


class WalSink:
    """The prediction log of one server process (see the module docstring).

    Args:
        log_dir: Folder of every worker's log; this process writes `<log_dir>/<worker_id>/`.
        landing_dir: The loop's landing folder, where batch files are rolled.
        worker_id: This process's name in file names; default `<hostname>-<pid>`.
        columns: The loop's `columns` config: feature, id, timestamp and prediction names,
            and the private columns masked before anything is written.
        flush_ms: Flush period; 0 fsyncs before each record is acknowledged.
        batch_rows: A batch file is rolled every this many rows ...
        batch_seconds: ... or this many seconds after the first record it covers.
        heartbeat_seconds: A heartbeat record is logged this often (availability).
        shadow: Landed files carry the challenger's `shadow_*` columns.
        types: Kinds ("int", "float", "string", "bool", "datetime") of categorical and id
            columns, as the reference has them; others default to string.
        clock: Epoch seconds now; records are stamped with it.
        roll_in: "process" (a roll process beside this one, `roll_process.py`: rolling then
            never holds this process's interpreter lock) or "thread" (a thread of this one).
    """

    #: Rows are masked here (`_append`): the endpoint hands them over unmasked (sink.py).
    masks_private = True
    #: A request's body may be handed over as its bytes (`scoring.logged_payload`).
    keeps_bodies = True

    def __init__(
        self,
        log_dir: str | Path,
        landing_dir: str | Path,
        worker_id: str | None = None,
        *,
        columns: ColumnsConfig,
        flush_ms: int = 50,
        batch_rows: int = 10_000,
        batch_seconds: float = 300.0,
        heartbeat_seconds: float = 1.0,
        shadow: bool = False,
        types: Mapping[str, Kind] | None = None,
        segment_bytes: int = SEGMENT_BYTES,
        clock: Callable[[], float] = time.time,
        roll_in: str = "process",
    ) -> None:
        self.log_dir = Path(log_dir)
        self.landing_dir = Path(landing_dir)
        self.worker_id = worker_id or default_worker_id()
        if not _WORKER.match(self.worker_id):
            raise InvalidConfigError(
                f"worker id {self.worker_id!r} cannot name batch files: use letters, digits, "
                "'.', '_' and '-' (at most 64)"
            )
        self.folder = self.log_dir / self.worker_id
        if roll_in not in ("process", "thread"):
            raise InvalidConfigError(f"roll_in is {roll_in!r}; expected 'process' or 'thread'")
        if roll_in == "process" and clock is not time.time:
            raise InvalidConfigError(
                "a roll process keeps the machine's time: give roll_in='thread' with a clock"
            )
        self.roll_in = roll_in
        self.flush_ms = flush_ms
        self.batch_rows = batch_rows
        self.batch_seconds = batch_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.segment_bytes = segment_bytes
        self.clock = clock
        self.schema = LandedSchema.build(columns, types, shadow, heartbeat_seconds)
        self._private_json = [orjson.dumps(c) for c in self.schema.privacy.private]
        self._lock = threading.Lock()
        self._durable_cond = threading.Condition(self._lock)
        self._wake = threading.Condition(self._lock)
        self._flush_lock = threading.Lock()
        self._buffer: list[tuple[bytes, float, int]] = []  # line, time, rows
        self._buffer_rows = 0
        self._seq = 0  # records appended
        self._durable = 0  # records written (and fsynced, with flush_ms 0)
        self._dirty = False  # written since the last fsync
        self._waiters: deque[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self._last_us = 0
        self._fd: int | None = None
        self._segment = 0
        self._offset = 0
        self._rotate = False
        self._state = "new"  # new -> open -> closing -> closed
        self._failure: BaseException | None = None
        self._lock_fd: int | None = None
        self._flusher: threading.Thread | None = None
        self._roller: Roller | ProcessRoller | None = None
        self.recovered: list[Path] = []

    @classmethod
    def from_config(cls, config: LoopConfig, worker_id: str | None = None) -> WalSink:
        """The sink `config.serving` describes; the log folder defaults to
        `<state_dir>/serving/wal` and batch files go to `sources.landing`.

        Raises:
            InvalidConfigError: private columns are hashed and the salt variable is unset.
        """
        s = config.serving
        return cls(
            s.log_dir or Path(config.state_dir) / "serving" / "wal",
            config.sources.landing,
            worker_id,
            columns=config.columns,
            flush_ms=s.flush_ms,
            batch_rows=s.batch_rows,
            batch_seconds=s.batch_seconds,
            heartbeat_seconds=s.heartbeat_seconds,
            shadow=s.shadow,
            types=reference_types(config),
            roll_in=s.roll_in,
        )

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Land every complete record any dead worker (this one included) left in the log,
        then open a new segment and start the flusher and the roller.

        Raises:
            WalError: another live process already writes under this worker id.
        """
        if self._state != "new":
            raise WalError(f"the prediction log of worker {self.worker_id!r} was started once")
        self._lock_fd = try_lock(self.folder)
        if self._lock_fd is None:
            raise WalError(
                f"worker id {self.worker_id!r} is in use by another live process writing "
                f"{self.folder}; expected one process per worker id"
            )
        try:
            prev_t = self._recover()
            own = FolderRoller(self.folder, self.landing_dir, self.schema)
            numbers = [n for n, _ in segments(self.folder)]
            self._segment = max([*numbers, position(own.state)[0]])
            self._open_segment(self._segment + 1)
            if prev_t is not None:
                self._last_us = round(prev_t * 1e6)
            if self.roll_in == "process":
                self._roller = ProcessRoller(
                    own, self.batch_rows, self.batch_seconds, self._lock_fd, self._rolled
                )
            else:
                self._roller = Roller(
                    own, self.batch_rows, self.batch_seconds, self.clock, self._rolled
                )
            self._state = "open"
            self._append("start", {"prev_t": prev_t} if prev_t is not None else {})
            self._flush()
            self._roller.start()
            self._flusher = threading.Thread(target=self._flush_loop, name="wal-flusher")
            self._flusher.daemon = True
            self._flusher.start()
        except BaseException:
            self._state = "closed"
            unlock(self._lock_fd)
            raise

    def _recover(self) -> float | None:
        """Replay this folder and every unlocked (dead) worker folder; the latest record
        time found, so that a restart's gap counts as time down."""
        last: list[float] = []
        own = FolderRoller(self.folder, self.landing_dir, self.schema)
        self.recovered += own.replay(self.batch_rows, self.batch_seconds)
        if (t := own.last_time()) is not None:
            last.append(t)
        own.drop_segments(1 << 62)
        for folder in sorted(p for p in self.log_dir.iterdir() if p.is_dir()):
            if folder == self.folder:
                continue
            fd = take_lock(folder, timeout=30.0)
            if fd is None:
                continue  # a live process writes it
            try:
                dead = FolderRoller(folder, self.landing_dir, self.schema)
                self.recovered += dead.replay(self.batch_rows, self.batch_seconds)
                if (t := dead.last_time()) is not None:
                    last.append(t)
                dead.remove()
            finally:
                unlock(fd)
        return max(last) if last else None

    def close(self) -> None:
        """Stop accepting records, flush, land everything logged and release the folder.

        Raises:
            WalError: the log could not be written or rolled; what was not landed stays in
                the log for the next start.
        """
        with self._lock:
            if self._state != "open":
                return
            self._state = "closing"
            self._wake.notify_all()
        assert self._roller is not None and self._lock_fd is not None
        try:
            if self._flusher is not None:
                self._flusher.join()
            self._flush()
            self._sync()
            self._roller.finish()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._roller.folder.drop_segments(1 << 62)
        except (OSError, RollProcessError) as e:
            raise WalError(f"closing the prediction log in {self.folder} failed: {e}") from e
        finally:
            self._state = "closed"
            unlock(self._lock_fd)
        if self._failure is not None:
            raise WalError(f"the prediction log in {self.folder} failed") from self._failure

    def backlog(self) -> int:
        """Rows logged and not yet landed."""
        with self._lock:
            buffered = self._buffer_rows
        return buffered + (self._roller.rows if self._roller else 0)

    # -- writing ----------------------------------------------------------------------------
    def record(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Log one record; returns once it is written (`flush_ms > 0`) or written and fsynced
        (`flush_ms == 0`): see the module's docstring.

        Raises:
            WalError: the log is not open, or writing it failed.
        """
        seq = self._append(kind, payload)
        self._flush(seq, sync=self.flush_ms == 0)

    async def arecord(self, kind: str, payload: Mapping[str, Any]) -> None:
        """`record` for an asyncio server. With `flush_ms > 0` it writes in the caller's
        thread (a `write` of one line, no disk wait); with 0 it waits for the group fsync
        without blocking the event loop."""
        if self.flush_ms > 0:
            self.record(kind, payload)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._append(kind, payload, (loop, future))
        await future

    def _append(
        self,
        kind: str,
        payload: Mapping[str, Any],
        waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None,
    ) -> int:
        if kind not in KINDS:
            raise WalError(f"record kind {kind!r} is not one of {list(KINDS)}")
        body = {k: v for k, v in payload.items() if k not in ("k", "t")}
        if isinstance(body.get("request"), bytes):
            self._keep_request(body)
        # Never a raw private value in the log.
        if isinstance(body.get("rows"), list):
            body["rows"] = self.schema.privacy.mask(body["rows"])
        if isinstance(body.get("columns"), dict):
            body["columns"] = self.schema.privacy.mask_columns(body["columns"])
        data = payload_json(body)
        rows = payload_rows(body) if kind == "req" else 0
        with self._lock:
            if self._state != "open":
                raise WalError(
                    f"the prediction log of worker {self.worker_id!r} is not open "
                    f"(state {self._state}); start() it first, or it was closed"
                )
            if self._failure is not None:
                raise WalError(f"the prediction log in {self.folder} failed") from self._failure
            # Strictly increasing times: a batch file's name comes from its first record's.
            t_us = max(round(self.clock() * 1e6), self._last_us + 1)
            self._last_us = t_us
            t = t_us / 1e6
            self._buffer.append((encode(kind, t, data), t, rows))
            self._buffer_rows += rows
            self._seq += 1
            if waiter is not None:
                self._waiters.append((self._seq, *waiter))
            if self.flush_ms == 0:
                # The flusher waits for records to write. With flush_ms > 0 the caller writes
                # its own, and waking the fsync thread per record took half of the log's
                # interpreter-lock samples on one-row requests.
                self._wake.notify()
            return self._seq

    def _keep_request(self, body: dict[str, Any]) -> None:
        """A "req" record's request body (`scoring.logged_payload`), kept as its bytes came
        when it is one line naming no private column; otherwise its columns join the record's
        `columns`, to be masked like any other."""
        raw: bytes = body["request"]
        if b"\n" not in raw and not any(name in raw for name in self._private_json):
            body["request"] = orjson.Fragment(raw)
            return
        try:
            inputs = table_of(orjson.loads(raw)).columns
        except (ValueError, RequestError) as e:
            raise WalError(f"a logged request body is not a scoring request: {e}") from e
        del body["request"]
        names = [n for n, _ in self.schema.columns if n in inputs]
        body["columns"] = {**{n: inputs[n] for n in names}, **(body.get("columns") or {})}

    def _open_segment(self, number: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / segment_name(number)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fsync_dir(self.folder)  # the new name must survive as long as what it will hold
        self._segment, self._offset = number, 0

    def _rolled(self, upto: Position) -> None:
        """A range up to `upto` has landed: start a new segment so this one can go next."""
        if upto[0] == self._segment:
            self._rotate = True

    def _flush(self, until: int | None = None, sync: bool = True) -> None:
        """Write everything appended, and fsync it with `sync` (group commit); with `until`,
        nothing when that record is written already."""
        with self._flush_lock:
            with self._lock:
                if until is not None and self._durable >= until:
                    return
                if self._failure is not None:
                    raise WalError(f"the prediction log in {self.folder} failed") from (
                        self._failure
                    )
                batch, self._buffer = self._buffer, []
                self._buffer_rows = 0
                upto = self._seq
            if not batch:
                return
            try:
                if self._rotate or self._offset >= self.segment_bytes:
                    self._rotate = False
                    if self._fd is not None and self._dirty:
                        os.fdatasync(self._fd)  # the old segment is complete on disk first
                    self._open_segment(self._segment + 1)
                assert self._fd is not None
                data = memoryview(b"".join(line for line, _, _ in batch))
                while data:
                    data = data[os.write(self._fd, data) :]
                if sync:
                    os.fdatasync(self._fd)
                self._dirty = not sync
            except OSError as e:
                self._fail(e)
                raise WalError(f"writing the prediction log in {self.folder} failed: {e}") from e
            roller = self._roller
            assert roller is not None
            keep = isinstance(roller, Roller)  # a roll process reads the records from the log
            entries = []
            offset = self._offset
            for line, t, rows in batch:
                offset += len(line)
                body = line[9:-1] if keep else None
                entries.append(Entry((self._segment, offset), t, rows, body=body))
            self._offset = offset
            roller.feed(entries)
            with self._lock:
                self._durable = upto
                self._durable_cond.notify_all()
                ready = []
                while self._waiters and self._waiters[0][0] <= upto:
                    ready.append(self._waiters.popleft())
            for _, loop, future in ready:
                _resolve(loop, future, None)

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            self._failure = error
            self._durable_cond.notify_all()
            waiters, self._waiters = list(self._waiters), deque()
        for _, loop, future in waiters:
            _resolve(loop, future, WalError(f"writing the prediction log failed: {error}"))

    def _sync(self) -> None:
        """fsync what writers wrote since the last one, without holding them up: the fsync
        runs on a duplicate of the file descriptor, outside the lock they write under."""
        with self._flush_lock:
            if self._fd is None or not self._dirty:
                return
            fd, self._dirty = os.dup(self._fd), False
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def _sync_loop(self) -> None:
        """flush_ms > 0: writers write; this thread fsyncs every period and beats."""
        period = self.flush_ms / 1000
        next_beat = time.monotonic() + self.heartbeat_seconds
        while True:
            with self._lock:
                timeout = max(0.0, min(period, next_beat - time.monotonic()))
                self._wake.wait_for(lambda: self._state != "open", timeout)
                closing = self._state != "open"
            try:
                if not closing and time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat_seconds
                    self.record("hb", {})
                self._sync()
            except WalError:
                return  # record() raises from now on
            except Exception as e:
                self._fail(e)
                return
            if closing:
                return

    def _flush_loop(self) -> None:
        if self.flush_ms > 0:
            self._sync_loop()
            return
        period = self.flush_ms / 1000
        last_flush = float("-inf")
        next_beat = time.monotonic() + self.heartbeat_seconds
        while True:
            with self._lock:
                while not self._buffer and self._state == "open":
                    wait = next_beat - time.monotonic()
                    if wait <= 0:
                        break
                    self._wake.wait(wait)
                closing = self._state != "open"
            if not closing and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.heartbeat_seconds
                self._append("hb", {})
            # At most one fsync per period: what arrives meanwhile shares the next one.
            wait = last_flush + period - time.monotonic()
            if wait > 0 and not closing:
                with self._lock:
                    self._wake.wait_for(lambda: self._state != "open", wait)
            last_flush = time.monotonic()
            try:
                self._flush()
            except WalError:
                return  # every waiter has been told; record() now raises
            except Exception as e:
                self._fail(e)
                return
            if closing:
                return


def _resolve(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], error: BaseException | None
) -> None:
    def settle() -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # the caller's event loop is gone; nobody waits any more

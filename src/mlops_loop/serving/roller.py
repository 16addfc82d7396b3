"""Rolling the prediction log into parquet batch files in the landing folder, exactly once.

A roll lands the records of one range of a worker's log as one file and then records, in
`<worker folder>/rolled.json`, the position it covered. Before landing it records its intent
(the file's name and the range's end): a process killed anywhere in between is replayed by the
next start to the same range under the same name, so `os.replace` rewrites that one file with
the same rows instead of landing a second copy. Names come from the range's first record
(its time and the worker), so they sort by time and never depend on when the roll ran.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mlops_loop.serving.landed import LandedSchema, build_table, file_name
from mlops_loop.serving.wal_format import (
    LOCK_NAME,
    Entry,
    Position,
    fsync_dir,
    read_entries,
    segments,
)

STATE_NAME = "rolled.json"
log = logging.getLogger(__name__)


def read_state(folder: Path) -> dict[str, Any]:
    """`{"position": [segment, offset], "t": last rolled record's time | None,
    "pending": {"name": ..., "end": [segment, offset]} | None}`."""
    try:
        state = json.loads((folder / STATE_NAME).read_text())
    except FileNotFoundError:
        state = {}
    return {
        "position": list(state.get("position") or [0, 0]),
        "t": state.get("t"),
        "pending": state.get("pending"),
    }


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically and durably."""
    tmp = folder / f".{STATE_NAME}.tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / STATE_NAME)
    fsync_dir(folder)


def position(state: dict[str, Any]) -> Position:
    segment, offset = state["position"]
    return int(segment), int(offset)


def land(
    landing: Path, name: str, schema: LandedSchema, worker: str, entries: Sequence[Entry]
) -> Path:
    """Write one batch file atomically: a hidden `.part` name the landing sensor skips, fsync,
    rename, fsync of the folder."""
    landing.mkdir(parents=True, exist_ok=True)
    table = build_table(schema, worker, entries)
    part = landing / f".{name}.part"
    with open(part, "wb") as f:
        pq.write_table(table, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, landing / name)
    fsync_dir(landing)
    return landing / name


def chunks(
    entries: Sequence[Entry], batch_rows: int, batch_seconds: float, final: bool
) -> tuple[list[list[Entry]], list[Entry]]:
    """Split records into the ranges to land and the remainder still to wait for.

    A range closes once it holds `batch_rows` rows, or before a record that comes
    `batch_seconds` after its first row; a range without rows never closes (no empty file).
    With `final`, the remainder lands too: rows of its own, or folded into the last range
    (a rowless tail alone is returned as a range for the caller to skip).
    """
    out: list[list[Entry]] = []
    current: list[Entry] = []
    rows = 0
    since = 0.0  # time of the range's first row: idle heartbeats do not age a range
    for e in entries:
        if rows and e.t - since >= batch_seconds:
            out.append(current)
            current, rows = [], 0
        current.append(e)
        n = e.rows
        if n and not rows:
            since = e.t
        rows += n
        if rows >= batch_rows:
            out.append(current)
            current, rows = [], 0
    if final and current:
        if rows or not out:
            out.append(current)
        else:
            out[-1] = out[-1] + current
        current = []
    return out, current


class FolderRoller:
    """Lands one worker folder's records and keeps its state file; not thread-safe."""

    def __init__(self, folder: Path, landing: Path, schema: LandedSchema) -> None:
        self.folder = folder
        self.worker = folder.name
        self.landing = landing
        self.schema = schema
        self.state = read_state(folder)

    def roll(self, entries: Sequence[Entry]) -> Path | None:
        """Land `entries` (one range, in log order) as one file, or skip them when they hold
        no row; then record how far the log has landed."""
        if not entries:
            return None
        end = list(entries[-1].position)
        path = None
        if any(e.rows for e in entries):
            name = file_name(self.worker, entries[0].record)
            self.state = {**self.state, "pending": {"name": name, "end": end}}
            write_state(self.folder, self.state)
            path = land(self.landing, name, self.schema, self.worker, entries)
        self.state = {"position": end, "t": entries[-1].t, "pending": None}
        write_state(self.folder, self.state)
        return path

    def finish_pending(self) -> Path | None:
        """Redo a roll a killed process left between its intent and its state: the same
        range, under the same name."""
        pending = self.state.get("pending")
        if not pending:
            return None
        end = (int(pending["end"][0]), int(pending["end"][1]))
        entries = [e for e in read_entries(self.folder, position(self.state)) if e.position <= end]
        path = None
        if entries:
            path = land(self.landing, pending["name"], self.schema, self.worker, entries)
        last_t = entries[-1].t if entries else self.state.get("t")
        self.state = {"position": list(end), "t": last_t, "pending": None}
        write_state(self.folder, self.state)
        return path

    def replay(self, batch_rows: int, batch_seconds: float) -> list[Path]:
        """Land every complete record of the folder not landed yet (a dead process's tail)."""
        landed = [p for p in [self.finish_pending()] if p]
        entries = list(read_entries(self.folder, position(self.state)))
        ranges, _ = chunks(entries, batch_rows, batch_seconds, final=True)
        for r in ranges:
            path = self.roll(r)
            if path:
                landed.append(path)
        for part in self.landing.glob(f".served-*-{self.worker}.parquet.part"):
            part.unlink(missing_ok=True)  # a roll killed mid-write; redone above
        return landed

    def last_time(self) -> float | None:
        t = self.state.get("t")
        return float(t) if t is not None else None

    def drop_segments(self, upto: int) -> None:
        """Delete the segments numbered below `upto`: every record in them has landed."""
        for number, path in segments(self.folder):
            if number < upto:
                path.unlink(missing_ok=True)

    def remove(self) -> None:
        """Delete a dead worker's folder once all of it has landed (the caller holds its lock)."""
        self.drop_segments(1 << 62)
        (self.folder / STATE_NAME).unlink(missing_ok=True)
        (self.folder / LOCK_NAME).unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass  # something else appeared in it; leave it


class Roller:
    """The live roller of the running process: durable records are fed in, in log order, and
    a thread lands them every `batch_rows` rows or `batch_seconds` seconds."""

    def __init__(
        self,
        folder: FolderRoller,
        batch_rows: int,
        batch_seconds: float,
        clock: Callable[[], float],
        on_rolled: Callable[[Position], None] = lambda p: None,
        on_failure: Callable[[BaseException | None], None] = lambda e: None,
    ) -> None:
        self.folder = folder
        self.batch_rows = batch_rows
        self.batch_seconds = batch_seconds
        self.clock = clock
        self.on_rolled = on_rolled
        self.on_failure = on_failure
        self._pending: list[Entry] = []
        self._rows = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    @property
    def rows(self) -> int:
        with self._cond:
            return self._rows

    def feed(self, entries: Sequence[Entry]) -> None:
        with self._cond:
            self._pending.extend(entries)
            self._rows += sum(e.rows for e in entries)
            if self._rows >= self.batch_rows:
                self._cond.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wal-roller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    def _due(self) -> bool:
        if self._rows >= self.batch_rows:
            return True
        return bool(self._rows) and self._time_due(self._pending)

    def _run(self) -> None:
        tick = min(max(self.batch_seconds / 10, 0.01), 0.5)
        while True:
            with self._cond:
                if not self._stop and not self._due():
                    self._cond.wait(tick)
                if self._stop:
                    return
                if not self._due():
                    continue
            try:
                self.roll(final=False)
                if self.failure is not None:
                    self.failure = None
                    self.on_failure(None)
            except Exception as e:  # the landing folder may come back; retry, keep the log
                log.exception("rolling the prediction log into %s failed", self.folder.landing)
                self.failure = e
                self.on_failure(e)
                with self._cond:
                    self._cond.wait(1.0)

    def finish(self) -> None:
        """Stop the thread and land everything fed so far (a server's shutdown)."""
        self.stop()
        self.roll(final=True)

    def roll(self, final: bool) -> list[Path]:
        """Land what is due (with `final`, everything fed so far); the records stay in the
        log until their range has landed and its position is recorded."""
        with self._cond:
            entries = list(self._pending)
        ranges: list[list[Entry]] = []
        pending = self.folder.state.get("pending")
        if pending:  # an attempt that failed: land that same range again before any other
            end = (int(pending["end"][0]), int(pending["end"][1]))
            cut = next((i + 1 for i, e in enumerate(entries) if e.position == end), 0)
            ranges, entries = [entries[:cut]] if cut else [], entries[cut:]
        more, rest = chunks(entries, self.batch_rows, self.batch_seconds, final)
        ranges += more
        if not final and not ranges and rest and self._time_due(rest):
            ranges, rest = [rest], []
        landed = []
        for r in ranges:
            path = self.folder.roll(r)
            if path:
                landed.append(path)
            with self._cond:
                del self._pending[: len(r)]
                self._rows -= sum(e.rows for e in r)
            self.folder.drop_segments(r[-1].position[0])
            self.on_rolled(r[-1].position)
        return landed

    def _time_due(self, rest: Sequence[Entry]) -> bool:
        first = next((e for e in rest if e.rows), None)
        return first is not None and self.clock() - first.t >= self.batch_seconds

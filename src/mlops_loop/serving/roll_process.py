"""Rolling the prediction log in a process of its own, beside the server (`serving.roll_in:
process`, the default).

Building a batch file's Arrow columns from logged JSON and writing its parquet holds
Python's interpreter lock for milliseconds a file, in the server's process that lock is the
one its requests need. The roll process reads the log the server writes (`Tail`, from the
position `rolled.json` records) and lands it with the same `Roller` and the same exactly-once
protocol as the thread would (`roller.py`); only the process differs.

Between the two processes:

- the server starts it with `python -m mlops_loop.serving.roll_process`, the spec on its
  stdin's first line (folders, batch sizes, the landed schema; never the privacy salt: rows
  are masked before they are logged). The child inherits the folder's lock, so no other server
  can take the folder over while either of them lives;
- the child answers on stdout, a JSON object a line: `{"ready": true}`, then `{"upto":
  [segment, offset]}` after each landed range, `{"failure": "..."}` / `{"failure": null}` when
  a roll fails or succeeds again;
- `final` on its stdin: land everything logged, then exit 0. Its stdin closing without it
  means the server died: the child exits at once, and the next start replays the log;
- a child that dies while the server runs is started again; it resumes from `rolled.json`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from mlops_loop.serving.landed import LandedSchema, Privacy
from mlops_loop.serving.roller import FolderRoller, Roller, position
from mlops_loop.serving.wal_format import Entry, Position, decode, segments

log = logging.getLogger(__name__)
POLL_SECONDS = 0.05  # how often the log is read for new records
READY_SECONDS = 120.0


class RollProcessError(RuntimeError):
    """The roll process did not start, or did not land everything at shutdown."""


# -- the child --------------------------------------------------------------------------------
class Tail:
    """Reads the complete records a live writer appends to a worker folder's segments, from
    just after `after`, in log order."""

    def __init__(self, folder: Path, after: Position) -> None:
        self.folder = folder
        self.after = after
        self._number: int | None = None
        self._file: IO[bytes] | None = None
        self._buffer = b""
        self._offset = 0  # of the buffer's first byte in the segment

    def _next(self) -> tuple[int, Path] | None:
        for number, path in segments(self.folder):
            if self._number is None and number >= self.after[0]:
                return number, path
            if self._number is not None and number > self._number:
                return number, path
        return None

    def read(self) -> list[Entry]:
        """The records written since the last call that are complete. A segment is left once a
        later one exists (the writer starts one only when it is done with the last): what is
        left of it then is a torn record, never acknowledged."""
        out: list[Entry] = []
        while True:
            if self._file is None:
                found = self._next()
                if found is None:
                    return out
                self._number, path = found
                self._file = open(path, "rb")  # noqa: SIM115 - kept open while it grows
                start = self.after[1] if self._number == self.after[0] else 0
                self._file.seek(start)
                self._buffer, self._offset = b"", start
            data = self._file.read()
            if data:
                self._buffer += data
                out += self._parse()
                return out
            if self._next() is None:
                return out
            # A later segment exists, so this one is complete: read what came last, then go on.
            self._buffer += self._file.read()
            out += self._parse()
            self._file.close()
            self._file = None

    def _parse(self) -> list[Entry]:
        out = []
        assert self._number is not None
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            record = decode(self._buffer[start : end + 1])
            if record is None:
                break  # a corrupt line: nothing after it in this segment is read
            start = end + 1
            at = (self._number, self._offset + start)
            if at > self.after:
                out.append(Entry.of(record, at))
        self._buffer = self._buffer[start:]
        self._offset += start
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _schema_spec(schema: LandedSchema) -> dict[str, Any]:
    return {
        "columns": [list(c) for c in schema.columns],
        "predictions": [list(c) for c in schema.predictions],
        "shadow": schema.shadow,
        "private": list(schema.privacy.private),
        "privacy": schema.privacy.privacy,
        "heartbeat_seconds": schema.heartbeat_seconds,
    }


def _schema_of(spec: dict[str, Any]) -> LandedSchema:
    return LandedSchema(
        tuple((str(n), k) for n, k in spec["columns"]),
        tuple((str(n), k) for n, k in spec["predictions"]),
        bool(spec["shadow"]),
        Privacy(tuple(spec["private"]), str(spec["privacy"]), None),  # masked before logging
        float(spec["heartbeat_seconds"]),
    )


def child_main() -> int:
    """The roll process (see the module docstring)."""
    # Ctrl-C reaches the whole process group: the server's shutdown says when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = json.loads(sys.stdin.readline())
    folder, landing = Path(spec["folder"]), Path(spec["landing"])
    out = threading.Lock()

    def say(message: dict[str, Any]) -> None:
        with out:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    def failed(error: BaseException | None) -> None:
        say({"failure": None if error is None else f"{type(error).__name__}: {error}"})

    own = FolderRoller(folder, landing, _schema_of(spec["schema"]))
    roller = Roller(
        own,
        int(spec["batch_rows"]),
        float(spec["batch_seconds"]),
        time.time,
        lambda upto: say({"upto": list(upto)}),
        failed,
    )
    tail = Tail(folder, position(own.state))
    final = threading.Event()

    def watch() -> None:
        for line in sys.stdin:
            if line.strip() == "final":
                final.set()
                return
        os._exit(3)  # the server died: the next start replays what is not landed

    threading.Thread(target=watch, name="roll-stdin", daemon=True).start()
    roller.start()
    say({"ready": True})
    while not final.is_set():
        entries = tail.read()
        if entries:
            roller.feed(entries)
        else:
            final.wait(POLL_SECONDS)
    roller.stop()
    while more := tail.read():  # the server wrote everything before it said final
        roller.feed(more)
    roller.roll(final=True)
    tail.close()
    return 0


# -- the server's side ------------------------------------------------------------------------
def _child_env() -> dict[str, str]:
    """The server's environment, with this package importable however the server found it."""
    import mlops_loop

    root = str(Path(mlops_loop.__file__).resolve().parent.parent)
    paths = [root, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


class ProcessRoller:
    """The server's handle on its roll process: what `WalSink` calls instead of a `Roller`
    (`feed`, `rows`, `start`, `finish`, `failure`).

    Args:
        folder: The worker folder's roller (its folder, landing folder and schema are the
            child's; the child lands, this side only counts).
        batch_rows, batch_seconds: When a file is rolled.
        lock_fd: The folder's lock, held by the caller; the child inherits it.
        on_rolled: Called with the end of each landed range.
    """

    def __init__(
        self,
        folder: FolderRoller,
        batch_rows: int,
        batch_seconds: float,
        lock_fd: int,
        on_rolled: Callable[[Position], None] = lambda p: None,
    ) -> None:
        self.folder = folder
        self.spec = {
            "folder": str(folder.folder),
            "landing": str(folder.landing),
            "batch_rows": batch_rows,
            "batch_seconds": batch_seconds,
            "schema": _schema_spec(folder.schema),
        }
        self.lock_fd = lock_fd
        self.on_rolled = on_rolled
        self.failure: str | None = None
        self.restarts = 0
        self._lock = threading.Lock()
        self._written: deque[tuple[Position, int]] = deque()  # end of a write, rows up to it
        self._rows_written = 0
        self._rows_landed = 0
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._finishing = False
        self._was_ready = False
        self._ready = threading.Event()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def rows(self) -> int:
        """Rows written to the log and not landed yet."""
        with self._lock:
            return self._rows_written - self._rows_landed

    def feed(self, entries: Sequence[Entry]) -> None:
        """The server wrote these records (their positions and row counts are what counts
        here: the child reads the records themselves from the log)."""
        with self._lock:
            for e in entries:
                if e.rows:
                    self._rows_written += e.rows
                    self._written.append((e.position, self._rows_written))

    def start(self) -> None:
        """Start the child and wait until it reads the log.

        Raises:
            RollProcessError: it exited or said nothing within READY_SECONDS.
        """
        self._spawn()
        if not self._ready.wait(READY_SECONDS):
            self._stop_child()
            raise RollProcessError(
                f"the roll process for {self.folder.folder} did not start in {READY_SECONDS:.0f} s"
            )
        if self._proc is not None and self._proc.poll() is not None:
            raise RollProcessError(
                f"the roll process for {self.folder.folder} exited with code "
                f"{self._proc.returncode} at start; its error is on the server's stderr"
            )

    def _spawn(self) -> None:
        self._ready.clear()
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlops_loop.serving.roll_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=(self.lock_fd,),
            env=_child_env(),
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(self.spec) + "\n")
        proc.stdin.flush()
        self._proc = proc
        self._reader = threading.Thread(target=self._read, args=(proc,), name="roll-reader")
        self._reader.daemon = True
        self._reader.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("ready"):
                self._was_ready = True
                self._ready.set()
            elif "upto" in message:
                upto = (int(message["upto"][0]), int(message["upto"][1]))
                self._landed(upto)
                self.on_rolled(upto)
            elif "failure" in message:
                self.failure = message["failure"]
        proc.wait()
        self._ready.set()
        if self._finishing or not self._was_ready:
            return  # shutting down, or it never started: start() reports that
        log.error(
            "the roll process of %s exited with code %s; starting it again",
            self.folder.folder,
            proc.returncode,
        )
        time.sleep(1.0)
        if not self._finishing:
            self.restarts += 1
            self._spawn()

    def _landed(self, upto: Position) -> None:
        with self._lock:
            while self._written and self._written[0][0] <= upto:
                _, self._rows_landed = self._written.popleft()

    def finish(self, timeout: float = 600.0) -> None:
        """Land everything the log holds and wait for the child to exit.

        Raises:
            RollProcessError: it failed, or did not finish within `timeout`.
        """
        self._finishing = True
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is not None:  # died, and not started again yet: one more, to land
            if self._reader is not None:
                self._reader.join(timeout=10)
            self._spawn()
            self._ready.wait(READY_SECONDS)
            proc = self._proc
            assert proc is not None
        try:
            assert proc.stdin is not None
            proc.stdin.write("final\n")
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # it is gone: its exit code says more
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._stop_child()
            raise RollProcessError(
                f"the roll process for {self.folder.folder} did not finish in {timeout:.0f} s"
            ) from None
        if self._reader is not None:
            self._reader.join(timeout=10)
        if code != 0:
            raise RollProcessError(
                f"the roll process for {self.folder.folder} exited with code {code} while "
                "landing the last rows; they stay in the log for the next start"
            )

    def _stop_child(self) -> None:
        self._finishing = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


if __name__ == "__main__":
    sys.exit(child_main())

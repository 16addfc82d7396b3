"""The online endpoint's settings (`serving:` in the loop YAML): where it listens, how it follows
the champion alias, what it refuses, and how its prediction log is written."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    # The same base as core/config.py's; repeated so this module imports nothing of config.py.
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServingConfig(_Model):
    """`mlops-loop serve`: the endpoint that scores with `@champion` and logs what it served."""

    host: str = Field(
        default="127.0.0.1",
        description="Interface to bind; loopback unless told otherwise (0.0.0.0 for all).",
    )
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port to listen on.")
    workers: int = Field(
        default=1,
        ge=1,
        description="Server processes. With more than one, each keeps its own /metrics "
        "counters and its own prediction log (docs/serving.md).",
    )
    poll_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often the registry's champion (and challenger) alias is checked; a "
        "moved alias is loaded in the background and swapped in between requests.",
    )
    max_body_bytes: int = Field(
        default=8_000_000, ge=1, description="Request bodies larger than this are refused (413)."
    )
    max_rows: int = Field(
        default=100_000, ge=1, description="Requests with more rows than this are refused (413)."
    )
    log: bool = Field(
        default=True,
        description="Write every answered request to the prediction log, which lands as batch "
        "files in sources.landing for the loop to monitor.",
    )
    log_dir: Path | None = Field(
        default=None,
        description="Folder of the prediction log's write-ahead segments; default "
        "`<state_dir>/serving/wal`. Relative paths are taken from the config file's folder.",
    )
    flush_ms: int = Field(
        default=50,
        ge=0,
        description="Write-ahead log fsync period in milliseconds: a record is written (it "
        "survives the server being killed) before its answer, and fsynced within this period "
        "(a power cut loses at most that). 0: fsynced before answering, concurrent requests "
        "sharing one fsync (group commit).",
    )
    roll_in: Literal["process", "thread"] = Field(
        default="process",
        description="Where the log is rolled into batch files: a process of its own beside "
        "each server process (rolling never holds the server's interpreter lock), or a "
        "thread of the server.",
    )
    batch_rows: int = Field(
        default=10_000, ge=1, description="Roll a landed batch file every this many logged rows."
    )
    batch_seconds: float = Field(
        default=300.0,
        gt=0,
        description="... or every this many seconds, whichever comes first; never an empty file.",
    )
    heartbeat_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Heartbeat period of the prediction log (gaps measure the time down).",
    )
    shadow: bool = Field(
        default=False,
        description="Also score every request with `@challenger` when that alias exists, off "
        "the response path, and log its predictions beside the champion's.",
    )

    def wal_dir(self, state_dir: Path) -> Path:
        """The write-ahead log's folder: `log_dir`, or `<state_dir>/serving/wal`."""
        return self.log_dir if self.log_dir is not None else Path(state_dir) / "serving" / "wal"

"""The `serving` section of the loop configuration: the online endpoint and its prediction log."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServingConfig(_Model):
    """How the online endpoint serves the champion and logs what it served."""

    host: str = Field(default="127.0.0.1", description="Address the endpoint listens on.")
    port: int = Field(default=8080, description="Port the endpoint listens on.")
    workers: int = Field(default=1, description="Server processes.")
    poll_seconds: float = Field(
        default=10.0, description="How often the registry alias is checked."
    )
    max_body_bytes: int = Field(
        default=8_000_000, description="Request bodies above this are answered 413."
    )
    max_rows: int = Field(
        default=100_000, description="Requests with more rows than this are answered 413."
    )
    log: bool = Field(default=True, description="Write the prediction log at all.")
    log_dir: Path | None = Field(
        default=None, description="WAL folder; default `<state_dir>/serving/wal`."
    )
    flush_ms: int = Field(
        default=50,
        description="Prediction log fsync period in ms: each record is written before "
        "its answer (it survives a killed server) and fsynced within this period (a power "
        "cut loses at most this much); 0 fsyncs each record before answering.",
    )
    batch_rows: int = Field(
        default=10_000, description="Roll a batch file every this many logged rows ..."
    )
    batch_seconds: float = Field(
        default=300.0,
        description="... or every this many seconds (whichever first; never an empty file).",
    )
    heartbeat_seconds: float = Field(
        default=1.0, description="WAL heartbeat period (availability)."
    )
    shadow: bool = Field(
        default=False, description="Also score with @challenger, off the response path."
    )

"""What every DAG of one loop shares: the id prefix, start date, failure callback."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlops_loop.airflow.context import failure_callback
from mlops_loop.airflow.source import LoopSource

START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DagArgs:
    prefix: str
    source: LoopSource
    tags: tuple[str, ...] = ("mlops-loop",)

    def common(self) -> dict[str, Any]:
        """Keyword arguments of every DAG: a failed task is recorded in MLflow and notified
        as in the Dagster binding; nothing is retried behind the loop's back."""
        return {
            "start_date": START,
            "catchup": False,
            "max_active_runs": 1,
            "tags": list(self.tags),
            "default_args": {
                "retries": 0,
                "on_failure_callback": failure_callback(self.source),
            },
        }

"""The quality gate on a stored batch: the `quality_gate` check of `monitored_batch`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.errors import DataError
from mlops_loop.core.steps.ingest import Ingested, big_batch, serving_columns
from mlops_loop.core.steps.run import StepContext, step_run
from mlops_loop.core.store import LoopStore
from mlops_loop.core.tracking import (
    config_params,
    log_dataset,
    log_json,
    log_metrics,
    log_params,
    log_text,
)

if TYPE_CHECKING:
    from mlops_loop.core.quality import QualityResult


#: Accepted batches whose sizes the row count is judged by.
ROW_HISTORY_BATCHES = 50


def accepted_rows(store: LoopStore, key: str) -> list[int]:
    """Row counts of the latest accepted batches (other than `key`), from their ingest records."""
    sizes = []
    for k in store.accepted_keys():
        ingested = store.batch_json(k, "ingest") if k != key else None
        if ingested and ingested.get("rows") is not None:
            sizes.append(int(Ingested.from_dict(ingested).rows))
    return sizes[-ROW_HISTORY_BATCHES:]


def check_quality(config: LoopConfig, key: str, ctx: StepContext | None = None) -> QualityResult:
    """Validate a stored batch against the suite learnt from the reference.

    A failed batch is quarantined: its verdict is recorded, and nothing downstream (training,
    baselines) ever reads it until a re-validation passes. A served batch is checked without
    the columns serving adds (`served.reserved_columns`): they are neither unexpected columns
    nor features, so a served batch with clean features passes as its features alone would. Its
    private columns, hashed by serving, are left out of the check too.
    """
    from mlops_loop.core.quality import validate_batch
    from mlops_loop.core.quality.bounds import with_accepted_rows

    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    suite = store.read_json(store.snapshot_dir / "suite.json")
    if suite is None:
        raise DataError("the reference snapshot has no quality suite; materialize it first")
    ingested = Ingested.from_dict(store.batch_json(key, "ingest") or {})

    # The row count is judged by the sizes of the batches accepted so far (the latest ones).
    suite = with_accepted_rows(suite, accepted_rows(store, key))
    big = big_batch(config, store, key)
    ignore = serving_columns(config, store, key)
    masked = set(config.columns.private) & set(ignore)
    if masked:
        # Serving hashed these: the reference's checks of their raw values do not apply.
        suite = {
            **suite,
            "expectations": [e for e in suite["expectations"] if e.get("column") not in masked],
        }
    if ingested.truncated:
        batch, result = None, _cut_short(ingested.truncated)
    elif big is not None:
        from mlops_loop.core.quality.chunked import validate_parquet

        batch = None
        result = validate_parquet(
            big,
            suite,
            config.operations.read_chunk_rows,
            set(config.columns.private),
            ignore=frozenset(ignore),
        )
    else:
        batch = store.batch(key)
        result = validate_batch(None, batch.drop(columns=ignore), config=config, suite=suite)
    rows = int(result.statistics["rows"])
    with step_run(config, ctx, "quality", key):
        log_json(result.to_dict(), "quality/result.json")
        log_text(result.to_html(), "quality/report.html")
        at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        docs = result.data_docs_html(batch=key, at=at)
        if docs:
            log_text(docs, "quality/data_docs.html")
        log_params({"loop": config.name, "batch.rows": rows, **config_params(config, "quality")})
        log_metrics(
            {
                "quality_success": int(result.success),
                "quality_incidents": len(result.incidents),
                "batch_rows": rows,
            }
        )
        if batch is not None:
            log_dataset(
                batch,
                name=f"batch-{key}",
                context="monitoring",
                source=key,
                target=config.columns.target,
                columns=config.columns,
            )
        else:  # a dataset record would profile the whole frame: the digest stands for it
            log_params({"batch.digest": ingested.digest})
    # Recorded once MLflow has it: with the tracking server down, no verdict is left behind
    # (and no batch accepted for training) that the system of record never saw.
    store.write_batch_json(key, "quality", result.to_dict())
    (store.batch_dir(key) / "quality.html").write_text(result.to_html())
    return result


def _cut_short(reason: str) -> QualityResult:
    """The verdict on a batch whose file was cut short: quarantined, for that reason alone."""
    from mlops_loop.core.quality import Incident, QualityResult

    incident = Incident(
        kind="truncated_file",
        column=None,
        severity="error",
        observed="a file that ends mid-row or mid-record",
        expected="a complete batch file",
        message=reason,
    )
    return QualityResult(
        success=False,
        incidents=[incident],
        statistics={"rows": 0, "columns": 0, "expectations_evaluated": 0},
    )

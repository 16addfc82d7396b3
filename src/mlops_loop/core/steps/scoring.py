"""Scoring with whatever model `champion` points at now: `scored_batch` and the CLI's predict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.errors import RegistryError
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.steps.ingest import big_batch
from mlops_loop.core.steps.result import StepResult
from mlops_loop.core.steps.run import StepContext, step_run
from mlops_loop.core.store import LoopStore
from mlops_loop.core.tracking import log_json, log_metrics
from mlops_loop.core.training import attach_scores, predict_scores


@dataclass(frozen=True)
class Scored(StepResult):
    """A batch scored (`<batch>/scored.json`; the scores are in `scored.parquet`)."""

    champion_version: int
    rows: int
    operations: dict[str, Any] = field(default_factory=dict)  # timings, latency, CPU, memory


def predict_frame(
    config: LoopConfig, frame: pd.DataFrame, triggered_by: str = "predict"
) -> tuple[pd.DataFrame, int]:
    """Score `frame` with the model `champion` points at now: (scored copy, version used).

    The alias is resolved at call time, so a rollback takes effect on the next call without
    any redeploy. An alias moved outside the loop is recorded in the history first.

    Raises:
        RegistryError: the model has no champion.
        DataError: a feature column is missing or malformed.
    """
    model, version = serving_model(config, triggered_by)
    scored = frame.copy()
    attach_scores(scored, predict_scores(model, frame, config.columns), config.columns)
    return scored, version


def serving_model(config: LoopConfig, triggered_by: str) -> tuple[Any, int]:
    """(model, version) that `champion` points at now, after recording an alias moved outside
    the loop.

    Raises:
        RegistryError: the model has no champion.
    """
    registry = MlflowRegistry.from_config(config)
    registry.reconcile(triggered_by)
    version = registry.champion()
    if version is None:
        raise RegistryError(
            f"model {config.mlflow.registered_model!r} has no champion; "
            "materialize baseline_model first"
        )
    return registry.load(version), version


def score_batch(config: LoopConfig, key: str, ctx: StepContext | None = None) -> Scored:
    """Score a batch with the model the `champion` alias points at right now."""
    from mlops_loop.core.operations import flat_metrics, measure_usage, timed_scoring

    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    with step_run(config, ctx, "score", key, system_metrics=True):
        with measure_usage() as usage:
            big = big_batch(config, store, key)
            model, version = serving_model(config, ctx.triggered_by)

            def score(part: pd.DataFrame) -> np.ndarray:
                return predict_scores(model, part, config.columns)

            out = store.batch_dir(key) / "scored.parquet"
            if big is not None:
                from mlops_loop.core.operations import score_parquet

                figures = score_parquet(
                    score,
                    big,
                    out,
                    config.columns.prediction,
                    chunk_rows=config.operations.read_chunk_rows,
                    call_rows=config.operations.chunk_rows,
                    single_rows=config.operations.single_row_samples,
                    assign=lambda part, scores: attach_scores(part, scores, config.columns),
                )
            else:
                frame = store.batch(key)
                scores, figures = timed_scoring(
                    score,
                    frame,
                    chunk_rows=config.operations.chunk_rows,
                    single_rows=config.operations.single_row_samples,
                )
                scored = frame.copy()
                attach_scores(scored, scores, config.columns)
                store.write_frame(out, scored)
        rows = int(figures["rows"])
        info = Scored(champion_version=version, rows=rows, operations={**figures, **asdict(usage)})
        store.write_batch_json(key, "scored", info.to_dict())
        log_metrics({"champion_version": version, "scored_rows": rows})
        log_metrics(flat_metrics(figures, usage))
        log_json(info.operations, "operations/scoring.json")
    return info

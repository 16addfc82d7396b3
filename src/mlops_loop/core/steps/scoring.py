"""Scoring with whatever model `champion` points at now: `scored_batch` and the CLI's predict.

A batch that came from serving is not scored again: it already carries the predictions the
endpoint answered with, and those are what the loop judges (`score_batch`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.errors import RegistryError
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.served import ServingFigures
from mlops_loop.core.steps.ingest import big_batch, served_figures
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
    #: A served batch's online figures (`served.ServingFigures.metrics`); empty otherwise.
    serving: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The record; `serving` only for a served batch (other batches' layout is unchanged)."""
        data = super().to_dict()
        if not data["serving"]:
            del data["serving"]
        return data


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
    """Score a batch with the model the `champion` alias points at right now.

    A served batch (one the prediction log landed, with every prediction column) keeps the
    predictions it was served with: the scored batch is the stored batch as it is, and its
    version is the one that served it (the last one when a promotion or rollback happened in
    the window). What was served is what is judged: output drift and realized performance are
    then those of the answers callers got, not of a re-scoring by a champion that may have
    moved since, and the batch is not scored twice. Its operations figures are the endpoint's
    (`serving_*`: latency percentiles, error rate, throughput, availability) beside this
    step's time and memory.
    """
    from mlops_loop.core.operations import flat_metrics, measure_usage, timed_scoring

    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    served = _served_scores(config, store, key)
    if served is not None:
        return _keep_served(config, store, key, ctx, served)
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


def _served_scores(config: LoopConfig, store: LoopStore, key: str) -> ServingFigures | None:
    """A served batch's figures when the stored batch has every prediction column."""
    from mlops_loop.core.parquet import parquet_columns
    from mlops_loop.core.served import prediction_columns

    figures = served_figures(store, key)
    path = store.batch_dir(key) / "batch.parquet"
    if figures is None or not path.exists():
        return None
    if not set(prediction_columns(config.columns)) <= set(parquet_columns(path)):
        return None  # served without its predictions: score it as any batch
    return figures


def _keep_served(
    config: LoopConfig, store: LoopStore, key: str, ctx: StepContext, figures: ServingFigures
) -> Scored:
    """The served batch as its own scored batch, copied as it is (never read whole)."""
    import os
    import shutil

    from mlops_loop.core.operations import measure_usage
    from mlops_loop.core.parquet import parquet_rows

    with step_run(config, ctx, "score", key, system_metrics=True):
        with measure_usage() as usage:
            source, out = (
                store.batch_dir(key) / "batch.parquet",
                store.batch_dir(key) / "scored.parquet",
            )
            tmp = out.with_name(f".{out.name}.tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, out)
            rows = parquet_rows(out)
        version = figures.model_version
        if version is None:  # rows without a version: the champion of now stands for it
            version = MlflowRegistry.from_config(config).champion()
        if version is None:
            raise RegistryError(
                f"served batch {key!r} names no model version and "
                f"{config.mlflow.registered_model!r} has no champion"
            )
        operations = {
            "rows": rows,
            "scored_by": "serving",
            "served_versions": figures.model_versions,
            **asdict(usage),
        }
        info = Scored(
            champion_version=int(version),
            rows=rows,
            operations=operations,
            serving=figures.metrics(),
        )
        store.write_batch_json(key, "scored", info.to_dict())
        log_metrics({"champion_version": version, "scored_rows": rows})
        log_metrics(info.serving)
        log_metrics(
            {
                "step_wall_s": usage.wall_s,
                "step_cpu_s": usage.cpu_s,
                "step_peak_rss_mb": usage.peak_rss_mb,
            }
        )
        log_json({**operations, "serving": figures.to_dict()}, "operations/scoring.json")
    return info

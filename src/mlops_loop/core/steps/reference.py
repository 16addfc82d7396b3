"""The reference snapshot (with the quality suite learnt from it) and the first champion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.data import frame_digest, read_table, require_columns
from mlops_loop.core.performance import compute_metrics
from mlops_loop.core.registry import AliasChange, MlflowRegistry
from mlops_loop.core.steps.models import (
    log_and_register,
    log_split,
    log_validation_model,
    metric_tags,
    save_estimator,
    save_importance,
    task_tags,
)
from mlops_loop.core.steps.result import StepResult
from mlops_loop.core.steps.run import StepContext, step_run
from mlops_loop.core.steps.training import split_holdout
from mlops_loop.core.store import LoopStore
from mlops_loop.core.tracking import config_params, log_dataset, log_json, log_metrics, log_params
from mlops_loop.core.training import labelled_rows, labels, predict_scores, train_model

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Snapshot(StepResult):
    """The reference as snapshotted (`snapshot/snapshot.json`, bar `suite_notes`, which
    `snapshot/suite.json` keeps as `notes`)."""

    digest: str
    rows: int
    columns: list[str]
    source: str
    expectations: int  # in the quality suite learnt from it
    # Bounds widened (or checks dropped) so that the suite accepts the reference itself.
    suite_notes: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ChampionCheck(StepResult):
    """Whether a champion existed or the first one was trained now."""

    champion: int
    trained: bool
    metrics: dict[str, Any] = field(default_factory=dict)  # of a newly trained one
    change: AliasChange | None = None  # the bootstrap move of the alias
    external_change: AliasChange | None = None  # an alias moved outside the loop, recorded


def learn_suite(config: LoopConfig, frame: pd.DataFrame) -> dict[str, Any]:
    """The quality suite the loop learns from a frame of good data (the reference snapshot,
    or the reference with batches when the suite is relearnt)."""
    from mlops_loop.core.quality.selfcheck import build_checked_suite

    return build_checked_suite(frame, config.columns, config.quality)


def take_reference_snapshot(config: LoopConfig, ctx: StepContext | None = None) -> Snapshot:
    """Copy the reference into the store, learn the quality suite from it, and log both.

    The suite is checked on the reference itself (learnt on one half, run on the other): a
    bound that fails there is widened, a check the reference fails is dropped, and
    `Snapshot.suite_notes` says which.

    Raises:
        DataError: the reference cannot be read or lacks a configured column.
    """
    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    reference = read_table(config.sources.reference)
    cols = config.columns
    require_columns(
        reference, [*cols.features, cols.target], f"reference {config.sources.reference}"
    )
    suite = learn_suite(config, reference)
    store.write_frame(store.snapshot_dir / "reference.parquet", reference)
    store.write_json(store.snapshot_dir / "suite.json", suite)
    info = Snapshot(
        digest=frame_digest(reference),
        rows=len(reference),
        columns=list(map(str, reference.columns)),
        source=str(config.sources.reference),
        expectations=len(suite.get("expectations", [])),
        suite_notes=list(suite.get("notes", [])),
    )
    # snapshot.json keeps its layout; the notes are in suite.json ("notes") and in MLflow.
    store.write_json(
        store.snapshot_dir / "snapshot.json",
        {k: v for k, v in info.to_dict().items() if k != "suite_notes"},
    )
    store.write_reference_profile(config, info.digest)  # drift reuses it for each batch
    with step_run(config, ctx, "reference_snapshot"):
        log_dataset(
            reference,
            name="reference",
            context="reference",
            source=str(config.sources.reference),
            target=cols.target,
            columns=config.columns,
        )
        log_json(suite, "quality/suite.json")
        log_json(info.to_dict(), "reference/snapshot.json")
        log_params(
            {
                "loop": config.name,
                "reference.rows": info.rows,
                "reference.digest": info.digest,
                "quality.expectations": info.expectations,
                "quality.suite_notes": len(info.suite_notes),
                **config_params(config, "quality"),
            }
        )
    return info


def ensure_champion(config: LoopConfig, ctx: StepContext | None = None) -> ChampionCheck:
    """Make sure a champion exists: train the first one on the reference if there is none.

    An alias moved outside the loop (e.g. in the MLflow UI) is recorded in the history first.
    """
    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    registry = MlflowRegistry.from_config(config)
    external = registry.reconcile(ctx.triggered_by)
    champion = registry.champion()
    if champion is not None:
        return ChampionCheck(champion=champion, trained=False, external_change=external)
    reference = store.reference()
    train, holdout = split_holdout(reference, config)
    with step_run(config, ctx, "baseline_model"):
        model = train_model(train, config.model, config.columns)
        y_hold, s_hold = (
            labels(holdout, config.columns),
            predict_scores(model, holdout, config.columns),
        )
        metrics = compute_metrics(y_hold, s_hold, config.task, config.columns.classes)
        source = str(config.sources.reference)
        log_split(
            config, train, holdout, ("reference-train", "reference-holdout"), (source, source)
        )
        log_metrics(metrics, prefix="baseline_")
        log_params({"loop": config.name, **config_params(config, "model", "training")})
        served, lineage = model, {}
        if config.training.refit:
            # Validated on the held-out rows by the fit above, the model that serves learns
            # from the whole reference; the version records both.
            served = train_model(reference, config.model, config.columns)
            rows = len(labelled_rows(reference, config.columns))
            log_params({"refit.rows": rows})
            lineage = {
                "mlops_loop.refit": f"fit on all {rows} labelled rows of the reference; metrics, "
                "calibration and importance of the fit without its held-out rows",
                "mlops_loop.validated_by": log_validation_model(config, model, train),
            }
        version = log_and_register(config, served, train)
        save_estimator(config, store, version, holdout, s_hold)
        save_importance(config, store, version, model, holdout)
    registry.tag_version(
        version,
        {
            **metric_tags(metrics),
            **task_tags(config),
            "mlops_loop.trained_on": "reference",
            **lineage,
        },
    )
    change = registry.promote(
        version,
        expected_champion=None,
        action="bootstrap",
        reason="first model, trained on the reference snapshot",
        triggered_by=ctx.triggered_by,
        metrics=metrics,
        user=ctx.user,
    )
    return ChampionCheck(champion=version, trained=True, metrics=metrics, change=change)

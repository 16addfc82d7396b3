"""Training a challenger: the training window, the held-out rows, the registered version."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.errors import DataError
from mlops_loop.core.labels import attach_labels, now_utc
from mlops_loop.core.performance import compute_metrics
from mlops_loop.core.policy import RetrainDecision
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.steps.decision import answer_retrain, decide_batch_retrain
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
from mlops_loop.core.store import LoopStore
from mlops_loop.core.tracking import config_params, log_json, log_metrics, log_params
from mlops_loop.core.training import labelled_rows, labels, predict_scores, train_model


@dataclass(frozen=True)
class Challenger(StepResult):
    """A challenger trained at a batch (`<batch>/challenger.json`)."""

    version: int
    metrics: dict[str, Any] = field(default_factory=dict)  # on its held-out rows
    training_parts: list[str] = field(default_factory=list)
    training_rows: int = 0
    training_digest: str | None = None
    holdout_rows: int = 0
    labels_as_of: str | None = None  # the labels known when it was trained
    run_id: str | None = None
    # With `training.refit` the version is fit on its held-out rows too; the fit validated on
    # them (scored against the champion by the promotion) is logged unregistered, here.
    validation_model_uri: str | None = None


def split_holdout(frame: pd.DataFrame, config: LoopConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split labelled rows into (train part, held-out part): the latest `holdout_fraction` of
    the rows, by timestamp if there is one, else by row order, is held out."""
    frame = labelled_rows(frame, config.columns)
    ts = config.columns.timestamp
    if ts and ts in frame.columns:
        frame = frame.sort_values(ts, kind="stable")
    n_hold = int(round(len(frame) * config.training.holdout_fraction))
    cut = len(frame) - n_hold
    return frame.iloc[:cut], frame.iloc[cut:]


def training_window(
    config: LoopConfig, key: str, as_of: datetime | None = None
) -> tuple[pd.DataFrame, list[str], pd.DataFrame]:
    """(training rows, names of the parts used, held-out rows) for a retrain at batch `key`.

    Only accepted batches are used: a quarantined batch never reaches training data. Late
    labels count if they were known at `as_of` (all known ones by default).
    """
    store = LoopStore(config.state_dir)
    if not (store.batch_json(key, "quality") or {}).get("success"):
        raise DataError(f"batch {key!r} has not passed the quality gate; it cannot be trained on")
    earlier = [k for k in store.accepted_keys() if k < key]
    if config.training.window == "recent":
        keep = config.training.recent_batches
        earlier = earlier[len(earlier) - keep :] if keep else []
        if config.training.same_regime and _failing(store, key):
            earlier = [k for k in earlier if _failing(store, k)]
    parts: list[pd.DataFrame] = []
    names: list[str] = []
    if config.training.include_reference or config.training.window == "all":
        parts.append(store.reference())
        names.append("reference")
    for k in earlier:
        parts.append(attach_labels(config, store.batch(k), as_of))
        names.append(k)
    train_part, holdout = split_holdout(attach_labels(config, store.batch(key), as_of), config)
    parts.append(train_part)
    names.append(f"{key} (first {1 - config.training.holdout_fraction:.0%})")
    ts = config.columns.timestamp
    cols = [*config.columns.features, config.columns.target, *([ts] if ts else [])]
    frame = pd.concat(
        [
            p[[c for c in cols if c in p.columns]].assign(_part=name)
            for p, name in zip(parts, names, strict=True)
        ],
        ignore_index=True,
    )
    frame = labelled_rows(frame, config.columns)
    if config.training.window == "sliding":
        frame = _slide(frame, config)
        names = [n for n in names if n in set(frame["_part"])]
    return frame.drop(columns=["_part"]), names, holdout


def _failing(store: LoopStore, key: str) -> bool:
    """Whether the retrain decision of a batch saw the champion failing on its labels."""
    return "performance" in ((store.batch_json(key, "decision") or {}).get("triggers") or [])


def _slide(frame: pd.DataFrame, config: LoopConfig) -> pd.DataFrame:
    """Keep the newest rows: within `max_age_days` of the latest timestamp, at most `max_rows`."""
    policy, ts = config.training, config.columns.timestamp
    if ts and ts in frame.columns:
        stamps = pd.to_datetime(frame[ts], errors="coerce")
        frame = frame.assign(_ts=stamps).sort_values("_ts", kind="stable")
        if policy.max_age_days is not None:
            cutoff = frame["_ts"].max() - pd.Timedelta(days=policy.max_age_days)
            frame = frame[frame["_ts"] >= cutoff]
        frame = frame.drop(columns=["_ts"])
    elif policy.max_age_days is not None:
        raise DataError(
            "training.max_age_days needs a timestamp column (columns.timestamp is not set "
            "or not in the data)"
        )
    if policy.max_rows is not None:
        frame = frame.iloc[-policy.max_rows :]
    return frame


def train_challenger(config: LoopConfig, key: str, ctx: StepContext | None = None) -> Challenger:
    """Train, evaluate on the held-out rows, register, and alias a challenger for batch `key`."""
    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    registry = MlflowRegistry.from_config(config)
    as_of = now_utc()
    train, parts, holdout = training_window(config, key, as_of)
    with step_run(config, ctx, "challenger", key) as run:
        model = train_model(train, config.model, config.columns)
        y_hold, s_hold = (
            labels(holdout, config.columns),
            predict_scores(model, holdout, config.columns),
        )
        metrics = compute_metrics(y_hold, s_hold, config.task, config.columns.classes)
        digest = log_split(
            config, train, holdout, (f"train-{key}", f"holdout-{key}"), (",".join(parts), key)
        )
        log_metrics(metrics, prefix="challenger_")
        log_params(
            {
                **config_params(config, "model", "training", "retrain"),
                "training.rows": len(train),
                "training.parts": ",".join(parts),
            }
        )
        log_json({"parts": parts, "rows": len(train), "digest": digest}, "training/window.json")
        served, validation_uri, lineage = model, None, {}
        if config.training.refit:
            rows = pd.concat([train, holdout[list(train.columns)]], ignore_index=True)
            served = train_model(rows, config.model, config.columns)
            validation_uri = log_validation_model(config, model, train)
            log_params({"refit.rows": len(rows)})
            lineage = {
                "mlops_loop.refit": f"fit on all {len(rows)} labelled rows, held-out rows "
                "included; metrics, calibration and importance of the fit without them",
                "mlops_loop.validated_by": validation_uri,
            }
        version = log_and_register(config, served, train)
        save_estimator(config, store, version, holdout, s_hold)
        save_importance(config, store, version, model, holdout)
        run_id = run.info.run_id
    registry.tag_version(
        version,
        {
            **metric_tags(metrics),
            **task_tags(config),
            "mlops_loop.trained_on": ",".join(parts),
            "mlops_loop.partition": key,
            **lineage,
        },
    )
    registry.set_challenger(version)
    info = Challenger(
        version=version,
        metrics=metrics,
        training_parts=parts,
        training_rows=len(train),
        training_digest=digest,
        holdout_rows=len(holdout),
        labels_as_of=as_of.isoformat(),
        run_id=run_id,
        validation_model_uri=validation_uri,
    )
    store.write_batch_json(key, "challenger", info.to_dict())
    return info


@dataclass(frozen=True)
class Retrain(StepResult):
    """What a retrain at a batch did: the decision it acted on, and the challenger if any."""

    decision: RetrainDecision
    challenger: Challenger | None = None


def retrain_batch(
    config: LoopConfig, key: str, ctx: StepContext | None = None, *, force: bool = False
) -> Retrain:
    """Train a challenger at batch `key` if its retrain decision (checked again now, without
    overwriting it) says so, or if `force`; either way the decision is answered, so it is no
    longer pending (`decision.pending_retrains`)."""
    verdict = decide_batch_retrain(config, key, force=force, record=False)
    if not verdict.retrain:
        answer_retrain(config, key, "skipped")
        return Retrain(decision=verdict)
    challenger = train_challenger(config, key, ctx)
    answer_retrain(config, key, "trained")
    return Retrain(decision=verdict, challenger=challenger)

"""One step of the loop at a time, composed from the core blocks.

The Dagster assets, the CLI and tests call exactly these functions; each one reads its inputs
from the `LoopStore`, writes its verdict back there, and logs to MLflow.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.config import METRICS, LoopConfig
from mlops_loop.core.data import frame_digest, read_table, require_columns
from mlops_loop.core.errors import DataError, RegistryError
from mlops_loop.core.labels import attach_labels, ingest_labels, label_coverage, now_utc
from mlops_loop.core.performance import compute_metrics, improvement, metric_value
from mlops_loop.core.plots import paired_bars_svg
from mlops_loop.core.policy import (
    PromotionDecision,
    RetrainDecision,
    decide_promotion,
    decide_retrain,
)
from mlops_loop.core.registry import METRIC_TAG, AliasChange, MlflowRegistry
from mlops_loop.core.segments import segment_drift
from mlops_loop.core.store import LoopStore, file_sha256, file_stamp
from mlops_loop.core.tracking import (
    TAG_ERROR,
    TAG_PARTITION,
    TAG_STEP,
    config_params,
    log_dataset,
    log_json,
    log_metrics,
    log_params,
    log_text,
    mlflow_uri,
    redact_uri,
    tracked_run,
)
from mlops_loop.core.training import (
    labelled_rows,
    labels,
    model_inputs,
    predict_scores,
    train_model,
)


@dataclass(frozen=True)
class StepContext:
    """Who runs a step: an id that groups the steps of one run into one MLflow run, and tags."""

    run_key: str | None = None
    triggered_by: str = "manual"
    tags: dict[str, str] = field(default_factory=dict)

    def run_tags(self, step: str, partition: str | None = None) -> dict[str, str]:
        tags = {**self.tags, TAG_STEP: step}
        if partition is not None:
            tags[TAG_PARTITION] = partition
        return tags


def _run(
    config: LoopConfig,
    ctx: StepContext,
    step: str,
    partition: str | None = None,
    system_metrics: bool = False,
):
    name = f"{partition or 'loop'}:{step}" if ctx.run_key is None else f"{partition or 'loop'}"
    key = None if ctx.run_key is None else f"{ctx.run_key}:{partition or '-'}"
    return tracked_run(
        config,
        run_name=name,
        run_key=key,
        tags=ctx.run_tags(step, partition),
        system_metrics=system_metrics,
    )


def record_failure(
    config: LoopConfig, ctx: StepContext, partition: str | None, step: str, message: str
) -> None:
    """Mark the MLflow run of a failed orchestrator run: error tag, failure count, FAILED."""
    import mlflow

    with _run(config, ctx, step, partition) as run:
        mlflow.set_tag(TAG_ERROR, message[:5000])
        log_metrics({"step_failures": 1})
        run_id = run.info.run_id
    with mlflow_uri(config.tracking_uri):
        mlflow.MlflowClient().set_terminated(run_id, status="FAILED")


def notify_failure(
    config: LoopConfig, partition: str | None, job: str, message: str
) -> list[dict[str, Any]]:
    """Tell the alert notifiers that a loop run failed (an error-severity event)."""
    from mlops_loop.core.alerts import AlertEvent
    from mlops_loop.core.notify import build_notifiers, notify

    notifiers = build_notifiers(config.alerts)
    if not notifiers:
        return []
    event = AlertEvent(
        rule="run_failed",
        metric="step_failures",
        kind="firing",
        severity="error",
        batch=partition or "-",
        value=1.0,
        threshold=0.0,
        message=f"{job} failed" + (f" on {partition}" if partition else "") + f": {message}",
    )
    return [d.to_dict() for d in notify([event], notifiers)]


# -- reference -------------------------------------------------------------------------------------
def take_reference_snapshot(config: LoopConfig, ctx: StepContext | None = None) -> dict[str, Any]:
    """Copy the reference into the store, learn the quality suite from it, and log both.

    Raises:
        DataError: the reference cannot be read or lacks a configured column.
    """
    from mlops_loop.core.quality import build_suite

    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    reference = read_table(config.sources.reference)
    cols = config.columns
    require_columns(
        reference, [*cols.features, cols.target], f"reference {config.sources.reference}"
    )
    suite = build_suite(reference, cols, config.quality)
    store.write_frame(store.snapshot_dir / "reference.parquet", reference)
    store.write_json(store.snapshot_dir / "suite.json", suite)
    info = {
        "digest": frame_digest(reference),
        "rows": len(reference),
        "columns": list(map(str, reference.columns)),
        "source": str(config.sources.reference),
        "expectations": len(suite.get("expectations", [])),
    }
    store.write_json(store.snapshot_dir / "snapshot.json", info)
    store.write_reference_profile(config, str(info["digest"]))  # drift reuses it for each batch
    with _run(config, ctx, "reference_snapshot"):
        log_dataset(
            reference,
            name="reference",
            context="reference",
            source=str(config.sources.reference),
            target=cols.target,
            columns=config.columns,
        )
        log_json(suite, "quality/suite.json")
        log_json(info, "reference/snapshot.json")
        log_params(
            {
                "loop": config.name,
                "reference.rows": info["rows"],
                "reference.digest": info["digest"],
                "quality.expectations": info["expectations"],
                **config_params(config, "quality"),
            }
        )
    return info


# -- models ----------------------------------------------------------------------------------------
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


def _pip_requirements(config: LoopConfig) -> list[str]:
    """Pinned requirements of the logged model. Giving them explicitly spares MLflow its
    requirement inference, which reloads the model in a subprocess (~5 s per model here)."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    dists = {"scikit-learn", "cloudpickle", "pandas", "numpy", "scipy"}
    top = config.model.estimator.split(".")[0]
    dists.update(packages_distributions().get(top, []))
    pins = []
    for dist in sorted(dists):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return pins


def _log_and_register(config: LoopConfig, model: Any, example: pd.DataFrame) -> int:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    inputs = model_inputs(example, config.columns)
    signature = infer_signature(inputs, predict_scores(model, example, config.columns))
    # cloudpickle, not skops: skops refuses to reload HistGradientBoosting trees and any custom
    # transformer a user's pipeline may hold. Models are only ever loaded from our own registry.
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        input_example=inputs.head(5),
        signature=signature,
        serialization_format="cloudpickle",
        pip_requirements=_pip_requirements(config),
        registered_model_name=config.mlflow.registered_model,
    )
    return int(info.registered_model_version)


def _estimator_path(store: LoopStore, version: int) -> Path:
    return store.root / "estimators" / f"version_{version}.json"


def _save_estimator(store: LoopStore, version: int, scores: np.ndarray, y: np.ndarray) -> None:
    """Calibrate the version's scores on its own held-out rows, for label-free estimates.

    Logged to the active MLflow run too. A holdout with one class cannot be calibrated: the
    version then simply has no estimate.
    """
    from mlops_loop.core.estimate import fit_estimator

    try:
        estimator = fit_estimator(scores, y)
    except DataError:
        return
    payload = estimator.to_dict()
    store.write_json(_estimator_path(store, version), payload)
    log_json(payload, "estimator/confidence.json")


def _estimate(store: LoopStore, version: int | None, scores: np.ndarray) -> dict[str, Any] | None:
    """Performance estimated from the scores alone with the version's calibration."""
    from mlops_loop.core.estimate import ConfidenceEstimator

    saved = None if version is None else store.read_json(_estimator_path(store, version))
    if saved is None or len(scores) == 0:
        return None
    return ConfidenceEstimator.from_dict(saved).estimate(scores).to_dict()


def _metric_tags(metrics: dict[str, Any]) -> dict[str, Any]:
    return {f"{METRIC_TAG}{k}": v for k, v in metrics.items() if v is not None}


def ensure_champion(config: LoopConfig, ctx: StepContext | None = None) -> dict[str, Any]:
    """Make sure a champion exists: train the first one on the reference if there is none.

    An alias moved outside the loop (e.g. in the MLflow UI) is recorded in the history first.
    """
    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    registry = MlflowRegistry.from_config(config)
    external = registry.reconcile(ctx.triggered_by)
    champion = registry.champion()
    if champion is not None:
        return {
            "champion": champion,
            "trained": False,
            "external_change": external.to_dict() if external else None,
        }
    reference = store.reference()
    train, holdout = split_holdout(reference, config)
    with _run(config, ctx, "baseline_model"):
        model = train_model(train, config.model, config.columns)
        y_hold, s_hold = (
            labels(holdout, config.columns),
            predict_scores(model, holdout, config.columns),
        )
        metrics = compute_metrics(y_hold, s_hold)
        log_dataset(
            train,
            name="reference-train",
            context="training",
            source=str(config.sources.reference),
            target=config.columns.target,
            columns=config.columns,
        )
        log_dataset(
            holdout,
            name="reference-holdout",
            context="evaluation",
            source=str(config.sources.reference),
            target=config.columns.target,
            columns=config.columns,
        )
        log_metrics(metrics, prefix="baseline_")
        log_params({"loop": config.name, **config_params(config, "model", "training")})
        version = _log_and_register(config, model, train)
        _save_estimator(store, version, s_hold, y_hold)
    registry.tag_version(version, {**_metric_tags(metrics), "mlops_loop.trained_on": "reference"})
    change = registry.promote(
        version,
        expected_champion=None,
        action="bootstrap",
        reason="first model, trained on the reference snapshot",
        triggered_by=ctx.triggered_by,
        metrics=metrics,
    )
    return {"champion": version, "trained": True, "metrics": metrics, "change": change.to_dict()}


# -- batches ---------------------------------------------------------------------------------------
def _store_landed(config: LoopConfig, store: LoopStore, key: str, path: Path) -> dict[str, Any]:
    """Put a landed file into the store as parquet: `{"rows", "columns", "digest"}`.

    Parquet is copied, not read, so a batch of tens of millions of rows never has to fit in
    memory; CSV is read and written. A batch without its label column gets an empty one.
    """
    dest, target = store.batch_dir(key) / "batch.parquet", config.columns.target
    if path.suffix.lower() in (".parquet", ".pq"):
        from mlops_loop.core.parquet import store_parquet

        return store_parquet(path, dest, target, config.operations.read_chunk_rows)
    frame = read_table(path)
    if target not in frame.columns:
        # Labels often land later and apart (sources.labels): the batch is simply unlabelled.
        frame[target] = np.nan
    store.write_frame(dest, frame)
    return {"rows": len(frame), "columns": len(frame.columns), "digest": frame_digest(frame)}


def ingest_batch(config: LoopConfig, key: str, path: str | Path) -> dict[str, Any]:
    """Copy a landed batch file into the store as parquet.

    Raises:
        DataError: the file cannot be read.
    """
    store = LoopStore(config.state_dir)
    path = Path(path)
    stamp, sha256 = file_stamp(path), file_sha256(path)
    try:
        stored = _store_landed(config, store, key, path)
    except DataError as e:
        # Verdicts of an earlier copy no longer hold, and the failed delivery is remembered,
        # so that the landing sensor monitors the batch again once a fixed file replaces it.
        for stale in ("quality", "drift", "performance", "decision"):
            (store.batch_dir(key) / f"{stale}.json").unlink(missing_ok=True)
        failed = {"source": str(path), "stamp": stamp, "sha256": sha256, "error": str(e)}
        store.write_batch_json(key, "ingest", failed)
        raise
    # A re-materialized batch starts fresh: verdicts of the earlier copy no longer hold.
    for stale in ("quality", "drift", "performance", "decision"):
        (store.batch_dir(key) / f"{stale}.json").unlink(missing_ok=True)
    info = {**stored, "source": str(path), "stamp": stamp, "sha256": sha256}
    store.write_batch_json(key, "ingest", info)
    return info


def _big_batch(config: LoopConfig, store: LoopStore, key: str) -> Path | None:
    """The stored batch's file when it has more rows than `operations.in_memory_max_rows`:
    such a batch is checked and scored from the file a slice at a time, never read whole."""
    from mlops_loop.core.parquet import parquet_rows

    path = store.batch_dir(key) / "batch.parquet"
    if path.exists() and parquet_rows(path) > config.operations.in_memory_max_rows:
        return path
    return None


def check_quality(config: LoopConfig, key: str, ctx: StepContext | None = None) -> Any:
    """Validate a stored batch against the suite learnt from the reference.

    A failed batch is quarantined: its verdict is recorded, and nothing downstream (training,
    baselines) ever reads it until a re-validation passes.
    """
    from mlops_loop.core.quality import validate_batch

    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    suite = store.read_json(store.snapshot_dir / "suite.json")
    if suite is None:
        raise DataError("the reference snapshot has no quality suite; materialize it first")
    big = _big_batch(config, store, key)
    if big is not None:
        from mlops_loop.core.quality.chunked import validate_parquet

        batch = None
        result = validate_parquet(
            big, suite, config.operations.read_chunk_rows, set(config.columns.private)
        )
    else:
        batch = store.batch(key)
        result = validate_batch(None, batch, config=config, suite=suite)
    rows = int(result.statistics["rows"])
    with _run(config, ctx, "quality", key):
        log_json(result.to_dict(), f"quality/{key}.json")
        log_text(result.to_html(), f"quality/{key}.html")
        docs = result.data_docs_html()
        if docs:
            log_text(docs, f"quality/data_docs/{key}.html")
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
            log_params({"batch.digest": (store.batch_json(key, "ingest") or {}).get("digest")})
    # Recorded once MLflow has it: with the tracking server down, no verdict is left behind
    # (and no batch accepted for training) that the system of record never saw.
    store.write_batch_json(key, "quality", result.to_dict())
    (store.batch_dir(key) / "quality.html").write_text(result.to_html())
    return result


def evaluate_batch_drift(config: LoopConfig, key: str, ctx: StepContext | None = None) -> Any:
    """Compare a stored batch with the reference; write JSON and HTML reports."""
    from mlops_loop.core.drift import evaluate_drift

    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    big = _big_batch(config, store, key)
    if big is not None:
        from mlops_loop.core.drift import evaluate_drift_parquet
        from mlops_loop.core.segments import segment_drift_parquet

        report = evaluate_drift_parquet(store.reference_profile(config), big, config=config)
        segments = segment_drift_parquet(
            config, store.reference(), big, config.operations.read_chunk_rows
        )
    else:
        batch = store.batch(key)
        report = evaluate_drift(store.reference_profile(config), batch, config=config)
        segments = segment_drift(config, store.reference(), batch)
    store.write_batch_json(key, "drift", report.to_dict())
    store.write_batch_json(key, "segment_drift", segments)
    (store.batch_dir(key) / "drift.html").write_text(report.to_html())
    with _run(config, ctx, "drift", key):
        log_json(report.to_dict(), f"drift/{key}.json")
        if segments:
            log_json(segments, f"drift/segments_{key}.json")
            log_metrics(
                {
                    f"segment.{r['segment']}.{r['value']}.drift_share": r["drift_share"]
                    for r in segments
                    if r["drift_share"] is not None
                }
            )
        log_text(report.to_html(), f"drift/{key}.html")
        log_params(config_params(config, "drift"))
        log_metrics(
            {
                "drift_share": report.drift_share,
                "drift_max_effect": report.max_effect,
                "dataset_drift": int(report.dataset_drift),
            }
        )
        if report.multivariate is not None and report.multivariate.auc is not None:
            log_metrics({"multivariate_auc": report.multivariate.auc})
    return report


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
    scored[config.columns.prediction] = predict_scores(model, frame, config.columns)
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


def score_batch(config: LoopConfig, key: str, ctx: StepContext | None = None) -> dict[str, Any]:
    """Score a batch with the model the `champion` alias points at right now."""
    from mlops_loop.core.operations import flat_metrics, measure_usage, timed_scoring

    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    with _run(config, ctx, "score", key, system_metrics=True):
        with measure_usage() as usage:
            big = _big_batch(config, store, key)
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
                scored[config.columns.prediction] = scores
                store.write_frame(out, scored)
        rows = int(figures["rows"])
        info = {
            "champion_version": version,
            "rows": rows,
            "operations": {**figures, **asdict(usage)},
        }
        store.write_batch_json(key, "scored", info)
        log_metrics({"champion_version": version, "scored_rows": rows})
        log_metrics(flat_metrics(figures, usage))
        log_json(info["operations"], f"operations/{key}.json")
    return info


def measure_performance(
    config: LoopConfig, key: str, ctx: StepContext | None = None
) -> dict[str, Any]:
    """Realized performance of the champion on the labelled rows of a scored batch."""
    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    scored = _scored_columns(config, store, key)
    info = store.batch_json(key, "scored") or {}
    as_of = now_utc()
    scored = attach_labels(config, scored, as_of)
    known = labelled_rows(scored, config.columns)
    metrics = (
        compute_metrics(labels(known, config.columns), known[config.columns.prediction].to_numpy())
        if len(known)
        else {"n": 0}
    )
    registry = MlflowRegistry.from_config(config)
    version = info.get("champion_version")
    baseline = _version_metric(registry, version, config.promotion.metric)
    best = _best_champion_metric(registry, version, config.promotion.metric)
    scores = scored[config.columns.prediction].to_numpy(dtype=float)
    estimate = _estimate(store, version, scores)
    estimated = {
        k: v for k, v in ((estimate or {}).get("metrics") or {}).items() if isinstance(v, dict)
    }
    segments = _segment_performance(config, store, version, scored)
    outputs = _output_drift(config, store, version, scores, known)
    result: dict[str, Any] = {
        "champion_version": version,
        "rows": len(scored),
        "output_drift": outputs,
        "labelled_rows": len(known),
        "label_coverage": round(len(known) / max(len(scored), 1), 4),
        "labels_as_of": as_of.isoformat(),
        "metrics": metrics,
        "metric_name": config.promotion.metric,
        "metric": metrics.get(config.promotion.metric),
        "baseline_metric": baseline,
        "best_baseline_metric": best,
        "estimate": estimate,
        "estimated_metrics": {k: v.get("value") for k, v in estimated.items()},
        "estimated_metric": (estimated.get(config.promotion.metric) or {}).get("value"),
        "segments": segments,
    }
    store.write_batch_json(key, "performance", result)
    with _run(config, ctx, "performance", key):
        log_metrics(metrics)
        log_metrics({"label_coverage": result["label_coverage"]})
        log_metrics(result["estimated_metrics"], prefix="estimated_")
        log_metrics(
            {
                f"{o['role']}_drift_{k}": o[k]
                for o in outputs
                for k in ("effect_size", "p_value")
                if o.get(k) is not None
            }
        )
        if segments:
            log_json(segments, f"performance/segments_{key}.json")
            log_metrics(
                {
                    f"segment.{r['segment']}.{r['value']}.{name}": r[name]
                    for r in segments
                    for name in ("share", config.promotion.metric)
                    if r.get(name) is not None
                }
            )
    return result


def _scored_columns(config: LoopConfig, store: LoopStore, key: str) -> pd.DataFrame:
    """The columns of a scored batch that performance reads: id, label, score, segments."""
    from mlops_loop.core.parquet import parquet_columns

    path, cols = store.batch_dir(key) / "scored.parquet", config.columns
    if not path.exists():
        return store.read_frame(path, f"scored batch {key!r}")  # raises, naming the step
    wanted = dict.fromkeys(filter(None, [cols.id, cols.target, cols.prediction, *cols.segments]))
    present = set(parquet_columns(path))
    return pd.read_parquet(path, columns=[c for c in wanted if c in present])


def _output_drift(
    config: LoopConfig,
    store: LoopStore,
    version: int | None,
    scores: np.ndarray,
    known: pd.DataFrame,
) -> list[dict[str, Any]]:
    """Prediction drift (the champion's scores on the batch against its scores on the
    reference) and target drift (the labels known so far against the reference's labels).

    Each is judged alone with the drift stage's tests (KS for scores, chi-square for labels)
    and effect thresholds. The reference scores of a version are computed once and kept.
    """
    from mlops_loop.core.drift import evaluate_drift

    cols = config.columns
    out: list[dict[str, Any]] = []
    if version is None or len(scores) == 0:
        return out
    cache = store.root / "estimators" / f"version_{version}_reference_scores.npy"
    if cache.exists():
        ref_scores = np.load(cache)
    else:
        reference = store.reference()
        ref_scores = predict_scores(
            MlflowRegistry.from_config(config).load(version), reference, cols
        )
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, ref_scores)
    pairs = [("prediction", pd.Series(ref_scores), pd.Series(scores))]
    if len(known):
        ref_labels = store.reference()[cols.target].dropna()
        pairs.append(
            (
                "target",
                ref_labels.astype(int).astype(str),
                known[cols.target].astype(int).astype(str),
            )
        )
    for role, ref, cur in pairs:
        name = cols.prediction if role == "prediction" else cols.target
        report = evaluate_drift(
            pd.DataFrame({name: ref.to_numpy()}),
            pd.DataFrame({name: cur.to_numpy()}),
            policy=config.drift.model_copy(update={"multivariate": False}),
        )
        [entry] = [f.to_dict() for f in report.features]
        out.append(
            {
                "role": role,
                "name": name,
                "method": entry["method"],
                "statistic": entry["statistic"],
                "p_value": entry["p_value"],
                "effect_size": entry["effect_size"],
                "threshold": entry["threshold"],
                "drifted": entry["drifted"],
                "error": entry["error"],
            }
        )
    return out


def _segment_performance(
    config: LoopConfig, store: LoopStore, version: int | None, scored: pd.DataFrame
) -> list[dict[str, Any]]:
    """Per value of each segment column: share of the batch and of the reference, realized and
    estimated primary metric."""
    cols = config.columns
    rows: list[dict[str, Any]] = []
    if not cols.segments:
        return rows
    reference = store.reference()
    name = config.promotion.metric
    for seg in cols.segments:
        if seg not in scored.columns:
            continue
        ref_share: dict[Any, float] = (
            reference[seg].astype(str).value_counts(normalize=True).to_dict()
            if seg in reference
            else {}
        )
        values = scored[seg].astype(str)
        for value, part in scored.groupby(values, sort=True):
            known = labelled_rows(part, cols)
            realized = (
                metric_value(name, labels(known, cols), known[cols.prediction].to_numpy())
                if len(known)
                else None
            )
            est = _estimate(store, version, part[cols.prediction].to_numpy(dtype=float))
            est_value = ((est or {}).get("metrics") or {}).get(name, {}) or {}
            rows.append(
                {
                    "segment": seg,
                    "value": str(value),
                    "rows": len(part),
                    "share": round(len(part) / len(scored), 6),
                    "reference_share": round(float(ref_share.get(str(value), 0.0)), 6),
                    "labelled": len(known),
                    name: None if realized is None or realized != realized else realized,
                    f"estimated_{name}": est_value.get("value"),
                }
            )
    return rows


def ingest_late_labels(config: LoopConfig, ctx: StepContext | None = None) -> dict[str, Any]:
    """Read label files that landed apart from their batches; name the batches they touch.

    Only accepted, scored batches are listed in `remeasure`: their realized performance can be
    measured again with the new labels. The per-batch label coverage is in `coverage`.
    """
    ctx = ctx or StepContext()
    result = ingest_labels(config).to_dict()
    store = LoopStore(config.state_dir)
    accepted = set(store.accepted_keys())
    result["remeasure"] = [
        k
        for k in result["affected"]
        if k in accepted and (store.batch_dir(k) / "scored.parquet").exists()
    ]
    result["coverage"] = label_coverage(config)
    store.write_json(store.root / "labels" / "last_ingest.json", result)
    if result["files"]:
        with _run(config, ctx, "labels"):
            log_metrics(
                {
                    "label_files": len(result["files"]),
                    "label_rows": result["rows"],
                    "new_labels": result["new_labels"],
                    "corrected_labels": result["corrected_labels"],
                    "known_labels": result["known_labels"],
                    "batches_relabelled": len(result["remeasure"]),
                }
            )
            log_json(result, "labels/ingest.json")
    return result


def _version_metric(registry: MlflowRegistry, version: int | None, name: str) -> float | None:
    if version is None:
        return None
    value = (registry.version(version).tags or {}).get(f"{METRIC_TAG}{name}")
    return float(value) if value not in (None, "None") else None


def _best_champion_metric(registry: MlflowRegistry, version: int | None, name: str) -> float | None:
    """The best validation metric of any version that has been champion, up to `version`."""
    if version is None:
        return None
    versions = {version} | {
        int(e["to_version"])
        for e in registry.history()
        if e.get("to_version") is not None and int(e["to_version"]) <= version
    }
    values = [v for v in (_version_metric(registry, n, name) for n in versions) if v is not None]
    if not values:
        return None
    return max(values, key=lambda v: improvement(name, v, 0.0))


def _batches_since_retrain(store: LoopStore, key: str) -> int | None:
    keys = [k for k in store.batch_keys() if k < key]
    for i, k in enumerate(reversed(keys)):
        if (store.batch_dir(k) / "challenger.json").exists():
            return i + 1
    return None


def _labelled_since_retrain(config: LoopConfig, store: LoopStore, key: str) -> int:
    """Labelled rows known now in accepted batches after the last retrain, up to `key`."""
    keys = [k for k in store.accepted_keys() if k <= key]
    since = [k for k in keys if (store.batch_dir(k) / "challenger.json").exists()]
    if since:
        keys = [k for k in keys if k > since[-1]]
    total = 0
    for k in keys:
        perf = store.batch_json(k, "performance") or {}
        total += int(perf.get("labelled_rows", 0))
    return total


def decide_batch_retrain(
    config: LoopConfig, key: str, force: bool = False, record: bool = True
) -> RetrainDecision:
    """Apply the retrain policy to what is known about a batch now.

    The decision is recorded with the batch unless `record` is False (a re-check inside a
    forced retrain must not overwrite what monitoring decided).
    """
    store = LoopStore(config.state_dir)
    quality = store.batch_json(key, "quality") or {}
    drift = store.batch_json(key, "drift") or {}
    perf = store.batch_json(key, "performance") or {}
    decision = decide_retrain(
        policy=config.retrain,
        quality_passed=bool(quality.get("success")),
        dataset_drift=drift.get("dataset_drift"),
        drifted_features=[
            f["name"]
            for f in drift.get("features", [])
            if f.get("drifted") and f.get("role", "feature") == "feature"
        ],
        metric_name=config.promotion.metric,
        metric=perf.get("metric"),
        baseline_metric=(
            perf.get("best_baseline_metric", perf.get("baseline_metric"))
            if config.retrain.baseline == "best"
            else perf.get("baseline_metric")
        ),
        labelled_rows=perf.get("labelled_rows", 0),
        batches_since_retrain=_batches_since_retrain(store, key),
        force=force,
        estimated_metric=perf.get("estimated_metric"),
        new_labelled_rows=_labelled_since_retrain(config, store, key),
    )
    if record:
        store.write_batch_json(key, "decision", decision.to_dict())
    return decision


# -- alerts ----------------------------------------------------------------------------------------
def batch_metrics(config: LoopConfig, key: str) -> dict[str, Any]:
    """Every number the loop knows about a batch, flat: what alert rules can watch."""
    store = LoopStore(config.state_dir)
    record: dict[str, Any] = {"batch": key}
    drift = store.batch_json(key, "drift") or {}
    perf = store.batch_json(key, "performance") or {}
    scored = store.batch_json(key, "scored") or {}
    ingest = store.batch_json(key, "ingest") or {}
    record["rows"] = ingest.get("rows")
    record["drift_share"] = drift.get("drift_share")
    record["dataset_drift"] = drift.get("dataset_drift")
    for name, value in (perf.get("metrics") or {}).items():
        if name != "n":
            record[name] = value
    for name, value in (perf.get("estimated_metrics") or {}).items():
        record[f"estimated_{name}"] = value
    record["label_coverage"] = perf.get("label_coverage")
    record[f"champion_{config.promotion.metric}"] = perf.get("baseline_metric")
    for name, value in (scored.get("operations") or {}).items():
        if isinstance(value, dict):
            record.update({f"{name}_{p}": v for p, v in value.items()})
        elif name in ("scoring_s", "throughput_rows_per_s", "peak_rss_mb", "cpu_percent"):
            record[name] = value
    return {k: v for k, v in record.items() if not isinstance(v, str) or k == "batch"}


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One process at a time on this machine (alert state is read, advanced and written)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_alerts(config: LoopConfig, key: str, ctx: StepContext | None = None) -> dict[str, Any]:
    """Evaluate the alert rules over the accepted batches up to `key`; send what is new.

    The rules replay the whole history as known now, so a batch whose labels arrived late is
    judged on them (an AUC alert fires once its labels show the drop). Each event is delivered
    once: the events already sent are kept with the loop. `events` are this batch's events in
    the replay (stable across re-runs); `sent` are those delivered by this call.
    """
    from mlops_loop.core.alerts import evaluate_alerts
    from mlops_loop.core.notify import build_notifiers, notify

    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    rules = config.alerts.rules
    if not rules:
        return {"events": [], "sent": [], "deliveries": [], "rules": 0, "firing": []}
    folder = store.root / "alerts"
    with _exclusive(folder / ".lock"):
        history = [batch_metrics(config, k) for k in store.accepted_keys() if k <= key]
        timeline, state = evaluate_alerts(rules, history, None)
        sent_before = set(store.read_json(folder / "sent.json") or [])

        def ident(e: Any) -> str:
            return f"{e.rule}|{e.batch}|{e.kind}"

        new = [e for e in timeline if ident(e) not in sent_before]
        deliveries = notify(new, build_notifiers(config.alerts)) if new else []
        store.write_json(folder / "sent.json", sorted(sent_before | {ident(e) for e in new}))
        store.write_json(folder / "state.json", state)
    result: dict[str, Any] = {
        "events": [e.to_dict() for e in timeline if e.batch == key],
        "sent": [e.to_dict() for e in new],
        "deliveries": [d.to_dict() for d in deliveries],
        "rules": len(rules),
        "firing": sorted(n for n, r in (state.get("rules") or {}).items() if r.get("firing")),
    }
    store.write_batch_json(key, "alerts", result)
    with _run(config, ctx, "alerts", key):
        fired = [e for e in result["events"] if e["kind"] == "firing"]
        log_metrics(
            {
                "alerts_fired": len(fired),
                "alerts_error": sum(e["severity"] == "error" for e in fired),
                "alerts_sent": len(new),
                "alerts_undelivered": sum(not d.ok for d in deliveries),
            }
        )
        if result["events"] or new:
            log_json(result, f"alerts/{key}.json")
    return result


# -- retraining and promotion ----------------------------------------------------------------------
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
        earlier = earlier[-config.training.recent_batches :]
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


def train_challenger(
    config: LoopConfig, key: str, ctx: StepContext | None = None
) -> dict[str, Any]:
    """Train, evaluate on the held-out rows, register, and alias a challenger for batch `key`."""
    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    registry = MlflowRegistry.from_config(config)
    as_of = now_utc()
    train, parts, holdout = training_window(config, key, as_of)
    with _run(config, ctx, "challenger", key) as run:
        model = train_model(train, config.model, config.columns)
        y_hold, s_hold = (
            labels(holdout, config.columns),
            predict_scores(model, holdout, config.columns),
        )
        metrics = compute_metrics(y_hold, s_hold)
        digest = log_dataset(
            train,
            name=f"train-{key}",
            context="training",
            source=",".join(parts),
            target=config.columns.target,
            columns=config.columns,
        )
        log_dataset(
            holdout,
            name=f"holdout-{key}",
            context="evaluation",
            source=key,
            target=config.columns.target,
            columns=config.columns,
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
        version = _log_and_register(config, model, train)
        _save_estimator(store, version, s_hold, y_hold)
        run_id = run.info.run_id
    registry.tag_version(
        version,
        {
            **_metric_tags(metrics),
            "mlops_loop.trained_on": ",".join(parts),
            "mlops_loop.partition": key,
        },
    )
    registry.set_challenger(version)
    info = {
        "version": version,
        "metrics": metrics,
        "training_parts": parts,
        "training_rows": len(train),
        "training_digest": digest,
        "holdout_rows": len(holdout),
        "labels_as_of": as_of.isoformat(),
        "run_id": run_id,
    }
    store.write_batch_json(key, "challenger", info)
    return info


def promote_challenger(
    config: LoopConfig, key: str, ctx: StepContext | None = None
) -> dict[str, Any]:
    """Compare the challenger trained at batch `key` with the champion on the same held-out rows;
    move `champion` only if the challenger wins with confidence.

    Works on the explicit version recorded by this batch's retrain, never on a shared alias.
    """
    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    registry = MlflowRegistry.from_config(config)
    challenger = store.batch_json(key, "challenger")
    if challenger is None:
        raise DataError(f"batch {key!r} has no challenger; materialize challenger_model first")
    version = int(challenger["version"])
    champion = registry.champion()
    # The same held-out rows the challenger was evaluated on: labels known when it was trained.
    as_of = challenger.get("labels_as_of")
    _, holdout = split_holdout(
        attach_labels(config, store.batch(key), datetime.fromisoformat(as_of) if as_of else None),
        config,
    )
    y = labels(holdout, config.columns)
    chal_scores = predict_scores(registry.load(version), holdout, config.columns)
    champ_scores = (
        predict_scores(registry.load(champion), holdout, config.columns)
        if champion is not None
        else None
    )
    segments = {c: holdout[c].to_numpy() for c in config.columns.segments if c in holdout}
    decision = decide_promotion(
        y,
        chal_scores,
        champ_scores,
        config.promotion,
        seed=config.training.random_state,
        segments=segments,
    )
    table = _comparison_table(config, y, chal_scores, champ_scores)
    with _run(config, ctx, "promotion", key):
        log_json(
            {
                "decision": decision.to_dict(),
                "challenger_version": version,
                "champion_version": champion,
                "comparison": table,
            },
            f"promotion/{key}.json",
        )
        log_text(_comparison_html(decision, version, champion, table), f"promotion/{key}.html")
        log_text(_comparison_svg(version, champion, table), f"promotion/{key}.svg")
        log_metrics({f"challenger_{r['metric']}": r["challenger"] for r in table})
        log_metrics(
            {f"champion_{r['metric']}": r["champion"] for r in table if r["champion"] is not None}
        )
        log_metrics({"promoted": int(decision.promote), "challenger_version": version})
        log_json(
            decision.to_dict()["guards"] + decision.to_dict()["segments"],
            f"promotion/{key}.guards_and_segments.json",
        )
        log_params(config_params(config, "promotion"))
    change: AliasChange | None = None
    if decision.promote:
        change = registry.promote(
            version,
            expected_champion=champion,
            reason="; ".join(decision.reasons),
            triggered_by=ctx.triggered_by,
            metrics={r["metric"]: r["challenger"] for r in table},
        )
        registry.tag_version(version, {"mlops_loop.decision": "promoted"})
        with _run(config, ctx, "promotion", key):
            _log_history(registry)
    else:
        registry.tag_version(
            version,
            {
                "mlops_loop.decision": "rejected",
                "mlops_loop.rejected_reason": "; ".join(decision.reasons)[:4000],
            },
        )
    result = {
        "promoted": decision.promote,
        "challenger_version": version,
        "champion_version_before": champion,
        "champion_version_after": version if decision.promote else champion,
        "decision": decision.to_dict(),
        "comparison": table,
        "change": change.to_dict() if change else None,
        "history_table": registry.history_table(),
    }
    store.write_batch_json(key, "promotion", result)
    return result


def _comparison_table(
    config: LoopConfig, y: np.ndarray, chal: np.ndarray, champ: np.ndarray | None
) -> list[dict[str, Any]]:
    rows = []
    for name in METRICS:
        c = metric_value(name, y, chal) if len(y) else float("nan")
        d = metric_value(name, y, champ) if champ is not None and len(y) else None
        rows.append(
            {
                "metric": name,
                "challenger": None if np.isnan(c) else round(c, 6),
                "champion": None if d is None or np.isnan(d) else round(d, 6),
            }
        )
    return rows


def _comparison_svg(chal: int, champ: int | None, table: list[dict[str, Any]]) -> str:
    rows = [(r["metric"], r["challenger"], r["champion"]) for r in table]
    return paired_bars_svg(
        rows, f"challenger v{chal}", f"champion v{champ}", "Same held-out rows, both models"
    )


def _comparison_html(
    decision: PromotionDecision, chal: int, champ: int | None, table: list[dict[str, Any]]
) -> str:
    verdict = "PROMOTED" if decision.promote else "REJECTED"
    rows = "".join(
        f"<tr><td>{r['metric']}</td><td>{r['challenger']}</td><td>{r['champion']}</td></tr>"
        for r in table
    )
    checks = "".join(
        f"<tr><td>{html.escape(g['where'])}</td><td>{g['metric']}</td><td>{g['challenger']}"
        f"</td><td>{g['champion']}</td><td>{g['tolerance']}</td><td>"
        f"{'ok' if g['ok'] else 'WORSE'}</td></tr>"
        for g in [*decision.guards, *decision.segments]
    )
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in decision.reasons)
    return (
        f"<!doctype html><meta charset=utf-8><title>Challenger v{chal} vs champion v{champ}"
        f"</title><style>body{{font:14px sans-serif;margin:2em}}td,th{{padding:4px 12px;"
        f"border-bottom:1px solid #ddd}}</style><h1>Challenger v{chal} vs champion v{champ}: "
        f"{verdict}</h1><ul>{reasons}</ul><table><tr><th>metric</th><th>challenger</th>"
        f"<th>champion</th></tr>{rows}</table><p>{_comparison_svg(chal, champ, table)}</p>"
        f"<h2>Guards and segments</h2><table><tr><th>where</th><th>metric</th>"
        f"<th>challenger</th><th>champion</th><th>tolerance</th><th></th></tr>{checks}</table>"
    )


def _log_history(registry: MlflowRegistry) -> None:
    """The append-only champion history, as JSON and as a table, in the active run."""
    log_json(registry.history(), "registry/history.json")
    log_text(registry.history_table(), "registry/history.md")


# -- rollback and status ---------------------------------------------------------------------------
def rollback(
    config: LoopConfig, to: int | str, reason: str, ctx: StepContext | None = None
) -> AliasChange:
    """Move `champion` back to a version (or "previous"), recording who, when and why.

    Raises:
        RegistryError: unknown version, nothing to roll back to, or no reason given.
    """
    ctx = ctx or StepContext()
    registry = MlflowRegistry.from_config(config)
    registry.reconcile(ctx.triggered_by)
    change = registry.rollback(to, reason=reason, triggered_by=ctx.triggered_by)
    with _run(config, ctx, "rollback"):
        log_json(change.to_dict(), "registry/rollback.json")
        _log_history(registry)
        log_params(
            {
                "rollback.from": change.from_version,
                "rollback.to": change.to_version,
                "rollback.reason": change.reason,
                "rollback.triggered_by": change.triggered_by,
            }
        )
        log_metrics({"champion_version": change.to_version})
    return change


def champion_history_table(config: LoopConfig, last: int = 20) -> str:
    """The latest changes of the champion, newest first, as a markdown table."""
    return MlflowRegistry.from_config(config).history_table(last)


def monitoring_plot(config: LoopConfig) -> str:
    """An SVG timeline of the batches: realized and estimated primary metric, drift share,
    with quarantined batches, rejections and promotions marked."""
    from mlops_loop.core.plots import timeline_svg

    status = loop_status(config)
    batches = status["batches"]
    name = status["metric_name"]
    marks = []
    for i, b in enumerate(batches):
        if b["quality_success"] is False:
            marks.append((i, "quarantined", "#c0392b"))
        elif b["promoted"]:
            marks.append((i, f"v{b['challenger_version']} promoted", "#27ae60"))
        elif b["promoted"] is False:
            marks.append((i, f"v{b['challenger_version']} rejected", "#7f8c8d"))
    return timeline_svg(
        [b["batch"] for b in batches],
        [
            (f"{name} (realized)", [b["metric"] for b in batches], "#2c7fb8"),
            (f"{name} (estimated)", [b["estimated_metric"] for b in batches], "#9ecae1"),
            ("drift share", [b["drift_share"] for b in batches], "#e67e22"),
        ],
        marks,
        title=f"{config.name}: champion performance and drift per batch",
    )


def loop_status(config: LoopConfig) -> dict[str, Any]:
    """What the loop knows now: champion, challenger, history, and every batch's verdicts."""
    store = LoopStore(config.state_dir)
    registry = MlflowRegistry.from_config(config)
    batches = []
    for key in store.batch_keys():
        quality = store.batch_json(key, "quality") or {}
        drift = store.batch_json(key, "drift") or {}
        perf = store.batch_json(key, "performance") or {}
        decision = store.batch_json(key, "decision") or {}
        promotion = store.batch_json(key, "promotion")
        batches.append(
            {
                "batch": key,
                "quality_success": quality.get("success"),
                "incidents": [
                    f"{i['kind']}:{i.get('column')}"
                    for i in quality.get("incidents", [])
                    if i.get("severity") == "error"
                ],
                "dataset_drift": drift.get("dataset_drift"),
                "drift_share": drift.get("drift_share"),
                "metric": perf.get("metric"),
                "estimated_metric": perf.get("estimated_metric"),
                "label_coverage": perf.get("label_coverage"),
                "champion_version": perf.get("champion_version"),
                "retrain": decision.get("retrain"),
                "challenger_version": (store.batch_json(key, "challenger") or {}).get("version"),
                "promoted": None if promotion is None else promotion["promoted"],
            }
        )
    champion, challenger = registry.champion(), registry.challenger()
    champion_tags = registry.version(champion).tags or {} if champion is not None else {}
    challenger_tags = registry.version(challenger).tags or {} if challenger is not None else {}
    return {
        "model": config.mlflow.registered_model,
        "tracking_uri": redact_uri(config.tracking_uri),
        "champion": champion,
        "champion_since": champion_tags.get("mlops_loop.champion_since"),
        "champion_metrics": {
            k.removeprefix(METRIC_TAG): v
            for k, v in champion_tags.items()
            if k.startswith(METRIC_TAG)
        },
        "challenger": challenger,
        "challenger_decision": challenger_tags.get("mlops_loop.decision"),
        "challenger_metric": _version_metric(registry, challenger, config.promotion.metric),
        "champion_metric": _version_metric(registry, champion, config.promotion.metric),
        "metric_name": config.promotion.metric,
        "history": registry.history(),
        "batches": batches,
        "quarantined": store.quarantined_keys(),
    }

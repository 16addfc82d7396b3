"""The champion's performance on a scored batch: realized on the labels known now, estimated
from its scores alone, per segment, and the drift of its outputs: `model_performance`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Self

import numpy as np
import pandas as pd

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.labels import attach_labels, now_utc
from mlops_loop.core.performance import compute_metrics, metric_value
from mlops_loop.core.registry import MlflowRegistry
from mlops_loop.core.steps.models import best_champion_metric, estimate, version_metric
from mlops_loop.core.steps.result import StepResult
from mlops_loop.core.steps.run import StepContext, step_run
from mlops_loop.core.store import LoopStore
from mlops_loop.core.tasks import class_codes, probability_columns
from mlops_loop.core.tracking import log_json, log_metrics
from mlops_loop.core.training import (
    labelled_rows,
    labels,
    model_inputs,
    predict_scores,
    scores_of,
)


@dataclass(frozen=True)
class OutputDrift(StepResult):
    """Drift of the champion's scores (`prediction`) or of the labels known (`target`)."""

    role: str  # prediction | target
    name: str
    method: str | None = None
    statistic: float | None = None
    p_value: float | None = None
    effect_size: float | None = None
    threshold: float | None = None
    drifted: bool | None = None
    error: str | None = None


@dataclass(frozen=True)
class Performance(StepResult):
    """A batch's performance as known now (`<batch>/performance.json`)."""

    champion_version: int | None
    rows: int = 0
    output_drift: list[OutputDrift] = field(default_factory=list)
    labelled_rows: int = 0
    label_coverage: float = 0.0
    labels_as_of: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # realized, on the labelled rows
    metric_name: str = ""  # the primary metric (promotion.metric)
    metric: float | None = None
    baseline_metric: float | None = None  # the champion's validation metric
    best_baseline_metric: float | None = None  # the best champion's so far
    estimate: dict[str, Any] | None = None  # the label-free estimate, whole
    estimated_metrics: dict[str, Any] = field(default_factory=dict)
    estimated_metric: float | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        drift = [OutputDrift.from_dict(o) for o in data.get("output_drift") or []]
        return replace(super().from_dict(data), output_drift=drift)


def measure_performance(
    config: LoopConfig, key: str, ctx: StepContext | None = None
) -> Performance:
    """Realized performance of the champion on the labelled rows of a scored batch."""
    ctx = ctx or StepContext()
    store = LoopStore(config.state_dir)
    scored = _scored_columns(config, store, key)
    info = store.batch_json(key, "scored") or {}
    as_of = now_utc()
    scored = attach_labels(config, scored, as_of)
    known = labelled_rows(scored, config.columns)
    cols = config.columns
    metrics = (
        compute_metrics(labels(known, cols), scores_of(known, cols), config.task, cols.classes)
        if len(known)
        else {"n": 0}
    )
    registry = MlflowRegistry.from_config(config)
    version = info.get("champion_version")
    baseline = version_metric(registry, version, config.promotion.metric)
    best = best_champion_metric(registry, version, config.promotion.metric)
    scores = scores_of(scored, cols)
    est = estimate(store, version, scores, config.task, _inputs(config, scored), registry)
    estimated = {k: v for k, v in ((est or {}).get("metrics") or {}).items() if isinstance(v, dict)}
    segments = _segment_performance(config, store, version, scored, registry)
    outputs = _output_drift(config, store, version, scores, known)
    result = Performance(
        champion_version=version,
        rows=len(scored),
        output_drift=outputs,
        labelled_rows=len(known),
        label_coverage=round(len(known) / max(len(scored), 1), 4),
        labels_as_of=as_of.isoformat(),
        metrics=metrics,
        metric_name=config.promotion.metric,
        metric=metrics.get(config.promotion.metric),
        baseline_metric=baseline,
        best_baseline_metric=best,
        estimate=est,
        estimated_metrics={k: v.get("value") for k, v in estimated.items()},
        estimated_metric=(estimated.get(config.promotion.metric) or {}).get("value"),
        segments=segments,
    )
    store.write_batch_json(key, "performance", result.to_dict())
    with step_run(config, ctx, "performance", key):
        log_metrics(metrics)
        log_metrics({"label_coverage": result.label_coverage})
        log_metrics(result.estimated_metrics, prefix="estimated_")
        log_metrics(
            {
                f"{o.role}_drift_{k}": getattr(o, k)
                for o in outputs
                for k in ("effect_size", "p_value")
                if getattr(o, k) is not None
            }
        )
        if segments:
            log_json(segments, "performance/segments.json")
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
    probabilities = (
        probability_columns(cols.prediction, cols.classes)
        if cols.task == "multiclass" and cols.classes
        else []
    )
    # A regression's loss model reads the model's inputs too.
    features = cols.features if cols.task == "regression" else []
    wanted = dict.fromkeys(
        filter(
            None,
            [cols.id, cols.target, cols.prediction, *probabilities, *cols.segments, *features],
        )
    )
    present = set(parquet_columns(path))
    return pd.read_parquet(path, columns=[c for c in wanted if c in present])


def _output_drift(
    config: LoopConfig,
    store: LoopStore,
    version: int | None,
    scores: np.ndarray,
    known: pd.DataFrame,
) -> list[OutputDrift]:
    """Prediction drift (the champion's scores on the batch against its scores on the
    reference) and target drift (the labels known so far against the reference's labels).

    Each is judged alone with the drift stage's tests (KS for scores, chi-square for labels)
    and effect thresholds. The reference scores of a version are computed once and kept.
    """
    from mlops_loop.core.drift import evaluate_drift

    cols = config.columns
    out: list[OutputDrift] = []
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
    pairs = _output_pairs(config, ref_scores, scores)
    if len(known):
        ref_labels = store.reference()[cols.target].dropna()
        if config.task == "regression":
            ref_y, cur_y = ref_labels.astype(float), known[cols.target].astype(float)
        else:  # classes by name, whatever their type (1 and 1.0 are one class)
            names = np.asarray([str(c) for c in cols.classes or [0, 1]] + ["?"], dtype=object)
            ref_y, cur_y = (
                pd.Series(names[class_codes(f, cols.classes or [0, 1])])
                for f in (ref_labels, known[cols.target])
            )
        pairs.append(("target", cols.target, ref_y, cur_y))
    for role, name, ref, cur in pairs:
        report = evaluate_drift(
            pd.DataFrame({name: ref.to_numpy()}),
            pd.DataFrame({name: cur.to_numpy()}),
            policy=config.drift.model_copy(update={"multivariate": False}),
        )
        [entry] = [f.to_dict() for f in report.features]
        out.append(
            OutputDrift(
                role=role,
                name=name,
                method=entry["method"],
                statistic=entry["statistic"],
                p_value=entry["p_value"],
                effect_size=entry["effect_size"],
                threshold=entry["threshold"],
                drifted=entry["drifted"],
                error=entry["error"],
            )
        )
    return out


def _inputs(config: LoopConfig, frame: pd.DataFrame) -> pd.DataFrame | None:
    """The model's inputs of a scored frame, for a regression's loss model; None otherwise."""
    if config.task != "regression" or len(frame) == 0:
        return None
    return model_inputs(frame, config.columns)


def _output_pairs(
    config: LoopConfig, ref_scores: np.ndarray, scores: np.ndarray
) -> list[tuple[str, str, pd.Series, pd.Series]]:
    """(role, column, reference values, batch values) of the model's outputs to test for
    drift: the scores (binary) or predicted values (regression); a multiclass model's
    predicted-class shares and each class's probability."""
    cols = config.columns
    if ref_scores.ndim == 1 or not cols.classes:
        return [("prediction", cols.prediction, pd.Series(ref_scores), pd.Series(scores))]
    names = np.asarray([str(c) for c in cols.classes], dtype=object)
    pairs = [
        (
            "prediction",
            cols.prediction,
            pd.Series(names[np.argmax(ref_scores, axis=1)]),
            pd.Series(names[np.argmax(scores, axis=1)]),
        )
    ]
    for i, column in enumerate(probability_columns(cols.prediction, cols.classes)):
        pairs.append(("probability", column, pd.Series(ref_scores[:, i]), pd.Series(scores[:, i])))
    return pairs


def _segment_performance(
    config: LoopConfig,
    store: LoopStore,
    version: int | None,
    scored: pd.DataFrame,
    registry: MlflowRegistry | None = None,
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
                metric_value(name, labels(known, cols), scores_of(known, cols))
                if len(known)
                else None
            )
            est = estimate(
                store,
                version,
                scores_of(part, cols),
                config.task,
                _inputs(config, part),
                registry,
            )
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

"""Model records the steps share: logging and registering a model, its label-free estimator,
and the validation metrics kept on each registered version."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.config import LoopConfig
from mlops_loop.core.errors import DataError
from mlops_loop.core.performance import improvement
from mlops_loop.core.registry import METRIC_TAG, MlflowRegistry
from mlops_loop.core.store import LoopStore
from mlops_loop.core.tasks import probability_columns
from mlops_loop.core.tracking import log_dataset, log_json
from mlops_loop.core.training import model_inputs, predict_scores


def pip_requirements(config: LoopConfig) -> list[str]:
    """Pinned requirements of the logged model. Giving them explicitly spares MLflow its
    requirement inference, which reloads the model in a subprocess (~5 s per model here)."""
    return list(_pins(config.model.estimator.split(".")[0]))


@functools.cache
def _pins(top: str) -> tuple[str, ...]:
    # Scanning the installed distributions takes seconds; they do not change in a process.
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    dists = {"scikit-learn", "cloudpickle", "pandas", "numpy", "scipy"}
    dists.update(packages_distributions().get(top, []))
    pins = []
    for dist in sorted(dists):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return tuple(pins)


def log_and_register(config: LoopConfig, model: Any, example: pd.DataFrame) -> int:
    """Log `model` to the active MLflow run and register it; the new version's number."""
    return int(_log_model(config, model, example, register=True).registered_model_version)


def log_validation_model(config: LoopConfig, model: Any, example: pd.DataFrame) -> str:
    """Log, unregistered, the fit that was validated on the held-out rows before the version
    was refit on them too; its model URI."""
    return str(
        _log_model(config, model, example, register=False, name="validation_model").model_uri
    )


def _log_model(
    config: LoopConfig, model: Any, example: pd.DataFrame, register: bool, name: str = "model"
) -> Any:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    inputs = model_inputs(example, config.columns)
    scores: Any = predict_scores(model, example, config.columns)
    if scores.ndim == 2 and config.columns.classes:
        # One named probability column per class: the signature records the class list.
        names = probability_columns(config.columns.prediction, config.columns.classes)
        scores = pd.DataFrame(scores, columns=names)
    signature = infer_signature(inputs, scores)
    # cloudpickle, not skops: skops refuses to reload HistGradientBoosting trees and any custom
    # transformer a user's pipeline may hold. Models are only ever loaded from our own registry.
    return mlflow.sklearn.log_model(
        model,
        name=name,
        input_example=inputs.head(5),
        signature=signature,
        serialization_format="cloudpickle",
        pip_requirements=pip_requirements(config),
        registered_model_name=config.mlflow.registered_model if register else None,
    )


def task_tags(config: LoopConfig) -> dict[str, str]:
    """The version's task and, for a classifier, its class list (JSON), as version tags."""
    import json

    tags: dict[str, str] = {"mlops_loop.task": config.task}
    if config.task != "regression":
        tags["mlops_loop.classes"] = json.dumps(config.columns.classes or [0, 1])
    return tags


def estimator_path(store: LoopStore, version: int) -> Path:
    return store.root / "estimators" / f"version_{version}.json"


def _log_part(config: LoopConfig, model: Any, name: str) -> str:
    """Log a fitted scikit-learn part (not a version) to the active run; its model URI."""
    import mlflow.sklearn

    logged = mlflow.sklearn.log_model(
        model,
        name=name,
        serialization_format="cloudpickle",
        pip_requirements=pip_requirements(config),
    )
    return str(logged.model_uri)


def save_estimator(
    config: LoopConfig, store: LoopStore, version: int, holdout: pd.DataFrame, scores: np.ndarray
) -> None:
    """Learn, on the version's own held-out rows, what estimates its performance without
    labels: the calibration of its scores (binary, multiclass per class) or a model of its
    loss (regression, `core.estimate_tasks`). Logged to the active MLflow run too. Held-out
    rows that cannot teach it (one class) leave the version without an estimate.
    """
    from mlops_loop.core.estimate import fit_estimator
    from mlops_loop.core.estimate_tasks import fit_loss_estimator, fit_multiclass_estimator
    from mlops_loop.core.training import labels

    y = labels(holdout, config.columns)
    try:
        if config.task == "regression":
            loss = fit_loss_estimator(
                model_inputs(holdout, config.columns), scores, y, seed=config.training.random_state
            )
            # The fitted loss models live in MLflow beside the version, and are loaded back
            # through the registry like every model; the rest is JSON.
            payload = {
                "loss": loss.to_dict(),
                "models": {
                    part: _log_part(config, model, f"loss_estimator_{part}")
                    for part, model in loss.models().items()
                },
            }
            store.write_json(estimator_path(store, version), payload)
            log_json(payload, "estimator/loss.json")
            return
        if config.task == "multiclass":
            classes = [str(c) for c in config.columns.classes or []]
            payload = fit_multiclass_estimator(scores, y, classes).to_dict()
        else:
            payload = fit_estimator(scores, y).to_dict()
    except DataError:
        return
    store.write_json(estimator_path(store, version), payload)
    log_json(payload, "estimator/confidence.json")


def importance_path(store: LoopStore, version: int) -> Path:
    return store.root / "estimators" / f"version_{version}_importance.json"


def save_importance(
    config: LoopConfig, store: LoopStore, version: int, model: Any, holdout: pd.DataFrame
) -> dict[str, float] | None:
    """Each feature's share of the version's importance on its held-out rows, kept with its
    estimator (and logged to the active run) for the retrain decision to weigh drift by."""
    from mlops_loop.core.importance import permutation_importance

    shares = permutation_importance(
        model,
        holdout,
        config.columns,
        config.promotion.metric,
        seed=config.training.random_state,
    )
    if shares is not None:
        store.write_json(importance_path(store, version), shares)
        log_json(shares, "estimator/importance.json")
    return shares


def importance(store: LoopStore, version: int | None) -> dict[str, float] | None:
    """The importance shares saved for a version (None: not known)."""
    return None if version is None else store.read_json(importance_path(store, version))


def estimate(
    store: LoopStore,
    version: int | None,
    scores: np.ndarray,
    task: str = "binary",
    inputs: pd.DataFrame | None = None,
    registry: MlflowRegistry | None = None,
) -> dict[str, Any] | None:
    """Performance estimated without labels by what `save_estimator` learnt for the version:
    from the scores alone (binary, multiclass), or from the model's inputs and predictions
    (regression, which needs `inputs` and the `registry` its loss models are logged in)."""
    if version is None or len(scores) == 0:
        return None
    saved = store.read_json(estimator_path(store, version))
    if saved is None:
        return None
    if task == "regression":
        if inputs is None or registry is None or "loss" not in saved:
            return None
        loss = _loss_estimator(registry, saved)
        return _finite(loss.estimate(inputs, scores).to_dict())
    if task == "multiclass":
        from mlops_loop.core.estimate_tasks import MulticlassConfidenceEstimator

        return _finite(MulticlassConfidenceEstimator.from_dict(saved).estimate(scores).to_dict())
    from mlops_loop.core.estimate import ConfidenceEstimator

    return ConfidenceEstimator.from_dict(saved).estimate(scores).to_dict()


_LOSS_MODELS: dict[tuple[str, str], Any] = {}


def _loss_estimator(registry: MlflowRegistry, saved: dict[str, Any]) -> Any:
    """A version's loss estimator, its models loaded from the registry once per process."""
    from mlops_loop.core.estimate_tasks import DirectLossEstimator

    models = {}
    for part, uri in saved["models"].items():
        key = (registry.tracking_uri, uri)
        if key not in _LOSS_MODELS:
            _LOSS_MODELS[key] = registry.load(uri)
        models[part] = _LOSS_MODELS[key]
    return DirectLossEstimator.from_dict(saved["loss"], models)


def _finite(value: Any) -> Any:
    """JSON keeps no NaN: None in its place (a regression estimate has no threshold)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def metric_tags(metrics: dict[str, Any]) -> dict[str, Any]:
    """A version's validation metrics as registry tags."""
    return {f"{METRIC_TAG}{k}": v for k, v in metrics.items() if v is not None}


def version_metric(registry: MlflowRegistry, version: int | None, name: str) -> float | None:
    """The validation metric `name` recorded on a registered version."""
    if version is None:
        return None
    value = (registry.version(version).tags or {}).get(f"{METRIC_TAG}{name}")
    return float(value) if value not in (None, "None") else None


def best_champion_metric(registry: MlflowRegistry, version: int | None, name: str) -> float | None:
    """The best validation metric of any version that has been champion, up to `version`."""
    if version is None:
        return None
    versions = {version} | {
        int(e["to_version"])
        for e in registry.history()
        if e.get("to_version") is not None and int(e["to_version"]) <= version
    }
    values = [v for v in (version_metric(registry, n, name) for n in versions) if v is not None]
    if not values:
        return None
    return max(values, key=lambda v: improvement(name, v, 0.0))


def log_split(
    config: LoopConfig,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    names: tuple[str, str],
    sources: tuple[str, str],
) -> str:
    """Log a model's training rows and held-out rows as MLflow dataset inputs; the training
    rows' digest."""
    target, columns = config.columns.target, config.columns
    digest = log_dataset(
        train, name=names[0], context="training", source=sources[0], target=target, columns=columns
    )
    log_dataset(
        holdout,
        name=names[1],
        context="evaluation",
        source=sources[1],
        target=target,
        columns=columns,
    )
    return digest

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
    signature = infer_signature(inputs, predict_scores(model, example, config.columns))
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


def estimator_path(store: LoopStore, version: int) -> Path:
    return store.root / "estimators" / f"version_{version}.json"


def save_estimator(store: LoopStore, version: int, scores: np.ndarray, y: np.ndarray) -> None:
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


def estimate(store: LoopStore, version: int | None, scores: np.ndarray) -> dict[str, Any] | None:
    """Performance estimated from the scores alone with the version's calibration."""
    from mlops_loop.core.estimate import ConfidenceEstimator

    saved = None if version is None else store.read_json(estimator_path(store, version))
    if saved is None or len(scores) == 0:
        return None
    return ConfidenceEstimator.from_dict(saved).estimate(scores).to_dict()


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
